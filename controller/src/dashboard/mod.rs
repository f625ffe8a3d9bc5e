//! The dashboard and its JSON API, served by the operator on `--listen`.
//! Pages read from watch caches (reflectors), so rendering costs no API
//! call; the run page adds one Prometheus range query per guarding SLO for
//! its chart. Reading is open; actions need a token (see `auth`).

pub mod auth;
pub mod chart;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
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
use crate::resources::run::ExperimentRun;
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
        .route("/runbooks/slo/{ns}/{name}", get(slo_runbook))
        .route("/runbooks/experiment/{ns}/{name}", get(experiment_runbook))
        .route("/api/slos", get(api_slos))
        .route("/api/experiments", get(api_experiments))
        .route("/api/runs", get(api_runs))
        .route("/api/runs/{ns}/{name}", get(api_run))
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
    let step = ((to - from) as f64 / 240.0).max(1.0);
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
        let Ok(q) = crate::indicator::window_queries(&slo.spec.indicator, &w) else {
            continue;
        };
        let budget = crate::budget::error_budget(slo.spec.objective);
        let query = format!("({}) / {budget}", q.error_ratio);
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
    let runs: Vec<Arc<ExperimentRun>> = recent_runs(&d.runs)
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(ns.as_str()) && r.spec.snapshot.slos.contains(&name)
        })
        .take(20)
        .collect();
    let pause = paused(&d).await;
    let e: Vec<&ChaosExperiment> = exps.iter().map(AsRef::as_ref).collect();
    let r: Vec<&ExperimentRun> = runs.iter().map(AsRef::as_ref).collect();
    html_response(started, views::slo_runbook(&slo, &e, &r, pause.as_deref()))
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
    let pause = paused(&d).await;
    let r: Vec<&ExperimentRun> = runs.iter().map(AsRef::as_ref).collect();
    html_response(
        started,
        views::experiment_runbook(&exp, &r, pause.as_deref()),
    )
}

fn owned<K: Clone>(items: Vec<Arc<K>>) -> Vec<K> {
    items.iter().map(|a| a.as_ref().clone()).collect()
}

async fn api_slos(State(d): State<Arc<Dashboard>>) -> Response {
    axum::Json(owned(sorted(&d.slos))).into_response()
}

async fn api_experiments(State(d): State<Arc<Dashboard>>) -> Response {
    axum::Json(owned(sorted(&d.experiments))).into_response()
}

async fn api_runs(State(d): State<Arc<Dashboard>>) -> Response {
    axum::Json(owned(recent_runs(&d.runs))).into_response()
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
