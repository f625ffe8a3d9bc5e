//! The operator installed in the cluster from `deploy/`
//! (tests/cluster/manifests/operator: deploy/ with the image
//! tests/cluster/operator-image.sh built and imported, on the real node): two
//! replicas as processes in pods, with deploy/'s ServiceAccount, RBAC, security
//! context and in-cluster configuration (the Service default/kubernetes), one
//! holding the Lease `headroom`. Killing the leader mid-run is the failover
//! an SRE fears: another instance (the other replica, or the killed one's
//! container restarted by kubelet, whichever leads first) adopts the run and
//! restores what the dead one left in place.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use headroom::resources::ExperimentRun;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, eventually, repo_root};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::experiment::ready;
use crate::real_actions::{NS, calm_callers, clean_up, experiment, final_run_of, slo};
use crate::real_node::{container, host_pid_of};

const SYSTEM: &str = "headroom-system";
const OVERLAY: &str = "tests/cluster/manifests/operator";

async fn set_load_rps(rps: u32) -> Result<()> {
    reqwest::Client::new()
        .post("http://127.0.0.1:28082/admin/load-rps")
        .body(rps.to_string())
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn holder(cluster: &Cluster) -> Result<Option<String>> {
    Ok(Api::<Lease>::namespaced(cluster.client.clone(), SYSTEM)
        .get_opt("headroom")
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

#[tokio::test]
async fn deploy_runs_in_the_cluster_and_a_killed_leaders_run_is_restored_by_another_instance()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let image = std::process::Command::new(repo_root().join("tests/cluster/operator-image.sh"))
        .output()
        .context("running tests/cluster/operator-image.sh")?;
    ensure!(
        image.status.success(),
        "tests/cluster/operator-image.sh failed: {}",
        String::from_utf8_lossy(&image.stderr)
    );
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), SYSTEM);
    // A Deployment left by an earlier run has pods of an older image of the
    // same tag: start from none.
    if deployments.get_opt("headroom").await?.is_some() {
        deployments
            .delete("headroom", &DeleteParams::default().grace_period(0))
            .await?;
    }
    let overlay = repo_root().join(OVERLAY);
    let applied = cluster.kubectl(&["apply", "-k", &overlay.display().to_string()])?;
    ensure!(
        applied.status.success(),
        "kubectl apply -k {OVERLAY}: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let result = failover(&cluster).await;
    let _ = set_load_rps(30).await;
    let _ = deployments
        .delete("headroom", &DeleteParams::default().grace_period(0))
        .await;
    result
}

async fn failover(cluster: &Cluster) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), SYSTEM);
    let selector = ListParams::default().labels("app.kubernetes.io/name=headroom");
    let replicas = eventually(
        "deploy/'s 2 operator replicas Ready on the real node",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let list: Vec<Pod> = pods
                .list(&selector)
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
                .collect();
            Ok((list.len() == 2).then_some(list))
        },
    )
    .await?;
    let names: Vec<String> = replicas
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for p in &replicas {
        let name = p.metadata.name.clone().unwrap_or_default();
        let on = p.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(on.as_deref() == Some("real-0"), "{name} runs on {on:?}");
        let (id, _, _) = container(p).with_context(|| format!("{name}: no container"))?;
        host_pid_of(&id, b"/headroom")
            .with_context(|| format!("{name}: no /headroom process on the host"))?;
    }
    let leader = eventually(
        "one replica to hold the Lease headroom",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async { Ok(holder(cluster).await?.filter(|h| names.contains(h))) },
    )
    .await?;

    // Half the load: checkout at 1 replica then still serves it all, so the
    // budget gates nothing while the fault is held.
    set_load_rps(15).await?;
    calm_callers(cluster).await?;
    let suffix = rand::random::<u32>() % 1_000_000;
    let (exp_name, slo_name) = (
        format!("failover-{suffix:06}"),
        format!("callers-{suffix:06}"),
    );
    let mut exp = experiment(
        &exp_name,
        &slo_name,
        json!({ "scaleDown": {
            "target": { "kind": "Deployment", "name": "checkout" },
            "scaleUpTo": 3, "scaleDownTo": 1, "expectOrder": "NewestFirst"
        } }),
        "checkout at one replica serves half its load",
    )?;
    exp.spec.duration = "120s".into();
    exp.spec.hypothesis.checks.clear();
    // Created once nothing before can fail, so a failed test leaves no SLO.
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), NS)
        .create(&PostParams::default(), &slo(&slo_name)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), NS)
        .create(&PostParams::default(), &exp)
        .await?;
    let outcome = kill_the_leader_mid_run(cluster, &exp_name, &leader, &names).await;
    // The surviving replica lifts the experiment's finalizer.
    clean_up(cluster, &exp_name, &slo_name).await;
    outcome
}

async fn kill_the_leader_mid_run(
    cluster: &Cluster,
    exp_name: &str,
    leader: &str,
    names: &[String],
) -> Result<()> {
    let runs: Api<ExperimentRun> = Api::namespaced(cluster.client.clone(), NS);
    let checkout: Api<Deployment> = Api::namespaced(cluster.client.clone(), NS);
    eventually(
        "the in-cluster leader's run observing with checkout at 1 replica",
        Duration::from_secs(150),
        Duration::from_millis(500),
        || async {
            let observing = runs
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|r| {
                    r.spec.experiment == exp_name
                        && r.status
                            .as_ref()
                            .is_some_and(|s| s.phase == RunPhase::Observing)
                });
            let replicas = checkout
                .get("checkout")
                .await?
                .spec
                .and_then(|s| s.replicas);
            Ok((observing && replicas == Some(1)).then_some(()))
        },
    )
    .await?;
    // A crash, not a shutdown: SIGKILL to the leader's process on the host
    // (deleting the pod would send SIGTERM first, and the operator restores
    // its own runs on SIGTERM). kubelet restarts the container.
    let pod = Api::<Pod>::namespaced(cluster.client.clone(), SYSTEM)
        .get(leader)
        .await?;
    let (id, _, _) = container(&pod).with_context(|| format!("{leader}: no container"))?;
    let pid = host_pid_of(&id, b"/headroom").with_context(|| format!("{leader}: no process"))?;
    let killed = Instant::now();
    let out = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "kill -KILL {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = final_run_of(cluster, exp_name).await?;
    let restored = killed.elapsed();
    // Whoever leads now: the other replica, or the killed one's container
    // restarted by kubelet (same pod name) if it came back first.
    let new_leader = holder(cluster).await?.unwrap_or_default();
    let status = run.status.context("status")?;
    ensure!(
        status.restore.as_ref().is_some_and(|r| r.done),
        "{:?} {:?}: restore {:?}",
        status.phase,
        status.reason,
        status.restore
    );
    ensure!(
        status.phase == RunPhase::Aborted
            && status
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("OperatorRestarted")),
        "{:?} {:?}",
        status.phase,
        status.reason
    );
    let replicas = checkout
        .get("checkout")
        .await?
        .spec
        .and_then(|s| s.replicas);
    ensure!(
        replicas == Some(2),
        "checkout has {replicas:?} replicas after the restore"
    );
    println!(
        "in-cluster failover: SIGKILL to leader {leader}'s process (pid {pid}); the run ended {:?} \
         ({:?}) with checkout back at 2 replicas {:.1}s after the kill; the Lease is now held by \
         {new_leader} ({})",
        status.phase,
        status.reason,
        restored.as_secs_f64(),
        if names.contains(&new_leader) && new_leader != leader {
            "the other replica"
        } else {
            "the killed one's pod, its container restarted by kubelet"
        }
    );
    Ok(())
}
