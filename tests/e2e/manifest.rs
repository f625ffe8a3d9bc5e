//! `manifest` (delegated faults) against the real API server: a built-in
//! kind (a NetworkPolicy that partitions `web`) and a kind from a CRD this
//! test installs, created at injection, marked with the run, deleted at
//! restore, also by the next operator after a crash; refusals name the
//! object.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::experiment::{
    ERRORS, calm, experiment, final_run, observing, set_error_ratio, slo, web,
};

const CREATED_BY: &str = "headroom.dev/created-by";

pub(crate) fn partition() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": "partition-web" },
        "spec": { "podSelector": { "matchLabels": { "app": "web" } }, "policyTypes": ["Ingress"] }
    })
}

pub(crate) fn manifest(name: &str, objects: Value, extra: Value) -> Result<ChaosExperiment> {
    let mut spec = json!({
        "hypothesis": {
            "description": "partitioning web does not burn the checkout budget faster than 1000x",
            "sloHolds": { "maxBurnRate": 1000 },
            "recoversWithin": null
        },
        "action": { "podKill": null, "manifest": { "objects": objects } },
        "duration": "10s",
        "blastRadius": null
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    experiment(name, "checkout", spec)
}

fn network_policies(cluster: &Cluster, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
    ));
    Api::namespaced_with(cluster.client.clone(), ns, &ar)
}

#[tokio::test]
async fn manifest_creates_the_objects_for_the_fault_and_deletes_them_at_restore() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("manifest").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &manifest("partition", json!([partition()]), json!({}))?,
        )
        .await?;
    let run = observing(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    let nps = network_policies(&cluster, &ns.name);
    let np = nps
        .get("partition-web")
        .await
        .context("the NetworkPolicy during the fault")?;
    ensure!(
        np.annotations().get(CREATED_BY) == Some(&format!("{}/{}", ns.name, run.name_any())),
        "{:?}",
        np.annotations()
    );
    let done = final_run(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    let status = done.status.context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}",
        status.phase,
        status.reason
    );
    let plan = status.restore.as_ref().context("plan")?;
    ensure!(
        plan.created_objects.len() == 1 && plan.created_objects[0].name == "partition-web",
        "{:?}",
        plan.created_objects
    );
    let restored = status
        .timeline
        .iter()
        .find(|t| t.step == "Restored")
        .and_then(|t| t.message.clone())
        .unwrap_or_default();
    ensure!(
        restored.contains(&format!("deleted NetworkPolicy {}/partition-web", ns.name)),
        "{restored}"
    );
    ensure!(
        nps.get_opt("partition-web").await?.is_none(),
        "the NetworkPolicy outlived the run"
    );
    Ok(())
}

/// A namespaced CRD standing in for another chaos tool's fault kind.
async fn install_fault_crd(cluster: &Cluster) -> Result<ApiResource> {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "networkfaults.e2e.headroom.dev" },
        "spec": {
            "group": "e2e.headroom.dev",
            "scope": "Namespaced",
            "names": { "plural": "networkfaults", "singular": "networkfault", "kind": "NetworkFault" },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
        }
    }))?;
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    eventually(
        "the NetworkFault CRD established",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let c = crds.get("networkfaults.e2e.headroom.dev").await?;
            Ok(c.status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
                .then_some(()))
        },
    )
    .await?;
    Ok(ApiResource::from_gvk(&GroupVersionKind::gvk(
        "e2e.headroom.dev",
        "v1",
        "NetworkFault",
    )))
}

#[tokio::test]
async fn a_delegated_fault_left_by_a_crash_is_deleted_by_the_next_operator() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ar = install_fault_crd(&cluster).await?;
    let ns = cluster.namespace("manifest-crash").await?;
    let home = cluster.namespace("manifest-crash-home").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let args = crate::experiment::failover_args(&home.name);
    let first = Operator::start_in(&cluster, &ns.name, &args)?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let fault = json!({
        "apiVersion": "e2e.headroom.dev/v1", "kind": "NetworkFault",
        "metadata": { "name": "delay-web" },
        "spec": { "action": "delay", "latency": "200ms", "selector": { "app": "web" } }
    });
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &manifest("delegated", json!([fault]), json!({ "duration": "120s" }))?,
        )
        .await?;
    let run = observing(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| first.log())?;
    let faults: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), &ns.name, &ar);
    ensure!(
        faults.get_opt("delay-web").await?.is_some(),
        "no NetworkFault during the run"
    );
    // SIGKILL: no restore on the way out; the fault stays.
    drop(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        faults.get_opt("delay-web").await?.is_some(),
        "the fault went with the process"
    );
    let second = Operator::start_in(&cluster, &ns.name, &args)?;
    let done = final_run(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| second.log())?;
    ensure!(done.metadata.uid == run.metadata.uid, "another run");
    let status = done.status.context("status")?;
    ensure!(status.phase == RunPhase::Aborted, "{:?}", status.phase);
    let deleted = status
        .timeline
        .iter()
        .find(|t| t.step == "ObjectsDeleted")
        .and_then(|t| t.message.clone())
        .context("no ObjectsDeleted step")?;
    ensure!(
        deleted.contains(&format!("deleted NetworkFault {}/delay-web", ns.name)),
        "{deleted}"
    );
    ensure!(
        faults.get_opt("delay-web").await?.is_none(),
        "the NetworkFault outlived the recovery"
    );
    Ok(())
}

#[tokio::test]
async fn manifest_objects_it_may_not_own_are_refused_naming_the_object() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("manifest-refused").await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    // (experiment, objects, reason of the Valid condition, text of its message)
    let cases = [
        (
            "cluster-scoped",
            json!([{ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": { "name": "x" } }]),
            "InvalidTarget",
            "spec.action.manifest.objects[0]: ClusterRole is cluster-scoped",
        ),
        (
            "unknown-kind",
            json!([partition(), { "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos", "metadata": { "name": "x" } }]),
            "InvalidTarget",
            "spec.action.manifest.objects[1]: the API server does not serve chaos-mesh.org/v1alpha1 NetworkChaos",
        ),
    ];
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
    for (name, objects, _, _) in &cases {
        exps.create(
            &PostParams::default(),
            &manifest(name, objects.clone(), json!({}))?,
        )
        .await?;
    }
    for (name, _, reason, text) in cases {
        let message = crate::experiment::invalid_with(&exps, name, reason, &operator).await?;
        ensure!(message.contains(text), "{name}: {message}");
    }
    // An object that exists already is someone else's: the run is refused
    // before anything is created, and the object is left as it was.
    network_policies(&cluster, &ns.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(partition())?,
        )
        .await?;
    exps.create(
        &PostParams::default(),
        &manifest("existing", json!([partition()]), json!({}))?,
    )
    .await?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.context("status")?;
    ensure!(status.phase == RunPhase::Failed, "{:?}", status.phase);
    let reason = status.reason.unwrap_or_default();
    ensure!(
        reason.contains(&format!(
            "NetworkPolicy {}/partition-web already exists",
            ns.name
        )),
        "{reason}"
    );
    ensure!(
        network_policies(&cluster, &ns.name)
            .get_opt("partition-web")
            .await?
            .is_some(),
        "the existing NetworkPolicy was deleted"
    );
    Ok(())
}
