//! The HTTP side: `/checkout`, `/metrics`, `/healthz` and the admin
//! endpoints tests use to steer the service.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tracing::info;

use crate::capacity::{self, Limiter};
use crate::db_pool::DbPool;
use crate::injection::{self, ErrorRatio};
use crate::load::Load;
use crate::metrics::{self, Metrics};
use crate::pods::PodCounts;

pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub pods: Arc<PodCounts>,
    pub pool: Arc<DbPool>,
    pub load: Arc<Load>,
    pub capacity_per_pod: u32,
    pub errors: ErrorRatio,
    /// Fixed handler time added to the modelled latency (`--work-ms`).
    pub work: Duration,
    limiter: Mutex<Limiter>,
    /// Seconds for the limiter count from here: monotonic, unlike wall time.
    epoch: Instant,
}

impl AppState {
    pub fn new(
        metrics: Arc<Metrics>,
        pods: Arc<PodCounts>,
        pool: Arc<DbPool>,
        load: Arc<Load>,
        capacity_per_pod: u32,
        work: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            pods,
            pool,
            load,
            capacity_per_pod,
            errors: ErrorRatio::default(),
            work,
            limiter: Mutex::new(Limiter::default()),
            epoch: Instant::now(),
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/checkout", get(checkout))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/admin/error-rate", post(set_error_rate))
        .route("/admin/load-rps", post(set_load_rps))
        .route("/admin/state", get(admin_state))
        .with_state(state)
}

async fn checkout(State(s): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    let started = Instant::now();
    let (code, body) = handle(&s).await;
    s.metrics
        .request(code.as_u16(), started.elapsed().as_secs_f64());
    (code, body)
}

async fn handle(s: &AppState) -> (StatusCode, &'static str) {
    let ready = s.pods.ready();
    let capacity = capacity::capacity(ready, s.capacity_per_pod);
    let second = s.epoch.elapsed().as_secs();
    let decision = s
        .limiter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(second, capacity);
    if !decision.admitted {
        let body = if ready == 0 {
            "no Ready pods\n"
        } else {
            "over capacity\n"
        };
        return (StatusCode::SERVICE_UNAVAILABLE, body);
    }
    tokio::time::sleep(s.work + capacity::latency(decision.utilisation, rand::random::<f64>()))
        .await;
    if injection::inject(s.errors.get(), rand::random::<f64>()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected error\n");
    }
    if s.pool.enabled() && s.pool.ping().await.is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable\n");
    }
    (StatusCode::OK, "ok\n")
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
}

async fn set_error_rate(
    State(s): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    body: String,
) -> (StatusCode, String) {
    match injection::parse_ratio(query.as_deref(), &body).and_then(|r| s.errors.set(r).map(|()| r))
    {
        Ok(ratio) => {
            s.metrics.injected(ratio);
            info!(ratio, "injected error ratio set");
            (StatusCode::OK, format!("error ratio {ratio}\n"))
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn set_load_rps(
    State(s): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    body: String,
) -> (StatusCode, String) {
    let raw = query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("rps=")))
        .unwrap_or_else(|| body.trim().trim_start_matches("rps="));
    match raw.trim().parse::<u32>() {
        Ok(rps) => {
            s.load.set_rps(rps);
            info!(rps, "load generator rate set");
            (StatusCode::OK, format!("load {rps} requests per second\n"))
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            format!("rps must be a whole number of requests per second, got {raw:?}\n"),
        ),
    }
}

async fn admin_state(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let ready = s.pods.ready();
    Json(serde_json::json!({
        "ready_pods": ready,
        "desired_replicas": s.pods.desired(),
        "capacity_per_pod": s.capacity_per_pod,
        "capacity_rps": capacity::capacity(ready, s.capacity_per_pod),
        "error_ratio": s.errors.get(),
        "db_connections_open": s.pool.open(),
        "db_connections_target": s.pool.target(ready),
        "load": s.load.stats(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    fn state(ready: u32, per_pod: u32) -> Arc<AppState> {
        let metrics = Arc::new(Metrics::default());
        let pods = Arc::new(PodCounts::default());
        pods.set_ready(ready);
        let config = "postgres://u@127.0.0.1:1/db".parse().expect("static URL");
        // No connections per pod: requests do not touch the database.
        let pool = DbPool::new(config, 0, metrics.clone());
        AppState::new(metrics, pods, pool, Load::new(0), per_pod, Duration::ZERO)
    }

    async fn call(state: &Arc<AppState>, method: &str, uri: &str, body: &str) -> (u16, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_owned()))
            .expect("valid request");
        let response = router(state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let code = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn codes(state: &Arc<AppState>, n: usize) -> Vec<u16> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(call(state, "GET", "/checkout", "").await.0);
        }
        out
    }

    #[tokio::test]
    async fn no_ready_pods_means_every_request_is_503() {
        let s = state(0, 20);
        assert!(codes(&s, 5).await.iter().all(|c| *c == 503));
        let (_, text) = call(&s, "GET", "/metrics", "").await;
        assert!(text.contains(r#"http_requests_total{handler="checkout",code="503"} 5"#));
    }

    #[tokio::test]
    async fn requests_beyond_capacity_get_503() {
        let s = state(1, 3);
        let got = codes(&s, 5).await;
        // All five fall in one second unless the test straddles a boundary.
        let ok = got.iter().filter(|c| **c == 200).count();
        assert!((3..=5).contains(&ok), "{got:?}");
        assert!(got.iter().all(|c| *c == 200 || *c == 503), "{got:?}");
    }

    #[tokio::test]
    async fn injected_ratio_turns_admitted_requests_into_500() {
        let s = state(1, 1000);
        let (code, _) = call(&s, "POST", "/admin/error-rate?ratio=1", "").await;
        assert_eq!(code, 200);
        assert!(codes(&s, 5).await.iter().all(|c| *c == 500));
        assert_eq!(
            call(&s, "POST", "/admin/error-rate", "ratio=0").await.0,
            200
        );
        assert!(codes(&s, 5).await.iter().all(|c| *c == 200));
        assert_eq!(
            call(&s, "POST", "/admin/error-rate", "ratio=2").await.0,
            400
        );
        let (_, state_json) = call(&s, "GET", "/admin/state", "").await;
        let v: serde_json::Value = serde_json::from_str(&state_json).expect("JSON state");
        assert_eq!(v["error_ratio"], 0.0);
        assert_eq!(v["ready_pods"], 1);
        assert_eq!(v["capacity_rps"], 1000);
        assert_eq!(v["db_connections_open"], 0);
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics() {
        let s = state(1, 1);
        let response = router(s)
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("valid request"),
            )
            .await
            .expect("infallible");
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(metrics::CONTENT_TYPE.as_bytes())
        );
    }
}
