//! `headroom status` (also `kubectl headroom status`): SLOs, experiments and
//! recent runs as tables in kubectl's style.

use anyhow::Context as _;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::dashboard::views::budget_text;
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::ExperimentRun;
use crate::resources::slo::ServiceLevelObjective;

/// Columns padded to the widest cell, three spaces apart, last column free.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn cond(c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], t: &str) -> String {
    crate::conditions::get(c, t)
        .map(|c| c.reason.clone())
        .unwrap_or_else(|| "-".into())
}

pub fn render(
    slos: &[ServiceLevelObjective],
    experiments: &[ChaosExperiment],
    runs: &[ExperimentRun],
) -> String {
    let drivers_table = instances(runs, k8s_openapi::jiff::Timestamp::now());
    let mut out = String::new();
    let mut rows = vec![
        [
            "NAMESPACE",
            "SLO",
            "OBJECTIVE",
            "WINDOW",
            "BUDGET",
            "SHORTEST BURN",
            "STATE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in slos {
        let st = s.status.clone().unwrap_or_default();
        let burn = st
            .burn_rates
            .first()
            .map(|b| {
                format!(
                    "{} over {}",
                    b.burn_rate.map_or("-".into(), |v| format!("{v:.2}")),
                    b.window
                )
            })
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            s.namespace().unwrap_or_default(),
            s.name_any(),
            format!("{}%", s.spec.objective),
            s.spec.window.clone(),
            budget_text(st.budget_remaining),
            burn,
            cond(&st.conditions, "BudgetAvailable"),
        ]);
    }
    out.push_str(&table(&rows));
    out.push('\n');
    let mut rows = vec![
        [
            "NAMESPACE",
            "EXPERIMENT",
            "ACTION",
            "SCHEDULE",
            "GATE",
            "LAST VERDICT",
            "LAST RUN",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for e in experiments {
        let st = e.status.clone().unwrap_or_default();
        rows.push(vec![
            e.namespace().unwrap_or_default(),
            e.name_any(),
            e.spec.action.kind().to_owned(),
            e.spec.schedule.clone().unwrap_or_else(|| "once".into()),
            cond(&st.conditions, "Gated"),
            st.last_verdict.unwrap_or_else(|| "-".into()),
            st.last_run.unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&table(&rows));
    out.push('\n');
    let mut rows = vec![
        [
            "NAMESPACE",
            "RUN",
            "EXPERIMENT",
            "PHASE",
            "VERDICT",
            "BUDGET SPENT",
            "REASON",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut runs: Vec<&ExperimentRun> = runs.iter().collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.metadata.creation_timestamp.clone().map(|t| t.0)));
    for r in runs.into_iter().take(20) {
        let st = r.status.clone().unwrap_or_default();
        rows.push(vec![
            r.namespace().unwrap_or_default(),
            r.name_any(),
            r.spec.experiment.clone(),
            format!("{:?}", st.phase),
            st.verdict.map_or("-".into(), |v| format!("{v:?}")),
            st.budget
                .and_then(|b| b.spent)
                .map_or("-".into(), |s| format!("{:.2}%", s * 100.0)),
            st.reason.unwrap_or_default().chars().take(80).collect(),
        ]);
    }
    out.push_str(&table(&rows));
    out.push('\n');
    out.push_str(&drivers_table);
    out
}

/// The operator instances driving unfinished runs, from the runs'
/// `status.driver`: who drives what, and whether its heartbeat holds.
pub fn instances(runs: &[ExperimentRun], now: k8s_openapi::jiff::Timestamp) -> String {
    let mut rows = vec![
        ["INSTANCE", "STATE", "LAST HEARTBEAT", "RUNS"]
            .map(String::from)
            .to_vec(),
    ];
    let me = crate::run_owner::Instance::observer();
    for v in crate::run_owner::drivers(runs, &me, now) {
        let age = now
            .as_millisecond()
            .saturating_sub(v.heartbeat.as_millisecond()) as f64
            / 1000.0;
        rows.push(vec![
            v.instance,
            v.state.as_str().to_owned(),
            format!("{age:.0}s ago"),
            v.runs.join(","),
        ]);
    }
    table(&rows)
}

pub async fn run(namespace: Option<String>) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let lp = ListParams::default();
    macro_rules! list {
        ($k:ty) => {
            match &namespace {
                Some(ns) => Api::<$k>::namespaced(client.clone(), ns),
                None => Api::<$k>::all(client.clone()),
            }
            .list(&lp)
            .await
            .with_context(|| format!("listing {}", stringify!($k)))?
            .items
        };
    }
    let slos = list!(ServiceLevelObjective);
    let exps = list!(ChaosExperiment);
    let runs = list!(ExperimentRun);
    print!("{}", render(&slos, &exps, &runs));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_lists_each_driver_with_its_runs_and_heartbeat_age() {
        let run = |name: &str, phase: &str, instance: &str, beat_s: i64| -> ExperimentRun {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "headroom.dev/v1alpha1",
                "kind": "ExperimentRun",
                "metadata": { "name": name, "namespace": "shop" },
                "spec": { "experiment": "e", "snapshot": {
                    "hypothesis": {"description": "h"}, "slos": ["s"], "duration": "1m",
                    "action": {"podKill": {"count": 1, "selector": {"matchLabels": {"a": "b"}}}}
                }},
                "status": { "phase": phase, "driver": {
                    "instance": instance,
                    "heartbeatTime": k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + beat_s)
                        .expect("time").to_string(),
                    "leaseDurationSeconds": 10
                }}
            }))
            .expect("valid run")
        };
        let runs = [
            run("a", "Observing", "pod-a-1-abc", 0),
            run("b", "Completed", "pod-a-1-abc", 0),
            run("c", "Restoring", "laptop-9-def", -60),
        ];
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_003).expect("time");
        let out = instances(&runs, now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("INSTANCE"), "{out}");
        assert!(
            lines[1].starts_with("pod-a-1-abc")
                && lines[1].contains("live")
                && lines[1].contains("3s ago")
                && lines[1].ends_with("shop/a"),
            "{out}"
        );
        assert!(
            lines[2].contains("heartbeat expired") && lines[2].contains("63s ago"),
            "{out}"
        );
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["A".to_owned(), "LONG HEADER".to_owned(), "X".to_owned()],
            vec!["value".to_owned(), "b".to_owned(), "free text".to_owned()],
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A       LONG HEADER   X");
        assert_eq!(lines[1], "value   b             free text");
    }
}
