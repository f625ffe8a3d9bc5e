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

/// Limits from `spec.blastRadius`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub max_pods: Option<i32>,
    pub max_percent: Option<f64>,
}

/// Why a round cannot go ahead; nothing is deleted.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "spec.action.podKill.selector matches no running pod: check the labels and spec.action.podKill.namespace"
    )]
    NoCandidates,
    #[error(
        "spec.blastRadius.maxPods is {max}, but this round would delete {n} pods: lower spec.action.podKill.count/percent or raise maxPods"
    )]
    OverMaxPods { n: usize, max: i32 },
    #[error(
        "spec.blastRadius.maxPercent is {max}%, but deleting {n} of {total} matching pods is {percent:.1}%: lower spec.action.podKill.count/percent or raise maxPercent"
    )]
    OverMaxPercent {
        n: usize,
        total: usize,
        percent: f64,
        max: f64,
    },
}

impl PodKillSpec {
    /// Pods to delete in one round out of `total` candidates: `count`
    /// (at most all of them) or `percent` rounded up.
    pub fn victims_per_round(&self, total: usize) -> usize {
        let n = match (self.count, self.percent) {
            (Some(c), _) => usize::try_from(c).unwrap_or(0),
            (None, Some(p)) => (p / 100.0 * total as f64).ceil() as usize,
            (None, None) => 1,
        };
        n.min(total)
    }
}

/// Check one round against the blast radius.
pub fn check_blast_radius(n: usize, total: usize, limits: Limits) -> Result<(), PlanError> {
    if total == 0 || n == 0 {
        return Err(PlanError::NoCandidates);
    }
    if let Some(max) = limits.max_pods
        && n > usize::try_from(max).unwrap_or(0)
    {
        return Err(PlanError::OverMaxPods { n, max });
    }
    let percent = n as f64 * 100.0 / total as f64;
    if let Some(max) = limits.max_percent
        && percent > max
    {
        return Err(PlanError::OverMaxPercent {
            n,
            total,
            percent,
            max,
        });
    }
    Ok(())
}

/// Choose `n` of `names` with a generator seeded by `seed`. Names are sorted
/// first, so the same seed over the same pods gives the same choice: a run
/// can be replayed from the seed in its status.
pub fn choose<'a>(names: &[&'a str], n: usize, seed: u64) -> Vec<&'a str> {
    use rand::SeedableRng;
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut picked: Vec<&str> =
        rand::seq::index::sample(&mut rng, sorted.len(), n.min(sorted.len()))
            .into_iter()
            .map(|i| sorted[i])
            .collect();
    picked.sort_unstable();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: Option<i32>, percent: Option<f64>) -> PodKillSpec {
        PodKillSpec {
            count,
            percent,
            ..Default::default()
        }
    }

    #[test]
    fn victims_per_round() {
        let cases = [
            (Some(1), None, 3, 1),
            (Some(5), None, 3, 3),
            (None, Some(50.0), 3, 2),
            (None, Some(10.0), 3, 1),
            (None, Some(100.0), 4, 4),
            (Some(2), None, 0, 0),
        ];
        for (count, percent, total, want) in cases {
            assert_eq!(
                spec(count, percent).victims_per_round(total),
                want,
                "count {count:?} percent {percent:?} of {total}"
            );
        }
    }

    #[test]
    fn blast_radius() {
        let limits = |max_pods, max_percent| Limits {
            max_pods,
            max_percent,
        };
        assert_eq!(check_blast_radius(1, 3, limits(None, None)), Ok(()));
        assert_eq!(
            check_blast_radius(0, 0, limits(None, None)),
            Err(PlanError::NoCandidates)
        );
        assert_eq!(
            check_blast_radius(2, 3, limits(Some(1), None)),
            Err(PlanError::OverMaxPods { n: 2, max: 1 })
        );
        assert_eq!(
            check_blast_radius(1, 3, limits(Some(1), Some(34.0))),
            Ok(())
        );
        let err = check_blast_radius(2, 3, limits(None, Some(50.0))).expect_err("over 50%");
        assert!(matches!(
            err,
            PlanError::OverMaxPercent { n: 2, total: 3, .. }
        ));
        assert!(
            err.to_string()
                .contains("spec.blastRadius.maxPercent is 50%")
        );
        assert!(err.to_string().contains("66.7%"));
    }

    #[test]
    fn choice_replays_from_the_seed() {
        let pods = ["c", "a", "e", "b", "d"];
        let first = choose(&pods, 2, 42);
        assert_eq!(first.len(), 2);
        // Same seed, pods listed in another order: same victims.
        assert_eq!(choose(&["e", "d", "c", "b", "a"], 2, 42), first);
        // Different seeds spread over the pods rather than always the same.
        let distinct: std::collections::BTreeSet<Vec<&str>> =
            (0..50).map(|seed| choose(&pods, 2, seed)).collect();
        assert!(distinct.len() > 3, "{distinct:?}");
        assert_eq!(choose(&pods, 9, 1).len(), 5);
    }
}

/// The Kubernetes side of podKill: list the candidates, delete the chosen
/// ones, count Ready pods for the recovery measurement.
pub mod live {
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::api::{Api, DeleteParams, ListParams, Preconditions};
    use kube::core::Selector;

    use crate::evidence::PodRecord;

    /// The selector as a label query, or why it cannot be one.
    pub fn selector(spec: &super::PodKillSpec) -> Result<Selector, String> {
        Selector::try_from(spec.selector.clone())
            .map_err(|e| format!("spec.action.podKill.selector: {e}"))
    }

    /// Pods that may be chosen: matching, scheduled, not already going away.
    pub async fn candidates(api: &Api<Pod>, selector: &Selector) -> Result<Vec<Pod>, kube::Error> {
        let pods = api
            .list(&ListParams::default().labels_from(selector))
            .await?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect())
    }

    /// Ready pods matching the selector that are not being deleted.
    pub async fn ready_count(api: &Api<Pod>, selector: &Selector) -> Result<usize, kube::Error> {
        Ok(candidates(api, selector)
            .await?
            .iter()
            .filter(|p| is_ready(p))
            .count())
    }

    pub fn is_ready(pod: &Pod) -> bool {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    /// What the evidence keeps of a pod.
    pub fn record(pod: &Pod, at: String) -> PodRecord {
        PodRecord {
            name: pod.name_any(),
            uid: pod.metadata.uid.clone(),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            zone: None,
            ready: is_ready(pod),
            deletion_cost: pod
                .annotations()
                .get("controller.kubernetes.io/pod-deletion-cost")
                .and_then(|v| v.parse().ok()),
            at: Some(at),
            owner: None,
            revision: None,
        }
    }

    /// Delete exactly this pod (by UID, so a replacement with the same name
    /// is never hit), with the spec's grace period.
    pub async fn delete(api: &Api<Pod>, pod: &Pod, grace: Option<i64>) -> Result<(), kube::Error> {
        let params = DeleteParams {
            grace_period_seconds: grace.and_then(|g| u32::try_from(g).ok()),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        api.delete(&pod.name_any(), &params).await.map(|_| ())
    }
}
