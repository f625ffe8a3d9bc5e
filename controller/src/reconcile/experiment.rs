//! The ChaosExperiment reconciler: validate, decide whether a run is due,
//! gate it, start it, and make sure every fault is restored — on suspend,
//! on deletion (finalizer), and after a restart of the operator.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Error;
use super::decision::{self, Next, WhileRunning};
use crate::conditions::{self, Status};
use crate::context::{Context, MANAGER};
use crate::engine::driver::{self, Job};
use crate::engine::heartbeat::Outcome as Claim;
use crate::engine::{self, ActiveRun, GateOutcome, evaluate_gate, key, now, now_micro};
use crate::metrics::{ControllerLabels, ReasonLabels};
use crate::resources::experiment::{
    ChaosExperiment, ChaosExperimentSpec, ChaosExperimentStatus, ConcurrencyPolicy, ExperimentPhase,
};
use crate::resources::run::{
    ExperimentRun, ExperimentRunSpec, ExperimentRunStatus, GateRecord, RunPhase, TimelineEntry,
    Trigger,
};
use crate::run_owner::{self, Holder};
use crate::slo_reader::Freshness;

/// Finalizer that holds an experiment until its runs are restored.
pub const FINALIZER: &str = "headroom.dev/restore";
/// Label on each ExperimentRun naming its experiment.
pub const EXPERIMENT_LABEL: &str = "headroom.dev/experiment";

/// Run the controller until the stream ends. Our own status writes do not
/// trigger a reconcile (see `caches`); spec, deletion, finalizers, a "run
/// now" request and any change to an owned run do.
pub async fn run(ctx: Arc<Context>, caches: Arc<crate::caches::Caches>) {
    let trigger = caches.experiment_tap.subscribe(&caches.experiments);
    ctx.metrics
        .experiment_gauges
        .serve(caches.experiments.clone());
    Controller::for_shared_stream(trigger, caches.experiments.clone())
        .owns_shared_stream(caches.run_tap.subscribe(&caches.runs))
        .with_config(
            kube::runtime::controller::Config::default().concurrency(super::RECONCILES_IN_FLIGHT),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(err) = res {
                warn!(error = %err, "experiment reconcile failed");
            }
        })
        .await;
}

