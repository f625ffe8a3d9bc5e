//! scaleDown and connectionExhaustion: faults applied as a sequence of
//! stages (scale up, wait, scale down, record; or ramp, hold) while the
//! guarding SLOs are watched beside them. Whichever ends first wins: the
//! sequence finishing, an abort rule, or an interruption. Restore follows
//! in every case.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use headroom_experiments::connection_exhaustion::{ConnectionExhaustionSpec, ConnectionMode};
use headroom_experiments::evidence::PodRecord;
use headroom_experiments::pod_kill::live;
use headroom_experiments::scale_down::{ScaleDownSpec, WorkloadKind, score_order};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::Selector;
use tokio::sync::watch;
use tokio::time::Instant;

use super::connections::{self, Held, Target};
use super::driver::{Guard, Record, Seen, abort_check, finish, min_budget, record_abort};
use super::workload::{self, Rollout};
use super::{now, now_micro, target_namespace};
use crate::duration::parse_duration;
use crate::gate::Policy;
use crate::reconcile::Context;
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{
    BudgetRecord, ConnectionDrop, ExpectationResult, Observations, RestorePlan, RunPhase, Verdict,
    WorkloadRestore,
};
use crate::verdict::Recovery;

/// What the run will do, resolved before anything is touched.
enum Plan {
    Scale {
        spec: ScaleDownSpec,
        ns: String,
        selector: Selector,
    },
    Hold {
        spec: ConnectionExhaustionSpec,
        target: Target,
    },
    Clients {
        spec: ConnectionExhaustionSpec,
        kind: WorkloadKind,
        ns: String,
        name: String,
        from: i32,
    },
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    ctx: &Context,
    rec: &mut Record,
    exp: &ChaosExperiment,
    guards: &[Guard],
    policy: Policy,
    duration: Duration,
    observe_every: Duration,
    abort_rx: &mut watch::Receiver<Option<String>>,
) {
    let own_ns = exp.namespace().unwrap_or_default();
    let target_ns = target_namespace(exp);
    // Every namespace the action touches, not only the workload's: a
    // Service in another namespace is reached too.
    if let Err((reason, message)) = super::scope::check_namespaces(ctx, exp).await {
        return rec.fail_before_injection(reason, message).await;
    }
    let (plan, restore_plan) = match prepare(ctx, exp, &own_ns, &target_ns).await {
        Ok(p) => p,
        Err((reason, message)) => return rec.fail_before_injection(reason, message).await,
    };

    rec.status.restore = Some(restore_plan);
    rec.status.budget = Some(BudgetRecord {
        remaining_before: min_budget(rec.status.gate.as_ref()),
        ..Default::default()
    });
    rec.status.phase = RunPhase::Injecting;
    rec.status.start_time = Some(now());
    rec.step("RestorePlanSaved", describe(&plan));
    if let Err(e) = rec.save().await {
        return rec
            .fail_before_injection(
                "RestorePlanNotSaved",
                format!("the restore plan could not be written: {e}"),
            )
            .await;
    }
    if exp.spec.dry_run {
        rec.step("DryRun", format!("dry run: would {}", describe(&plan)));
        rec.status.phase = RunPhase::Completed;
        rec.status.verdict = Some(Verdict::Inconclusive);
        if let Some(r) = rec.status.restore.as_mut() {
            r.done = true;
        }
        rec.status.completion_time = Some(now());
        rec.save_final().await;
        return;
    }

    let started = Instant::now();
    let deadline = started + duration;
    let mut seen = Seen::default();
    let mut held: Vec<Held> = Vec::new();
    rec.status.phase = RunPhase::Observing;
    rec.save_or_log().await;
    rec.event(false, "Injecting", describe(&plan)).await;

    let abort: Option<(String, String, Instant)> = {
        let action = async {
            match &plan {
                Plan::Scale { spec, ns, selector } => {
                    scale_sequence(ctx, rec, spec, ns, selector, deadline).await
                }
                Plan::Hold { spec, target } => {
                    hold_sequence(rec, spec, target, &mut held, deadline).await
                }
                Plan::Clients {
                    spec,
                    kind,
                    ns,
                    name,
                    from,
                } => clients_sequence(ctx, rec, spec, *kind, ns, name, *from, deadline).await,
            }
        };
        let observer = observe(ctx, guards, policy, started, observe_every, &mut seen);
        tokio::select! {
            res = action => res.err().map(|e| ("ActionFailed".to_owned(), e, Instant::now())),
            a = observer => Some(a),
            a = interrupted(abort_rx) => Some(a),
        }
    };

    // Held connections live in this process: close them before anything
    // that needs the API server, which may be what hangs (a leader that
    // lost its lease must stop injecting at once, not after a write).
    let closed = held.len();
    held.clear();
    rec.status.phase = RunPhase::Restoring;
    if let Some((reason, message, detected)) = &abort {
        record_abort(ctx, rec, reason, message, *detected).await;
    }
    rec.step("RestoreStarted", "undoing the fault from the saved plan");
    rec.save_or_log().await;
    let restore_result = restore(ctx, rec, &plan, closed).await;
    match &restore_result {
        Ok(msg) => {
            if let Some(r) = rec.status.restore.as_mut() {
                r.done = true;
                r.connections_held = r.connections_held.map(|_| 0);
            }
            rec.step("Restored", msg.clone());
        }
        Err(e) => {
            rec.step("RestoreFailed", e.clone());
            rec.event(true, "RestoreFailed", e.clone()).await;
        }
    }

    let extra = match &plan {
        Plan::Scale { spec, .. } => Some(order_result(spec, rec.status.observations.as_ref())),
        _ => None,
    };
    let phase = match (&restore_result, &abort) {
        (Err(_), _) => RunPhase::Failed,
        (Ok(_), Some(_)) => RunPhase::Aborted,
        (Ok(_), None) => RunPhase::Completed,
    };
    finish(
        ctx,
        rec,
        exp,
        guards,
        started,
        &mut seen,
        Recovery::Unmeasured,
        extra,
        phase,
    )
    .await;
}

