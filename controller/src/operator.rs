//! `headroom run`: the operator process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::info;

use crate::cli::RunArgs;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::prometheus::Prometheus;
use crate::reconcile;
use crate::recorded::RecordedCache;

/// Start the reconcilers and the HTTP server; return when a signal arrives.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = kube::Config::infer()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    // No hidden retries of 429/503/504 inside the client (up to 15, with
    // backoff up to minutes): an eviction refused by a PodDisruptionBudget
    // (429) is an answer to record, and every step that must not give up
    // (a restore, the run's record) retries on its own, bounded and logged.
    // A client that waited silently could delay an abort.
    config.default_retry = false;
    let client = kube::Client::try_from(config)
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let metrics = Arc::new(Metrics::default());
    let prometheus = Prometheus::with_options(&crate::prometheus_client::ClientOptions {
        url: args.prometheus_url.clone(),
        timeout: args.prometheus_timeout,
        args: args.prometheus_client.clone(),
    })
    .with_context(|| format!("--prometheus-url {}", args.prometheus_url))?
    .with_query_counter(metrics.prometheus_queries.clone());
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "headroom".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let (caches, fill) = crate::caches::start(&client, args.watch_namespace.as_deref());
    let instance = crate::run_owner::Instance::new(args.run_lease_duration);
    metrics
        .instance_info
        .get_or_create(&crate::metrics::InstanceLabels {
            instance: instance.id.clone(),
        })
        .set(1);
    info!(instance = %instance.id, run_lease = ?instance.lease, "this process's instance identity (status.driver of the runs it drives)");
    let notifier = match &args.notify_secret {
        Some(secret) => {
            info!(%secret, namespace = %args.operator_namespace, "run notifications go to the webhooks this Secret lists");
            crate::notify::Notifier::start(
                client.clone(),
                crate::notify::Options {
                    namespace: args.operator_namespace.clone(),
                    secret: secret.clone(),
                    refresh: args.notify_refresh,
                    timeout: args.notify_timeout,
                    retry_for: args.notify_retry_for,
                    dashboard_url: args.dashboard_url.clone(),
                },
                metrics.notifications.clone(),
            )
        }
        None => crate::notify::Notifier::disabled(),
    };
    let ctx = Arc::new(Context {
        instance,
        peers_seen: Default::default(),
        client,
        recorder,
        operator_namespace: args.operator_namespace.clone(),
        runs: crate::engine::Registry::default(),
        prometheus,
        metrics: metrics.clone(),
        evaluation_interval: args.evaluation_interval,
        // One round per interval: every SLO of one cycle shares one read per window.
        recorded: (!args.direct_queries).then(|| {
            RecordedCache::new(args.evaluation_interval, metrics.recorded_rounds.clone())
                .with_read_seconds(metrics.recorded_read_seconds.clone())
        }),
        watch_namespace: args.watch_namespace.clone(),
        indicator_checks: Default::default(),
        direct_reads: tokio::sync::Semaphore::new(crate::context::DIRECT_READS),
        run_cache: Some(caches.runs.clone()),
        connection_allow: crate::allow_list::AllowList(args.connection_target_allow.clone()),
        notifier,
    });

    let dashboard = crate::dashboard::start(ctx.clone(), &caches);
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics)
        .merge(crate::dashboard::router(dashboard));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    info!(listen = %args.listen, prometheus = %args.prometheus_url, "headroom operator starting");
    // Metrics, health and the dashboard answer on every replica, leader or not.
    let mut server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut fill = tokio::spawn(fill);
    // Every replica, leader or not, says which instances drive runs.
    let peers = tokio::spawn(crate::engine::heartbeat::watch_peers(
        ctx.clone(),
        caches.runs.clone(),
    ));

    let timing = crate::leader::Timing {
        renew_deadline: args
            .renew_deadline
            .unwrap_or(crate::leader::Timing::from_lease(args.lease_duration).renew_deadline),
        ..crate::leader::Timing::from_lease(args.lease_duration)
    };
    if args.leader_elect {
        timing.check().map_err(|e| anyhow::anyhow!(e))?;
    }
    let mut elector = args.leader_elect.then(|| {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", std::process::id(), rand::random::<u32>()));
        crate::leader::Elector::new(
            ctx.client.clone(),
            &args.operator_namespace,
            &args.lease_name,
            identity,
            timing,
        )
    });
    let mut acquired = tokio::time::Instant::now();
    if let Some(e) = elector.as_mut() {
        info!(identity = %e.identity(), "waiting to become the leader");
        tokio::select! {
            t = e.acquire() => acquired = t,
            res = &mut server => return Err(anyhow::anyhow!("HTTP server stopped: {res:?}")),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }

    let rules = crate::rules_writer::run(
        ctx.clone(),
        crate::rules_writer::Options {
            rules_dir: args.rules_dir.clone(),
            dashboard_url: args.dashboard_url.clone(),
            prometheus_reload: args.prometheus_reload,
        },
        caches.slos.clone(),
    );
    let engine = ctx.clone();
    let prometheus_rules = crate::prometheus_rules::run(
        ctx.clone(),
        args.dashboard_url.clone(),
        crate::rule_metadata::Defaults::new(
            &args.prometheus_rule_labels,
            &args.prometheus_rule_annotations,
        ),
        caches.slos.clone(),
    );
    let lost = async {
        match elector.as_mut() {
            Some(e) => e.hold(acquired).await,
            None => std::future::pending().await,
        }
    };
    let mut outcome = Ok(());
    tokio::select! {
        res = &mut server => outcome = Err(anyhow::anyhow!("HTTP server stopped: {res:?}")),
        () = reconcile::slo::run(ctx.clone(), caches.clone()) => info!("SLO controller stopped"),
        () = reconcile::experiment::run(ctx, caches.clone()) => info!("experiment controller stopped"),
        _ = &mut fill => info!("watch caches stopped"),
        res = rules => res.context("rules writer stopped")?,
        res = prometheus_rules => res.context("PrometheusRule writer stopped")?,
        why = lost => outcome = Err(anyhow::anyhow!("lost leadership: {why}")),
    }
    // Never leave a fault behind on the way out: abort and wait (bounded)
    // for every run to restore. What is left is restored by the next
    // instance from the plans saved in the runs' status.
    engine.runs.abort_all("the operator is shutting down");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !engine.runs.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The runs' last notices, delivered if the webhooks answer soon; the
    // process does not wait out their retries.
    engine.notifier.flush(Duration::from_secs(10)).await;
    peers.abort();
    if let Some(e) = elector.as_mut()
        && outcome.is_ok()
    {
        e.release().await;
    }
    outcome
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        // Streamed: the per-SLO gauges are rendered piece by piece.
        axum::body::Body::from_stream(futures::stream::iter(
            metrics
                .render_chunks()
                .map(Ok::<_, std::convert::Infallible>),
        )),
    )
}
