//! One run from gate to verdict, the same loop for every action: prepare
//! the action, save the restore plan, inject while the guarding SLOs are
//! watched, abort when the budget is at risk, restore always, then judge
//! the hypothesis. Phases move only through the state machine (`state`);
//! the run's status is written at every step, so it is the durable record
//! even if this process dies. Runs another instance left in flight are
//! finished by [`recover`].

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use super::actions::{self, LiveAction};
use super::checks::Checks;
use super::heartbeat;
use super::observe::{self, Guard, Seen, interrupted, load_guards, read_guards};
use super::record::Record;
use super::state::{Event, Outcome};
use super::support::key;
use crate::context::Context;
use crate::duration::parse_duration;
use crate::gate::{self, Policy};
use crate::metrics::RunLabels;
use crate::notify::{Notice, NoticeKind, RunRef};
use crate::reasons::{Abort, Refusal, RefuseReason, Step};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{
    BudgetRecord, ExperimentRun, ExperimentRunStatus, GateRecord, Observations, RunPhase,
    SloBurnRate, Verdict,
};
use crate::slo_reader::{Freshness, assess};
use crate::verdict::{self, Measured};

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
    let mut rec = Record::new(
        &ctx,
        &job.run,
        ExperimentRunStatus {
            gate: Some(job.gate.clone()),
            ..Default::default()
        },
    );
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

/// The run's timing, from the spec.
struct Timing {
    duration: Duration,
    observe_every: Duration,
}

fn timing(exp: &ChaosExperiment) -> Result<Timing, Refusal> {
    match (
        parse_duration(&exp.spec.duration),
        parse_duration(&exp.spec.observe_interval),
    ) {
        (Ok(duration), Ok(observe_every)) if !observe_every.is_zero() => Ok(Timing {
            duration,
            observe_every,
        }),
        _ => Err(Refusal::new(
            RefuseReason::InvalidSpec,
            "spec.duration or spec.observeInterval is not a positive duration",
        )),
    }
}

/// Everything before the fault: timing, guards, scope, the action's plan.
async fn prepare(
    ctx: &Context,
    exp: &ChaosExperiment,
    policy: &Policy,
) -> Result<(Timing, Vec<Guard>, Checks, Box<dyn LiveAction>), Refusal> {
    let timing = timing(exp)?;
    let guards = load_guards(ctx, exp, policy)
        .await
        .map_err(|e| Refusal::new(RefuseReason::InvalidGuard, e))?;
    // Every namespace the action and the checks touch, not only the
    // workload's.
    super::scope::check_namespaces(ctx, exp).await?;
    let checks = Checks::prepare(ctx, &exp.spec).await?;
    let action = actions::spec_of(&exp.spec.action).prepare(ctx, exp).await?;
    Ok((timing, guards, checks, action))
}

