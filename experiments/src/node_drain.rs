//! `nodeDrain`: drain N nodes matching a selector, as an upgrade would:
//! cordon them, then evict their pods through the Eviction API so
//! PodDisruptionBudgets hold (or delete them, with `respectPDB: false`).
//! The restore uncordons exactly the nodes the run cordoned.
//!
//! This module holds the spec and the pure choices (which nodes, which pods
//! are drained and which are left, the bounds); the live half is the
//! controller's `engine::actions::node_drain`.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Drain `count` nodes matching `nodeSelector`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeDrainSpec {
    /// Nodes that may be drained (labels), e.g. `matchLabels:
    /// {node.kubernetes.io/instance-type: m5.large}`. Nodes already
    /// cordoned are not chosen.
    pub node_selector: LabelSelector,

    /// How many of the matching nodes to drain, chosen with the run's seed
    /// (1 to 10).
    #[schemars(range(min = 1, max = 10))]
    pub count: i32,

    /// Evict through the Eviction API, so PodDisruptionBudgets can refuse
    /// (the way `kubectl drain` and node upgrades work). Defaults to true;
    /// false deletes the pods, ignoring budgets.
    #[serde(rename = "respectPDB", default = "yes")]
    pub respect_pdb: bool,

    /// Most pods the drain may evict (1 to 1000). The run is refused,
    /// naming this field, when the chosen nodes hold more.
    #[schemars(range(min = 1, max = 1000))]
    pub max_pods: i32,

    /// A hypothesis: every pod is evicted within this long of the cordon,
    /// e.g. `30s`. Refuted naming the PodDisruptionBudget that refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_duration")]
    pub expect_drain_within: Option<String>,

    /// Grace period for each pod (seconds). Defaults to the pod's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub grace_period_seconds: Option<i64>,
}

fn yes() -> bool {
    true
}

/// A pod on a node the drain considers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Kind of its controller (`ReplicaSet`, `StatefulSet`, `DaemonSet`,
    /// `Job`, …), `None` for a bare pod.
    pub controller: Option<String>,
    /// A static pod's mirror (`kubernetes.io/config.mirror`).
    pub mirror: bool,
    /// Already being deleted, or finished (Succeeded, Failed).
    pub gone: bool,
}

/// Why a pod on a drained node is left where it is (as `kubectl drain
/// --ignore-daemonsets` leaves them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Left {
    DaemonSet,
    Mirror,
    Finished,
}

/// What a drain will do, decided before anything is touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The nodes drained (and cordoned by the run).
    pub nodes: Vec<String>,
    /// The pods evicted, as (namespace, name).
    pub evict: Vec<(String, String)>,
    /// The pods left, and why.
    pub left: Vec<(String, String, Left)>,
}

/// Why a drain cannot run; each names the field to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "spec.action.nodeDrain.nodeSelector: {found} schedulable nodes match, fewer than count {count}"
    )]
    TooFewNodes { found: usize, count: usize },
    #[error(
        "spec.action.nodeDrain.nodeSelector: node {node} runs pod {namespace}/{pod}, in a namespace not opted in to experiments (label it headroom.dev/chaos=enabled, or choose nodes without such pods)"
    )]
    NotOptedIn {
        node: String,
        namespace: String,
        pod: String,
    },
    #[error(
        "spec.action.nodeDrain.nodeSelector: node {node} runs pod {namespace}/{pod} of the operator's own namespace; Headroom never drains it"
    )]
    OperatorNamespace {
        node: String,
        namespace: String,
        pod: String,
    },
    #[error(
        "spec.action.nodeDrain.nodeSelector: node {node} runs pod {namespace}/{pod}, which no controller owns: evicting it would delete it for good"
    )]
    BarePod {
        node: String,
        namespace: String,
        pod: String,
    },
    #[error(
        "spec.action.nodeDrain.maxPods: the nodes chosen ({nodes}) hold {pods} pods to evict, above the bound of {max}"
    )]
    TooManyPods {
        nodes: String,
        pods: usize,
        max: usize,
    },
}

