//! Reading every SLO at once from Headroom's recording rules.
//!
//! Once the rules are loaded, `headroom:slo_error_ratio:rate<w>` holds every
//! SLO's error ratio for window w, so one query per window serves all SLOs:
//! the number of queries per cycle does not grow with the number of SLOs.
//! Reads are grouped in rounds of one evaluation interval: the first SLO
//! evaluated in a round reads each window once, the rest of that round's SLOs
//! share the answer. A round starts only when the previous one is at least
//! an interval old, so each window costs at most one query per interval
//! however many SLOs there are and however their evaluations spread over the
//! interval. An SLO whose series are missing (rules not loaded yet) falls
//! back to direct queries, and its status says which source was used.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Mutex;

use crate::prometheus::{Prometheus, PrometheusError};
use crate::rules::{recorded_metric, recorded_traffic_metric};

/// (namespace, slo) → value, for one window.
pub type Snapshot = Arc<HashMap<(String, String), Option<f64>>>;

/// The recorded series read in the current round.
pub struct RecordedCache {
    round: Duration,
    state: Mutex<Round>,
    /// Rounds started: with the query counter, gives queries per cycle.
    rounds: Counter,
    /// Time spent in reads: the part of a cycle that waits on Prometheus.
    read_seconds: Counter<f64, AtomicU64>,
}

#[derive(Default)]
struct Round {
    started: Option<Instant>,
    /// metric name → every SLO's value, or why Prometheus gave none; read
    /// at most once per round.
    snapshots: HashMap<String, Result<Snapshot, PrometheusError>>,
}

impl RecordedCache {
    /// `round`: how long one read of a window serves every SLO; the
    /// evaluation interval, so that a cycle costs one query per window.
    /// `rounds` counts the rounds started (the operator's exported metric).
    pub fn new(round: Duration, rounds: Counter) -> Self {
        Self {
            round,
            state: Mutex::new(Round::default()),
            rounds,
            read_seconds: Counter::default(),
        }
    }

    /// Count the time spent reading in `read_seconds`.
    pub fn with_read_seconds(mut self, read_seconds: Counter<f64, AtomicU64>) -> Self {
        self.read_seconds = read_seconds;
        self
    }

    /// The recorded error ratios over `window` for every SLO, refreshed with
    /// at most one query per round.
    pub async fn error_ratios(
        &self,
        prom: &Prometheus,
        window: &str,
    ) -> Result<Snapshot, PrometheusError> {
        self.get(prom, &recorded_metric(window)).await
    }

    /// The recorded event rates over `window` for every SLO.
    pub async fn traffic(
        &self,
        prom: &Prometheus,
        window: &str,
    ) -> Result<Snapshot, PrometheusError> {
        self.get(prom, &recorded_traffic_metric(window)).await
    }

    async fn get(&self, prom: &Prometheus, metric: &str) -> Result<Snapshot, PrometheusError> {
        // Held across the query: concurrent reconciles wait for one read
        // instead of each sending the same query.
        let mut state = self.state.lock().await;
        // One clock for all windows: a round's reads are not split between
        // two rounds by a few milliseconds, as per-window ages would.
        if state.started.is_none_or(|at| at.elapsed() >= self.round) {
            state.started = Some(Instant::now());
            state.snapshots.clear();
            self.rounds.inc();
        }
        if let Some(answer) = state.snapshots.get(metric) {
            return answer.clone();
        }
        // A failure is kept for the round too: every SLO fails closed with
        // it, and a struggling Prometheus gets one query per window, not one
        // per SLO.
        let reading = Instant::now();
        let answer = prom.instant(metric).await.map(|series| {
            Arc::new(
                series
                    .into_iter()
                    .filter_map(|s| {
                        let ns = s.labels.get("namespace")?.clone();
                        let slo = s.labels.get("slo")?.clone();
                        Some(((ns, slo), s.value))
                    })
                    .collect(),
            )
        });
        self.read_seconds.inc_by(reading.elapsed().as_secs_f64());
        state.snapshots.insert(metric.to_owned(), answer.clone());
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in for Prometheus's query API that counts requests.
    async fn counting_prometheus() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    axum::Json(serde_json::json!({
                        "status": "success",
                        "data": { "resultType": "vector", "result": [
                            { "metric": { "namespace": "shop", "slo": "a" }, "value": [1.0, "0.01"] },
                            { "metric": { "namespace": "shop", "slo": "b" }, "value": [1.0, "NaN"] }
                        ]}
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits)
    }

    #[tokio::test]
    async fn one_query_per_window_per_round_for_any_number_of_slos() {
        let (url, hits) = counting_prometheus().await;
        let prom = Prometheus::new(&url, Duration::from_secs(2)).expect("client");
        let rounds = Counter::default();
        let cache = RecordedCache::new(Duration::from_millis(300), rounds.clone());
        for _slo in 0..50 {
            for w in ["30s", "2m", "1h"] {
                let snap = cache.error_ratios(&prom, w).await.expect("answer");
                assert_eq!(snap.get(&("shop".into(), "a".into())), Some(&Some(0.01)));
                // NaN is no figure, not zero.
                assert_eq!(snap.get(&("shop".into(), "b".into())), Some(&None));
            }
            cache.traffic(&prom, "30s").await.expect("answer");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 4);
        assert_eq!(rounds.get(), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        for _slo in 0..50 {
            cache.error_ratios(&prom, "30s").await.expect("answer");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        assert_eq!(rounds.get(), 2);
    }

    #[tokio::test]
    async fn an_unavailable_prometheus_costs_one_query_per_round_and_fails_every_slo() {
        // Port 9 (discard) on loopback is closed here: connection refused.
        let prom =
            Prometheus::new("http://127.0.0.1:9", Duration::from_millis(500)).expect("client");
        let cache = RecordedCache::new(Duration::from_secs(60), Counter::default());
        for _slo in 0..20 {
            let err = cache
                .error_ratios(&prom, "5m")
                .await
                .expect_err("no answer is no figure");
            assert!(
                matches!(err, PrometheusError::Unavailable { .. }),
                "{err:?}"
            );
        }
        assert_eq!(prom.queries_sent(), 1);
    }
}
