//! A PostgreSQL pool sized by Ready pods: `per_pod` sessions for each Ready
//! pod, as if every replica held its own pool. Scaling the Deployment up
//! opens sessions; the server's `max_connections` may refuse them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::RwLock;
use tokio_postgres::{Client, NoTls};

use crate::metrics::Metrics;

pub struct Pool {
    url: String,
    clients: RwLock<Vec<Client>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(url: String) -> Arc<Self> {
        Arc::new(Self {
            url,
            clients: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
        })
    }

    /// Run `SELECT 1` on the next session; `Err` with the reason on failure.
    pub async fn ping(&self) -> Result<(), String> {
        let clients = self.clients.read().await;
        if clients.is_empty() {
            return Err("no database session".into());
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % clients.len();
        tokio::time::timeout(Duration::from_secs(2), clients[i].simple_query("SELECT 1"))
            .await
            .map_err(|_| "database query timed out".to_owned())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Keep the pool at `target()` sessions, forever.
    pub async fn maintain(self: Arc<Self>, target: impl Fn() -> usize, metrics: Arc<Metrics>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let want = target();
            {
                let mut clients = self.clients.write().await;
                clients.retain(|c| !c.is_closed());
                clients.truncate(want);
            }
            let have = self.clients.read().await.len();
            let mut failed = false;
            for _ in have..want {
                match tokio_postgres::connect(&self.url, NoTls).await {
                    Ok((client, conn)) => {
                        tokio::spawn(conn);
                        self.clients.write().await.push(client);
                    }
                    Err(e) => {
                        let kind = e
                            .as_db_error()
                            .map(|d| d.code().code().to_owned())
                            .unwrap_or_else(|| "connect".to_owned());
                        metrics.db_errors(&kind);
                        failed = true;
                        break;
                    }
                }
            }
            metrics.db_open(self.clients.read().await.len());
            backoff = if failed {
                (backoff * 2).min(Duration::from_secs(2))
            } else {
                Duration::from_millis(200)
            };
            tokio::time::sleep(backoff).await;
        }
    }
}
