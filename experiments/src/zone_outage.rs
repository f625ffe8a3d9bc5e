//! `zoneOutage`: the zone-loss drill. Cordon every node of one zone
//! (`topology.kubernetes.io/zone`) and delete the target workload's pods
//! there, then watch the workload's controller and the scheduler bring the
//! capacity back in the zones left. The restore uncordons exactly the nodes
//! the run cordoned, from the plan saved before the first cordon.
//!
//! This module holds the spec and the pure choices (which zone, the blast
//! radius, the per-zone counts); the live half is the controller's
//! `engine::actions::zone_outage`.

use std::collections::BTreeMap;

use kube::KubeSchema;
use rand::SeedableRng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::scale_down::ScaleTarget;

/// The zone label Kubernetes sets on nodes, and the one the drill reads.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Cordon the nodes of one zone and delete `target`'s pods there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.zone) != has(self.pickZone)").message("spec.action.zoneOutage: set exactly one of zone (a zone name) or pickZone (MostPods or Random)"))]
pub struct ZoneOutageSpec {
    /// The workload whose pods in the zone are deleted (Deployment,
    /// StatefulSet or ReplicaSet).
    pub target: ScaleTarget,

    /// The zone to take out (the value of the nodes'
    /// `topology.kubernetes.io/zone` label), e.g. `eu-west-1a`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub zone: Option<String>,

    /// Choose the zone at run time instead: `MostPods` (the zone holding the
    /// most of the target's pods) or `Random` (seeded; the seed is in the
    /// run's status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick_zone: Option<PickZone>,

    /// Most of the target's pods the outage may delete (1 to 1000). The run
    /// is refused, naming this field, when the zone holds more.
    #[schemars(range(min = 1, max = 1000))]
    pub max_pods: i32,

    /// Most nodes the outage may cordon (1 to 100). Defaults to 10; the run
    /// is refused, naming this field, when the zone has more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_nodes: Option<i32>,
}

/// Default of `maxNodes`.
pub const DEFAULT_MAX_NODES: usize = 10;

/// How the zone is chosen when the spec names none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PickZone {
    /// The zone holding the most of the target's pods (ties: the first
    /// zone by name), the worst case for the workload.
    MostPods,
    /// Any zone holding the target's pods, chosen with the run's seed.
    Random,
}

/// A node as the plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub zone: Option<String>,
    /// Already cordoned (by someone else): left as it is, and not
    /// uncordoned by the restore.
    pub unschedulable: bool,
}

/// What a zone outage will do, decided before anything is touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub zone: String,
    /// Nodes of the zone this run cordons (not those already cordoned).
    pub cordon: Vec<String>,
    /// Every node of the zone, cordoned before or by this run.
    pub zone_nodes: Vec<String>,
    /// The target's pods on the zone's nodes: deleted at injection.
    pub victims: Vec<String>,
}

/// Why a zone outage cannot run; each names the field to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("spec.action.zoneOutage.zone: no node carries {ZONE_LABEL}={0}")]
    NoSuchZone(String),
    #[error(
        "spec.action.zoneOutage.pickZone: none of the target's pods runs on a node with a {ZONE_LABEL} label"
    )]
    NoZonedPods,
    #[error(
        "spec.action.zoneOutage: the nodes span one zone ({0}) only; taking it out is a full outage, not a zone-loss drill"
    )]
    OneZone(String),
    #[error(
        "spec.action.zoneOutage.maxPods: zone {zone} holds {pods} of the target's pods, above the bound of {max}"
    )]
    TooManyPods {
        zone: String,
        pods: usize,
        max: usize,
    },
    #[error(
        "spec.action.zoneOutage.maxNodes: zone {zone} has {nodes} nodes, above the bound of {max}"
    )]
    TooManyNodes {
        zone: String,
        nodes: usize,
        max: usize,
    },
    #[error(
        "spec.blastRadius.{field}: zone {zone} holds {pods} of the target's {total} pods, above the bound of {bound}"
    )]
    BlastRadius {
        field: &'static str,
        zone: String,
        pods: usize,
        total: usize,
        bound: String,
    },
}

/// The experiment-wide bounds (`spec.blastRadius`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub max_pods: Option<i32>,
    pub max_percent: Option<f64>,
}

