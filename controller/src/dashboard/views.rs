//! The dashboard's pages as pure functions of the resources. maud escapes
//! every interpolated string, so names, messages and PromQL written by users
//! cannot inject markup.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::conditions;
use crate::findings::{Finding, State};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{ExperimentRun, Verdict};
use crate::resources::slo::ServiceLevelObjective;
use headroom_experiments::evidence::PodRecord;
use kube::ResourceExt;

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:10px 20px}
h2{margin:22px 0 8px;font-size:16px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e3e6ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}
.bar{width:120px;height:10px;background:#e3e6ea;display:inline-block;margin-right:6px;vertical-align:middle}
.bar span{display:block;height:10px;background:#2e9e5b}
.bar span.low{background:#d9822b}.bar span.out{background:#c23030}
.Confirmed,.Open,.Completed{color:#2e7d32;font-weight:600}
.Refuted,.Aborted,.Failed{color:#c23030;font-weight:600}
.Inconclusive,.Gated{color:#8a6d00;font-weight:600}
.pause{background:#c23030;color:#fff;padding:6px 20px}
.muted{color:#6b7480}
.weakness{background:#fff;border-left:4px solid #c23030;padding:6px 10px;margin:6px 0}
.weakness.fixed{border-left-color:#2e7d32;color:#6b7480}
nav.spans a{margin-right:8px}
code{font-size:12px;background:#eef0f3;padding:1px 3px}
"#;

fn page(title: &str, refresh: bool, paused: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="10"; }
                title { (title) " · Headroom" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/" { "Headroom" }
                    span { (title) }
                    a href="/api/slos" { "JSON API" }
                }
                @if let Some(why) = paused {
                    div.pause id="pause" { "Global pause is set: " (why) }
                }
                main { (body) }
            }
        }
    }
}

/// Budget remaining as text, e.g. `87.3%`; the browser test compares this
/// with the SLO's status.
pub fn budget_text(remaining: Option<f64>) -> String {
    match remaining {
        Some(r) => format!("{:.1}%", r * 100.0),
        None => "unknown".into(),
    }
}

/// How long the remaining budget lasts at the burn rate of the longest
/// window shown (a sustained pace, not a spike), in words.
fn lasts(st: &crate::resources::slo::ServiceLevelObjectiveStatus, period: &str) -> String {
    let (Some(remaining), Some((window, burn))) = (
        st.budget_remaining,
        st.burn_rates
            .iter()
            .rev()
            .find_map(|b| Some((b.window.as_str(), b.burn_rate?))),
    ) else {
        return "not enough data to say how long the budget lasts".into();
    };
    let Ok(period) = crate::duration::parse_duration(period) else {
        return String::new();
    };
    match crate::budget::time_to_exhaustion(remaining, burn, period) {
        Some(d) if d.is_zero() => "the budget is spent".into(),
        Some(d) => format!(
            "at the {window} burn rate ({burn:.2}x) the remaining budget lasts {}",
            crate::duration::format_duration(std::time::Duration::from_secs(d.as_secs()))
        ),
        None => format!("at the {window} burn rate ({burn:.2}x) the budget is not being spent"),
    }
}

fn budget_bar(remaining: Option<f64>) -> Markup {
    let width = remaining.map_or(0.0, |r| (r * 100.0).clamp(0.0, 100.0));
    let class = match remaining {
        Some(r) if r >= 0.5 => "",
        Some(r) if r > 0.0 => "low",
        _ => "out",
    };
    html! {
        span.bar { span class=(class) style=(format!("width:{width:.0}%")) {} }
        span.budget { (budget_text(remaining)) }
    }
}

fn cond<'a>(
    c: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions::get(c, t)
}

fn verdict_text(v: Option<Verdict>) -> String {
    v.map(|v| format!("{v:?}")).unwrap_or_else(|| "—".into())
}

fn run_link(r: &ExperimentRun) -> String {
    format!(
        "/runs/{}/{}",
        r.namespace().unwrap_or_default(),
        r.name_any()
    )
}

/// The overview: SLOs, experiments, recent runs.
pub fn overview(
    slos: &[&ServiceLevelObjective],
    experiments: &[&ChaosExperiment],
    runs: &[&ExperimentRun],
    instances: &Instances<'_>,
    paused: Option<&str>,
) -> Markup {
    page(
        "Overview",
        true,
        paused,
        html! {
            h2 { "Service level objectives (" (slos.len()) ")" }
            table id="slos" {
                tr { th { "SLO" } th { "Service" } th { "Objective" } th { "Budget remaining" } th { "Burn rates" } th { "State" } }
                @for s in slos {
                    @let st = s.status.clone().unwrap_or_default();
                    @let ns = s.namespace().unwrap_or_default();
                    tr data-slo=(format!("{ns}/{}", s.name_any())) {
                        td {
                            a.slo href=(format!("/slos/{ns}/{}", s.name_any())) { (ns) "/" (s.name_any()) }
                            " " a.muted href=(format!("/runbooks/slo/{ns}/{}", s.name_any())) { "runbook" }
                        }
                        td { (s.spec.service) }
                        td { (s.spec.objective) "% over " (s.spec.window) }
                        td title=(lasts(&st, &s.spec.window)) { (budget_bar(st.budget_remaining)) }
                        td {
                            @for b in &st.burn_rates {
                                span.muted { (b.window) ": " }
                                (b.burn_rate.map_or("—".to_owned(), |v| format!("{v:.2}"))) " "
                            }
                        }
                        td {
                            @if let Some(c) = cond(&st.conditions, "BudgetAvailable") {
                                span title=(c.message) { (c.reason) }
                            } @else { span.muted { "not evaluated" } }
                        }
                    }
                }
            }
            h2 { "Experiments (" (experiments.len()) ")" }
            table id="experiments" {
                tr { th { "Experiment" } th { "Action" } th { "Schedule" } th { "Gate" } th { "Last verdict" } }
                @for e in experiments {
                    @let st = e.status.clone().unwrap_or_default();
                    @let ns = e.namespace().unwrap_or_default();
                    tr {
                        td { a href=(format!("/runbooks/experiment/{ns}/{}", e.name_any())) { (ns) "/" (e.name_any()) } }
                        td { (e.spec.action.kind()) }
                        td { (e.spec.schedule.clone().unwrap_or_else(|| "once".into())) @if e.spec.suspend { " (suspended)" } }
                        td {
                            @if let Some(c) = cond(&st.conditions, "Gated") {
                                span class=(c.reason) title=(c.message) { (c.reason) } " " span.muted { (c.message) }
                            }
                        }
                        td class=(st.last_verdict.clone().unwrap_or_default()) { (st.last_verdict.clone().unwrap_or_else(|| "—".into())) }
                    }
                }
            }
            h2 { "Recent runs" }
            (runs_table(runs))
            h2 { "Operator instances driving runs" }
            p.muted { "This instance: " code { (instances.me) } }
            table id="instances" {
                tr { th { "Instance" } th { "State" } th { "Last heartbeat" } th { "Runs" } }
                @for v in instances.drivers {
                    tr data-instance=(v.instance) {
                        td { code { (v.instance) } }
                        td class=(format!("{:?}", v.state)) { (v.state.as_str()) }
                        td { (v.heartbeat.to_string()) }
                        td {
                            @for r in &v.runs {
                                a href=(format!("/runs/{r}")) { (r) } " "
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The instances section of the overview.
pub struct Instances<'a> {
    /// This process's identity.
    pub me: &'a str,
    /// Instances driving unfinished runs (`run_owner::drivers`).
    pub drivers: &'a [crate::run_owner::DriverView],
}

fn runs_table(runs: &[&ExperimentRun]) -> Markup {
    html! {
        table id="runs" {
            tr { th { "Run" } th { "Experiment" } th { "Phase" } th { "Verdict" } th { "Budget spent" } th { "Started" } }
            @for r in runs {
                @let st = r.status.clone().unwrap_or_default();
                tr {
                    td { a href=(run_link(r)) { (r.name_any()) } }
                    td { (r.spec.experiment) }
                    td class=(format!("{:?}", st.phase)) { (format!("{:?}", st.phase)) }
                    td class=(verdict_text(st.verdict)) { (verdict_text(st.verdict)) }
                    td { (st.budget.as_ref().and_then(|b| b.spent).map_or("—".to_owned(), |s| format!("{:.2}%", s * 100.0))) }
                    td { (r.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default()) }
                }
            }
        }
    }
}

fn pods_table(id: &str, pods: &[PodRecord]) -> Markup {
    html! {
        table id=(id) {
            tr { th { "Pod" } th { "Owner" } th { "Revision" } th { "Created" } th { "Node" } th { "Zone" } th { "Ready" } th { "Deletion cost" } th { "Seen at" } }
            @for p in pods {
                tr {
                    td { (p.name) }
                    td { (p.owner.clone().unwrap_or_default()) }
                    td { (p.revision.clone().unwrap_or_default()) }
                    td { (p.created.clone().unwrap_or_default()) }
                    td { (p.node.clone().unwrap_or_default()) }
                    td { (p.zone.clone().unwrap_or_default()) }
                    td { (p.ready) }
                    td { (p.deletion_cost.map(|c| c.to_string()).unwrap_or_default()) }
                    td { (p.at.clone().unwrap_or_default()) }
                }
            }
        }
    }
}

/// One run: outcome, expectations, budget, evidence, timeline, chart.
pub fn run_page(run: &ExperimentRun, chart: Option<Markup>, paused: Option<&str>) -> Markup {
    let st = run.status.clone().unwrap_or_default();
    let ns = run.namespace().unwrap_or_default();
    let phase = format!("{:?}", st.phase);
    page(
        &format!("Run {}", run.name_any()),
        !st.phase.is_final(),
        paused,
        html! {
            h2 { "Run " (ns) "/" (run.name_any()) }
            p {
                "Experiment " a href=(format!("/runbooks/experiment/{ns}/{}", run.spec.experiment)) { (run.spec.experiment) }
                " · phase " span id="phase" class=(phase) { (phase) }
                " · verdict " span id="verdict" class=(verdict_text(st.verdict)) { (verdict_text(st.verdict)) }
                @if let Some(seed) = st.seed { " · seed " code { (seed) } }
            }
            p { "Hypothesis: " em { (run.spec.snapshot.hypothesis.description) } }
            @if let Some(reason) = &st.reason { p { "Reason: " (reason) } }
            h2 { "Expectations" }
            table id="expectations" {
                tr { th { "Expectation" } th { "Result" } th { "Measured" } th { "Bound" } th { "Why" } }
                @for e in &st.expectations {
                    @let result = format!("{:?}", e.result);
                    tr {
                        td { (e.name) }
                        td class=(result) { (result) }
                        td { (e.measured.clone().unwrap_or_default()) }
                        td { (e.bound.clone().unwrap_or_default()) }
                        td { (e.message.clone().unwrap_or_default()) }
                    }
                }
            }
            h2 { "Budget" }
            @let b = st.budget.clone().unwrap_or_default();
            p id="budget" {
                "before " (budget_text(b.remaining_before))
                " · after " (budget_text(b.remaining_after))
                " · spent by this run " (b.spent.map_or("—".to_owned(), |s| format!("{:.2}%", s * 100.0)))
                @if let Some(ratio) = b.spent_of_cap {
                    @let cap = crate::gate::Policy::from_spec(&run.spec.snapshot.budget_policy).max_budget_spend * 100.0;
                    // Above 1 the run let through more than its cap: the
                    // spend between two observations outran the projection.
                    " · " span id="spent-of-cap" class=(if ratio > 1.0 { "Refuted" } else { "Confirmed" }) {
                        (format!("{:.0}% of its {cap:.1}% cap", ratio * 100.0))
                    }
                }
            }
            @if let Some(g) = &st.gate {
                p { "Gate: " span class=(if g.open { "Open" } else { "Gated" }) { (g.reason) } " — " (g.message.clone().unwrap_or_default()) }
            }
            h2 { "Burn rate across the run" }
            @match chart {
                Some(svg) => div id="chart" { (svg) },
                None => p.muted { "no burn-rate data for this run" },
            }
            h2 { "Evidence" }
            @let obs = st.observations.clone().unwrap_or_default();
            @if !obs.killed_pods.is_empty() { h3 { "Pods killed" } (pods_table("killed", &obs.killed_pods)) }
            @if let Some(secs) = obs.recovery_seconds { p id="recovery" { "Recovered in " (format!("{secs:.1}")) "s" } }
            @if !obs.removed_pods.is_empty() {
                h3 { "Pods removed by the controller, in order" } (pods_table("removed", &obs.removed_pods))
                h3 { "Pods that survived" } (pods_table("surviving", &obs.surviving_pods))
                @if let Some(m) = obs.order_matches { p { (m) " of " (obs.removed_pods.len()) " removals matched the expected order" } }
            }
            @if let Some(zone) = &obs.zone {
                h3 { "Zone " (zone) " taken out: Ready pods per zone" }
                table id="zones" {
                    tr { th { "Zone" } th { "Before" } th { "At the end" } }
                    @for z in &obs.pods_per_zone { tr { td { (z.zone) } td { (z.before) } td { (z.after) } } }
                }
                @match obs.reschedule_seconds {
                    Some(s) => p { "Every deleted pod had a replacement on a node after " (format!("{s:.1}")) "s" },
                    None => p { "Not every deleted pod had a replacement on a node by the end of the fault" },
                }
                @if !obs.pending_pods.is_empty() {
                    h3 { "Pods the scheduler could not place" }
                    table id="pending" {
                        tr { th { "Pod" } th { "Reason" } th { "Scheduler's message" } }
                        @for p in &obs.pending_pods {
                            tr { td { (p.name) } td { (p.reason.clone().unwrap_or_default()) } td { (p.message.clone().unwrap_or_default()) } }
                        }
                    }
                }
            }
            @if !obs.drained_nodes.is_empty() {
                h3 { "Drained " (obs.drained_nodes.join(", ")) }
                @match obs.drain_seconds {
                    Some(s) => p { "Every pod evicted and gone after " (format!("{s:.1}")) "s" },
                    None => p { "Not every pod was evicted by the end of the fault" },
                }
                table id="evictions" {
                    tr { th { "Pod" } th { "Node" } th { "Evicted after" } th { "Refusals" } th { "PodDisruptionBudget" } th { "Last refusal" } }
                    @for e in &obs.evictions {
                        tr {
                            td { (e.namespace) "/" (e.name) } td { (e.node) }
                            td { (e.evicted_after_seconds.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "not evicted".into())) }
                            td { (e.refusals) } td { (e.pdb.clone().unwrap_or_default()) } td { (e.last_refusal.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            @if let Some(n) = obs.connections_at_first_refusal {
                p id="refusal" { "The target first refused with " (n) " connections held: " code { (obs.refusal_message.clone().unwrap_or_default()) } }
            }
            @if let Some(n) = obs.max_connections_held { p { "Most connections held at once: " (n) } }
            @if let Some(n) = obs.connections_dropped {
                p id="dropped" { "Held connections the target dropped: " (n) }
                @if !obs.connection_drops.is_empty() {
                    table id="drops" {
                        tr { th { "Seen at" } th { "Dropped" } th { "Still held" } }
                        @for d in &obs.connection_drops {
                            tr { td { (d.time.0.to_string()) } td { (d.dropped) } td { (d.held) } }
                        }
                    }
                }
            }
            @if !obs.checks.is_empty() {
                h3 { "Checks" }
                table id="checks" {
                    tr { th { "Check" } th { "Role" } th { "Passes when" } th { "Samples" } th { "Failures" } th { "Most in a row" } th { "Threshold" } th { "Last" } }
                    @for c in &obs.checks {
                        tr {
                            td { (c.name) } td { (format!("{:?}", c.role)) } td { code { (c.bound) } }
                            td { (c.samples) } td { (c.failures) } td { (c.max_consecutive_failures) }
                            td { (c.failure_threshold) } td { (c.last.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            @if !obs.max_burn_rates.is_empty() {
                p { "Highest burn rate during the run: "
                    @for m in &obs.max_burn_rates { (m.slo) " " (format!("{:.2}", m.burn_rate)) " " } }
            }
            h2 { "Timeline" }
            table id="timeline" {
                tr { th { "Time" } th { "Step" } th { "Details" } }
                @for t in &st.timeline {
                    tr { td { (t.time.0.to_string()) } td { (t.step) } td { (t.message.clone().unwrap_or_default()) } }
                }
            }
        },
    )
}

/// The runbook of an SLO: what its alert means, its state, and the latest
/// findings of the experiments it guards.
pub fn slo_runbook(
    slo: &ServiceLevelObjective,
    experiments: &[&ChaosExperiment],
    runs: &[&ExperimentRun],
    known: &[&Finding],
    paused: Option<&str>,
) -> Markup {
    let st = slo.status.clone().unwrap_or_default();
    let ns = slo.namespace().unwrap_or_default();
    page(
        &format!("Runbook: SLO {}", slo.name_any()),
        true,
        paused,
        html! {
            h2 { "SLO " (ns) "/" (slo.name_any()) " — " (slo.spec.service) }
            @if let Some(d) = &slo.spec.description { p { (d) } }
            p { "Objective " (slo.spec.objective) "% over " (slo.spec.window) ". Budget remaining " (budget_bar(st.budget_remaining))
                " · " a id="slo-page" href=(format!("/slos/{ns}/{}", slo.name_any())) { "budget and burn rates over time" } }
            // First on the page an alert links to: what the experiments
            // already showed breaks this service is the likeliest cause.
            (weaknesses(known))
            h3 { "When its burn-rate alert fires" }
            ol {
                li { "The service is spending its error budget faster than the alert tier allows; the alert names the tier and windows." }
                li { "Check whether an experiment is running below: Headroom aborts and restores on its own when the short-window burn rate crosses the abort threshold." }
                li { "Set the global pause if you need quiet: " code { "headroom pause" } " or " code { "kubectl -n <operator namespace> create configmap headroom-pause --from-literal=reason=..." } }
                li { "Look for the cause in the latest findings: a refuted hypothesis is a known weakness." }
            }
            h3 { "Current state" }
            ul {
                @for c in &st.conditions { li { b { (c.type_) } " " (c.status) " (" (c.reason) "): " (c.message) } }
            }
            h3 { "Experiments guarded by this SLO" }
            ul { @for e in experiments {
                li { a href=(format!("/runbooks/experiment/{}/{}", e.namespace().unwrap_or_default(), e.name_any())) { (e.name_any()) } " — " (e.spec.hypothesis.description) }
            } }
            h3 { "Latest findings" }
            (runs_table(runs))
        },
    )
}

/// The runbook of an experiment: hypothesis, latest runs.
pub fn experiment_runbook(
    exp: &ChaosExperiment,
    runs: &[&ExperimentRun],
    known: &[&Finding],
    paused: Option<&str>,
) -> Markup {
    let ns = exp.namespace().unwrap_or_default();
    let st = exp.status.clone().unwrap_or_default();
    page(
        &format!("Runbook: experiment {}", exp.name_any()),
        true,
        paused,
        html! {
            h2 { "Experiment " (ns) "/" (exp.name_any()) " (" (exp.spec.action.kind()) ")" }
            p { "Hypothesis: " em { (exp.spec.hypothesis.description) } }
            p { "Guarded by: " @for s in &exp.spec.slos { a href=(format!("/runbooks/slo/{ns}/{s}")) { (s) } " " } }
            p { "Last verdict: " span id="last-verdict" class=(st.last_verdict.clone().unwrap_or_default()) { (st.last_verdict.clone().unwrap_or_else(|| "none yet".into())) } }
            @if let Some(c) = cond(&st.conditions, "Gated") { p { "Gate: " (c.reason) " — " (c.message) } }
            (weaknesses(known))
            h3 { "When HeadroomHypothesisRefuted fires" }
            p { "The last run broke an expectation: read its evidence below, fix the weakness or revise the hypothesis. The fault was restored when the run ended." }
            h3 { "Latest findings" }
            (runs_table(runs))
        },
    )
}

/// Known weaknesses, open ones first (as `findings` orders them), each
/// with its sentence, the runs that found and fixed it, and the remedy.
fn weaknesses(known: &[&Finding]) -> Markup {
    let link = |ns: &str, run: &str| html! { a href=(format!("/runs/{ns}/{run}")) { (run) } };
    let open = known.iter().filter(|f| f.is_open()).count();
    html! {
        h3 { "Known weaknesses (" (open) " open)" }
        @if known.is_empty() {
            p.muted id="weaknesses" { "No experiment has refuted its hypothesis yet." }
        } @else {
            div id="weaknesses" {
                @for f in known {
                    @let ns = f.namespace.as_str();
                    div class=(if f.is_open() { "weakness open" } else { "weakness fixed" }) data-experiment=(f.experiment) {
                        @match &f.state {
                            State::Open => { b.Refuted { "Open" } }
                            State::Fixed { .. } => { b.Confirmed { "Fixed" } }
                        }
                        " " span.sentence { (f.sentence) }
                        br;
                        span.muted {
                            "Found by " a href=(format!("/runbooks/experiment/{ns}/{}", f.experiment)) { (f.experiment) }
                            " in run " (link(ns, &f.found_by))
                            @if f.last_refuted_by != f.found_by { ", again in " (link(ns, &f.last_refuted_by)) }
                            @if let Some(at) = f.found_at { " (" (at.to_string()) ")" }
                            @if let State::Fixed { run, at } = &f.state {
                                "; fixed: " span.fixed-by { (link(ns, run)) } " confirmed the hypothesis"
                                @if let Some(at) = at { " (" (at.to_string()) ")" }
                            }
                        }
                        @if let Some(r) = &f.remediation { p.remediation { "Remediation: " (r) } }
                    }
                }
            }
        }
    }
}

/// What the SLO page draws, or why a chart is missing.
pub struct SloCharts {
    pub budget: Result<Markup, String>,
    pub burn: Result<Markup, String>,
    /// The span drawn and the step between points, e.g. `30d` and `3h`.
    pub span: String,
    pub step: String,
    /// Why the span asked for was not used.
    pub note: Option<String>,
}

impl Default for SloCharts {
    fn default() -> Self {
        Self {
            budget: Err(String::new()),
            burn: Err(String::new()),
            span: String::new(),
            step: String::new(),
            note: None,
        }
    }
}

/// One SLO over time: budget remaining and burn rates, with the runs it
/// guarded marked as bands linked to their pages (what Pyrra's detail page
/// shows, plus the experiments).
pub fn slo_page(
    slo: &ServiceLevelObjective,
    charts: &SloCharts,
    runs: &[&ExperimentRun],
    paused: Option<&str>,
) -> Markup {
    let st = slo.status.clone().unwrap_or_default();
    let ns = slo.namespace().unwrap_or_default();
    let name = slo.name_any();
    let chart_or_why = |id: &str, c: &Result<Markup, String>| {
        html! {
            @match c {
                Ok(svg) => div id=(id) { (svg) },
                Err(why) => p.muted.no-chart id=(id) { (why) },
            }
        }
    };
    page(
        &format!("SLO {name}"),
        false,
        paused,
        html! {
            h2 { "SLO " (ns) "/" (name) " — " (slo.spec.service) }
            @if let Some(d) = &slo.spec.description { p { (d) } }
            p {
                "Objective " (slo.spec.objective) "% over " (slo.spec.window)
                ". Budget remaining " (budget_bar(st.budget_remaining))
                " · " span.muted { (lasts(&st, &slo.spec.window)) }
                " · " a href=(format!("/runbooks/slo/{ns}/{name}")) { "runbook and known weaknesses" }
            }
            p {
                "Burn rates now: "
                @for b in &st.burn_rates {
                    span.muted { (b.window) ": " }
                    (b.burn_rate.map_or("—".to_owned(), |v| format!("{v:.2}"))) " "
                }
            }
            nav.spans {
                "Span: "
                @for span in ["1h", "1d", "7d"] {
                    a href=(format!("/slos/{ns}/{name}?range={span}")) { (span) }
                }
                a href=(format!("/slos/{ns}/{name}")) { (slo.spec.window) " (window)" }
            }
            @if let Some(n) = &charts.note { p.muted id="note" { (n) } }
            p.muted { "Last " (charts.span) ", one point every " (charts.step) ". Shaded: experiment runs guarded by this SLO (linked)." }
            h3 { "Error budget remaining" }
            (chart_or_why("budget-chart", &charts.budget))
            h3 { "Burn rates" }
            (chart_or_why("burn-chart", &charts.burn))
            h3 { "Experiment runs guarded by this SLO" }
            (runs_table(runs))
        },
    )
}

/// A plain page for errors and not-found.
pub fn message(title: &str, text: &str) -> Markup {
    page(title, false, None, html! { h2 { (title) } p { (text) } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_strings_are_escaped() {
        let slo: ServiceLevelObjective = serde_json::from_value(json!({
            "apiVersion": "headroom.dev/v1alpha1", "kind": "ServiceLevelObjective",
            "metadata": { "name": "x", "namespace": "ns" },
            "spec": {
                "service": "<script>alert(1)</script>",
                "description": "\"><img src=x onerror=alert(1)>",
                "objective": 99.0, "window": "30d",
                "indicator": { "ratio": { "errors": "sum(rate(a{code=~\"5..\"}[$window]))", "total": "sum(rate(a[$window]))" } }
            }
        }))
        .expect("slo");
        let drivers = [crate::run_owner::DriverView {
            instance: "<i>pod</i>".into(),
            state: crate::run_owner::DriverState::Live,
            heartbeat: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            runs: vec!["ns/r".into()],
        }];
        let instances = Instances {
            me: "me",
            drivers: &drivers,
        };
        let html = overview(&[&slo], &[], &[], &instances, Some("<b>incident</b>")).into_string();
        assert!(html.contains("&lt;i&gt;pod&lt;/i&gt;"), "{html}");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;incident&lt;/b&gt;"));
        let runbook = slo_runbook(&slo, &[], &[], &[], None).into_string();
        assert!(!runbook.contains("<img src=x"));
        assert!(runbook.contains("&quot;&gt;&lt;img"));
    }

    /// The run page shows the evidence a run records about its target:
    /// which ReplicaSet and revision each removed pod came from, the
    /// connections the target dropped, and the spend against the cap.
    #[test]
    fn run_page_shows_owner_revision_drops_and_spend_of_cap() {
        let run: ExperimentRun = serde_json::from_value(json!({
            "apiVersion": "headroom.dev/v1alpha1", "kind": "ExperimentRun",
            "metadata": { "name": "r", "namespace": "shop" },
            "spec": { "experiment": "e", "snapshot": {
                "hypothesis": { "description": "h" }, "slos": ["s"],
                "budgetPolicy": { "maxBudgetSpend": 5 },
                "action": { "scaleDown": { "target": { "kind": "Deployment", "name": "web" }, "scaleUpTo": 4, "scaleDownTo": 2, "expectOrder": "NewestFirst" } }
            } },
            "status": {
                "phase": "Aborted",
                "budget": { "spent": 0.06, "spentOfCap": 1.2 },
                "observations": {
                    "removedPods": [{ "name": "web-1", "ready": true, "owner": "ReplicaSet/web-7ccf45cd94", "revision": "2" }],
                    "connectionsDropped": 7,
                    "connectionDrops": [{ "time": "2026-11-30T10:00:00.000000Z", "dropped": 7, "held": 3 }]
                }
            }
        }))
        .expect("run");
        let html = run_page(&run, None, None).into_string();
        for want in [
            "ReplicaSet/web-7ccf45cd94",
            "<td>2</td>",
            "Held connections the target dropped: 7",
            "<td>3</td>",
            "120% of its 5.0% cap",
            "class=\"Refuted\"",
        ] {
            assert!(html.contains(want), "{want} missing from {html}");
        }
    }

    /// The runbook an alert links to leads with the open weaknesses, then
    /// the fixed ones with the run that fixed them; the SLO page renders
    /// with a message where Prometheus gave no chart.
    #[test]
    fn runbook_leads_with_open_weaknesses_and_the_slo_page_says_why_a_chart_is_missing() {
        let slo: ServiceLevelObjective = serde_json::from_value(json!({
            "apiVersion": "headroom.dev/v1alpha1", "kind": "ServiceLevelObjective",
            "metadata": { "name": "checkout", "namespace": "shop" },
            "spec": { "service": "checkout", "objective": 99.0, "window": "30d",
                "indicator": { "ratio": { "errors": "a[$window]", "total": "b[$window]" } } }
        }))
        .expect("slo");
        let finding = |exp: &str, state: State| Finding {
            namespace: "shop".into(),
            experiment: exp.into(),
            slos: vec!["checkout".into()],
            found_by: format!("{exp}-1"),
            found_at: None,
            last_refuted_by: format!("{exp}-1"),
            sentence: format!("{exp} <broke>"),
            remediation: Some("add a replica".into()),
            state,
        };
        let open = finding("pg", State::Open);
        let fixed = finding(
            "kill",
            State::Fixed {
                run: "kill-2".into(),
                at: None,
            },
        );
        let html = slo_runbook(&slo, &[], &[], &[&open, &fixed], None).into_string();
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("{needle} missing: {html}"))
        };
        assert!(at("pg &lt;broke&gt;") < at("kill &lt;broke&gt;"));
        assert!(at("Known weaknesses (1 open)") < at("When its burn-rate alert fires"));
        assert!(at(r#"href="/runs/shop/kill-2""#) > at("Fixed"));
        assert!(html.contains("Remediation: add a replica"));
        assert!(html.contains(r#"href="/slos/shop/checkout""#));

        let charts = SloCharts {
            budget: Err("Prometheus did not answer: connection refused".into()),
            burn: Err("Prometheus did not answer: connection refused".into()),
            span: "30d".into(),
            step: "3h".into(),
            note: None,
        };
        let page = slo_page(&slo, &charts, &[], None).into_string();
        assert!(page.contains("Prometheus did not answer: connection refused"));
        assert!(page.contains(r#"href="/runbooks/slo/shop/checkout""#));
    }

    #[test]
    fn budget_text_matches_status_precision() {
        assert_eq!(budget_text(Some(0.87349)), "87.3%");
        assert_eq!(budget_text(Some(-0.5)), "-50.0%");
        assert_eq!(budget_text(None), "unknown");
    }
}
