//! `zoneOutage`: cordon every node of one zone, delete the target's pods
//! there, and watch the workload's controller and the scheduler bring the
//! capacity back in the zones left for `spec.duration`. Evidence: Ready
//! pods per zone before and at the end, the time until every deleted pod
//! had a replacement scheduled and until Ready capacity was back, and the
//! pods left Pending with the scheduler's reason. The restore uncordons
//! exactly the nodes the run cordoned (saved in the plan before the first
//! cordon), also after a crash or a leader change.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use headroom_experiments::pod_kill::live;
use headroom_experiments::scale_down::ScaleTarget;
use headroom_experiments::zone_outage::{self, Limits, NodeInfo, Plan, ZoneOutageSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::Selector;
use tokio::time::Instant;

use super::{ActionSpec, LiveAction, Touched};
use crate::context::Context;
use crate::engine::nodes;
use crate::engine::record::Record;
use crate::engine::workload;
use crate::reasons::{Abort, AbortReason, Refusal, RefuseReason, Step};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{Observations, PendingPod, RestorePlan, ZonePods};
use crate::verdict::Recovery;

/// Node-level faults hold the cluster's nodes: one at a time, so two
/// outages never take out two zones together.
pub const NODES_KEY: &str = "nodes";

#[async_trait]
impl ActionSpec for ZoneOutageSpec {
    fn touched(&self, own: &str) -> Vec<Touched> {
        vec![Touched::at(
            "spec.action.zoneOutage.target.namespace",
            self.target.namespace.as_ref(),
            own,
        )]
    }

    fn target_key(&self, _own: &str) -> String {
        NODES_KEY.to_owned()
    }

    async fn prepare(
        &self,
        ctx: &Context,
        exp: &ChaosExperiment,
    ) -> Result<Box<dyn LiveAction>, Refusal> {
        let own = exp.namespace().unwrap_or_default();
        let ns = self.target.namespace.clone().unwrap_or(own.clone());
        let w = workload::get(&ctx.client, self.target.kind, &ns, &self.target.name)
            .await
            .map_err(|e| Refusal::new(RefuseReason::KubernetesApiError, e))?
            .ok_or_else(|| {
                Refusal::new(
                    RefuseReason::WorkloadNotFound,
                    format!(
                        "spec.action.zoneOutage.target: {:?} {ns}/{} does not exist",
                        self.target.kind, self.target.name
                    ),
                )
            })?;
        let all_nodes = nodes::list(&ctx.client, None)
            .await
            .map_err(|e| Refusal::new(RefuseReason::KubernetesApiError, e))?;
        let infos: Vec<NodeInfo> = all_nodes.iter().map(nodes::info).collect();
        let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let pods = workload::live_pods(&pods_api, &w.selector)
            .await
            .map_err(|e| Refusal::new(RefuseReason::KubernetesApiError, e))?;
        let placed: Vec<(String, String)> = pods
            .iter()
            .filter_map(|p| Some((p.name_any(), p.spec.as_ref()?.node_name.clone()?)))
            .collect();
        let seed = crate::engine::support::new_seed();
        let limits = Limits {
            max_pods: exp.spec.blast_radius.as_ref().and_then(|b| b.max_pods),
            max_percent: exp.spec.blast_radius.as_ref().and_then(|b| b.max_percent),
        };
        let plan = zone_outage::plan(self, &infos, &placed, limits, seed)
            .map_err(|e| Refusal::new(RefuseReason::BlastRadiusExceeded, e.to_string()))?;
        let before = ready_per_zone(&pods, &infos);
        Ok(Box::new(ZoneOutage {
            owner: String::new(),
            run_ns: own,
            ns,
            pods: pods_api,
            selector: w.selector,
            ready_before: pods.iter().filter(|p| live::is_ready(p)).count(),
            victims: pods
                .into_iter()
                .filter(|p| plan.victims.contains(&p.name_any()))
                .collect(),
            before,
            infos,
            plan,
            seed,
            target: self.target.clone(),
            deleted_at: None,
            recovered: None,
        }))
    }

    async fn recover(&self, ctx: &Context, run_ns: &str, rec: &mut Record) -> Result<(), String> {
        recover_cordons(ctx, run_ns, rec).await
    }
}

/// Uncordon the nodes a run's saved plan names, after a crash (shared with
/// nodeDrain): only those still carrying this run's mark.
pub(super) async fn recover_cordons(
    ctx: &Context,
    run_ns: &str,
    rec: &mut Record,
) -> Result<(), String> {
    let cordoned = rec
        .status
        .restore
        .as_ref()
        .map(|r| r.cordoned_nodes.clone())
        .unwrap_or_default();
    let owner = crate::engine::support::key(run_ns, &rec.name);
    let msg = nodes::uncordon_all(&ctx.client, &cordoned, &owner).await?;
    rec.step(Step::NodesUncordoned, msg);
    Ok(())
}

/// Ready pods per zone (pods on unzoned nodes under "").
fn ready_per_zone(pods: &[Pod], nodes: &[NodeInfo]) -> BTreeMap<String, i32> {
    let zone_of: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.zone.as_deref().unwrap_or("")))
        .collect();
    let mut out = BTreeMap::new();
    for p in pods.iter().filter(|p| live::is_ready(p)) {
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let zone = node.and_then(|n| zone_of.get(n)).copied().unwrap_or("");
        *out.entry(zone.to_owned()).or_insert(0) += 1;
    }
    out
}

