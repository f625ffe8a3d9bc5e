//! `checkout-load`: the load generator as a client of its own, for the real
//! pods. It sends its requests through the Service (a ClusterIP that
//! kube-proxy balances over the Ready endpoints) and serves what it got back
//! on `/metrics`: a killed pod's requests in flight, and connections to an
//! endpoint that is gone, show up here as `code="none"`, where no server's
//! metrics can count them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use prometheus_client::registry::Registry;
use tracing::info;
use tracing_subscriber::EnvFilter;

use checkout::load::{Connections, Load};
use checkout::metrics::CONTENT_TYPE;

#[derive(Debug, Parser)]
#[command(about = "Sends steady HTTP load to a URL and serves the client's view as metrics")]
struct Args {
    /// Where to send the requests, e.g. a Service's ClusterIP.
    #[arg(long, value_name = "URL")]
    url: reqwest::Url,
    /// Requests per second (0 = none until POST /admin/load-rps).
    #[arg(long, value_name = "RPS", default_value_t = 20)]
    rps: u32,
    /// Address of /metrics, /stats and POST /admin/load-rps.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:28081")]
    listen: SocketAddr,
}

struct AppState {
    load: Arc<Load>,
    registry: Registry,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    let load = Load::new(args.rps);
    let mut registry = Registry::default();
    load.register(&mut registry);
    let task = load
        .clone()
        .start(args.url.to_string(), Connections::PerRequest)
        .context("starting the load generator")?;
    let state = Arc::new(AppState { load, registry });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/admin/load-rps", post(set_rps))
        .with_state(state);
    info!(url = %args.url, rps = args.rps, listen = %listener.local_addr()?, "sending load");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    task.abort();
    Ok(())
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &s.registry);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out)
}

async fn stats(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(s.load.stats())
}

async fn set_rps(State(s): State<Arc<AppState>>, body: String) -> (StatusCode, String) {
    match body.trim().parse::<u32>() {
        Ok(rps) => {
            s.load.set_rps(rps);
            (StatusCode::OK, format!("load {rps} requests per second\n"))
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "body: requests per second, a whole number\n".into(),
        ),
    }
}
