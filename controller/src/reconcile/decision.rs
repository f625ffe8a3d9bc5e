//! What the experiment reconciler does next, decided without a client:
//! whether a run is due (and which slot it fills), and, given the gate,
//! whether to start it, record the refusal, or wait. The reconciler gathers
//! the inputs, calls these, and carries out the answer.

use chrono::{DateTime, Utc};

use crate::resources::experiment::{ChaosExperiment, ConcurrencyPolicy};
use crate::resources::run::{ExperimentRun, RunPhase, Trigger};

/// A run the experiment asks for now, or the next one it will ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Whether the run is due now.
    pub now: bool,
    pub trigger: Trigger,
    /// Suffix of the run's name: two instances deciding the same slot
    /// create the same name, and the API server lets only one create it.
    pub slot: String,
}

/// When an object was created, in whole seconds.
pub type Created = fn(&ExperimentRun) -> Option<DateTime<Utc>>;

/// Whether a run is due now. `requested` is the dashboard's "run now"
/// annotation; `fire_after` gives a schedule's first fire after a time.
///
/// `starting_deadline` is the schedule's `spec.startingDeadline`: a slot
/// more than that late (the operator was down, the leader changed) does not
/// fire late; the first slot within the deadline, or the next one, does.
/// Without it a missed slot fires once, as soon as the operator is back.
pub fn due(
    requested: Option<DateTime<Utc>>,
    schedule: Option<&str>,
    runs: &[(Option<DateTime<Utc>>, Option<RunPhase>)],
    experiment_created: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    starting_deadline: Option<chrono::Duration>,
    fire_after: impl Fn(&str, DateTime<Utc>) -> Result<DateTime<Utc>, String>,
) -> Result<Due, String> {
    let last_created = runs.last().and_then(|(c, _)| *c);
    // Creation times are whole seconds: a request within the second of the
    // last run's creation counts as served, so one request never starts two.
    let manual =
        requested.filter(|t| last_created.is_none_or(|c| *t > c + chrono::Duration::seconds(1)));
    Ok(match (manual, schedule) {
        (Some(t), _) => Due {
            now: true,
            trigger: Trigger::Manual,
            slot: format!("m{}", t.timestamp()),
        },
        // A run without a status yet counts as an attempt: if status writes
        // fail, better no retry than a loop of new runs.
        (None, None) => Due {
            now: !runs
                .iter()
                .any(|(_, phase)| phase.is_none_or(|p| p != RunPhase::Gated)),
            trigger: Trigger::Once,
            slot: "once".into(),
        },
        (None, Some(schedule)) => {
            let since = last_created.or(experiment_created).unwrap_or(now);
            let mut fire = fire_after(schedule, since)?;
            if let Some(deadline) = starting_deadline
                && now - fire > deadline
            {
                // Missed by more than the deadline: the first slot still
                // within it (fires now), else the next one.
                fire = fire_after(schedule, now - deadline - chrono::Duration::seconds(1))?;
            }
            Due {
                now: fire <= now,
                trigger: Trigger::Schedule,
                slot: format!("s{}", fire.timestamp()),
            }
        }
    })
}

/// [`due`] for an experiment and its runs (oldest first).
pub fn due_for(
    exp: &ChaosExperiment,
    runs: &[ExperimentRun],
    created: Created,
    experiment_created: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    fire_after: impl Fn(&str, DateTime<Utc>) -> Result<DateTime<Utc>, String>,
) -> Result<Due, String> {
    use kube::ResourceExt;
    let requested = exp
        .annotations()
        .get(crate::resources::RUN_NOW)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let runs: Vec<_> = runs
        .iter()
        .map(|r| (created(r), r.status.as_ref().map(|s| s.phase)))
        .collect();
    let starting_deadline = exp
        .spec
        .starting_deadline
        .as_deref()
        .map(|d| {
            crate::duration::parse_duration(d)
                .map_err(|e| format!("spec.startingDeadline {d:?}: {e}"))
                .and_then(|d| {
                    chrono::Duration::from_std(d)
                        .map_err(|e| format!("spec.startingDeadline {d:?}: {e}"))
                })
        })
        .transpose()?;
    due(
        requested,
        exp.spec.schedule.as_deref(),
        &runs,
        experiment_created,
        now,
        starting_deadline,
        fire_after,
    )
}

