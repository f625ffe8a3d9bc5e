//! The experiment engine: the gate decision, the runs in flight, and the
//! loop that injects, observes, aborts and restores (`driver`).

pub mod connections;
pub mod driver;
pub mod heartbeat;
pub mod scope;
mod staged;
pub mod workload;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::ResourceExt;
use kube::api::Api;
use tokio::sync::watch;

use crate::budget::TierPlan;
use crate::gate::{self, Decision, GateInput, Policy, SloReading};
use crate::reconcile::Context;
use crate::reconcile::slo::{Freshness, assess, tier_plans};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{GateRecord, SloSnapshot};
use crate::resources::slo::{ServiceLevelObjective, Severity};

/// How long a restore step or a run's final record is retried while the API
/// server does not answer (a restart, an upgrade, a network cut). Past
/// injection, giving up early would leave a fault in place or a run that
/// looks unfinished.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(600);

/// Retry `op` with exponential backoff (0.5s to 10s) for up to `total`,
/// logging each failure with `what`. The last error is returned.
pub(crate) async fn retry<T, E, F, Fut>(what: &str, total: Duration, op: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    use backon::{ExponentialBuilder, Retryable};
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_total_delay(Some(total))
        .without_max_times();
    op.retry(policy)
        .sleep(tokio::time::sleep)
        .notify(|e: &E, after: Duration| {
            tracing::warn!(error = %e, retry_in = ?after, "{what} failed; retrying");
        })
        .await
}

/// A run this process is driving.
pub struct ActiveRun {
    /// `namespace/experiment`.
    pub experiment: String,
    /// What the fault touches (see [`target_key`]).
    pub target: String,
    /// Send a reason to make the run abort and restore.
    pub abort: watch::Sender<Option<String>>,
}

impl ActiveRun {
    /// Ask the run to abort; the first reason given is the one it keeps.
    fn ask_abort(&self, why: &str) {
        self.abort.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(why.to_owned());
            }
            first
        });
    }
}

