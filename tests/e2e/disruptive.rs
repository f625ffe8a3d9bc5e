//! Faults that disturb the whole local cluster: the kube-apiserver is
//! killed and started again. Every client of the cluster sees the outage,
//! so `scripts/test.sh` runs this module alone, after the shared suite
//! (`-- disruptive:: --test-threads=1`), and skips it in the shared run.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::experiment::{
    ERRORS, calm, experiment, final_run, live_uids, observing, runs, set_error_ratio, slo, web,
    web_ready,
};

#[tokio::test]
async fn kube_apiserver_restarted_mid_run_the_operator_reconnects_and_never_kills_twice()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("apiserver-restart").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let mut operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;

    // Every web pod UID that ever existed, from a watch of our own that
    // re-lists after the restart (a pod cannot come and go while the API
    // server is down). Whatever is gone at the end was deleted by someone.
    let ever: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let watch = {
        let ever = ever.clone();
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns.name);
        let stream = watcher(pods, watcher::Config::default().labels("app=web"))
            .default_backoff()
            .touched_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                if let (Ok(p), Ok(mut set)) = (item, ever.lock())
                    && let Some(uid) = p.metadata.uid
                {
                    set.insert(uid);
                }
            }
        })
    };

    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    // Three rounds of one pod, 10s apart: the restart falls between rounds.
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "kill-through-a-restart",
                "checkout",
                json!({
                    "action": { "podKill": { "repeat": 3, "interval": "10s" } },
                    "hypothesis": { "recoversWithin": "60s" },
                    "duration": "40s"
                }),
            )?,
        )
        .await?;
    let run = observing(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;

    let outage = cluster
        .restart_apiserver(Duration::from_secs(5))
        .await
        .with_context(|| operator.log())?;

    let done = final_run(&cluster, &ns.name, Duration::from_secs(180))
        .await
        .with_context(|| operator.log())?;
    ensure!(done.metadata.uid == run.metadata.uid, "the same run");
    let status = done.status.clone().context("status")?;
    ensure!(
        matches!(status.phase, RunPhase::Completed | RunPhase::Aborted),
        "{:?}: {:?}\n{}",
        status.phase,
        status.reason,
        operator.log()
    );
    ensure!(
        status.restore.as_ref().is_some_and(|r| r.done),
        "restore not done: {:?}",
        status.timeline
    );
    // A run cut short by the outage proved nothing either way.
    ensure!(
        status.phase != RunPhase::Aborted
            || status.verdict != Some(headroom::resources::run::Verdict::Confirmed),
        "aborted by the outage yet Confirmed: {:?}",
        status.expectations
    );
    ensure!(
        operator.exited().is_none(),
        "the operator exited during the outage:\n{}",
        operator.log()
    );

    // Nothing more happens after the final record: no late kill, no new run.
    web_ready(&cluster, &ns.name).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    watch.abort();
    let live = live_uids(&cluster, &ns.name).await?;
    let ever = ever
        .lock()
        .map_err(|_| anyhow::anyhow!("watch lock"))?
        .clone();
    let gone: BTreeSet<String> = ever.difference(&live).cloned().collect();
    let recorded: BTreeSet<String> = status
        .observations
        .as_ref()
        .map(|o| o.killed_pods.iter().filter_map(|p| p.uid.clone()).collect())
        .unwrap_or_default();
    let kill_steps = status
        .timeline
        .iter()
        .filter(|t| t.step == "PodKilled")
        .count();
    ensure!(
        gone == recorded,
        "pods deleted {gone:?} but the run recorded {recorded:?}"
    );
    ensure!(
        kill_steps == recorded.len() && recorded.len() <= 3 && !recorded.is_empty(),
        "{kill_steps} PodKilled steps, {} recorded kills (3 rounds of 1 planned)",
        recorded.len()
    );
    let started = runs(&cluster, &ns.name)
        .await?
        .into_iter()
        .filter(|r| r.status.as_ref().is_none_or(|s| s.phase != RunPhase::Gated))
        .count();
    ensure!(
        started == 1,
        "{started} runs started for a one-off experiment"
    );

    // Reconnected: a new SLO created after the restart gets its status.
    let slos: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    slos.create(&PostParams::default(), &slo("after-restart", ERRORS)?)
        .await?;
    eventually(
        "the operator to evaluate an SLO created after the restart",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            Ok(slos
                .get("after-restart")
                .await?
                .status
                .and_then(|s| s.last_evaluated)
                .map(|_| ()))
        },
    )
    .await
    .with_context(|| operator.log())?;

    println!(
        "kube-apiserver down {:.1}s mid-run: run {:?}, verdict {:?} ({}), pods killed {} (recorded {}), restore done",
        outage.as_secs_f64(),
        status.phase,
        status.verdict,
        status.reason.as_deref().unwrap_or("no abort"),
        gone.len(),
        recorded.len()
    );
    Ok(())
}

/// What the sampler saw: (seconds since the freeze, connections the first
/// operator held, connections the second held). Negative before it.
type Samples = Arc<Mutex<Vec<(f64, usize, usize)>>>;

