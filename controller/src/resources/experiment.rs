//! `ChaosExperiment`: a hypothesis, the fault that tests it, and the budget
//! policy that decides when the fault may run.

use headroom_experiments::checks::CheckSpec;
use headroom_experiments::{
    ConnectionExhaustionSpec, ManifestSpec, NodeDrainSpec, PodKillSpec, ScaleDownSpec,
    ZoneOutageSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A hypothesis experiment guarded by one or more SLOs.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "headroom.dev",
    version = "v1alpha1",
    kind = "ChaosExperiment",
    doc = "A hypothesis about a service under a fault (podKill, scaleDown, connectionExhaustion, zoneOutage, nodeDrain, manifest), run only while the guarding SLOs have error budget to spare; each attempt is an ExperimentRun with a verdict and its evidence.",
    plural = "chaosexperiments",
    shortname = "chaos",
    namespaced,
    status = "ChaosExperimentStatus",
    category = "headroom",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".status.action"}"#,
    printcolumn = r#"{"name":"Gate","type":"string","description":"Why the budget gate is closed, or Open","jsonPath":".status.conditions[?(@.type==\"Gated\")].reason"}"#,
    printcolumn = r#"{"name":"Last verdict","type":"string","jsonPath":".status.lastVerdict"}"#,
    printcolumn = r#"{"name":"Next run","type":"date","jsonPath":".status.nextRun"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.concurrencyPolicy) || self.concurrencyPolicy != 'Replace' || has(self.schedule)").message("spec.concurrencyPolicy Replace needs spec.schedule: it decides what a schedule slot does while a run is in flight"))]
pub struct ChaosExperimentSpec {
    /// What the team believes and how it is checked.
    pub hypothesis: Hypothesis,

    /// Names of the ServiceLevelObjectives (same namespace) that guard the
    /// experiment: it runs only while all of them have budget to spare.
    #[schemars(length(min = 1, max = 16))]
    pub slos: Vec<String>,

    /// When the budget allows a start, and when a run must abort.
    #[serde(default)]
    pub budget_policy: BudgetPolicy,

    /// The fault. Set exactly one of podKill, scaleDown, connectionExhaustion,
    /// zoneOutage, nodeDrain or manifest.
    pub action: ChaosAction,

    /// How long the fault stays in place, e.g. `5m`. Defaults to 5m.
    #[serde(default = "default_duration")]
    #[schemars(schema_with = "headroom_experiments::schema::duration")]
    pub duration: String,

    /// How often the guarding SLOs are re-read during a run. Defaults to 5s.
    #[serde(default = "default_observe_interval")]
    #[schemars(schema_with = "headroom_experiments::schema::duration")]
    pub observe_interval: String,

    /// Cron schedule (5 fields, in `timeZone`, UTC by default), e.g.
    /// `0 10 * * 1-5`. Without it the experiment runs once, as soon as the
    /// gate opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Five fields, checked by the API server at admission; the operator
    // checks their values (InvalidSchedule in the Valid condition).
    #[schemars(
        length(min = 9, max = 128),
        regex(pattern = r"^\s*[0-9A-Za-z*/,?#-]+(\s+[0-9A-Za-z*/,?#-]+){4}\s*$")
    )]
    pub schedule: Option<String>,

    /// IANA time zone of `schedule`, e.g. `Europe/Berlin` (daylight saving
    /// included). Defaults to UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// A scheduled run that cannot start within this long after its slot
    /// (the operator was down, or the leader changed) is skipped rather than
    /// started late, e.g. `10m`. Without it a missed slot runs once, late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "headroom_experiments::schema::optional_duration")]
    pub starting_deadline: Option<String>,

    /// What a schedule slot does when it comes while a run of this
    /// experiment is still in flight. `Forbid` (the default) skips the slot
    /// and records it as a Gated run with reason `RunInProgress`; `Replace`
    /// aborts and restores the run in flight, then starts the slot's run
    /// (its gate permitting). Two runs of one experiment never overlap:
    /// they would fault the same target. Needs `schedule` for `Replace`.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// Stop scheduling; a run in progress is aborted and restored.
    #[serde(default)]
    pub suspend: bool,

    /// Upper bounds on what the fault may touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast_radius: Option<BlastRadius>,

    /// Runbook for this experiment's alerts. Defaults to the dashboard's
    /// runbook page for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub runbook_url: Option<String>,

    /// What to do about the weakness this experiment finds, in words, e.g.
    /// "raise max_connections or put PgBouncer in front of PostgreSQL".
    /// When a run refutes the hypothesis, the guarding SLOs' runbook pages
    /// list the finding as a known weakness with this text beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub remediation: Option<String>,

    /// Evaluate the gate and record what would be done, without injecting.
    #[serde(default)]
    pub dry_run: bool,

    /// Finished runs (Completed, Aborted, Failed) kept per experiment; older
    /// ones are deleted. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub run_history_limit: Option<i32>,

    /// Gated records (a start the budget gate refused) kept per experiment;
    /// older ones are deleted. Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub gated_history_limit: Option<i32>,
}

