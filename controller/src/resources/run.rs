//! `ExperimentRun`: one attempt of an experiment, created by the operator.
//! It is the durable record of an outcome, and it holds the restore plan
//! before any fault is applied, so a restarted operator can undo it.

use headroom_experiments::evidence::PodRecord;
use headroom_experiments::scale_down::WorkloadKind;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::experiment::ChaosExperimentSpec;

/// One attempt of a ChaosExperiment.
#[derive(CustomResource, JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "headroom.dev",
    version = "v1alpha1",
    kind = "ExperimentRun",
    doc = "One attempt of a ChaosExperiment, written by the operator: the gate decision, the restore plan saved before the fault, the timeline, the evidence, the budget spent and the verdict.",
    plural = "experimentruns",
    shortname = "run",
    namespaced,
    status = "ExperimentRunStatus",
    category = "headroom",
    printcolumn = r#"{"name":"Experiment","type":"string","jsonPath":".spec.experiment"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.verdict"}"#,
    printcolumn = r#"{"name":"Budget spent","type":"number","description":"Share of the error budget this run spent","jsonPath":".status.budget.spent"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentRunSpec {
    /// Name of the ChaosExperiment this run belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub experiment: String,
    /// What started the run: `Schedule`, `Once` or `Manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// The experiment's spec when the run was created.
    pub snapshot: ChaosExperimentSpec,
    /// The guarding SLOs' numbers when the run was created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slos: Vec<SloSnapshot>,
}

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Trigger {
    /// A slot of `spec.schedule`.
    Schedule,
    /// An experiment without a schedule, run once the gate opens.
    Once,
    /// "Run now" from the dashboard.
    Manual,
}

/// A guarding SLO's figures at the start of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloSnapshot {
    /// SLO name.
    pub name: String,
    /// Objective in percent.
    pub objective: f64,
    /// Rolling window, e.g. `30d`.
    pub window: String,
    /// Budget remaining at the start (ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_remaining: Option<f64>,
    /// Short-window burn rate at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_burn_rate: Option<f64>,
}

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunPhase {
    /// Created; the gate has not been decided yet.
    #[default]
    Pending,
    /// The gate was closed: nothing was touched.
    Gated,
    /// The restore plan is saved and the fault is being applied.
    Injecting,
    /// The fault is in place and the SLOs are being watched.
    Observing,
    /// The fault is being undone.
    Restoring,
    /// The run finished and was restored.
    Completed,
    /// The run was stopped early (budget at risk, no data, deletion, pause)
    /// and restored.
    Aborted,
    /// The run could not complete its restore or hit an error.
    Failed,
}

impl RunPhase {
    /// Phases in which a fault may be in place and a restore is owed.
    pub fn holds_fault(self) -> bool {
        matches!(self, Self::Injecting | Self::Observing | Self::Restoring)
    }

    /// Phases after which nothing more happens.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Gated | Self::Completed | Self::Aborted | Self::Failed
        )
    }
}

/// Outcome of a hypothesis or one of its expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// The measurement is within the bound.
    Confirmed,
    /// The measurement breaks the bound.
    Refuted,
    /// Not enough evidence either way (no data, aborted before the measure).
    Inconclusive,
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentRunStatus {
    /// Pending, Gated, Injecting, Observing, Restoring, Completed, Aborted or Failed.
    #[serde(default)]
    pub phase: RunPhase,
    /// The hypothesis' verdict: the conjunction of the expectations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// One result per expectation, with the measured value beside the bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expectations: Vec<ExpectationResult>,
    /// The figures the start decision used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateRecord>,
    /// Budget before and after, and what this run spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetRecord>,
    /// Timestamped steps of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// Experiment-specific evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observations: Option<Observations>,
    /// Everything needed to undo the fault, written before it is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestorePlan>,
    /// Seed of the random choice of targets, so the choice can be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // int64, not schemars' uint64, which the API server does not know and
    // warns about on apply; seeds have 53 bits, so they fit either.
    #[schemars(extend("format" = "int64", "minimum" = 0))]
    pub seed: Option<u64>,
    /// Why the run was aborted or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the fault was first applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Conditions of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The operator instance driving the run and its last heartbeat.
    /// Another instance adopts (restores) the run only once the heartbeat
    /// is older than `leaseDurationSeconds` plus a margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<RunDriver>,
}

