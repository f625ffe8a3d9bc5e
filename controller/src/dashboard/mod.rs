//! The dashboard and its JSON API, served by the operator on `--listen`.
//! Pages read from watch caches (reflectors), so rendering costs no API
//! call; the run page adds one Prometheus range query per guarding SLO for
//! its chart, the SLO page one per line of its charts (about
//! [`CHART_POINTS`] points each, whatever the span). Reading is open; actions need a token (see `auth`).

pub mod auth;
pub mod chart;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use maud::Markup;
use serde_json::json;

use crate::context::Context;
use crate::engine::abort_rule;
use crate::gate::Policy;
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{ExperimentRun, Verdict};
use crate::resources::slo::ServiceLevelObjective;
use crate::slo_reader::tier_plans;

use crate::resources::RUN_NOW;

/// Shared state of the dashboard.
pub struct Dashboard {
    ctx: Arc<Context>,
    slos: Store<ServiceLevelObjective>,
    experiments: Store<ChaosExperiment>,
    runs: Store<ExperimentRun>,
}

/// The dashboard over the process's watch caches.
pub fn start(ctx: Arc<Context>, caches: &crate::caches::Caches) -> Arc<Dashboard> {
    Arc::new(Dashboard {
        ctx,
        slos: caches.slos.clone(),
        experiments: caches.experiments.clone(),
        runs: caches.runs.clone(),
    })
}

/// Routes: pages, JSON API and actions.
pub fn router(d: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/runs/{ns}/{name}", get(run_page))
        .route("/slos/{ns}/{name}", get(slo_page))
        .route("/runbooks/slo/{ns}/{name}", get(slo_runbook))
        .route("/runbooks/experiment/{ns}/{name}", get(experiment_runbook))
        .route("/api/slos", get(api_slos))
        .route("/api/experiments", get(api_experiments))
        .route("/api/runs", get(api_runs))
        .route("/api/runs/{ns}/{name}", get(api_run))
        .route("/api/findings", get(api_findings))
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .route("/api/experiments/{ns}/{name}/run", post(run_now))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(d)
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn sorted<K: kube::Resource + Clone>(store: &Store<K>) -> Vec<Arc<K>>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    let mut items = store.state();
    items.sort_by_key(|o| (o.meta().namespace.clone(), o.meta().name.clone()));
    items
}

/// Newest first.
fn recent_runs(store: &Store<ExperimentRun>) -> Vec<Arc<ExperimentRun>> {
    let mut runs = store.state();
    runs.sort_by_key(|r| {
        std::cmp::Reverse((
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            r.name_any(),
        ))
    });
    runs
}

fn html_response(started: Instant, markup: Markup) -> Response {
    let body = markup.into_string();
    let timing = format!("render;dur={:.2}", started.elapsed().as_secs_f64() * 1000.0);
    let mut res = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&timing) {
        res.headers_mut().insert("server-timing", v);
    }
    res
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        views::message("Not found", what).into_string(),
    )
        .into_response()
}

async fn paused(d: &Dashboard) -> Option<String> {
    crate::pause::state(&d.ctx.client, &d.ctx.operator_namespace).await
}

async fn overview(State(d): State<Arc<Dashboard>>) -> Response {
    let started = Instant::now();
    let pause = paused(&d).await;
    let slos = sorted(&d.slos);
    let exps = sorted(&d.experiments);
    let runs = recent_runs(&d.runs);
    let slo_refs: Vec<&ServiceLevelObjective> = slos.iter().map(AsRef::as_ref).collect();
    let exp_refs: Vec<&ChaosExperiment> = exps.iter().map(AsRef::as_ref).collect();
    let run_refs: Vec<&ExperimentRun> = runs.iter().take(50).map(AsRef::as_ref).collect();
    let drivers = crate::run_owner::drivers(
        runs.iter().map(AsRef::as_ref),
        &d.ctx.instance,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let instances = views::Instances {
        me: &d.ctx.instance.id,
        drivers: &drivers,
    };
    html_response(
        started,
        views::overview(
            &slo_refs,
            &exp_refs,
            &run_refs,
            &instances,
            pause.as_deref(),
        ),
    )
}

fn find<K: kube::Resource + Clone>(store: &Store<K>, ns: &str, name: &str) -> Option<Arc<K>>
where
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    store.get(&reflector::ObjectRef::new(name).within(ns))
}

