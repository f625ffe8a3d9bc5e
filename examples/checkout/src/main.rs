//! `checkout`: the example service of Headroom's local cluster.
//!
//! kwok pods run no process, so this service runs on the host and reads its
//! Deployment's Ready pods from the API: capacity and PostgreSQL connections
//! follow them, so killing pods or scaling changes its real error rate and
//! its real database connections, which Prometheus scrapes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use tokio::sync::Notify;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use checkout::db_pool::DbPool;
use checkout::load::{Connections, Load};
use checkout::metrics::Metrics;
use checkout::pods::{self, PodCounts};
use checkout::server::{self, AppState};

#[derive(Debug, Parser)]
#[command(
    about = "Example service whose capacity and database connections follow its Deployment's Ready pods"
)]
struct Args {
    /// Address to serve on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:28080")]
    listen: SocketAddr,
    /// Kubeconfig of the cluster that runs the Deployment (several files
    /// may be joined with ':').
    #[arg(long, value_name = "PATH", env = "KUBECONFIG")]
    kubeconfig: String,
    /// Namespace of the Deployment.
    #[arg(long, default_value = "checkout")]
    namespace: String,
    /// Name of the Deployment whose Ready pods give the capacity.
    #[arg(long, default_value = "checkout")]
    deployment: String,
    /// PostgreSQL URL or key=value string; each Ready pod holds
    /// `--conns-per-pod` connections.
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Requests per second the built-in load generator sends (0 = none).
    #[arg(long, value_name = "RPS", default_value_t = 50)]
    load_rps: u32,
    /// Requests per second each Ready pod can serve.
    #[arg(long, value_name = "RPS", default_value_t = 20)]
    capacity_per_pod: u32,
    /// PostgreSQL connections held per Ready pod (0 = no database).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=1000))]
    conns_per_pod: u32,
    /// Close and reopen each PostgreSQL session after this long (0 = never),
    /// as production pools do (compressed from their usual minutes so the
    /// demo shows the effect in seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    db_max_lifetime_seconds: u64,
    /// This process is one pod (a real pod on the real node): it serves
    /// `--capacity-per-pod` requests per second and holds `--conns-per-pod`
    /// connections of its own, whatever the Ready-pod count. Without it, one
    /// process models the capacity and the pools of all the Deployment's
    /// pods (kwok pods run no process).
    #[arg(long, alias = "pool-per-process")]
    process_is_pod: bool,
    /// Fixed time each admitted request takes, on top of the modelled
    /// latency: with real pods, requests in flight long enough that killing
    /// a process drops some.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    work_ms: u64,
}

