//! One run from gate to verdict: save the restore plan, inject, observe
//! every `observeInterval`, abort when the budget is at risk, restore
//! always, then judge the hypothesis. The run's status is written at every
//! step, so it is the durable record even if this process dies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use headroom_experiments::evidence::PodRecord;
use headroom_experiments::pod_kill::{self, Limits, PodKillSpec, live};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::events::{Event, EventType};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{abort_rule, heartbeat, key, now, now_micro};
use crate::duration::{format_duration, parse_duration};
use crate::gate::{self, GuardReading, Policy};
use crate::indicator;
use crate::metrics::RunLabels;
use crate::reconcile::slo::{Freshness, assess, tier_plans};
use crate::reconcile::{Context, MANAGER};
use crate::resources::CHAOS_ENABLED_LABEL;
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{
    BudgetRecord, ExpectationResult, ExperimentRun, ExperimentRunStatus, GateRecord, Observations,
    RestorePlan, RunPhase, SloBurnRate, TimelineEntry, Verdict,
};
use crate::resources::slo::ServiceLevelObjective;
use crate::verdict::{self, Measured, Recovery};

/// Everything a run needs to start.
pub struct Job {
    pub experiment: ChaosExperiment,
    /// The run object as created (its UID names it in Events).
    pub run: ExperimentRun,
    pub gate: GateRecord,
    pub abort: watch::Receiver<Option<String>>,
}

/// Drive the run to a final phase; unregisters it at the end.
pub async fn drive(ctx: Arc<Context>, job: Job) {
    let ns = job.run.namespace().unwrap_or_default();
    let run_key = key(&ns, &job.run.name_any());
    ctx.metrics.active_runs.inc();
    let mut rec = Record::new(&ctx, &job.run, job.gate.clone());
    let beat = tokio::spawn(heartbeat::keep(
        ctx.clone(),
        ns.clone(),
        job.run.name_any(),
        rec.lost.clone(),
    ));
    run(&ctx, &mut rec, job).await;
    beat.abort();
    ctx.metrics.active_runs.dec();
    if rec.is_lost() {
        // Another instance finishes this run and counts it.
        ctx.runs.remove(&run_key);
        return;
    }
    ctx.metrics
        .runs
        .get_or_create(&RunLabels {
            phase: format!("{:?}", rec.status.phase),
            verdict: rec
                .status
                .verdict
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "None".into()),
        })
        .inc();
    ctx.runs.remove(&run_key);
}

/// The run's status in memory, written to the API server at each step.
pub(super) struct Record {
    api: Api<ExperimentRun>,
    name: String,
    reference: ObjectReference,
    pub(super) status: ExperimentRunStatus,
    ctx_recorder: kube::runtime::events::Recorder,
    /// Set when another instance took the run over: from then on this
    /// process writes nothing to the run, whose record is the new driver's.
    lost: Arc<AtomicBool>,
}

