//! Cordoning and uncordoning nodes for the node-level actions (zoneOutage,
//! nodeDrain). A node this run cordons carries an annotation naming the
//! run, so the restore uncordons exactly the nodes the run cordoned and
//! never one an administrator cordoned meanwhile for their own reasons.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::support::{RETRY_FOR, retry};
use headroom_experiments::zone_outage::{NodeInfo, ZONE_LABEL};

/// The annotation on a node this run cordoned: `namespace/run`.
pub const CORDONED_BY: &str = "headroom.dev/cordoned-by";

/// Every node, with its zone and whether it is already cordoned.
pub async fn list(client: &kube::Client, selector: Option<&str>) -> Result<Vec<Node>, String> {
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    Api::<Node>::all(client.clone())
        .list(&lp)
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing nodes: {e}"))
}

pub fn info(node: &Node) -> NodeInfo {
    NodeInfo {
        name: node.name_any(),
        zone: node.labels().get(ZONE_LABEL).cloned(),
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
    }
}

/// Cordon `name` for run `owner`.
pub async fn cordon(client: &kube::Client, name: &str, owner: &str) -> Result<(), String> {
    let patch = json!({
        "metadata": { "annotations": { CORDONED_BY: owner } },
        "spec": { "unschedulable": true },
    });
    Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("cordoning node {name}: {e}"))
}

/// Cordon every node of `names` for run `owner`, stopping at the first
/// failure: the restore uncordons what was cordoned, from the saved plan.
pub async fn cordon_all(
    client: &kube::Client,
    names: &[String],
    owner: &str,
) -> Result<(), String> {
    for name in names {
        cordon(client, name, owner).await?;
    }
    Ok(())
}

/// How one node's uncordon went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uncordon {
    Done,
    /// The node is gone (scaled away): nothing to undo.
    Gone,
    /// Someone else cordoned or uncordoned it since: left as it is.
    NotOurs(Option<String>),
}

/// Uncordon `name` if run `owner` cordoned it, retried while the API
/// server is away: a restore must not leave a zone cordoned.
pub async fn uncordon(client: &kube::Client, name: &str, owner: &str) -> Result<Uncordon, String> {
    let api = Api::<Node>::all(client.clone());
    retry(&format!("uncordoning node {name}"), RETRY_FOR, || async {
        let Some(node) = api.get_opt(name).await.map_err(|e| e.to_string())? else {
            return Ok(Uncordon::Gone);
        };
        let mark = node.annotations().get(CORDONED_BY).cloned();
        if mark.as_deref() != Some(owner) {
            return Ok(Uncordon::NotOurs(mark));
        }
        let patch = json!({
            "metadata": {
                "annotations": { CORDONED_BY: null },
                // Fails with a conflict if the node changed since it was
                // read, so a cordon made meanwhile is never undone.
                "resourceVersion": node.resource_version(),
            },
            "spec": { "unschedulable": null },
        });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| Uncordon::Done)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("uncordoning node {name}: {e}"))
}

/// Uncordon every node of a saved plan; the timeline's message, or the
/// nodes that could not be uncordoned.
pub async fn uncordon_all(
    client: &kube::Client,
    names: &[String],
    owner: &str,
) -> Result<String, String> {
    let (mut done, mut left, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        match uncordon(client, name, owner).await {
            Ok(Uncordon::Done) => done.push(name.clone()),
            Ok(Uncordon::Gone) => left.push(format!("{name} (gone)")),
            Ok(Uncordon::NotOurs(by)) => left.push(format!(
                "{name} (left as it is: {})",
                by.map_or_else(
                    || "uncordoned by someone else meanwhile".to_owned(),
                    |b| format!("now marked {CORDONED_BY}={b}")
                )
            )),
            Err(e) => failed.push(e),
        }
    }
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    let mut msg = format!("uncordoned {}", list_or_none(&done));
    if !left.is_empty() {
        msg.push_str(&format!("; {}", left.join(", ")));
    }
    Ok(msg)
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "no node".to_owned()
    } else {
        names.join(", ")
    }
}
