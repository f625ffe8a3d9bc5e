//! What an experiment may make the operator touch: every namespace an
//! action reaches is opted in and not the operator's own, and `host`
//! targets only where `--connection-target-allow` says.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::experiment::{ERRORS, calm, experiment, final_run, runs, set_error_ratio, slo, web};

/// The experiment's `Valid` condition once it says `False`.
async fn refused(
    exps: &Api<ChaosExperiment>,
    name: &str,
    operator: &Operator,
) -> Result<Condition> {
    eventually(
        &format!("experiment {name} refused (Valid=False)"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let e = exps.get(name).await?;
            Ok(e.status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Valid"))
                .filter(|c| c.status == "False"))
        },
    )
    .await
    .with_context(|| operator.log())
}

/// No run of the namespace went past the gate.
async fn nothing_injected(cluster: &Cluster, ns: &str) -> Result<()> {
    for r in runs(cluster, ns).await? {
        let st = r.status.unwrap_or_default();
        ensure!(
            matches!(st.phase, RunPhase::Gated | RunPhase::Failed)
                && st.timeline.iter().all(|t| t.step != "ConnectionsHeld"),
            "run {} reached {:?}: {:?}",
            r.spec.experiment,
            st.phase,
            st.timeline
        );
    }
    Ok(())
}

/// A Service with no selector, so it exists without reaching anything.
fn service(name: &str) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "ports": [{ "port": 5432 }] }
    }))?)
}

/// A namespace that did not opt in, deleted at the end of the test.
struct ClosedNamespace(Api<Namespace>, String);

impl ClosedNamespace {
    async fn create(cluster: &Cluster, name: String) -> Result<Self> {
        let api = Api::<Namespace>::all(cluster.client.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({ "metadata": { "name": name, "labels": { "headroom.dev/test": "e2e" } } }),
            )?,
        )
        .await?;
        Ok(Self(api, name))
    }
}

impl Drop for ClosedNamespace {
    fn drop(&mut self) {
        let (api, name) = (self.0.clone(), self.1.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { api.delete(&name, &DeleteParams::default()).await });
        }
    }
}