impl Record {
    fn new(ctx: &Context, run: &ExperimentRun, gate: GateRecord) -> Self {
        let ns = run.namespace().unwrap_or_default();
        Self {
            api: Api::namespaced(ctx.client.clone(), &ns),
            name: run.name_any(),
            reference: ObjectReference {
                api_version: Some("headroom.dev/v1alpha1".into()),
                kind: Some("ExperimentRun".into()),
                name: Some(run.name_any()),
                namespace: Some(ns),
                uid: run.metadata.uid.clone(),
                ..Default::default()
            },
            status: ExperimentRunStatus {
                gate: Some(gate),
                ..Default::default()
            },
            ctx_recorder: ctx.recorder.clone(),
            lost: Arc::default(),
        }
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub(super) fn step(&mut self, step: &str, message: impl Into<String>) {
        let message = message.into();
        info!(run = %self.name, step, %message, "run step");
        self.status.timeline.push(TimelineEntry {
            time: now_micro(),
            step: step.to_owned(),
            message: Some(message),
        });
    }

    pub(super) async fn save(&self) -> Result<(), kube::Error> {
        if self.is_lost() {
            info!(run = %self.name, "not writing the run's record: another instance drives it now");
            return Ok(());
        }
        let mut status = serde_json::to_value(&self.status).map_err(kube::Error::SerdeError)?;
        // `status.driver` belongs to the heartbeat's own field manager; left
        // out here so this apply neither owns nor removes it.
        if let Some(fields) = status.as_object_mut() {
            fields.remove("driver");
        }
        let patch = json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ExperimentRun",
            "status": status,
        });
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
    }

    /// Save, and only log a failure: past injection, the restore must go on
    /// whether or not the API server takes the write.
    pub(super) async fn save_or_log(&self) {
        if let Err(e) = self.save().await {
            warn!(run = %self.name, error = %e, "writing run status failed");
        }
    }

    /// The run's final record, retried while the API server is away: a run
    /// whose last write fell into an outage must not look unfinished (and
    /// then be adopted as an orphan and re-judged) once it is back.
    pub(super) async fn save_final(&self) {
        if let Err(e) = super::retry("writing the run's final status", super::RETRY_FOR, || {
            self.save()
        })
        .await
        {
            warn!(run = %self.name, error = %e, "giving up on writing the run's final status");
        }
    }

    pub(super) async fn event(&self, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.ctx_recorder.publish(&ev, &self.reference).await {
            warn!(run = %self.name, error = %e, "publishing event failed");
        }
    }

    /// End without touching anything.
    pub(super) async fn fail_before_injection(&mut self, reason: &str, message: String) {
        self.status.phase = RunPhase::Failed;
        self.status.reason = Some(format!("{reason}: {message}"));
        self.status.verdict = Some(Verdict::Inconclusive);
        self.status.completion_time = Some(now());
        self.step(reason, format!("{message}; nothing was injected"));
        self.save_final().await;
        self.event(true, reason, message).await;
    }
}

/// A guarding SLO and its abort rule.
pub(super) struct Guard {
    name: String,
    pub(super) slo: ServiceLevelObjective,
    period: Duration,
    window: String,
    abort_at: f64,
}