async fn prepare(
    ctx: &Context,
    exp: &ChaosExperiment,
    own_ns: &str,
    target_ns: &str,
) -> Result<(Plan, RestorePlan), (&'static str, String)> {
    let a = &exp.spec.action;
    if let Some(sd) = &a.scale_down {
        let w = workload::get(&ctx.client, sd.target.kind, target_ns, &sd.target.name)
            .await
            .map_err(|e| ("KubernetesApiError", e))?
            .ok_or_else(|| {
                (
                    "WorkloadNotFound",
                    format!(
                        "spec.action.scaleDown.target: {:?} {target_ns}/{} does not exist",
                        sd.target.kind, sd.target.name
                    ),
                )
            })?;
        let restore = RestorePlan {
            workload: Some(WorkloadRestore {
                kind: format!("{:?}", sd.target.kind),
                namespace: target_ns.to_owned(),
                name: sd.target.name.clone(),
                replicas: w.replicas,
            }),
            ..Default::default()
        };
        return Ok((
            Plan::Scale {
                spec: sd.clone(),
                ns: target_ns.to_owned(),
                selector: w.selector,
            },
            restore,
        ));
    }
    let Some(ce) = &a.connection_exhaustion else {
        return Err((
            "InvalidAction",
            "spec.action must set exactly one of podKill, scaleDown or connectionExhaustion".into(),
        ));
    };
    match ce.mode {
        ConnectionMode::Hold => {
            let target =
                connections::resolve(&ctx.client, own_ns, ce, &ctx.connection_allow).await?;
            // One probe connection, closed at once: a target that is down
            // makes the experiment meaningless, and nothing is held.
            match connections::open(&target).await {
                Ok(probe) => drop(probe),
                Err(e) => {
                    return Err((
                        "TargetUnreachable",
                        format!(
                            "spec.action.connectionExhaustion.target {} does not accept connections: {e}",
                            target.address()
                        ),
                    ));
                }
            }
            Ok((
                Plan::Hold {
                    spec: ce.clone(),
                    target,
                },
                RestorePlan {
                    connections_held: Some(0),
                    ..Default::default()
                },
            ))
        }
        ConnectionMode::ScaleClients => {
            let c = ce.clients.as_ref().ok_or((
                "InvalidTarget",
                "spec.action.connectionExhaustion.clients is required in mode ScaleClients".into(),
            ))?;
            let w = workload::get(&ctx.client, c.kind, target_ns, &c.name)
                .await
                .map_err(|e| ("KubernetesApiError", e))?
                .ok_or_else(|| {
                    (
                        "WorkloadNotFound",
                        format!(
                            "spec.action.connectionExhaustion.clients: {:?} {target_ns}/{} does not exist",
                            c.kind, c.name
                        ),
                    )
                })?;
            Ok((
                Plan::Clients {
                    spec: ce.clone(),
                    kind: c.kind,
                    ns: target_ns.to_owned(),
                    name: c.name.clone(),
                    from: w.replicas,
                },
                RestorePlan {
                    workload: Some(WorkloadRestore {
                        kind: format!("{:?}", c.kind),
                        namespace: target_ns.to_owned(),
                        name: c.name.clone(),
                        replicas: w.replicas,
                    }),
                    ..Default::default()
                },
            ))
        }
    }
}

