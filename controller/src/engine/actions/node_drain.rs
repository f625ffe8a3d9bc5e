//! `nodeDrain`: cordon N nodes matching a selector and evict their pods
//! through the Eviction API (PodDisruptionBudgets hold), as a node upgrade
//! does, retrying refused evictions until the fault's time is up. Evidence:
//! each pod's eviction (when accepted, how often refused and by which
//! PodDisruptionBudget), the time to drain, and the time until the
//! evicted pods' controllers had as many Ready pods elsewhere as before.
//! The restore uncordons exactly the nodes the run cordoned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use headroom_experiments::node_drain::{self, NodeDrainSpec, PodInfo};
use headroom_experiments::pod_kill::live;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Preconditions};
use kube::core::{Selector, SelectorExt};
use tokio::time::Instant;

use super::zone_outage::{NODES_KEY, recover_cordons};
use super::{ActionSpec, LiveAction, Touched};
use crate::context::Context;
use crate::duration::parse_duration;
use crate::engine::nodes;
use crate::engine::record::Record;
use crate::engine::support::key;
use crate::reasons::{Abort, AbortReason, Refusal, RefuseReason, Step};
use crate::resources::CHAOS_ENABLED_LABEL;
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{
    EvictionRecord, ExpectationResult, Observations, RestorePlan, Verdict,
};
use crate::verdict::Recovery;

const FIELD: &str = "spec.action.nodeDrain";

fn node_selector(spec: &NodeDrainSpec) -> Result<Selector, Refusal> {
    Selector::try_from(spec.node_selector.clone()).map_err(|e| {
        Refusal::new(
            RefuseReason::InvalidSelector,
            format!("{FIELD}.nodeSelector: {e}"),
        )
    })
}

#[async_trait]
impl ActionSpec for NodeDrainSpec {
    /// The pods' namespaces are known only once the nodes are chosen: they
    /// are checked in `prepare`, each named with the pod and node.
    fn touched(&self, own: &str) -> Vec<Touched> {
        vec![Touched::own(own)]
    }

    fn validate(&self) -> Result<(), Refusal> {
        let s = node_selector(self)?;
        if s.selects_all() {
            return Err(Refusal::new(
                RefuseReason::InvalidSelector,
                format!(
                    "{FIELD}.nodeSelector selects every node: name the nodes that may be drained"
                ),
            ));
        }
        if let Some(d) = &self.expect_drain_within {
            parse_duration(d).map_err(|e| {
                Refusal::new(
                    RefuseReason::InvalidDuration,
                    format!("{FIELD}.expectDrainWithin: {e}"),
                )
            })?;
        }
        Ok(())
    }

    fn target_key(&self, _own: &str) -> String {
        NODES_KEY.to_owned()
    }

    async fn prepare(
        &self,
        ctx: &Context,
        exp: &ChaosExperiment,
    ) -> Result<Box<dyn LiveAction>, Refusal> {
        let api_err = |e: String| Refusal::new(RefuseReason::KubernetesApiError, e);
        let selector = node_selector(self)?;
        let candidates: Vec<String> = nodes::list(&ctx.client, Some(&selector.to_string()))
            .await
            .map_err(api_err)?
            .iter()
            .map(nodes::info)
            .filter(|n| !n.unschedulable)
            .map(|n| n.name)
            .collect();
        let seed = crate::engine::support::new_seed();
        let bad_plan = |e: node_drain::PlanError| {
            let reason = match e {
                node_drain::PlanError::NotOptedIn { .. } => RefuseReason::NamespaceNotOptedIn,
                node_drain::PlanError::OperatorNamespace { .. } => {
                    RefuseReason::NamespaceNotAllowed
                }
                _ => RefuseReason::BlastRadiusExceeded,
            };
            Refusal::new(reason, e.to_string())
        };
        let chosen = node_drain::choose_nodes(self, &candidates, seed).map_err(bad_plan)?;
        let all_pods: Api<Pod> = Api::all(ctx.client.clone());
        let mut pods = Vec::new();
        for node in &chosen {
            let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
            pods.extend(
                all_pods
                    .list(&lp)
                    .await
                    .map_err(|e| api_err(format!("listing the pods of node {node}: {e}")))?
                    .items,
            );
        }
        let mut infos: Vec<PodInfo> = pods.iter().map(pod_info).collect();
        let (opted_in, terminating) = namespaces(ctx, &infos).await.map_err(api_err)?;
        // A namespace being deleted takes its pods with it (and refuses
        // evictions): they are going, not drained.
        for p in &mut infos {
            p.gone |= terminating.contains(&p.namespace);
        }
        let plan = node_drain::plan(
            self,
            &candidates,
            &infos,
            &opted_in,
            &ctx.operator_namespace,
            seed,
        )
        .map_err(bad_plan)?;
        let victims: Vec<Pod> = pods
            .into_iter()
            .filter(|p| {
                plan.evict
                    .iter()
                    .any(|(ns, n)| Some(ns) == p.metadata.namespace.as_ref() && *n == p.name_any())
            })
            .collect();
        let ready_before = ready_by_owner(ctx, &victims, &BTreeSet::new())
            .await
            .map_err(api_err)?;
        Ok(Box::new(NodeDrain {
            spec: self.clone(),
            owner: String::new(),
            run_ns: exp.namespace().unwrap_or_default(),
            nodes: plan.nodes,
            left: plan.left.len(),
            victims,
            ready_before,
            seed,
            cordoned_at: None,
            drained: None,
            recovered: None,
        }))
    }

