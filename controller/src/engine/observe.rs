//! Watching the guarding SLOs while a fault is in place: each guard's
//! burn rate over its abort window and the budget the run has spent, read
//! every `observeInterval`; the first abort rule that fires ends the fault.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::budget;
use crate::context::Context;
use crate::duration::format_duration;
use crate::gate::{self, GuardReading, Policy};
use crate::indicator;
use crate::reasons::{Abort, AbortReason};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::slo::ServiceLevelObjective;
use crate::slo_reader::tier_plans;

use super::abort_rule;
use super::checks::Checks;

/// A guarding SLO and its abort rule.
pub struct Guard {
    pub name: String,
    pub slo: ServiceLevelObjective,
    pub period: Duration,
    pub window: String,
    pub abort_at: f64,
}

pub async fn load_guards(
    ctx: &Context,
    exp: &ChaosExperiment,
    policy: &Policy,
) -> Result<Vec<Guard>, String> {
    let ns = exp.namespace().unwrap_or_default();
    let api: Api<ServiceLevelObjective> = Api::namespaced(ctx.client.clone(), &ns);
    let mut guards = Vec::new();
    for name in &exp.spec.slos {
        let slo = api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading SLO {name}: {e}"))?
            .ok_or_else(|| format!("spec.slos: ServiceLevelObjective {name} does not exist"))?;
        let (period, tiers) = tier_plans(&slo).map_err(|e| format!("SLO {name}: {e}"))?;
        let (window, abort_at) = abort_rule(&tiers, policy)
            .ok_or_else(|| format!("SLO {name} has no burn-rate tier"))?;
        guards.push(Guard {
            name: name.clone(),
            slo,
            period,
            window: format_duration(window),
            abort_at,
        });
    }
    Ok(guards)
}

/// Read every guard: burn rate over its abort window and, once the run is
/// long enough to measure, the budget spent since the fault.
pub async fn read_guards(
    ctx: &Context,
    guards: &[Guard],
    elapsed: Duration,
) -> Result<Vec<GuardReading>, String> {
    let mut out = Vec::with_capacity(guards.len());
    for g in guards {
        let objective = g.slo.spec.objective;
        let q = indicator::window_queries(&g.slo.spec.indicator, &g.window)
            .map_err(|e| e.to_string())?;
        let ratio = ctx.prometheus.scalar(&q.error_ratio).await.map_err(|e| {
            ctx.metrics.prometheus_errors.inc();
            e.to_string()
        })?;
        // Below ten seconds a rate over the run has too few samples to mean
        // anything; the burn-rate rule covers that stretch.
        let spent = if elapsed >= Duration::from_secs(10) {
            let w = format_duration(Duration::from_secs(elapsed.as_secs()));
            let q =
                indicator::window_queries(&g.slo.spec.indicator, &w).map_err(|e| e.to_string())?;
            let e = ctx.prometheus.scalar(&q.error_ratio).await.map_err(|e| {
                ctx.metrics.prometheus_errors.inc();
                e.to_string()
            })?;
            e.map(|e| {
                budget::spent(
                    e,
                    objective,
                    Duration::from_secs(elapsed.as_secs()),
                    g.period,
                )
            })
        } else {
            None
        };
        out.push(GuardReading {
            slo: g.name.clone(),
            window: g.window.clone(),
            burn_rate: ratio.map(|r| budget::burn_rate(r, objective)),
            abort_at: g.abort_at,
            spent,
            projected: None,
        });
    }
    Ok(out)
}

/// One observation of a run in flight: the guards' burn rates and spend,
/// then the global pause. `Some((reason, message))` means abort. A pause
/// that cannot be read (the API server is away) is a doubt, and a doubt
/// stops the fault.
pub async fn abort_check(
    ctx: &Context,
    guards: &[Guard],
    max_budget_spend: f64,
    elapsed: Duration,
    next_in: Duration,
    seen: &mut Seen,
) -> Option<Abort> {
    let mut readings = read_guards(ctx, guards, elapsed).await;
    if let Ok(r) = &mut readings {
        seen.project(r, guards, elapsed, next_in);
        seen.note(r);
        seen.latest = r.clone();
    }
    if let Some(abort) = gate::abort_reason(&readings, max_budget_spend) {
        return Some(abort);
    }
    let ns = &ctx.operator_namespace;
    match crate::pause::read(&ctx.client, ns).await {
        Ok(None) => None,
        Ok(Some(why)) => Some(Abort::new(AbortReason::GlobalPause, why)),
        Err(e) => Some(Abort::new(
            AbortReason::KubernetesApiUnavailable,
            format!(
                "the global pause (ConfigMap {ns}/{}) cannot be read: {e}",
                crate::pause::NAME
            ),
        )),
    }
}

