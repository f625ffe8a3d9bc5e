//! `scaleDown`: scale a workload up, wait until the controller reports the
//! pods available, scale it down, and record exactly which pods the
//! controller removed (name, creation time, node, zone, ReplicaSet and
//! revision), then compare with the expected order. Headroom never picks
//! the victims. The restore puts the replica count back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use headroom_experiments::evidence::PodRecord;
use headroom_experiments::pod_kill::live;
use headroom_experiments::scale_down::{
    ScaleDownSpec, ZoneCount, ZoneSpread, score_order, zone_spread,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::Selector;
use tokio::time::Instant;

use super::{ActionSpec, LiveAction, Touched};
use crate::context::Context;
use crate::engine::record::Record;
use crate::engine::support::now_micro;
use crate::engine::workload::{self, Rollout};
use crate::reasons::{Abort, AbortReason, Refusal, RefuseReason, Step};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{
    ExpectationResult, Observations, RestorePlan, Verdict, WorkloadRestore,
};

#[async_trait]
impl ActionSpec for ScaleDownSpec {
    fn touched(&self, own: &str) -> Vec<Touched> {
        vec![Touched::at(
            "spec.action.scaleDown.target.namespace",
            self.target.namespace.as_ref(),
            own,
        )]
    }

    fn target_key(&self, own: &str) -> String {
        format!(
            "workload/{:?}/{}/{}",
            self.target.kind,
            self.target.namespace.as_deref().unwrap_or(own),
            self.target.name
        )
    }

    async fn prepare(
        &self,
        ctx: &Context,
        exp: &ChaosExperiment,
    ) -> Result<Box<dyn LiveAction>, Refusal> {
        let own = exp.namespace().unwrap_or_default();
        let ns = self.target.namespace.clone().unwrap_or(own);
        let w = workload::get(&ctx.client, self.target.kind, &ns, &self.target.name)
            .await
            .map_err(|e| Refusal::new(RefuseReason::KubernetesApiError, e))?
            .ok_or_else(|| {
                Refusal::new(
                    RefuseReason::WorkloadNotFound,
                    format!(
                        "spec.action.scaleDown.target: {:?} {ns}/{} does not exist",
                        self.target.kind, self.target.name
                    ),
                )
            })?;
        Ok(Box::new(ScaleDown {
            restore: WorkloadRestore {
                kind: self.target.kind,
                namespace: ns.clone(),
                name: self.target.name.clone(),
                replicas: w.replicas,
            },
            spec: self.clone(),
            ns,
            selector: w.selector,
        }))
    }

    async fn recover(&self, ctx: &Context, _run_ns: &str, rec: &mut Record) -> Result<(), String> {
        recover_replicas(ctx, rec).await
    }
}

/// Put back a replica count saved in the plan, after a crash (shared with
/// connectionExhaustion's ScaleClients mode).
pub(super) async fn recover_replicas(ctx: &Context, rec: &mut Record) -> Result<(), String> {
    let Some(w) = rec.status.restore.as_ref().and_then(|r| r.workload.clone()) else {
        return Ok(());
    };
    workload::set_back(&ctx.client, &w).await?;
    rec.step(
        Step::ReplicasRestored,
        format!(
            "{:?} {}/{} set back to {} replicas",
            w.kind, w.namespace, w.name, w.replicas
        ),
    );
    Ok(())
}

/// A scaleDown prepared for one run.
struct ScaleDown {
    spec: ScaleDownSpec,
    ns: String,
    selector: Selector,
    restore: WorkloadRestore,
}

#[async_trait]
impl LiveAction for ScaleDown {
    fn describe(&self) -> String {
        format!(
            "scale {:?} {}/{} up to {}, then down to {}, and record which pods the controller removes; restore puts the replica count back",
            self.spec.target.kind,
            self.ns,
            self.spec.target.name,
            self.spec.scale_up_to,
            self.spec.scale_down_to
        )
    }

    fn restore_plan(&self) -> RestorePlan {
        RestorePlan {
            workload: Some(self.restore.clone()),
            ..Default::default()
        }
    }

    async fn inject(&mut self, ctx: &Context, rec: &mut Record) -> Result<(), Abort> {
        let (kind, name) = (self.spec.target.kind, self.spec.target.name.as_str());
        workload::scale(&ctx.client, kind, &self.ns, name, self.spec.scale_up_to)
            .await
            .map_err(|e| Abort::new(AbortReason::ActionFailed, e))?;
        rec.step(
            Step::ScaledUp,
            format!(
                "{kind:?} {}/{name} scaled to {}",
                self.ns, self.spec.scale_up_to
            ),
        );
        rec.save_or_log().await;
        Ok(())
    }

    async fn progress(
        &mut self,
        ctx: &Context,
        rec: &mut Record,
        deadline: Instant,
    ) -> Result<(), Abort> {
        sequence(ctx, rec, &self.spec, &self.ns, &self.selector, deadline)
            .await
            .map_err(|e| Abort::new(AbortReason::ActionFailed, e))
    }

    async fn restore(&mut self, ctx: &Context, _rec: &mut Record) -> Result<String, String> {
        workload::restore_replicas(&ctx.client, &self.restore).await
    }

    fn expectations(&self, observations: Option<&Observations>) -> Vec<ExpectationResult> {
        let mut results = vec![order_result(&self.spec, observations)];
        if self.spec.expect_zone_spread {
            results.push(zone_spread_result(observations));
        }
        results
    }
}

async fn zone_of(
    ctx: &Context,
    cache: &mut BTreeMap<String, Option<String>>,
    node: &str,
) -> Option<String> {
    if let Some(z) = cache.get(node) {
        return z.clone();
    }
    let zone = Api::<Node>::all(ctx.client.clone())
        .get_opt(node)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.labels().get("topology.kubernetes.io/zone").cloned());
    cache.insert(node.to_owned(), zone.clone());
    zone
}

