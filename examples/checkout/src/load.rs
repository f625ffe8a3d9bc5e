//! The load generator: real HTTP requests at a steady rate, to the
//! service's own `/checkout` (built into `checkout`) or through a Service
//! (`checkout-load`), so that the server's metrics describe real traffic and
//! the client's say what callers got, including the requests that never got
//! an answer: those a killed pod dropped in flight or a gone endpoint
//! refused, which no server-side metric counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

/// Bounds requests in flight, so a stalled server cannot make the
/// generator pile up tasks; ticks without a free slot are skipped.
const MAX_IN_FLIGHT: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a request got back: a status code, or no answer and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// The HTTP status, or `none` when no response came back.
    code: String,
    /// Why no response came back (`connect`, `timeout`, `dropped`); empty,
    /// which Prometheus reads as absent, for a response.
    error: String,
}

/// Why a request got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing accepted the connection (no endpoint, a refused port).
    Connect,
    /// No answer within the client's timeout.
    Timeout,
    /// The connection broke while the request was in flight, as when the
    /// process serving it is killed.
    Dropped,
}

impl Failure {
    pub fn of(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Connect
        } else {
            Self::Dropped
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Dropped => "dropped",
        }
    }
}

/// Whether the generator's requests share kept-alive connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    KeepAlive,
    PerRequest,
}

pub struct Load {
    rps: AtomicU32,
    sent: AtomicU64,
    skipped: AtomicU64,
    transport_errors: AtomicU64,
    by_code: Mutex<BTreeMap<u16, u64>>,
    outcomes: Family<OutcomeLabels, Counter>,
    durations: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
}

impl Load {
    pub fn new(rps: u32) -> Arc<Self> {
        let load = Self {
            rps: AtomicU32::default(),
            sent: AtomicU64::default(),
            skipped: AtomicU64::default(),
            transport_errors: AtomicU64::default(),
            by_code: Mutex::default(),
            outcomes: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(crate::metrics::BUCKETS)),
        };
        load.rps.store(rps, Ordering::Relaxed);
        Arc::new(load)
    }

    /// The client's view as metrics: `checkout_client_requests_total` and
    /// `checkout_client_request_duration_seconds` by `code` and `error`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "checkout_client_requests",
            "Requests the load generator sent, by status code (none: no response) and error",
            self.outcomes.clone(),
        );
        registry.register(
            "checkout_client_request_duration_seconds",
            "Time until the response or the failure, by status code and error",
            self.durations.clone(),
        );
        // Present from the first scrape, so rate() has a zero to start from.
        for code in ["200", "500", "503"] {
            let _ = self.outcomes.get_or_create(&OutcomeLabels {
                code: code.into(),
                error: String::new(),
            });
        }
        for failure in [Failure::Connect, Failure::Timeout, Failure::Dropped] {
            let _ = self.outcomes.get_or_create(&OutcomeLabels {
                code: "none".into(),
                error: failure.as_str().into(),
            });
        }
    }

    fn record(&self, outcome: Result<u16, Failure>, seconds: f64) {
        let labels = match outcome {
            Ok(code) => {
                *self
                    .by_code
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(code)
                    .or_default() += 1;
                OutcomeLabels {
                    code: code.to_string(),
                    error: String::new(),
                }
            }
            Err(failure) => {
                self.transport_errors.fetch_add(1, Ordering::Relaxed);
                OutcomeLabels {
                    code: "none".into(),
                    error: failure.as_str().into(),
                }
            }
        };
        self.outcomes.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(seconds);
    }

    pub fn rps(&self) -> u32 {
        self.rps.load(Ordering::Relaxed)
    }

    /// Takes effect from the next request on.
    pub fn set_rps(&self, rps: u32) {
        self.rps.store(rps, Ordering::Relaxed);
    }

    pub fn stats(&self) -> serde_json::Value {
        let by_code = self
            .by_code
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(code, n)| (code.to_string(), serde_json::Value::from(*n)))
            .collect::<serde_json::Map<_, _>>();
        serde_json::json!({
            "rps": self.rps(),
            "sent": self.sent.load(Ordering::Relaxed),
            "skipped": self.skipped.load(Ordering::Relaxed),
            "transport_errors": self.transport_errors.load(Ordering::Relaxed),
            "responses": by_code,
        })
    }

    /// Send requests to `url` from a task, until it is aborted. With
    /// `Connections::PerRequest` each request opens its own connection:
    /// kube-proxy balances connections, not requests, so kept-alive ones
    /// would stay on the pods they first reached (all on one survivor after
    /// a pod is killed) while many callers in aggregate spread evenly.
    pub fn start(
        self: Arc<Self>,
        url: String,
        connections: Connections,
    ) -> anyhow::Result<JoinHandle<()>> {
        let idle = match connections {
            Connections::KeepAlive => 64,
            Connections::PerRequest => 0,
        };
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(idle)
            .build()?;
        Ok(tokio::spawn(self.run(client, url)))
    }

    async fn run(self: Arc<Self>, client: reqwest::Client, url: String) {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut next = Instant::now();
        loop {
            let rps = self.rps();
            if rps == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                next = Instant::now();
                continue;
            }
            next += Duration::from_secs_f64(1.0 / f64::from(rps));
            let now = Instant::now();
            // After a stall, carry on at the rate instead of bursting to
            // catch up: a burst would be refused as over capacity.
            if next + Duration::from_secs(1) < now {
                next = now;
            }
            tokio::time::sleep_until(next).await;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.sent.fetch_add(1, Ordering::Relaxed);
            let (client, url, load) = (client.clone(), url.clone(), self.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let started = Instant::now();
                let outcome = match client.get(&url).send().await {
                    Ok(response) => {
                        let code = response.status().as_u16();
                        // Read the body so the connection is reused; a body
                        // cut short is a dropped request.
                        match response.bytes().await {
                            Ok(_) => Ok(code),
                            Err(e) => Err(Failure::of(&e)),
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "load request failed");
                        Err(Failure::of(&e))
                    }
                };
                load.record(outcome, started.elapsed().as_secs_f64());
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_view_counts_answers_and_requests_that_got_none() {
        let load = Load::new(0);
        let mut registry = Registry::default();
        load.register(&mut registry);
        load.record(Ok(200), 0.2);
        load.record(Ok(503), 0.001);
        load.record(Err(Failure::Dropped), 0.1);
        load.record(Err(Failure::Dropped), 0.1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("to a String");
        for line in [
            r#"checkout_client_requests_total{code="200",error=""} 1"#,
            r#"checkout_client_requests_total{code="503",error=""} 1"#,
            r#"checkout_client_requests_total{code="500",error=""} 0"#,
            r#"checkout_client_requests_total{code="none",error="dropped"} 2"#,
            r#"checkout_client_requests_total{code="none",error="connect"} 0"#,
            r#"checkout_client_request_duration_seconds_count{code="none",error="dropped"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        let stats = load.stats();
        assert_eq!(stats["transport_errors"], 2);
        assert_eq!(stats["responses"]["200"], 1);
    }
}