/// Which operator instance drives a run, renewed while it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunDriver {
    /// The instance's identity: its pod name (or host name) with its
    /// process id and a random suffix, unique per process.
    pub instance: String,
    /// The instance's last renewal.
    pub heartbeat_time: MicroTime,
    /// How long the heartbeat holds: past it (plus a margin for clock
    /// skew), the driver is taken to be gone.
    pub lease_duration_seconds: i64,
}

/// The result of one expectation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpectationResult {
    /// Which expectation, e.g. `sloHolds/checkout-availability` or `recoversWithin`.
    pub name: String,
    /// Confirmed, Refuted or Inconclusive.
    pub result: Verdict,
    /// The measured value, with its unit, e.g. `3.2` or `12.5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<String>,
    /// The bound it was compared with, e.g. `<= 2` or `<= 30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The gate decision and the figures behind it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateRecord {
    /// Whether the run was allowed to start.
    pub open: bool,
    /// Machine-readable reason, e.g. `BudgetBelowPolicy`, `NoData`, `Open`.
    pub reason: String,
    /// The reason in words, with the figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    /// Per-SLO figures used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slos: Vec<SloSnapshot>,
}

/// Budget accounting of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetRecord {
    /// Lowest budget remaining among the guarding SLOs before the run (ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_before: Option<f64>,
    /// The same after the run (ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_after: Option<f64>,
    /// Share of the budget the run spent (ratio; 0.02 is 2%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<f64>,
    /// `spent` divided by `budgetPolicy.maxBudgetSpend`: above 1 the run
    /// overshot its cap (by the spend between two observations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_of_cap: Option<f64>,
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// When it happened (microseconds, so reaction times can be measured).
    pub time: MicroTime,
    /// Short name of the step, e.g. `GateOpen`, `PodKilled`, `AbortRequested`, `Restored`.
    pub step: String,
    /// Details in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Evidence gathered during the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Observations {
    /// Pods deleted by podKill, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub killed_pods: Vec<PodRecord>,
    /// Pods the controller removed on scale-down, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_pods: Vec<PodRecord>,
    /// Pods that survived the scale-down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub surviving_pods: Vec<PodRecord>,
    /// For scaleDown: how many removals matched the expected order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_matches: Option<i32>,
    /// Seconds from the fault until Ready replicas were back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_seconds: Option<f64>,
    /// For connectionExhaustion: connections open when the target first refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_at_first_refusal: Option<i32>,
    /// For connectionExhaustion: most connections held at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_held: Option<i32>,
    /// For connectionExhaustion: the target's error text at first refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_message: Option<String>,
    /// For connectionExhaustion: held connections the target dropped (a
    /// restart, a failover, an idle timeout), in total. Dropped connections
    /// are no longer counted as held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_dropped: Option<i32>,
    /// For connectionExhaustion: each time held connections were found
    /// dropped, with how many and how many were still held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection_drops: Vec<ConnectionDrop>,
    /// For zoneOutage: the zone taken out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// For zoneOutage: the target's Ready pods per zone before the fault
    /// and at its end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods_per_zone: Vec<ZonePods>,
    /// For zoneOutage: seconds from the deletions until every deleted pod
    /// had a replacement scheduled on a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule_seconds: Option<f64>,
    /// For zoneOutage: the target's pods the scheduler could not place at
    /// the end of the fault, with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_pods: Vec<PendingPod>,
    /// Highest short-window burn rate seen during the run, per SLO.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub max_burn_rates: Vec<SloBurnRate>,
    /// For nodeDrain: the nodes drained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drained_nodes: Vec<String>,
    /// For nodeDrain: every pod the drain evicted or tried to, with the
    /// PodDisruptionBudget that refused it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evictions: Vec<EvictionRecord>,
    /// For nodeDrain: seconds from the cordon until every pod was evicted
    /// and gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<f64>,
    /// The checks (`hypothesis.checks`, `budgetPolicy.abortChecks`) as
    /// sampled every observation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckRecord>,
}

