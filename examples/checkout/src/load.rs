//! The built-in load generator: real HTTP requests to our own `/checkout`
//! at a steady rate, so the server's metrics describe real traffic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

/// Bounds requests in flight, so a stalled server cannot make the
/// generator pile up tasks; ticks without a free slot are skipped.
const MAX_IN_FLIGHT: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Load {
    rps: AtomicU32,
    sent: AtomicU64,
    skipped: AtomicU64,
    transport_errors: AtomicU64,
    by_code: Mutex<BTreeMap<u16, u64>>,
}

impl Load {
    pub fn new(rps: u32) -> Arc<Self> {
        let load = Self::default();
        load.rps.store(rps, Ordering::Relaxed);
        Arc::new(load)
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

    /// Send requests to `url` from a task, until it is aborted.
    pub fn start(self: Arc<Self>, url: String) -> anyhow::Result<JoinHandle<()>> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(64)
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
                match client.get(&url).send().await {
                    Ok(response) => {
                        let code = response.status().as_u16();
                        // Read the body so the connection is reused.
                        let _ = response.bytes().await;
                        *load
                            .by_code
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(code)
                            .or_default() += 1;
                    }
                    Err(e) => {
                        load.transport_errors.fetch_add(1, Ordering::Relaxed);
                        debug!(error = %e, "load request failed");
                    }
                }
            });
        }
    }
}