async fn run_page(
    State(d): State<Arc<Dashboard>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let started = Instant::now();
    let Some(run) = find(&d.runs, &ns, &name) else {
        return not_found(&format!("no run {ns}/{name}"));
    };
    let chart = chart_for(&d, &run).await;
    let pause = paused(&d).await;
    html_response(started, views::run_page(&run, chart, pause.as_deref()))
}

/// The guarding SLOs' abort-window burn rate across the run, with the
/// injection, abort and restore marked.
async fn chart_for(d: &Dashboard, run: &ExperimentRun) -> Option<Markup> {
    let st = run.status.as_ref()?;
    let start = st.start_time.as_ref()?.0.as_second();
    let end = st.completion_time.as_ref().map_or_else(
        || k8s_openapi::jiff::Timestamp::now().as_second(),
        |t| t.0.as_second(),
    );
    let (from, to) = (start - 60, end + 30);
    let step = step_for(from, to);
    let ns = run.namespace().unwrap_or_default();
    let policy = Policy::from_spec(&run.spec.snapshot.budget_policy);
    let mut series = Vec::new();
    let mut threshold = None;
    for name in &run.spec.snapshot.slos {
        let Some(slo) = find(&d.slos, &ns, name) else {
            continue;
        };
        let Ok((_, tiers)) = tier_plans(&slo) else {
            continue;
        };
        let Some((window, abort_at)) = abort_rule(&tiers, &policy) else {
            continue;
        };
        threshold = Some(threshold.map_or(abort_at, |t: f64| t.min(abort_at)));
        let w = crate::duration::format_duration(window);
        let Some(query) = burn_rate_query(&slo, &w) else {
            continue;
        };
        if let Ok(points) = d.ctx.prometheus.range(&query, from, to, step).await {
            series.push(chart::Series {
                name: format!("{name} ({w})"),
                points,
            });
        }
    }
    let mark = |steps: &[&str], label: &str| {
        st.timeline
            .iter()
            .find(|t| steps.contains(&t.step.as_str()))
            .map(|t| chart::Marker {
                at: t.time.0.as_millisecond() as f64 / 1000.0,
                label: label.to_owned(),
            })
    };
    let markers: Vec<chart::Marker> = [
        mark(
            &["PodKilled", "ScaledUp", "ConnectionsHeld", "ClientsScaled"],
            "inject",
        ),
        mark(&["AbortRequested"], "abort"),
        mark(&["RestoreStarted"], "restore"),
    ]
    .into_iter()
    .flatten()
    .collect();
    chart::burn_rate_chart(&series, &markers, threshold)
}

/// Points per chart line: enough to show a day's shape in a 30d chart
/// (one point per 3h), few enough that a range query over the window
/// costs the same whatever the window's length.
pub const CHART_POINTS: f64 = 240.0;

/// The range-query step (seconds) that draws `from..to` in about
/// [`CHART_POINTS`] points; never below Prometheus' 1s resolution of
/// interest.
pub fn step_for(from: i64, to: i64) -> f64 {
    ((to - from) as f64 / CHART_POINTS).max(1.0)
}

/// PromQL for an SLO's burn rate over `window` (a Prometheus duration):
/// its error ratio over the error budget. `None` when the indicator yields
/// no query (it failed the operator's checks, which its status says).
fn burn_rate_query(slo: &ServiceLevelObjective, window: &str) -> Option<String> {
    let q = crate::indicator::window_queries(&slo.spec.indicator, window).ok()?;
    let budget = crate::budget::error_budget(slo.spec.objective);
    Some(format!("({}) / {budget}", q.error_ratio))
}

