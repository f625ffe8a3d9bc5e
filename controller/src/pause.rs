//! The global pause: a ConfigMap named `headroom-pause` in the operator's
//! namespace. While it exists no experiment starts and running ones abort
//! and restore. One kubectl command sets it and one clears it:
//!
//! ```text
//! kubectl -n headroom-system create configmap headroom-pause --from-literal=reason="incident 42"
//! kubectl -n headroom-system delete configmap headroom-pause
//! ```
//!
//! (`headroom pause` / `headroom resume` do the same.) A ConfigMap rather
//! than a custom resource so that the pause works even when Headroom's CRDs
//! are broken or being upgraded.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};

/// Name of the pause ConfigMap.
pub const NAME: &str = "headroom-pause";

/// `Some(why)` while the pause is set. An unreadable pause counts as set:
/// a doubt closes the gate.
pub async fn state(client: &kube::Client, namespace: &str) -> Option<String> {
    read(client, namespace).await.unwrap_or_else(|e| {
        Some(format!(
            "cannot read ConfigMap {namespace}/{NAME}, so the pause is assumed set: {e}"
        ))
    })
}

/// The pause as the API server has it: `Ok(Some(why))` while set.
pub async fn read(client: &kube::Client, namespace: &str) -> Result<Option<String>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    Ok(match api.get_opt(NAME).await? {
        None => None,
        Some(cm) => {
            let data = cm.data.unwrap_or_default();
            let reason = data
                .get("reason")
                .cloned()
                .unwrap_or_else(|| "no reason given".into());
            let by = data
                .get("by")
                .map(|b| format!(" (by {b})"))
                .unwrap_or_default();
            Some(format!("ConfigMap {namespace}/{NAME}: {reason}{by}"))
        }
    })
}

/// Set the pause; setting it twice keeps the first reason.
pub async fn set(
    client: &kube::Client,
    namespace: &str,
    reason: &str,
    by: &str,
) -> Result<bool, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": NAME,
            "labels": { "app.kubernetes.io/managed-by": "headroom" }
        },
        "data": { "reason": reason, "by": by }
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Clear the pause; clearing it when not set is fine.
pub async fn clear(client: &kube::Client, namespace: &str) -> Result<bool, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.delete(NAME, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}
