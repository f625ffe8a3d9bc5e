//! The operator's own metrics, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SloLabels {
    pub namespace: String,
    pub slo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WindowLabels {
    pub namespace: String,
    pub slo: String,
    pub window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// Every metric the operator exports.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub phase: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub budget_remaining: Family<SloLabels, Gauge<f64, AtomicU64>>,
    pub burn_rate: Family<WindowLabels, Gauge<f64, AtomicU64>>,
    pub slo_data_present: Family<SloLabels, Gauge>,
    pub evaluation_seconds: Histogram,
    pub prometheus_errors: Counter,
    pub prometheus_queries: Counter,
    pub recorded_rounds: Counter,
    pub recorded_read_seconds: Counter<f64, AtomicU64>,
    pub status_writes: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub runs: Family<RunLabels, Counter>,
    pub gate_decisions: Family<ReasonLabels, Counter>,
    pub abort_latency: Histogram,
    pub active_runs: Gauge,
    pub pods_killed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("headroom");
        let budget_remaining = Family::<SloLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "slo_budget_remaining_ratio",
            "Share of the error budget left over the SLO window (1 untouched, negative overspent)",
            budget_remaining.clone(),
        );
        let burn_rate = Family::<WindowLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "slo_burn_rate",
            "Burn rate of the SLO over a window",
            burn_rate.clone(),
        );
        let slo_data_present = Family::<SloLabels, Gauge>::default();
        registry.register(
            "slo_data_present",
            "1 when Prometheus returned data for every window of the SLO",
            slo_data_present.clone(),
        );
        let evaluation_seconds =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register(
            "slo_evaluation_duration_seconds",
            "Time to evaluate one SLO, Prometheus queries included",
            evaluation_seconds.clone(),
        );
        let prometheus_errors = Counter::default();
        registry.register(
            "prometheus_errors",
            "Prometheus queries that failed or timed out",
            prometheus_errors.clone(),
        );
        let prometheus_queries = Counter::default();
        registry.register(
            "prometheus_queries",
            "Prometheus queries sent",
            prometheus_queries.clone(),
        );
        let recorded_rounds = Counter::default();
        registry.register(
            "recorded_read_rounds",
            "Rounds of reads of the recording rules; a round reads each window at most once for every SLO",
            recorded_rounds.clone(),
        );
        let recorded_read_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "recorded_read_seconds",
            "Time spent reading the recording rules from Prometheus (every SLO's figures for a round)",
            recorded_read_seconds.clone(),
        );
        let status_writes = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "status_writes",
            "Status writes to the Kubernetes API",
            status_writes.clone(),
        );
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that ended in an error",
            reconcile_errors.clone(),
        );
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "experiment_runs",
            "Experiment runs that ended, by final phase and verdict",
            runs.clone(),
        );
        let gate_decisions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "gate_decisions",
            "Gate decisions for due experiments, by reason (Open when allowed)",
            gate_decisions.clone(),
        );
        let abort_latency = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        registry.register(
            "abort_latency_seconds",
            "From the observation that required an abort to the start of the restore",
            abort_latency.clone(),
        );
        let active_runs = Gauge::default();
        registry.register(
            "experiment_runs_active",
            "Runs this process is driving now",
            active_runs.clone(),
        );
        let pods_killed = Counter::default();
        registry.register(
            "pods_killed",
            "Pods deleted by podKill",
            pods_killed.clone(),
        );
        Self {
            registry,
            runs,
            gate_decisions,
            abort_latency,
            active_runs,
            pods_killed,
            budget_remaining,
            burn_rate,
            slo_data_present,
            evaluation_seconds,
            prometheus_errors,
            prometheus_queries,
            recorded_rounds,
            recorded_read_seconds,
            status_writes,
            reconcile_errors,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