/// The SLO page's query string: `range`, the time span drawn (a duration
/// such as `1d`); the SLO's window by default.
#[derive(serde::Deserialize)]
struct SloPageQuery {
    range: Option<String>,
}

/// Shortest and longest spans the SLO page draws: below a minute there is
/// less than one evaluation per point; past 90 days every point reads a
/// quarter of samples for a picture nobody acts on.
const SPAN_BOUNDS: (u64, u64) = (60, 90 * 86_400);

/// The span to draw: the asked one when it parses and is within
/// [`SPAN_BOUNDS`], otherwise the window, with a note saying why.
fn span_of(
    asked: Option<&str>,
    window: std::time::Duration,
) -> (std::time::Duration, Option<String>) {
    let Some(text) = asked else {
        return (window, None);
    };
    match crate::duration::parse_positive_duration(text) {
        Ok(d) if (SPAN_BOUNDS.0..=SPAN_BOUNDS.1).contains(&d.as_secs()) => (d, None),
        _ => (
            window,
            Some(format!(
                "range {text:?} is not a duration between 1m and 90d; showing the SLO's window"
            )),
        ),
    }
}

/// The runs guarded by SLO `ns/name`, newest first.
fn guarded_by(d: &Dashboard, ns: &str, name: &str) -> Vec<Arc<ExperimentRun>> {
    recent_runs(&d.runs)
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(ns) && r.spec.snapshot.slos.iter().any(|s| s == name)
        })
        .collect()
}

/// The SLO over a span (its window by default): budget remaining and burn
/// rates from Prometheus range queries, with the runs it guarded marked.
async fn slo_page(
    State(d): State<Arc<Dashboard>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<SloPageQuery>,
) -> Response {
    let started = Instant::now();
    let Some(slo) = find(&d.slos, &ns, &name) else {
        return not_found(&format!("no SLO {ns}/{name}"));
    };
    let runs = guarded_by(&d, &ns, &name);
    let charts = slo_charts(&d, &slo, q.range.as_deref(), &runs).await;
    let pause = paused(&d).await;
    let r: Vec<&ExperimentRun> = runs.iter().take(20).map(AsRef::as_ref).collect();
    html_response(
        started,
        views::slo_page(&slo, &charts, &r, pause.as_deref()),
    )
}

/// The SLO page's two charts, or why each is missing.
async fn slo_charts(
    d: &Dashboard,
    slo: &ServiceLevelObjective,
    asked: Option<&str>,
    runs: &[Arc<ExperimentRun>],
) -> views::SloCharts {
    let fail = |why: String| views::SloCharts {
        budget: Err(why.clone()),
        burn: Err(why),
        ..views::SloCharts::default()
    };
    let (period, tiers) = match tier_plans(slo) {
        Ok(p) => p,
        Err(e) => return fail(format!("the SLO's windows cannot be used: {e}")),
    };
    let (span, note) = span_of(asked, period);
    let to = k8s_openapi::jiff::Timestamp::now().as_second();
    let from = to - i64::try_from(span.as_secs()).unwrap_or(i64::MAX / 2);
    let step = step_for(from, to);
    let window = crate::duration::format_duration(period);
    let Some(budget_q) = burn_rate_query(slo, &window) else {
        return fail("the indicator yields no query (see the SLO's Ready condition)".into());
    };
    let bands = run_bands(runs);
    let chart = |series: &[chart::Series], threshold, unit, aria| {
        chart::draw(&chart::Chart {
            aria_label: aria,
            series,
            bands: &bands,
            threshold,
            span: Some((from as f64, to as f64)),
            time_labels: Some((
                format!("{} ago", crate::duration::format_duration(span)),
                "now".to_owned(),
            )),
            unit,
            ..chart::Chart::default()
        })
        .ok_or_else(|| "Prometheus has no data for this span".to_owned())
    };
    let prom = &d.ctx.prometheus;
    let unanswered =
        |e: crate::prometheus::PrometheusError| format!("Prometheus did not answer: {e}");
    // Budget remaining at each point over the rolling window ending there,
    // in percent: 100 · (1 − BR(window)).
    let budget = match prom
        .range(&format!("100 * (1 - {budget_q})"), from, to, step)
        .await
    {
        Ok(points) => chart(
            &[chart::Series {
                name: format!("budget remaining ({window} rolling)"),
                points,
            }],
            None,
            "%",
            "error budget remaining over time",
        ),
        Err(e) => Err(unanswered(e)),
    };
    let mut series = Vec::new();
    let mut burn_err = None;
    for w in burn_windows(&tiers, step) {
        let w = crate::duration::format_duration(w);
        let Some(query) = burn_rate_query(slo, &w) else {
            continue;
        };
        match prom.range(&query, from, to, step).await {
            Ok(points) => series.push(chart::Series {
                name: format!("burn rate {w}"),
                points,
            }),
            Err(e) => {
                burn_err = Some(unanswered(e));
                break;
            }
        }
    }
    let burn = match burn_err {
        Some(e) => Err(e),
        None => chart(
            &series,
            Some(chart::Threshold {
                value: 1.0,
                label: "1× (the budget lasts the window)".into(),
            }),
            "×",
            "burn rates over time",
        ),
    };
    views::SloCharts {
        budget,
        burn,
        span: crate::duration::format_duration(span),
        step: crate::duration::format_duration(std::time::Duration::from_secs_f64(step)),
        note,
    }
}

