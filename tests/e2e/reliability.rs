//! Faults in Headroom's own dependencies mid-run: the leader dies, and
//! Prometheus dies. Nothing mocked: two real operator processes on a real
//! Lease, and a real Prometheus killed with SIGKILL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use headroom::resources::ExperimentRun;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, PrivatePrometheus, eventually};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::experiment::{
    ERRORS, calm, experiment, final_run, live_uids, observing, runs, set_error_ratio, slo, web,
    web_ready,
};

#[tokio::test]
async fn a_follower_takes_over_when_the_leader_is_killed_and_restores_its_run() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("leader").await?;
    let home = cluster.namespace("leader-home").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let args = crate::experiment::failover_args(&home.name);
    let mut a = Some(Operator::start_in(&cluster, &ns.name, &args)?);
    let mut b = Some(Operator::start_in(&cluster, &ns.name, &args)?);
    let leader_is_a = eventually(
        "one leader",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let (la, lb) = (
                a.as_ref().map(Operator::log).unwrap_or_default(),
                b.as_ref().map(Operator::log).unwrap_or_default(),
            );
            async move {
                let (ya, yb) = (
                    la.contains("became the leader"),
                    lb.contains("became the leader"),
                );
                ensure!(!(ya && yb), "two leaders at once");
                Ok((ya || yb).then_some(ya))
            }
        },
    )
    .await?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment("kill-one-web", "checkout", json!({ "duration": "120s" }))?,
        )
        .await?;
    let (leader, follower) = if leader_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let run = observing(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| leader.as_ref().map(Operator::log).unwrap_or_default())?;
    ensure!(
        !follower
            .as_ref()
            .map(Operator::log)
            .unwrap_or_default()
            .contains("became the leader"),
        "the follower led while the leader lived"
    );

    // SIGKILL the leader: no restore on the way out, the lease not released.
    let killed_at = Instant::now();
    drop(leader.take());
    let done = final_run(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| follower.as_ref().map(Operator::log).unwrap_or_default())?;
    let took = killed_at.elapsed();
    ensure!(done.metadata.uid == run.metadata.uid, "the same run");
    let status = done.status.clone().context("status")?;
    ensure!(status.phase == RunPhase::Aborted, "{:?}", status.phase);
    ensure!(status.restore.as_ref().is_some_and(|r| r.done), "restored");
    ensure!(
        status.timeline.iter().any(|t| t.step == "RecoveryStarted"),
        "{:?}",
        status.timeline
    );
    let kills = status
        .observations
        .as_ref()
        .map_or(0, |o| o.killed_pods.len());
    ensure!(
        kills == 1,
        "{kills} pods killed: the new leader injected again"
    );
    let log = follower.as_ref().map(Operator::log).unwrap_or_default();
    ensure!(
        log.contains("became the leader"),
        "the follower never took over"
    );
    println!(
        "leader killed; follower restored run {} {:.1}s later (lease 4s)",
        done.name_any(),
        took.as_secs_f64()
    );
    ensure!(
        took <= Duration::from_secs(4 + 6),
        "takeover and restore took {took:?} with a 4s lease"
    );
    web_ready(&cluster, &ns.name).await?;
    Ok(())
}

#[tokio::test]
async fn prometheus_dying_mid_run_aborts_and_blocks_new_injections_until_it_returns() -> Result<()>
{
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("prom-down").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    let mut prom = PrivatePrometheus::start(&cluster).await?;
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &["--evaluation-interval", "2s", "--prometheus-url", &prom.url],
    )?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    // A fresh Prometheus needs some samples before every window has data.
    calm(&cluster).await?;
    tokio::time::sleep(Duration::from_secs(16)).await;
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
    exps.create(
        &PostParams::default(),
        &experiment("first", "checkout", json!({ "duration": "120s" }))?,
    )
    .await?;
    observing(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    prom.kill()?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(30))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(status.phase == RunPhase::Aborted, "{:?}", status.phase);
    let reason = status.reason.clone().unwrap_or_default();
    ensure!(reason.starts_with("PrometheusUnavailable"), "{reason}");
    ensure!(status.restore.as_ref().is_some_and(|r| r.done));

    // While it is down: a new experiment is gated, nothing is touched.
    let before = web_ready(&cluster, &ns.name).await?;
    exps.create(
        &PostParams::default(),
        &experiment("second", "checkout", json!({}))?,
    )
    .await?;
    let gated = eventually(
        "the second experiment gated",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            let e = exps.get("second").await?;
            Ok(e.status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Gated"))
                .filter(|c| c.status == "True"))
        },
    )
    .await?;
    ensure!(gated.reason == "PrometheusUnavailable", "{gated:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        live_uids(&cluster, &ns.name).await? == before,
        "pods touched during the outage"
    );

    // Back: the gate opens and the second experiment runs.
    prom.resume().await?;
    eventually(
        "the second experiment's run after Prometheus returned",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            Ok(runs(&cluster, &ns.name).await?.into_iter().find(|r| {
                r.spec.experiment == "second"
                    && r.status
                        .as_ref()
                        .is_some_and(|s| s.phase.holds_fault() || s.phase == RunPhase::Completed)
            }))
        },
    )
    .await
    .with_context(|| operator.log())?;
    Ok(())
}