/// Choose `count` of the candidate nodes (schedulable, matching the
/// selector) with `seed`: the same nodes for the same seed.
pub fn choose_nodes(
    spec: &NodeDrainSpec,
    candidates: &[String],
    seed: u64,
) -> Result<Vec<String>, PlanError> {
    let count = usize::try_from(spec.count).unwrap_or(1).max(1);
    let mut sorted: Vec<&String> = candidates.iter().collect();
    sorted.sort();
    sorted.dedup();
    if sorted.len() < count {
        return Err(PlanError::TooFewNodes {
            found: sorted.len(),
            count,
        });
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut nodes: Vec<String> = rand::seq::index::sample(&mut rng, sorted.len(), count)
        .iter()
        .filter_map(|i| sorted.get(i).map(|s| (*s).clone()))
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// Choose the nodes ([`choose_nodes`]), then decide every pod on them:
/// evicted, left (as `kubectl drain --ignore-daemonsets` leaves them), or
/// a refusal naming the field.
pub fn plan(
    spec: &NodeDrainSpec,
    candidates: &[String],
    pods: &[PodInfo],
    opted_in: &BTreeSet<String>,
    operator_namespace: &str,
    seed: u64,
) -> Result<Plan, PlanError> {
    let nodes = choose_nodes(spec, candidates, seed)?;
    let (mut evict, mut left) = (Vec::new(), Vec::new());
    for p in pods.iter().filter(|p| nodes.contains(&p.node)) {
        let key = (p.namespace.clone(), p.name.clone());
        let why = if p.gone {
            Some(Left::Finished)
        } else if p.mirror {
            Some(Left::Mirror)
        } else if p.controller.as_deref() == Some("DaemonSet") {
            Some(Left::DaemonSet)
        } else {
            None
        };
        if let Some(why) = why {
            left.push((key.0, key.1, why));
            continue;
        }
        let refuse = |f: fn(String, String, String) -> PlanError| {
            Err(f(p.node.clone(), p.namespace.clone(), p.name.clone()))
        };
        if p.namespace == operator_namespace {
            return refuse(|node, namespace, pod| PlanError::OperatorNamespace {
                node,
                namespace,
                pod,
            });
        }
        if !opted_in.contains(&p.namespace) {
            return refuse(|node, namespace, pod| PlanError::NotOptedIn {
                node,
                namespace,
                pod,
            });
        }
        if p.controller.is_none() {
            return refuse(|node, namespace, pod| PlanError::BarePod {
                node,
                namespace,
                pod,
            });
        }
        evict.push(key);
    }
    let max = usize::try_from(spec.max_pods).unwrap_or(0);
    if evict.len() > max {
        return Err(PlanError::TooManyPods {
            nodes: nodes.join(", "),
            pods: evict.len(),
            max,
        });
    }
    Ok(Plan { nodes, evict, left })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: i32, max_pods: i32) -> NodeDrainSpec {
        NodeDrainSpec {
            node_selector: LabelSelector::default(),
            count,
            respect_pdb: true,
            max_pods,
            expect_drain_within: None,
            grace_period_seconds: None,
        }
    }

    fn pod(ns: &str, name: &str, node: &str, controller: Option<&str>) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            node: node.into(),
            controller: controller.map(Into::into),
            mirror: false,
            gone: false,
        }
    }

    fn opted() -> BTreeSet<String> {
        ["shop".to_owned()].into()
    }

    #[test]
    fn a_drain_evicts_controlled_pods_and_leaves_what_kubectl_drain_leaves() {
        let mut mirror = pod("shop", "static", "n1", None);
        mirror.mirror = true;
        let mut done = pod("shop", "job-1", "n1", Some("Job"));
        done.gone = true;
        let pods = vec![
            pod("shop", "web-1", "n1", Some("ReplicaSet")),
            pod("shop", "db-0", "n1", Some("StatefulSet")),
            pod("kube-system", "proxy", "n1", Some("DaemonSet")),
            mirror,
            done,
            pod("elsewhere", "x", "n2", None),
        ];
        let p = plan(
            &spec(1, 5),
            &["n1".into()],
            &pods,
            &opted(),
            "headroom-system",
            3,
        )
        .expect("plan");
        assert_eq!(p.nodes, ["n1"]);
        let evicted: Vec<&str> = p.evict.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(evicted, ["web-1", "db-0"]);
        let left: Vec<(&str, Left)> = p.left.iter().map(|(_, n, w)| (n.as_str(), *w)).collect();
        assert_eq!(
            left,
            [
                ("proxy", Left::DaemonSet),
                ("static", Left::Mirror),
                ("job-1", Left::Finished)
            ]
        );
    }

    #[test]
    fn refusals_name_the_field_and_the_pod() {
        let nodes = ["n1".to_owned(), "n2".to_owned()];
        // (case, spec, pods, message start)
        let cases = [
            (
                "too few nodes",
                spec(3, 5),
                vec![],
                "spec.action.nodeDrain.nodeSelector: 2 schedulable nodes match, fewer than count 3",
            ),
            (
                "not opted in",
                spec(2, 5),
                vec![pod("other", "a", "n2", Some("ReplicaSet"))],
                "spec.action.nodeDrain.nodeSelector: node n2 runs pod other/a, in a namespace not opted in",
            ),
            (
                "the operator's",
                spec(2, 5),
                vec![pod("headroom-system", "op", "n1", Some("ReplicaSet"))],
                "spec.action.nodeDrain.nodeSelector: node n1 runs pod headroom-system/op of the operator's own namespace",
            ),
            (
                "bare pod",
                spec(2, 5),
                vec![pod("shop", "bare", "n1", None)],
                "spec.action.nodeDrain.nodeSelector: node n1 runs pod shop/bare, which no controller owns",
            ),
            (
                "maxPods",
                spec(2, 1),
                vec![
                    pod("shop", "a", "n1", Some("ReplicaSet")),
                    pod("shop", "b", "n2", Some("ReplicaSet")),
                ],
                "spec.action.nodeDrain.maxPods: the nodes chosen (n1, n2) hold 2 pods to evict, above the bound of 1",
            ),
        ];
        for (name, s, pods, want) in cases {
            let e = plan(&s, &nodes, &pods, &opted(), "headroom-system", 0)
                .expect_err(name)
                .to_string();
            assert!(e.starts_with(want), "{name}: {e}");
        }
    }

    #[test]
    fn the_nodes_are_chosen_by_the_seed() {
        let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        let mut seen = BTreeSet::new();
        for seed in 0..40 {
            let a = plan(&spec(2, 5), &nodes, &[], &opted(), "x", seed).expect("plan");
            let b = plan(&spec(2, 5), &nodes, &[], &opted(), "x", seed).expect("plan");
            assert_eq!(a, b, "seed {seed}");
            assert_eq!(a.nodes.len(), 2);
            seen.insert(a.nodes);
        }
        assert!(seen.len() > 3, "40 seeds chose only {seen:?}");
    }
}
