//! Reading an SLO's figures from Prometheus: from the recording rules when
//! they are loaded (one shared read per window per cycle), else with direct
//! queries, and the status they make. Used by the SLO reconciler, the gate
//! and the runs, so it sits below all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use crate::context::Context;
use crate::indicator;
use crate::resources::slo::{ServiceLevelObjective, ServiceLevelObjectiveStatus};
use crate::slo_eval::{self, Figures, TierPlan, Unreadable};

/// Tiers with parsed windows and thresholds, or why the spec is unusable.
pub fn tier_plans(slo: &ServiceLevelObjective) -> Result<(Duration, Vec<TierPlan>), String> {
    let period = crate::duration::parse_duration(&slo.spec.window)
        .map_err(|e| format!("spec.window: {e}"))?;
    crate::budget::tiers_for(
        period,
        slo.spec.alerting.as_ref().and_then(|a| a.tiers.as_deref()),
    )
    .map(|tiers| (period, tiers))
}

/// Whether figures may come from the shared per-cycle cache of recorded
/// series, or must be read from Prometheus now (gate decisions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Cached,
    Fresh,
}

/// The status the SLO has now, read from Prometheus; conditions keep their
/// transition times from the stored status.
pub async fn assess(
    slo: &ServiceLevelObjective,
    ctx: &Context,
    freshness: Freshness,
) -> ServiceLevelObjectiveStatus {
    let plans = tier_plans(slo);
    let figures = gather(slo, ctx, &plans, freshness).await;
    status_from(slo, plans, figures)
}

/// How an SLO evaluation reading Prometheus directly takes one of the
/// [`Context::direct_reads`] permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PermitWait {
    /// Gate and run reads: never queued behind SLO evaluations.
    None,
    /// Wait for a permit.
    Wait,
    /// Take one if free, else give the reconcile slot back and try again
    /// [`DEFERRED_RETRY`] later.
    Defer,
}

fn permit_wait(freshness: Freshness, recording_rules: bool) -> PermitWait {
    match (freshness, recording_rules) {
        (Freshness::Fresh, _) => PermitWait::None,
        // The SLO's rules are not loaded yet: with thousands of new SLOs,
        // those queued here would hold every reconcile slot while SLOs
        // whose rules are loaded wait.
        (Freshness::Cached, true) => PermitWait::Defer,
        // `--direct-queries`: every SLO reads directly, and no other SLO
        // needs the slot. Waiting keeps a tick's evaluations one burst;
        // deferring 2 s at a time spread them past the next tick (in make
        // bench, 100 SLOs were evaluated 0.7 times per interval).
        (Freshness::Cached, false) => PermitWait::Wait,
    }
}

/// How soon an SLO whose evaluation was deferred tries again.
pub(crate) const DEFERRED_RETRY: Duration = Duration::from_secs(2);

