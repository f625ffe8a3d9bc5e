//! Evidence an experiment records in its run: what was touched and what the
//! cluster did in response.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One pod as seen at the moment it mattered (killed, removed, survived).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// Pod name.
    pub name: String,
    /// Pod UID, so a replacement with the same name is not confused with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Node the pod ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Zone of that node (`topology.kubernetes.io/zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Whether the pod was Ready.
    #[serde(default)]
    pub ready: bool,
    /// `controller.kubernetes.io/pod-deletion-cost`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_cost: Option<i32>,
    /// When Headroom saw it go (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The controller that owned it, e.g. `ReplicaSet/web-5d8f7c9b4`: with
    /// several ReplicaSets (a rollout), which one lost the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The revision it was made from: the Deployment revision of its
    /// ReplicaSet, or a StatefulSet's `controller-revision-hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}
