//! `podKill`: delete a chosen number of pods matching a selector.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Delete pods matching `selector`, `count` of them or `percent` of the
/// matching set, optionally repeated every `interval`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.count) != has(self.percent)").message("set exactly one of spec.action.podKill.count or spec.action.podKill.percent"))]
pub struct PodKillSpec {
    /// Namespace of the target pods. Defaults to the experiment's namespace.
    /// The namespace must carry the label `headroom.dev/chaos=enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Label selector of the candidate pods. Must not be empty: an empty
    /// selector would match every pod in the namespace.
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("spec.action.podKill.selector must set matchLabels or matchExpressions; an empty selector would match every pod"))]
    pub selector: LabelSelector,

    /// Number of pods to delete per round (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<i32>,

    /// Percentage of the matching pods to delete per round, rounded up
    /// (greater than 0, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 100.0").message("spec.action.podKill.percent must be greater than 0 and at most 100"))]
    pub percent: Option<f64>,

    /// Grace period given to each deleted pod, in seconds. Defaults to the
    /// pod's own terminationGracePeriodSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub grace_period_seconds: Option<i64>,

    /// Time between rounds when `repeat` is above 1, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_duration")]
    pub interval: Option<String>,

    /// Number of rounds (1 to 100). Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub repeat: Option<i32>,
}