fn error_policy(_exp: Arc<ChaosExperiment>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = %err, "experiment reconcile error");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ControllerLabels {
            controller: "experiment".into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(exp: Arc<ChaosExperiment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = exp.namespace().unwrap_or_default();
    let api: Api<ChaosExperiment> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, exp, |event| async {
        match event {
            Finalizer::Apply(exp) => apply(exp, ctx.clone()).await,
            Finalizer::Cleanup(exp) => cleanup(exp, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Checks the API server cannot make (CEL has no cron parser, no clock).
/// Returns the reason and a message naming the field and the fix.
pub fn validate_spec(spec: &ChaosExperimentSpec) -> Result<(), (&'static str, String)> {
    let duration = crate::duration::parse_duration(&spec.duration)
        .map_err(|e| ("InvalidDuration", format!("spec.duration: {e}")))?;
    let observe = crate::duration::parse_duration(&spec.observe_interval)
        .map_err(|e| ("InvalidDuration", format!("spec.observeInterval: {e}")))?;
    if observe.is_zero() || observe >= duration {
        return Err((
            "InvalidDuration",
            format!(
                "spec.observeInterval ({}) must be above zero and shorter than spec.duration ({})",
                spec.observe_interval, spec.duration
            ),
        ));
    }
    if let Some(r) = &spec.hypothesis.recovers_within {
        crate::duration::parse_duration(r).map_err(|e| {
            (
                "InvalidDuration",
                format!("spec.hypothesis.recoversWithin: {e}"),
            )
        })?;
    }
    if let Some(holds) = &spec.hypothesis.slo_holds {
        for s in &holds.slos {
            if !spec.slos.contains(s) {
                return Err((
                    "UnknownSlo",
                    format!(
                        "spec.hypothesis.sloHolds.slos names {s}, which is not in spec.slos; add it there or remove it"
                    ),
                ));
            }
        }
    }
    if let Some(schedule) = &spec.schedule {
        next_fire(schedule, spec.time_zone.as_deref(), Utc::now())?;
    }
    if spec.concurrency_policy == ConcurrencyPolicy::Replace && spec.schedule.is_none() {
        return Err((
            "InvalidSchedule",
            "spec.concurrencyPolicy Replace needs spec.schedule: it decides what a schedule slot does while a run is in flight".into(),
        ));
    }
    if let Some(d) = &spec.starting_deadline {
        crate::duration::parse_duration(d)
            .map_err(|e| ("InvalidDuration", format!("spec.startingDeadline: {e}")))?;
    }
    crate::engine::actions::spec_of(&spec.action)
        .validate()
        .map_err(|r| (r.reason.as_str(), r.message))?;
    Ok(())
}

/// The first time `schedule` fires after `after`, with the schedule read in
/// `time_zone` (an IANA name; UTC when `None`).
pub fn next_fire(
    schedule: &str,
    time_zone: Option<&str>,
    after: DateTime<Utc>,
) -> Result<DateTime<Utc>, (&'static str, String)> {
    let tz: chrono_tz::Tz = match time_zone {
        None => chrono_tz::UTC,
        Some(z) => z.parse().map_err(|_| {
            (
                "InvalidTimeZone",
                format!(
                    "spec.timeZone {z:?} is not an IANA time zone name; write e.g. `Europe/Berlin` or `UTC`"
                ),
            )
        })?,
    };
    let cron = croner::Cron::from_str(schedule).map_err(|e| {
        (
            "InvalidSchedule",
            format!("spec.schedule {schedule:?}: {e}; write 5 cron fields, e.g. `0 10 * * 1-5`"),
        )
    })?;
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            (
                "InvalidSchedule",
                format!(
                    "spec.schedule {schedule:?} never fires ({e}); check the day and month fields"
                ),
            )
        })
}

/// Every namespace the action touches must be opted in and not the
/// operator's own; a `host` target must be on the operator's allow-list.
pub async fn check_target(
    ctx: &Context,
    exp: &ChaosExperiment,
) -> Result<(), (&'static str, String)> {
    engine::scope::check(ctx, exp)
        .await
        .map_err(|r| (r.reason.as_str(), r.message))
}

fn created(obj: &impl Resource) -> Option<DateTime<Utc>> {
    let ts = obj.meta().creation_timestamp.as_ref()?;
    DateTime::from_timestamp(ts.0.as_second(), 0)
}

fn to_time(t: DateTime<Utc>) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
        .ok()
        .map(Time)
}

async fn apply(exp: Arc<ChaosExperiment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = exp.namespace().unwrap_or_default();
    let name = exp.name_any();
    // From the watch cache: an idle experiment costs the API server
    // nothing. Before anything is acted on (an orphan adopted, a run
    // started), the runs are read again from the API server.
    let mut runs = load_runs(&ctx, &ns, &name, false).await?;
    if runs
        .iter()
        .any(|r| matches!(held_by(&ctx, r), Some(Holder::Gone { .. })))
    {
        runs = load_runs(&ctx, &ns, &name, true).await?;
        adopt_orphans(&ctx, &runs);
    }
    let previous = exp.status.clone().unwrap_or_default();
    let mut draft = Draft::new(&exp, &runs, &previous);
    let history: Vec<(String, Option<RunPhase>)> = runs
        .iter()
        .map(|r| (r.name_any(), r.status.as_ref().map(|s| s.phase)))
        .collect();
    let requeue = step(&ctx, &exp, runs, &previous, &mut draft).await?;
    write_status(&ctx, &exp, &previous, &draft.status).await?;
    prune_history(&ctx, &exp, &history).await;
    Ok(Action::requeue(requeue))
}

/// Delete the finished runs and Gated records beyond the experiment's
/// history limits, oldest first, as a CronJob's controller keeps its Jobs.
/// A failed delete is logged and tried again at the next reconcile.
async fn prune_history(
    ctx: &Context,
    exp: &ChaosExperiment,
    history: &[(String, Option<RunPhase>)],
) {
    let limit = |v: Option<i32>, default: usize| {
        v.and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n >= 1)
            .unwrap_or(default)
    };
    let doomed = super::decision::prune(
        history,
        limit(
            exp.spec.run_history_limit,
            crate::resources::experiment::DEFAULT_RUN_HISTORY_LIMIT,
        ),
        limit(
            exp.spec.gated_history_limit,
            crate::resources::experiment::DEFAULT_GATED_HISTORY_LIMIT,
        ),
    );
    if doomed.is_empty() {
        return;
    }
    let ns = exp.namespace().unwrap_or_default();
    let api: Api<ExperimentRun> = Api::namespaced(ctx.client.clone(), &ns);
    for name in doomed {
        match api.delete(&name, &Default::default()).await {
            Ok(_) => {
                info!(namespace = %ns, run = %name, experiment = %exp.name_any(), "run deleted: beyond the history limit")
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => {
                warn!(namespace = %ns, run = %name, error = %e, "deleting a run beyond the history limit failed")
            }
        }
    }
}

/// The experiment's status as this reconcile computes it.
struct Draft {
    status: ChaosExperimentStatus,
    generation: Option<i64>,
    time: Time,
}

impl Draft {
    fn new(
        exp: &ChaosExperiment,
        runs: &[ExperimentRun],
        previous: &ChaosExperimentStatus,
    ) -> Self {
        let generation = exp.meta().generation;
        let status = ChaosExperimentStatus {
            action: Some(exp.spec.action.kind().to_owned()),
            observed_generation: generation,
            conditions: previous.conditions.clone(),
            last_run: runs.last().map(ResourceExt::name_any),
            last_verdict: runs
                .iter()
                .rev()
                .filter(|r| {
                    r.status
                        .as_ref()
                        .is_some_and(|s| s.phase != RunPhase::Gated)
                })
                .find_map(|r| r.status.as_ref().and_then(|s| s.verdict))
                .map(|v| format!("{v:?}")),
            ..Default::default()
        };
        Self {
            status,
            generation,
            time: now(),
        }
    }

    fn set(&mut self, type_: &str, s: Status, reason: &str, msg: String) {
        conditions::upsert(
            &mut self.status.conditions,
            type_,
            s,
            reason,
            msg,
            self.generation,
            self.time.clone(),
        );
    }
}

/// Validity, suspension, runs in flight here or elsewhere, then the gate
/// and the run if one is due. Returns when to look again.
async fn step(
    ctx: &Arc<Context>,
    exp: &ChaosExperiment,
    mut runs: Vec<ExperimentRun>,
    previous: &ChaosExperimentStatus,
    draft: &mut Draft,
) -> Result<Duration, Error> {
    let ns = exp.namespace().unwrap_or_default();
    let name = exp.name_any();
    let exp_key = key(&ns, &name);
    let valid = match validate_spec(&exp.spec) {
        Ok(()) => check_target(ctx, exp).await,
        Err(e) => Err(e),
    };
    if let Err((reason, message)) = valid {
        ctx.runs
            .abort_experiment(&exp_key, &format!("the spec is no longer valid: {message}"));
        draft.set("Valid", Status::False, reason, message.clone());
        draft.set(
            "Gated",
            Status::True,
            reason,
            "the spec is invalid; nothing runs".into(),
        );
        draft.status.phase = Some(ExperimentPhase::Invalid);
        return Ok(Duration::from_secs(30));
    }
    draft.set(
        "Valid",
        Status::True,
        "Valid",
        "the spec passed the operator's checks".into(),
    );
    if exp.spec.suspend {
        ctx.runs.abort_experiment(&exp_key, "spec.suspend was set");
        draft.set(
            "Gated",
            Status::True,
            "Suspended",
            "spec.suspend is true".into(),
        );
        draft.status.phase = Some(ExperimentPhase::Suspended);
        return Ok(Duration::from_secs(30));
    }
    // Runs another live instance drives: left alone, and looked at again
    // when their heartbeat would run out.
    let elsewhere = driven_elsewhere(ctx, &name, &runs);
    let driven_here = !ctx.runs.of_experiment(&exp_key).is_empty();
    if elsewhere.is_some() || driven_here {
        draft.status.phase = Some(ExperimentPhase::Running);
        draft.status.next_run = previous.next_run.clone();
        if exp.spec.schedule.is_some() {
            slot_while_running(ctx, exp, &runs, driven_here).await?;
        }
        return Ok(elsewhere.unwrap_or(Duration::from_secs(5)));
    }

    let now_utc = Utc::now();
    let due_from = |runs: &[ExperimentRun]| {
        decision::due_for(exp, runs, created, created(&*exp), now_utc, |s, t| {
            next_fire(s, exp.spec.time_zone.as_deref(), t).map_err(|(_, m)| m)
        })
        .map_err(Error::Invalid)
    };
    let mut due = due_from(&runs)?;
    if due.now && ctx.run_cache.is_some() {
        // The cache may not hold a run created a moment ago: decide again
        // from the API server before starting or recording anything.
        runs = load_runs(ctx, &ns, &name, true).await?;
        due = due_from(&runs)?;
    }
    let outcome = evaluate_gate(
        ctx,
        exp,
        if due.now {
            Freshness::Fresh
        } else {
            Freshness::Cached
        },
    )
    .await;
    let d = &outcome.decision;
    if d.open {
        draft.set("Gated", Status::False, "Open", d.message.clone());
    } else {
        draft.set("Gated", Status::True, &d.reason, d.message.clone());
    }
    draft.status.phase = Some(ExperimentPhase::Idle);
    if due.now {
        ctx.metrics
            .gate_decisions
            .get_or_create(&ReasonLabels {
                reason: d.reason.clone(),
            })
            .inc();
    }
    let repeat = runs.last().is_some_and(|r| {
        r.status.as_ref().is_some_and(|s| {
            s.phase == RunPhase::Gated && s.gate.as_ref().is_some_and(|g| g.reason == d.reason)
        })
    });
    match decision::next(&due, d.open, repeat) {
        Next::Start => {
            if let Some(run) = start_run(ctx, exp, due.trigger, &due.slot, outcome).await? {
                draft.status.last_run = Some(run);
                draft.status.phase = Some(ExperimentPhase::Running);
            }
        }
        Next::RecordGated { slot } => {
            if let Some(run) =
                record_gated(ctx, exp, due.trigger, slot.as_deref(), &outcome).await?
            {
                draft.status.last_run = Some(run);
            }
        }
        Next::Wait => {}
    }
    let now_utc = Utc::now();
    let fire = exp
        .spec
        .schedule
        .as_deref()
        .and_then(|schedule| next_fire(schedule, exp.spec.time_zone.as_deref(), now_utc).ok());
    draft.status.next_run = fire.and_then(to_time);
    // A run just started is looked at again when it changes (its own
    // trigger) and by the running branch above.
    Ok(decision::look_again(
        due.now,
        fire,
        now_utc,
        ctx.evaluation_interval,
    ))
}

/// A schedule slot that comes due while a run of the experiment is in
/// flight: with `Forbid` it is skipped and recorded as a Gated run (named
/// after the slot, so two instances record it once), with `Replace` the run
/// this instance drives is aborted and restored, and the slot, still due,
/// starts at a later reconcile.
async fn slot_while_running(
    ctx: &Context,
    exp: &ChaosExperiment,
    runs: &[ExperimentRun],
    driven_here: bool,
) -> Result<(), Error> {
    let due = decision::due_for(exp, runs, created, created(exp), Utc::now(), |s, t| {
        next_fire(s, exp.spec.time_zone.as_deref(), t).map_err(|(_, m)| m)
    })
    .map_err(Error::Invalid)?;
    let in_flight = runs
        .iter()
        .rev()
        .find(|r| r.status.as_ref().is_none_or(|s| !s.phase.is_final()))
        .map(ResourceExt::name_any)
        .unwrap_or_else(|| "of this experiment".into());
    match decision::while_running(&due, exp.spec.concurrency_policy, driven_here) {
        WhileRunning::Wait => {}
        WhileRunning::Skip { slot } => {
            let message = format!(
                "run {in_flight} is still in flight and spec.concurrencyPolicy is Forbid: this schedule slot is skipped"
            );
            let outcome = GateOutcome {
                decision: crate::gate::Decision {
                    open: false,
                    reason: RUN_IN_PROGRESS.into(),
                    message: message.clone(),
                },
                record: GateRecord {
                    open: false,
                    reason: RUN_IN_PROGRESS.into(),
                    message: Some(message),
                    decided_at: Some(now()),
                    slos: Vec::new(),
                },
            };
            record_gated(ctx, exp, Trigger::Schedule, Some(&slot), &outcome).await?;
        }
        WhileRunning::Replace => {
            let key = key(&exp.namespace().unwrap_or_default(), &exp.name_any());
            info!(experiment = %key, run = %in_flight, "a schedule slot replaces the run in flight");
            ctx.runs.abort_experiment(
                &key,
                "spec.concurrencyPolicy is Replace and the schedule's next slot came while this run was in flight",
            );
        }
    }
    Ok(())
}

/// The gate reason of a schedule slot skipped because a run was in flight.
const RUN_IN_PROGRESS: &str = "RunInProgress";

/// When another live instance drives a run of this experiment: how long
/// until its heartbeat would run out (bounded to 0.5–5 s).
fn driven_elsewhere(ctx: &Context, name: &str, runs: &[ExperimentRun]) -> Option<Duration> {
    let elsewhere: Vec<(String, Timestamp)> = runs
        .iter()
        .filter_map(|r| match held_by(ctx, r) {
            Some(Holder::Live { instance, expires }) => {
                engine::heartbeat::note_peer(ctx, &instance, &r.name_any());
                Some((instance, expires))
            }
            _ => None,
        })
        .collect();
    let expires = elsewhere.iter().map(|(_, e)| *e).min()?;
    let who: Vec<&str> = elsewhere
        .iter()
        .map(|(i, _)| {
            if i.is_empty() {
                "an instance starting it"
            } else {
                i.as_str()
            }
        })
        .collect();
    tracing::debug!(experiment = %name, drivers = ?who, "a run of this experiment is driven by another operator instance");
    let wait_ms = expires
        .as_millisecond()
        .saturating_sub(Timestamp::now().as_millisecond())
        .clamp(500, 5000);
    Some(Duration::from_millis(
        u64::try_from(wait_ms).unwrap_or(5000),
    ))
}

/// The experiment's runs, oldest first: from the watch cache, or `fresh`
/// from the API server (also when there is no cache).
async fn load_runs(
    ctx: &Context,
    ns: &str,
    name: &str,
    fresh: bool,
) -> Result<Vec<ExperimentRun>, Error> {
    let mut runs: Vec<ExperimentRun> = match (&ctx.run_cache, fresh) {
        (Some(cache), false) => cache
            .state()
            .iter()
            .filter(|r| {
                r.namespace().as_deref() == Some(ns)
                    && r.labels().get(EXPERIMENT_LABEL).map(String::as_str) == Some(name)
            })
            .map(|r| (**r).clone())
            .collect(),
        _ => {
            Api::<ExperimentRun>::namespaced(ctx.client.clone(), ns)
                .list(&ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={name}")))
                .await?
                .items
        }
    };
    runs.sort_by_key(|r| (created(r), r.name_any()));
    Ok(runs)
}

/// Who holds a run that holds (or may be about to hold) a fault and that
/// this process is not driving; `None` for finished runs and our own.
fn held_by(ctx: &Context, run: &ExperimentRun) -> Option<Holder> {
    let phase = run.status.as_ref().map_or(RunPhase::Pending, |s| s.phase);
    if !(phase.holds_fault() || phase == RunPhase::Pending) {
        return None;
    }
    if ctx
        .runs
        .contains(&key(&run.namespace().unwrap_or_default(), &run.name_any()))
    {
        return None;
    }
    Some(run_owner::holder_of(run, &ctx.instance, Timestamp::now()))
}

/// Runs whose driver is gone (its heartbeat ran out: the instance died, or
/// hangs): claim each, then restore it from its plan. The claim is a write
/// conditional on what was read, so of several instances one adopts.
fn adopt_orphans(ctx: &Arc<Context>, runs: &[ExperimentRun]) {
    for run in runs {
        let Some(Holder::Gone { instance, .. }) = held_by(ctx, run) else {
            continue;
        };
        let ns = run.namespace().unwrap_or_default();
        let run_name = run.name_any();
        let run_key = key(&ns, &run_name);
        let (tx, _rx) = watch::channel(None);
        let registered = ctx.runs.insert(
            run_key.clone(),
            ActiveRun {
                experiment: key(&ns, &run.spec.experiment),
                target: format!("recovering/{run_name}"),
                abort: tx,
            },
        );
        if !registered {
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let api: Api<ExperimentRun> = Api::namespaced(ctx.client.clone(), &ns);
            match engine::heartbeat::claim(&api, &run_name, &ctx.instance).await {
                Ok(Claim::Held(run)) => {
                    ctx.metrics.run_adoptions.inc();
                    let phase = run.status.as_ref().map(|s| s.phase);
                    info!(run = %run_name, ?phase, previous = ?instance, "adopting a run whose driver's heartbeat ran out");
                    driver::recover(ctx.clone(), *run, instance).await;
                }
                Ok(Claim::Other(by)) => {
                    engine::heartbeat::note_peer(&ctx, &by, &run_name);
                    ctx.runs.remove(&run_key);
                }
                Ok(Claim::Finished) => ctx.runs.remove(&run_key),
                Err(e) => {
                    warn!(run = %run_name, error = %e, "claiming a run left by another instance failed; trying again later");
                    ctx.runs.remove(&run_key);
                }
            }
        });
    }
}

/// A new run of `exp`, named `<experiment>-<slot>` when `slot` is given,
/// else with a random suffix from the API server.
fn new_run(
    exp: &ChaosExperiment,
    trigger: Trigger,
    slot: Option<&str>,
    outcome: &GateOutcome,
) -> Result<ExperimentRun, Error> {
    let name = exp.name_any();
    let mut run = ExperimentRun::new(
        "",
        ExperimentRunSpec {
            experiment: name.clone(),
            trigger: Some(trigger),
            snapshot: exp.spec.clone(),
            slos: outcome.record.slos.clone(),
        },
    );
    run.metadata.name = None;
    let prefix: String = name.chars().take(50).collect();
    match slot {
        Some(slot) => {
            let prefix = prefix.trim_end_matches(['-', '.']);
            run.metadata.name = Some(format!("{prefix}-{slot}"));
        }
        // Kubernetes appends a random suffix: two attempts in one second never clash.
        None => run.metadata.generate_name = Some(format!("{prefix}-")),
    }
    run.metadata.namespace = exp.namespace();
    run.metadata.labels = Some([(EXPERIMENT_LABEL.to_owned(), name)].into());
    run.metadata.owner_references =
        Some(vec![exp.controller_owner_ref(&()).ok_or_else(|| {
            Error::Invalid("experiment has no UID yet".into())
        })?]);
    Ok(run)
}

/// Create a run, or `None` when another instance created the same slot's
/// run first (it drives that one).
async fn create_run(
    ctx: &Context,
    exp: &ChaosExperiment,
    run: &ExperimentRun,
) -> Result<Option<ExperimentRun>, Error> {
    let api: Api<ExperimentRun> =
        Api::namespaced(ctx.client.clone(), &exp.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), run).await {
        Ok(run) => Ok(Some(run)),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            info!(experiment = %exp.name_any(), run = ?run.metadata.name, "the run of this slot exists already: another operator instance created it");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

async fn start_run(
    ctx: &Arc<Context>,
    exp: &ChaosExperiment,
    trigger: Trigger,
    slot: &str,
    outcome: GateOutcome,
) -> Result<Option<String>, Error> {
    let ns = exp.namespace().unwrap_or_default();
    let Some(run) = create_run(ctx, exp, &new_run(exp, trigger, Some(slot), &outcome)?).await?
    else {
        return Ok(None);
    };
    let run_name = run.name_any();
    let (tx, rx) = watch::channel(None);
    ctx.runs.insert(
        key(&ns, &run_name),
        ActiveRun {
            experiment: key(&ns, &exp.name_any()),
            target: engine::target_key(exp),
            abort: tx,
        },
    );
    info!(experiment = %exp.name_any(), run = %run_name, gate = %outcome.decision.message, "gate open; starting run");
    publish(
        ctx,
        exp,
        false,
        "RunStarted",
        format!("run {run_name}: {}", outcome.decision.message),
    )
    .await;
    tokio::spawn(driver::drive(
        ctx.clone(),
        Job {
            experiment: exp.clone(),
            run,
            gate: outcome.record,
            abort: rx,
        },
    ));
    Ok(Some(run_name))
}

async fn record_gated(
    ctx: &Context,
    exp: &ChaosExperiment,
    trigger: Trigger,
    slot: Option<&str>,
    outcome: &GateOutcome,
) -> Result<Option<String>, Error> {
    let ns = exp.namespace().unwrap_or_default();
    let api: Api<ExperimentRun> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(run) = create_run(ctx, exp, &new_run(exp, trigger, slot, outcome)?).await? else {
        return Ok(None);
    };
    let status = ExperimentRunStatus {
        phase: RunPhase::Gated,
        gate: Some(outcome.record.clone()),
        reason: Some(format!(
            "{}: {}",
            outcome.decision.reason, outcome.decision.message
        )),
        completion_time: Some(now()),
        timeline: vec![TimelineEntry {
            time: now_micro(),
            step: "GateClosed".into(),
            message: Some(format!(
                "{}: {}; nothing was touched",
                outcome.decision.reason, outcome.decision.message
            )),
        }],
        ..Default::default()
    };
    api.patch_status(
        &run.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ExperimentRun",
            "status": status,
        })),
    )
    .await?;
    publish(
        ctx,
        exp,
        true,
        "Gated",
        format!("{}: {}", outcome.decision.reason, outcome.decision.message),
    )
    .await;
    Ok(Some(run.name_any()))
}

