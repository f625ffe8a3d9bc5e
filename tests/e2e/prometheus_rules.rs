//! PrometheusRule objects against the real CRD of the Prometheus Operator,
//! and their removal by the real garbage collector.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use headroom::prometheus_rules::{api_resource, object_name};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{Cluster, Operator, eventually, repo_root};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

const DASHBOARD: &str = "http://dashboard.test";
const RUNBOOK: &str = "https://runbooks.test/checkout-availability";

fn slo(name: &str) -> Result<ServiceLevelObjective> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": { "name": name },
        "spec": {
            "service": "checkout",
            "objective": 99.0,
            "window": "1h",
            "indicator": { "ratio": {
                "errors": "sum(rate(http_requests_total{job=\"checkout\",code=~\"5..\"}[$window]))",
                "total": "sum(rate(http_requests_total{job=\"checkout\"}[$window]))"
            }},
            "alerting": {
                "runbookUrl": RUNBOOK,
                "tiers": [
                    { "name": "page-fast", "severity": "page", "budgetPercent": 2, "longWindow": "2m", "shortWindow": "30s" },
                    { "name": "ticket-slow", "severity": "ticket", "budgetPercent": 10, "longWindow": "10m", "shortWindow": "1m" }
                ]
            }
        }
    }))?)
}

/// `headroom rules -f` for the SLO as stored, parsed: the reference the
/// object must match.
fn headroom_rules_groups(slo: &ServiceLevelObjective) -> Result<Value> {
    let path = std::env::temp_dir().join(format!(
        "headroom-rules-{}-{}.yaml",
        slo.namespace().unwrap_or_default(),
        slo.name_any()
    ));
    std::fs::write(&path, serde_yaml::to_string(slo)?)?;
    let bin = repo_root().join("target/debug/headroom");
    let out = std::process::Command::new(&bin)
        .args(["rules", "--dashboard-url", DASHBOARD, "-f"])
        .arg(&path)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        bail!(
            "headroom rules failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file: Value = serde_yaml::from_slice(&out.stdout)?;
    Ok(file["groups"].clone())
}

#[tokio::test]
async fn slo_gets_its_prometheus_rule_and_loses_it_with_the_slo() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    cluster.install_prometheus_rule_crd()?;
    let ns = cluster.namespace("promrule").await?;
    let slos: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    let rules: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns.name, &api_resource());
    let created = slos
        .create(&PostParams::default(), &slo("checkout-availability")?)
        .await?;
    let name = object_name("checkout-availability");
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &["--evaluation-interval", "1s", "--dashboard-url", DASHBOARD],
    )?;

    let rule = eventually(
        "the SLO's PrometheusRule",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok(rules.get_opt(&name).await?) },
    )
    .await
    .with_context(|| operator.log())?;

    assert_eq!(
        rule.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("headroom")
    );
    let owner = rule
        .owner_references()
        .first()
        .context("no ownerReference")?;
    assert_eq!(owner.kind, "ServiceLevelObjective");
    assert_eq!(Some(&owner.uid), created.meta().uid.as_ref());
    assert_eq!(owner.controller, Some(true));

    let groups = &rule.data["spec"]["groups"];
    let alerts: Vec<&Value> = groups[0]["rules"]
        .as_array()
        .context("spec.groups[0].rules")?
        .iter()
        .filter(|r| r.get("alert").is_some())
        .collect();
    assert_eq!(alerts.len(), 2, "{groups}");
    for alert in &alerts {
        assert_eq!(alert["annotations"]["runbook_url"], RUNBOOK, "{alert}");
    }
    let stored = slos.get("checkout-availability").await?;
    assert_eq!(groups, &headroom_rules_groups(&stored)?);

    // Unchanged SLO, unchanged object: several cycles write nothing.
    let version = rule.resource_version();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rules.get(&name).await?.resource_version(),
        version,
        "the PrometheusRule was rewritten without a change"
    );

    // A changed SLO changes the object.
    slos.patch(
        "checkout-availability",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({ "spec": { "objective": 99.5 } })),
    )
    .await?;
    eventually(
        "the PrometheusRule to follow the new objective",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let stored = slos.get("checkout-availability").await?;
            let now = rules.get(&name).await?;
            Ok((now.data["spec"]["groups"] == headroom_rules_groups(&stored)?).then_some(()))
        },
    )
    .await
    .with_context(|| operator.log())?;

    // Without the operator: only the garbage collector can remove it.
    drop(operator);
    slos.delete("checkout-availability", &DeleteParams::default())
        .await?;
    eventually(
        "the garbage collector to delete the PrometheusRule",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async { Ok(rules.get_opt(&name).await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}
