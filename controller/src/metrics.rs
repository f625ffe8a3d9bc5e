//! The operator's own metrics, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::resources::experiment::ChaosExperiment;
use crate::resources::slo::ServiceLevelObjective;

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
pub struct InstanceLabels {
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// Budget, burn rates and data presence per SLO.
    pub slo_gauges: Arc<SloGauges>,
    /// The last verdict per experiment.
    pub experiment_gauges: Arc<ExperimentGauges>,
    pub evaluation_seconds: Histogram,
    /// Wall time of each SLO evaluation cycle (`cycles.rs`).
    pub slo_cycles: Arc<crate::cycles::CycleTimer>,
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
    /// 1, labelled with this process's instance identity (`status.driver`).
    pub instance_info: Family<InstanceLabels, Gauge>,
    /// Other instances seen driving runs with a live heartbeat.
    pub other_instances: Gauge,
    /// Runs adopted after their driver's heartbeat ran out.
    pub run_adoptions: Counter,
    /// Notifications by result, and their retries.
    pub notifications: crate::notify::NotifyMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        // Not in the registry: rendered in pieces after it (see `render_chunks`).
        let slo_gauges = Arc::new(SloGauges::default());
        let experiment_gauges = Arc::new(ExperimentGauges::default());
        registry.register_collector(Box::new(experiment_gauges.clone()));
        let evaluation_seconds =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register(
            "slo_evaluation_duration_seconds",
            "Time to evaluate one SLO, Prometheus queries included",
            evaluation_seconds.clone(),
        );
        let slo_cycles = Arc::new(crate::cycles::CycleTimer::default());
        registry.register(
            "slo_cycle_duration_seconds",
            "Wall time of one evaluation cycle: from the start of the first SLO evaluation of a burst to the end of its last (status writes included)",
            slo_cycles.seconds.clone(),
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
        let instance_info = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "instance_info",
            "This operator process; its instance label is what runs it drives record in status.driver",
            instance_info.clone(),
        );
        let other_instances = Gauge::default();
        registry.register(
            "other_instances",
            "Other operator instances this process sees driving runs with a live heartbeat",
            other_instances.clone(),
        );
        let run_adoptions = Counter::default();
        registry.register(
            "run_adoptions",
            "Runs this process adopted and restored after their driver's heartbeat ran out",
            run_adoptions.clone(),
        );
        let notifications = crate::notify::NotifyMetrics::default();
        registry.register(
            "notifications",
            "Run notifications per webhook by result: delivered, failed (refused, no answer, or retries exhausted) or dropped (a queue was full)",
            notifications.results.clone(),
        );
        registry.register(
            "notification_retries",
            "Notification attempts retried after a connection error or a 408, 429 or 5xx answer",
            notifications.retries.clone(),
        );
        Self {
            notifications,
            instance_info,
            other_instances,
            run_adoptions,
            registry,
            runs,
            gate_decisions,
            abort_latency,
            active_runs,
            pods_killed,
            slo_gauges,
            experiment_gauges,
            evaluation_seconds,
            slo_cycles,
            prometheus_errors,
            prometheus_queries,
            recorded_rounds,
            recorded_read_seconds,
            status_writes,
            reconcile_errors,
        }
    }
}

/// The prefix of every metric name.
const PREFIX: &str = "headroom";

/// SLOs per piece of the per-SLO gauges: about 40 KB of text per family.
const SLOS_PER_CHUNK: usize = 500;

impl Metrics {
    /// The text exposition format, whole.
    pub fn render(&self) -> String {
        self.render_chunks().collect()
    }