#[tokio::test]
async fn connection_exhaustion_refuses_a_service_in_a_namespace_that_did_not_opt_in() -> Result<()>
{
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("scope").await?;
    let home = cluster.namespace("scope-home").await?;
    let closed = ClosedNamespace::create(&cluster, format!("{}-closed", ns.name)).await?;
    for target_ns in [&closed.1, &home.name] {
        Api::<Service>::namespaced(cluster.client.clone(), target_ns)
            .create(&PostParams::default(), &service("pg")?)
            .await?;
    }
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "2s",
            "--operator-namespace",
            &home.name,
        ],
    )?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
    // (experiment, the Service's namespace, reason, what the message must say)
    let cases = [
        (
            "not-opted-in",
            closed.1.clone(),
            "NamespaceNotOptedIn",
            format!(
                "kubectl label namespace {} headroom.dev/chaos=enabled",
                closed.1
            ),
        ),
        (
            "operator-namespace",
            home.name.clone(),
            "NamespaceNotAllowed",
            "the operator's own".to_owned(),
        ),
    ];
    for (name, target_ns, _, _) in &cases {
        exps.create(
            &PostParams::default(),
            &experiment(
                name,
                "checkout",
                json!({
                    "hypothesis": { "recoversWithin": null },
                    "budgetPolicy": { "minBudgetRemaining": 0, "maxBurnRateToStart": 1000 },
                    "action": { "podKill": null, "connectionExhaustion": {
                        "target": { "service": "pg", "namespace": target_ns, "port": 5432 },
                        "connections": 5, "holdFor": "5s"
                    }},
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
    }
    for (name, _, reason, text) in &cases {
        let c = refused(&exps, name, &operator).await?;
        ensure!(
            c.reason == *reason
                && c.message
                    .contains("spec.action.connectionExhaustion.target.namespace")
                && c.message.contains(text.as_str()),
            "case {name}: {c:?}"
        );
        println!("{name}: {} {}", c.reason, c.message);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    nothing_injected(&cluster, &ns.name).await
}

/// A local listener that counts the connections it accepts.
async fn counting_listener() -> Result<(u16, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    Ok((port, accepted))
}

#[tokio::test]
async fn host_targets_are_refused_unless_the_allow_list_covers_their_address() -> Result<()> {
    // The allowed case runs, guarded by the shared service's SLO.
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    let (port, accepted) = counting_listener().await?;
    let wrong_port = port.wrapping_add(1).max(1);
    // (case, --connection-target-allow, target host, refused with this text)
    let cases: [(&str, Option<String>, &str, Option<String>); 4] = [
        (
            "no-allow-list",
            None,
            "127.0.0.1",
            Some("--connection-target-allow, which is empty".to_owned()),
        ),
        (
            "other-network",
            Some(format!("10.0.0.0/8:{port},192.168.0.0/16:{port}")),
            "127.0.0.1",
            Some(format!("127.0.0.1:{port}")),
        ),
        (
            "other-port",
            Some(format!("127.0.0.0/8:{wrong_port}")),
            "127.0.0.1",
            Some(format!("127.0.0.1:{port}")),
        ),
        (
            "host-entry",
            Some(format!("localhost:{port}")),
            "localhost",
            None,
        ),
    ];
    for (case, allow, host, refusal) in cases {
        let ns = cluster.namespace(&format!("allow-{case}")).await?;
        let mut args = vec!["--evaluation-interval", "2s"];
        if let Some(a) = &allow {
            args.extend(["--connection-target-allow", a.as_str()]);
        }
        let operator = Operator::start_in(&cluster, &ns.name, &args)?;
        Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
            .create(&PostParams::default(), &slo("checkout", ERRORS)?)
            .await?;
        let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
        let before = accepted.load(Ordering::SeqCst);
        exps.create(
            &PostParams::default(),
            &experiment(
                "hold",
                "checkout",
                json!({
                    "hypothesis": { "recoversWithin": null },
                    "budgetPolicy": { "minBudgetRemaining": 0, "maxBurnRateToStart": 1000, "abortBurnRate": 1000, "maxBudgetSpend": 100 },
                    "action": { "podKill": null, "connectionExhaustion": {
                        "target": { "host": host, "port": port },
                        "connections": 3, "rampStep": 3, "holdFor": "2s"
                    }},
                    "duration": "20s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
        match refusal {
            Some(text) => {
                let c = refused(&exps, "hold", &operator).await?;
                ensure!(
                    c.reason == "TargetNotAllowed"
                        && c.message
                            .contains("spec.action.connectionExhaustion.target.host")
                        && c.message.contains(&text),
                    "case {case}: {c:?}"
                );
                println!("{case}: {}", c.message);
                tokio::time::sleep(Duration::from_secs(3)).await;
                nothing_injected(&cluster, &ns.name).await?;
                let n = accepted.load(Ordering::SeqCst) - before;
                ensure!(n == 0, "case {case}: the target accepted {n} connections");
            }
            None => {
                let run = final_run(&cluster, &ns.name, Duration::from_secs(60))
                    .await
                    .with_context(|| operator.log())?;
                let st = run.status.context("status")?;
                ensure!(
                    st.phase == RunPhase::Completed,
                    "case {case}: {:?} {:?}\n{}",
                    st.phase,
                    st.reason,
                    operator.log()
                );
                let n = accepted.load(Ordering::SeqCst) - before;
                // The probe and the three held.
                ensure!(n >= 3, "case {case}: the target accepted {n} connections");
                println!("{case}: allowed, {n} connections accepted");
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn scale_down_of_a_deployment_with_two_replicasets_waits_for_available_pods_and_names_each_pods_replicaset()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("two-rs").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    // A rollout paused half-way keeps two ReplicaSets (revisions 1 and 2)
    // with pods in both, and a paused Deployment scales them
    // proportionally, surge included: the pod count is never exactly the
    // replica count. minReadySeconds holds the rollout long enough to
    // pause it, and makes Ready pods wait before they count as available.
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), &ns.name);
    // The old pods must have been Ready for minReadySeconds already.
    tokio::time::sleep(Duration::from_secs(6)).await;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "minReadySeconds": 5,
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } },
                "template": { "metadata": { "annotations": { "example.com/revision": "2" } } }
            } })),
        )
        .await?;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "paused": true } })),
        )
        .await?;
    eventually(
        "a paused rollout with 4 available pods in two ReplicaSets",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let d = deployments.get("web").await?;
            Ok(d.status
                .filter(|s| s.replicas == Some(4) && s.available_replicas == Some(4))
                .map(|_| ()))
        },
    )
    .await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "two-replicasets",
                "checkout",
                json!({
                    "hypothesis": { "description": "scale-down keeps the newest pods", "recoversWithin": null },
                    "action": { "podKill": null, "scaleDown": {
                        "target": { "kind": "Deployment", "name": "web" },
                        "scaleUpTo": 6, "scaleDownTo": 3, "expectOrder": "NewestFirst"
                    }},
                    "duration": "60s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}\n{:?}",
        status.phase,
        status.reason,
        status.timeline
    );
    let obs = status.observations.clone().context("observations")?;
    ensure!(!obs.removed_pods.is_empty(), "nothing removed: {obs:?}");
    let owners: std::collections::BTreeSet<String> = obs
        .removed_pods
        .iter()
        .chain(&obs.surviving_pods)
        .map(|p| p.owner.clone().unwrap_or_default())
        .collect();
    ensure!(
        obs.removed_pods.iter().chain(&obs.surviving_pods).all(|p| p
            .owner
            .as_deref()
            .is_some_and(|o| o.starts_with("ReplicaSet/"))),
        "a pod without its ReplicaSet: {obs:?}"
    );
    ensure!(owners.len() == 2, "owners {owners:?}");
    ensure!(
        obs.removed_pods
            .iter()
            .chain(&obs.surviving_pods)
            .any(|p| p.revision.is_some()),
        "no revision recorded: {obs:?}"
    );
    let restored = status
        .timeline
        .iter()
        .find(|t| t.step == "Restored")
        .and_then(|t| t.message.clone())
        .unwrap_or_default();
    ensure!(
        restored.contains("available") && !restored.contains("after 60s"),
        "restore: {restored}"
    );
    let d = deployments.get("web").await?;
    ensure!(d.spec.and_then(|s| s.replicas) == Some(3));
    println!(
        "two ReplicaSets: removed {}; survived {}; restore: {restored}",
        obs.removed_pods
            .iter()
            .map(|p| format!(
                "{} ({}, rev {})",
                p.name,
                p.owner.as_deref().unwrap_or("?"),
                p.revision.as_deref().unwrap_or("-")
            ))
            .collect::<Vec<_>>()
            .join(", "),
        obs.surviving_pods.len()
    );
    Ok(())
}

