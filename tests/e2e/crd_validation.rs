//! The API server itself refuses bad specs (schema and CEL rules), with a
//! message that names the field. Checked with server-side dry runs, so
//! nothing is stored.

use anyhow::Result;
use headroom_e2e::Cluster;
use serde_json::{Value, json};

fn valid_slo(ns: &str) -> Value {
    json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": { "name": "checkout-availability", "namespace": ns },
        "spec": {
            "service": "checkout",
            "objective": 99.9,
            "window": "30d",
            "indicator": { "ratio": {
                "errors": "sum(rate(http_requests_total{job=\"checkout\",code=~\"5..\"}[$window]))",
                "total": "sum(rate(http_requests_total{job=\"checkout\"}[$window]))"
            }}
        }
    })
}

fn valid_experiment(ns: &str) -> Value {
    json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": { "name": "kill-one", "namespace": ns },
        "spec": {
            "hypothesis": { "description": "losing a pod does not hurt", "recoversWithin": "30s" },
            "slos": ["checkout-availability"],
            "action": { "podKill": { "selector": { "matchLabels": { "app": "checkout" } }, "count": 1 } },
            "duration": "1m"
        }
    })
}

/// Set `value` at a `/`-separated path, creating objects on the way;
/// `Value::Null` removes the key.
fn with(mut doc: Value, path: &str, value: Value) -> Value {
    let keys: Vec<&str> = path.split('/').collect();
    let mut cur = &mut doc;
    for key in &keys[..keys.len() - 1] {
        cur = cur
            .as_object_mut()
            .expect("path through objects")
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
    }
    let last = keys[keys.len() - 1];
    let obj = cur.as_object_mut().expect("parent is an object");
    if value.is_null() {
        obj.remove(last);
    } else {
        obj.insert(last.to_owned(), value);
    }
    doc
}

