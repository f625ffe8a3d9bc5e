//! The experiment engine: the gate decision for an experiment now, and
//! the runs themselves. A run is driven by one loop (`driver`) shared by
//! every action (`actions`), through one state machine (`state`), into one
//! record (`record`); `observe` watches the guarding SLOs beside the fault.
//!
//! The import graph runs one way: `driver` → `actions` → `observe`,
//! `record`, `state`, `workload`, `connections`, `support`.

pub mod actions;
pub mod checks;
pub mod connections;
pub mod driver;
pub mod heartbeat;
pub mod nodes;
pub mod observe;
pub mod record;
pub mod scope;
pub mod state;
pub mod support;
pub mod workload;

#[cfg(test)]
mod driver_tests;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;

pub use crate::registry::{ActiveRun, Registry};
pub use support::{key, now, now_micro};

use crate::budget::TierPlan;
use crate::context::Context;
use crate::gate::{self, Decision, GateInput, Policy, SloReading};
use crate::resources::experiment::{ChaosExperiment, ChaosExperimentSpec};
use crate::resources::run::{GateRecord, SloSnapshot};
use crate::resources::slo::ServiceLevelObjective;
use crate::slo_reader::{Freshness, assess, tier_plans};

/// What a fault touches; two runs never hold the same target at once.
pub fn target_key(exp: &ChaosExperiment) -> String {
    target_key_of(&exp.namespace().unwrap_or_default(), &exp.spec)
}

/// [`target_key`] of an experiment in `ns` with `spec` (a run's snapshot,
/// for runs other instances drive).
pub fn target_key_of(ns: &str, spec: &ChaosExperimentSpec) -> String {
    actions::spec_of(&spec.action).target_key(ns)
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
        (live && target_key_of(&ns, &run.spec.snapshot) == target).then_some(run_key)
    })
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
                        status: Box::new(status),
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
            reason: crate::reasons::RefuseReason::KubernetesApiError
                .as_str()
                .into(),
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
    let tier = crate::budget::abort_tier(tiers)?;
    Some((tier.short, policy.abort_burn_rate.unwrap_or(tier.threshold)))
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
}
