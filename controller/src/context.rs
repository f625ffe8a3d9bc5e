//! The context every part of the operator runs with: the API client,
//! Prometheus, metrics, this process's runs and identity. At the bottom of
//! the module graph: the reconcilers, the engine and the dashboard all use
//! it, and it uses none of them.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::prometheus::Prometheus;

/// Everything a reconciler needs, shared by all of them.
pub struct Context {
    pub client: kube::Client,
    pub prometheus: Prometheus,
    pub metrics: Arc<Metrics>,
    /// How often each SLO is re-read from Prometheus.
    pub evaluation_interval: Duration,
    /// Reads every SLO at once from the recording rules; `None` means
    /// direct per-SLO queries only.
    pub recorded: Option<crate::recorded::RecordedCache>,
    /// The one namespace watched, or `None` for all of them.
    pub watch_namespace: Option<String>,
    /// Where the operator runs: never a target, and home of the pause.
    pub operator_namespace: String,
    /// Runs this process is driving.
    pub runs: crate::registry::Registry,
    /// Publishes Kubernetes Events.
    pub recorder: kube::runtime::events::Recorder,
    /// SLO indicators already parsed, per generation.
    pub indicator_checks: crate::indicator::CheckCache,
    /// SLO evaluations reading Prometheus directly at once (recording rules
    /// not loaded yet, or `--direct-queries`): thousands of SLOs falling
    /// back together would flood Prometheus and delay the very rules they
    /// wait for. Gate and run reads do not queue here.
    pub direct_reads: tokio::sync::Semaphore,
    /// This process as a driver of runs (`status.driver`).
    pub instance: crate::run_owner::Instance,
    /// Other instances already reported in the log, each once.
    pub peers_seen: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The process's watch cache of runs; `None` in one-shot commands.
    pub run_cache: Option<kube::runtime::reflector::Store<crate::resources::ExperimentRun>>,
    /// `--connection-target-allow`: what `host` targets may resolve to.
    pub connection_allow: crate::allow_list::AllowList,
    /// Where run notifications go (`--notify-secret`); never awaited by a
    /// run. Disabled in one-shot commands and tests.
    pub notifier: crate::notify::Notifier,
}

impl Context {
    /// An API over the watched namespaces.
    pub fn watched<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        watched(&self.client, self.watch_namespace.as_deref())
    }
}

/// An API over `watch_namespace`, or over all namespaces when it is `None`.
pub fn watched<K>(client: &kube::Client, watch_namespace: Option<&str>) -> kube::Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match watch_namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    }
}

/// Permits of [`Context::direct_reads`].
pub const DIRECT_READS: usize = 8;

/// Field manager name for server-side apply.
pub const MANAGER: &str = "headroom";
