//! The service's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub handler: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

pub struct Metrics {
    pub registry: Registry,
    requests: Family<CodeLabels, Counter>,
    duration: Family<CodeLabels, Histogram>,
    ready: Gauge,
    desired: Gauge,
    db_open: Gauge,
    db_errors: Family<KindLabels, Counter>,
    injected: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by status code",
            requests.clone(),
        );
        let duration = Family::<CodeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            duration.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "checkout_ready_pods",
            "Ready pods of the Deployment",
            ready.clone(),
        );
        let desired = Gauge::default();
        registry.register(
            "checkout_desired_replicas",
            "Desired replicas of the Deployment",
            desired.clone(),
        );
        let db_open = Gauge::default();
        registry.register(
            "checkout_db_connections_open",
            "Open PostgreSQL sessions",
            db_open.clone(),
        );
        let db_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "checkout_db_connection_errors",
            "Refused PostgreSQL connections by SQLSTATE",
            db_errors.clone(),
        );
        let injected = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "checkout_injected_error_ratio",
            "Error ratio injected through /admin/error-rate",
            injected.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            ready,
            desired,
            db_open,
            db_errors,
            injected,
        }
    }
}

impl Metrics {
    pub fn request(&self, code: u16, seconds: f64) {
        let labels = CodeLabels {
            handler: "checkout".into(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }
    pub fn pods(&self, ready: u32, desired: u32) {
        self.ready.set(i64::from(ready));
        self.desired.set(i64::from(desired));
    }
    pub fn db_open(&self, n: usize) {
        self.db_open.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub fn db_errors(&self, kind: &str) {
        self.db_errors
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }
    pub fn injected(&self, ratio: f64) {
        self.injected.set(ratio);
    }
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