/// The scheduler's reason a pod is not placed, if it says one.
fn pending(pod: &Pod) -> Option<PendingPod> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
    {
        return None;
    }
    let cond = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    Some(PendingPod {
        name: pod.name_any(),
        reason: cond.and_then(|c| c.reason.clone()),
        message: cond.and_then(|c| c.message.clone()),
    })
}

/// A zoneOutage prepared for one run.
struct ZoneOutage {
    /// `namespace/run`, the cordon annotation's value; set at injection.
    owner: String,
    run_ns: String,
    ns: String,
    pods: Api<Pod>,
    selector: Selector,
    ready_before: usize,
    victims: Vec<Pod>,
    before: BTreeMap<String, i32>,
    infos: Vec<NodeInfo>,
    plan: Plan,
    seed: u64,
    target: ScaleTarget,
    deleted_at: Option<Instant>,
    recovered: Option<Duration>,
}

const POLL: Duration = Duration::from_millis(500);

#[async_trait]
impl LiveAction for ZoneOutage {
    fn describe(&self) -> String {
        format!(
            "take zone {} out: cordon {} and delete the {} pods of {:?} {}/{} there ({}); restore uncordons exactly the nodes cordoned",
            self.plan.zone,
            if self.plan.cordon.is_empty() {
                "no node (all already cordoned)".to_owned()
            } else {
                self.plan.cordon.join(", ")
            },
            self.victims.len(),
            self.target.kind,
            self.ns,
            self.target.name,
            self.plan.victims.join(", ")
        )
    }

    fn restore_plan(&self) -> RestorePlan {
        RestorePlan {
            cordoned_nodes: self.plan.cordon.clone(),
            ready_pods_before: i32::try_from(self.ready_before).ok(),
            ..Default::default()
        }
    }

    fn seed(&self) -> Option<u64> {
        Some(self.seed)
    }

