//! Reading every SLO at once from Headroom's recording rules.
//!
//! Once the rules are loaded, `headroom:slo_error_ratio:rate<w>` holds every
//! SLO's error ratio for window w, so one query per window serves all SLOs:
//! the number of queries per cycle does not grow with the number of SLOs.
//! The SLOs are evaluated together on each tick of the evaluation interval
//! (a round; see `cycles`). Each window's answer serves every SLO for half a
//! round: the first SLO that needs it after that reads it again, the rest
//! share the answer. So each window costs one query per tick however many
//! SLOs there are (at most two per round when an SLO created between ticks
//! is evaluated at once). An SLO whose series are missing (rules not loaded yet) falls
//! back to direct queries, and its status says which source was used.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Mutex;

use crate::prometheus::{Prometheus, PrometheusError};
use crate::rules::{recorded_metric, recorded_traffic_metric};

/// Every SLO's value of one recorded metric, read in one query.
///
/// Keyed by a hash of (namespace, name) rather than the names: at ten
/// thousand SLOs and nine windows, two owned strings per entry were the
/// largest thing the operator held between reads. Held as a sorted vector
/// of (key, value), 16 bytes per SLO, rather than a hash map (41 bytes per
/// SLO at its load factor, with `Option<f64>` values): nine of them are
/// alive at once, and looking one up among ten thousand is a binary search
/// of 14 steps. Two SLOs whose keys collide are both left out, so they read
/// nothing from the snapshot and fall back to direct queries: never the
/// other's figure.
#[derive(Debug)]
pub struct Values {
    hasher: RandomState,
    /// Sorted by key once the read is complete ([`Values::seal`]). NaN
    /// stands for a series without a finite value.
    values: Vec<(u64, f64)>,
    ambiguous: HashSet<u64>,
}

impl Values {
    fn with_capacity(hasher: RandomState, capacity: usize) -> Self {
        Self {
            hasher,
            values: Vec::with_capacity(capacity),
            ambiguous: HashSet::new(),
        }
    }

    fn key(&self, namespace: &str, slo: &str) -> u64 {
        self.hasher.hash_one((namespace, slo))
    }

    /// One series of the answer; [`Values::seal`] once all are in.
    fn insert(&mut self, namespace: &str, slo: &str, value: Option<f64>) {
        let key = self.key(namespace, slo);
        self.values.push((key, value.unwrap_or(f64::NAN)));
    }

    /// Sort for lookups, and set aside the keys that came more than once.
    fn seal(mut self) -> Self {
        self.values.sort_unstable_by_key(|(key, _)| *key);
        for pair in self.values.windows(2) {
            if pair[0].0 == pair[1].0 {
                self.ambiguous.insert(pair[0].0);
            }
        }
        if !self.ambiguous.is_empty() {
            let ambiguous = &self.ambiguous;
            self.values.retain(|(key, _)| !ambiguous.contains(key));
        }
        // The capacity came from the last read's count: exact unless SLOs
        // came or went.
        self.values.shrink_to_fit();
        self
    }

