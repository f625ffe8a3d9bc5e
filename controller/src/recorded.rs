//! Reading every SLO at once from Headroom's recording rules.
//!
//! Once the rules are loaded, `headroom:slo_error_ratio:rate<w>` holds every
//! SLO's error ratio for window w, so one query per window serves all SLOs:
//! the number of queries per cycle does not grow with the number of SLOs.
//! Results are cached for a fraction of the evaluation interval; an SLO
//! whose series are missing (rules not loaded yet) falls back to direct
//! queries, and its status says which source was used.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::prometheus::{Prometheus, PrometheusError};
use crate::rules::{recorded_metric, recorded_traffic_metric};

/// (namespace, slo) → value, for one window.
pub type Snapshot = Arc<HashMap<(String, String), Option<f64>>>;

/// A per-window cache of the recorded series.
pub struct RecordedCache {
    max_age: Duration,
    entries: Mutex<HashMap<String, (Instant, Snapshot)>>,
}

impl RecordedCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The recorded error ratios over `window` for every SLO, refreshed with
    /// one query when older than `max_age`.
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
        // Held across the query: concurrent reconciles wait for one refresh
        // instead of each sending the same query.
        let mut entries = self.entries.lock().await;
        if let Some((at, snap)) = entries.get(metric)
            && at.elapsed() < self.max_age
        {
            return Ok(snap.clone());
        }
        let series = prom.instant(metric).await?;
        let snap: Snapshot = Arc::new(
            series
                .into_iter()
                .filter_map(|s| {
                    let ns = s.labels.get("namespace")?.clone();
                    let slo = s.labels.get("slo")?.clone();
                    Some(((ns, slo), s.value))
                })
                .collect(),
        );
        entries.insert(metric.to_owned(), (Instant::now(), snap.clone()));
        Ok(snap)
    }
}
