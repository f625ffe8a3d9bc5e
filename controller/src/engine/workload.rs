//! Workloads with a scale subresource: read and set replicas, list pods.

use headroom_experiments::scale_down::WorkloadKind;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use serde_json::json;

/// A workload's replica count and pod selector.
pub struct Workload {
    pub replicas: i32,
    pub selector: Selector,
}

/// Read the workload; `Ok(None)` when it does not exist.
pub async fn get(
    client: &kube::Client,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
) -> Result<Option<Workload>, String> {
    let parts: Option<(Option<i32>, LabelSelector)> = match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|d| d.spec)
            .map(|s| (s.replicas, s.selector)),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|d| d.spec)
            .map(|s| (s.replicas, s.selector)),
        WorkloadKind::ReplicaSet => Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|d| d.spec)
            .map(|s| (s.replicas, s.selector)),
    };
    let Some((replicas, selector)) = parts else {
        return Ok(None);
    };
    let selector = Selector::try_from(selector).map_err(|e| format!("{kind:?} {name}: {e}"))?;
    Ok(Some(Workload {
        replicas: replicas.unwrap_or(1),
        selector,
    }))
}

/// Set replicas through the scale subresource.
pub async fn scale(
    client: &kube::Client,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Result<(), String> {
    let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
    let pp = PatchParams::default();
    let res = match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch_scale(name, &pp, &patch)
            .await
            .map(|_| ()),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch_scale(name, &pp, &patch)
            .await
            .map(|_| ()),
        WorkloadKind::ReplicaSet => Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .patch_scale(name, &pp, &patch)
            .await
            .map(|_| ()),
    };
    res.map_err(|e| format!("scaling {kind:?} {ns}/{name} to {replicas}: {e}"))
}

/// Pods of the workload that are not being deleted.
pub async fn live_pods(api: &Api<Pod>, selector: &Selector) -> Result<Vec<Pod>, String> {
    Ok(api
        .list(&ListParams::default().labels_from(selector))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}
