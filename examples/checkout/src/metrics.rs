//! The service's Prometheus metrics, in the OpenMetrics text format.
//!
//! prometheus-client appends `_total` to counters, so `http_requests` is
//! exposed as `http_requests_total`, the name SLO queries use.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Prometheus 3 refuses a scrape without a content type it knows; this is
/// the format prometheus-client writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets; 0.1 and 0.25 are the usual latency-SLO thresholds.
pub const BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    handler: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

pub struct Metrics {
    registry: Registry,
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
            "HTTP requests by handler and status code",
            requests.clone(),
        );
        let duration =
            Family::<CodeLabels, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by handler and status code",
            duration.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "checkout_ready_pods",
            "Ready, non-terminating pods of the Deployment",
            ready.clone(),
        );
        let desired = Gauge::default();
        registry.register(
            "checkout_desired_replicas",
            "Replicas the Deployment asks for",
            desired.clone(),
        );
        let db_open = Gauge::default();
        registry.register(
            "checkout_db_connections_open",
            "Open PostgreSQL connections held by the pool",
            db_open.clone(),
        );
        let db_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "checkout_db_connection_errors",
            "PostgreSQL connections refused or lost, by SQLSTATE (e.g. 53300 too many clients) or kind",
            db_errors.clone(),
        );
        let injected = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "checkout_injected_error_ratio",
            "Fraction of admitted requests failed on purpose (POST /admin/error-rate)",
            injected.clone(),
        );
        // Present from the first scrape, so rate() has a zero to start from.
        for code in ["200", "500", "503"] {
            let _ = requests.get_or_create(&CodeLabels {
                handler: "checkout",
                code: code.to_owned(),
            });
        }
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
            handler: "checkout",
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }

    pub fn ready_pods(&self, ready: u32) {
        self.ready.set(i64::from(ready));
    }

    pub fn desired_replicas(&self, desired: u32) {
        self.desired.set(i64::from(desired));
    }

    pub fn db_open(&self, n: usize) {
        self.db_open.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn db_error(&self, kind: &str) {
        self.db_errors
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn injected(&self, ratio: f64) {
        self.injected.set(ratio);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_names_slo_queries_use() {
        let m = Metrics::default();
        m.request(200, 0.003);
        m.request(503, 0.0001);
        m.ready_pods(3);
        m.desired_replicas(4);
        m.db_open(6);
        m.db_error("53300");
        m.injected(0.25);
        let text = m.render();
        for line in [
            r#"http_requests_total{handler="checkout",code="200"} 1"#,
            r#"http_requests_total{handler="checkout",code="503"} 1"#,
            r#"http_requests_total{handler="checkout",code="500"} 0"#,
            r#"http_request_duration_seconds_bucket{le="0.005",handler="checkout",code="200"} 1"#,
            r#"http_request_duration_seconds_count{handler="checkout",code="503"} 1"#,
            "checkout_ready_pods 3",
            "checkout_desired_replicas 4",
            "checkout_db_connections_open 6",
            r#"checkout_db_connection_errors_total{kind="53300"} 1"#,
            "checkout_injected_error_ratio 0.25",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        for le in ["0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0"] {
            assert!(text.contains(&format!("le=\"{le}\"")), "bucket {le}");
        }
    }
}
