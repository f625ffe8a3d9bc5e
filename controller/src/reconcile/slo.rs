//! The ServiceLevelObjective reconciler: read the figures from Prometheus,
//! compute the status, write it only when it changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use serde_json::json;
use tracing::{info, warn};

use super::Error;
use crate::context::{Context, MANAGER};
use crate::metrics::ControllerLabels;
use crate::resources::slo::{ServiceLevelObjective, ServiceLevelObjectiveStatus};
use crate::slo_eval::{self, Unreadable};
use crate::slo_reader::{DEFERRED_RETRY, Freshness, gather, status_from, tier_plans};

/// Run the controller until the stream ends. Only spec changes trigger a
/// reconcile (see `caches`); the requeue paces evaluation. Reacting to our
/// own status writes would evaluate in a tight loop.
pub async fn run(ctx: Arc<Context>, caches: Arc<crate::caches::Caches>) {
    let trigger = caches.slo_tap.subscribe(&caches.slos);
    ctx.metrics.slo_gauges.serve(caches.slos.clone());
    Controller::for_shared_stream(trigger, caches.slos.clone())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(super::RECONCILES_IN_FLIGHT),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(err) = res {
                warn!(error = %err, "SLO reconcile failed");
            }
        })
        .await;
}

fn error_policy(_slo: Arc<ServiceLevelObjective>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = %err, "SLO reconcile error");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ControllerLabels {
            controller: "slo".into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(slo: Arc<ServiceLevelObjective>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = slo.namespace().unwrap_or_default();
    let name = slo.name_any();
    let previous = slo.status.clone().unwrap_or_default();
    let plans = tier_plans(&slo);
    let figures = gather(&slo, &ctx, &plans, Freshness::Cached).await;
    if let Err(Unreadable::Deferred) = figures {
        // Frees this reconcile's slot for an SLO whose rules are loaded.
        return Ok(Action::requeue(DEFERRED_RETRY));
    }
    let status = status_from(&slo, plans, figures);
    ctx.metrics
        .evaluation_seconds
        .observe(started.elapsed().as_secs_f64());
    if !slo_eval::same_figures(&previous, &status) {
        // Boxed, like the Prometheus reads: thousands of evaluations wait at
        // once for the same read of a window, and an inline API request
        // would make each of their futures kilobytes larger.
        Box::pin(write_status(&ctx, &ns, &name, &status)).await?;
    }
    ctx.metrics
        .slo_cycles
        .evaluated(started, Instant::now(), ctx.evaluation_interval);
    // To the interval's next tick on the wall clock, with every other SLO:
    // one cycle, one read per window (see `cycles`).
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Action::requeue(crate::cycles::until_next_tick(
        since_epoch,
        ctx.evaluation_interval,
    )))
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
