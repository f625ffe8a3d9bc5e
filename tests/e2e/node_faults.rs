//! Node-level faults (zoneOutage) against the real scheduler, ReplicaSet
//! controller and node objects of the local cluster: 3 kwok nodes over two
//! zones (kwok-node-1 and -2 in zone-a, kwok-node-3 in zone-b).
//!
//! These tests cordon nodes every test schedules on, so they run alone
//! (scripts/test.sh runs `node_faults::` in the step without other tests).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::{RunPhase, Verdict};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, TestNamespace, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::experiment::{ERRORS, calm, experiment, final_run, observing, set_error_ratio, slo};

const CORDONED_BY: &str = "headroom.dev/cordoned-by";

/// A Deployment `zoned` of `replicas` on the kwok nodes, optionally with a
/// hard zone spread constraint; waits until every pod is Ready and both
/// zones hold some.
async fn zoned(
    cluster: &Cluster,
    ns: &TestNamespace,
    replicas: i32,
    hard_spread: bool,
) -> Result<()> {
    let spread = if hard_spread {
        json!([{
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": { "matchLabels": { "app": "zoned" } }
        }])
    } else {
        json!([{
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": { "matchLabels": { "app": "zoned" } }
        }])
    };
    Api::<Deployment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "zoned" },
                "spec": {
                    "replicas": replicas,
                    "selector": { "matchLabels": { "app": "zoned" } },
                    "template": {
                        "metadata": { "labels": { "app": "zoned" } },
                        "spec": {
                            "nodeSelector": { "type": "kwok" },
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{ "name": "zoned", "image": "headroom.local/zoned:test" }],
                            "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }],
                            "topologySpreadConstraints": spread
                        }
                    }
                }
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns.name);
    let want = usize::try_from(replicas)?;
    eventually(
        "every zoned pod Ready, over both zones",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=zoned"))
                .await?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && crate::experiment::ready(p))
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            let zone_b = ready.iter().filter(|n| *n == "kwok-node-3").count();
            Ok((ready.len() == want && zone_b > 0 && zone_b < want).then_some(()))
        },
    )
    .await
}

/// A node's cordon state: (unschedulable, the cordon annotation).
async fn cordon_state(cluster: &Cluster, node: &str) -> Result<(bool, Option<String>)> {
    let n = Api::<Node>::all(cluster.client.clone()).get(node).await?;
    Ok((
        n.spec.and_then(|s| s.unschedulable).unwrap_or(false),
        n.metadata
            .annotations
            .and_then(|a| a.get(CORDONED_BY).cloned()),
    ))
}