/// A StatefulSet `db` of 3 pods on the kwok nodes, its rolling update
/// stopped at a partition so that its pods come from two revisions (ordinals
/// 0 and 1 from the first, 2 and up from the second), as a StatefulSet looks
/// half-way through a careful rollout. Returns (current, update) revisions.
async fn partitioned_statefulset(cluster: &Cluster, ns: &str) -> Result<(String, String)> {
    Api::<Service>::namespaced(cluster.client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "db" },
                "spec": { "clusterIP": "None", "selector": { "app": "db" }, "ports": [{ "port": 5432 }] }
            }))?,
        )
        .await?;
    let sets = Api::<StatefulSet>::namespaced(cluster.client.clone(), ns);
    sets.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "db" },
            "spec": {
                "serviceName": "db",
                "replicas": 3,
                "selector": { "matchLabels": { "app": "db" } },
                "template": {
                    "metadata": { "labels": { "app": "db" } },
                    "spec": {
                        "nodeSelector": { "type": "kwok" },
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{ "name": "db", "image": "headroom.local/db:test" }],
                        "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }]
                    }
                }
            }
        }))?,
    )
    .await?;
    let settled = |want_revisions: usize| {
        let sets = sets.clone();
        async move {
            let st = sets.get("db").await?.status.unwrap_or_default();
            let two = st.current_revision.is_some()
                && st.update_revision.is_some()
                && (st.current_revision != st.update_revision) == (want_revisions == 2);
            Ok((st.available_replicas == Some(3)
                && st.updated_replicas.unwrap_or(0) == if want_revisions == 2 { 1 } else { 3 }
                && two)
                .then(|| {
                    (
                        st.current_revision.unwrap_or_default(),
                        st.update_revision.unwrap_or_default(),
                    )
                }))
        }
    };
    eventually(
        "StatefulSet db with 3 available pods",
        Duration::from_secs(90),
        Duration::from_millis(300),
        || settled(1),
    )
    .await?;
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": {
            "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "partition": 2 } },
            "template": { "metadata": { "annotations": { "example.com/revision": "2" } } }
        } })),
    )
    .await?;
    eventually(
        "StatefulSet db rolled up to its partition: pod db-2 on the new revision",
        Duration::from_secs(90),
        Duration::from_millis(300),
        || settled(2),
    )
    .await
}