fn describe(plan: &Plan) -> String {
    match plan {
        Plan::Scale { spec, ns, .. } => format!(
            "scale {:?} {ns}/{} up to {}, then down to {}, and record which pods the controller removes; restore puts the replica count back",
            spec.target.kind, spec.target.name, spec.scale_up_to, spec.scale_down_to
        ),
        Plan::Hold { spec, target } => format!(
            "open up to {} {:?} connections to {} in steps of {}, hold them {}; restore closes every one",
            spec.connections,
            spec.protocol,
            target.address(),
            spec.ramp_step.unwrap_or(1),
            spec.hold_for
        ),
        Plan::Clients {
            spec,
            kind,
            ns,
            name,
            from,
        } => format!(
            "scale client {kind:?} {ns}/{name} from {from} up to {} replicas in steps of {}, hold {}; restore puts {from} back",
            spec.connections,
            spec.ramp_step.unwrap_or(1),
            spec.hold_for
        ),
    }
}

/// Watch the guarding SLOs every `observe_every` until an abort rule fires.
async fn observe(
    ctx: &Context,
    guards: &[Guard],
    policy: Policy,
    started: Instant,
    observe_every: Duration,
    seen: &mut Seen,
) -> (String, String, Instant) {
    let mut next = started + observe_every;
    loop {
        tokio::time::sleep_until(next).await;
        next += observe_every;
        let tick = Instant::now();
        if let Some((reason, message)) = abort_check(
            ctx,
            guards,
            policy.max_budget_spend,
            started.elapsed(),
            observe_every,
            seen,
        )
        .await
        {
            return (reason, message, tick);
        }
    }
}