/// The burn-rate windows the SLO page draws: the tiers' long windows, at
/// most four, each at least one step long. A window shorter than the step
/// is sampled, not summarised: a spike between two points would not show.
/// When every window is shorter, the longest one is drawn all the same.
fn burn_windows(tiers: &[crate::budget::TierPlan], step: f64) -> Vec<std::time::Duration> {
    let mut all: Vec<std::time::Duration> = tiers.iter().map(|t| t.long).collect();
    all.sort();
    all.dedup();
    let covering: Vec<std::time::Duration> = all
        .iter()
        .copied()
        .filter(|w| w.as_secs_f64() >= step)
        .take(4)
        .collect();
    if covering.is_empty() {
        all.last().copied().into_iter().collect()
    } else {
        covering
    }
}

/// The runs that injected a fault, as bands from start to completion (or
/// now), linked to their pages.
fn run_bands(runs: &[Arc<ExperimentRun>]) -> Vec<chart::Band> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second() as f64;
    runs.iter()
        .filter_map(|r| {
            let st = r.status.as_ref()?;
            let from = st.start_time.as_ref()?.0.as_millisecond() as f64 / 1000.0;
            let to = st
                .completion_time
                .as_ref()
                .map_or(now, |t| t.0.as_millisecond() as f64 / 1000.0);
            let outcome = st
                .verdict
                .map_or_else(|| format!("{:?}", st.phase), |v| format!("{v:?}"));
            // The colours of the verdict classes in the pages' style.
            let colour = match st.verdict {
                Some(Verdict::Refuted) => "#c23030",
                Some(Verdict::Confirmed) => "#2e7d32",
                _ => "#8a6d00",
            };
            Some(chart::Band {
                from,
                to,
                colour,
                label: outcome.clone(),
                title: format!("{} ({}): {outcome}", r.name_any(), r.spec.experiment),
                href: format!(
                    "/runs/{}/{}",
                    r.namespace().unwrap_or_default(),
                    r.name_any()
                ),
            })
        })
        .collect()
}