/// The runs to delete so that at most `finished_limit` finished runs
/// (Completed, Aborted, Failed) and `gated_limit` Gated records remain,
/// the newest of each kept. `runs` are oldest first. A run in flight or
/// without a status is never deleted (it may hold a fault or its restore
/// plan), nor is the newest run of all: the schedule and "run now" count
/// from it, and the last verdict is read from the runs.
pub fn prune(
    runs: &[(String, Option<RunPhase>)],
    finished_limit: usize,
    gated_limit: usize,
) -> Vec<String> {
    let newest = runs.len().saturating_sub(1);
    let mut finished = 0;
    let mut gated = 0;
    let mut doomed = Vec::new();
    for (i, (name, phase)) in runs.iter().enumerate().rev() {
        let over = match phase {
            Some(RunPhase::Gated) => {
                gated += 1;
                gated > gated_limit
            }
            Some(RunPhase::Completed | RunPhase::Aborted | RunPhase::Failed) => {
                finished += 1;
                finished > finished_limit
            }
            _ => false,
        };
        if over && i != newest {
            doomed.push(name.clone());
        }
    }
    doomed.reverse();
    doomed
}

/// What to do about a due run once the gate is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Create the run and drive it.
    Start,
    /// Record the refusal as a Gated run, named after the slot when one is
    /// given (a schedule's slot or a manual request is recorded once).
    RecordGated { slot: Option<String> },
    /// Nothing to write: not due, or this refusal is already on record.
    Wait,
}

/// Start, record the closed gate, or wait. A scheduled slot or a manual
/// request is used up by its Gated record; a one-off experiment records
/// each new reason once and keeps waiting for the gate to open.
pub fn next(due: &Due, gate_open: bool, last_gated_for_same_reason: bool) -> Next {
    match (due.now, gate_open, due.trigger) {
        (false, _, _) => Next::Wait,
        (true, true, _) => Next::Start,
        (true, false, Trigger::Once) if last_gated_for_same_reason => Next::Wait,
        (true, false, Trigger::Once) => Next::RecordGated { slot: None },
        (true, false, _) => Next::RecordGated {
            slot: Some(due.slot.clone()),
        },
    }
}

/// How soon a reconcile looks again at a run that is due but did not start
/// (the gate was closed, or the run was recorded as Gated): the gate may
/// open at the SLOs' next evaluation.
pub const DUE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// When to look again at an experiment with nothing in flight, after a
/// reconcile at `now`: soon while a run is due; otherwise at its schedule's
/// next fire, and at the latest after `refresh` (the SLO evaluation
/// interval) to show the gate as it would decide now. The gate's figures
/// change once per evaluation interval: looking more often reads the same
/// figures again. Spec changes, "run now" requests and the runs' changes
/// trigger a reconcile on their own; a run that comes due re-checks its
/// target's namespaces in the reconcile that starts it.
pub fn look_again(
    due_now: bool,
    next_fire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    refresh: std::time::Duration,
) -> std::time::Duration {
    // A wake-up a moment before the fire (clocks, rounding) looks again
    // shortly, not in a tight loop.
    const SOONEST: std::time::Duration = std::time::Duration::from_millis(200);
    if due_now {
        return DUE_RETRY;
    }
    let refresh = refresh.max(DUE_RETRY);
    match next_fire.map(|t| (t - now).to_std()) {
        Some(Ok(until)) => until.clamp(SOONEST, refresh),
        // Already passed: due at the next look.
        Some(Err(_)) => SOONEST,
        None => refresh,
    }
}

/// What a due run does while a run of the same experiment is in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WhileRunning {
    /// Nothing now: not due, or a manual request, served after the run.
    Wait,
    /// `Forbid`: the slot is skipped, recorded as a Gated run.
    Skip { slot: String },
    /// `Replace`: the run in flight is aborted and restored; the slot's run
    /// starts once it is gone (the slot stays due: the aborted run was
    /// created before it).
    Replace,
}