#[tokio::test]
async fn scale_down_of_a_statefulset_mid_rollout_waits_for_its_status_and_names_each_pods_revision()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("sts").await?;
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    let (current, update) = partitioned_statefulset(&cluster, &ns.name).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "statefulset",
                "checkout",
                json!({
                    "hypothesis": { "description": "a StatefulSet removes its highest ordinals, the newest pods", "recoversWithin": null },
                    "action": { "podKill": null, "scaleDown": {
                        "target": { "kind": "StatefulSet", "name": "db" },
                        "scaleUpTo": 5, "scaleDownTo": 2, "expectOrder": "NewestFirst"
                    }},
                    "duration": "60s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(150))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}\n{:?}",
        status.phase,
        status.reason,
        status.timeline
    );
    let obs = status.observations.clone().context("observations")?;
    let mut removed: Vec<&str> = obs.removed_pods.iter().map(|p| p.name.as_str()).collect();
    removed.sort_unstable();
    // OrderedReady: the controller removes the highest ordinals, one by one.
    ensure!(
        removed == ["db-2", "db-3", "db-4"],
        "removed {removed:?}: {obs:?}"
    );
    for p in obs.removed_pods.iter().chain(&obs.surviving_pods) {
        ensure!(
            p.owner.as_deref() == Some("StatefulSet/db"),
            "{} owned by {:?}",
            p.name,
            p.owner
        );
        // Ordinals below the partition stay on the first revision.
        let want = if p.name == "db-0" || p.name == "db-1" {
            &current
        } else {
            &update
        };
        ensure!(
            p.revision.as_ref() == Some(want),
            "{} recorded revision {:?}, the StatefulSet says {want}",
            p.name,
            p.revision
        );
    }
    let restored = status
        .timeline
        .iter()
        .find(|t| t.step == "Restored")
        .and_then(|t| t.message.clone())
        .unwrap_or_default();
    ensure!(
        restored.contains("available") && !restored.contains("after 60s"),
        "restore: {restored}"
    );
    let set = Api::<StatefulSet>::namespaced(cluster.client.clone(), &ns.name)
        .get("db")
        .await?;
    ensure!(
        set.spec.and_then(|s| s.replicas) == Some(3),
        "not restored to 3 replicas"
    );
    println!(
        "StatefulSet mid-rollout: removed {}; {} survived; revisions {current} / {update}; restore: {restored}",
        obs.removed_pods
            .iter()
            .map(|p| format!("{} (rev {})", p.name, p.revision.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
            .join(", "),
        obs.surviving_pods.len()
    );
    Ok(())
}

/// One run of the spend-cap scenario and what it recorded.
pub(crate) struct SpendCapOutcome {
    pub phase: RunPhase,
    pub reason: String,
    /// Spent / cap, computed from `status.budget.spent`, so that runs are
    /// comparable with an operator that does not record `spentOfCap`.
    pub ratio: f64,
    /// What the run itself recorded as `status.budget.spentOfCap`.
    pub recorded: Option<f64>,
}

/// The spend cap, in percent of the budget, of [`spend_cap_run`].
pub(crate) const SPEND_CAP_PERCENT: f64 = 40.0;

/// One run that only the spend cap can stop: errors at 35% burn 3.5x, 2.9%
/// of the budget a second and 29% per 10s observation, against a cap of
/// 40%; the burn-rate rule is out of reach. The errors stop when the run
/// aborts, as they would when its fault is undone: what the run spent is
/// then what it let through. Shared by the test and by `make bench`, which
/// repeats it for the overshoot distribution.
pub(crate) async fn spend_cap_run(cluster: &Cluster) -> Result<SpendCapOutcome> {
    set_error_ratio(cluster, 0.0).await?;
    let ns = cluster.namespace("spend-cap").await?;
    web(cluster, &ns).await?;
    calm(cluster).await?;
    let operator = Operator::start_in(cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "spend",
                "checkout",
                json!({
                    "hypothesis": { "recoversWithin": null, "sloHolds": null },
                    "budgetPolicy": { "abortBurnRate": 1000, "maxBudgetSpend": SPEND_CAP_PERCENT },
                    "duration": "90s",
                    "observeInterval": "10s"
                }),
            )?,
        )
        .await?;
    crate::experiment::observing(cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    set_error_ratio(cluster, 0.35).await?;
    let aborted = eventually(
        "the run to abort",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            Ok(runs(cluster, &ns.name).await?.into_iter().find(|r| {
                r.status.as_ref().is_some_and(|s| {
                    s.phase.is_final() || s.timeline.iter().any(|t| t.step == "AbortRequested")
                })
            }))
        },
    )
    .await;
    set_error_ratio(cluster, 0.0).await?;
    aborted.with_context(|| operator.log())?;
    let run = final_run(cluster, &ns.name, Duration::from_secs(90)).await;
    let status = run
        .with_context(|| operator.log())?
        .status
        .context("status")?;
    let budget = status.budget.clone().context("budget")?;
    Ok(SpendCapOutcome {
        phase: status.phase,
        reason: status.reason.clone().unwrap_or_default(),
        ratio: budget.spent.context("spent")? / (SPEND_CAP_PERCENT / 100.0),
        recorded: budget.spent_of_cap,
    })
}

#[tokio::test]
async fn the_spend_cap_stops_a_run_on_its_projected_spend_before_the_cap_is_passed() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    // `make bench` repeats this run for the overshoot distribution.
    let o = spend_cap_run(&cluster).await?;
    println!(
        "{:?}, spent {:.1}% of the budget against a cap of {SPEND_CAP_PERCENT}%: spent/cap {:.2}, spentOfCap {:?} ({})",
        o.phase,
        o.ratio * SPEND_CAP_PERCENT,
        o.ratio,
        o.recorded,
        o.reason
    );
    ensure!(
        o.phase == RunPhase::Aborted && o.reason.starts_with("BudgetSpendProjectedAboveLimit"),
        "{:?}: {}",
        o.phase,
        o.reason
    );
    ensure!(
        o.recorded.is_some_and(|r| (r - o.ratio).abs() < 1e-6),
        "status.budget.spentOfCap {:?}, spent/cap {}",
        o.recorded,
        o.ratio
    );
    ensure!(
        o.ratio <= 1.0,
        "the cap was overshot: spent/cap {:.2}",
        o.ratio
    );
    Ok(())
}