async fn slo_runbook(
    State(d): State<Arc<Dashboard>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let started = Instant::now();
    let Some(slo) = find(&d.slos, &ns, &name) else {
        return not_found(&format!("no SLO {ns}/{name}"));
    };
    let exps: Vec<Arc<ChaosExperiment>> = sorted(&d.experiments)
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(ns.as_str()) && e.spec.slos.contains(&name))
        .collect();
    let mut runs = guarded_by(&d, &ns, &name);
    runs.truncate(20);
    let all = findings_of(&d);
    let known = crate::findings::for_slo(&all, &ns, &name);
    let pause = paused(&d).await;
    let e: Vec<&ChaosExperiment> = exps.iter().map(AsRef::as_ref).collect();
    let r: Vec<&ExperimentRun> = runs.iter().map(AsRef::as_ref).collect();
    html_response(
        started,
        views::slo_runbook(&slo, &e, &r, &known, pause.as_deref()),
    )
}

async fn experiment_runbook(
    State(d): State<Arc<Dashboard>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let started = Instant::now();
    let Some(exp) = find(&d.experiments, &ns, &name) else {
        return not_found(&format!("no experiment {ns}/{name}"));
    };
    let runs: Vec<Arc<ExperimentRun>> = recent_runs(&d.runs)
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()) && r.spec.experiment == name)
        .take(20)
        .collect();
    let all = findings_of(&d);
    let known = crate::findings::for_experiment(&all, &ns, &name);
    let pause = paused(&d).await;
    let r: Vec<&ExperimentRun> = runs.iter().map(AsRef::as_ref).collect();
    html_response(
        started,
        views::experiment_runbook(&exp, &r, &known, pause.as_deref()),
    )
}

/// Every finding of the runs in the cache, each with the remediation its
/// experiment's spec holds now (an edit after the refutation shows at
/// once), or the one the refuting run saw when the experiment is gone.
fn findings_of(d: &Dashboard) -> Vec<crate::findings::Finding> {
    let runs = d.runs.state();
    let mut all = crate::findings::findings(runs.iter().map(AsRef::as_ref));
    for f in &mut all {
        if let Some(exp) = find(&d.experiments, &f.namespace, &f.experiment) {
            f.remediation = exp.spec.remediation.clone();
        }
    }
    all
}

async fn api_findings(State(d): State<Arc<Dashboard>>) -> Response {
    axum::Json(findings_of(&d)).into_response()
}

/// The cached objects as a JSON array, serialized from the cache itself:
/// a clone of each first would be a second copy of every SLO for the time
/// of the answer (tens of MB at ten thousand SLOs).
fn json_of<K: serde::Serialize>(items: &[Arc<K>]) -> Response {
    let refs: Vec<&K> = items.iter().map(AsRef::as_ref).collect();
    axum::Json(refs).into_response()
}

async fn api_slos(State(d): State<Arc<Dashboard>>) -> Response {
    json_of(&sorted(&d.slos))
}

async fn api_experiments(State(d): State<Arc<Dashboard>>) -> Response {
    json_of(&sorted(&d.experiments))
}

async fn api_runs(State(d): State<Arc<Dashboard>>) -> Response {
    json_of(&recent_runs(&d.runs))
}

async fn api_run(
    State(d): State<Arc<Dashboard>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match find(&d.runs, &ns, &name) {
        Some(r) => axum::Json(r.as_ref().clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": format!("no run {ns}/{name}") })),
        )
            .into_response(),
    }
}

fn refused((code, message): (StatusCode, String)) -> Response {
    (code, axum::Json(json!({ "error": message }))).into_response()
}

async fn pause(State(d): State<Arc<Dashboard>>, headers: HeaderMap, body: String) -> Response {
    let need = auth::Permission {
        verb: "create",
        group: "",
        resource: "configmaps",
        namespace: d.ctx.operator_namespace.clone(),
        name: None,
    };
    let user = match auth::authorize(&d.ctx.client, &headers, &need).await {
        Ok(u) => u,
        Err(e) => return refused(e),
    };
    let reason = if body.trim().is_empty() {
        "paused from the dashboard".to_owned()
    } else {
        body.trim().chars().take(500).collect()
    };
    match crate::pause::set(&d.ctx.client, &d.ctx.operator_namespace, &reason, &user).await {
        Ok(_) => {
            axum::Json(json!({ "paused": true, "by": user, "reason": reason })).into_response()
        }
        Err(e) => refused((StatusCode::BAD_GATEWAY, format!("setting the pause: {e}"))),
    }
}