impl Args {
    /// Parsed here rather than by clap, whose error would repeat the URL
    /// and with it any password.
    fn database(&self) -> Result<tokio_postgres::Config, clap::Error> {
        self.database_url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| {
                Self::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("--database-url: not a PostgreSQL connection string ({e})"),
                )
            })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line, without a backtrace: these are
            // operator errors (flags, cluster), not bugs.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let database = args.database().unwrap_or_else(|e| e.exit());
    // Bound first, so a taken port fails at once; connections wait in the
    // backlog until serving starts.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    let local = listener.local_addr()?;

    let client = pods::client(&args.kubeconfig).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &args.namespace);
    let selector = pods::selector(&deployments, &args.namespace, &args.deployment).await?;
    info!(namespace = %args.namespace, deployment = %args.deployment, %selector, "watching pods");

    let metrics = Arc::new(Metrics::default());
    let counts = Arc::new(PodCounts::default());
    let (synced, pods_listed) = tokio::sync::oneshot::channel();
    tokio::spawn(pods::watch_pods(
        Api::namespaced(client, &args.namespace),
        selector,
        counts.clone(),
        metrics.clone(),
        synced,
    ));
    tokio::spawn(pods::watch_deployment(
        deployments,
        args.deployment.clone(),
        counts.clone(),
        metrics.clone(),
    ));
    // Serving before the first list would answer 503 for pods that exist.
    if tokio::time::timeout(Duration::from_secs(10), pods_listed)
        .await
        .is_err()
    {
        warn!("pods not listed within 10s; serving with 0 Ready pods until they are");
    }

    let pool = DbPool::new(database, args.conns_per_pod, metrics.clone()).with_max_lifetime(
        (args.db_max_lifetime_seconds > 0)
            .then(|| Duration::from_secs(args.db_max_lifetime_seconds)),
    );
    // One pod's pool: the maintainer sees one Ready pod for good (the
    // sender lives as long as run(), so the watch never closes).
    let (_one_pod, one) = tokio::sync::watch::channel(1u32);
    if pool.enabled() {
        // Likewise let the pool try once, so the first requests find it.
        let first = pool.round();
        let ready = if args.process_is_pod {
            one
        } else {
            counts.subscribe()
        };
        tokio::spawn(pool.clone().maintain(ready));
        let _ = tokio::time::timeout(Duration::from_secs(5), first).await;
    }

    let load = Load::new(args.load_rps);
    // A real pod serves with its own capacity: when one of two is killed,
    // the Service sends all the traffic to the other, which refuses what is
    // beyond it, as a real backend at its limit would.
    let serving = if args.process_is_pod {
        let this_pod = Arc::new(PodCounts::default());
        this_pod.set_ready(1);
        this_pod
    } else {
        counts
    };
    let state = AppState::new(
        metrics,
        serving,
        pool,
        load.clone(),
        args.capacity_per_pod,
        Duration::from_millis(args.work_ms),
    );
    let stop = Arc::new(Notify::new());
    let mut server = tokio::spawn(
        axum::serve(listener, server::router(state))
            .with_graceful_shutdown({
                let stop = stop.clone();
                async move { stop.notified().await }
            })
            .into_future(),
    );
    let load_task = load
        .start(
            format!("http://{}/checkout", reachable(local)),
            Connections::KeepAlive,
        )
        .context("starting the load generator")?;
    info!(listen = %local, load_rps = args.load_rps, "checkout serving");

    tokio::select! {
        served = &mut server => return served?.context("serving HTTP"),
        () = shutdown_signal() => {}
    }
    info!("shutting down");
    // Stop our own traffic first, so only real clients are drained.
    load_task.abort();
    stop.notify_one();
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(served) => served?.context("serving HTTP")?,
        Err(_) => warn!("connections still open after 10s; exiting anyway"),
    }
    info!("stopped");
    Ok(())
}

/// Where the load generator can reach an address we listen on.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        a => a,
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_contract_parses_and_names_bad_flags() {
        let args = Args::try_parse_from([
            "checkout",
            "--listen",
            "127.0.0.1:9000",
            "--kubeconfig",
            "/k",
            "--namespace",
            "ns",
            "--deployment",
            "d",
            "--database-url",
            "postgres://u:p@127.0.0.1:5432/db",
            "--load-rps",
            "10",
            "--capacity-per-pod",
            "5",
            "--conns-per-pod",
            "3",
        ])
        .expect("the documented CLI parses");
        assert_eq!(args.listen.port(), 9000);
        assert_eq!(
            (args.load_rps, args.capacity_per_pod, args.conns_per_pod),
            (10, 5, 3)
        );
        let database = args.database().expect("the URL parses");
        assert_eq!(database.get_dbname(), Some("db"));

        let bad = Args::try_parse_from([
            "checkout",
            "--kubeconfig",
            "/k",
            "--database-url",
            "postgres://u:secret@h:notaport/db",
        ])
        .expect("clap leaves the URL to us")
        .database()
        .expect_err("a bad port is refused");
        let text = bad.to_string();
        assert!(text.contains("--database-url"), "{text}");
        assert!(!text.contains("secret"), "password leaked: {text}");
        let bad = Args::try_parse_from([
            "checkout",
            "--kubeconfig",
            "/k",
            "--database-url",
            "postgres://h/db",
            "--listen",
            "nowhere",
        ])
        .expect_err("a bad address is refused");
        assert!(bad.to_string().contains("--listen"));
    }

    #[test]
    fn load_goes_to_loopback_when_listening_everywhere() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("static");
        assert_eq!(reachable(any).to_string(), "127.0.0.1:8080");
        let any6: SocketAddr = "[::]:8080".parse().expect("static");
        assert_eq!(reachable(any6).to_string(), "[::1]:8080");
    }
}
