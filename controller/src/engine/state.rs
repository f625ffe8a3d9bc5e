//! The run state machine: which phase follows which event, and how the
//! status must be written on the way. Pure: the driver (and the recovery of
//! runs left by another instance) only asks it, so every phase a run can
//! reach is listed here and tested as a table.
//!
//! ```text
//! Pending ──PlanSaved──▶ Injecting ──Injected──▶ Observing
//!    │                      │  │                    │
//!    │ Refused              │  └──DryRunDone──▶ Completed
//!    ▼                      ▼                       ▼
//!  Failed ◀──Refused── (before injection)   FaultEnded ──▶ Restoring
//!                                                          │ Judged(Completed|Aborted|Failed)
//! Pending ──Abandoned──▶ Aborted                            ▼
//! Injecting|Observing|Restoring ──Adopted──▶ Restoring   final phase
//! ```

use std::fmt;

use crate::resources::run::RunPhase;

/// Something that happened to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The run ended before anything was injected (invalid spec, target
    /// not found, plan not saved).
    Refused,
    /// The restore plan is about to be written; the fault comes next.
    PlanSaved,
    /// A dry run recorded what it would do.
    DryRunDone,
    /// The fault is being applied and the SLOs are watched.
    Injected,
    /// The fault ran its course, or was cut short: restore now.
    FaultEnded,
    /// The restore and the verdict are done.
    Judged(Outcome),
    /// Another instance takes over a run whose driver is gone.
    Adopted,
    /// A run left before anything was injected is closed.
    Abandoned,
}

/// How a run that injected ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ran its course and was restored.
    Completed,
    /// Stopped early and restored.
    Aborted,
    /// The restore failed.
    RestoreFailed,
}

/// How the status must reach the API server after a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// The next step depends on it: the restore plan is written before the
    /// fault, or the fault is not applied.
    Required,
    /// Logged on failure: the run goes on (a restore must not wait for a
    /// status write).
    BestEffort,
    /// The run's last record, retried while the API server is away.
    Final,
}

/// An event that cannot happen in a phase: a bug in the driver, refused
/// rather than writing a record that contradicts itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Illegal {
    pub from: RunPhase,
    pub event: Event,
}

impl fmt::Display for Illegal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {:?} cannot happen in phase {:?}",
            self.event, self.from
        )
    }
}

/// The phase after `event` in phase `from`, and how to write it.
pub fn transition(from: RunPhase, event: Event) -> Result<(RunPhase, Write), Illegal> {
    use Event as E;
    use RunPhase as P;
    let to = match (from, event) {
        (P::Pending, E::PlanSaved) => (P::Injecting, Write::Required),
        // Refused only before the fault: in Injecting, only when the plan
        // could not be written (the driver injects after that write).
        (P::Pending | P::Injecting, E::Refused) => (P::Failed, Write::Final),
        (P::Injecting, E::DryRunDone) => (P::Completed, Write::Final),
        (P::Injecting, E::Injected) => (P::Observing, Write::BestEffort),
        (P::Injecting | P::Observing, E::FaultEnded) => (P::Restoring, Write::BestEffort),
        (P::Restoring, E::Judged(o)) => (
            match o {
                Outcome::Completed => P::Completed,
                Outcome::Aborted => P::Aborted,
                Outcome::RestoreFailed => P::Failed,
            },
            Write::Final,
        ),
        (P::Injecting | P::Observing | P::Restoring, E::Adopted) => {
            (P::Restoring, Write::BestEffort)
        }
        (P::Pending, E::Abandoned) => (P::Aborted, Write::Final),
        _ => return Err(Illegal { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use RunPhase as P;

    const PHASES: [RunPhase; 8] = [
        P::Pending,
        P::Gated,
        P::Injecting,
        P::Observing,
        P::Restoring,
        P::Completed,
        P::Aborted,
        P::Failed,
    ];

    const EVENTS: [Event; 10] = [
        E::Refused,
        E::PlanSaved,
        E::DryRunDone,
        E::Injected,
        E::FaultEnded,
        E::Judged(Outcome::Completed),
        E::Judged(Outcome::Aborted),
        E::Judged(Outcome::RestoreFailed),
        E::Adopted,
        E::Abandoned,
    ];

    /// Every legal transition; everything else is illegal.
    const LEGAL: [(RunPhase, Event, RunPhase, Write); 14] = [
        (P::Pending, E::PlanSaved, P::Injecting, Write::Required),
        (P::Pending, E::Refused, P::Failed, Write::Final),
        (P::Injecting, E::Refused, P::Failed, Write::Final),
        (P::Injecting, E::DryRunDone, P::Completed, Write::Final),
        (P::Injecting, E::Injected, P::Observing, Write::BestEffort),
        (P::Injecting, E::FaultEnded, P::Restoring, Write::BestEffort),
        (P::Observing, E::FaultEnded, P::Restoring, Write::BestEffort),
        (
            P::Restoring,
            E::Judged(Outcome::Completed),
            P::Completed,
            Write::Final,
        ),
        (
            P::Restoring,
            E::Judged(Outcome::Aborted),
            P::Aborted,
            Write::Final,
        ),
        (
            P::Restoring,
            E::Judged(Outcome::RestoreFailed),
            P::Failed,
            Write::Final,
        ),
        (P::Injecting, E::Adopted, P::Restoring, Write::BestEffort),
        (P::Observing, E::Adopted, P::Restoring, Write::BestEffort),
        (P::Restoring, E::Adopted, P::Restoring, Write::BestEffort),
        (P::Pending, E::Abandoned, P::Aborted, Write::Final),
    ];

    #[test]
    fn every_legal_transition_and_no_other() {
        for from in PHASES {
            for event in EVENTS {
                let want = LEGAL
                    .iter()
                    .find(|(f, e, _, _)| *f == from && *e == event)
                    .map(|(_, _, to, write)| (*to, *write));
                match want {
                    Some(w) => assert_eq!(transition(from, event), Ok(w), "{from:?} + {event:?}"),
                    None => assert_eq!(
                        transition(from, event),
                        Err(Illegal { from, event }),
                        "{from:?} + {event:?} must be illegal"
                    ),
                }
            }
        }
    }

    #[test]
    fn final_phases_accept_no_event() {
        for from in PHASES.into_iter().filter(|p| p.is_final()) {
            for event in EVENTS {
                assert!(transition(from, event).is_err(), "{from:?} + {event:?}");
            }
        }
    }

    #[test]
    fn a_fault_is_always_followed_by_a_restore() {
        // From every phase that may hold a fault, the only ways on lead
        // through Restoring: no event jumps from a fault to a final phase.
        for from in PHASES.into_iter().filter(|p| p.holds_fault()) {
            for event in EVENTS {
                if let Ok((to, _)) = transition(from, event) {
                    let skipped_restore = to.is_final()
                        && from != P::Restoring
                        // a dry run and a refusal touch nothing
                        && !matches!(event, E::DryRunDone | E::Refused);
                    assert!(!skipped_restore, "{from:?} + {event:?} -> {to:?}");
                }
            }
        }
    }

    #[test]
    fn the_restore_plan_write_is_required_and_final_records_retried() {
        assert_eq!(
            transition(P::Pending, E::PlanSaved).map(|t| t.1),
            Ok(Write::Required)
        );
        for (_, _, to, write) in LEGAL {
            assert_eq!(to.is_final(), write == Write::Final, "{to:?}");
        }
    }
}
