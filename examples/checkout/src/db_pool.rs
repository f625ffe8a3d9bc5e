//! A PostgreSQL pool sized by Ready pods: `per_pod` connections for each
//! Ready pod, as if every replica held its own pool. Scaling the Deployment
//! up opens connections, which the server's `max_connections` may refuse;
//! scaling down closes the extras.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_postgres::{Client, Config, NoTls};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a full pool looks for connections the server dropped.
const RECHECK: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

pub struct DbPool {
    config: Config,
    per_pod: usize,
    /// Sessions older than this are closed and reopened, as pools in the
    /// field recycle connections (HikariCP maxLifetime, sqlx max_lifetime):
    /// a server that refuses new sessions then starves the service.
    max_lifetime: Option<Duration>,
    sessions: Mutex<Vec<Arc<Client>>>,
    born: Mutex<Vec<std::time::Instant>>,
    next: AtomicUsize,
    metrics: Arc<Metrics>,
    /// Wakes the maintainer when the server drops a connection, so it is
    /// replaced at once rather than at the next recheck.
    lost: Arc<Notify>,
    /// Counts maintenance rounds, so start-up can wait for the first.
    rounds: watch::Sender<u64>,
}

impl DbPool {
    pub fn new(mut config: Config, per_pod: u32, metrics: Arc<Metrics>) -> Arc<Self> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Arc::new(Self {
            config,
            per_pod: per_pod as usize,
            max_lifetime: None,
            sessions: Mutex::new(Vec::new()),
            born: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            metrics,
            lost: Arc::new(Notify::new()),
            rounds: watch::Sender::new(0),
        })
    }

    /// Recycle sessions older than `lifetime` (`None`: keep them).
    pub fn with_max_lifetime(mut self: Arc<Self>, lifetime: Option<Duration>) -> Arc<Self> {
        if let Some(pool) = Arc::get_mut(&mut self) {
            pool.max_lifetime = lifetime;
        }
        self
    }

    /// Whether requests use the database at all (`--conns-per-pod 0` turns
    /// it off).
    pub fn enabled(&self) -> bool {
        self.per_pod > 0
    }

    /// Connections the pool aims for with `ready` pods.
    pub fn target(&self, ready: u32) -> usize {
        ready as usize * self.per_pod
    }

    /// Resolves once a maintenance round has ended after this call, with
    /// the pool full or an attempt failed.
    pub fn round(&self) -> impl Future<Output = ()> + use<> {
        let mut rounds = self.rounds.subscribe();
        async move {
            let _ = rounds.changed().await;
        }
    }

    pub fn open(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Client>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `SELECT 1` on the next live connection, round robin.
    pub async fn ping(&self) -> Result<(), String> {
        let client = {
            let sessions = self.lock();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            (0..sessions.len())
                .map(|k| &sessions[(start + k) % sessions.len()])
                .find(|c| !c.is_closed())
                .cloned()
                .ok_or_else(|| "no database connection".to_owned())?
        };
        tokio::time::timeout(QUERY_TIMEOUT, client.simple_query("SELECT 1"))
            .await
            .map_err(|_| "database query timed out".to_owned())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Keep the pool at `per_pod` × Ready pods until `ready` closes.
    pub async fn maintain(self: Arc<Self>, mut ready: watch::Receiver<u32>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let want = self.target(*ready.borrow_and_update());
            // Make before break: open the replacement of an expired session
            // first. The expired one is closed either way (the lifetime is
            // enforced), so a server that refuses new sessions slowly
            // starves the pool, as it would a real service.
            let expired = {
                let born = self.born.lock().unwrap_or_else(PoisonError::into_inner);
                self.max_lifetime
                    .is_some_and(|l| born.iter().any(|b| b.elapsed() >= l))
            };
            let replacement = if expired {
                self.connect().await.ok()
            } else {
                None
            };
            // The server just refused: do not ask again this round.
            let refused = expired && replacement.is_none();
            {
                let mut sessions = self.lock();
                let mut born = self.born.lock().unwrap_or_else(PoisonError::into_inner);
                born.resize(sessions.len(), std::time::Instant::now());
                // Dropping the last handle of a client ends its connection.
                // One expired session per round, so the others keep serving
                // while it is replaced.
                let mut recycled = false;
                let keep: Vec<bool> = sessions
                    .iter()
                    .zip(born.iter())
                    .map(|(c, b)| {
                        let expired = self.max_lifetime.is_some_and(|l| b.elapsed() >= l);
                        let recycle = expired && !recycled;
                        recycled |= recycle;
                        !c.is_closed() && !recycle
                    })
                    .collect();
                let mut k = keep.iter();
                sessions.retain(|_| *k.next().unwrap_or(&false));
                let mut k = keep.iter();
                born.retain(|_| *k.next().unwrap_or(&false));
                if let Some(client) = replacement {
                    sessions.push(Arc::new(client));
                    born.push(std::time::Instant::now());
                }
                sessions.truncate(want);
                born.truncate(want);
            }
            let mut failed = refused;
            while !refused && self.open() < want {
                match self.connect().await {
                    Ok(client) => {
                        let mut sessions = self.lock();
                        let mut born = self.born.lock().unwrap_or_else(PoisonError::into_inner);
                        born.resize(sessions.len(), std::time::Instant::now());
                        sessions.push(Arc::new(client));
                        born.push(std::time::Instant::now());
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
                self.metrics.db_open(self.open());
                if ready.has_changed().unwrap_or(false) {
                    break;
                }
            }
            let open = self.open();
            self.metrics.db_open(open);
            self.rounds.send_modify(|n| *n += 1);
            let wait = if failed {
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                debug!(open, want, ?wait, "retrying PostgreSQL connections");
                wait
            } else {
                backoff = MIN_BACKOFF;
                RECHECK
            };
            // Lifetimes are enforced on time, backoff or not.
            let wait = if self.max_lifetime.is_some() {
                wait.min(RECHECK)
            } else {
                wait
            };
            tokio::select! {
                changed = ready.changed() => if changed.is_err() { return },
                () = self.lost.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One new connection, or the kind of failure after counting it.
    async fn connect(&self) -> Result<Client, String> {
        let result = tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(NoTls)).await;
        let error = match result {
            Ok(Ok((client, connection))) => {
                let (metrics, lost) = (self.metrics.clone(), self.lost.clone());
                tokio::spawn(async move {
                    // Ok when we dropped the client; Err when the server or
                    // the network ended it (e.g. pg_terminate_backend).
                    if let Err(e) = connection.await {
                        let kind = error_kind(&e);
                        warn!(kind, "PostgreSQL connection lost: {}", error_chain(&e));
                        metrics.db_error(&kind);
                        lost.notify_one();
                    }
                });
                debug!("PostgreSQL connection opened");
                return Ok(client);
            }
            Ok(Err(e)) => e,
            Err(_) => {
                self.metrics.db_error("timeout");
                warn!("PostgreSQL connect timed out");
                return Err("timeout".into());
            }
        };
        let kind = error_kind(&error);
        self.metrics.db_error(&kind);
        let detail = error
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| error_chain(&error));
        if kind == "53300" {
            info!(kind, "PostgreSQL refused a connection: {detail}");
        } else {
            warn!(kind, "PostgreSQL connect failed: {detail}");
        }
        Err(kind)
    }
}

/// The SQLSTATE when the server answered (53300 for "too many clients"),
/// otherwise a short name for what went wrong on the way.
fn error_kind(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.code().code().to_owned();
    }
    let io = e
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    kind_of(io, &e.to_string()).to_owned()
}

fn kind_of(io: Option<std::io::ErrorKind>, message: &str) -> &'static str {
    use std::io::ErrorKind as K;
    match io {
        Some(K::ConnectionRefused) => "connection_refused",
        Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof) => {
            "connection_reset"
        }
        Some(K::TimedOut) => "timeout",
        Some(K::NotFound) => "not_found",
        Some(_) => "io",
        None if message.starts_with("timeout") => "timeout",
        None if message.starts_with("authentication") => "authentication",
        None if message.starts_with("connection closed") => "closed",
        None => "other",
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as K;

    #[test]
    fn names_failures_without_a_sqlstate() {
        assert_eq!(
            kind_of(Some(K::ConnectionRefused), "error connecting"),
            "connection_refused"
        );
        assert_eq!(kind_of(Some(K::UnexpectedEof), ""), "connection_reset");
        assert_eq!(kind_of(Some(K::PermissionDenied), ""), "io");
        assert_eq!(kind_of(None, "timeout waiting for server"), "timeout");
        assert_eq!(kind_of(None, "authentication error"), "authentication");
        assert_eq!(kind_of(None, "something new"), "other");
    }

    #[tokio::test]
    async fn an_unreachable_server_counts_errors_and_keeps_the_pool_empty() {
        // Nothing listens on port 1 of loopback: refused at once.
        let config: Config = "postgres://u:p@127.0.0.1:1/db"
            .parse()
            .expect("static URL parses");
        let metrics = Arc::new(Metrics::default());
        let pool = DbPool::new(config, 2, metrics.clone());
        assert_eq!(
            pool.connect().await.err().as_deref(),
            Some("connection_refused")
        );
        assert!(pool.ping().await.is_err(), "no connection, no query");
        assert!(
            metrics
                .render()
                .contains(r#"checkout_db_connection_errors_total{kind="connection_refused"} 1"#)
        );
    }
}