    /// The text exposition format in pieces, for a streamed answer: the
    /// per-SLO gauges are rendered a few hundred SLOs at a time as the
    /// answer is sent. Whole, they were the largest thing the process
    /// allocated at ten thousand SLOs (12 MiB per scrape, examples/memory.rs).
    pub fn render_chunks(&self) -> impl Iterator<Item = String> + Send + 'static {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut head = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut head, &self.registry);
        // A follower, which evaluates nothing, exports no SLO families.
        let served = self.slo_gauges.slos.get();
        let families: &'static [SloFamily] = if served.is_some() {
            &SloFamily::ALL
        } else {
            &[]
        };
        let mut slos = served.map(Store::state).unwrap_or_default();
        // A stable order, so that consecutive scrapes diff cleanly.
        slos.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let slos = Arc::new(slos);
        let pieces = families.iter().copied().flat_map(move |family| {
            let slos = slos.clone();
            let chunks = slos.len().div_ceil(SLOS_PER_CHUNK).max(1);
            (0..chunks).map(move |i| {
                let end = slos.len().min((i + 1) * SLOS_PER_CHUNK);
                let chunk = slos.get(i * SLOS_PER_CHUNK..end).unwrap_or_default();
                family_text(family, chunk, i == 0)
            })
        });
        let mut eof = String::new();
        let _ = encode_eof(&mut eof);
        std::iter::once(head)
            .chain(pieces)
            .chain(std::iter::once(eof))
    }
}

/// One per-SLO gauge family over `slos`, as prometheus_client writes it:
/// its `# HELP` and `# TYPE` lines only in the family's first piece.
fn family_text(family: SloFamily, slos: &[Arc<ServiceLevelObjective>], first: bool) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(SloChunk {
        family,
        slos: slos.to_vec(),
    }));
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode_registry(&mut text, &registry);
    if first {
        text
    } else {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| [l, "\n"])
            .collect()
    }
}

/// The per-SLO gauge families.
#[derive(Clone, Copy, Debug)]
enum SloFamily {
    BudgetRemaining,
    BurnRate,
    DataPresent,
}

impl SloFamily {
    const ALL: [Self; 3] = [Self::BudgetRemaining, Self::BurnRate, Self::DataPresent];
}

/// One family's series for some SLOs.
#[derive(Debug)]
struct SloChunk {
    family: SloFamily,
    slos: Vec<Arc<ServiceLevelObjective>>,
}

/// The per-SLO gauges (`slo_budget_remaining_ratio`, `slo_burn_rate`,
/// `slo_data_present`), rendered at scrape time from the SLOs' status in
/// the watch cache. The status holds exactly the figures of the last
/// evaluation (it is written whenever one changes), so a gauge family
/// beside it would only be a second copy: ten labelled series per SLO, the
/// largest part of the operator's memory at ten thousand SLOs.
#[derive(Debug, Default)]
pub struct SloGauges {
    /// Set when this process starts evaluating SLOs (the leader), so that
    /// followers, which evaluate nothing, export nothing.
    slos: OnceLock<Store<ServiceLevelObjective>>,
}

impl SloGauges {
    /// Export the figures of the SLOs in `store` from now on.
    pub fn serve(&self, store: Store<ServiceLevelObjective>) {
        // A second call (a new leadership term in the same process) would
        // pass the same store.
        let _ = self.slos.set(store);
    }
}

impl Collector for SloChunk {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let evaluated = || {
            self.slos.iter().filter_map(|slo| {
                let status = slo.status.as_ref()?;
                let ns = slo.metadata.namespace.as_deref().unwrap_or_default();
                let name = slo.metadata.name.as_deref().unwrap_or_default();
                Some((ns, name, status))
            })
        };
        match self.family {
            SloFamily::BudgetRemaining => {
                let mut family = encoder.encode_descriptor(
                    "slo_budget_remaining_ratio",
                    "Share of the error budget left over the SLO window (1 untouched, negative overspent)",
                    None,
                    MetricType::Gauge,
                )?;
                for (ns, name, status) in evaluated() {
                    if let Some(r) = status.budget_remaining {
                        family
                            .encode_family(&[("namespace", ns), ("slo", name)])?
                            .encode_gauge(&r)?;
                    }
                }
            }
            SloFamily::BurnRate => {
                let mut family = encoder.encode_descriptor(
                    "slo_burn_rate",
                    "Burn rate of the SLO over a window",
                    None,
                    MetricType::Gauge,
                )?;
                for (ns, name, status) in evaluated() {
                    for w in &status.burn_rates {
                        if let Some(br) = w.burn_rate {
                            family
                                .encode_family(&[
                                    ("namespace", ns),
                                    ("slo", name),
                                    ("window", w.window.as_str()),
                                ])?
                                .encode_gauge(&br)?;
                        }
                    }
                }
            }
            SloFamily::DataPresent => {
                let mut family = encoder.encode_descriptor(
                    "slo_data_present",
                    "1 when Prometheus returned data for every window of the SLO",
                    None,
                    MetricType::Gauge,
                )?;
                for (ns, name, status) in evaluated() {
                    family
                        .encode_family(&[("namespace", ns), ("slo", name)])?
                        .encode_gauge(&i64::from(status.data_present))?;
                }
            }
        }
        Ok(())
    }
}

