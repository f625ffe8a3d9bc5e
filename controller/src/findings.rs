//! Findings: what the experiments have taught, as "known weaknesses".
//!
//! A run that refutes its hypothesis found a weakness; a later run of the
//! same experiment that confirms the hypothesis shows it fixed. Derived
//! from the ExperimentRun records alone (the watch cache the dashboard
//! already holds), so there is no second record to keep in step with the
//! runs, and a weakness leaves with the runs that show it (run retention).
//! Pure: every case is a table test below.

use std::collections::BTreeMap;

use headroom_experiments::connection_exhaustion::{ConnectionMode, ConnectionProtocol};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::resources::experiment::ChaosAction;
use crate::resources::run::{ExperimentRun, Verdict};

/// Whether a weakness still stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state")]
pub enum State {
    /// No run has confirmed the hypothesis since it was refuted.
    Open,
    /// A later run confirmed the hypothesis.
    Fixed {
        /// The confirming run.
        run: String,
        /// When it finished.
        at: Option<Timestamp>,
    },
}

/// One known weakness of a service, found by one experiment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub namespace: String,
    pub experiment: String,
    /// The SLOs that guarded the refuting run: their runbooks list it.
    pub slos: Vec<String>,
    /// The first run that refuted the hypothesis.
    pub found_by: String,
    pub found_at: Option<Timestamp>,
    /// The latest run that refuted it (the same as `found_by` when only
    /// one did); the sentence is written from its evidence.
    pub last_refuted_by: String,
    /// What was observed, in one sentence.
    pub sentence: String,
    /// `spec.remediation` of the experiment as the refuting run saw it.
    pub remediation: Option<String>,
    #[serde(flatten)]
    pub state: State,
}

impl Finding {
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }
}

/// When a run's outcome became known: its completion, else its creation.
fn finished_at(run: &ExperimentRun) -> Option<Timestamp> {
    run.status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .or(run.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// Every finding in `runs`, open ones first, then newest first. Only
/// finished runs with a verdict count; an inconclusive verdict neither
/// opens nor fixes a weakness (it is no evidence either way). A refutation
/// after a fix opens a new finding (a regression); the fixed one stays as
/// history.
pub fn findings<'a>(runs: impl IntoIterator<Item = &'a ExperimentRun>) -> Vec<Finding> {
    let mut by_experiment: BTreeMap<(String, String), Vec<&ExperimentRun>> = BTreeMap::new();
    for run in runs {
        let decided = run
            .status
            .as_ref()
            .is_some_and(|s| s.phase.is_final() && s.verdict.is_some());
        if decided {
            by_experiment
                .entry((
                    run.namespace().unwrap_or_default(),
                    run.spec.experiment.clone(),
                ))
                .or_default()
                .push(run);
        }
    }
    let mut out = Vec::new();
    for ((namespace, experiment), mut runs) in by_experiment {
        runs.sort_by_key(|r| (finished_at(r), r.name_any()));
        let mut open: Option<Finding> = None;
        for run in runs {
            let verdict = run.status.as_ref().and_then(|s| s.verdict);
            match (verdict, open.as_mut()) {
                (Some(Verdict::Refuted), Some(f)) => {
                    f.last_refuted_by = run.name_any();
                    f.sentence = sentence(run);
                    f.remediation = run.spec.snapshot.remediation.clone();
                    for s in &run.spec.snapshot.slos {
                        if !f.slos.contains(s) {
                            f.slos.push(s.clone());
                        }
                    }
                }
                (Some(Verdict::Refuted), None) => {
                    open = Some(Finding {
                        namespace: namespace.clone(),
                        experiment: experiment.clone(),
                        slos: run.spec.snapshot.slos.clone(),
                        found_by: run.name_any(),
                        found_at: finished_at(run),
                        last_refuted_by: run.name_any(),
                        sentence: sentence(run),
                        remediation: run.spec.snapshot.remediation.clone(),
                        state: State::Open,
                    });
                }
                (Some(Verdict::Confirmed), Some(_)) => {
                    if let Some(mut f) = open.take() {
                        f.state = State::Fixed {
                            run: run.name_any(),
                            at: finished_at(run),
                        };
                        out.push(f);
                    }
                }
                _ => {}
            }
        }
        out.extend(open);
    }
    out.sort_by_key(|f| (!f.is_open(), std::cmp::Reverse(f.found_at)));
    out
}

/// The findings whose refuting runs were guarded by `slo` in `namespace`.
pub fn for_slo<'a>(all: &'a [Finding], namespace: &str, slo: &str) -> Vec<&'a Finding> {
    all.iter()
        .filter(|f| f.namespace == namespace && f.slos.iter().any(|s| s == slo))
        .collect()
}