    async fn recover(&self, ctx: &Context, run_ns: &str, rec: &mut Record) -> Result<(), String> {
        recover_cordons(ctx, run_ns, rec).await
    }
}

fn pod_info(p: &Pod) -> PodInfo {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    PodInfo {
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        node: p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        controller: p
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind.clone()),
        mirror: p.annotations().contains_key("kubernetes.io/config.mirror"),
        gone: p.metadata.deletion_timestamp.is_some()
            || matches!(phase, Some("Succeeded" | "Failed")),
    }
}

/// The opted-in namespaces among the pods', and those being deleted.
async fn namespaces(
    ctx: &Context,
    pods: &[PodInfo],
) -> Result<(BTreeSet<String>, BTreeSet<String>), String> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let (mut out, mut terminating) = (BTreeSet::new(), BTreeSet::new());
    let names: BTreeSet<&str> = pods.iter().map(|p| p.namespace.as_str()).collect();
    for ns in names {
        let n = api
            .get_opt(ns)
            .await
            .map_err(|e| format!("reading namespace {ns}: {e}"))?;
        let Some(n) = n else { continue };
        if n.metadata.deletion_timestamp.is_some() {
            terminating.insert(ns.to_owned());
        }
        if n.labels().get(CHAOS_ENABLED_LABEL).map(String::as_str) == Some("enabled") {
            out.insert(ns.to_owned());
        }
    }
    Ok((out, terminating))
}

/// The controller (owner UID) of a pod.
fn owner_uid(p: &Pod) -> Option<String> {
    p.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// Ready pods per controller of `victims`, not counting pods on `skip`
/// nodes (the drained ones, once the drain is under way).
async fn ready_by_owner(
    ctx: &Context,
    victims: &[Pod],
    skip: &BTreeSet<String>,
) -> Result<BTreeMap<String, usize>, String> {
    let owners: BTreeSet<String> = victims.iter().filter_map(owner_uid).collect();
    let namespaces: BTreeSet<String> = victims.iter().filter_map(|p| p.namespace()).collect();
    let mut out: BTreeMap<String, usize> = owners.iter().map(|o| (o.clone(), 0)).collect();
    for ns in namespaces {
        let list = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing pods in {ns}: {e}"))?;
        for p in list.items.iter().filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && live::is_ready(p)
                && !p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| skip.contains(n))
        }) {
            if let Some(n) = owner_uid(p).and_then(|o| out.get_mut(&o)) {
                *n += 1;
            }
        }
    }
    Ok(out)
}

/// The PodDisruptionBudget whose selector matches the pod.
async fn pdb_of(ctx: &Context, pod: &Pod) -> Option<String> {
    let ns = pod.namespace()?;
    let pdbs = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .ok()?;
    pdbs.items.iter().find_map(|b| {
        let sel = Selector::try_from(b.spec.as_ref()?.selector.clone()?).ok()?;
        sel.matches(pod.labels()).then(|| b.name_any())
    })
}

/// A nodeDrain prepared for one run.
struct NodeDrain {
    spec: NodeDrainSpec,
    /// `namespace/run`, the cordon annotation's value; set at injection.
    owner: String,
    run_ns: String,
    nodes: Vec<String>,
    left: usize,
    victims: Vec<Pod>,
    ready_before: BTreeMap<String, usize>,
    seed: u64,
    cordoned_at: Option<Instant>,
    drained: Option<Duration>,
    recovered: Option<Duration>,
}

const RETRY_EVERY: Duration = Duration::from_secs(1);

