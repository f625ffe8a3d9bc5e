//! Small pieces every part of the engine uses: retries, clocks, keys.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

/// How long a restore step or a run's final record is retried while the API
/// server does not answer (a restart, an upgrade, a network cut). Past
/// injection, giving up early would leave a fault in place or a run that
/// looks unfinished.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(600);

/// Retry `op` with exponential backoff (0.5s to 10s) for up to `total`,
/// logging each failure with `what`. The last error is returned.
pub(crate) async fn retry<T, E, F, Fut>(what: &str, total: Duration, op: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    use backon::{ExponentialBuilder, Retryable};
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_total_delay(Some(total))
        .without_max_times();
    op.retry(policy)
        .sleep(tokio::time::sleep)
        .notify(|e: &E, after: Duration| {
            tracing::warn!(error = %e, retry_in = ?after, "{what} failed; retrying");
        })
        .await
}

/// The seed of a run's random choices, saved in its status so the choice
/// can be replayed: 53 bits, exact in JSON and an int64 in the CRD schema.
pub fn new_seed() -> u64 {
    rand::random::<u64>() >> 11
}

/// `namespace/name` of an object.
pub fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}
