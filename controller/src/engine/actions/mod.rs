//! The fault library's live half: one module per action, each holding what
//! the action touches, its plan, its injection and evidence, its restore
//! and its recovery after a crash. The spec types and the pure choices
//! (victims, blast radius, removal order) are in the `headroom-experiments`
//! crate; the run loop shared by every action is `engine::driver`.
//!
//! A new action is one module here implementing [`ActionSpec`] (and the
//! [`LiveAction`] it prepares) plus one arm in [`ChaosAction`] and in
//! [`spec_of`].

pub mod connection_exhaustion;
pub mod manifest;
pub mod node_drain;
pub mod pod_kill;
pub mod scale_down;
pub mod zone_outage;

use async_trait::async_trait;
use tokio::time::Instant;

use super::record::Record;
use crate::context::Context;
use crate::reasons::{Abort, Refusal};
use crate::resources::experiment::{ChaosAction, ChaosExperiment};
use crate::resources::run::{ExpectationResult, Observations, RestorePlan};
use crate::verdict::Recovery;

/// A namespace an action touches, and the spec field that puts it there
/// (named in every refusal, so the user knows what to change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touched {
    pub field: &'static str,
    pub namespace: String,
}

impl Touched {
    /// The experiment's own namespace, which every target defaults to.
    pub fn own(own: &str) -> Self {
        Self {
            field: "metadata.namespace",
            namespace: own.to_owned(),
        }
    }

    /// `namespace` when the spec sets it at `field`, else the experiment's own.
    pub fn at(field: &'static str, namespace: Option<&String>, own: &str) -> Self {
        match namespace {
            Some(ns) => Self {
                field,
                namespace: ns.clone(),
            },
            None => Self::own(own),
        }
    }
}

/// An action as written in a spec: what it touches and how it is prepared
/// and recovered. Implemented on each action's spec type.
#[async_trait]
pub trait ActionSpec: Sync {
    /// Every namespace the action touches (pods, workloads, Services),
    /// for an experiment in namespace `own`.
    fn touched(&self, own: &str) -> Vec<Touched>;

    /// Checks the API server's schema cannot make (a selector's syntax, a
    /// duration's range), naming the field and the fix.
    fn validate(&self) -> Result<(), Refusal> {
        Ok(())
    }

    /// What the fault holds: two runs never hold the same target at once.
    fn target_key(&self, own: &str) -> String;

    /// The action's own admission check beyond namespaces (e.g. a `host`
    /// target against the operator's allow-list).
    async fn admit(&self, _ctx: &Context, _own: &str) -> Result<(), Refusal> {
        Ok(())
    }

    /// Resolve the target and read what the restore needs; nothing is
    /// touched yet.
    async fn prepare(
        &self,
        ctx: &Context,
        exp: &ChaosExperiment,
    ) -> Result<Box<dyn LiveAction>, Refusal>;

    /// Finish a run another instance left in flight, from its saved plan
    /// (`rec.status.restore`): put back what the fault changed and record
    /// each step. `Err` is a restore that failed.
    async fn recover(&self, ctx: &Context, run_ns: &str, rec: &mut Record) -> Result<(), String>;
}

/// An action prepared for one run. The driver saves [`restore_plan`]
/// first, then [`inject`]s, then runs [`progress`] beside the observation
/// of the guarding SLOs (whichever ends first wins), then [`release`] and
/// [`restore`] always, then judges [`expectations`] with the SLO ones.
///
/// [`restore_plan`]: LiveAction::restore_plan
/// [`inject`]: LiveAction::inject
/// [`progress`]: LiveAction::progress
/// [`release`]: LiveAction::release
/// [`restore`]: LiveAction::restore
/// [`expectations`]: LiveAction::expectations
#[async_trait]
pub trait LiveAction: Send + Sync {
    /// What the run does and how the restore undoes it, in one sentence.
    fn describe(&self) -> String;

    /// Everything needed to undo the fault, saved before it is applied.
    fn restore_plan(&self) -> RestorePlan;

    /// The seed of the action's random choices, saved with the plan so the
    /// choice can be replayed.
    fn seed(&self) -> Option<u64> {
        None
    }

    /// What a dry run reports, reading only.
    async fn dry_run(&self, _ctx: &Context) -> String {
        format!("dry run: would {}", self.describe())
    }

    /// Apply the fault: its first step (a round of deletions, the scale
    /// up), after the restore plan is written and before the phase becomes
    /// Observing. Nothing for actions whose fault builds up step by step.
    async fn inject(&mut self, _ctx: &Context, _rec: &mut Record) -> Result<(), Abort> {
        Ok(())
    }

    /// Carry the fault through until `deadline`, writing steps and evidence
    /// to `rec`, while the guarding SLOs are watched beside it. Dropped
    /// (cancelled) when the run aborts, so state the restore needs lives in
    /// `self`, not in the future.
    async fn progress(
        &mut self,
        ctx: &Context,
        rec: &mut Record,
        deadline: Instant,
    ) -> Result<(), Abort>;

    /// Let go at once of what the fault holds in this process (open
    /// connections), before any API call that may hang. Returns a note for
    /// the restore's step, if any.
    fn release(&mut self) {}

    /// Undo the fault. `Ok` carries the timeline's "Restored" message.
    async fn restore(&mut self, ctx: &Context, rec: &mut Record) -> Result<String, String>;

    /// The action's own expectations, judged from its evidence.
    fn expectations(&self, _observations: Option<&Observations>) -> Vec<ExpectationResult> {
        Vec::new()
    }

    /// The time the target took to recover, when the action measures it.
    fn recovery(&self) -> Recovery {
        Recovery::Unmeasured
    }
}

/// The action of a spec. The one place that lists every action.
pub fn spec_of(action: &ChaosAction) -> &dyn ActionSpec {
    match action {
        ChaosAction::PodKill(s) => s,
        ChaosAction::ScaleDown(s) => s,
        ChaosAction::ConnectionExhaustion(s) => s,
        ChaosAction::ZoneOutage(s) => s,
        ChaosAction::NodeDrain(s) => s,
        ChaosAction::Manifest(s) => s,
    }
}
