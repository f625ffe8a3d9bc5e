//! The words a run is written in: why it was refused, why it was aborted,
//! and the steps of its timeline. Enums in the code, serialised to the same
//! strings users read in `status.reason`, `status.timeline[].step`, Events
//! and metrics, so a typo is a compile error and every `match` is complete.

use std::fmt;

/// Unit enums that print as their variant's name.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The string users see.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                }
            }

            /// The value a string names, if any.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// Why a run stopped before its fault ran its course.
    AbortReason {
        /// The experiment was suspended or deleted, or the operator stops.
        Interrupted,
        /// The action itself failed part way (an API call, a wait).
        ActionFailed,
        /// The action refused a step (e.g. a blast radius exceeded).
        InjectionRefused,
        /// The operator-wide pause was set.
        GlobalPause,
        /// The pause could not be read: a doubt, which stops the fault.
        KubernetesApiUnavailable,
        /// Prometheus did not answer.
        PrometheusUnavailable,
        /// A guarding SLO had no burn rate.
        NoData,
        /// A burn rate crossed the abort threshold.
        BurnRateAboveAbort,
        /// The run spent more than `maxBudgetSpend`.
        BudgetSpendAboveLimit,
        /// At its pace the run would pass `maxBudgetSpend` by the next
        /// observation.
        BudgetSpendProjectedAboveLimit,
        /// One of `budgetPolicy.abortChecks` failed `failureThreshold`
        /// times in a row.
        CheckFailed,
        /// The driving instance stopped; another one restored the run.
        OperatorRestarted,
    }
}

impl AbortReason {
    /// Aborts that are the measurement itself: the budget was at risk, so
    /// what was observed until then stands as evidence.
    pub fn is_measurement(self) -> bool {
        matches!(self, Self::BurnRateAboveAbort | Self::BudgetSpendAboveLimit)
    }
}

words! {
    /// Why a run ended before anything was injected.
    RefuseReason {
        InvalidSpec,
        InvalidDuration,
        InvalidGuard,
        InvalidSelector,
        InvalidTarget,
        NamespaceNotAllowed,
        NamespaceNotOptedIn,
        NamespaceNotFound,
        TargetNotAllowed,
        TargetUnreachable,
        WorkloadNotFound,
        KubernetesApiError,
        RestorePlanNotSaved,
        BlastRadiusExceeded,
        /// The operator's account may not do what the action needs
        /// (a SelfSubjectAccessReview said no).
        NotPermitted,
    }
}

/// A run (or an experiment's check) refused before injection: the reason,
/// and a message naming the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefuseReason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: RefuseReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// Why a run stopped early, with the measured figures in words.
#[derive(Clone, Debug, PartialEq)]
pub struct Abort {
    pub reason: AbortReason,
    pub message: String,
}

impl Abort {
    pub fn new(reason: AbortReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

words! {
    /// The steps of a run's timeline (`status.timeline[].step`).
    Step {
        RestorePlanSaved,
        DryRun,
        AbortRequested,
        RestoreStarted,
        Restored,
        RestoreFailed,
        CutShort,
        Verdict,
        Abandoned,
        RecoveryStarted,
        Recovered,
        ReplicasRestored,
        // podKill
        PodKilled,
        // scaleDown
        ScaledUp,
        AllReady,
        ScaledDown,
        RemovalsRecorded,
        // connectionExhaustion
        TargetRefused,
        ConnectionsHeld,
        Holding,
        ConnectionsDropped,
        ClientsScaled,
        // zoneOutage, nodeDrain
        ZoneCordoned,
        NodesCordoned,
        EvictionRefused,
        Drained,
        Rescheduled,
        PodsPending,
        NodesUncordoned,
        // manifest
        ObjectCreated,
        ObjectGone,
        ObjectsDeleted,
    }
}

/// A timeline step: one of [`Step`], or the reason a run was refused
/// (the timeline names the refusal itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepName {
    Step(Step),
    Refused(RefuseReason),
}

impl From<Step> for StepName {
    fn from(s: Step) -> Self {
        Self::Step(s)
    }
}

impl From<RefuseReason> for StepName {
    fn from(r: RefuseReason) -> Self {
        Self::Refused(r)
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Step(s) => s.fmt(f),
            Self::Refused(r) => r.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_are_unique() {
        for r in AbortReason::ALL {
            assert_eq!(AbortReason::parse(r.as_str()), Some(*r));
        }
        for r in RefuseReason::ALL {
            assert_eq!(RefuseReason::parse(r.as_str()), Some(*r));
        }
        for s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(*s));
        }
        assert_eq!(AbortReason::parse("Nonsense"), None);
    }

    #[test]
    fn only_budget_aborts_are_measurements() {
        let measured: Vec<_> = AbortReason::ALL
            .iter()
            .filter(|r| r.is_measurement())
            .map(|r| r.as_str())
            .collect();
        assert_eq!(measured, ["BurnRateAboveAbort", "BudgetSpendAboveLimit"]);
    }

    #[test]
    fn printed_as_users_read_them() {
        assert_eq!(
            Abort::new(AbortReason::NoData, "checkout: no burn rate").to_string(),
            "NoData: checkout: no burn rate"
        );
        assert_eq!(
            StepName::from(RefuseReason::InvalidSpec).to_string(),
            "InvalidSpec"
        );
        assert_eq!(StepName::from(Step::PodKilled).to_string(), "PodKilled");
    }
}
