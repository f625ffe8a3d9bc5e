//! Workloads with a scale subresource: read and set replicas, list pods.

use headroom_experiments::scale_down::WorkloadKind;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Selector;
use serde_json::json;

use super::support::{RETRY_FOR, retry};
use crate::resources::run::WorkloadRestore;

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

/// What a workload's controller reports about its pods: enough to know
/// when a scale has taken effect without assuming an exact pod count (a
/// rollout in progress has surge pods and several ReplicaSets; a paused
/// one keeps them; `minReadySeconds` makes Ready pods not yet available).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The controller has seen the latest spec (observedGeneration).
    pub observed: bool,
    /// Replicas asked for (`spec.replicas`).
    pub desired: i32,
    /// Pods that exist for it, old ReplicaSets' and surge included
    /// (`status.replicas`).
    pub current: i32,
    /// Pods Ready for at least `minReadySeconds` (`status.availableReplicas`).
    pub available: i32,
}

impl Rollout {
    /// Scaled to `want` and at least that many pods available. More is
    /// fine: surge pods of a rollout are counted, not waited away.
    pub fn available_at(&self, want: i32) -> bool {
        self.observed && self.desired == want && self.available >= want
    }

    /// Scaled down to `want` and the pods beyond it gone, except surge
    /// pods the rollout had before (`surge`), which the controller may keep.
    pub fn shrunk_to(&self, want: i32, surge: i32) -> bool {
        self.observed && self.desired == want && self.current <= want + surge.max(0)
    }
}

/// Read the workload's rollout state; `Ok(None)` when it does not exist.
pub async fn rollout(
    client: &kube::Client,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
) -> Result<Option<Rollout>, String> {
    fn make(
        generation: Option<i64>,
        observed: Option<i64>,
        desired: Option<i32>,
        current: Option<i32>,
        available: Option<i32>,
    ) -> Rollout {
        Rollout {
            observed: observed.unwrap_or(0) >= generation.unwrap_or(0),
            desired: desired.unwrap_or(1),
            current: current.unwrap_or(0),
            available: available.unwrap_or(0),
        }
    }
    let e = |e: kube::Error| e.to_string();
    Ok(match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(e)?
            .map(|d| {
                let st = d.status.unwrap_or_default();
                make(
                    d.metadata.generation,
                    st.observed_generation,
                    d.spec.and_then(|s| s.replicas),
                    st.replicas,
                    st.available_replicas,
                )
            }),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(e)?
            .map(|d| {
                let st = d.status.unwrap_or_default();
                make(
                    d.metadata.generation,
                    st.observed_generation,
                    d.spec.and_then(|s| s.replicas),
                    Some(st.replicas),
                    st.available_replicas,
                )
            }),
        WorkloadKind::ReplicaSet => Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(e)?
            .map(|d| {
                let st = d.status.unwrap_or_default();
                make(
                    d.metadata.generation,
                    st.observed_generation,
                    d.spec.and_then(|s| s.replicas),
                    Some(st.replicas),
                    st.available_replicas,
                )
            }),
    })
}

/// The controller that owns a pod and the revision it was made from: the
/// ReplicaSet and its Deployment revision, or the StatefulSet and its
/// controller revision. Owners already read are kept in `cache`.
pub async fn owner_revision(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
    cache: &mut std::collections::BTreeMap<String, Option<String>>,
) -> (Option<String>, Option<String>) {
    let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    else {
        return (None, None);
    };
    let revision = match owner.kind.as_str() {
        "ReplicaSet" => {
            if let Some(r) = cache.get(&owner.name) {
                r.clone()
            } else {
                let r = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                    .get_opt(&owner.name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|rs| {
                        rs.metadata
                            .annotations
                            .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned())
                    });
                cache.insert(owner.name.clone(), r.clone());
                r
            }
        }
        "StatefulSet" => pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("controller-revision-hash").cloned()),
        _ => None,
    };
    (Some(format!("{}/{}", owner.kind, owner.name)), revision)
}

/// Set a workload back to its saved replica count, retried while the API
/// server is away: an outage (a restart) must not leave the workload at
/// the fault's count.
pub async fn set_back(client: &kube::Client, w: &WorkloadRestore) -> Result<(), String> {
    retry("restoring the replica count", RETRY_FOR, || {
        scale(client, w.kind, &w.namespace, &w.name, w.replicas)
    })
    .await
}

/// Undo a replica change from the saved plan and wait (bounded) until the
/// controller reports the pods available. `Ok` is the timeline's message.
pub async fn restore_replicas(
    client: &kube::Client,
    w: &WorkloadRestore,
) -> Result<String, String> {
    set_back(client, w).await?;
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = None;
    while tokio::time::Instant::now() < until {
        // Read errors only mean "not known yet": the replica count is back.
        if let Ok(Some(r)) = rollout(client, w.kind, &w.namespace, &w.name).await {
            if r.available_at(w.replicas) {
                return Ok(format!(
                    "{:?} {}/{} back to {} replicas, {} available",
                    w.kind, w.namespace, w.name, w.replicas, r.available
                ));
            }
            last = Some(r);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Ok(format!(
        "{:?} {}/{} set back to {} replicas ({} available after 60s)",
        w.kind,
        w.namespace,
        w.name,
        w.replicas,
        last.map_or_else(|| "none known".to_owned(), |r| r.available.to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(observed: bool, desired: i32, current: i32, available: i32) -> Rollout {
        Rollout {
            observed,
            desired,
            current,
            available,
        }
    }

    #[test]
    fn scaled_up_waits_for_available_pods_not_an_exact_count() {
        // (case, state, wanted, settled)
        let cases = [
            ("exactly", r(true, 8, 8, 8), 8, true),
            ("a surge pod beside them", r(true, 8, 9, 9), 8, true),
            (
                "two ReplicaSets of a paused rollout",
                r(true, 8, 10, 10),
                8,
                true,
            ),
            (
                "Ready but within minReadySeconds",
                r(true, 8, 8, 7),
                8,
                false,
            ),
            ("the scale not seen yet", r(false, 8, 8, 8), 8, false),
            ("the spec says another count", r(true, 6, 8, 8), 8, false),
        ];
        for (name, state, want, ok) in cases {
            assert_eq!(state.available_at(want), ok, "{name}");
        }
    }

    #[test]
    fn scaled_down_allows_the_surge_the_rollout_had() {
        // (case, state, wanted, surge before, settled)
        let cases = [
            ("all gone", r(true, 3, 3, 3), 3, 0, true),
            ("still removing", r(true, 3, 5, 3), 3, 0, false),
            ("a surge pod kept", r(true, 3, 4, 4), 3, 1, true),
            ("the surge scaled down too", r(true, 3, 3, 3), 3, 1, true),
            ("not seen yet", r(false, 3, 3, 3), 3, 0, false),
        ];
        for (name, state, want, surge, ok) in cases {
            assert_eq!(state.shrunk_to(want, surge), ok, "{name}");
        }
    }
}