async fn load_guards(
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
pub(super) async fn read_guards(
    ctx: &Context,
    guards: &[Guard],
    elapsed: Duration,
) -> Result<Vec<GuardReading>, String> {
    let mut out = Vec::with_capacity(guards.len());
    for g in guards {
        let budget = crate::budget::error_budget(g.slo.spec.objective);
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
            e.map(|e| e / budget * elapsed.as_secs_f64() / g.period.as_secs_f64())
        } else {
            None
        };
        out.push(GuardReading {
            slo: g.name.clone(),
            window: g.window.clone(),
            burn_rate: ratio.map(|r| r / budget),
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
pub(super) async fn abort_check(
    ctx: &Context,
    guards: &[Guard],
    max_budget_spend: f64,
    elapsed: Duration,
    next_in: Duration,
    seen: &mut Seen,
) -> Option<(String, String)> {
    let mut readings = read_guards(ctx, guards, elapsed).await;
    if let Ok(r) = &mut readings {
        seen.project(r, guards, elapsed, next_in);
        seen.note(r);
    }
    if let Some((reason, message)) = gate::abort_reason(&readings, max_budget_spend) {
        return Some((reason.into(), message));
    }
    let ns = &ctx.operator_namespace;
    match crate::pause::read(&ctx.client, ns).await {
        Ok(None) => None,
        Ok(Some(why)) => Some(("GlobalPause".into(), why)),
        Err(e) => Some((
            "KubernetesApiUnavailable".into(),
            format!(
                "the global pause (ConfigMap {ns}/{}) cannot be read: {e}",
                crate::pause::NAME
            ),
        )),
    }
}

/// Refuse namespaces that did not opt in, and the operator's own.
pub(super) async fn check_target_namespace(ctx: &Context, ns: &str) -> Result<(), String> {
    if ns == ctx.operator_namespace {
        return Err(format!(
            "namespace {ns} is the operator's own; Headroom never injects faults there"
        ));
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let namespace = api
        .get_opt(ns)
        .await
        .map_err(|e| format!("reading namespace {ns}: {e}"))?
        .ok_or_else(|| format!("namespace {ns} does not exist"))?;
    if namespace
        .labels()
        .get(CHAOS_ENABLED_LABEL)
        .map(String::as_str)
        != Some("enabled")
    {
        return Err(format!(
            "namespace {ns} is not opted in: run `kubectl label namespace {ns} {CHAOS_ENABLED_LABEL}=enabled`"
        ));
    }
    Ok(())
}

/// What the observation loop has seen so far.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) max_burn: BTreeMap<String, Option<f64>>,
    pub(super) spent: BTreeMap<String, f64>,
    /// When the last round's pods were deleted, while recovery is pending.
    recovering_since: Option<Instant>,
    /// Time to recover, per round.
    recoveries: Vec<Duration>,
    first_kill: Option<Instant>,
    /// Each guard's spend at the previous observation, for its pace.
    last_spend: BTreeMap<String, gate::SpendPoint>,
}

impl Seen {
    /// Fill in each reading's projected spend at the next observation,
    /// `next_in` from now, and remember this observation's spend.
    pub(super) fn project(
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

    pub(super) fn note(&mut self, readings: &[GuardReading]) {
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

    fn recovery(&self) -> Recovery {
        match (self.first_kill, self.recovering_since) {
            (None, _) => Recovery::Unmeasured,
            (Some(_), Some(since)) => Recovery::NotRecovered(since.elapsed()),
            (Some(_), None) => self
                .recoveries
                .iter()
                .max()
                .copied()
                .map_or(Recovery::Unmeasured, Recovery::Recovered),
        }
    }
}

async fn run(ctx: &Context, rec: &mut Record, job: Job) {
    let exp = &job.experiment;
    let mut abort_rx = job.abort;
    let ns = exp.namespace().unwrap_or_default();
    let policy = Policy::from_spec(&exp.spec.budget_policy);
    let (duration, observe_every) = match (
        parse_duration(&exp.spec.duration),
        parse_duration(&exp.spec.observe_interval),
    ) {
        (Ok(d), Ok(o)) if !o.is_zero() => (d, o),
        _ => {
            return rec
                .fail_before_injection(
                    "InvalidSpec",
                    "spec.duration or spec.observeInterval is not a positive duration".into(),
                )
                .await;
        }
    };
    let guards = match load_guards(ctx, exp, &policy).await {
        Ok(g) => g,
        Err(e) => return rec.fail_before_injection("InvalidGuard", e).await,
    };
    let Some(pk) = exp.spec.action.pod_kill.clone() else {
        return super::staged::run(
            ctx,
            rec,
            exp,
            &guards,
            policy,
            duration,
            observe_every,
            &mut abort_rx,
        )
        .await;
    };
    let target_ns = pk.namespace.clone().unwrap_or_else(|| ns.clone());
    if let Err(e) = check_target_namespace(ctx, &target_ns).await {
        return rec.fail_before_injection("NamespaceNotAllowed", e).await;
    }
    let selector = match live::selector(&pk) {
        Ok(s) => s,
        Err(e) => return rec.fail_before_injection("InvalidSelector", e).await,
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &target_ns);
    let ready_before = match live::ready_count(&pods, &selector).await {
        Ok(n) => n,
        Err(e) => {
            return rec
                .fail_before_injection("KubernetesApiError", format!("listing pods: {e}"))
                .await;
        }
    };
    let limits = Limits {
        max_pods: exp.spec.blast_radius.as_ref().and_then(|b| b.max_pods),
        max_percent: exp.spec.blast_radius.as_ref().and_then(|b| b.max_percent),
    };

    // The restore plan goes to the API server before anything is touched;
    // if that write fails, nothing is.
    // 53 bits: exact in JSON, and an int64 in the CRD schema.
    let seed: u64 = rand::random::<u64>() >> 11;
    rec.status.seed = Some(seed);
    rec.status.restore = Some(RestorePlan {
        ready_pods_before: i32::try_from(ready_before).ok(),
        ..Default::default()
    });
    rec.status.budget = Some(BudgetRecord {
        remaining_before: min_budget(rec.status.gate.as_ref()),
        ..Default::default()
    });
    rec.status.phase = RunPhase::Injecting;
    rec.status.start_time = Some(now());
    rec.step(
        "RestorePlanSaved",
        format!(
            "{ready_before} Ready pods match {selector} in {target_ns}; deleted pods are replaced by their controller, and the restore waits until {ready_before} are Ready again"
        ),
    );
    if let Err(e) = rec.save().await {
        warn!(run = %rec.name, error = %e, "cannot save the restore plan; not injecting");
        return rec
            .fail_before_injection(
                "RestorePlanNotSaved",
                format!("the restore plan could not be written: {e}"),
            )
            .await;
    }

    if exp.spec.dry_run {
        let outcome = plan_round(&pods, &selector, &pk, limits, seed).await;
        let message = match outcome {
            Ok((victims, total)) => format!(
                "dry run: would delete {} of {total} pods: {}",
                victims.len(),
                victims
                    .iter()
                    .map(|p| p.name_any())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("dry run: the round would be refused: {e}"),
        };
        rec.step("DryRun", message);
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
    let mut seen = Seen::default();
    let rounds = pk.repeat.unwrap_or(1).max(1);
    let round_every = pk
        .interval
        .as_deref()
        .and_then(|i| parse_duration(i).ok())
        .unwrap_or(duration / u32::try_from(rounds).unwrap_or(1));
    let mut round = 0;
    let mut abort: Option<(String, String, Instant)> = None;

    // First round, then observe.
    match kill_round(ctx, rec, &pods, &selector, &pk, limits, seed, round).await {
        Ok(killed) => {
            round += 1;
            if !killed.is_empty() {
                seen.first_kill = Some(Instant::now());
                seen.recovering_since = Some(Instant::now());
            }
        }
        Err(e) => {
            abort = Some(("InjectionRefused".into(), e, Instant::now()));
        }
    }
    rec.status.phase = RunPhase::Observing;
    rec.save_or_log().await;
    if abort.is_none() {
        rec.event(
            false,
            "Injected",
            format!(
                "podKill round 1 of {rounds} applied; observing every {}",
                exp.spec.observe_interval
            ),
        )
        .await;
    }

    let deadline = started + duration;
    let mut next_observe = started + observe_every;
    let mut next_round = started + round_every;
    let recovery_poll = Duration::from_millis(500);
    while abort.is_none() {
        let now_i = Instant::now();
        if now_i >= deadline {
            break;
        }
        let waiting_recovery = seen.recovering_since.is_some();
        tokio::select! {
            changed = abort_rx.changed() => {
                let why = abort_rx.borrow().clone();
                match (changed, why) {
                    (Ok(()), Some(why)) => abort = Some(("Interrupted".into(), why, Instant::now())),
                    (Err(_), _) => abort = Some(("Interrupted".into(), "the operator is shutting down".into(), Instant::now())),
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(next_observe) => {
                let tick = Instant::now();
                next_observe += observe_every;
                if let Some((reason, message)) =
                    abort_check(ctx, &guards, policy.max_budget_spend, started.elapsed(), observe_every, &mut seen).await
                {
                    abort = Some((reason, message, tick));
                }
            }
            () = tokio::time::sleep(recovery_poll), if waiting_recovery => {
                if let (Some(since), Ok(ready)) = (seen.recovering_since, live::ready_count(&pods, &selector).await)
                    && ready >= ready_before
                {
                    let took = since.elapsed();
                    seen.recoveries.push(took);
                    seen.recovering_since = None;
                    rec.step("Recovered", format!("{ready} of {ready_before} pods Ready again after {:.1}s", took.as_secs_f64()));
                    rec.save_or_log().await;
                }
            }
            () = tokio::time::sleep_until(next_round), if round < rounds => {
                next_round += round_every;
                match kill_round(ctx, rec, &pods, &selector, &pk, limits, seed, round).await {
                    Ok(killed) => {
                        round += 1;
                        if !killed.is_empty() && seen.recovering_since.is_none() {
                            seen.recovering_since = Some(Instant::now());
                        }
                    }
                    Err(e) => abort = Some(("InjectionRefused".into(), e, Instant::now())),
                }
                rec.save_or_log().await;
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
    }

    // Restore, always.
    rec.status.phase = RunPhase::Restoring;
    if let Some((reason, message, detected)) = &abort {
        record_abort(ctx, rec, reason, message, *detected).await;
    }
    rec.step(
        "RestoreStarted",
        "waiting for the workload's controller to bring the deleted pods back",
    );
    rec.save_or_log().await;
    let recover_bound = exp
        .spec
        .hypothesis
        .recovers_within
        .as_deref()
        .and_then(|r| parse_duration(r).ok())
        .unwrap_or(Duration::from_secs(30));
    while let Some(since) = seen.recovering_since {
        match live::ready_count(&pods, &selector).await {
            Ok(ready) if ready >= ready_before => {
                let took = since.elapsed();
                seen.recoveries.push(took);
                seen.recovering_since = None;
                rec.step(
                    "Recovered",
                    format!(
                        "{ready} of {ready_before} pods Ready again after {:.1}s",
                        took.as_secs_f64()
                    ),
                );
            }
            _ if since.elapsed() > recover_bound.max(Duration::from_secs(5)) => break,
            _ => tokio::time::sleep(recovery_poll).await,
        }
    }
    if let Some(r) = rec.status.restore.as_mut() {
        r.done = true;
    }
    rec.step(
        "Restored",
        match seen.recovering_since {
            None => "nothing left to undo: every deleted pod was replaced".to_owned(),
            Some(_) => {
                "nothing left to undo by Headroom; the controller had not replaced every pod yet"
                    .to_owned()
            }
        },
    );

    let obs = rec
        .status
        .observations
        .get_or_insert_with(Observations::default);
    obs.recovery_seconds = seen.recoveries.iter().max().map(Duration::as_secs_f64);
    let recovery = seen.recovery();
    let phase = if abort.is_some() {
        RunPhase::Aborted
    } else {
        RunPhase::Completed
    };
    finish(
        ctx, rec, exp, &guards, started, &mut seen, recovery, None, phase,
    )
    .await;
}

/// An abort: its reason in the status and timeline, the reaction time in
/// the metric, an Event.
pub(super) async fn record_abort(
    ctx: &Context,
    rec: &mut Record,
    reason: &str,
    message: &str,
    detected: Instant,
) {
    rec.status.reason = Some(format!("{reason}: {message}"));
    rec.step("AbortRequested", format!("{reason}: {message}"));
    ctx.metrics
        .abort_latency
        .observe(detected.elapsed().as_secs_f64());
    rec.event(true, "Aborted", format!("{reason}: {message}"))
        .await;
}

/// After the restore, for every action: a last reading, the budget after
/// and the spend, the expectations judged (plus an action's own, e.g. the
/// scale-down order), the final phase, an Event.
#[allow(clippy::too_many_arguments)]
pub(super) async fn finish(
    ctx: &Context,
    rec: &mut Record,
    exp: &ChaosExperiment,
    guards: &[Guard],
    started: Instant,
    seen: &mut Seen,
    recovery: Recovery,
    extra: Option<ExpectationResult>,
    phase: RunPhase,
) {
    if let Ok(readings) = read_guards(ctx, guards, started.elapsed()).await {
        seen.note(&readings);
    }
    let mut after: Option<f64> = None;
    for g in guards {
        let status = assess(&g.slo, ctx, Freshness::Fresh).await;
        if let Some(r) = status.budget_remaining {
            after = Some(after.map_or(r, |a| a.min(r)));
        }
    }
    let spent = seen
        .spent
        .values()
        .copied()
        .fold(None, |acc: Option<f64>, s| {
            Some(acc.map_or(s, |a| a.max(s)))
        });
    if let Some(b) = rec.status.budget.as_mut() {
        b.remaining_after = after;
        b.spent = spent;
        b.spent_of_cap = spent.and_then(|s| {
            gate::spent_of_cap(
                s,
                Policy::from_spec(&exp.spec.budget_policy).max_budget_spend,
            )
        });
    }
    let recovers_within = exp
        .spec
        .hypothesis
        .recovers_within
        .as_deref()
        .and_then(|r| parse_duration(r).ok());
    let measured = Measured {
        max_burn_rates: seen.max_burn.clone(),
        recovery,
    };
    let (_, mut results) = verdict::judge(
        &exp.spec.hypothesis,
        &exp.spec.slos,
        recovers_within,
        &measured,
    );
    results.extend(extra);
    let mut verdict = verdict::conjunction(&results);
    if phase == RunPhase::Aborted {
        let reason = rec
            .status
            .reason
            .as_deref()
            .and_then(|r| r.split(':').next())
            .unwrap_or_default()
            .to_owned();
        let cut = verdict::after_abort(verdict, &reason);
        if cut != verdict {
            rec.step(
                "CutShort",
                format!("aborted ({reason}) before the fault ran its course: the expectations that held so far do not confirm the hypothesis"),
            );
            verdict = cut;
        }
    }
    rec.status
        .observations
        .get_or_insert_with(Observations::default)
        .max_burn_rates = seen
        .max_burn
        .iter()
        .filter_map(|(slo, b)| {
            b.map(|b| SloBurnRate {
                slo: slo.clone(),
                burn_rate: b,
            })
        })
        .collect();
    rec.status.verdict = Some(verdict);
    rec.status.expectations = results;
    rec.status.phase = phase;
    rec.status.completion_time = Some(now());
    rec.step("Verdict", format!("{verdict:?}"));
    rec.save_final().await;
    rec.event(
        verdict == Verdict::Refuted,
        &format!("{verdict:?}"),
        format!(
            "run {:?}; hypothesis: {}",
            rec.status.phase, exp.spec.hypothesis.description
        ),
    )
    .await;
}

pub(super) fn min_budget(gate: Option<&GateRecord>) -> Option<f64> {
    gate?
        .slos
        .iter()
        .filter_map(|s| s.budget_remaining)
        .fold(None, |acc: Option<f64>, r| {
            Some(acc.map_or(r, |a| a.min(r)))
        })
}

/// The pods one round would delete, and how many were candidates.
async fn plan_round(
    pods: &Api<Pod>,
    selector: &Selector,
    pk: &PodKillSpec,
    limits: Limits,
    seed: u64,
) -> Result<(Vec<Pod>, usize), String> {
    let candidates = live::candidates(pods, selector)
        .await
        .map_err(|e| format!("listing pods: {e}"))?;
    let n = pk.victims_per_round(candidates.len());
    pod_kill::check_blast_radius(n, candidates.len(), limits).map_err(|e| e.to_string())?;
    let names: Vec<String> = candidates.iter().map(ResourceExt::name_any).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let chosen = pod_kill::choose(&refs, n, seed);
    let total = candidates.len();
    Ok((
        candidates
            .into_iter()
            .filter(|p| chosen.contains(&p.name_any().as_str()))
            .collect(),
        total,
    ))
}

/// Delete one round's pods, recording each in the evidence.
#[allow(clippy::too_many_arguments)]
async fn kill_round(
    ctx: &Context,
    rec: &mut Record,
    pods: &Api<Pod>,
    selector: &Selector,
    pk: &PodKillSpec,
    limits: Limits,
    seed: u64,
    round: i32,
) -> Result<Vec<PodRecord>, String> {
    let round_seed = seed.wrapping_add(u64::try_from(round).unwrap_or(0));
    let (victims, total) = plan_round(pods, selector, pk, limits, round_seed).await?;
    let mut killed = Vec::new();
    for pod in &victims {
        match live::delete(pods, pod, pk.grace_period_seconds).await {
            Ok(()) => {
                let record = live::record(pod, now_micro().0.to_string());
                rec.step(
                    "PodKilled",
                    format!(
                        "round {}: deleted {} (uid {}, node {}) of {total} candidates",
                        round + 1,
                        record.name,
                        record.uid.as_deref().unwrap_or("?"),
                        record.node.as_deref().unwrap_or("?")
                    ),
                );
                ctx.metrics.pods_killed.inc();
                killed.push(record);
            }
            // Gone already (or replaced): nothing was done to it.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(format!("deleting pod {}: {e}", pod.name_any())),
        }
    }
    rec.status
        .observations
        .get_or_insert_with(Observations::default)
        .killed_pods
        .extend(killed.iter().cloned());
    Ok(killed)
}

/// Finish a run this process did not start (the operator restarted, or
/// another instance died): restore from the saved plan, record why. The
/// caller has claimed the run (`heartbeat::claim`); its heartbeat is kept
/// while the restore runs.
pub async fn recover(ctx: Arc<Context>, run: ExperimentRun, previous: Option<String>) {
    let ns = run.namespace().unwrap_or_default();
    let run_key = key(&ns, &run.name_any());
    let mut rec = Record::new(
        &ctx,
        &run,
        run.status
            .clone()
            .unwrap_or_default()
            .gate
            .unwrap_or_default(),
    );
    rec.status = run.status.clone().unwrap_or_default();
    let beat = tokio::spawn(heartbeat::keep(
        ctx.clone(),
        ns,
        run.name_any(),
        rec.lost.clone(),
    ));
    let previous = previous
        .filter(|p| !p.is_empty())
        .map(|p| format!("instance {p}"))
        .unwrap_or_else(|| "an instance that recorded no heartbeat".into());
    restore_orphan(&ctx, &mut rec, &run, &previous).await;
    beat.abort();
    ctx.runs.remove(&run_key);
}

async fn restore_orphan(ctx: &Context, rec: &mut Record, run: &ExperimentRun, previous: &str) {
    let ns = run.namespace().unwrap_or_default();
    let phase = rec.status.phase;
    if phase == RunPhase::Pending {
        rec.status.phase = RunPhase::Aborted;
        rec.status.verdict = Some(Verdict::Inconclusive);
        rec.status.reason =
            Some("OperatorRestarted: the run never started; nothing was injected".into());
        rec.status.completion_time = Some(now());
        rec.step(
            "Abandoned",
            format!("{previous} stopped before injecting; nothing was touched"),
        );
        rec.save_final().await;
        return;
    }
    rec.status.phase = RunPhase::Restoring;
    rec.step(
        "RecoveryStarted",
        format!("this operator instance ({}) found the run in phase {phase:?}, driven by {previous} whose heartbeat ran out; restoring from the saved plan", ctx.instance.id),
    );
    rec.save_or_log().await;
    // podKill leaves nothing to undo: the workload's controller replaces the
    // pods. Wait (bounded) so the record says whether they are back.
    let before = rec
        .status
        .restore
        .as_ref()
        .and_then(|r| r.ready_pods_before);
    let exp = &run.spec.snapshot;
    if let (Some(pk), Some(before)) = (&exp.action.pod_kill, before)
        && let Ok(selector) = live::selector(pk)
    {
        let target_ns = pk.namespace.clone().unwrap_or_else(|| ns.clone());
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &target_ns);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(ready) = live::ready_count(&pods, &selector).await
                && ready >= usize::try_from(before).unwrap_or(0)
            {
                rec.step("Recovered", format!("{ready} of {before} pods Ready"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // A changed replica count is put back. Connections held by the dead
    // process were closed by the kernel when it died.
    if let Some(w) = rec.status.restore.as_ref().and_then(|r| r.workload.clone()) {
        let kind = match w.kind.as_str() {
            "StatefulSet" => headroom_experiments::scale_down::WorkloadKind::StatefulSet,
            "ReplicaSet" => headroom_experiments::scale_down::WorkloadKind::ReplicaSet,
            _ => headroom_experiments::scale_down::WorkloadKind::Deployment,
        };
        let scaled = super::retry("restoring the replica count", super::RETRY_FOR, || {
            super::workload::scale(&ctx.client, kind, &w.namespace, &w.name, w.replicas)
        })
        .await;
        match scaled {
            Ok(()) => rec.step(
                "ReplicasRestored",
                format!(
                    "{} {}/{} set back to {} replicas",
                    w.kind, w.namespace, w.name, w.replicas
                ),
            ),
            Err(e) => {
                rec.step("RestoreFailed", e.clone());
                rec.status.phase = RunPhase::Failed;
                rec.status.reason = Some(format!("RestoreFailed: {e}"));
                rec.save_final().await;
                rec.event(true, "RestoreFailed", e).await;
                return;
            }
        }
    }
    if let Some(r) = rec.status.restore.as_mut() {
        r.done = true;
        r.connections_held = r.connections_held.map(|_| 0);
    }
    rec.status.phase = RunPhase::Aborted;
    rec.status.verdict = Some(Verdict::Inconclusive);
    rec.status.reason = Some(format!(
        "OperatorRestarted: the run was interrupted when its driver ({previous}) stopped, and restored by instance {}",
        ctx.instance.id
    ));
    rec.status.completion_time = Some(now());
    rec.step(
        "Restored",
        format!("restore finished by instance {}", ctx.instance.id),
    );
    rec.save_final().await;
    rec.event(
        true,
        "RecoveredAfterRestart",
        format!("run found in phase {phase:?}; restored"),
    )
    .await;
}
