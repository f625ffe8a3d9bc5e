//! Faults that disturb the whole local cluster: the kube-apiserver is
//! killed and started again. Every client of the cluster sees the outage,
//! so `scripts/test.sh` runs this module alone, after the shared suite
//! (`-- disruptive:: --test-threads=1`), and skips it in the shared run.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::api::core::v1::Pod;
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
