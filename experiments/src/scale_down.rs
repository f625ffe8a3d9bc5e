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
#[x_kube(validation = Rule::new("!has(self.expectZoneSpread) || !self.expectZoneSpread || self.scaleDownTo >= 1").message("spec.action.scaleDown.expectZoneSpread needs scaleDownTo of at least 1: scaling to 0 empties every zone"))]
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

    /// A second hypothesis: no zone (`topology.kubernetes.io/zone` of the
    /// pods' nodes) loses all of its replicas. Refuted naming the zones the
    /// scale-down emptied; needs `scaleDownTo` of at least 1.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expect_zone_spread: bool,
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

/// How many removals matched the hypothesis, out of how many removals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderScore {
    pub matched: usize,
    pub removed: usize,
}

/// Score the removals against `expect`. A removal matches when no survivor
/// was strictly more expected to go than it; ties count as matches, since
/// Kubernetes ranks pods in coarse buckets (age in logarithmic buckets,
/// creation time to the second) and may break a tie either way. So a
/// hypothesis can be partly true: `matched < removed`.
/// `None` when the expectation cannot be scored from the records
/// (`LabelFirst` needs labels, which the records do not keep).
pub fn score_order(
    expect: ExpectOrder,
    removed: &[crate::evidence::PodRecord],
    survivors: &[crate::evidence::PodRecord],
) -> Option<OrderScore> {
    use crate::evidence::PodRecord;
    use std::cmp::Ordering;
    if expect == ExpectOrder::LabelFirst {
        return None;
    }
    let all: Vec<&PodRecord> = removed.iter().chain(survivors).collect();
    let per_node = |node: &Option<String>| all.iter().filter(|p| &p.node == node).count();
    // Ordering::Less means "a is more expected to go than b".
    let goes_first = |a: &PodRecord, b: &PodRecord| -> Option<Ordering> {
        Some(match expect {
            ExpectOrder::NewestFirst => b.created.cmp(&a.created),
            ExpectOrder::OldestFirst => a.created.cmp(&b.created),
            ExpectOrder::UnreadyFirst => a.ready.cmp(&b.ready),
            ExpectOrder::LowestDeletionCostFirst => a
                .deletion_cost
                .unwrap_or(0)
                .cmp(&b.deletion_cost.unwrap_or(0)),
            ExpectOrder::MostCrowdedNodeFirst => per_node(&b.node).cmp(&per_node(&a.node)),
            ExpectOrder::LabelFirst => return None,
        })
    };
    let mut matched = 0;
    for r in removed {
        let mut ok = true;
        for s in survivors {
            if goes_first(s, r)? == Ordering::Less {
                ok = false;
            }
        }
        if ok {
            matched += 1;
        }
    }
    Some(OrderScore {
        matched,
        removed: removed.len(),
    })
}

/// Replicas of one zone before and after the scale-down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneCount {
    pub zone: String,
    pub before: usize,
    pub after: usize,
}

/// What the scale-down did to the spread of replicas over zones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZoneSpread {
    /// Some pods ran on nodes without a zone label: nothing to judge.
    Unknown { unzoned: Vec<String> },
    /// Every replica was in one zone before: there was no spread to keep.
    OneZone(String),
    /// Every zone kept at least one replica.
    Kept(Vec<ZoneCount>),
    /// These zones lost all of their replicas.
    Emptied {
        zones: Vec<String>,
        counts: Vec<ZoneCount>,
    },
}