async fn run(ctx: &Context, rec: &mut Record, job: Job) {
    let exp = &job.experiment;
    let mut abort_rx = job.abort;
    let policy = Policy::from_spec(&exp.spec.budget_policy);
    let (timing, guards, checks, mut action) = match prepare(ctx, exp, &policy).await {
        Ok(p) => p,
        Err(refusal) => return rec.refuse(refusal).await,
    };

    // The restore plan goes to the API server before anything is touched;
    // if that write fails, nothing is.
    rec.status.restore = Some(action.restore_plan());
    rec.status.seed = action.seed();
    rec.status.budget = Some(BudgetRecord {
        remaining_before: min_budget(rec.status.gate.as_ref()),
        ..Default::default()
    });
    rec.status.start_time = Some(super::now());
    rec.step(Step::RestorePlanSaved, action.describe());
    if let Err(e) = rec.advance(Event::PlanSaved).await {
        warn!(run = %rec.name, error = %e, "cannot save the restore plan; not injecting");
        return rec
            .refuse(Refusal::new(
                RefuseReason::RestorePlanNotSaved,
                format!("the restore plan could not be written: {e}"),
            ))
            .await;
    }

    if exp.spec.dry_run {
        let message = action.dry_run(ctx).await;
        rec.step(Step::DryRun, message);
        rec.status.verdict = Some(Verdict::Inconclusive);
        if let Some(r) = rec.status.restore.as_mut() {
            r.done = true;
        }
        let _ = rec.advance(Event::DryRunDone).await;
        return;
    }

    let started = Instant::now();
    let deadline = started + timing.duration;
    let mut seen = Seen::default();
    seen.checks = checks;
    let abort: Option<(Abort, Instant)> = match action.inject(ctx, rec).await {
        Err(refused) => Some((refused, Instant::now())),
        Ok(()) => {
            let _ = rec.advance(Event::Injected).await;
            rec.event(false, "Injected", action.describe()).await;
            notify(ctx, rec, exp, NoticeKind::Started);
            // Whichever ends first wins: the fault running its course, an
            // abort rule, or an interruption (suspend, deletion, shutdown).
            let progress = action.progress(ctx, rec, deadline);
            let observer = observe::observe(
                ctx,
                &guards,
                policy,
                started,
                timing.observe_every,
                &mut seen,
            );
            tokio::select! {
                res = progress => res.err().map(|a| (a, Instant::now())),
                a = observer => Some(a),
                a = interrupted(&mut abort_rx) => Some(a),
            }
        }
    };

    // What the fault holds in this process goes first, before anything
    // that needs the API server, which may be what hangs (a leader that
    // lost its lease must stop injecting at once, not after a write).
    action.release();
    if let Some((abort, detected)) = &abort {
        record_abort(ctx, rec, abort, *detected).await;
        notify(ctx, rec, exp, NoticeKind::Aborted);
    }
    rec.step(
        Step::RestoreStarted,
        "undoing the fault from the saved plan",
    );
    let _ = rec.advance(Event::FaultEnded).await;
    let restored = action.restore(ctx, rec).await;
    match &restored {
        Ok(msg) => {
            if let Some(r) = rec.status.restore.as_mut() {
                r.done = true;
                r.connections_held = r.connections_held.map(|_| 0);
            }
            rec.step(Step::Restored, msg.clone());
        }
        Err(e) => {
            rec.step(Step::RestoreFailed, e.clone());
            rec.event(true, "RestoreFailed", e.clone()).await;
        }
    }
    let outcome = match (&restored, &abort) {
        (Err(_), _) => Outcome::RestoreFailed,
        (Ok(_), Some(_)) => Outcome::Aborted,
        (Ok(_), None) => Outcome::Completed,
    };
    let mut extra = action.expectations(rec.status.observations.as_ref());
    extra.extend(seen.checks.expectations());
    let judged = Judged {
        recovery: action.recovery(),
        extra,
        abort: abort.map(|(a, _)| a),
        outcome,
    };
    finish(ctx, rec, exp, &guards, started, &mut seen, judged).await;
}

/// An abort: its reason in the status and timeline, the reaction time in
/// the metric, an Event.
async fn record_abort(ctx: &Context, rec: &mut Record, abort: &Abort, detected: Instant) {
    rec.status.reason = Some(abort.to_string());
    rec.step(Step::AbortRequested, abort.to_string());
    ctx.metrics
        .abort_latency
        .observe(detected.elapsed().as_secs_f64());
    rec.event(true, "Aborted", abort.to_string()).await;
}

/// What the run ended with, for the verdict.
struct Judged {
    recovery: verdict::Recovery,
    /// The action's own expectations (e.g. the scale-down order).
    extra: Vec<crate::resources::run::ExpectationResult>,
    abort: Option<Abort>,
    outcome: Outcome,
}