/// One pod a nodeDrain evicted, or tried to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvictionRecord {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The node it ran on.
    pub node: String,
    /// Whether the eviction (or deletion) was accepted.
    pub evicted: bool,
    /// Seconds from the cordon until it was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_after_seconds: Option<f64>,
    /// Evictions refused (429: a PodDisruptionBudget allowed no disruption).
    #[serde(default)]
    pub refusals: i32,
    /// The PodDisruptionBudget whose selector matches the pod, when an
    /// eviction was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdb: Option<String>,
    /// The API server's last refusal message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
}

/// A check's samples during the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckRecord {
    /// The check's name.
    pub name: String,
    /// `Expectation` (from `hypothesis.checks`) or `Abort` (from
    /// `budgetPolicy.abortChecks`).
    pub role: CheckRole,
    /// What passing means, e.g. `queue_depth < 100`.
    pub bound: String,
    /// Samples taken.
    pub samples: i32,
    /// Samples that failed.
    pub failures: i32,
    /// Longest run of consecutive failures.
    pub max_consecutive_failures: i32,
    /// Consecutive failures that fail the check.
    pub failure_threshold: i32,
    /// The last sample: the value, the status, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// Which list a check comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CheckRole {
    Expectation,
    Abort,
}

/// Ready pods of the target in one zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZonePods {
    /// The zone (`topology.kubernetes.io/zone` of the pods' nodes).
    pub zone: String,
    /// Before the fault.
    pub before: i32,
    /// At the end of the fault (before the restore).
    pub after: i32,
}

/// A pod the scheduler could not place, and why (its PodScheduled
/// condition: e.g. "0/3 nodes are available: 1 node(s) were unschedulable,
/// 2 node(s) didn't match pod topology spread constraints").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingPod {
    /// Pod name.
    pub name: String,
    /// The PodScheduled condition's reason, e.g. `Unschedulable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The scheduler's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Held connections found dropped by the target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionDrop {
    /// When the drop was seen (checked every 100 ms while holding).
    pub time: MicroTime,
    /// Connections found dropped.
    pub dropped: i32,
    /// Connections still held right after.
    pub held: i32,
}

/// A burn rate for one SLO.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloBurnRate {
    /// SLO name.
    pub slo: String,
    /// Burn rate.
    pub burn_rate: f64,
}

/// What must be done to undo the fault.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    /// Workload whose replica count must be put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRestore>,
    /// Ready pods matching the podKill selector before the fault; the
    /// restore waits for that many again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_pods_before: Option<i32>,
    /// Connections the operator holds; released on restore or when the
    /// operator process ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_held: Option<i32>,
    /// Nodes the run cordoned (annotated `headroom.dev/cordoned-by`), saved
    /// before the first cordon: the restore uncordons exactly these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cordoned_nodes: Vec<String>,
    /// Objects a manifest run creates (annotated `headroom.dev/created-by`),
    /// saved before the first is created: the restore deletes exactly these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_objects: Vec<CreatedObject>,
    /// Whether the restore has been done.
    #[serde(default)]
    pub done: bool,
}

/// An object a manifest run creates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedObject {
    /// apiVersion, e.g. `networking.k8s.io/v1`.
    pub api_version: String,
    /// Kind, e.g. `NetworkPolicy`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A workload's replica count before the fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRestore {
    /// Deployment, StatefulSet or ReplicaSet.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Replicas before the fault.
    pub replicas: i32,
}