/// Connections a test listener has seen: accepted in total, open now, and
/// the most open at once.
#[derive(Default)]
struct Counts {
    accepted: usize,
    open: usize,
    max_open: usize,
}

#[tokio::test]
async fn reconciling_a_run_again_opens_no_extra_connections_and_starts_no_second_run() -> Result<()>
{
    // Not touching the example service, but its SLO guards the run: hold
    // the lock so no other test raises its error rate meanwhile.
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("idempotent").await?;
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    // The target: a listener in this test, so every connection the operator
    // opens is counted exactly.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let server = {
        let counts = counts.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                if let Ok(mut c) = counts.lock() {
                    c.accepted += 1;
                    c.open += 1;
                    c.max_open = c.max_open.max(c.open);
                }
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                    if let Ok(mut c) = counts.lock() {
                        c.open -= 1;
                    }
                });
            }
        })
    };
    let snapshot = |counts: &Arc<Mutex<Counts>>| {
        counts
            .lock()
            .map(|c| (c.accepted, c.open, c.max_open))
            .unwrap_or_default()
    };

    let allow = format!("127.0.0.1/32:{port}");
    let operator =
        Operator::start_in_allowing(&cluster, &ns.name, &["--evaluation-interval", "2s"], &allow)?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
    exps.create(
        &PostParams::default(),
        &experiment(
            "hold-six",
            "checkout",
            json!({
                "hypothesis": { "recoversWithin": null },
                "action": { "podKill": null, "connectionExhaustion": {
                    "target": { "host": "127.0.0.1", "port": port },
                    "protocol": "Tcp", "connections": 6, "rampStep": 3, "rampInterval": "200ms",
                    "holdFor": "25s"
                }},
                "duration": "40s",
                "blastRadius": null
            }),
        )?,
    )
    .await?;
    let run = observing(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    eventually(
        "six connections held",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { Ok((snapshot(&counts).1 == 6).then_some(())) },
    )
    .await
    .with_context(|| operator.log())?;

    // Make the operator reconcile the experiment and its run again while
    // the fault is held: a new generation, an annotation, and a change to
    // the owned run, each a fresh trigger of the same reconcile.
    let patch = |v: serde_json::Value| Patch::Merge(v);
    exps.patch(
        "hold-six",
        &PatchParams::default(),
        &patch(json!({ "spec": { "hypothesis": { "description": "six held connections do not hurt (edited mid-run)" } } })),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    exps.patch(
        "hold-six",
        &PatchParams::default(),
        &patch(json!({ "metadata": { "annotations": { "example.com/touched": "mid-run" } } })),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Api::<ExperimentRun>::namespaced(cluster.client.clone(), &ns.name)
        .patch(
            &run.name_any(),
            &PatchParams::default(),
            &patch(json!({ "metadata": { "labels": { "touched": "mid-run" } } })),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = snapshot(&counts);

    let done = final_run(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    ensure!(done.metadata.uid == run.metadata.uid, "the same run");
    let status = done.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}",
        status.phase,
        status.reason
    );
    let released = eventually(
        "every connection released",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let s = snapshot(&counts);
            Ok((s.1 == 0).then_some(s))
        },
    )
    .await
    .with_context(|| format!("(accepted, open, max open) = {:?}", snapshot(&counts)))?;
    server.abort();
    // Before injecting, the run opens one probe connection and closes it
    // (a target that is down fails the run with nothing held): 1 + 6.
    ensure!(
        released.0 == 7 && released.2 == 6,
        "accepted {} connections, at most {} open at once, for one probe and a run of 6",
        released.0,
        released.2
    );
    ensure!(
        during.0 == 7,
        "{} connections after the re-reconciles",
        during.0
    );
    // Still one run, also once the reconciles after its end have passed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = runs(&cluster, &ns.name).await?;
    ensure!(
        all.len() == 1,
        "{} runs for a one-off experiment: {:?}",
        all.len(),
        all.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    ensure!(snapshot(&counts).0 == 7, "connections opened after the run");
    println!(
        "re-reconciled 3 times mid-run: {} connections opened (1 probe + a run of 6), at most {} open at once",
        released.0, released.2
    );
    Ok(())
}