/// `spec.concurrencyPolicy`, as a CronJob's, less `Allow`: two runs of
/// one experiment would fault the same target at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip a slot that comes while a run is in flight, and record it.
    #[default]
    Forbid,
    /// Abort and restore the run in flight, then start the slot's run.
    Replace,
}

/// Default of `spec.runHistoryLimit`.
pub const DEFAULT_RUN_HISTORY_LIMIT: usize = 10;
/// Default of `spec.gatedHistoryLimit`.
pub const DEFAULT_GATED_HISTORY_LIMIT: usize = 3;

fn default_duration() -> String {
    "5m".to_owned()
}

fn default_observe_interval() -> String {
    "5s".to_owned()
}

/// The hypothesis: a sentence for people and expectations for the machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hypothesis {
    /// The hypothesis in words, e.g. "losing one checkout pod does not burn
    /// the budget faster than 2x".
    #[schemars(length(min = 1, max = 1024))]
    pub description: String,
    /// The guarding SLOs keep their burn rate at or below a bound during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_holds: Option<SloHolds>,
    /// Ready replicas are back to their count before the fault within this
    /// duration of the fault, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "headroom_experiments::schema::optional_duration")]
    pub recovers_within: Option<String>,
    /// Checks beyond the burn rate (a PromQL comparison or an HTTP probe),
    /// evaluated every `observeInterval` during the fault: each is an
    /// expectation, refuted when it fails `failureThreshold` times in a row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub checks: Vec<CheckSpec>,
}

/// Expectation on burn rate during the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloHolds {
    /// Highest acceptable short-window burn rate during the run, e.g. 2.
    #[schemars(range(min = 0.0))]
    pub max_burn_rate: f64,
    /// SLOs the expectation covers. Defaults to every guarding SLO.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub slos: Vec<String>,
}

/// The budget gate and abort thresholds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetPolicy {
    /// Start only when at least this percentage of every guarding SLO's
    /// budget remains (0 to 100). Defaults to 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_budget_remaining: Option<f64>,
    /// Start only when every guarding SLO's short-window burn rate is at or
    /// below this. Defaults to 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_burn_rate_to_start: Option<f64>,
    /// Abort when the run has spent this percentage of the budget (0 to 100,
    /// exclusive of 0). Defaults to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 100))]
    pub max_budget_spend: Option<f64>,
    /// Abort when a guarding SLO's short-window burn rate crosses this.
    /// Defaults to the fastest page tier's threshold (14.4 for 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true))]
    pub abort_burn_rate: Option<f64>,
    /// Abort conditions beyond the burn rate: the fault is stopped and
    /// restored when one of these checks fails `failureThreshold` times in
    /// a row (e.g. a queue growing past a bound, a health endpoint down).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub abort_checks: Vec<CheckSpec>,
}