/// After the restore, for every action: a last reading, the budget after
/// and the spend, the expectations judged, the final phase, an Event.
async fn finish(
    ctx: &Context,
    rec: &mut Record,
    exp: &ChaosExperiment,
    guards: &[Guard],
    started: Instant,
    seen: &mut Seen,
    judged: Judged,
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
    let spent = seen.spent.values().copied().reduce(f64::max);
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
        recovery: judged.recovery,
    };
    let (_, mut results) = verdict::judge(
        &exp.spec.hypothesis,
        &exp.spec.slos,
        recovers_within,
        &measured,
    );
    results.extend(judged.extra);
    let mut verdict = verdict::conjunction(&results);
    if let (Outcome::Aborted, Some(abort)) = (judged.outcome, &judged.abort) {
        let cut = verdict::after_abort(verdict, abort.reason);
        if cut != verdict {
            rec.step(
                Step::CutShort,
                format!(
                    "aborted ({}) before the fault ran its course: the expectations that held so far do not confirm the hypothesis",
                    abort.reason
                ),
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
    if !seen.checks.is_empty() {
        rec.status
            .observations
            .get_or_insert_with(Observations::default)
            .checks = seen.checks.records();
    }
    rec.status.verdict = Some(verdict);
    rec.status.expectations = results;
    rec.step(Step::Verdict, format!("{verdict:?}"));
    let _ = rec.advance(Event::Judged(judged.outcome)).await;
    rec.event(
        verdict == Verdict::Refuted,
        &format!("{verdict:?}"),
        format!(
            "run {:?}; hypothesis: {}",
            rec.status.phase, exp.spec.hypothesis.description
        ),
    )
    .await;
    notify(ctx, rec, exp, NoticeKind::Finished);
}

/// Queue a notification about this run (never waits: see `notify`). Not
/// once another instance drives the run: that one tells how it ended.
fn notify(ctx: &Context, rec: &Record, exp: &ChaosExperiment, kind: NoticeKind) {
    if rec.is_lost() {
        return;
    }
    ctx.notifier.send(Notice::new(
        kind,
        RunRef {
            namespace: &exp.namespace().unwrap_or_default(),
            experiment: &exp.name_any(),
            run: &rec.name,
            hypothesis: &exp.spec.hypothesis.description,
        },
        &rec.status,
    ));
}

fn min_budget(gate: Option<&GateRecord>) -> Option<f64> {
    gate?
        .slos
        .iter()
        .filter_map(|s| s.budget_remaining)
        .reduce(f64::min)
}

/// Finish a run this process did not start (the operator restarted, or
/// another instance died): restore from the saved plan, record why. The
/// caller has claimed the run (`heartbeat::claim`); its heartbeat is kept
/// while the restore runs.
pub async fn recover(ctx: Arc<Context>, run: ExperimentRun, previous: Option<String>) {
    let ns = run.namespace().unwrap_or_default();
    let run_key = key(&ns, &run.name_any());
    let mut rec = Record::new(&ctx, &run, run.status.clone().unwrap_or_default());
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
    let started = rec.status.phase != RunPhase::Pending;
    restore_orphan(&ctx, &mut rec, &run, &previous).await;
    // The driver that died could not say how its run ended.
    if started && !rec.is_lost() {
        ctx.notifier.send(Notice::new(
            NoticeKind::Finished,
            RunRef {
                namespace: &run.namespace().unwrap_or_default(),
                experiment: &run.spec.experiment,
                run: &rec.name,
                hypothesis: &run.spec.snapshot.hypothesis.description,
            },
            &rec.status,
        ));
    }
    beat.abort();
    ctx.runs.remove(&run_key);
}

async fn restore_orphan(ctx: &Context, rec: &mut Record, run: &ExperimentRun, previous: &str) {
    let ns = run.namespace().unwrap_or_default();
    let phase = rec.status.phase;
    if phase == RunPhase::Pending {
        rec.status.verdict = Some(Verdict::Inconclusive);
        rec.status.reason = Some(
            Abort::new(
                crate::reasons::AbortReason::OperatorRestarted,
                "the run never started; nothing was injected",
            )
            .to_string(),
        );
        rec.step(
            Step::Abandoned,
            format!("{previous} stopped before injecting; nothing was touched"),
        );
        let _ = rec.advance(Event::Abandoned).await;
        return;
    }
    rec.step(
        Step::RecoveryStarted,
        format!("this operator instance ({}) found the run in phase {phase:?}, driven by {previous} whose heartbeat ran out; restoring from the saved plan", ctx.instance.id),
    );
    let _ = rec.advance(Event::Adopted).await;
    let action = actions::spec_of(&run.spec.snapshot.action);
    if let Err(e) = action.recover(ctx, &ns, rec).await {
        rec.step(Step::RestoreFailed, e.clone());
        rec.status.reason = Some(format!("RestoreFailed: {e}"));
        let _ = rec.advance(Event::Judged(Outcome::RestoreFailed)).await;
        rec.event(true, "RestoreFailed", e).await;
        return;
    }
    if let Some(r) = rec.status.restore.as_mut() {
        r.done = true;
        r.connections_held = r.connections_held.map(|_| 0);
    }
    rec.status.verdict = Some(Verdict::Inconclusive);
    rec.status.reason = Some(
        Abort::new(
            crate::reasons::AbortReason::OperatorRestarted,
            format!(
                "the run was interrupted when its driver ({previous}) stopped, and restored by instance {}",
                ctx.instance.id
            ),
        )
        .to_string(),
    );
    rec.step(
        Step::Restored,
        format!("restore finished by instance {}", ctx.instance.id),
    );
    let _ = rec.advance(Event::Judged(Outcome::Aborted)).await;
    rec.event(
        true,
        "RecoveredAfterRestart",
        format!("run found in phase {phase:?}; restored"),
    )
    .await;
}

/// One run without its heartbeat or metrics, for the mock-API tests: the
/// status it ends with.
#[cfg(test)]
pub(super) async fn run_for_test(ctx: &Context, job: Job) -> ExperimentRunStatus {
    let mut rec = Record::new(
        ctx,
        &job.run,
        ExperimentRunStatus {
            gate: Some(job.gate.clone()),
            ..Default::default()
        },
    );
    run(ctx, &mut rec, job).await;
    rec.status
}