    /// The SLO's value: `None` when the metric has no series for it,
    /// `Some(None)` when its series has no finite value (NaN is no figure,
    /// not zero).
    pub fn get(&self, namespace: &str, slo: &str) -> Option<Option<f64>> {
        let key = self.key(namespace, slo);
        if self.ambiguous.contains(&key) {
            return None;
        }
        let i = self
            .values
            .binary_search_by_key(&key, |(key, _)| *key)
            .ok()?;
        let value = self.values[i].1;
        Some((!value.is_nan()).then_some(value))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// One recorded metric's values, shared by every SLO of a round.
pub type Snapshot = Arc<Values>;

/// The recorded series, each read at most once per round.
pub struct RecordedCache {
    round: Duration,
    hasher: RandomState,
    /// metric name → its last read. One lock per metric: the readers of
    /// one window wait for one query while those of another go on.
    reads: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<Read>>>>>,
    /// When the current round of reads began (for the `rounds` counter).
    round_started: std::sync::Mutex<Option<Instant>>,
    /// Rounds started: with the query counter, gives queries per cycle.
    rounds: Counter,
    /// Time spent in reads: the part of a cycle that waits on Prometheus.
    read_seconds: Counter<f64, AtomicU64>,
    /// Reads in flight at once. Each holds a whole answer (its body, the
    /// connection's read buffer and the parsed series: 3 to 4 MB at ten
    /// thousand SLOs); ten windows read at once made a cycle's peak 15 MB
    /// higher (examples/memory.rs). Each read is one cheap instant query of
    /// a recorded series, so they queue for little.
    in_flight: tokio::sync::Semaphore,
}

/// See [`RecordedCache::in_flight`].
const READS_IN_FLIGHT: usize = 2;

/// Every SLO's value of one metric, or why Prometheus gave none.
struct Read {
    done: Instant,
    answer: Result<Snapshot, PrometheusError>,
}

impl RecordedCache {
    /// `round`: the evaluation interval, whose ticks the SLOs are evaluated
    /// on; an answer serves the tick it was read in (half a round), so that
    /// a cycle costs one query per window.
    /// `rounds` counts the rounds started (the operator's exported metric).
    pub fn new(round: Duration, rounds: Counter) -> Self {
        Self {
            round,
            hasher: RandomState::new(),
            reads: std::sync::Mutex::new(HashMap::new()),
            round_started: std::sync::Mutex::new(None),
            rounds,
            read_seconds: Counter::default(),
            in_flight: tokio::sync::Semaphore::new(READS_IN_FLIGHT),
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
        let slot = {
            let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            // Looked up before inserting: every SLO asks for every window
            // each cycle, and the key is allocated only the first time.
            match reads.get(metric) {
                Some(slot) => slot.clone(),
                None => reads.entry(metric.to_owned()).or_default().clone(),
            }
        };
        // Held across the query: the SLOs waiting for this window wait for
        // one read instead of each sending the same query.
        let mut read = slot.lock().await;
        // Aged from when the answer arrived, so a slow Prometheus gets
        // fewer queries, not back-to-back ones. Nothing clears an answer
        // before its replacement is in: with thousands of SLOs, a reset in
        // the middle of their reads would have each window read again and
        // again while they queue.
        if let Some(r) = read.as_ref()
            && r.done.elapsed() < self.fresh_for()
        {
            return r.answer.clone();
        }
        self.count_round();
        // Never closed, so the error arm is unreachable; reading without a
        // permit would only cost memory.
        let _permit = self.in_flight.acquire().await.ok();
        // A failure is kept for the round too: every SLO fails closed with
        // it, and a struggling Prometheus gets one query per window, not one
        // per SLO.
        let reading = Instant::now();
        // Boxed: every SLO's evaluation waits in this function, and the
        // HTTP request's state inline would make each waiting future
        // kilobytes larger (tens of MB at ten thousand SLOs).
        let mut values = Values::with_capacity(self.hasher.clone(), self.expected(&read));
        let answer =
            Box::pin(prom.instant_per_slo(metric, |ns, slo, value| values.insert(ns, slo, value)))
                .await
                .map(|()| Arc::new(values.seal()));
        self.read_seconds.inc_by(reading.elapsed().as_secs_f64());
        *read = Some(Read {
            done: Instant::now(),
            answer: answer.clone(),
        });
        answer
    }

    /// How long an answer serves: half a round. The SLOs are evaluated
    /// together on each tick of the round (`cycles::until_next_tick`), and
    /// an answer that arrived during one tick's burst must not serve the
    /// next tick's, which comes a little less than a round after it.
    fn fresh_for(&self) -> Duration {
        self.round / 2
    }

    /// Room for as many SLOs as the last read had.
    fn expected(&self, read: &Option<Read>) -> usize {
        read.as_ref()
            .and_then(|r| r.answer.as_ref().ok())
            .map_or(0, |values| values.len())
    }

    /// A read after a round's time has passed starts the next round.
    fn count_round(&self) {
        let mut started = self.round_started.lock().unwrap_or_else(|e| e.into_inner());
        if started.is_none_or(|at| at.elapsed() >= self.fresh_for()) {
            *started = Some(Instant::now());
            self.rounds.inc();
        }
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
                assert_eq!(snap.get("shop", "a"), Some(Some(0.01)));
                // NaN is no figure, not zero.
                assert_eq!(snap.get("shop", "b"), Some(None));
                assert_eq!(snap.get("shop", "c"), None);
            }
            cache.traffic(&prom, "30s").await.expect("answer");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 4);
        assert_eq!(rounds.get(), 1);
        // The next tick's burst comes a little less than a round after this
        // one's answers: it reads again.
        tokio::time::sleep(Duration::from_millis(250)).await;
        for _slo in 0..50 {
            cache.error_ratios(&prom, "30s").await.expect("answer");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        assert_eq!(rounds.get(), 2);
    }

    #[test]
    fn two_series_for_one_key_give_neither_figure() {
        let mut values = Values::with_capacity(RandomState::new(), 2);
        values.insert("shop", "a", Some(0.1));
        values.insert("shop", "b", Some(0.2));
        // Two rule files recording the same SLO (or a hash collision):
        // which is right is unknown, so the SLO reads nothing here.
        values.insert("shop", "a", Some(0.3));
        values.insert("shop", "c", None);
        let values = values.seal();
        assert_eq!(values.get("shop", "a"), None);
        assert_eq!(
            values.get("shop", "c"),
            Some(None),
            "a series without a finite value"
        );
        assert_eq!(values.get("shop", "d"), None, "no series");
        assert_eq!(values.len(), 2);
        assert_eq!(values.get("shop", "b"), Some(Some(0.2)));
        // The pair is hashed as a pair: no "sh"+"opa" against "shop"+"a".
        assert_eq!(values.get("sh", "opa"), None);
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