/// Resolves when the run is told to stop (suspend, deletion, shutdown).
async fn interrupted(abort_rx: &mut watch::Receiver<Option<String>>) -> (String, String, Instant) {
    loop {
        if let Some(why) = abort_rx.borrow_and_update().clone() {
            return ("Interrupted".into(), why, Instant::now());
        }
        if abort_rx.changed().await.is_err() {
            return (
                "Interrupted".into(),
                "the operator is shutting down".into(),
                Instant::now(),
            );
        }
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

async fn scale_sequence(
    ctx: &Context,
    rec: &mut Record,
    spec: &ScaleDownSpec,
    ns: &str,
    selector: &Selector,
    deadline: Instant,
) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let (kind, name) = (spec.target.kind, spec.target.name.as_str());
    workload::scale(&ctx.client, kind, ns, name, spec.scale_up_to).await?;
    rec.step(
        "ScaledUp",
        format!("{kind:?} {ns}/{name} scaled to {}", spec.scale_up_to),
    );
    rec.save_or_log().await;
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
        "AllReady",
        format!(
            "{} available of {up}; {} pods in all",
            state.available,
            before.len()
        ),
    );
    workload::scale(&ctx.client, kind, ns, name, spec.scale_down_to).await?;
    rec.step(
        "ScaledDown",
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
        "RemovalsRecorded",
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

async fn hold_sequence(
    rec: &mut Record,
    spec: &ConnectionExhaustionSpec,
    target: &Target,
    held: &mut Vec<Held>,
    deadline: Instant,
) -> Result<(), String> {
    let want = usize::try_from(spec.connections).unwrap_or(0);
    let step = usize::try_from(spec.ramp_step.unwrap_or(1))
        .unwrap_or(1)
        .max(1);
    let every = spec
        .ramp_interval
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        .unwrap_or(Duration::from_secs(1));
    let hold_for = parse_duration(&spec.hold_for).unwrap_or(Duration::from_secs(30));
    let mut refused = false;
    while held.len() < want && !refused {
        note_drops(rec, target, connections::prune(held), held.len());
        for _ in 0..step {
            if held.len() >= want {
                break;
            }
            match connections::open(target).await {
                Ok(h) => held.push(h),
                Err(e) => {
                    let obs = rec
                        .status
                        .observations
                        .get_or_insert_with(Observations::default);
                    obs.connections_at_first_refusal = i32::try_from(held.len()).ok();
                    obs.refusal_message = Some(e.clone());
                    rec.step(
                        "TargetRefused",
                        format!(
                            "{} refused connection {} with {} held: {e}",
                            target.address(),
                            held.len() + 1,
                            held.len()
                        ),
                    );
                    refused = true;
                    break;
                }
            }
        }
        let n = i32::try_from(held.len()).unwrap_or(i32::MAX);
        let obs = rec
            .status
            .observations
            .get_or_insert_with(Observations::default);
        obs.max_connections_held = Some(obs.max_connections_held.unwrap_or(0).max(n));
        if let Some(r) = rec.status.restore.as_mut() {
            r.connections_held = Some(n);
        }
        rec.step(
            "ConnectionsHeld",
            format!("{n} connections to {} held", target.address()),
        );
        rec.save_or_log().await;
        if refused || held.len() >= want || Instant::now() + every > deadline {
            break;
        }
        tokio::time::sleep(every).await;
    }
    rec.step(
        "Holding",
        format!(
            "holding {} connections for {}, taking every slot the target frees",
            held.len(),
            spec.hold_for
        ),
    );
    rec.save_or_log().await;
    // Keep the target full: a slot another client gives up is taken again,
    // as a crowd of clients would. That is what starves a pool that
    // recycles its sessions.
    let hold_end = (Instant::now() + hold_for).min(deadline);
    // Freed slots are retaken quickly, as a crowd of clients would.
    let retake = every.min(Duration::from_millis(100));
    while Instant::now() + retake <= hold_end {
        tokio::time::sleep(retake).await;
        // Liveness first: a connection the target dropped is not held, and
        // its slot is free to take again.
        let before = held.len();
        let dropped = connections::prune(held);
        note_drops(rec, target, dropped, held.len());
        for _ in 0..step {
            if held.len() >= want {
                break;
            }
            match connections::open(target).await {
                Ok(h) => held.push(h),
                Err(_) => break,
            }
        }
        let n = i32::try_from(held.len()).unwrap_or(i32::MAX);
        if dropped == 0 && held.len() == before {
            continue;
        }
        if let Some(r) = rec.status.restore.as_mut() {
            r.connections_held = Some(n);
        }
        let obs = rec
            .status
            .observations
            .get_or_insert_with(Observations::default);
        if obs.max_connections_held.is_none_or(|m| n > m) {
            obs.max_connections_held = Some(n);
        }
        if held.len() != before - dropped {
            rec.step("ConnectionsHeld", format!("{n} connections held"));
        }
        rec.save_or_log().await;
    }
    tokio::time::sleep_until(hold_end).await;
    Ok(())
}

/// Record connections the target dropped as evidence: how many, when, and
/// how many are still held.
fn note_drops(rec: &mut Record, target: &Target, dropped: usize, held: usize) {
    if dropped == 0 {
        return;
    }
    let (dropped, held) = (
        i32::try_from(dropped).unwrap_or(i32::MAX),
        i32::try_from(held).unwrap_or(i32::MAX),
    );
    let obs = rec
        .status
        .observations
        .get_or_insert_with(Observations::default);
    obs.connections_dropped = Some(obs.connections_dropped.unwrap_or(0).saturating_add(dropped));
    obs.connection_drops.push(ConnectionDrop {
        time: now_micro(),
        dropped,
        held,
    });
    if let Some(r) = rec.status.restore.as_mut() {
        r.connections_held = Some(held);
    }
    rec.step(
        "ConnectionsDropped",
        format!(
            "{} dropped {dropped} held connections; {held} still held",
            target.address()
        ),
    );
}

#[allow(clippy::too_many_arguments)]
async fn clients_sequence(
    ctx: &Context,
    rec: &mut Record,
    spec: &ConnectionExhaustionSpec,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
    from: i32,
    deadline: Instant,
) -> Result<(), String> {
    let step = spec.ramp_step.unwrap_or(1).max(1);
    let every = spec
        .ramp_interval
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        .unwrap_or(Duration::from_secs(1));
    let hold_for = parse_duration(&spec.hold_for).unwrap_or(Duration::from_secs(30));
    let mut replicas = from;
    while replicas < spec.connections {
        replicas = (replicas + step).min(spec.connections);
        workload::scale(&ctx.client, kind, ns, name, replicas).await?;
        rec.step(
            "ClientsScaled",
            format!("{kind:?} {ns}/{name} scaled to {replicas}"),
        );
        rec.save_or_log().await;
        if Instant::now() + every > deadline {
            break;
        }
        tokio::time::sleep(every).await;
    }
    tokio::time::sleep_until((Instant::now() + hold_for).min(deadline)).await;
    Ok(())
}

/// Undo the fault. Connections were closed already (`closed` of them, by
/// dropping them); replica counts go back to the saved plan and the
/// restore waits (bounded) for Ready pods.
async fn restore(
    ctx: &Context,
    rec: &mut Record,
    plan: &Plan,
    closed: usize,
) -> Result<String, String> {
    let n = closed;
    let Some(w) = rec.status.restore.as_ref().and_then(|r| r.workload.clone()) else {
        return Ok(format!("{n} connections closed"));
    };
    let kind = match plan {
        Plan::Scale { spec, .. } => spec.target.kind,
        Plan::Clients { kind, .. } => *kind,
        Plan::Hold { .. } => return Ok(format!("{n} connections closed")),
    };
    // Retried: an API server that is away for a while (a restart) must not
    // leave the workload at the fault's replica count.
    super::retry("restoring the replica count", super::RETRY_FOR, || {
        workload::scale(&ctx.client, kind, &w.namespace, &w.name, w.replicas)
    })
    .await?;
    let until = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < until {
        // Read errors only mean "not known yet": the replica count is back.
        if let Ok(Some(r)) = workload::rollout(&ctx.client, kind, &w.namespace, &w.name).await {
            if r.available_at(w.replicas) {
                return Ok(format!(
                    "{} {}/{} back to {} replicas, {} available",
                    w.kind, w.namespace, w.name, w.replicas, r.available
                ));
            }
            last = Some(r);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(format!(
        "{} {}/{} set back to {} replicas ({} available after 60s)",
        w.kind,
        w.namespace,
        w.name,
        w.replicas,
        last.map_or_else(|| "none known".to_owned(), |r| r.available.to_string())
    ))
}