/// The runs in flight in this process, keyed by `namespace/run`.
#[derive(Default)]
pub struct Registry {
    runs: Mutex<HashMap<String, ActiveRun>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ActiveRun>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a run; `false` when it is already being driven.
    pub fn insert(&self, key: String, run: ActiveRun) -> bool {
        let mut runs = self.lock();
        if runs.contains_key(&key) {
            return false;
        }
        runs.insert(key, run);
        true
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Runs of one experiment (`namespace/name`).
    pub fn of_experiment(&self, experiment: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, r)| r.experiment == experiment)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The run holding `target`, if any.
    pub fn holder(&self, target: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, r)| r.target == target)
            .map(|(k, _)| k.clone())
    }

    /// Ask every run of `experiment` to abort.
    pub fn abort_experiment(&self, experiment: &str, why: &str) {
        for run in self.lock().values().filter(|r| r.experiment == experiment) {
            run.ask_abort(why);
        }
    }

    /// Ask one run (`namespace/run`) to abort.
    pub fn abort(&self, run: &str, why: &str) {
        if let Some(r) = self.lock().get(run) {
            r.ask_abort(why);
        }
    }

    /// Ask every run to abort (the operator is stopping).
    pub fn abort_all(&self, why: &str) {
        for run in self.lock().values() {
            run.ask_abort(why);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a fault touches; two runs never hold the same target at once.
pub fn target_key(exp: &ChaosExperiment) -> String {
    target_key_of(
        &exp.namespace().unwrap_or_default(),
        &exp.name_any(),
        &exp.spec,
    )
}

/// [`target_key`] of an experiment `name` in `ns` with `spec` (a run's
/// snapshot, for runs other instances drive).
pub fn target_key_of(
    ns: &str,
    name: &str,
    spec: &crate::resources::experiment::ChaosExperimentSpec,
) -> String {
    let ns = ns.to_owned();
    let a = &spec.action;
    if let Some(pk) = &a.pod_kill {
        let sel = headroom_experiments::pod_kill::live::selector(pk)
            .map(|s| s.to_string())
            .unwrap_or_default();
        format!(
            "pods/{}/{sel}",
            pk.namespace.as_deref().unwrap_or(ns.as_str())
        )
    } else if let Some(sd) = &a.scale_down {
        format!(
            "workload/{:?}/{}/{}",
            sd.target.kind,
            sd.target.namespace.as_deref().unwrap_or(ns.as_str()),
            sd.target.name
        )
    } else if let Some(ce) = &a.connection_exhaustion {
        match &ce.target {
            Some(t) => format!(
                "connections/{}/{}",
                t.host
                    .clone()
                    .or_else(|| t.service.clone())
                    .unwrap_or_default(),
                t.port
            ),
            None => format!(
                "clients/{}",
                ce.clients.as_ref().map(|c| c.name.as_str()).unwrap_or("")
            ),
        }
    } else {
        format!("none/{ns}/{name}")
    }
}

/// The run (`namespace/run`) holding `target`: one this process drives, or
/// an unfinished one in the watch cache driven by another live instance.
pub fn target_holder(ctx: &Context, target: &str) -> Option<String> {
    if let Some(mine) = ctx.runs.holder(target) {
        return Some(mine);
    }
    let cache = ctx.run_cache.as_ref()?;
    let now = k8s_openapi::jiff::Timestamp::now();
    cache.state().iter().find_map(|run| {
        let status = run.status.as_ref();
        if status.is_some_and(|s| s.phase.is_final()) {
            return None;
        }
        let ns = run.namespace().unwrap_or_default();
        let run_key = key(&ns, &run.name_any());
        if ctx.runs.contains(&run_key) {
            return None;
        }
        let live = matches!(
            crate::run_owner::holder_of(run, &ctx.instance, now),
            crate::run_owner::Holder::Live { .. }
        );
        (live && target_key_of(&ns, &run.spec.experiment, &run.spec.snapshot) == target)
            .then_some(run_key)
    })
}

/// The namespace the fault lands in: where the experiment's action points,
/// else the experiment's own.
pub fn target_namespace(exp: &ChaosExperiment) -> String {
    let own = exp.namespace().unwrap_or_default();
    let a = &exp.spec.action;
    a.pod_kill
        .as_ref()
        .and_then(|p| p.namespace.clone())
        .or_else(|| {
            a.scale_down
                .as_ref()
                .and_then(|s| s.target.namespace.clone())
        })
        .or_else(|| {
            a.connection_exhaustion
                .as_ref()
                .and_then(|c| c.clients.as_ref())
                .and_then(|c| c.namespace.clone())
        })
        .unwrap_or(own)
}

/// `namespace/name` of an object.
pub fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The gate for an experiment now, with the SLO figures it used.
pub struct GateOutcome {
    pub decision: Decision,
    pub record: GateRecord,
}

/// Evaluate the gate: fresh figures for each guarding SLO, the pause, and
/// the runs in flight.
pub async fn evaluate_gate(
    ctx: &Context,
    exp: &ChaosExperiment,
    freshness: Freshness,
) -> GateOutcome {
    let ns = exp.namespace().unwrap_or_default();
    let api: Api<ServiceLevelObjective> = Api::namespaced(ctx.client.clone(), &ns);
    let mut readings = Vec::new();
    let mut snapshots = Vec::new();
    let mut lookup_error = None;
    for name in &exp.spec.slos {
        match api.get_opt(name).await {
            Ok(None) => readings.push((name.clone(), SloReading::Missing)),
            Ok(Some(slo)) => {
                let status = assess(&slo, ctx, freshness).await;
                let short_windows: Vec<String> = tier_plans(&slo)
                    .map(|(_, tiers)| {
                        let mut w: Vec<String> = tiers
                            .iter()
                            .map(|t| crate::duration::format_duration(t.short))
                            .collect();
                        w.dedup();
                        w
                    })
                    .unwrap_or_default();
                let short_burn = status
                    .burn_rates
                    .iter()
                    .filter(|b| short_windows.contains(&b.window))
                    .filter_map(|b| b.burn_rate)
                    .fold(None, |acc: Option<f64>, b| {
                        Some(acc.map_or(b, |a| a.max(b)))
                    });
                snapshots.push(SloSnapshot {
                    name: name.clone(),
                    objective: slo.spec.objective,
                    window: slo.spec.window.clone(),
                    budget_remaining: status.budget_remaining,
                    short_burn_rate: short_burn,
                });
                readings.push((
                    name.clone(),
                    SloReading::Evaluated {
                        status,
                        short_windows,
                    },
                ));
            }
            Err(e) => {
                lookup_error = Some(format!("reading ServiceLevelObjective {name}: {e}"));
                break;
            }
        }
    }
    let paused = crate::pause::state(&ctx.client, &ctx.operator_namespace).await;
    let target = target_key(exp);
    let decision = match lookup_error {
        Some(message) => Decision {
            open: false,
            reason: "KubernetesApiError".into(),
            message,
        },
        None => gate::decide(&GateInput {
            slos: &readings,
            policy: Policy::from_spec(&exp.spec.budget_policy),
            paused,
            target_held_by: target_holder(ctx, &target),
        }),
    };
    let record = GateRecord {
        open: decision.open,
        reason: decision.reason.clone(),
        message: Some(decision.message.clone()),
        decided_at: Some(now()),
        slos: snapshots,
    };
    GateOutcome { decision, record }
}

/// The abort rule for one SLO: the window it watches and the burn rate
/// that aborts. The default threshold is the fastest page tier's, watched
/// on that tier's short window, as the design asks.
pub fn abort_rule(tiers: &[TierPlan], policy: &Policy) -> Option<(Duration, f64)> {
    let fastest_page = tiers
        .iter()
        .filter(|t| t.severity == Severity::Page)
        .max_by(|a, b| a.threshold.total_cmp(&b.threshold))
        .or_else(|| {
            tiers
                .iter()
                .max_by(|a, b| a.threshold.total_cmp(&b.threshold))
        })?;
    Some((
        fastest_page.short,
        policy.abort_burn_rate.unwrap_or(fastest_page.threshold),
    ))
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::experiment::BudgetPolicy;

    #[test]
    fn abort_rule_defaults_to_the_fastest_page_tier() {
        let tiers = crate::budget::default_tiers(Duration::from_secs(30 * 24 * 3600));
        let policy = Policy::from_spec(&BudgetPolicy::default());
        let (window, at) = abort_rule(&tiers, &policy).expect("page tiers");
        assert_eq!(window, Duration::from_secs(300));
        assert!((at - 14.4).abs() < 1e-9);
        let policy = Policy::from_spec(&BudgetPolicy {
            abort_burn_rate: Some(6.0),
            ..Default::default()
        });
        assert_eq!(
            abort_rule(&tiers, &policy),
            Some((Duration::from_secs(300), 6.0))
        );
    }

    #[test]
    fn registry_aborts_only_the_experiment_asked() {
        let reg = Registry::default();
        let (tx_a, rx_a) = watch::channel(None);
        let (tx_b, rx_b) = watch::channel(None);
        assert!(reg.insert(
            "ns/a-1".into(),
            ActiveRun {
                experiment: "ns/a".into(),
                target: "pods/ns/app=a".into(),
                abort: tx_a,
            }
        ));
        assert!(reg.insert(
            "ns/b-1".into(),
            ActiveRun {
                experiment: "ns/b".into(),
                target: "pods/ns/app=b".into(),
                abort: tx_b,
            }
        ));
        let (tx_dup, _) = watch::channel(None);
        assert!(!reg.insert(
            "ns/a-1".into(),
            ActiveRun {
                experiment: "ns/a".into(),
                target: "x".into(),
                abort: tx_dup,
            }
        ));
        reg.abort_experiment("ns/a", "experiment deleted");
        assert_eq!(rx_a.borrow().as_deref(), Some("experiment deleted"));
        assert_eq!(*rx_b.borrow(), None);
        assert_eq!(reg.holder("pods/ns/app=b").as_deref(), Some("ns/b-1"));
        reg.remove("ns/b-1");
        assert_eq!(reg.holder("pods/ns/app=b"), None);
    }
}
