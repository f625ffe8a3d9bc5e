//! Two operator instances without leader election that see the same
//! namespace: a run is driven by exactly one of them. The other leaves it
//! alone while the driver's heartbeat holds, says that it sees the other
//! instance (log, metric, dashboard), and adopts and restores the run only
//! after the driver is SIGKILLed and its heartbeat has run out.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::{ExperimentRun, RunPhase};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, TestNamespace, eventually};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::experiment::{
    ERRORS, calm, experiment, final_run, now_secs, observing, runs, set_error_ratio, slo, web,
    web_ready,
};

/// The run lease the instances are started with, and the margin the
/// operator adds before it takes a heartbeat as lost.
const LEASE_S: f64 = 4.0;
const MARGIN_S: f64 = 2.0;

/// The identity an operator reports in `headroom_instance_info`, once it
/// answers.
async fn instance_id(op: &Operator) -> Result<String> {
    eventually(
        "the operator's /metrics with headroom_instance_info",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let Ok(res) = reqwest::get(&op.metrics_url).await else {
                return Ok(None);
            };
            let text = res.text().await?;
            Ok(text.lines().find_map(|l| {
                l.strip_prefix("headroom_instance_info{instance=\"")
                    .and_then(|rest| rest.split_once('"'))
                    .map(|(id, _)| id.to_owned())
            }))
        },
    )
    .await
    .with_context(|| op.log())
}