async fn resume(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    let need = auth::Permission {
        verb: "delete",
        group: "",
        resource: "configmaps",
        namespace: d.ctx.operator_namespace.clone(),
        name: Some(crate::pause::NAME.to_owned()),
    };
    let user = match auth::authorize(&d.ctx.client, &headers, &need).await {
        Ok(u) => u,
        Err(e) => return refused(e),
    };
    match crate::pause::clear(&d.ctx.client, &d.ctx.operator_namespace).await {
        Ok(_) => axum::Json(json!({ "paused": false, "by": user })).into_response(),
        Err(e) => refused((StatusCode::BAD_GATEWAY, format!("clearing the pause: {e}"))),
    }
}

async fn run_now(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let need = auth::Permission {
        verb: "patch",
        group: crate::resources::GROUP,
        resource: "chaosexperiments",
        namespace: ns.clone(),
        name: Some(name.clone()),
    };
    let user = match auth::authorize(&d.ctx.client, &headers, &need).await {
        Ok(u) => u,
        Err(e) => return refused(e),
    };
    let at = k8s_openapi::jiff::Timestamp::now().to_string();
    let api: Api<ChaosExperiment> = Api::namespaced(d.ctx.client.clone(), &ns);
    let patch = json!({ "metadata": { "annotations": { RUN_NOW: at } } });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        // The gate still decides: "run now" means "consider it due now".
        Ok(_) => axum::Json(json!({ "requested": at, "by": user })).into_response(),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            refused((StatusCode::NOT_FOUND, format!("no experiment {ns}/{name}")))
        }
        Err(e) => refused((StatusCode::BAD_GATEWAY, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_chart_costs_about_240_points_whatever_the_span() {
        // (span in seconds, step expected)
        let cases: [(i64, f64); 4] = [
            (30 * 86_400, 10_800.0), // 30d: one point every 3h
            (7 * 86_400, 2_520.0),
            (120, 1.0), // 2m: the 1s floor, 120 points
            (0, 1.0),
        ];
        for (span, step) in cases {
            assert_eq!(step_for(1_000, 1_000 + span), step, "{span}s");
            assert!(span as f64 / step_for(0, span) <= CHART_POINTS);
        }
    }

    #[test]
    fn the_span_asked_for_is_used_only_within_bounds() {
        let window = Duration::from_secs(30 * 86_400);
        let cases: [(Option<&str>, u64, bool); 7] = [
            (None, 30 * 86_400, false),
            (Some("1d"), 86_400, false),
            (Some("1m"), 60, false),
            (Some("90d"), 90 * 86_400, false),
            (Some("30s"), 30 * 86_400, true),
            (Some("365d"), 30 * 86_400, true),
            (Some("<b>soon</b>"), 30 * 86_400, true),
        ];
        for (asked, secs, noted) in cases {
            let (span, note) = span_of(asked, window);
            assert_eq!((span.as_secs(), note.is_some()), (secs, noted), "{asked:?}");
        }
    }

    #[test]
    fn burn_windows_are_the_long_windows_a_step_covers() {
        let tiers = crate::budget::default_tiers(Duration::from_secs(30 * 86_400));
        let h = |n: u64| Duration::from_secs(n * 3600);
        // (step in seconds, windows drawn)
        let cases: [(f64, Vec<Duration>); 3] = [
            (60.0, vec![h(1), h(6), h(24), h(72)]),
            (10_800.0, vec![h(6), h(24), h(72)]),
            (500_000.0, vec![h(72)]),
        ];
        for (step, want) in cases {
            assert_eq!(burn_windows(&tiers, step), want, "step {step}");
        }
        assert!(burn_windows(&[], 1.0).is_empty());
    }
}