/// Declares [`ChaosAction`] and its spec form [`ActionFields`] from one
/// list, so an action is added by one line here (and its modules).
macro_rules! chaos_actions {
    (refusal: $refusal:literal; $($(#[doc = $doc:literal])* $variant:ident($spec:ty) = $field:ident, $name:literal;)+) => {
        /// The fault: one action of the fault library
        /// (`controller/src/engine/actions/`). Written in specs as an object
        /// with exactly one field set, as Kubernetes unions are (see
        /// [`ActionFields`]); an enum in the code, so every choice by action
        /// is a complete `match`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(try_from = "ActionFields", into = "ActionFields")]
        pub enum ChaosAction {
            $($(#[doc = $doc])* $variant($spec),)+
        }

        /// The fault as written in a spec: exactly one field set (a field
        /// set to null counts as not set).
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
        #[x_kube(validation = Rule::new(concat!($("(has(self.", $name, ") ? 1 : 0) + ",)+ "0 == 1")).message($refusal))]
        pub struct ActionFields {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $name, default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$spec>,
            )+
        }

        impl TryFrom<ActionFields> for ChaosAction {
            type Error = String;

            fn try_from(f: ActionFields) -> Result<Self, String> {
                let mut set = Vec::new();
                $(if let Some(a) = f.$field {
                    set.push(Self::$variant(a));
                })+
                match (set.pop(), set.is_empty()) {
                    (Some(a), true) => Ok(a),
                    _ => Err($refusal.into()),
                }
            }
        }

        impl From<ChaosAction> for ActionFields {
            fn from(a: ChaosAction) -> Self {
                let mut f = Self::default();
                match a {
                    $(ChaosAction::$variant(a) => f.$field = Some(a),)+
                }
                f
            }
        }

        impl ChaosAction {
            /// The action's name as written in the spec, e.g. `podKill`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)+
                }
            }
        }
    };
}

chaos_actions! {
    refusal: "spec.action must set exactly one of podKill, scaleDown, connectionExhaustion, zoneOutage, nodeDrain or manifest";
    /// Delete pods matching a selector.
    PodKill(PodKillSpec) = pod_kill, "podKill";
    /// Scale a workload up then down and record which pods were removed.
    ScaleDown(ScaleDownSpec) = scale_down, "scaleDown";
    /// Open and hold connections until the target refuses.
    ConnectionExhaustion(ConnectionExhaustionSpec) = connection_exhaustion, "connectionExhaustion";
    /// Cordon every node of one zone and delete the target's pods there.
    ZoneOutage(ZoneOutageSpec) = zone_outage, "zoneOutage";
    /// Cordon nodes matching a selector and evict their pods.
    NodeDrain(NodeDrainSpec) = node_drain, "nodeDrain";
    /// Create objects (another tool's fault) at injection, delete them at restore.
    Manifest(ManifestSpec) = manifest, "manifest";
}

/// Upper bounds on the fault's reach.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlastRadius {
    /// Most pods the fault may affect at once (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_pods: Option<i32>,
    /// Most of the matching pods, in percent, the fault may affect at once
    /// (greater than 0, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 100))]
    pub max_percent: Option<f64>,
}

/// Where an experiment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExperimentPhase {
    /// Waiting for its next run (or for the gate to open).
    Idle,
    /// A run is in flight.
    Running,
    /// `spec.suspend` is set.
    Suspended,
    /// The spec failed the operator's checks (see the Valid condition).
    Invalid,
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosExperimentStatus {
    /// The action kind, e.g. `podKill` (for `kubectl get chaos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `Idle`, `Running`, `Suspended` or `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExperimentPhase>,
    /// Name of the most recent ExperimentRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// When the next run is due, for scheduled experiments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// Verdict of the most recent completed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` (the spec passed the operator's checks) and `Gated` (why the
    /// budget gate is closed, or reason Open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_action_is_written_as_one_field_and_read_back_as_its_variant() {
        let pod_kill =
            json!({ "podKill": { "selector": { "matchLabels": { "app": "web" } }, "count": 1 } });
        let action: ChaosAction = serde_json::from_value(pod_kill.clone()).expect("podKill");
        assert_eq!(action.kind(), "podKill");
        assert_eq!(serde_json::to_value(&action).expect("json"), pod_kill);
        // A field set to null is not set (merge patches and older objects).
        let with_null = json!({ "podKill": null, "scaleDown": {
            "target": { "kind": "Deployment", "name": "web" },
            "scaleUpTo": 4, "scaleDownTo": 2, "expectOrder": "NewestFirst" } });
        let action: ChaosAction = serde_json::from_value(with_null).expect("scaleDown");
        assert_eq!(action.kind(), "scaleDown");
        for bad in [
            json!({}),
            json!({ "podKill": null }),
            json!({ "podKill": { "selector": {}, "count": 1 }, "connectionExhaustion": { "connections": 1, "holdFor": "1s", "target": { "host": "db", "port": 1 } } }),
        ] {
            let e = serde_json::from_value::<ChaosAction>(bad.clone()).expect_err("refused");
            assert!(
                e.to_string().contains("exactly one of podKill"),
                "{bad}: {e}"
            );
        }
    }
}