/// The target's pods per zone (pods on nodes without a zone label are not
/// counted: no zone outage reaches them).
pub fn pods_per_zone<'a>(
    pod_nodes: impl IntoIterator<Item = &'a str>,
    nodes: &[NodeInfo],
) -> BTreeMap<String, usize> {
    let zone_of: BTreeMap<&str, &str> = nodes
        .iter()
        .filter_map(|n| n.zone.as_deref().map(|z| (n.name.as_str(), z)))
        .collect();
    let mut out = BTreeMap::new();
    for node in pod_nodes {
        if let Some(z) = zone_of.get(node) {
            *out.entry((*z).to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// Decide the zone, the nodes to cordon and the pods to delete, or refuse.
/// `pods` are the target's live pods as (name, node).
pub fn plan(
    spec: &ZoneOutageSpec,
    nodes: &[NodeInfo],
    pods: &[(String, String)],
    limits: Limits,
    seed: u64,
) -> Result<Plan, PlanError> {
    let per_zone = pods_per_zone(pods.iter().map(|(_, n)| n.as_str()), nodes);
    let zone = match (&spec.zone, spec.pick_zone) {
        (Some(z), _) => {
            if !nodes.iter().any(|n| n.zone.as_deref() == Some(z)) {
                return Err(PlanError::NoSuchZone(z.clone()));
            }
            z.clone()
        }
        (None, pick) => {
            let zones: Vec<(&String, &usize)> = per_zone.iter().collect();
            let chosen = match pick.unwrap_or(PickZone::MostPods) {
                // max_by_key keeps the last maximum; reversed, the first by name.
                PickZone::MostPods => zones.iter().rev().max_by_key(|(_, n)| **n),
                PickZone::Random if zones.is_empty() => None,
                PickZone::Random => {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                    rand::seq::index::sample(&mut rng, zones.len(), 1)
                        .iter()
                        .next()
                        .and_then(|i| zones.get(i))
                }
            };
            chosen.ok_or(PlanError::NoZonedPods)?.0.clone()
        }
    };
    let zones: std::collections::BTreeSet<&str> =
        nodes.iter().filter_map(|n| n.zone.as_deref()).collect();
    if zones.len() < 2 {
        return Err(PlanError::OneZone(zone));
    }
    let zone_nodes: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.zone.as_deref() == Some(zone.as_str()))
        .collect();
    let max_nodes = spec
        .max_nodes
        .and_then(|m| usize::try_from(m).ok())
        .unwrap_or(DEFAULT_MAX_NODES);
    if zone_nodes.len() > max_nodes {
        return Err(PlanError::TooManyNodes {
            zone,
            nodes: zone_nodes.len(),
            max: max_nodes,
        });
    }
    let in_zone: Vec<String> = pods
        .iter()
        .filter(|(_, node)| zone_nodes.iter().any(|n| &n.name == node))
        .map(|(name, _)| name.clone())
        .collect();
    let max_pods = usize::try_from(spec.max_pods).unwrap_or(0);
    if in_zone.len() > max_pods {
        return Err(PlanError::TooManyPods {
            zone,
            pods: in_zone.len(),
            max: max_pods,
        });
    }
    if let Some(m) = limits.max_pods.and_then(|m| usize::try_from(m).ok())
        && in_zone.len() > m
    {
        return Err(PlanError::BlastRadius {
            field: "maxPods",
            zone,
            pods: in_zone.len(),
            total: pods.len(),
            bound: m.to_string(),
        });
    }
    if let Some(p) = limits.max_percent {
        // Pod counts are far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let share = in_zone.len() as f64 * 100.0 / pods.len().max(1) as f64;
        if share > p {
            return Err(PlanError::BlastRadius {
                field: "maxPercent",
                zone,
                pods: in_zone.len(),
                total: pods.len(),
                bound: format!("{p}%"),
            });
        }
    }
    Ok(Plan {
        cordon: zone_nodes
            .iter()
            .filter(|n| !n.unschedulable)
            .map(|n| n.name.clone())
            .collect(),
        zone_nodes: zone_nodes.iter().map(|n| n.name.clone()).collect(),
        victims: in_zone,
        zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale_down::WorkloadKind;

    fn node(name: &str, zone: Option<&str>, cordoned: bool) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            zone: zone.map(Into::into),
            unschedulable: cordoned,
        }
    }

    fn spec(zone: Option<&str>, pick: Option<PickZone>, max_pods: i32) -> ZoneOutageSpec {
        ZoneOutageSpec {
            target: ScaleTarget {
                kind: WorkloadKind::Deployment,
                name: "web".into(),
                namespace: None,
            },
            zone: zone.map(Into::into),
            pick_zone: pick,
            max_pods,
            max_nodes: None,
        }
    }

    fn cluster() -> Vec<NodeInfo> {
        vec![
            node("a1", Some("zone-a"), false),
            node("a2", Some("zone-a"), true),
            node("b1", Some("zone-b"), false),
            node("x", None, false),
        ]
    }

    fn pods(spec: &[(&str, &str)]) -> Vec<(String, String)> {
        spec.iter()
            .map(|(p, n)| ((*p).to_owned(), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn the_plan_cordons_only_nodes_not_already_cordoned_and_deletes_the_zones_pods() {
        let pods = pods(&[("p1", "a1"), ("p2", "a2"), ("p3", "b1"), ("p4", "x")]);
        let p = plan(
            &spec(Some("zone-a"), None, 5),
            &cluster(),
            &pods,
            Limits::default(),
            1,
        )
        .expect("plan");
        assert_eq!(p.zone, "zone-a");
        // a2 was cordoned by someone else: the restore must not uncordon it.
        assert_eq!(p.cordon, ["a1"]);
        assert_eq!(p.zone_nodes, ["a1", "a2"]);
        assert_eq!(p.victims, ["p1", "p2"]);
    }

    #[test]
    fn the_zone_is_picked_by_pods_and_refusals_name_the_field() {
        let three_b = pods(&[("p1", "a1"), ("p2", "b1"), ("p3", "b1"), ("p4", "b1")]);
        let tie = pods(&[("p1", "a1"), ("p2", "b1")]);
        // (case, spec, pods, limits, outcome)
        type Case = (
            &'static str,
            ZoneOutageSpec,
            Vec<(String, String)>,
            Limits,
            Result<&'static str, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "most pods",
                spec(None, Some(PickZone::MostPods), 5),
                three_b.clone(),
                Limits::default(),
                Ok("zone-b"),
            ),
            (
                "a tie goes to the first zone by name",
                spec(None, Some(PickZone::MostPods), 5),
                tie.clone(),
                Limits::default(),
                Ok("zone-a"),
            ),
            (
                "unknown zone",
                spec(Some("zone-c"), None, 5),
                tie.clone(),
                Limits::default(),
                Err("spec.action.zoneOutage.zone: no node carries"),
            ),
            (
                "maxPods",
                spec(None, Some(PickZone::MostPods), 2),
                three_b.clone(),
                Limits::default(),
                Err("spec.action.zoneOutage.maxPods: zone zone-b holds 3"),
            ),
            (
                "blastRadius.maxPods",
                spec(None, Some(PickZone::MostPods), 5),
                three_b.clone(),
                Limits {
                    max_pods: Some(1),
                    max_percent: None,
                },
                Err("spec.blastRadius.maxPods: zone zone-b holds 3 of the target's 4"),
            ),
            (
                "blastRadius.maxPercent",
                spec(None, Some(PickZone::MostPods), 5),
                three_b.clone(),
                Limits {
                    max_pods: None,
                    max_percent: Some(50.0),
                },
                Err("spec.blastRadius.maxPercent"),
            ),
            (
                "no zoned pods",
                spec(None, Some(PickZone::Random), 5),
                pods(&[("p", "x")]),
                Limits::default(),
                Err("spec.action.zoneOutage.pickZone"),
            ),
        ];
        for (name, s, p, limits, want) in cases {
            let got = plan(&s, &cluster(), &p, limits, 7);
            match (want, got) {
                (Ok(z), Ok(plan)) => assert_eq!(plan.zone, z, "{name}"),
                (Err(msg), Err(e)) => assert!(e.to_string().starts_with(msg), "{name}: {e}"),
                (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn one_zone_or_too_many_nodes_is_refused() {
        let one = vec![node("a1", Some("zone-a"), false)];
        let e = plan(
            &spec(Some("zone-a"), None, 5),
            &one,
            &pods(&[("p", "a1")]),
            Limits::default(),
            0,
        )
        .expect_err("one zone");
        assert!(matches!(e, PlanError::OneZone(_)), "{e}");
        let mut s = spec(Some("zone-a"), None, 5);
        s.max_nodes = Some(1);
        let e = plan(&s, &cluster(), &[], Limits::default(), 0).expect_err("two nodes");
        assert_eq!(
            e.to_string(),
            "spec.action.zoneOutage.maxNodes: zone zone-a has 2 nodes, above the bound of 1"
        );
    }

    #[test]
    fn a_random_zone_is_replayed_by_its_seed_and_holds_the_targets_pods() {
        let p = pods(&[("p1", "a1"), ("p2", "b1")]);
        let s = spec(None, Some(PickZone::Random), 5);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let first = plan(&s, &cluster(), &p, Limits::default(), seed).expect("plan");
            let again = plan(&s, &cluster(), &p, Limits::default(), seed).expect("plan");
            assert_eq!(first, again, "seed {seed}");
            seen.insert(first.zone);
        }
        assert_eq!(
            seen.len(),
            2,
            "32 seeds always chose the same zone: {seen:?}"
        );
    }
}