pub(crate) fn status_from(
    slo: &ServiceLevelObjective,
    plans: Result<(Duration, Vec<TierPlan>), String>,
    figures: Result<Figures, Unreadable>,
) -> ServiceLevelObjectiveStatus {
    let (period_window, tiers) = match plans {
        Ok((period, tiers)) => (crate::duration::format_duration(period), tiers),
        Err(_) => (slo.spec.window.clone(), Vec::new()),
    };
    let previous = slo.status.clone().unwrap_or_default();
    slo_eval::evaluate(
        &slo.spec,
        &tiers,
        &period_window,
        figures.as_ref(),
        &previous,
        slo.meta().generation,
        now(),
    )
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Read every window the SLO needs: from the recording rules when they are
/// loaded, else with one direct query per window.
pub(crate) async fn gather(
    slo: &ServiceLevelObjective,
    ctx: &Context,
    plans: &Result<(Duration, Vec<TierPlan>), String>,
    freshness: Freshness,
) -> Result<Figures, Unreadable> {
    let (period, tiers) = plans.clone().map_err(|message| Unreadable::InvalidSpec {
        reason: "InvalidSpec",
        message,
    })?;
    let key = (slo.namespace().unwrap_or_default(), slo.name_any());
    let has_total = ctx
        .indicator_checks
        .check(key, slo.meta().generation, &slo.spec.indicator)
        .map_err(|message| Unreadable::InvalidSpec {
            reason: "InvalidQuery",
            message,
        })?;
    let mut windows: BTreeSet<Duration> = tiers.iter().flat_map(|t| [t.long, t.short]).collect();
    windows.insert(period);
    let shortest = windows.iter().next().copied().unwrap_or(period);
    let cache = ctx
        .recorded
        .as_ref()
        .filter(|_| freshness == Freshness::Cached);
    let source = match cache {
        Some(cache) => match from_recorded(slo, ctx, cache, &windows, shortest, has_total).await? {
            Some(figures) => return Ok(figures),
            None => "DirectQuery (recording rules not loaded yet)",
        },
        None if freshness == Freshness::Fresh => "DirectQuery (fresh read)",
        None => "DirectQuery",
    };
    let closed = |e: &dyn std::fmt::Display| {
        Unreadable::PrometheusUnavailable(format!("direct reads closed: {e}"))
    };
    let _permit = match permit_wait(freshness, ctx.recorded.is_some()) {
        PermitWait::None => None,
        PermitWait::Wait => Some(ctx.direct_reads.acquire().await.map_err(|e| closed(&e))?),
        PermitWait::Defer => match ctx.direct_reads.try_acquire() {
            Ok(permit) => Some(permit),
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(Unreadable::Deferred),
            Err(e) => return Err(closed(&e)),
        },
    };
    let mut figures = Figures {
        error_ratios: BTreeMap::new(),
        traffic_per_second: None,
        source: source.into(),
    };
    for window in windows {
        let w = crate::duration::format_duration(window);
        let queries = indicator::window_queries(&slo.spec.indicator, &w).map_err(|e| {
            Unreadable::InvalidSpec {
                reason: "InvalidQuery",
                message: e.to_string(),
            }
        })?;
        let ratio = query(ctx, &queries.error_ratio).await?;
        figures.error_ratios.insert(w, ratio);
        if let (true, Some(total)) = (window == shortest, &queries.total_rate) {
            figures.traffic_per_second = query(ctx, total).await?;
        }
    }
    Ok(figures)
}

/// Figures from the recorded series, or `None` when any series this SLO
/// needs is missing (its rules are not loaded yet).
async fn from_recorded(
    slo: &ServiceLevelObjective,
    ctx: &Context,
    cache: &crate::recorded::RecordedCache,
    windows: &BTreeSet<Duration>,
    shortest: Duration,
    has_total: bool,
) -> Result<Option<Figures>, Unreadable> {
    let (ns, name) = (slo.namespace().unwrap_or_default(), slo.name_any());
    let unavailable = |e: crate::prometheus::PrometheusError| {
        ctx.metrics.prometheus_errors.inc();
        Unreadable::PrometheusUnavailable(e.to_string())
    };
    // Every window at once: a window another SLO is reading now is waited
    // for beside the others, not after them.
    let ratios = futures::future::join_all(windows.iter().map(|window| async move {
        let w = crate::duration::format_duration(*window);
        let snapshot = cache.error_ratios(&ctx.prometheus, &w).await;
        (w, snapshot)
    }));
    let traffic = async {
        match has_total {
            true => {
                let w = crate::duration::format_duration(shortest);
                Some(cache.traffic(&ctx.prometheus, &w).await)
            }
            false => None,
        }
    };
    let (ratios, traffic) = futures::join!(ratios, traffic);
    let mut figures = Figures {
        error_ratios: BTreeMap::new(),
        traffic_per_second: None,
        source: "RecordingRules".into(),
    };
    for (w, snapshot) in ratios {
        let Some(value) = snapshot.map_err(unavailable)?.get(&ns, &name) else {
            return Ok(None);
        };
        figures.error_ratios.insert(w, value);
    }
    if let Some(snapshot) = traffic {
        let Some(value) = snapshot.map_err(unavailable)?.get(&ns, &name) else {
            return Ok(None);
        };
        figures.traffic_per_second = value;
    }
    Ok(Some(figures))
}

pub(crate) async fn query(ctx: &Context, q: &str) -> Result<Option<f64>, Unreadable> {
    Box::pin(ctx.prometheus.scalar(q)).await.map_err(|e| {
        ctx.metrics.prometheus_errors.inc();
        match e {
            crate::prometheus::PrometheusError::BadQuery { message, .. } => {
                Unreadable::InvalidSpec {
                    reason: "InvalidQuery",
                    message: format!("Prometheus refused the query: {message}"),
                }
            }
            other => Unreadable::PrometheusUnavailable(other.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slos_waiting_for_their_rules_give_their_slot_back() {
        for (freshness, recording_rules, want) in [
            (Freshness::Fresh, true, PermitWait::None),
            (Freshness::Fresh, false, PermitWait::None),
            (Freshness::Cached, true, PermitWait::Defer),
            (Freshness::Cached, false, PermitWait::Wait),
        ] {
            assert_eq!(
                permit_wait(freshness, recording_rules),
                want,
                "{freshness:?}, recording rules {recording_rules}"
            );
        }
    }
}