/// `experiment_running{namespace, experiment}`: 1 while a run is in flight.
/// `experiment_last_verdict{namespace, experiment, verdict}`: 1 for each
/// experiment whose runs have reached a verdict, labelled with the last one.
/// The `HeadroomHypothesisRefuted` alert (`headroom rules`) fires on
/// `verdict="Refuted"`; a later confirming run clears it. Rendered at scrape
/// time from the experiments' status in the watch cache, like the SLO
/// gauges: one series per experiment, gone with the experiment.
#[derive(Debug, Default)]
pub struct ExperimentGauges {
    experiments: OnceLock<Store<ChaosExperiment>>,
}

impl ExperimentGauges {
    /// Export the verdicts of the experiments in `store` from now on.
    pub fn serve(&self, store: Store<ChaosExperiment>) {
        let _ = self.experiments.set(store);
    }
}

impl Collector for ExperimentGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(store) = self.experiments.get() else {
            return Ok(());
        };
        let experiments = store.state();
        let mut running: Vec<(&str, &str)> = experiments
            .iter()
            .filter(|e| {
                e.status.as_ref().and_then(|s| s.phase)
                    == Some(crate::resources::experiment::ExperimentPhase::Running)
            })
            .map(|e| {
                (
                    e.metadata.namespace.as_deref().unwrap_or_default(),
                    e.metadata.name.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        running.sort_unstable();
        let mut family = encoder.encode_descriptor(
            "experiment_running",
            "1 per experiment with a run in flight (a fault may be in place): for Grafana annotations on any panel",
            None,
            MetricType::Gauge,
        )?;
        for (ns, name) in running {
            family
                .encode_family(&[("namespace", ns), ("experiment", name)])?
                .encode_gauge(&1i64)?;
        }
        let mut verdicts: Vec<(String, String, String)> = experiments
            .iter()
            .filter_map(|e| {
                let verdict = e.status.as_ref()?.last_verdict.clone()?;
                Some((
                    e.metadata.namespace.clone().unwrap_or_default(),
                    e.metadata.name.clone().unwrap_or_default(),
                    verdict,
                ))
            })
            .collect();
        verdicts.sort();
        let mut family = encoder.encode_descriptor(
            "experiment_last_verdict",
            "1 per experiment, labelled with the verdict of its last finished run",
            None,
            MetricType::Gauge,
        )?;
        for (ns, name, verdict) in &verdicts {
            family
                .encode_family(&[
                    ("namespace", ns.as_str()),
                    ("experiment", name.as_str()),
                    ("verdict", verdict.as_str()),
                ])?
                .encode_gauge(&1i64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn slo(name: &str, status: Option<serde_json::Value>) -> ServiceLevelObjective {
        let mut obj = serde_json::json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ServiceLevelObjective",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": {
                "service": "checkout", "objective": 99.9, "window": "30d",
                "indicator": { "ratio": { "errors": "e[$window]", "total": "t[$window]" } }
            }
        });
        if let Some(status) = status {
            obj["status"] = status;
        }
        serde_json::from_value(obj).expect("valid SLO")
    }

    #[test]
    fn slo_gauges_in_pieces_make_one_document() {
        let m = Metrics::default();
        let (store, mut writer) = reflector::store();
        // Three pieces per family.
        let n = SLOS_PER_CHUNK * 2 + 1;
        for i in 0..n {
            writer.apply_watcher_event(&Event::Apply(slo(
                &format!("s{i:04}"),
                Some(serde_json::json!({
                    "budgetRemaining": 0.5, "dataPresent": true,
                    "burnRates": [{ "window": "5m", "burnRate": 1.5 }]
                })),
            )));
        }
        m.slo_gauges.serve(store);
        assert!(m.render_chunks().count() >= 3 * 3, "pieces");
        let text = m.render();
        for family in [
            "slo_budget_remaining_ratio",
            "slo_burn_rate",
            "slo_data_present",
        ] {
            let help = format!("# HELP headroom_{family} ");
            let kind = format!("# TYPE headroom_{family} gauge");
            assert_eq!(text.matches(&help).count(), 1, "{family}");
            assert_eq!(text.matches(&kind).count(), 1, "{family}");
            let series = format!("\nheadroom_{family}{{");
            assert_eq!(text.matches(&series).count(), n, "{family}");
            // Each family's series follow its own descriptor, together.
            let first = text.find(&series).expect("series");
            let last = text.rfind(&series).expect("series");
            let described = text.find(&kind).expect("type line");
            assert!(described < first, "{family}");
            assert!(
                !text[first..last].contains("# TYPE"),
                "{family}: interleaved"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{}", &text[text.len() - 50..]);
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn slo_gauges_show_the_cached_status_once_this_process_evaluates() {
        let m = Metrics::default();
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Apply(slo(
            "b",
            Some(serde_json::json!({
                "budgetRemaining": -0.25,
                "dataPresent": true,
                "burnRates": [{ "window": "5m", "burnRate": 2.5 }, { "window": "1h" }]
            })),
        )));
        writer.apply_watcher_event(&Event::Apply(slo("a", None)));
        // A follower evaluates nothing, so it exports no SLO figures.
        assert!(!m.render().contains("headroom_slo_budget_remaining_ratio{"));
        m.slo_gauges.serve(store);
        let text = m.render();
        for line in [
            r#"headroom_slo_budget_remaining_ratio{namespace="shop",slo="b"} -0.25"#,
            r#"headroom_slo_burn_rate{namespace="shop",slo="b",window="5m"} 2.5"#,
            r#"headroom_slo_data_present{namespace="shop",slo="b"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // A window without a figure has no series, and neither has an SLO
        // not evaluated yet.
        assert!(!text.contains(r#"window="1h""#), "{text}");
        assert!(!text.contains(r#"slo="a""#), "{text}");

        // The next status written is the next scrape's figures.
        writer.apply_watcher_event(&Event::Apply(slo(
            "b",
            Some(serde_json::json!({ "budgetRemaining": 0.5, "dataPresent": false })),
        )));
        let text = m.render();
        assert!(
            text.contains(r#"headroom_slo_budget_remaining_ratio{namespace="shop",slo="b"} 0.5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"headroom_slo_data_present{namespace="shop",slo="b"} 0"#),
            "{text}"
        );
        assert!(!text.contains("headroom_slo_burn_rate{"), "{text}");
    }

    #[test]
    fn experiment_gauges_show_running_runs_and_the_last_verdict() {
        let m = Metrics::default();
        let (store, mut writer) = reflector::store();
        let exp = |name: &str, status: serde_json::Value| {
            serde_json::from_value::<ChaosExperiment>(serde_json::json!({
                "apiVersion": "headroom.dev/v1alpha1", "kind": "ChaosExperiment",
                "metadata": { "name": name, "namespace": "shop" },
                "spec": {
                    "hypothesis": { "description": "h" }, "slos": ["s"],
                    "action": { "podKill": { "selector": { "matchLabels": { "app": "web" } } } }
                },
                "status": status
            }))
            .expect("valid experiment")
        };
        writer.apply_watcher_event(&Event::Apply(exp(
            "db",
            serde_json::json!({ "phase": "Running", "lastVerdict": "Refuted" }),
        )));
        writer.apply_watcher_event(&Event::Apply(exp(
            "web",
            serde_json::json!({ "phase": "Idle", "lastVerdict": "Confirmed" }),
        )));
        writer.apply_watcher_event(&Event::Apply(exp("new", serde_json::json!({}))));
        m.experiment_gauges.serve(store);
        let text = m.render();
        for line in [
            r#"headroom_experiment_running{namespace="shop",experiment="db"} 1"#,
            r#"headroom_experiment_last_verdict{namespace="shop",experiment="db",verdict="Refuted"} 1"#,
            r#"headroom_experiment_last_verdict{namespace="shop",experiment="web",verdict="Confirmed"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Idle experiments are not running; one never run has no verdict.
        assert!(
            !text.contains(r#"headroom_experiment_running{namespace="shop",experiment="web"}"#),
            "{text}"
        );
        assert!(!text.contains(r#"experiment="new""#), "{text}");
    }
}