    async fn inject(&mut self, ctx: &Context, rec: &mut Record) -> Result<(), Abort> {
        self.owner = crate::engine::support::key(&self.run_ns, &rec.name);
        nodes::cordon_all(&ctx.client, &self.plan.cordon, &self.owner)
            .await
            .map_err(|e| Abort::new(AbortReason::ActionFailed, e))?;
        rec.step(
            Step::ZoneCordoned,
            format!(
                "zone {}: cordoned {}{}",
                self.plan.zone,
                self.plan.cordon.join(", "),
                already(&self.plan)
            ),
        );
        let obs = rec
            .status
            .observations
            .get_or_insert_with(Observations::default);
        obs.zone = Some(self.plan.zone.clone());
        for pod in &self.victims {
            match live::delete(&self.pods, pod, None).await {
                Ok(()) => rec.step(
                    Step::PodKilled,
                    format!(
                        "deleted {} (uid {}, node {})",
                        pod.name_any(),
                        pod.metadata.uid.as_deref().unwrap_or("?"),
                        pod.spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_deref())
                            .unwrap_or("?")
                    ),
                ),
                // Gone already: the outage's effect is the same.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    return Err(Abort::new(
                        AbortReason::ActionFailed,
                        format!("deleting pod {}: {e}", pod.name_any()),
                    ));
                }
            }
        }
        self.deleted_at = Some(Instant::now());
        rec.save_or_log().await;
        Ok(())
    }

    async fn progress(
        &mut self,
        ctx: &Context,
        rec: &mut Record,
        deadline: Instant,
    ) -> Result<(), Abort> {
        let start = self.deleted_at.unwrap_or_else(Instant::now);
        let victims: usize = self.victims.len();
        let mut rescheduled: Option<Duration> = (victims == 0).then_some(Duration::ZERO);
        let mut last_pending: Vec<PendingPod> = Vec::new();
        let mut pods = Vec::new();
        // The fault lasts the whole duration: the zone stays cordoned while
        // the replacements are placed (or not) and the SLOs are watched.
        loop {
            match workload::live_pods(&self.pods, &self.selector).await {
                Ok(p) => pods = p,
                // A missed poll only delays the evidence; the guards' own
                // reads decide whether the run must stop.
                Err(e) => tracing::debug!(error = %e, "zoneOutage: listing pods failed"),
            }
            let placed = pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .count();
            let ready = pods.iter().filter(|p| live::is_ready(p)).count();
            if rescheduled.is_none() && placed >= pods.len() && pods.len() >= self.ready_before {
                let t = start.elapsed();
                rescheduled = Some(t);
                rec.step(
                    Step::Rescheduled,
                    format!(
                        "every deleted pod has a replacement on a node ({placed} pods placed) after {:.1}s",
                        t.as_secs_f64()
                    ),
                );
                rec.save_or_log().await;
            }
            if self.recovered.is_none() && ready >= self.ready_before {
                let t = start.elapsed();
                self.recovered = Some(t);
                rec.step(
                    Step::Recovered,
                    format!(
                        "{ready} of {} pods Ready again after {:.1}s",
                        self.ready_before,
                        t.as_secs_f64()
                    ),
                );
                rec.save_or_log().await;
            }
            let pending_now: Vec<PendingPod> = pods.iter().filter_map(pending).collect();
            if pending_now != last_pending {
                if !pending_now.is_empty() {
                    rec.step(
                        Step::PodsPending,
                        format!(
                            "{} pods not placed: {}",
                            pending_now.len(),
                            pending_now
                                .iter()
                                .map(|p| format!(
                                    "{} ({})",
                                    p.name,
                                    p.message
                                        .as_deref()
                                        .or(p.reason.as_deref())
                                        .unwrap_or("no reason yet")
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    );
                    rec.save_or_log().await;
                }
                last_pending = pending_now;
            }
            if Instant::now() + POLL > deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let after = ready_per_zone(&pods, &self.infos_now(ctx).await);
        let obs = rec
            .status
            .observations
            .get_or_insert_with(Observations::default);
        obs.pods_per_zone = per_zone_table(&self.before, &after);
        obs.reschedule_seconds = rescheduled.map(|d| d.as_secs_f64());
        obs.recovery_seconds = self.recovered.map(|d| d.as_secs_f64());
        obs.pending_pods = last_pending;
        rec.save_or_log().await;
        Ok(())
    }

    async fn restore(&mut self, ctx: &Context, _rec: &mut Record) -> Result<String, String> {
        if self.owner.is_empty() {
            // Never injected: no node carries this run's mark.
            return Ok("nothing was cordoned".to_owned());
        }
        nodes::uncordon_all(&ctx.client, &self.plan.cordon, &self.owner).await
    }

    fn recovery(&self) -> Recovery {
        match (self.recovered, self.deleted_at) {
            (Some(d), _) => Recovery::Recovered(d),
            (None, Some(at)) => Recovery::NotRecovered(at.elapsed()),
            (None, None) => Recovery::Unmeasured,
        }
    }
}

impl ZoneOutage {
    /// Node zones now (a node added meanwhile counts where it is).
    async fn infos_now(&self, ctx: &Context) -> Vec<NodeInfo> {
        match nodes::list(&ctx.client, None).await {
            Ok(n) => n.iter().map(nodes::info).collect(),
            Err(_) => self.infos.clone(),
        }
    }
}

fn already(plan: &Plan) -> String {
    let before: Vec<&String> = plan
        .zone_nodes
        .iter()
        .filter(|n| !plan.cordon.contains(n))
        .collect();
    if before.is_empty() {
        String::new()
    } else {
        format!(
            " ({} already cordoned, left as they are)",
            before
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Before and after per zone, every zone that had or has a Ready pod.
fn per_zone_table(before: &BTreeMap<String, i32>, after: &BTreeMap<String, i32>) -> Vec<ZonePods> {
    let zones: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    zones
        .into_iter()
        .map(|z| ZonePods {
            zone: if z.is_empty() {
                "(no zone)".to_owned()
            } else {
                z.clone()
            },
            before: before.get(z).copied().unwrap_or(0),
            after: after.get(z).copied().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_table_lists_every_zone_seen_before_or_after() {
        let before = BTreeMap::from([("zone-a".to_owned(), 3), ("zone-b".to_owned(), 3)]);
        let after = BTreeMap::from([("zone-a".to_owned(), 6), (String::new(), 1)]);
        let t = per_zone_table(&before, &after);
        let rows: Vec<(&str, i32, i32)> = t
            .iter()
            .map(|r| (r.zone.as_str(), r.before, r.after))
            .collect();
        assert_eq!(
            rows,
            [("(no zone)", 0, 1), ("zone-a", 3, 6), ("zone-b", 3, 0)]
        );
    }
}
