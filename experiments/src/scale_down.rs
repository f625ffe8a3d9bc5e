//! `scaleDown`: scale a workload up, then down, and record which pods the
//! cluster's own controller removed. Headroom never picks the victims.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scale `target` up to `scaleUpTo`, wait for Ready, scale down to
/// `scaleDownTo`, and compare the removed pods with `expectOrder`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.scaleUpTo > self.scaleDownTo").message("spec.action.scaleDown.scaleUpTo must be greater than spec.action.scaleDown.scaleDownTo"))]
pub struct ScaleDownSpec {
    /// The workload to scale.
    pub target: ScaleTarget,

    /// Replica count to scale up to before the scale-down (1 to 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub scale_up_to: i32,

    /// Replica count to scale down to; the pods removed on the way are the
    /// evidence (0 to 999).
    #[schemars(range(min = 0, max = 999))]
    pub scale_down_to: i32,

    /// The hypothesis about which pods the controller removes first.
    pub expect_order: ExpectOrder,

    /// For `expectOrder: LabelFirst`: pods carrying this label (`key=value`)
    /// are expected to go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub expect_label: Option<String>,
}

/// A workload that has a scale subresource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    /// Kind of the workload: Deployment, StatefulSet or ReplicaSet.
    pub kind: WorkloadKind,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the workload. Defaults to the experiment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Workload kinds Headroom can scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    ReplicaSet,
}

/// Expected removal order on scale-down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExpectOrder {
    /// The most recently created pods are removed first.
    NewestFirst,
    /// The oldest pods are removed first.
    OldestFirst,
    /// Pods that are not Ready are removed before Ready ones.
    UnreadyFirst,
    /// Pods with the lowest `controller.kubernetes.io/pod-deletion-cost` go first.
    LowestDeletionCostFirst,
    /// Pods on the node hosting the most replicas go first (spreading).
    MostCrowdedNodeFirst,
    /// Pods carrying `expectLabel` go first.
    LabelFirst,
}
