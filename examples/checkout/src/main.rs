//! `checkout`: the example service of Headroom's local cluster.
//!
//! kwok pods run no process, so this service runs on the host and reads its
//! Deployment's Ready replicas from the API: capacity and database sessions
//! follow them, so killing pods or scaling changes its real error rate and
//! its real PostgreSQL connections, which Prometheus scrapes.

mod capacity;
mod metrics;
mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::capacity::Limiter;
use crate::metrics::Metrics;
use crate::pool::Pool;

#[derive(Debug, Parser)]
#[command(about = "Example service whose capacity follows its Deployment's Ready pods")]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:28080")]
    listen: SocketAddr,
    /// Kubeconfig of the cluster that runs the Deployment.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: std::path::PathBuf,
    /// Namespace of the Deployment.
    #[arg(long, default_value = "checkout")]
    namespace: String,
    /// Name of the Deployment.
    #[arg(long, default_value = "checkout")]
    deployment: String,
    /// PostgreSQL URL; each Ready pod holds `--conns-per-pod` sessions.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Requests per second the built-in load generator sends (0 = none).
    #[arg(long, default_value_t = 50)]
    load_rps: u32,
    /// Requests per second each Ready pod can serve.
    #[arg(long, default_value_t = 20)]
    capacity_per_pod: u32,
    /// PostgreSQL sessions held per Ready pod.
    #[arg(long, default_value_t = 2)]
    conns_per_pod: u32,
}

struct AppState {
    metrics: Arc<Metrics>,
    ready: AtomicU32,
    desired: AtomicU32,
    /// f64 bits of the injected error ratio.
    error_ratio: AtomicU64,
    limiter: Mutex<Limiter>,
    pool: Arc<Pool>,
    per_pod: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = Args::parse();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("--kubeconfig {}: cannot read", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("--kubeconfig: not a usable kubeconfig")?;
    let client = kube::Client::try_from(config)?;
    let deployments: Api<Deployment> = Api::namespaced(client, &args.namespace);
    deployments.get(&args.deployment).await.with_context(|| {
        format!(
            "--deployment {}/{}: cannot read it from the API",
            args.namespace, args.deployment
        )
    })?;

    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(AppState {
        metrics: metrics.clone(),
        ready: AtomicU32::new(0),
        desired: AtomicU32::new(0),
        error_ratio: AtomicU64::new(0f64.to_bits()),
        limiter: Mutex::new(Limiter::default()),
        pool: Pool::new(args.database_url.clone()),
        per_pod: args.capacity_per_pod,
    });

    tokio::spawn(watch_deployment(
        deployments,
        args.deployment.clone(),
        state.clone(),
    ));
    let conns = args.conns_per_pod as usize;
    let st = state.clone();
    tokio::spawn(state.pool.clone().maintain(
        move || st.ready.load(Ordering::Relaxed) as usize * conns,
        metrics,
    ));

    let app = Router::new()
        .route("/checkout", get(checkout))
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/admin/error-rate", post(set_error_rate))
        .route("/admin/state", get(admin_state))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    if args.load_rps > 0 {
        tokio::spawn(load(
            format!("http://{}/checkout", args.listen),
            args.load_rps,
        ));
    }
    info!(listen = %args.listen, "checkout serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn watch_deployment(api: Api<Deployment>, name: String, state: Arc<AppState>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).applied_objects().boxed();
    loop {
        match stream.next().await {
            Some(Ok(d)) => {
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                let ready = u32::try_from(ready).unwrap_or(0);
                let desired = u32::try_from(desired).unwrap_or(0);
                state.ready.store(ready, Ordering::Relaxed);
                state.desired.store(desired, Ordering::Relaxed);
                state.metrics.pods(ready, desired);
            }
            Some(Err(e)) => warn!(error = %e, "watching the Deployment"),
            None => return,
        }
    }
}

async fn checkout(State(s): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    let started = Instant::now();
    let (code, body) = serve(&s).await;
    s.metrics
        .request(code.as_u16(), started.elapsed().as_secs_f64());
    (code, body)
}

async fn serve(s: &AppState) -> (StatusCode, &'static str) {
    let ready = s.ready.load(Ordering::Relaxed);
    let cap = capacity::capacity(ready, s.per_pod);
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if !s.limiter.lock().await.admit(second, cap) {
        return (StatusCode::SERVICE_UNAVAILABLE, "over capacity\n");
    }
    let injected = f64::from_bits(s.error_ratio.load(Ordering::Relaxed));
    if injected > 0.0 && rand::random::<f64>() < injected {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected error\n");
    }
    // A few milliseconds of work, as a real handler would spend.
    tokio::time::sleep(Duration::from_millis(3)).await;
    match s.pool.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable\n"),
    }
}

#[derive(Deserialize)]
struct Ratio {
    ratio: f64,
}

async fn set_error_rate(
    State(s): State<Arc<AppState>>,
    Query(q): Query<Ratio>,
) -> (StatusCode, String) {
    if !(0.0..=1.0).contains(&q.ratio) {
        return (
            StatusCode::BAD_REQUEST,
            format!("ratio must be within 0 and 1, got {}\n", q.ratio),
        );
    }
    s.error_ratio.store(q.ratio.to_bits(), Ordering::Relaxed);
    s.metrics.injected(q.ratio);
    info!(ratio = q.ratio, "injected error ratio set");
    (StatusCode::OK, format!("error ratio {}\n", q.ratio))
}

async fn admin_state(State(s): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "ready_pods": s.ready.load(Ordering::Relaxed),
        "desired_replicas": s.desired.load(Ordering::Relaxed),
        "error_ratio": f64::from_bits(s.error_ratio.load(Ordering::Relaxed)),
        "capacity_per_pod": s.per_pod,
    }))
}

/// Real HTTP traffic to our own endpoint at a steady rate.
async fn load(url: String, rps: u32) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let _ = client.get(&url).send().await;
        });
    }
}