fn dry_run_create(cluster: &Cluster, doc: &Value) -> Result<(bool, String)> {
    let out = cluster.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "name", "-f", "-"],
        Some(&doc.to_string()),
    )?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn api_server_refuses_bad_specs_naming_the_field() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("crd-validation").await?;
    let n = ns.name.as_str();

    // The valid documents are accepted: the table below is about the change.
    for doc in [valid_slo(n), valid_experiment(n)] {
        let (ok, err) = dry_run_create(&cluster, &doc)?;
        assert!(ok, "valid document refused: {err}\n{doc:#}");
    }

    let pod_kill = "spec/action/podKill";
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "objective 120",
            with(valid_slo(n), "spec/objective", json!(120)),
            &["spec.objective"],
        ),
        (
            "objective 0",
            with(valid_slo(n), "spec/objective", json!(0)),
            &["spec.objective"],
        ),
        (
            "objective 100",
            with(valid_slo(n), "spec/objective", json!(100)),
            &["spec.objective"],
        ),
        (
            "window 30x",
            with(valid_slo(n), "spec/window", json!("30x")),
            &["spec.window"],
        ),
        (
            "window negative",
            with(valid_slo(n), "spec/window", json!("-5m")),
            &["spec.window"],
        ),
        (
            "no indicator kind",
            with(valid_slo(n), "spec/indicator", json!({})),
            &["spec.indicator", "exactly one"],
        ),
        (
            "two indicators",
            with(valid_slo(n), "spec/indicator/sloth", json!({"id": "x"})),
            &["spec.indicator", "exactly one"],
        ),
        (
            "ratio without $window",
            with(
                valid_slo(n),
                "spec/indicator/ratio/errors",
                json!("sum(rate(errors[5m]))"),
            ),
            &["spec.indicator.ratio.errors", "$window"],
        ),
        (
            "latency threshold not a duration",
            with(
                valid_slo(n),
                "spec/indicator",
                json!({"latency": {"histogram": "h", "threshold": "fast"}}),
            ),
            &["spec.indicator.latency.threshold"],
        ),
        (
            "empty service",
            with(valid_slo(n), "spec/service", json!("")),
            &["spec.service"],
        ),
        (
            "negative min traffic",
            with(valid_slo(n), "spec/minTrafficPerSecond", json!(-1)),
            &["spec.minTrafficPerSecond"],
        ),
        (
            "no action",
            with(valid_experiment(n), "spec/action", json!({})),
            &["spec.action", "exactly one"],
        ),
        (
            "two actions",
            with(
                valid_experiment(n),
                "spec/action/scaleDown",
                json!({"target": {"kind": "Deployment", "name": "x"}, "scaleUpTo": 6, "scaleDownTo": 3, "expectOrder": "NewestFirst"}),
            ),
            &["spec.action", "exactly one"],
        ),
        (
            "count and percent",
            with(
                valid_experiment(n),
                &format!("{pod_kill}/percent"),
                json!(50),
            ),
            &["spec.action.podKill", "count", "percent"],
        ),
        (
            "percent over 100",
            with(
                with(
                    valid_experiment(n),
                    &format!("{pod_kill}/count"),
                    Value::Null,
                ),
                &format!("{pod_kill}/percent"),
                json!(150),
            ),
            &["spec.action.podKill.percent"],
        ),
        (
            "empty selector",
            with(
                valid_experiment(n),
                &format!("{pod_kill}/selector"),
                json!({}),
            ),
            &["spec.action.podKill.selector"],
        ),
        (
            "count zero",
            with(valid_experiment(n), &format!("{pod_kill}/count"), json!(0)),
            &["spec.action.podKill.count"],
        ),
        (
            "huge count",
            with(
                valid_experiment(n),
                &format!("{pod_kill}/count"),
                json!(1_000_000),
            ),
            &["spec.action.podKill.count"],
        ),
        (
            "no slos",
            with(valid_experiment(n), "spec/slos", json!([])),
            &["spec.slos"],
        ),
        (
            "duration 5 minutes",
            with(valid_experiment(n), "spec/duration", json!("5 minutes")),
            &["spec.duration"],
        ),
        (
            "scaleDown up <= down",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"scaleDown": {"target": {"kind": "Deployment", "name": "x"}, "scaleUpTo": 3, "scaleDownTo": 3, "expectOrder": "NewestFirst"}}),
            ),
            &["spec.action.scaleDown.scaleUpTo"],
        ),
        (
            "schedule with four fields",
            with(valid_experiment(n), "spec/schedule", json!("0 10 * *")),
            &["spec.schedule"],
        ),
        (
            "zone spread when scaling to 0",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"scaleDown": {"target": {"kind": "Deployment", "name": "x"}, "scaleUpTo": 3, "scaleDownTo": 0, "expectOrder": "NewestFirst", "expectZoneSpread": true}}),
            ),
            &["spec.action.scaleDown.expectZoneSpread"],
        ),
        (
            "concurrencyPolicy Replace without a schedule",
            with(
                valid_experiment(n),
                "spec/concurrencyPolicy",
                json!("Replace"),
            ),
            &["spec.concurrencyPolicy Replace needs spec.schedule"],
        ),
        (
            "concurrencyPolicy Allow",
            with(
                with(valid_experiment(n), "spec/schedule", json!("0 * * * *")),
                "spec/concurrencyPolicy",
                json!("Allow"),
            ),
            &["spec.concurrencyPolicy", "Forbid", "Replace"],
        ),
        (
            "zoneOutage with both zone and pickZone",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"zoneOutage": {"target": {"kind": "Deployment", "name": "x"}, "zone": "zone-a", "pickZone": "MostPods", "maxPods": 3}}),
            ),
            &["spec.action.zoneOutage", "exactly one of zone"],
        ),
        (
            "zoneOutage with neither zone nor pickZone",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"zoneOutage": {"target": {"kind": "Deployment", "name": "x"}, "maxPods": 3}}),
            ),
            &["spec.action.zoneOutage", "exactly one of zone"],
        ),
        (
            "zoneOutage without maxPods",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"zoneOutage": {"target": {"kind": "Deployment", "name": "x"}, "zone": "zone-a"}}),
            ),
            &["spec.action.zoneOutage.maxPods"],
        ),
        (
            "zoneOutage maxPods 0",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"zoneOutage": {"target": {"kind": "Deployment", "name": "x"}, "pickZone": "MostPods", "maxPods": 0}}),
            ),
            &["spec.action.zoneOutage.maxPods"],
        ),
        (
            "a check with both promql and http",
            with(
                valid_experiment(n),
                "spec/hypothesis/checks",
                json!([{"name": "c", "promql": {"query": "up", "op": ">", "value": 0}, "http": {"url": "http://web.shop.svc/"}}]),
            ),
            &["spec.hypothesis.checks[0]", "exactly one of promql or http"],
        ),
        (
            "an abort check with an unknown comparison",
            with(
                valid_experiment(n),
                "spec/budgetPolicy/abortChecks",
                json!([{"name": "c", "promql": {"query": "up", "op": "=<", "value": 0}}]),
            ),
            &["spec.budgetPolicy.abortChecks[0].promql.op"],
        ),
        (
            "an http check that is not a URL",
            with(
                valid_experiment(n),
                "spec/hypothesis/checks",
                json!([{"name": "c", "http": {"url": "web.shop.svc/health"}}]),
            ),
            &["spec.hypothesis.checks[0].http.url"],
        ),
        (
            "nodeDrain of 0 nodes",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"nodeDrain": {"nodeSelector": {"matchLabels": {"pool": "a"}}, "count": 0, "maxPods": 5}}),
            ),
            &["spec.action.nodeDrain.count"],
        ),
        (
            "nodeDrain without maxPods",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"nodeDrain": {"nodeSelector": {"matchLabels": {"pool": "a"}}, "count": 1}}),
            ),
            &["spec.action.nodeDrain.maxPods"],
        ),
        (
            "scaleDown unknown kind",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"scaleDown": {"target": {"kind": "DaemonSet", "name": "x"}, "scaleUpTo": 6, "scaleDownTo": 3, "expectOrder": "NewestFirst"}}),
            ),
            &["spec.action.scaleDown.target.kind"],
        ),
        (
            "postgres without credentials",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"connectionExhaustion": {"target": {"host": "db", "port": 5432}, "protocol": "Postgres", "connections": 50, "holdFor": "30s"}}),
            ),
            &["spec.action.connectionExhaustion.credentialsSecret"],
        ),
        (
            "target with service and host",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"connectionExhaustion": {"target": {"host": "db", "service": "db", "port": 5432}, "connections": 50, "holdFor": "30s"}}),
            ),
            &["spec.action.connectionExhaustion.target"],
        ),
        (
            "port out of range",
            with(
                valid_experiment(n),
                "spec/action",
                json!({"connectionExhaustion": {"target": {"host": "db", "port": 70000}, "connections": 50, "holdFor": "30s"}}),
            ),
            &["spec.action.connectionExhaustion.target.port"],
        ),
        (
            "blast radius percent 0",
            with(
                valid_experiment(n),
                "spec/blastRadius",
                json!({"maxPercent": 0}),
            ),
            &["spec.blastRadius.maxPercent"],
        ),
        (
            "min budget over 100",
            with(
                valid_experiment(n),
                "spec/budgetPolicy",
                json!({"minBudgetRemaining": 150}),
            ),
            &["spec.budgetPolicy.minBudgetRemaining"],
        ),
    ];

    // `headroom validate` checks the same schema and CEL rules offline: each
    // case must be refused there too, naming the same field, and the valid
    // documents accepted.
    let offline = |doc: &Value| -> Result<String> {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let schema = headroom::schema_check::for_kind(kind)
            .ok_or_else(|| anyhow::anyhow!("no schema for {kind}"))?;
        let found = headroom::schema_check::check(&schema, &mut doc.clone());
        Ok(found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    };
    let mut failures = Vec::new();
    for doc in [valid_slo(n), valid_experiment(n)] {
        let found = offline(&doc)?;
        if !found.is_empty() {
            failures.push(format!("offline: valid document refused: {found}"));
        }
    }
    for (name, doc, needles) in &cases {
        let (ok, err) = dry_run_create(&cluster, doc)?;
        let offline_err = offline(doc)?;
        if offline_err.is_empty() {
            failures.push(format!("{name}: accepted offline, expected refusal"));
        }
        if ok {
            failures.push(format!("{name}: accepted, expected refusal"));
            continue;
        }
        for needle in *needles {
            if !err.contains(needle) {
                failures.push(format!("{name}: message lacks {needle:?}: {err}"));
            }
            if !offline_err.is_empty() && !offline_err.contains(needle) {
                failures.push(format!(
                    "{name}: offline message lacks {needle:?}: {offline_err}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Creating the CRDs is quiet (the API server once warned about a `uint64`
/// format it does not know), and `kubectl explain` describes each kind in
/// words rather than as a generated type. The API server warns only about
/// what a request changes, so each CRD is dry-run created under a group no
/// cluster has, as on a cluster that never had Headroom.
#[tokio::test]
async fn the_crds_create_without_warnings_and_explain_each_kind() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let dir = headroom_e2e::repo_root().join("crds");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let fresh =
            std::fs::read_to_string(&path)?.replace("headroom.dev", "fresh-install.headroom.dev");
        let out =
            cluster.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], Some(&fresh))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "{}: {stderr}", path.display());
        anyhow::ensure!(
            !stderr.to_lowercase().contains("warning"),
            "creating {} warned: {stderr}",
            path.display()
        );
    }
    cluster.install_crds()?;
    for (kind, words) in [
        ("slo", "Service Level Objective"),
        ("chaos", "hypothesis"),
        ("run", "One attempt of a ChaosExperiment"),
    ] {
        let out = cluster.kubectl(&["explain", kind])?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success() && text.contains(words) && !text.contains("Auto-generated"),
            "kubectl explain {kind}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