/// Put a node back as the tests found it: schedulable, unmarked.
async fn uncordon(cluster: &Cluster, node: &str) -> Result<()> {
    let patch = json!({
        "metadata": { "annotations": { CORDONED_BY: null } },
        "spec": { "unschedulable": null }
    });
    Api::<Node>::all(cluster.client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn uncordon_all(cluster: &Cluster) {
    for n in ["kwok-node-1", "kwok-node-2", "kwok-node-3"] {
        let _ = uncordon(cluster, n).await;
    }
}

/// Run a node-fault test: with the checkout lock held (these tests move
/// the pods every test schedules), and with every kwok node uncordoned
/// afterwards whatever the test returned, so a failure leaves no cordon.
async fn on_the_nodes(body: impl AsyncFnOnce(&Cluster) -> Result<()>) -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    let result = body(&cluster).await;
    uncordon_all(&cluster).await;
    result
}

fn zone_outage(name: &str, action: Value, extra: Value) -> Result<ChaosExperiment> {
    let mut spec = json!({
        "hypothesis": {
            "description": "losing a zone does not take checkout down: the other zone takes the pods within 30s",
            "sloHolds": { "maxBurnRate": 1000 },
            "recoversWithin": "30s"
        },
        "action": { "podKill": null, "zoneOutage": action },
        "duration": "15s",
        "blastRadius": null
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    experiment(name, "checkout", spec)
}

async fn setup(cluster: &Cluster, prefix: &str) -> Result<TestNamespace> {
    cluster.install_crds()?;
    uncordon_all(cluster).await;
    let ns = cluster.namespace(prefix).await?;
    set_error_ratio(cluster, 0.0).await?;
    calm(cluster).await?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Ok(ns)
}

#[tokio::test]
async fn zone_outage_moves_the_pods_to_the_zone_left_and_uncordons_only_what_it_cordoned()
-> Result<()> {
    on_the_nodes(async |cluster| {
        let ns = setup(cluster, "zone-outage").await?;
        zoned(cluster, &ns, 4, false).await?;
        // An administrator cordoned kwok-node-2 for their own reasons: the
        // outage leaves it as it is, and so does the restore.
        Api::<Node>::all(cluster.client.clone())
            .patch(
                "kwok-node-2",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": { "unschedulable": true } })),
            )
            .await?;
        let operator = Operator::start_in(cluster, &ns.name, &["--evaluation-interval", "2s"])?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &zone_outage(
                    "lose-zone-a",
                    json!({ "target": { "kind": "Deployment", "name": "zoned" }, "zone": "zone-a", "maxPods": 4 }),
                    json!({}),
                )?,
            )
            .await?;
        // While the fault is in place, zone-a's schedulable node is cordoned
        // and marked with the run.
        let during = observing(cluster, &ns.name, Duration::from_secs(90))
            .await
            .with_context(|| operator.log())?;
        let (cordoned, mark) = cordon_state(cluster, "kwok-node-1").await?;
        ensure!(cordoned, "kwok-node-1 is not cordoned during the outage");
        ensure!(
            mark.as_deref() == Some(format!("{}/{}", ns.name, during.name_any()).as_str()),
            "kwok-node-1 is marked {mark:?}"
        );
        let run = final_run(cluster, &ns.name, Duration::from_secs(90))
            .await
            .with_context(|| operator.log())?;
        let status = run.status.context("status")?;
        ensure!(
            status.phase == RunPhase::Completed,
            "{:?} {:?}\n{:#?}",
            status.phase,
            status.reason,
            status.timeline
        );
        ensure!(
            status.verdict == Some(Verdict::Confirmed),
            "{:?}: {:#?}",
            status.verdict,
            status.expectations
        );
        let plan = status.restore.as_ref().context("restore plan")?;
        ensure!(
            plan.cordoned_nodes == ["kwok-node-1"],
            "the plan names {:?}: kwok-node-2 was cordoned before the run",
            plan.cordoned_nodes
        );
        let obs = status.observations.as_ref().context("observations")?;
        ensure!(obs.zone.as_deref() == Some("zone-a"), "zone {:?}", obs.zone);
        let row = |z: &str| obs.pods_per_zone.iter().find(|r| r.zone == z);
        let a = row("zone-a").context("no zone-a row")?;
        let b = row("zone-b").context("no zone-b row")?;
        ensure!(
            a.before > 0 && a.after == 0 && b.after == 4,
            "pods per zone: {:?}",
            obs.pods_per_zone
        );
        ensure!(obs.reschedule_seconds.is_some(), "no reschedule time: {obs:?}");
        ensure!(obs.recovery_seconds.is_some(), "no recovery time: {obs:?}");
        let deleted = status.timeline.iter().filter(|t| t.step == "PodKilled").count();
        ensure!(
            i32::try_from(deleted)? == a.before,
            "{deleted} pods deleted, {} were in zone-a",
            a.before
        );
        // Restored: exactly kwok-node-1 uncordoned; kwok-node-2 still
        // cordoned, as the administrator left it.
        ensure!(
            cordon_state(cluster, "kwok-node-1").await? == (false, None),
            "kwok-node-1 is still cordoned"
        );
        ensure!(
            cordon_state(cluster, "kwok-node-2").await? == (true, None),
            "the restore touched kwok-node-2, which the run did not cordon"
        );
        println!(
            "zoneOutage zone-a: pods per zone {:?}; rescheduled after {:.1}s, Ready after {:.1}s",
            obs.pods_per_zone
                .iter()
                .map(|r| format!("{} {}→{}", r.zone, r.before, r.after))
                .collect::<Vec<_>>(),
            obs.reschedule_seconds.unwrap_or(f64::NAN),
            obs.recovery_seconds.unwrap_or(f64::NAN)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn zone_outage_with_a_hard_zone_spread_is_refuted_with_the_pending_pods_and_the_schedulers_reason()
-> Result<()> {
    on_the_nodes(async |cluster| {
        let ns = setup(cluster, "zone-spread-outage").await?;
        zoned(cluster, &ns, 4, true).await?;
        let operator = Operator::start_in(cluster, &ns.name, &["--evaluation-interval", "2s"])?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &zone_outage(
                    "lose-zone-b",
                    json!({ "target": { "kind": "Deployment", "name": "zoned" }, "pickZone": "MostPods", "maxPods": 4 }),
                    json!({ "hypothesis": {
                        "description": "the pods of a lost zone come back in the other within 10s",
                        "recoversWithin": "10s"
                    }}),
                )?,
            )
            .await?;
        let run = final_run(cluster, &ns.name, Duration::from_secs(90))
            .await
            .with_context(|| operator.log())?;
        let status = run.status.context("status")?;
        ensure!(status.phase == RunPhase::Completed, "{:?} {:?}", status.phase, status.reason);
        ensure!(
            status.verdict == Some(Verdict::Refuted),
            "{:?}: {:#?}",
            status.verdict,
            status.expectations
        );
        let obs = status.observations.as_ref().context("observations")?;
        ensure!(!obs.pending_pods.is_empty(), "no pending pods recorded: {obs:?}");
        ensure!(
            obs.pending_pods
                .iter()
                .all(|p| p.message.as_deref().is_some_and(|m| m.contains("topology spread"))),
            "the scheduler's reason is not recorded: {:?}",
            obs.pending_pods
        );
        ensure!(obs.reschedule_seconds.is_none(), "rescheduled? {obs:?}");
        let zone = obs.zone.clone().context("zone")?;
        let nodes: Vec<&str> = if zone == "zone-b" {
            vec!["kwok-node-3"]
        } else {
            vec!["kwok-node-1", "kwok-node-2"]
        };
        for n in nodes {
            ensure!(
                cordon_state(cluster, n).await? == (false, None),
                "{n} is still cordoned after the restore"
            );
        }
        println!(
            "zoneOutage {zone} with a hard spread: {} pods Pending: {:?}",
            obs.pending_pods.len(),
            obs.pending_pods.first().and_then(|p| p.message.clone())
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn zone_outage_left_in_flight_by_a_crash_is_uncordoned_by_the_next_operator() -> Result<()> {
    on_the_nodes(async |cluster| {
        let ns = setup(cluster, "zone-crash").await?;
        let home = cluster.namespace("zone-crash-home").await?;
        zoned(cluster, &ns, 2, false).await?;
        let args = crate::experiment::failover_args(&home.name);
        let first = Operator::start_in(cluster, &ns.name, &args)?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &zone_outage(
                    "lose-zone-b",
                    json!({ "target": { "kind": "Deployment", "name": "zoned" }, "zone": "zone-b", "maxPods": 2 }),
                    json!({ "duration": "120s" }),
                )?,
            )
            .await?;
        let run = observing(cluster, &ns.name, Duration::from_secs(90))
            .await
            .with_context(|| first.log())?;
        ensure!(cordon_state(cluster, "kwok-node-3").await?.0, "zone-b not cordoned");
        // SIGKILL: no restore on the way out. The zone stays cordoned.
        drop(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(
            cordon_state(cluster, "kwok-node-3").await?.0,
            "the zone was uncordoned by a process that was killed"
        );
        let second = Operator::start_in(cluster, &ns.name, &args)?;
        let done = final_run(cluster, &ns.name, Duration::from_secs(60))
            .await
            .with_context(|| second.log())?;
        ensure!(done.metadata.uid == run.metadata.uid, "another run");
        let status = done.status.context("status")?;
        ensure!(status.phase == RunPhase::Aborted, "{:?}", status.phase);
        ensure!(status.restore.as_ref().is_some_and(|r| r.done), "not restored");
        ensure!(
            status.timeline.iter().any(|t| t.step == "RecoveryStarted"),
            "{:?}",
            status.timeline
        );
        let uncordoned = status
            .timeline
            .iter()
            .find(|t| t.step == "NodesUncordoned")
            .context("no NodesUncordoned step")?;
        ensure!(
            uncordoned.message.as_deref().is_some_and(|m| m.contains("uncordoned kwok-node-3")),
            "{uncordoned:?}"
        );
        ensure!(
            cordon_state(cluster, "kwok-node-3").await? == (false, None),
            "kwok-node-3 is still cordoned after the recovery"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn zone_outage_above_its_bounds_is_refused_naming_the_field_and_cordons_nothing() -> Result<()>
{
    on_the_nodes(async |cluster| {
        let ns = setup(cluster, "zone-bound").await?;
        zoned(cluster, &ns, 4, false).await?;
        let operator = Operator::start_in(cluster, &ns.name, &["--evaluation-interval", "2s"])?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &zone_outage(
                    "too-wide",
                    json!({ "target": { "kind": "Deployment", "name": "zoned" }, "pickZone": "MostPods", "maxPods": 1 }),
                    json!({}),
                )?,
            )
            .await?;
        let run = final_run(cluster, &ns.name, Duration::from_secs(90))
            .await
            .with_context(|| operator.log())?;
        let status = run.status.context("status")?;
        ensure!(status.phase == RunPhase::Failed, "{:?}", status.phase);
        let reason = status.reason.clone().unwrap_or_default();
        ensure!(
            reason.starts_with("BlastRadiusExceeded: spec.action.zoneOutage.maxPods: zone"),
            "{reason}"
        );
        ensure!(
            !status.timeline.iter().any(|t| t.step == "ZoneCordoned" || t.step == "PodKilled"),
            "something was injected: {:?}",
            status.timeline
        );
        for n in ["kwok-node-1", "kwok-node-2", "kwok-node-3"] {
            ensure!(!cordon_state(cluster, n).await?.0, "{n} was cordoned");
        }
        Ok(())
    })
    .await
}

/// A PodDisruptionBudget for the `zoned` pods.
async fn pdb(cluster: &Cluster, ns: &str, spec: Value) -> Result<()> {
    let mut spec = spec;
    spec["selector"] = json!({ "matchLabels": { "app": "zoned" } });
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(
        cluster.client.clone(),
        ns,
    )
    .create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": { "name": "zoned-pdb" },
            "spec": spec
        }))?,
    )
    .await?;
    Ok(())
}

fn node_drain(name: &str, expect_within: &str, extra: Value) -> Result<ChaosExperiment> {
    let mut spec = json!({
        "hypothesis": {
            "description": "draining zone-b's node for an upgrade evicts every pod within the bound and they are Ready elsewhere within 30s",
            "sloHolds": { "maxBurnRate": 1000 },
            "recoversWithin": "30s"
        },
        "action": { "podKill": null, "nodeDrain": {
            "nodeSelector": { "matchLabels": { "topology.kubernetes.io/zone": "zone-b" } },
            "count": 1, "maxPods": 10, "expectDrainWithin": expect_within
        }},
        // The drain evicts checkout's pod on that node too: its dip in
        // capacity must not abort the run, which is about the budget.
        "budgetPolicy": { "minBudgetRemaining": 10, "maxBurnRateToStart": 1, "abortBurnRate": 1000, "maxBudgetSpend": 90 },
        "duration": "15s",
        "blastRadius": null
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    experiment(name, "checkout", spec)
}

#[tokio::test]
async fn node_drain_evicts_within_its_pdb_and_the_pods_are_ready_elsewhere() -> Result<()> {
    on_the_nodes(async |cluster| {
        let ns = setup(cluster, "node-drain").await?;
        zoned(cluster, &ns, 4, false).await?;
        // One pod at a time may go: the drain waits for each replacement.
        pdb(cluster, &ns.name, json!({ "maxUnavailable": 1 })).await?;
        let operator = Operator::start_in(cluster, &ns.name, &["--evaluation-interval", "2s"])?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(&PostParams::default(), &node_drain("drain-b", "30s", json!({}))?)
            .await?;
        let run = final_run(cluster, &ns.name, Duration::from_secs(90))
            .await
            .with_context(|| operator.log())?;
        let status = run.status.context("status")?;
        ensure!(
            status.phase == RunPhase::Completed && status.verdict == Some(Verdict::Confirmed),
            "{:?} {:?} {:?}: {:#?}\n{:#?}",
            status.phase,
            status.reason,
            status.verdict,
            status.expectations,
            status.timeline
        );
        let obs = status.observations.as_ref().context("observations")?;
        ensure!(obs.drained_nodes == ["kwok-node-3"], "{:?}", obs.drained_nodes);
        let ours: Vec<_> = obs.evictions.iter().filter(|e| e.namespace == ns.name).collect();
        ensure!(
            !ours.is_empty() && ours.iter().all(|e| e.evicted && e.node == "kwok-node-3"),
            "{:?}",
            obs.evictions
        );
        ensure!(obs.drain_seconds.is_some() && obs.recovery_seconds.is_some(), "{obs:?}");
        // None of the namespace's pods is on the drained node any more
        // while it was cordoned; after the restore it is schedulable again.
        ensure!(
            cordon_state(cluster, "kwok-node-3").await? == (false, None),
            "kwok-node-3 is still cordoned"
        );
        println!(
            "nodeDrain kwok-node-3: {} pods evicted ({} refusals on the way), drained after {:.1}s, Ready elsewhere after {:.1}s",
            obs.evictions.len(),
            obs.evictions.iter().map(|e| e.refusals).sum::<i32>(),
            obs.drain_seconds.unwrap_or(f64::NAN),
            obs.recovery_seconds.unwrap_or(f64::NAN)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn node_drain_blocked_by_a_pdb_is_refuted_naming_the_budget() -> Result<()> {
    on_the_nodes(async |cluster| {
        let ns = setup(cluster, "node-drain-pdb").await?;
        zoned(cluster, &ns, 4, false).await?;
        // No pod may go: every eviction is refused with 429.
        pdb(cluster, &ns.name, json!({ "minAvailable": 4 })).await?;
        let operator = Operator::start_in(cluster, &ns.name, &["--evaluation-interval", "2s"])?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &node_drain(
                    "drain-b",
                    "5s",
                    json!({ "hypothesis": { "description": "zone-b's node drains within 5s", "recoversWithin": null } }),
                )?,
            )
            .await?;
        let run = final_run(cluster, &ns.name, Duration::from_secs(90))
            .await
            .with_context(|| operator.log())?;
        let status = run.status.context("status")?;
        ensure!(status.phase == RunPhase::Completed, "{:?} {:?}", status.phase, status.reason);
        let drain = status
            .expectations
            .iter()
            .find(|e| e.name == "expectDrainWithin")
            .context("no expectDrainWithin result")?;
        ensure!(
            drain.result == Verdict::Refuted
                && drain
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("by PodDisruptionBudget zoned-pdb")),
            "{drain:?}"
        );
        let obs = status.observations.as_ref().context("observations")?;
        let ours: Vec<_> = obs.evictions.iter().filter(|e| e.namespace == ns.name).collect();
        ensure!(
            !ours.is_empty()
                && ours.iter().all(|e| !e.evicted
                    && e.refusals >= 5
                    && e.pdb.as_deref() == Some("zoned-pdb")),
            "{ours:?}"
        );
        ensure!(obs.drain_seconds.is_none(), "{obs:?}");
        // Nothing of ours left the node: the budget held.
        let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns.name)
            .list(&ListParams::default().labels("app=zoned"))
            .await?;
        let on_b = pods
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("kwok-node-3"))
            .count();
        ensure!(on_b == ours.len(), "{on_b} pods on kwok-node-3, {} were there", ours.len());
        ensure!(
            cordon_state(cluster, "kwok-node-3").await? == (false, None),
            "kwok-node-3 is still cordoned"
        );
        println!(
            "nodeDrain blocked: {} evictions refused by zoned-pdb over the run",
            ours.iter().map(|e| e.refusals).sum::<i32>()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn node_drain_of_a_node_running_pods_of_a_closed_namespace_is_refused_naming_the_pod()
-> Result<()> {
    on_the_nodes(async |cluster| {
        let ns = setup(cluster, "node-drain-closed").await?;
        // A namespace that did not opt in, with a pod on zone-b's node.
        let closed = format!("{}-closed", ns.name);
        Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({ "metadata": { "name": closed, "labels": { "headroom.dev/test": "e2e" } } }),
                )?,
            )
            .await?;
        let inner = async {
            Api::<Deployment>::namespaced(cluster.client.clone(), &closed)
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": { "name": "bystander" },
                        "spec": {
                            "replicas": 1,
                            "selector": { "matchLabels": { "app": "bystander" } },
                            "template": {
                                "metadata": { "labels": { "app": "bystander" } },
                                "spec": {
                                    "nodeSelector": { "kubernetes.io/hostname": "kwok-node-3" },
                                    "containers": [{ "name": "b", "image": "headroom.local/b:test" }],
                                    "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }]
                                }
                            }
                        }
                    }))?,
                )
                .await?;
            eventually(
                "the bystander pod on kwok-node-3",
                Duration::from_secs(60),
                Duration::from_millis(500),
                || async {
                    let l = Api::<Pod>::namespaced(cluster.client.clone(), &closed)
                        .list(&ListParams::default())
                        .await?;
                    Ok(l.items.iter().any(crate::experiment::ready).then_some(()))
                },
            )
            .await?;
            let operator =
                Operator::start_in(cluster, &ns.name, &["--evaluation-interval", "2s"])?;
            Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
                .create(&PostParams::default(), &node_drain("drain-b", "30s", json!({}))?)
                .await?;
            let run = final_run(cluster, &ns.name, Duration::from_secs(90))
                .await
                .with_context(|| operator.log())?;
            let status = run.status.context("status")?;
            ensure!(status.phase == RunPhase::Failed, "{:?}", status.phase);
            let reason = status.reason.unwrap_or_default();
            ensure!(
                reason.starts_with(&format!(
                    "NamespaceNotOptedIn: spec.action.nodeDrain.nodeSelector: node kwok-node-3 runs pod {closed}/bystander-"
                )),
                "{reason}"
            );
            ensure!(
                !cordon_state(cluster, "kwok-node-3").await?.0,
                "kwok-node-3 was cordoned"
            );
            Ok(())
        }
        .await;
        // Gone before the next test drains the node.
        let _ = cluster.kubectl(&["delete", "namespace", &closed, "--timeout=90s"]);
        inner
    })
    .await
}

#[tokio::test]
async fn node_drain_left_in_flight_by_a_crash_is_uncordoned_by_the_next_operator() -> Result<()> {
    on_the_nodes(async |cluster| {
        let ns = setup(cluster, "drain-crash").await?;
        let home = cluster.namespace("drain-crash-home").await?;
        zoned(cluster, &ns, 2, false).await?;
        // Nothing may be evicted: the drain is still under way at the crash.
        pdb(cluster, &ns.name, json!({ "minAvailable": 2 })).await?;
        let args = crate::experiment::failover_args(&home.name);
        let first = Operator::start_in(cluster, &ns.name, &args)?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &node_drain("drain-b", "60s", json!({ "duration": "120s" }))?,
            )
            .await?;
        let run = observing(cluster, &ns.name, Duration::from_secs(90))
            .await
            .with_context(|| first.log())?;
        ensure!(
            cordon_state(cluster, "kwok-node-3").await?.0,
            "kwok-node-3 not cordoned"
        );
        drop(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(
            cordon_state(cluster, "kwok-node-3").await?.0,
            "the node was uncordoned by a process that was killed"
        );
        let second = Operator::start_in(cluster, &ns.name, &args)?;
        let done = final_run(cluster, &ns.name, Duration::from_secs(60))
            .await
            .with_context(|| second.log())?;
        ensure!(done.metadata.uid == run.metadata.uid, "another run");
        let status = done.status.context("status")?;
        ensure!(status.phase == RunPhase::Aborted, "{:?}", status.phase);
        ensure!(
            status.timeline.iter().any(|t| t.step == "NodesUncordoned"
                && t.message
                    .as_deref()
                    .is_some_and(|m| m.contains("uncordoned kwok-node-3"))),
            "{:?}",
            status.timeline
        );
        ensure!(
            cordon_state(cluster, "kwok-node-3").await? == (false, None),
            "kwok-node-3 is still cordoned after the recovery"
        );
        Ok(())
    })
    .await
}