async fn publish(ctx: &Context, exp: &ChaosExperiment, warning: bool, reason: &str, note: String) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &exp.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}

async fn write_status(
    ctx: &Context,
    exp: &ChaosExperiment,
    previous: &ChaosExperimentStatus,
    status: &ChaosExperimentStatus,
) -> Result<(), Error> {
    if previous == status {
        return Ok(());
    }
    let api: Api<ChaosExperiment> =
        Api::namespaced(ctx.client.clone(), &exp.namespace().unwrap_or_default());
    api.patch_status(
        &exp.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ChaosExperiment",
            "status": status,
        })),
    )
    .await?;
    ctx.metrics
        .status_writes
        .get_or_create(&ControllerLabels {
            controller: "experiment".into(),
        })
        .inc();
    Ok(())
}

/// Deletion: abort this experiment's runs and wait for their restore; only
/// then may the finalizer go (and with it, by ownership, the runs).
async fn cleanup(exp: Arc<ChaosExperiment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = exp.namespace().unwrap_or_default();
    let exp_key = key(&ns, &exp.name_any());
    ctx.runs
        .abort_experiment(&exp_key, "the experiment is being deleted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ctx.runs.of_experiment(&exp_key).is_empty() {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Invalid(format!(
                "runs of {exp_key} are still restoring; the finalizer stays"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs_api: Api<ExperimentRun> = Api::namespaced(ctx.client.clone(), &ns);
    let runs = runs_api
        .list(&ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={}", exp.name_any())))
        .await?
        .items;
    for run in runs {
        let phase = run.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if !phase.holds_fault() {
            continue;
        }
        // Another live instance drives it: that instance sees the deletion
        // too, aborts and restores; the finalizer waits for it.
        let previous = match held_by(&ctx, &run) {
            Some(Holder::Live { instance, .. }) => {
                return Err(Error::Invalid(format!(
                    "run {} is driven by instance {instance}, which restores it; the finalizer stays until then",
                    run.name_any()
                )));
            }
            Some(Holder::Gone { instance, .. }) => instance,
            None => None,
        };
        let api: Api<ExperimentRun> = Api::namespaced(ctx.client.clone(), &ns);
        match engine::heartbeat::claim(&api, &run.name_any(), &ctx.instance).await? {
            Claim::Held(run) => driver::recover(ctx.clone(), *run, previous).await,
            Claim::Finished => {}
            Claim::Other(by) => {
                return Err(Error::Invalid(format!(
                    "run {} was taken over by instance {by}, which restores it; the finalizer stays until then",
                    run.name_any()
                )));
            }
        }
    }
    publish(
        &ctx,
        &exp,
        false,
        "Deleted",
        "every run is restored; removing the finalizer".into(),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::experiment::ChaosAction;
    use headroom_experiments::PodKillSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn spec() -> ChaosExperimentSpec {
        serde_json::from_value(json!({
            "hypothesis": { "description": "h", "sloHolds": { "maxBurnRate": 2 } },
            "slos": ["checkout"],
            "action": { "podKill": { "selector": { "matchLabels": { "app": "checkout" } }, "count": 1 } },
            "duration": "30s",
            "observeInterval": "2s"
        }))
        .expect("valid spec")
    }

    #[test]
    fn spec_checks_name_the_field() {
        type Change = Box<dyn Fn(&mut ChaosExperimentSpec)>;
        let cases: Vec<(&str, Change, Option<&str>)> = vec![
            ("valid", Box::new(|_| {}), None),
            (
                "observe longer than duration",
                Box::new(|s| s.observe_interval = "1m".into()),
                Some("spec.observeInterval"),
            ),
            (
                "zero observe interval",
                Box::new(|s| s.observe_interval = "0s".into()),
                Some("spec.observeInterval"),
            ),
            (
                "cron with a bad field",
                Box::new(|s| s.schedule = Some("61 * * * *".into())),
                Some("spec.schedule"),
            ),
            (
                "cron that never fires",
                Box::new(|s| s.schedule = Some("0 0 31 2 *".into())),
                Some("spec.schedule"),
            ),
            (
                "sloHolds names an unguarded SLO",
                Box::new(|s| {
                    if let Some(h) = s.hypothesis.slo_holds.as_mut() {
                        h.slos = vec!["other".into()];
                    }
                }),
                Some("spec.hypothesis.sloHolds.slos"),
            ),
            (
                "bad selector operator",
                Box::new(|s| {
                    s.action = ChaosAction::PodKill(PodKillSpec {
                        selector: serde_json::from_value::<LabelSelector>(json!({
                            "matchExpressions": [{ "key": "app", "operator": "Near", "values": ["x"] }]
                        }))
                        .expect("selector"),
                        count: Some(1),
                        ..Default::default()
                    });
                }),
                Some("spec.action.podKill.selector"),
            ),
        ];
        for (name, change, want) in cases {
            let mut s = spec();
            change(&mut s);
            let got = validate_spec(&s);
            match want {
                None => assert!(got.is_ok(), "{name}: {got:?}"),
                Some(field) => {
                    let (_, message) = got.expect_err(name);
                    assert!(message.contains(field), "{name}: {message}");
                }
            }
        }
    }

    #[test]
    fn schedule_fires_in_utc() {
        let after = DateTime::parse_from_rfc3339("2026-11-23T09:30:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let next = next_fire("0 10 * * 1-5", None, after).expect("fires");
        assert_eq!(next.to_rfc3339(), "2026-11-23T10:00:00+00:00");
    }

    #[test]
    fn schedule_fires_in_its_time_zone_daylight_saving_included() {
        let at = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .expect("time")
                .with_timezone(&Utc)
        };
        // 10:00 in Berlin is 09:00 UTC in winter and 08:00 UTC in summer.
        let winter = next_fire(
            "0 10 * * *",
            Some("Europe/Berlin"),
            at("2026-11-23T00:00:00Z"),
        );
        assert_eq!(
            winter.expect("fires").to_rfc3339(),
            "2026-11-23T09:00:00+00:00"
        );
        let summer = next_fire(
            "0 10 * * *",
            Some("Europe/Berlin"),
            at("2026-07-01T00:00:00Z"),
        );
        assert_eq!(
            summer.expect("fires").to_rfc3339(),
            "2026-07-01T08:00:00+00:00"
        );
        let bad = next_fire(
            "0 10 * * *",
            Some("Mars/Olympus"),
            at("2026-07-01T00:00:00Z"),
        );
        let (reason, message) = bad.expect_err("refused");
        assert_eq!(reason, "InvalidTimeZone");
        assert!(message.contains("spec.timeZone"), "{message}");
    }
}
