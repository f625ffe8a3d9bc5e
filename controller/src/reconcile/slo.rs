//! The ServiceLevelObjective evaluator: on each tick, read the figures from
//! Prometheus, compute the status, write it only when it changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use super::Error;
use crate::context::{Context, MANAGER};
use crate::metrics::ControllerLabels;
use crate::resources::slo::{ServiceLevelObjective, ServiceLevelObjectiveStatus};
use crate::slo_eval::{self, Unreadable};
use crate::slo_reader::{DEFERRED_RETRY, Freshness, gather, status_from, tier_plans};
use crate::tick_loop::Next;

/// Evaluate every SLO on each tick of the evaluation interval, and a new
/// or changed one at once, until the watch cache's trigger stream ends.
/// Only spec changes trigger (see `caches`): reacting to our own status
/// writes would evaluate in a tight loop.
pub async fn run(ctx: Arc<Context>, caches: Arc<crate::caches::Caches>) {
    let trigger = caches.slo_tap.subscribe(&caches.slos);
    ctx.metrics.slo_gauges.serve(caches.slos.clone());
    crate::tick_loop::run(
        caches.slos.clone(),
        trigger,
        ctx.evaluation_interval,
        usize::from(super::RECONCILES_IN_FLIGHT),
        |slo| evaluate(slo, ctx.clone()),
    )
    .await;
}

/// One evaluation, and when to evaluate the SLO again.
async fn evaluate(slo: Arc<ServiceLevelObjective>, ctx: Arc<Context>) -> Next {
    match reconcile(slo, &ctx).await {
        Ok(next) => next,
        Err(err) => {
            warn!(error = %err, "SLO reconcile failed");
            ctx.metrics
                .reconcile_errors
                .get_or_create(&ControllerLabels {
                    controller: "slo".into(),
                })
                .inc();
            Next::RetryIn(RETRY_AFTER_ERROR)
        }
    }
}

/// A failed evaluation (its status write, mostly) is tried again this soon,
/// besides the next tick.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

async fn reconcile(slo: Arc<ServiceLevelObjective>, ctx: &Context) -> Result<Next, Error> {
    let started = Instant::now();
    let ns = slo.namespace().unwrap_or_default();
    let name = slo.name_any();
    let previous = slo.status.clone().unwrap_or_default();
    let plans = tier_plans(&slo);
    let figures = gather(&slo, ctx, &plans, Freshness::Cached).await;
    if let Err(Unreadable::Deferred) = figures {
        // Frees this evaluation's slot for an SLO whose rules are loaded.
        return Ok(Next::RetryIn(DEFERRED_RETRY));
    }
    let status = status_from(&slo, plans, figures);
    ctx.metrics
        .evaluation_seconds
        .observe(started.elapsed().as_secs_f64());
    if !slo_eval::same_figures(&previous, &status) {
        // Boxed, like the Prometheus reads: thousands of evaluations wait at
        // once for the same read of a window, and an inline API request
        // would make each of their futures kilobytes larger.
        Box::pin(write_status(ctx, &ns, &name, &status)).await?;
    }
    ctx.metrics
        .slo_cycles
        .evaluated(started, Instant::now(), ctx.evaluation_interval);
    // The next tick, with every other SLO: one cycle, one read per window
    // (see `cycles`).
    Ok(Next::Tick)
}

async fn write_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &ServiceLevelObjectiveStatus,
) -> Result<(), Error> {
    let api: Api<ServiceLevelObjective> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .status_writes
        .get_or_create(&ControllerLabels {
            controller: "slo".into(),
        })
        .inc();
    info!(namespace = ns, slo = name, budget = ?status.budget_remaining, "SLO status written");
    Ok(())
}
