//! Faults in Headroom's own dependencies mid-run: the leader dies, and
//! Prometheus dies. Nothing mocked: two real operator processes on a real
//! Lease, and a real Prometheus killed with SIGKILL.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, PrivatePrometheus, eventually};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

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
    let args = [
        "--evaluation-interval",
        "2s",
        "--operator-namespace",
        &home.name,
        "--leader-elect",
        "--lease-duration",
        "4s",
    ];
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