async fn sequence(
    ctx: &Context,
    rec: &mut Record,
    spec: &ScaleDownSpec,
    ns: &str,
    selector: &Selector,
    deadline: Instant,
) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let (kind, name) = (spec.target.kind, spec.target.name.as_str());
    let up = spec.scale_up_to;
    // The controller's own count of available pods: surge pods, several
    // ReplicaSets and minReadySeconds are its business, not an exact
    // number of Ready pods to match.
    let mut state = Rollout::default();
    let before = loop {
        if let Some(r) = workload::rollout(&ctx.client, kind, ns, name).await? {
            state = r;
        }
        if state.available_at(up) {
            break workload::live_pods(&pods, selector).await?;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{kind:?} {ns}/{name} did not have {up} available pods within spec.duration ({} available of {} desired, {} in all)",
                state.available, state.desired, state.current
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Pods beyond the count (a rollout's surge) that may stay after the
    // scale-down.
    let surge = i32::try_from(before.len()).unwrap_or(i32::MAX) - up;
    rec.step(
        Step::AllReady,
        format!(
            "{} available of {up}; {} pods in all",
            state.available,
            before.len()
        ),
    );
    workload::scale(&ctx.client, kind, ns, name, spec.scale_down_to).await?;
    rec.step(
        Step::ScaledDown,
        format!("{kind:?} {ns}/{name} scaled to {}", spec.scale_down_to),
    );
    let down = spec.scale_down_to;
    let mut zones = BTreeMap::new();
    let mut owners = BTreeMap::new();
    let mut removed: Vec<PodRecord> = Vec::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    // Done when the controller says it has shrunk and the pods have stayed
    // put for a moment (a StatefulSet removes them one by one).
    let mut settled_since: Option<Instant> = None;
    let survivors = loop {
        let live_now = workload::live_pods(&pods, selector).await?;
        let live_uids: BTreeSet<String> = live_now
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let mut changed = false;
        for p in &before {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            if !live_uids.contains(&uid) && gone.insert(uid) {
                let mut r = live::record(p, now_micro().0.to_string());
                if let Some(node) = r.node.clone() {
                    r.zone = zone_of(ctx, &mut zones, &node).await;
                }
                (r.owner, r.revision) =
                    workload::owner_revision(&ctx.client, ns, p, &mut owners).await;
                removed.push(r);
                changed = true;
            }
        }
        let shrunk = workload::rollout(&ctx.client, kind, ns, name)
            .await?
            .is_some_and(|r| {
                r.shrunk_to(down, surge) && usize::try_from(r.current).ok() == Some(live_now.len())
            });
        settled_since = match (shrunk && !changed, settled_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, since) => since,
        };
        if settled_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
            break before
                .iter()
                .filter(|p| live_uids.contains(p.metadata.uid.as_deref().unwrap_or("")))
                .collect::<Vec<_>>();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{kind:?} {ns}/{name} did not settle at {down} replicas within spec.duration ({} pods removed so far)",
                removed.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut surviving = Vec::new();
    for p in survivors {
        let mut r = live::record(p, now_micro().0.to_string());
        if let Some(node) = r.node.clone() {
            r.zone = zone_of(ctx, &mut zones, &node).await;
        }
        (r.owner, r.revision) = workload::owner_revision(&ctx.client, ns, p, &mut owners).await;
        surviving.push(r);
    }
    let score = score_order(spec.expect_order, &removed, &surviving);
    rec.step(
        Step::RemovalsRecorded,
        format!(
            "removed: {}; survived: {}; {} of {} removals matched {:?}",
            removed
                .iter()
                .map(|r| match (&r.owner, &r.revision) {
                    (Some(o), Some(v)) => format!("{} ({o}, revision {v})", r.name),
                    (Some(o), None) => format!("{} ({o})", r.name),
                    _ => r.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            surviving
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            score.map_or(0, |s| s.matched),
            removed.len(),
            spec.expect_order
        ),
    );
    let obs = rec
        .status
        .observations
        .get_or_insert_with(Observations::default);
    obs.removed_pods = removed;
    obs.surviving_pods = surviving;
    obs.order_matches = score.and_then(|s| i32::try_from(s.matched).ok());
    rec.save_or_log().await;
    Ok(())
}

/// The `expectOrder` expectation, judged from the removals recorded.
fn order_result(spec: &ScaleDownSpec, obs: Option<&Observations>) -> ExpectationResult {
    let name = format!("expectOrder/{:?}", spec.expect_order);
    let removed = obs.map_or(0, |o| o.removed_pods.len());
    let matched = obs.and_then(|o| o.order_matches);
    let (result, message) = match matched {
        _ if removed == 0 => (Verdict::Inconclusive, "no removal was recorded".to_owned()),
        None => (
            Verdict::Inconclusive,
            format!(
                "{:?} cannot be scored from the pod records",
                spec.expect_order
            ),
        ),
        Some(m) if usize::try_from(m).unwrap_or(0) == removed => (
            Verdict::Confirmed,
            "every removal matched the expected order".to_owned(),
        ),
        Some(m) => (
            Verdict::Refuted,
            format!("partly true at most: {m} of {removed} removals matched"),
        ),
    };
    ExpectationResult {
        name,
        result,
        measured: matched.map(|m| format!("{m} of {removed} removals matched")),
        bound: Some(format!("{removed} of {removed}")),
        message: Some(message),
    }
}

/// The `expectZoneSpread` expectation: no zone lost all of its replicas.
fn zone_spread_result(obs: Option<&Observations>) -> ExpectationResult {
    let spread = obs.filter(|o| !o.removed_pods.is_empty() || !o.surviving_pods.is_empty());
    let counts_text = |counts: &[ZoneCount]| {
        counts
            .iter()
            .map(|c| format!("{} {}→{}", c.zone, c.before, c.after))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (result, measured, message) = match spread
        .map(|o| zone_spread(&o.removed_pods, &o.surviving_pods))
    {
        None => (
            Verdict::Inconclusive,
            None,
            "no pods were recorded".to_owned(),
        ),
        Some(ZoneSpread::Unknown { unzoned }) => (
            Verdict::Inconclusive,
            None,
            format!(
                "the nodes of {} carry no topology.kubernetes.io/zone label",
                unzoned.join(", ")
            ),
        ),
        Some(ZoneSpread::OneZone(zone)) => (
            Verdict::Inconclusive,
            Some(format!("{zone} only")),
            format!(
                "every replica was in zone {zone} before the scale-down: there was no spread to keep"
            ),
        ),
        Some(ZoneSpread::Kept(counts)) => (
            Verdict::Confirmed,
            Some(counts_text(&counts)),
            "every zone kept at least one replica".to_owned(),
        ),
        Some(ZoneSpread::Emptied { zones, counts }) => (
            Verdict::Refuted,
            Some(counts_text(&counts)),
            format!(
                "the scale-down removed every replica of zone {}: a loss of the zones left would take the service down",
                zones.join(", ")
            ),
        ),
    };
    ExpectationResult {
        name: "expectZoneSpread".to_owned(),
        result,
        measured,
        bound: Some("at least 1 replica in every zone".to_owned()),
        message: Some(message),
    }
}