/// [`WhileRunning`] for a due run, the experiment's policy, and whether
/// this instance drives the run in flight (only the driver can abort it;
/// another instance waits for it to do so).
pub fn while_running(due: &Due, policy: ConcurrencyPolicy, driven_here: bool) -> WhileRunning {
    match (due.now, due.trigger, policy) {
        (true, Trigger::Schedule, ConcurrencyPolicy::Forbid) => WhileRunning::Skip {
            slot: due.slot.clone(),
        },
        (true, Trigger::Schedule, ConcurrencyPolicy::Replace) if driven_here => {
            WhileRunning::Replace
        }
        _ => WhileRunning::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("time")
    }

    /// A schedule that fires every 60s (on the minute, relative to t(0)).
    fn every_minute(_: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        let since = after.timestamp() - t(0).timestamp();
        Ok(t((since / 60 + 1) * 60))
    }

    #[test]
    fn which_run_is_due() {
        let gated = (Some(t(0)), Some(RunPhase::Gated));
        let completed = (Some(t(0)), Some(RunPhase::Completed));
        let no_status = (Some(t(0)), None);
        #[allow(clippy::type_complexity)]
        let cases: [(
            &str,
            Option<DateTime<Utc>>,
            Option<&str>,
            Vec<(Option<DateTime<Utc>>, Option<RunPhase>)>,
            i64,
            (bool, Trigger, &str),
        ); 9] = [
            (
                "once, never run",
                None,
                None,
                vec![],
                5,
                (true, Trigger::Once, "once"),
            ),
            (
                "once, only gated so far",
                None,
                None,
                vec![gated],
                5,
                (true, Trigger::Once, "once"),
            ),
            (
                "once, ran",
                None,
                None,
                vec![completed],
                5,
                (false, Trigger::Once, "once"),
            ),
            (
                "once, a run without status is an attempt",
                None,
                None,
                vec![no_status],
                5,
                (false, Trigger::Once, "once"),
            ),
            (
                "run now after the last run",
                Some(t(10)),
                None,
                vec![completed],
                20,
                (true, Trigger::Manual, "m1700000010"),
            ),
            (
                "run now within the second of the last run is served",
                Some(t(1)),
                None,
                vec![completed],
                20,
                (false, Trigger::Once, "once"),
            ),
            (
                "schedule, slot not reached",
                None,
                Some("* * * * *"),
                vec![],
                30,
                (false, Trigger::Schedule, "s1700000060"),
            ),
            (
                "schedule, slot reached",
                None,
                Some("* * * * *"),
                vec![],
                61,
                (true, Trigger::Schedule, "s1700000060"),
            ),
            (
                "schedule, next slot after the last run",
                None,
                Some("* * * * *"),
                vec![(Some(t(60)), Some(RunPhase::Completed))],
                90,
                (false, Trigger::Schedule, "s1700000120"),
            ),
        ];
        for (name, requested, schedule, runs, now, (want_now, trigger, slot)) in cases {
            let d = due(
                requested,
                schedule,
                &runs,
                Some(t(0)),
                t(now),
                None,
                every_minute,
            )
            .expect(name);
            assert_eq!(
                (d.now, d.trigger, d.slot.as_str()),
                (want_now, trigger, slot),
                "{name}"
            );
        }
    }

    #[test]
    fn a_slot_missed_beyond_the_starting_deadline_does_not_fire_late() {
        let secs = chrono::Duration::seconds;
        let last = vec![(Some(t(60)), Some(RunPhase::Completed))];
        // (case, now, deadline, (due now, slot))
        let cases = [
            // The operator was down from 61s to 400s: slots 120..360 missed.
            (
                "no deadline: the first missed slot fires late",
                400,
                None,
                (true, "s1700000120"),
            ),
            (
                "deadline 100s: the first slot within it fires",
                400,
                Some(secs(100)),
                (true, "s1700000300"),
            ),
            (
                "deadline 30s: none within it, wait for the next",
                400,
                Some(secs(30)),
                (false, "s1700000420"),
            ),
            (
                "on time: the deadline changes nothing",
                125,
                Some(secs(30)),
                (true, "s1700000120"),
            ),
            (
                "not reached yet",
                100,
                Some(secs(30)),
                (false, "s1700000120"),
            ),
        ];
        for (name, now, deadline, (want_now, slot)) in cases {
            let d = due(
                None,
                Some("* * * * *"),
                &last,
                Some(t(0)),
                t(now),
                deadline,
                every_minute,
            )
            .expect(name);
            assert_eq!((d.now, d.slot.as_str()), (want_now, slot), "{name}");
        }
    }

    #[test]
    fn start_record_or_wait() {
        let due_as = |now: bool, trigger: Trigger| Due {
            now,
            trigger,
            slot: "s60".into(),
        };
        let gated_slot = Next::RecordGated {
            slot: Some("s60".into()),
        };
        for (name, due, open, repeat, want) in [
            (
                "not due",
                due_as(false, Trigger::Schedule),
                true,
                false,
                Next::Wait,
            ),
            (
                "due, gate open",
                due_as(true, Trigger::Schedule),
                true,
                false,
                Next::Start,
            ),
            (
                "manual, gate open",
                due_as(true, Trigger::Manual),
                true,
                true,
                Next::Start,
            ),
            (
                "once, closed, new reason",
                due_as(true, Trigger::Once),
                false,
                false,
                Next::RecordGated { slot: None },
            ),
            (
                "once, closed, same reason again",
                due_as(true, Trigger::Once),
                false,
                true,
                Next::Wait,
            ),
            (
                "schedule, closed: the slot is used up",
                due_as(true, Trigger::Schedule),
                false,
                true,
                gated_slot.clone(),
            ),
            (
                "manual, closed",
                due_as(true, Trigger::Manual),
                false,
                false,
                gated_slot.clone(),
            ),
        ] {
            assert_eq!(next(&due, open, repeat), want, "{name}");
        }
    }

    #[test]
    fn prune_keeps_the_newest_of_each_kind_and_never_a_run_in_flight() {
        use RunPhase::*;
        let runs = |phases: &[Option<RunPhase>]| -> Vec<(String, Option<RunPhase>)> {
            phases
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("r{i}"), *p))
                .collect()
        };
        // (case, runs oldest first, finished limit, gated limit, deleted)
        type Case = (
            &'static str,
            Vec<(String, Option<RunPhase>)>,
            usize,
            usize,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "under the limits",
                runs(&[Some(Completed), Some(Gated)]),
                2,
                2,
                vec![],
            ),
            (
                "oldest finished go",
                runs(&[
                    Some(Completed),
                    Some(Aborted),
                    Some(Failed),
                    Some(Completed),
                ]),
                2,
                3,
                vec!["r0", "r1"],
            ),
            (
                "gated counted apart",
                runs(&[
                    Some(Gated),
                    Some(Gated),
                    Some(Completed),
                    Some(Gated),
                    Some(Gated),
                ]),
                5,
                2,
                vec!["r0", "r1"],
            ),
            (
                "in flight and unwritten runs stay",
                runs(&[
                    Some(Observing),
                    None,
                    Some(Completed),
                    Some(Restoring),
                    Some(Completed),
                ]),
                1,
                1,
                vec!["r2"],
            ),
            // A limit of 1 with a Gated newest: the newest finished run
            // stays, since it carries the last verdict.
            (
                "one of each",
                runs(&[Some(Completed), Some(Completed), Some(Gated), Some(Gated)]),
                1,
                1,
                vec!["r0", "r2"],
            ),
            ("empty", runs(&[]), 1, 1, vec![]),
        ];
        for (name, runs, finished, gated, want) in cases {
            assert_eq!(prune(&runs, finished, gated), want, "{name}");
        }
    }

    #[test]
    fn when_an_experiment_is_looked_at_again() {
        let secs = std::time::Duration::from_secs;
        let ms = std::time::Duration::from_millis;
        let cases = [
            (
                "a due run that did not start",
                true,
                Some(t(3600)),
                secs(10),
                secs(5),
            ),
            ("a due run, no schedule", true, None, secs(30), secs(5)),
            (
                "not due, no schedule: the gate refresh",
                false,
                None,
                secs(10),
                secs(10),
            ),
            (
                "the next fire is far: the gate refresh",
                false,
                Some(t(3600)),
                secs(30),
                secs(30),
            ),
            (
                "the next fire comes first",
                false,
                Some(t(7)),
                secs(30),
                secs(7),
            ),
            (
                "never more often than while due",
                false,
                None,
                secs(2),
                secs(5),
            ),
            (
                "a fire a moment away",
                false,
                Some(t(0) + chrono::Duration::milliseconds(50)),
                secs(10),
                ms(200),
            ),
            ("a fire just passed", false, Some(t(-1)), secs(10), ms(200)),
        ];
        for (name, due_now, fire, refresh, want) in cases {
            assert_eq!(look_again(due_now, fire, t(0), refresh), want, "{name}");
        }
    }

    #[test]
    fn a_slot_while_a_run_is_in_flight() {
        use ConcurrencyPolicy::{Forbid, Replace};
        let due = |now, trigger| Due {
            now,
            trigger,
            slot: "s60".into(),
        };
        let skip = WhileRunning::Skip { slot: "s60".into() };
        let cases = [
            (
                "forbid skips a due slot",
                due(true, Trigger::Schedule),
                Forbid,
                true,
                skip.clone(),
            ),
            (
                "forbid skips it for a run driven elsewhere too",
                due(true, Trigger::Schedule),
                Forbid,
                false,
                skip,
            ),
            (
                "replace aborts the run it drives",
                due(true, Trigger::Schedule),
                Replace,
                true,
                WhileRunning::Replace,
            ),
            (
                "replace leaves another instance's run to it",
                due(true, Trigger::Schedule),
                Replace,
                false,
                WhileRunning::Wait,
            ),
            (
                "a slot not yet due waits",
                due(false, Trigger::Schedule),
                Forbid,
                true,
                WhileRunning::Wait,
            ),
            (
                "run now is served after the run",
                due(true, Trigger::Manual),
                Replace,
                true,
                WhileRunning::Wait,
            ),
            (
                "a one-off experiment waits",
                due(true, Trigger::Once),
                Forbid,
                true,
                WhileRunning::Wait,
            ),
        ];
        for (name, due, policy, here, want) in cases {
            assert_eq!(while_running(&due, policy, here), want, "{name}");
        }
    }
}