/// Count replicas per zone before (removed and surviving pods) and after
/// (surviving pods), and name the zones left with none.
pub fn zone_spread(
    removed: &[crate::evidence::PodRecord],
    survivors: &[crate::evidence::PodRecord],
) -> ZoneSpread {
    use std::collections::BTreeMap;
    let unzoned: Vec<String> = removed
        .iter()
        .chain(survivors)
        .filter(|p| p.zone.is_none())
        .map(|p| p.name.clone())
        .collect();
    if !unzoned.is_empty() {
        return ZoneSpread::Unknown { unzoned };
    }
    let mut per_zone: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for p in removed {
        per_zone
            .entry(p.zone.as_deref().unwrap_or_default())
            .or_default()
            .0 += 1;
    }
    for p in survivors {
        let e = per_zone
            .entry(p.zone.as_deref().unwrap_or_default())
            .or_default();
        e.0 += 1;
        e.1 += 1;
    }
    let counts: Vec<ZoneCount> = per_zone
        .iter()
        .map(|(zone, (before, after))| ZoneCount {
            zone: (*zone).to_owned(),
            before: *before,
            after: *after,
        })
        .collect();
    if let [only] = counts.as_slice() {
        return ZoneSpread::OneZone(only.zone.clone());
    }
    let zones: Vec<String> = counts
        .iter()
        .filter(|c| c.before > 0 && c.after == 0)
        .map(|c| c.zone.clone())
        .collect();
    if zones.is_empty() {
        ZoneSpread::Kept(counts)
    } else {
        ZoneSpread::Emptied { zones, counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::PodRecord;

    fn pod(name: &str, created: &str) -> PodRecord {
        PodRecord {
            name: name.into(),
            created: Some(created.into()),
            ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn newest_first() {
        let old = [
            pod("a", "2026-11-23T09:00:00Z"),
            pod("b", "2026-11-23T09:00:01Z"),
        ];
        let new = [
            pod("c", "2026-11-23T09:05:00Z"),
            pod("d", "2026-11-23T09:05:00Z"),
        ];
        // The two newest went: fully confirmed.
        assert_eq!(
            score_order(ExpectOrder::NewestFirst, &new, &old),
            Some(OrderScore {
                matched: 2,
                removed: 2
            })
        );
        // The oldest went: OldestFirst holds, NewestFirst does not.
        assert_eq!(
            score_order(ExpectOrder::NewestFirst, &old, &new),
            Some(OrderScore {
                matched: 0,
                removed: 2
            })
        );
        assert_eq!(
            score_order(ExpectOrder::OldestFirst, &old, &new),
            Some(OrderScore {
                matched: 2,
                removed: 2
            })
        );
        // Mixed: one of two removals matched.
        let removed = [new[0].clone(), old[0].clone()];
        let survivors = [new[1].clone(), old[1].clone()];
        assert_eq!(
            score_order(ExpectOrder::NewestFirst, &removed, &survivors),
            Some(OrderScore {
                matched: 1,
                removed: 2
            })
        );
        // Ties (same second) count as matches.
        assert_eq!(
            score_order(ExpectOrder::NewestFirst, &new[..1], &new[1..]),
            Some(OrderScore {
                matched: 1,
                removed: 1
            })
        );
    }

    #[test]
    fn other_rules() {
        let mut unready = pod("u", "2026-11-23T09:00:00Z");
        unready.ready = false;
        let ready = pod("r", "2026-11-23T09:00:00Z");
        assert_eq!(
            score_order(
                ExpectOrder::UnreadyFirst,
                std::slice::from_ref(&unready),
                std::slice::from_ref(&ready)
            ),
            Some(OrderScore {
                matched: 1,
                removed: 1
            })
        );
        assert_eq!(
            score_order(
                ExpectOrder::UnreadyFirst,
                std::slice::from_ref(&ready),
                std::slice::from_ref(&unready)
            ),
            Some(OrderScore {
                matched: 0,
                removed: 1
            })
        );
        let mut cheap = pod("cheap", "2026-11-23T09:00:00Z");
        cheap.deletion_cost = Some(-10);
        assert_eq!(
            score_order(
                ExpectOrder::LowestDeletionCostFirst,
                std::slice::from_ref(&ready),
                &[cheap]
            ),
            Some(OrderScore {
                matched: 0,
                removed: 1
            })
        );
        assert_eq!(score_order(ExpectOrder::LabelFirst, &[ready], &[]), None);
    }

    #[test]
    fn zone_spread_names_the_zones_left_without_replicas() {
        let at = |name: &str, zone: Option<&str>| PodRecord {
            name: name.into(),
            zone: zone.map(Into::into),
            ready: true,
            ..Default::default()
        };
        let count = |zone: &str, before, after| ZoneCount {
            zone: zone.into(),
            before,
            after,
        };
        // (case, removed, survivors, want)
        let cases = [
            (
                "both zones keep one",
                vec![at("a1", Some("a")), at("b1", Some("b"))],
                vec![at("a2", Some("a")), at("b2", Some("b"))],
                ZoneSpread::Kept(vec![count("a", 2, 1), count("b", 2, 1)]),
            ),
            (
                "zone b emptied",
                vec![at("b1", Some("b")), at("b2", Some("b"))],
                vec![at("a1", Some("a")), at("a2", Some("a"))],
                ZoneSpread::Emptied {
                    zones: vec!["b".into()],
                    counts: vec![count("a", 2, 2), count("b", 2, 0)],
                },
            ),
            (
                "one zone only",
                vec![at("a1", Some("a"))],
                vec![at("a2", Some("a"))],
                ZoneSpread::OneZone("a".into()),
            ),
            (
                "a node without a zone label",
                vec![at("x", None)],
                vec![at("a1", Some("a"))],
                ZoneSpread::Unknown {
                    unzoned: vec!["x".into()],
                },
            ),
            (
                "nothing removed",
                vec![],
                vec![at("a1", Some("a")), at("b1", Some("b"))],
                ZoneSpread::Kept(vec![count("a", 1, 1), count("b", 1, 1)]),
            ),
        ];
        for (name, removed, survivors, want) in cases {
            assert_eq!(zone_spread(&removed, &survivors), want, "{name}");
        }
    }
}