/// Both instances run; the one named in the run's `status.driver` drives
/// it. Checks the other never touches it while the driver lives, then
/// SIGKILLs the driver and measures the adoption.
async fn one_driver_then_adoption(
    cluster: &Cluster,
    ns: &TestNamespace,
    mut a: Option<Operator>,
    mut b: Option<Operator>,
) -> Result<()> {
    let (id_a, id_b) = (
        instance_id(a.as_ref().context("a")?).await?,
        instance_id(b.as_ref().context("b")?).await?,
    );
    ensure!(id_a != id_b, "two instances share the identity {id_a}");
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment("kill-one-web", "checkout", json!({ "duration": "120s" }))?,
        )
        .await?;
    let logs = |a: &Option<Operator>, b: &Option<Operator>| {
        format!(
            "--- instance a ---\n{}\n--- instance b ---\n{}",
            a.as_ref().map(Operator::log).unwrap_or_default(),
            b.as_ref().map(Operator::log).unwrap_or_default()
        )
    };
    let run = observing(cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| logs(&a, &b))?;
    let driver = run
        .status
        .as_ref()
        .and_then(|s| s.driver.clone())
        .context("the observing run names no driver")?;
    let a_drives = if driver.instance == id_a {
        true
    } else if driver.instance == id_b {
        false
    } else {
        bail!(
            "the run is driven by {}, neither {id_a} nor {id_b}",
            driver.instance
        );
    };
    let (driver_op, other_op, other_id) = if a_drives {
        (&mut a, &mut b, id_b.clone())
    } else {
        (&mut b, &mut a, id_a.clone())
    };

    // Three leases with both alive: the run stays with its driver, its
    // heartbeat advances, the other instance recovers nothing.
    let mut last_beat = driver.heartbeat_time.0;
    let mut beats = 0;
    let until = Instant::now() + Duration::from_secs_f64(3.0 * LEASE_S);
    while Instant::now() < until {
        // A Gated record (an instance that saw the gate closed before the
        // SLO's first evaluation) started nothing; a second run that is not
        // Gated would be a second fault.
        let every = runs(cluster, &ns.name).await?;
        let all: Vec<&ExperimentRun> = every
            .iter()
            .filter(|r| r.status.as_ref().is_none_or(|s| s.phase != RunPhase::Gated))
            .collect();
        ensure!(
            all.len() == 1,
            "{} runs started: the second instance started another ({})",
            all.len(),
            every
                .iter()
                .map(|r| format!(
                    "{} {:?}",
                    r.name_any(),
                    r.status.as_ref().map(|s| (s.phase, s.reason.clone()))
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let st = all[0].status.clone().context("status")?;
        ensure!(
            st.phase == RunPhase::Observing,
            "run left Observing while its driver lived: {:?} {:?}\n{}",
            st.phase,
            st.reason,
            logs(driver_op, other_op)
        );
        ensure!(
            !st.timeline.iter().any(|t| t.step == "RecoveryStarted"),
            "the other instance recovered a live run"
        );
        let d = st.driver.context("driver")?;
        ensure!(
            d.instance == driver.instance,
            "driver changed to {}",
            d.instance
        );
        if d.heartbeat_time.0 > last_beat {
            beats += 1;
            last_beat = d.heartbeat_time.0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(beats >= 3, "only {beats} heartbeats in three leases");

    // The other instance says that it sees the driver: metric, log, dashboard.
    let other = other_op.as_ref().context("other")?;
    let seen = other
        .metric_values()
        .await?
        .get("headroom_other_instances")
        .copied();
    ensure!(seen == Some(1.0), "headroom_other_instances = {seen:?}");
    ensure!(
        other
            .log()
            .contains("another operator instance is driving a run"),
        "the other instance did not log the driver"
    );
    let page = reqwest::get(other.metrics_url.replace("/metrics", "/"))
        .await?
        .text()
        .await?;
    ensure!(
        page.contains(&format!("data-instance=\"{}\"", driver.instance)),
        "the other instance's dashboard does not list the driver"
    );

    // SIGKILL the driver: no restore on the way out, no last heartbeat.
    let killed_at = now_secs();
    drop(driver_op.take());
    let done = final_run(cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| logs(&a, &b))?;
    let other = if a_drives { &b } else { &a };
    let other = other.as_ref().context("other")?;
    ensure!(done.metadata.uid == run.metadata.uid, "the same run");
    let st = done.status.clone().context("status")?;
    ensure!(st.phase == RunPhase::Aborted, "{:?}", st.phase);
    ensure!(st.restore.as_ref().is_some_and(|r| r.done), "restored");
    ensure!(
        st.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("OperatorRestarted") && r.contains(&driver.instance)),
        "{:?}",
        st.reason
    );
    ensure!(
        st.driver.as_ref().map(|d| d.instance.as_str()) == Some(other_id.as_str()),
        "the adopter is not recorded as the driver: {:?}",
        st.driver
    );
    let kills = st.observations.as_ref().map_or(0, |o| o.killed_pods.len());
    ensure!(
        kills == 1,
        "{kills} pods killed: the adopter injected again"
    );
    let recovery = st
        .timeline
        .iter()
        .find(|t| t.step == "RecoveryStarted")
        .map(|t| t.time.0.as_millisecond() as f64 / 1000.0)
        .context("no RecoveryStarted step")?;
    let delay = recovery - killed_at;
    let adoptions = other
        .metric_values()
        .await?
        .get("headroom_run_adoptions_total")
        .copied();
    ensure!(adoptions == Some(1.0), "run adoptions {adoptions:?}");
    println!(
        "driver {} SIGKILLed; {} adopted the run {delay:.1}s later (lease {LEASE_S}s, renewed every {:.1}s, margin {MARGIN_S}s)",
        driver.instance,
        other_id,
        LEASE_S / 3.0
    );
    // Not before the heartbeat could have run out (the last one is at most
    // a third of a lease old when the driver dies) ...
    ensure!(
        delay >= LEASE_S + MARGIN_S - LEASE_S / 3.0 - 0.5,
        "adopted {delay:.1}s after the kill: before the heartbeat ran out"
    );
    // ... and soon after it did (one 5s requeue at most, plus the claim).
    ensure!(
        delay <= LEASE_S + MARGIN_S + 5.0 + 3.0,
        "adopted only {delay:.1}s after the kill"
    );
    web_ready(cluster, &ns.name).await?;
    Ok(())
}

#[tokio::test]
async fn two_instances_on_one_namespace_one_drives_the_other_adopts_only_after_a_sigkill()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("two-inst").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let args = ["--evaluation-interval", "2s", "--run-lease-duration", "4s"];
    let a = Operator::start_in(&cluster, &ns.name, &args)?;
    let b = Operator::start_in(&cluster, &ns.name, &args)?;
    one_driver_then_adoption(&cluster, &ns, Some(a), Some(b)).await
}

/// Runs alone (`make test` runs it with the disruptive tests): a
/// cluster-wide instance acts on every namespace, other tests' too.
#[tokio::test]
async fn cluster_wide_instance_beside_a_namespaced_one_one_drives_the_other_adopts_only_after_a_sigkill()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("wide-inst").await?;
    let home = cluster.namespace("wide-inst-home").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let args = [
        "--evaluation-interval",
        "2s",
        "--run-lease-duration",
        "4s",
        "--operator-namespace",
        &home.name,
    ];
    let namespaced = Operator::start_in(&cluster, &ns.name, &args)?;
    let wide = Operator::start(&cluster, &args)?;
    one_driver_then_adoption(&cluster, &ns, Some(namespaced), Some(wide)).await
}
