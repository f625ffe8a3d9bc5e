//! The Deployment's Ready pods and desired replicas, from the API server.
//!
//! Pods are counted directly rather than read from the Deployment's
//! `readyReplicas`, so a killed pod stops counting the moment it starts
//! terminating, before the ReplicaSet controller notices.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Selector;
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Counts shared with the handlers and the database pool.
pub struct PodCounts {
    ready: watch::Sender<u32>,
    desired: AtomicU32,
}

impl Default for PodCounts {
    fn default() -> Self {
        Self {
            ready: watch::Sender::new(0),
            desired: AtomicU32::new(0),
        }
    }
}

impl PodCounts {
    pub fn ready(&self) -> u32 {
        *self.ready.borrow()
    }

    pub fn desired(&self) -> u32 {
        self.desired.load(Ordering::Relaxed)
    }

    /// Notified whenever the Ready count changes.
    pub fn subscribe(&self) -> watch::Receiver<u32> {
        self.ready.subscribe()
    }

    pub fn set_ready(&self, ready: u32) {
        self.ready
            .send_if_modified(|old| std::mem::replace(old, ready) != ready);
    }

    pub fn set_desired(&self, desired: u32) {
        self.desired.store(desired, Ordering::Relaxed);
    }
}

/// A pod that serves: condition Ready=True and not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A client from `--kubeconfig`, which like `KUBECONFIG` may list several
/// files separated by `:`.
pub async fn client(kubeconfig: &str) -> anyhow::Result<Client> {
    let paths: Vec<PathBuf> = std::env::split_paths(kubeconfig)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let mut merged: Option<Kubeconfig> = None;
    for path in &paths {
        let next = Kubeconfig::read_from(path)
            .with_context(|| format!("--kubeconfig: cannot read {}", path.display()))?;
        merged = Some(match merged {
            Some(m) => m.merge(next)?,
            None => next,
        });
    }
    let Some(kubeconfig) = merged else {
        bail!("--kubeconfig is empty");
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| {
            format!(
                "--kubeconfig {}: not a usable kubeconfig",
                paths[0].display()
            )
        })?;
    let server = config.cluster_url.clone();
    let client = Client::try_from(config)
        .with_context(|| format!("--kubeconfig: cannot build a client for {server}"))?;
    // Fail at start, naming the flag, rather than serving 503s forever.
    tokio::time::timeout(Duration::from_secs(15), client.apiserver_version())
        .await
        .map_err(|_| anyhow::anyhow!("timed out after 15s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("--kubeconfig: API server {server} is not reachable"))?;
    Ok(client)
}

/// The Deployment's pod selector; errors name the flags that chose it.
pub async fn selector(
    api: &Api<Deployment>,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Selector> {
    let deployment = match api.get(name).await {
        Ok(d) => d,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            bail!("--deployment {name}: no such Deployment in --namespace {namespace}")
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("--deployment {name} in --namespace {namespace}: cannot read it")
            });
        }
    };
    let selector = deployment
        .spec
        .map(|s| s.selector)
        .with_context(|| format!("Deployment {namespace}/{name} has no spec"))?;
    Selector::try_from(selector)
        .with_context(|| format!("Deployment {namespace}/{name}: unusable pod selector"))
}

/// Keep the Ready count of pods matching `selector` current, forever.
/// A Deployment's selector is immutable, so reading it once is enough.
/// `synced` fires once the first full list is in.
pub async fn watch_pods(
    api: Api<Pod>,
    selector: Selector,
    counts: Arc<PodCounts>,
    metrics: Arc<Metrics>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let mut synced = Some(synced);
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels_from(&selector);
    let mut events = reflector(writer, watcher(api, config).default_backoff()).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if matches!(event, Event::InitDone)
                    && let Some(tx) = synced.take()
                {
                    let _ = tx.send(());
                }
                let ready = store.state().iter().filter(|p| is_ready(p)).count();
                let ready = u32::try_from(ready).unwrap_or(u32::MAX);
                if ready != counts.ready() {
                    info!(ready, "Ready pods changed");
                }
                counts.set_ready(ready);
                metrics.ready_pods(ready);
            }
            // Keep the last known count: the API being away does not
            // mean the pods are.
            Err(e) => warn!(error = %e, "watching pods"),
        }
    }
}

/// Keep the desired replica count current, forever.
pub async fn watch_deployment(
    api: Api<Deployment>,
    name: String,
    counts: Arc<PodCounts>,
    metrics: Arc<Metrics>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config)
        .default_backoff()
        .map_err(|e| e.to_string())
        .boxed();
    while let Some(event) = events.next().await {
        let desired = match event {
            Ok(Event::Apply(d) | Event::InitApply(d)) => {
                d.spec.and_then(|s| s.replicas).unwrap_or(1)
            }
            Ok(Event::Delete(_)) => 0,
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                warn!(error = %e, "watching the Deployment");
                continue;
            }
        };
        let desired = u32::try_from(desired).unwrap_or(0);
        counts.set_desired(desired);
        metrics.desired_replicas(desired);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(conditions: serde_json::Value, deleting: bool) -> Pod {
        let mut meta = serde_json::json!({ "name": "p" });
        if deleting {
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": meta,
            "status": { "conditions": conditions },
        }))
        .expect("test pod is valid")
    }

    #[test]
    fn ready_means_condition_true_and_not_terminating() {
        let ready = serde_json::json!([
            { "type": "PodScheduled", "status": "True" },
            { "type": "Ready", "status": "True" },
        ]);
        assert!(is_ready(&pod(ready.clone(), false)));
        assert!(
            !is_ready(&pod(ready, true)),
            "terminating pods do not serve"
        );
        let not_ready = serde_json::json!([
            { "type": "PodScheduled", "status": "True" },
            { "type": "Ready", "status": "False" },
        ]);
        assert!(!is_ready(&pod(not_ready, false)));
        assert!(!is_ready(&pod(serde_json::json!([]), false)));
        assert!(!is_ready(&Pod::default()), "no status yet");
    }

    #[test]
    fn ready_count_notifies_only_on_change() {
        let counts = PodCounts::default();
        let mut rx = counts.subscribe();
        counts.set_ready(0);
        assert!(!rx.has_changed().unwrap_or(true));
        counts.set_ready(3);
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(*rx.borrow_and_update(), 3);
    }
}