impl NodeDrain {
    /// Evict (or delete) one pod; `Ok(true)` when accepted or already gone,
    /// `Ok(false)` when a PodDisruptionBudget refused.
    async fn evict(&self, ctx: &Context, pod: &Pod) -> Result<bool, String> {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let delete = DeleteParams {
            grace_period_seconds: self
                .spec
                .grace_period_seconds
                .and_then(|g| u32::try_from(g).ok()),
            // This pod, never a replacement with the same name.
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let res = if self.spec.respect_pdb {
            api.evict(
                &pod.name_any(),
                &EvictParams {
                    delete_options: Some(delete),
                    ..EvictParams::default()
                },
            )
            .await
            .map(|_| ())
        } else {
            api.delete(&pod.name_any(), &delete).await.map(|_| ())
        };
        match res {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 429 => Err(format!("429 {}", e.message)),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[async_trait]
impl LiveAction for NodeDrain {
    fn describe(&self) -> String {
        format!(
            "drain {}: cordon, then {} {} pods{}; restore uncordons exactly the nodes cordoned",
            self.nodes.join(", "),
            if self.spec.respect_pdb {
                "evict (PodDisruptionBudgets hold)"
            } else {
                "delete (ignoring PodDisruptionBudgets)"
            },
            self.victims.len(),
            if self.left > 0 {
                format!(" ({} DaemonSet, mirror or finished pods left)", self.left)
            } else {
                String::new()
            }
        )
    }

    fn restore_plan(&self) -> RestorePlan {
        RestorePlan {
            cordoned_nodes: self.nodes.clone(),
            ..Default::default()
        }
    }

    fn seed(&self) -> Option<u64> {
        Some(self.seed)
    }

    async fn inject(&mut self, ctx: &Context, rec: &mut Record) -> Result<(), Abort> {
        self.owner = key(&self.run_ns, &rec.name);
        nodes::cordon_all(&ctx.client, &self.nodes, &self.owner)
            .await
            .map_err(|e| Abort::new(AbortReason::ActionFailed, e))?;
        self.cordoned_at = Some(Instant::now());
        rec.step(
            Step::NodesCordoned,
            format!("cordoned {}", self.nodes.join(", ")),
        );
        let obs = rec
            .status
            .observations
            .get_or_insert_with(Observations::default);
        obs.drained_nodes = self.nodes.clone();
        obs.evictions = self
            .victims
            .iter()
            .map(|p| EvictionRecord {
                namespace: p.namespace().unwrap_or_default(),
                name: p.name_any(),
                node: p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                evicted: false,
                evicted_after_seconds: None,
                refusals: 0,
                pdb: None,
                last_refusal: None,
            })
            .collect();
        rec.save_or_log().await;
        Ok(())
    }

    async fn progress(
        &mut self,
        ctx: &Context,
        rec: &mut Record,
        deadline: Instant,
    ) -> Result<(), Abort> {
        let start = self.cordoned_at.unwrap_or_else(Instant::now);
        let drained_nodes: BTreeSet<String> = self.nodes.iter().cloned().collect();
        let mut pdbs: BTreeMap<String, Option<String>> = BTreeMap::new();
        loop {
            let mut changed = false;
            for (i, pod) in self.victims.iter().enumerate() {
                let done = rec
                    .status
                    .observations
                    .as_ref()
                    .and_then(|o| o.evictions.get(i))
                    .is_none_or(|e| e.evicted);
                if done {
                    continue;
                }
                let outcome = self.evict(ctx, pod).await;
                let pdb = match &outcome {
                    Err(m) if m.starts_with("429") => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        if !pdbs.contains_key(&uid) {
                            pdbs.insert(uid.clone(), pdb_of(ctx, pod).await);
                        }
                        pdbs.get(&uid).cloned().flatten()
                    }
                    _ => None,
                };
                let Some(e) = rec
                    .status
                    .observations
                    .as_mut()
                    .and_then(|o| o.evictions.get_mut(i))
                else {
                    continue;
                };
                match outcome {
                    Ok(_) => {
                        e.evicted = true;
                        e.evicted_after_seconds = Some(start.elapsed().as_secs_f64());
                        changed = true;
                        let msg = format!("{}/{} from {}", e.namespace, e.name, e.node);
                        rec.step(Step::PodKilled, format!("evicted {msg}"));
                    }
                    Err(m) => {
                        let first = e.refusals == 0;
                        if m.starts_with("429") {
                            e.refusals += 1;
                            e.pdb = pdb.clone();
                        }
                        e.last_refusal = Some(m.clone());
                        if first {
                            changed = true;
                            let msg = format!(
                                "{}/{}: {m}{}",
                                e.namespace,
                                e.name,
                                pdb.map(|b| format!(" (PodDisruptionBudget {b})"))
                                    .unwrap_or_default()
                            );
                            rec.step(Step::EvictionRefused, msg);
                        }
                    }
                }
            }
            let all_evicted = rec
                .status
                .observations
                .as_ref()
                .is_some_and(|o| o.evictions.iter().all(|e| e.evicted));
            if all_evicted && self.drained.is_none() && self.victims_gone(ctx).await {
                let t = start.elapsed();
                self.drained = Some(t);
                changed = true;
                rec.step(
                    Step::Drained,
                    format!(
                        "{} drained: {} pods evicted and gone after {:.1}s",
                        self.nodes.join(", "),
                        self.victims.len(),
                        t.as_secs_f64()
                    ),
                );
            }
            if self.drained.is_some()
                && self.recovered.is_none()
                && let Ok(now) = ready_by_owner(ctx, &self.victims, &drained_nodes).await
                && self
                    .ready_before
                    .iter()
                    .all(|(o, n)| now.get(o).copied().unwrap_or(0) >= *n)
            {
                let t = start.elapsed();
                self.recovered = Some(t);
                changed = true;
                rec.step(
                    Step::Recovered,
                    format!(
                        "the evicted pods' controllers have as many Ready pods elsewhere as before, after {:.1}s",
                        t.as_secs_f64()
                    ),
                );
            }
            if changed {
                let obs = rec
                    .status
                    .observations
                    .get_or_insert_with(Observations::default);
                obs.drain_seconds = self.drained.map(|d| d.as_secs_f64());
                obs.recovery_seconds = self.recovered.map(|d| d.as_secs_f64());
                rec.save_or_log().await;
            }
            if Instant::now() + RETRY_EVERY > deadline {
                return Ok(());
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    async fn restore(&mut self, ctx: &Context, _rec: &mut Record) -> Result<String, String> {
        if self.owner.is_empty() {
            return Ok("nothing was cordoned".to_owned());
        }
        nodes::uncordon_all(&ctx.client, &self.nodes, &self.owner).await
    }

    fn expectations(&self, observations: Option<&Observations>) -> Vec<ExpectationResult> {
        let Some(bound) = self
            .spec
            .expect_drain_within
            .as_deref()
            .and_then(|d| parse_duration(d).ok())
        else {
            return Vec::new();
        };
        let refused: Vec<String> = observations
            .map(|o| {
                o.evictions
                    .iter()
                    .filter(|e| e.refusals > 0)
                    .map(|e| {
                        format!(
                            "{}/{} refused {} times{}",
                            e.namespace,
                            e.name,
                            e.refusals,
                            e.pdb
                                .as_ref()
                                .map(|b| format!(" by PodDisruptionBudget {b}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let watched = self.cordoned_at.map(|t| t.elapsed());
        let (result, measured, message) = match (self.drained, watched) {
            (Some(d), _) if d <= bound => (
                Verdict::Confirmed,
                Some(format!("{:.1}s", d.as_secs_f64())),
                "every pod was evicted within the bound".to_owned(),
            ),
            (Some(d), _) => (
                Verdict::Refuted,
                Some(format!("{:.1}s", d.as_secs_f64())),
                format!(
                    "the drain took longer than the bound; {}",
                    refused.join("; ")
                ),
            ),
            (None, Some(w)) if w >= bound => (
                Verdict::Refuted,
                Some(format!("not drained after {:.1}s", w.as_secs_f64())),
                if refused.is_empty() {
                    "not every pod was evicted".to_owned()
                } else {
                    refused.join("; ")
                },
            ),
            _ => (
                Verdict::Inconclusive,
                None,
                "the fault ended before the drain finished or the bound passed".to_owned(),
            ),
        };
        vec![ExpectationResult {
            name: "expectDrainWithin".to_owned(),
            result,
            measured,
            bound: Some(format!("<= {:.1}s", bound.as_secs_f64())),
            message: Some(message),
        }]
    }

    fn recovery(&self) -> Recovery {
        match (self.recovered, self.cordoned_at) {
            (Some(d), _) => Recovery::Recovered(d),
            (None, Some(at)) => Recovery::NotRecovered(at.elapsed()),
            (None, None) => Recovery::Unmeasured,
        }
    }
}

impl NodeDrain {
    /// Every evicted pod is gone from the API (its UID no longer listed).
    async fn victims_gone(&self, ctx: &Context) -> bool {
        for p in &self.victims {
            let ns = p.namespace().unwrap_or_default();
            match Api::<Pod>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&p.name_any())
                .await
            {
                Ok(Some(now)) if now.metadata.uid == p.metadata.uid => return false,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        true
    }
}