#[tokio::test]
async fn apiserver_frozen_the_leader_stops_injecting_before_its_lease_can_be_taken() -> Result<()> {
    const LEASE_SECS: f64 = 6.0;
    const FROZEN_FOR: Duration = Duration::from_secs(14);
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("frozen-leader").await?;
    let home = cluster.namespace("frozen-leader-home").await?;
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    // The fault: connections held to a listener of this test, so the test
    // sees from /proc which process holds them at every moment.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let allow = format!("127.0.0.1/32:{port}");
    let lease = format!("{}s", LEASE_SECS as u64);
    let args = [
        "--evaluation-interval",
        "2s",
        "--operator-namespace",
        &home.name,
        "--leader-elect",
        "--lease-duration",
        &lease,
    ];
    // A leads: B starts only once A holds the lease.
    let mut a = Operator::start_in_allowing(&cluster, &ns.name, &args, &allow)?;
    eventually(
        "the first operator to lead",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { Ok(a.log().contains("became the leader").then_some(())) },
    )
    .await
    .with_context(|| a.log())?;
    let mut b = Operator::start_in_allowing(&cluster, &ns.name, &args, &allow)?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "hold-through-a-freeze",
                "checkout",
                json!({
                    "hypothesis": { "recoversWithin": null },
                    "budgetPolicy": { "abortBurnRate": 1000, "maxBudgetSpend": 100 },
                    "action": { "podKill": null, "connectionExhaustion": {
                        "target": { "host": "127.0.0.1", "port": port },
                        "connections": 5, "rampStep": 5, "holdFor": "120s"
                    }},
                    "duration": "150s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
    let (pid_a, pid_b) = (a.pid(), b.pid());
    eventually(
        "the leader holding 5 connections",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { Ok((headroom_e2e::tcp_connections_to(pid_a, port) == 5).then_some(())) },
    )
    .await
    .with_context(|| a.log())?;

    // From here on, every 50 ms: who holds connections to the target.
    let t0 = Instant::now() + Duration::from_millis(500);
    let samples: Samples = Arc::default();
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                let now = Instant::now();
                let at = if now >= t0 {
                    (now - t0).as_secs_f64()
                } else {
                    -(t0 - now).as_secs_f64()
                };
                let row = (
                    at,
                    headroom_e2e::tcp_connections_to(pid_a, port),
                    headroom_e2e::tcp_connections_to(pid_b, port),
                );
                if let Ok(mut s) = samples.lock() {
                    s.push(row);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep_until(tokio::time::Instant::from_std(t0)).await;
    let mut frozen = cluster.freeze_apiserver()?;
    tokio::time::sleep(FROZEN_FOR).await;
    frozen.resume()?;
    let resumed = t0.elapsed().as_secs_f64();
    // Whoever leads after the thaw restores the run.
    let done = final_run(&cluster, &ns.name, Duration::from_secs(120))
        .await
        .with_context(|| format!("A:\n{}\nB:\n{}", a.log(), b.log()))?;
    let led = eventually(
        "the second operator to lead",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { Ok(b.log().contains("became the leader").then(|| t0.elapsed())) },
    )
    .await
    .with_context(|| format!("A:\n{}\nB:\n{}", a.log(), b.log()))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampler.abort();
    server.abort();
    let samples = samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples lock"))?
        .clone();

    // Never two processes holding the fault at once.
    let both: Vec<_> = samples
        .iter()
        .filter(|(_, x, y)| *x > 0 && *y > 0)
        .collect();
    ensure!(
        both.is_empty(),
        "both operators held connections at {both:?}"
    );
    // The leader let go before its lease could be taken: its last renewal
    // was before the freeze, so a candidate may take over from LEASE_SECS on.
    let dropped = samples
        .iter()
        .find(|(t, x, _)| *t >= 0.0 && *x == 0)
        .map(|(t, _, _)| *t)
        .context("the leader never released its connections")?;
    ensure!(
        dropped < LEASE_SECS,
        "the leader held its connections {dropped:.2}s into the freeze; a candidate may take the lease after {LEASE_SECS}s\nA:\n{}",
        a.log()
    );
    let a_exited = a.exited().is_some();
    let status = done.status.clone().context("status")?;
    ensure!(
        status.restore.as_ref().is_some_and(|r| r.done),
        "restore not done: {:?}",
        status.timeline
    );
    let b_first_held = samples
        .iter()
        .find(|(_, _, y)| *y > 0)
        .map(|(t, _, _)| format!("{t:.2}s"))
        .unwrap_or_else(|| "never".into());
    println!(
        "apiserver frozen at 0s for {:.0}s (lease {LEASE_SECS}s, renew deadline {:.1}s): leader dropped its 5 connections at {dropped:.2}s; apiserver resumed at {resumed:.2}s; follower became the leader at {:.2}s; follower held connections: {b_first_held}; run {:?} ({}); first leader exited: {a_exited}",
        FROZEN_FOR.as_secs_f64(),
        LEASE_SECS * 2.0 / 3.0,
        led.as_secs_f64(),
        status.phase,
        status.reason.as_deref().unwrap_or("")
    );
    let _ = b.exited();
    Ok(())
}

#[tokio::test]
async fn postgresql_restarted_mid_hold_the_run_counts_only_live_connections_and_records_the_drops()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("pg-restart").await?;
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    let database: tokio_postgres::Config = cluster.var("DATABASE_URL")?.parse()?;
    let port = database.get_ports().first().copied().context("port")?;
    let user = database.get_user().context("user")?.to_owned();
    let password = String::from_utf8(database.get_password().context("password")?.to_vec())?;
    Api::<Secret>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": "pg" },
                "stringData": { "username": user, "password": password, "database": "checkout" }
            }))?,
        )
        .await?;
    let max = cluster.var("POSTGRES_MAX_CONNECTIONS")?.parse::<i32>()?;
    let reserved = cluster
        .var("POSTGRES_SUPERUSER_RESERVED_CONNECTIONS")?
        .parse::<i32>()?;
    let allow = format!("127.0.0.1/32:{port}");
    let operator =
        Operator::start_in_allowing(&cluster, &ns.name, &["--evaluation-interval", "2s"], &allow)?;
    // A week-long SLO: the exhausted database fails checkout requests, and
    // against the suite's two-minute SLO the spend cap would end the hold
    // before the restart this test is about.
    let mut guard = slo("checkout", ERRORS)?;
    guard.spec.window = "7d".into();
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &guard)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "hold-through-a-restart",
                "checkout",
                json!({
                    "hypothesis": { "description": "checkout survives its database restarting while every free slot is taken", "recoversWithin": null },
                    "budgetPolicy": { "abortBurnRate": 1000, "maxBudgetSpend": 100 },
                    "action": { "podKill": null, "connectionExhaustion": {
                        "target": { "host": "127.0.0.1", "port": port },
                        "protocol": "Postgres", "connections": 40, "rampStep": 4, "rampInterval": "200ms",
                        "holdFor": "30s", "credentialsSecret": { "name": "pg" }
                    }},
                    "duration": "60s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
    let holding = eventually(
        "the run holding its connections",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            Ok(runs(&cluster, &ns.name).await?.into_iter().find_map(|r| {
                let st = r.status?;
                st.timeline
                    .iter()
                    .any(|t| t.step == "Holding")
                    .then_some(st)
            }))
        },
    )
    .await
    .with_context(|| operator.log())?;
    let held_before = holding
        .restore
        .as_ref()
        .and_then(|r| r.connections_held)
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart_began = headroom::engine::now_micro().0;
    let took = cluster.restart_postgresql().await?;
    let restart_ended = headroom::engine::now_micro().0;

    // While the hold goes on, what the run says it holds is what the
    // server has: the dead sessions are no longer counted.
    let (said, server_has) = eventually(
        "the run's count of held connections to match the server's",
        Duration::from_secs(15),
        Duration::from_millis(300),
        || async {
            let run = runs(&cluster, &ns.name).await?.into_iter().next();
            let said = run
                .and_then(|r| r.status)
                .and_then(|s| s.restore)
                .and_then(|r| r.connections_held);
            let (_, server_has) = crate::actions::pg_connections(&cluster).await?;
            Ok((said == i32::try_from(server_has).ok()).then_some((said, server_has)))
        },
    )
    .await
    .with_context(|| operator.log())?;

    let run = final_run(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}\n{}",
        status.phase,
        status.reason,
        operator.log()
    );
    let obs = status.observations.clone().context("observations")?;
    let dropped = obs.connections_dropped.unwrap_or(0);
    ensure!(
        dropped >= held_before && held_before > 0,
        "{dropped} drops recorded, {held_before} were held before the restart: {:?}",
        status.timeline
    );
    let first = obs.connection_drops.first().context("no drop recorded")?;
    let seen = first.time.0;
    ensure!(
        seen >= restart_began && seen.duration_since(restart_ended).as_secs_f64() < 5.0,
        "the drop was seen at {seen}, the restart ran from {restart_began} to {restart_ended}"
    );
    let most = obs.max_connections_held.context("max held")?;
    ensure!(
        most <= max - reserved,
        "maxConnectionsHeld {most} against max_connections {max} ({reserved} reserved)"
    );
    ensure!(
        status
            .timeline
            .iter()
            .any(|t| t.step == "ConnectionsDropped"),
        "{:?}",
        status.timeline
    );
    // The checkout pool reconnects; nothing of the run is left.
    eventually(
        "no connection of the run left",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok((crate::actions::pg_connections(&cluster).await?.1 == 0).then_some(())) },
    )
    .await?;
    println!(
        "PostgreSQL restarted mid-hold ({:.1}s): {held_before} held before; {} drops recorded, first {} seen {:.2}s after the restart began; the run then said {} held, the server had {server_has}; max held {most} (max_connections {max}, {reserved} reserved)",
        took.as_secs_f64(),
        dropped,
        first.dropped,
        seen.duration_since(restart_began).as_secs_f64(),
        said.unwrap_or(-1),
    );
    Ok(())
}