/// What the observation loop has seen so far.
#[derive(Default)]
pub struct Seen {
    pub max_burn: BTreeMap<String, Option<f64>>,
    pub spent: BTreeMap<String, f64>,
    /// Each guard's spend at the previous observation, for its pace.
    last_spend: BTreeMap<String, gate::SpendPoint>,
    /// The last observation's readings, projections included (they pace
    /// the next one).
    pub latest: Vec<GuardReading>,
    /// The checks beyond the burn rate, sampled at every observation.
    pub checks: Checks,
}

impl Seen {
    /// Fill in each reading's projected spend at the next observation,
    /// `next_in` from now, and remember this observation's spend.
    pub fn project(
        &mut self,
        readings: &mut [GuardReading],
        guards: &[Guard],
        elapsed: Duration,
        next_in: Duration,
    ) {
        for r in readings.iter_mut() {
            let Some(period) = guards.iter().find(|g| g.name == r.slo).map(|g| g.period) else {
                continue;
            };
            let start = gate::SpendPoint {
                elapsed: Duration::ZERO,
                spent: 0.0,
            };
            let previous = self.last_spend.get(&r.slo).copied().unwrap_or(start);
            // Before the spend is measurable the burn rate alone paces it.
            let now = gate::SpendPoint {
                elapsed,
                spent: r.spent.unwrap_or(previous.spent),
            };
            r.projected = Some(gate::projected_spend(
                now,
                if r.spent.is_some() { previous } else { now },
                r.burn_rate,
                period,
                next_in,
            ));
            if r.spent.is_some() {
                self.last_spend.insert(r.slo.clone(), now);
            }
        }
    }

    pub fn note(&mut self, readings: &[GuardReading]) {
        for r in readings {
            let entry = self.max_burn.entry(r.slo.clone()).or_insert(None);
            if let Some(b) = r.burn_rate {
                *entry = Some(entry.map_or(b, |m: f64| m.max(b)));
            }
            if let Some(s) = r.spent {
                self.spent.insert(r.slo.clone(), s);
            }
        }
    }
}

/// Watch the guarding SLOs every `observe_every` until an abort rule fires;
/// the abort carries the time it was detected (for the reaction metric).
pub async fn observe(
    ctx: &Context,
    guards: &[Guard],
    policy: Policy,
    started: Instant,
    observe_every: Duration,
    seen: &mut Seen,
) -> (Abort, Instant) {
    let mut next = started + observe_every;
    loop {
        tokio::time::sleep_until(next).await;
        let tick = Instant::now();
        if let Some(abort) = abort_check(
            ctx,
            guards,
            policy.max_budget_spend,
            started.elapsed(),
            observe_every,
            seen,
        )
        .await
        {
            return (abort, tick);
        }
        if let Some(abort) = seen.checks.sample(ctx).await {
            return (abort, tick);
        }
        let next_in = gate::next_observation(&seen.latest, policy.max_budget_spend, observe_every);
        if next_in < observe_every {
            tracing::debug!(
                next_in = ?next_in,
                readings = ?seen.latest,
                "the run is spending fast: next observation sooner"
            );
        }
        next += next_in;
    }
}

/// Resolves when the run is told to stop (suspend, deletion, shutdown).
pub async fn interrupted(abort_rx: &mut watch::Receiver<Option<String>>) -> (Abort, Instant) {
    loop {
        if let Some(why) = abort_rx.borrow_and_update().clone() {
            return (Abort::new(AbortReason::Interrupted, why), Instant::now());
        }
        if abort_rx.changed().await.is_err() {
            return (
                Abort::new(AbortReason::Interrupted, "the operator is shutting down"),
                Instant::now(),
            );
        }
    }
}