/// The findings of one experiment.
pub fn for_experiment<'a>(all: &'a [Finding], namespace: &str, name: &str) -> Vec<&'a Finding> {
    all.iter()
        .filter(|f| f.namespace == namespace && f.experiment == name)
        .collect()
}

/// One sentence from a refuting run's evidence: what the fault showed
/// (from the action's own observations) and each broken expectation with
/// its measured value, e.g. "PostgreSQL refused new sessions at 13
/// connections; checkout burned 8.6× its budget rate (bound 2×)."
pub fn sentence(run: &ExperimentRun) -> String {
    let st = run.status.clone().unwrap_or_default();
    let obs = st.observations.clone().unwrap_or_default();
    let action = &run.spec.snapshot.action;
    // Each part with whether it starts with our own words (capitalised
    // when first) rather than a name (kept as written: `checkout`).
    let mut parts: Vec<(String, bool)> = Vec::new();
    if let ChaosAction::ConnectionExhaustion(c) = action
        && let Some(n) = obs.connections_at_first_refusal
    {
        let target = match (c.protocol, &c.target) {
            (ConnectionProtocol::Postgres, _) => "PostgreSQL".to_owned(),
            (_, Some(t)) => format!(
                "{}:{}",
                t.service
                    .clone()
                    .or_else(|| t.host.clone())
                    .unwrap_or_default(),
                t.port
            ),
            (_, None) => "the target".to_owned(),
        };
        let (what, unit) = match (c.protocol, c.mode) {
            (_, ConnectionMode::ScaleClients) => ("clients", "client replicas"),
            (ConnectionProtocol::Postgres, _) => ("sessions", "connections"),
            (ConnectionProtocol::Tcp, _) => ("connections", "connections"),
        };
        let own = target == "the target";
        parts.push((format!("{target} refused new {what} at {n} {unit}"), own));
    }
    for e in st
        .expectations
        .iter()
        .filter(|e| e.result == Verdict::Refuted)
    {
        let measured = e.measured.clone().unwrap_or_else(|| "?".into());
        let bound = e.bound.clone().unwrap_or_default();
        let part = if let Some(slo) = e.name.strip_prefix("sloHolds/") {
            let bound = bound.trim_start_matches("<=").trim();
            parts.push((
                format!(
                    "{slo} burned {}× its budget rate (bound {bound}×)",
                    one_decimal(&measured)
                ),
                false,
            ));
            continue;
        } else if e.name == "recoversWithin" {
            let what = match action {
                ChaosAction::PodKill(_) => {
                    let n = obs.killed_pods.len();
                    format!(
                        "after {n} pod{} killed, Ready pods",
                        if n == 1 { " was" } else { "s were" }
                    )
                }
                _ => "Ready pods".to_owned(),
            };
            let bound = bound.trim_start_matches("<=").trim();
            if let Some(watched) = measured.strip_prefix('>') {
                format!(
                    "{what} were not back after {} (bound {bound})",
                    watched.trim()
                )
            } else {
                format!("{what} took {measured} to come back (bound {bound})")
            }
        } else if e.name == "expectZoneSpread" {
            match action {
                ChaosAction::ScaleDown(s) => format!(
                    "scaling {:?}/{} down from {} to {} emptied a zone ({measured})",
                    s.target.kind, s.target.name, s.scale_up_to, s.scale_down_to
                ),
                _ => format!("a zone was emptied ({measured})"),
            }
        } else if let Some(order) = e.name.strip_prefix("expectOrder/") {
            match action {
                ChaosAction::ScaleDown(s) => format!(
                    "scaling {:?}/{} down did not remove pods {order}: {measured}",
                    s.target.kind, s.target.name
                ),
                _ => format!("pods were not removed {order}: {measured}"),
            }
        } else {
            format!("{}: measured {measured}, bound {bound}", e.name)
        };
        parts.push((part, true));
    }
    if parts.is_empty() {
        // A refutation without a refuted expectation should not happen;
        // say what is known rather than nothing.
        parts.push(match &st.reason {
            Some(r) => (r.clone(), false),
            None => ("the hypothesis was refuted".into(), true),
        });
    }
    let mut text = parts
        .iter()
        .map(|(p, _)| p.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if parts.first().is_some_and(|(_, own)| *own)
        && let Some(first) = text.chars().next()
    {
        text = format!("{}{}", first.to_uppercase(), &text[first.len_utf8()..]);
    }
    text.push('.');
    text
}

/// "8.612" → "8.6"; anything that is not a number is kept as written.
fn one_decimal(measured: &str) -> String {
    measured
        .parse::<f64>()
        .map_or_else(|_| measured.to_owned(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const POD_KILL: &str =
        r#"{ "podKill": { "selector": { "matchLabels": { "app": "web" } }, "count": 1 } }"#;

    /// A finished run of `exp` finishing at minute `minute`.
    fn run(
        exp: &str,
        name: &str,
        minute: u32,
        verdict: &str,
        action: &str,
        extra: Value,
    ) -> ExperimentRun {
        let mut status = json!({
            "phase": if verdict == "Inconclusive" { "Aborted" } else { "Completed" },
            "verdict": verdict,
            "completionTime": format!("2026-11-30T10:{minute:02}:00Z"),
        });
        if let (Value::Object(s), Value::Object(e)) = (&mut status, extra) {
            s.extend(e);
        }
        serde_json::from_value(json!({
            "apiVersion": "headroom.dev/v1alpha1", "kind": "ExperimentRun",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "experiment": exp, "snapshot": {
                "hypothesis": { "description": "h" }, "slos": ["checkout"],
                "remediation": format!("fix {exp}"),
                "action": serde_json::from_str::<Value>(action).expect("action"),
            } },
            "status": status,
        }))
        .expect("run")
    }

    fn burn(slo: &str, measured: &str) -> Value {
        json!({ "expectations": [
            { "name": format!("sloHolds/{slo}"), "result": "Refuted", "measured": measured, "bound": "<= 2" }
        ] })
    }

    fn plain(exp: &str, name: &str, minute: u32, verdict: &str) -> ExperimentRun {
        let extra = if verdict == "Refuted" {
            burn("checkout", "3.000")
        } else {
            json!({})
        };
        run(exp, name, minute, verdict, POD_KILL, extra)
    }

    /// (experiment, found by, state) of each finding, in order.
    fn summary(runs: &[ExperimentRun]) -> Vec<(String, String, String)> {
        findings(runs)
            .into_iter()
            .map(|f| {
                let state = match f.state {
                    State::Open => "open".to_owned(),
                    State::Fixed { run, .. } => format!("fixed by {run}"),
                };
                (f.experiment, f.found_by, state)
            })
            .collect()
    }

    #[test]
    fn refutations_open_confirmations_fix_and_inconclusive_changes_nothing() {
        type Case = (
            &'static str,
            Vec<ExperimentRun>,
            Vec<(&'static str, &'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            ("no runs", vec![], vec![]),
            (
                "confirmed only: nothing found",
                vec![plain("a", "a-1", 1, "Confirmed")],
                vec![],
            ),
            (
                "refuted: open",
                vec![plain("a", "a-1", 1, "Refuted")],
                vec![("a", "a-1", "open")],
            ),
            (
                "refuted then confirmed: fixed by the confirming run",
                vec![
                    plain("a", "a-1", 1, "Refuted"),
                    plain("a", "a-2", 2, "Confirmed"),
                ],
                vec![("a", "a-1", "fixed by a-2")],
            ),
            (
                "the order of the input does not matter, the finish times do",
                vec![
                    plain("a", "a-2", 2, "Confirmed"),
                    plain("a", "a-1", 1, "Refuted"),
                ],
                vec![("a", "a-1", "fixed by a-2")],
            ),
            (
                "confirmed before the refutation fixes nothing",
                vec![
                    plain("a", "a-1", 1, "Confirmed"),
                    plain("a", "a-2", 2, "Refuted"),
                ],
                vec![("a", "a-2", "open")],
            ),
            (
                "inconclusive after a refutation leaves it open",
                vec![
                    plain("a", "a-1", 1, "Refuted"),
                    plain("a", "a-2", 2, "Inconclusive"),
                ],
                vec![("a", "a-1", "open")],
            ),
            (
                "inconclusive between refutation and confirmation: still fixed",
                vec![
                    plain("a", "a-1", 1, "Refuted"),
                    plain("a", "a-2", 2, "Inconclusive"),
                    plain("a", "a-3", 3, "Confirmed"),
                ],
                vec![("a", "a-1", "fixed by a-3")],
            ),
            (
                "refuted twice: one finding, found by the first",
                vec![
                    plain("a", "a-1", 1, "Refuted"),
                    plain("a", "a-2", 2, "Refuted"),
                ],
                vec![("a", "a-1", "open")],
            ),
            (
                "a regression after a fix opens a new finding, listed first",
                vec![
                    plain("a", "a-1", 1, "Refuted"),
                    plain("a", "a-2", 2, "Confirmed"),
                    plain("a", "a-3", 3, "Refuted"),
                ],
                vec![("a", "a-3", "open"), ("a", "a-1", "fixed by a-2")],
            ),
            (
                "several experiments: each its own; open first, then newest",
                vec![
                    plain("a", "a-1", 1, "Refuted"),
                    plain("b", "b-1", 2, "Refuted"),
                    plain("b", "b-2", 3, "Confirmed"),
                    plain("c", "c-1", 4, "Refuted"),
                    plain("a", "a-2", 5, "Confirmed"),
                ],
                vec![
                    ("c", "c-1", "open"),
                    ("b", "b-1", "fixed by b-2"),
                    ("a", "a-1", "fixed by a-2"),
                ],
            ),
        ];
        for (name, runs, want) in cases {
            let want: Vec<(String, String, String)> = want
                .into_iter()
                .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
                .collect();
            assert_eq!(summary(&runs), want, "{name}");
        }
    }

    #[test]
    fn unfinished_runs_and_runs_without_a_verdict_do_not_count() {
        let mut running = plain("a", "a-1", 1, "Refuted");
        if let Some(s) = running.status.as_mut() {
            s.phase = crate::resources::run::RunPhase::Observing;
        }
        let mut gated = plain("a", "a-2", 2, "Refuted");
        if let Some(s) = gated.status.as_mut() {
            s.phase = crate::resources::run::RunPhase::Gated;
            s.verdict = None;
        }
        assert!(findings(&[running, gated]).is_empty());
    }

    #[test]
    fn a_finding_keeps_the_remediation_the_slos_and_the_latest_evidence() {
        let runs = [
            plain("a", "a-1", 1, "Refuted"),
            run(
                "a",
                "a-2",
                2,
                "Refuted",
                POD_KILL,
                burn("checkout", "9.000"),
            ),
        ];
        let all = findings(&runs);
        let f = &all[0];
        assert_eq!(f.remediation.as_deref(), Some("fix a"));
        assert_eq!(f.last_refuted_by, "a-2");
        assert_eq!(
            f.sentence,
            "checkout burned 9.0× its budget rate (bound 2×)."
        );
        assert_eq!(for_slo(&all, "shop", "checkout").len(), 1);
        assert!(for_slo(&all, "shop", "search").is_empty());
        assert!(for_slo(&all, "other", "checkout").is_empty());
        assert_eq!(for_experiment(&all, "shop", "a").len(), 1);
        assert!(for_experiment(&all, "shop", "b").is_empty());
    }

    #[test]
    fn the_sentence_is_written_from_each_actions_evidence() {
        let pg = r#"{ "connectionExhaustion": { "protocol": "Postgres", "connections": 40, "holdFor": "30s",
            "target": { "service": "postgres", "port": 5432 }, "credentialsSecret": { "name": "pg" } } }"#;
        let tcp = r#"{ "connectionExhaustion": { "connections": 40, "holdFor": "30s", "target": { "host": "db.example", "port": 6379 } } }"#;
        let scale = r#"{ "scaleDown": { "target": { "kind": "Deployment", "name": "web" }, "scaleUpTo": 6, "scaleDownTo": 1, "expectOrder": "NewestFirst", "expectZoneSpread": true } }"#;
        let cases: Vec<(&str, &str, Value, &str)> = vec![
            (
                "connectionExhaustion on PostgreSQL: refusal and burn",
                pg,
                json!({
                    "observations": { "connectionsAtFirstRefusal": 13 },
                    "expectations": [{ "name": "sloHolds/checkout", "result": "Refuted", "measured": "8.612", "bound": "<= 2" }]
                }),
                "PostgreSQL refused new sessions at 13 connections; checkout burned 8.6× its budget rate (bound 2×).",
            ),
            (
                "connectionExhaustion over TCP names the target",
                tcp,
                json!({
                    "observations": { "connectionsAtFirstRefusal": 7 },
                    "expectations": [{ "name": "sloHolds/cache", "result": "Refuted", "measured": "3.000", "bound": "<= 1" }]
                }),
                "db.example:6379 refused new connections at 7 connections; cache burned 3.0× its budget rate (bound 1×).",
            ),
            (
                "podKill: slow recovery",
                POD_KILL,
                json!({
                    "observations": { "killedPods": [{ "name": "web-1", "ready": true }] },
                    "expectations": [
                        { "name": "sloHolds/checkout", "result": "Confirmed", "measured": "0.100", "bound": "<= 2" },
                        { "name": "recoversWithin", "result": "Refuted", "measured": "41.2s", "bound": "<= 30s" }
                    ]
                }),
                "After 1 pod was killed, Ready pods took 41.2s to come back (bound 30s).",
            ),
            (
                "podKill: never recovered",
                POD_KILL,
                json!({
                    "observations": { "killedPods": [{ "name": "web-1", "ready": true }, { "name": "web-2", "ready": true }] },
                    "expectations": [{ "name": "recoversWithin", "result": "Refuted", "measured": "> 60.0s", "bound": "<= 30s" }]
                }),
                "After 2 pods were killed, Ready pods were not back after 60.0s (bound 30s).",
            ),
            (
                "scaleDown: a zone emptied",
                scale,
                json!({ "expectations": [{ "name": "expectZoneSpread", "result": "Refuted", "measured": "zone-a 3→0, zone-b 3→1", "bound": "at least 1 replica in every zone" }] }),
                "Scaling Deployment/web down from 6 to 1 emptied a zone (zone-a 3→0, zone-b 3→1).",
            ),
            (
                "scaleDown: out of order",
                scale,
                json!({ "expectations": [{ "name": "expectOrder/NewestFirst", "result": "Refuted", "measured": "1 of 5 removals matched", "bound": "5 of 5" }] }),
                "Scaling Deployment/web down did not remove pods NewestFirst: 1 of 5 removals matched.",
            ),
            (
                "no refuted expectation: the reason",
                POD_KILL,
                json!({ "reason": "BurnRateAboveAbort: checkout 20 > 14.4" }),
                "BurnRateAboveAbort: checkout 20 > 14.4.",
            ),
        ];
        for (name, action, extra, want) in cases {
            let r = run("e", "e-1", 1, "Refuted", action, extra);
            assert_eq!(sentence(&r), want, "{name}");
        }
    }
}
