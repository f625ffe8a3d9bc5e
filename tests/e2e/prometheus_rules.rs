//! PrometheusRule objects against the real CRD of the Prometheus Operator,
//! and their removal by the real garbage collector.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use headroom::prometheus_rules::{api_resource, object_name};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{Cluster, Operator, eventually, repo_root};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
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
    // The SLO's groups; the file also closes with the experiments' group
    // (HeadroomHypothesisRefuted), which belongs to no SLO's object.
    let groups: Vec<Value> = file["groups"]
        .as_array()
        .context("groups")?
        .iter()
        .filter(|g| g["name"] != "headroom-experiments")
        .cloned()
        .collect();
    Ok(Value::Array(groups))
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

/// A Prometheus Operator `ruleSelector` as a label-selector string (what a
/// list call's `labelSelector` and `kubectl -l` take): `matchLabels` as
/// `k=v`, `matchExpressions` as `k in (...)`, `k notin (...)`, `k`, `!k`.
fn selector_string(selector: &Value) -> Result<String> {
    let mut parts = Vec::new();
    if let Some(labels) = selector["matchLabels"].as_object() {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().context("label value")?));
        }
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().context("key")?;
        let values = || -> Result<String> {
            let v: Vec<&str> = e["values"]
                .as_array()
                .context("values")?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            Ok(v.join(","))
        };
        parts.push(match e["operator"].as_str().context("operator")? {
            "In" => format!("{key} in ({})", values()?),
            "NotIn" => format!("{key} notin ({})", values()?),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => bail!("unknown operator {other}"),
        });
    }
    Ok(parts.join(","))
}

#[tokio::test]
async fn operator_and_slo_labels_let_a_rule_selector_select_the_objects() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    cluster.install_prometheus_rule_crd()?;
    let ns = cluster.namespace("promrule-sel").await?;
    let slos: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    let rules: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns.name, &api_resource());
    let mut payments = slo("payments")?;
    payments
        .spec
        .alerting
        .get_or_insert_with(Default::default)
        .prometheus_rule = Some(serde_json::from_value(json!({
        "labels": { "team": "payments" },
        "annotations": { "owner": "payments-oncall" }
    }))?);
    slos.create(&PostParams::default(), &payments).await?;
    slos.create(&PostParams::default(), &slo("search")?).await?;
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "1s",
            "--prometheus-rule-label",
            "release=kube-prometheus-stack",
            "--prometheus-rule-label",
            "team=platform",
            "--prometheus-rule-annotation",
            "owner=sre",
        ],
    )?;
    let names = |list: Vec<DynamicObject>| -> Vec<String> {
        let mut n: Vec<String> = list.iter().map(ResourceExt::name_any).collect();
        n.sort();
        n
    };
    // The two SLOs' objects and the namespace's experiments object (the
    // refuted-hypothesis alert), which carries the operator-wide labels.
    let both = vec![
        object_name("payments"),
        object_name("search"),
        "headroom.experiments".to_owned(),
    ];

    // kube-prometheus-stack's default: select the release's rules.
    let release: Value = json!({ "matchLabels": { "release": "kube-prometheus-stack" } });
    let selected = eventually(
        "the SLOs' and the experiments' objects selected by the release ruleSelector",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let lp = ListParams::default().labels(&selector_string(&release)?);
            let found = names(rules.list(&lp).await?.items);
            Ok((found == both).then_some(found))
        },
    )
    .await
    .with_context(|| operator.log())?;
    assert_eq!(selected, both);
    let experiments = rules.get("headroom.experiments").await?;
    let alert = &experiments.data["spec"]["groups"][0]["rules"][0];
    assert_eq!(alert["alert"], "HeadroomHypothesisRefuted", "{alert}");
    let expr = alert["expr"].as_str().unwrap_or_default();
    assert!(
        expr.contains(&format!("namespace=\"{}\"", ns.name)),
        "the alert reads other namespaces' experiments: {expr}"
    );

    // One team's Prometheus: the SLO's label wins over the operator's.
    let team: Value = json!({
        "matchLabels": { "release": "kube-prometheus-stack" },
        "matchExpressions": [{ "key": "team", "operator": "In", "values": ["payments"] }]
    });
    let lp = ListParams::default().labels(&selector_string(&team)?);
    assert_eq!(
        names(rules.list(&lp).await?.items),
        vec![object_name("payments")]
    );
    // The same selection through kubectl -l, as a user checks it.
    let out = cluster.kubectl(&[
        "get",
        "prometheusrules",
        "-n",
        &ns.name,
        "-l",
        &selector_string(&team)?,
        "-o",
        "name",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.trim(),
        format!(
            "prometheusrule.monitoring.coreos.com/{}",
            object_name("payments")
        )
    );
    // A selector they do not match selects nothing.
    let other: Value = json!({ "matchLabels": { "release": "another-stack" } });
    let lp = ListParams::default().labels(&selector_string(&other)?);
    assert!(rules.list(&lp).await?.items.is_empty());

    let obj = rules.get(&object_name("payments")).await?;
    assert_eq!(
        obj.annotations().get("owner").map(String::as_str),
        Some("payments-oncall")
    );
    let obj = rules.get(&object_name("search")).await?;
    assert_eq!(
        obj.annotations().get("owner").map(String::as_str),
        Some("sre")
    );
    assert_eq!(
        obj.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("headroom")
    );
    Ok(())
}
