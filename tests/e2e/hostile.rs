//! Bad and hostile experiment specs that the API server cannot refuse (it
//! has no cron parser, no view of other namespaces or of Prometheus): the
//! operator refuses each with a reason and a message naming the field, and
//! touches no pod. The API server's own refusals are in crd_validation.rs.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::experiment::{ERRORS, experiment, live_uids, runs, set_error_ratio, slo, uids, web};

#[tokio::test]
async fn the_operator_refuses_what_the_api_server_cannot_and_injects_nothing() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("hostile").await?;
    let home = cluster.namespace("hostile-home").await?;
    // A namespace that did not opt in (no headroom.dev/chaos label).
    let closed = format!("{}-closed", ns.name);
    Api::<Namespace>::all(cluster.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({ "metadata": { "name": closed, "labels": { "headroom.dev/test": "e2e" } } }),
            )?,
        )
        .await?;
    let _closed_cleanup = NamespaceCleanup(
        (
            cluster.var("KUBECTL")?.to_owned(),
            cluster.var("KUBECONFIG")?.to_owned(),
        ),
        closed.clone(),
    );
    set_error_ratio(&cluster, 0.0).await?;
    let before = web(&cluster, &ns).await?;
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "2s",
            "--operator-namespace",
            &home.name,
        ],
    )?;
    let slos = Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name);
    slos.create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    // Parses for the API server (it has `$window`), not for PromQL.
    slos.create(
        &PostParams::default(),
        &slo(
            "broken",
            "sum(rate(http_requests_total{code=~\"5..\"}[$window])",
        )?,
    )
    .await?;

    // (name, change to the valid experiment, condition type, reason, text in the message)
    let pod_kill = |namespace: &str| json!({ "podKill": { "namespace": namespace, "selector": { "matchLabels": { "app": "web" } }, "count": 1 } });
    let cases: Vec<(&str, Value, &str, &str, String)> = vec![
        (
            "never-fires",
            json!({ "schedule": "0 0 31 2 *" }),
            "Valid",
            "InvalidSchedule",
            "spec.schedule".into(),
        ),
        (
            "bad-cron",
            json!({ "schedule": "61 * * * *" }),
            "Valid",
            "InvalidSchedule",
            "spec.schedule".into(),
        ),
        (
            "unguarded-holds",
            json!({ "hypothesis": { "sloHolds": { "maxBurnRate": 2, "slos": ["other"] } } }),
            "Valid",
            "UnknownSlo",
            "spec.hypothesis.sloHolds.slos".into(),
        ),
        (
            "observe-too-long",
            json!({ "observeInterval": "1m" }),
            "Valid",
            "InvalidDuration",
            "spec.observeInterval".into(),
        ),
        (
            "bad-selector-operator",
            json!({ "action": { "podKill": { "selector": { "matchExpressions": [{ "key": "app", "operator": "Near", "values": ["web"] }] }, "count": 1 } } }),
            "Valid",
            "InvalidSelector",
            "spec.action.podKill.selector".into(),
        ),
        (
            "not-opted-in",
            json!({ "action": pod_kill(&closed) }),
            "Valid",
            "NamespaceNotOptedIn",
            format!("kubectl label namespace {closed} headroom.dev/chaos=enabled"),
        ),
        (
            "operator-namespace",
            json!({ "action": pod_kill(&home.name) }),
            "Valid",
            "NamespaceNotAllowed",
            "the operator's own".into(),
        ),
        (
            "missing-namespace",
            json!({ "action": pod_kill("no-such-namespace-x") }),
            "Valid",
            "NamespaceNotFound",
            "no-such-namespace-x".into(),
        ),
        (
            "unknown-slo",
            json!({ "slos": ["nope"] }),
            "Gated",
            "SloNotFound",
            "nope (spec.slos)".into(),
        ),
        (
            "bad-promql",
            json!({ "slos": ["broken"] }),
            "Gated",
            "InvalidQuery",
            "broken".into(),
        ),
    ];
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
    for (name, change, _, _, _) in &cases {
        let mut change = change.clone();
        // Durable enough to be refused before anything could happen.
        if change.get("duration").is_none() {
            change["duration"] = json!("15s");
        }
        exps.create(
            &PostParams::default(),
            &experiment(name, "checkout", change)?,
        )
        .await
        .with_context(|| {
            format!(
                "case {name}: the API server refused it; this table is for what it cannot refuse"
            )
        })?;
    }
    for (name, _, cond_type, reason, text) in &cases {
        let c = eventually(
            &format!("case {name}: condition {cond_type} with reason {reason}"),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let e = exps.get(name).await?;
                Ok(e.status
                    .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == *cond_type))
                    .filter(|c| c.reason == *reason))
            },
        )
        .await
        .with_context(|| operator.log())?;
        ensure!(
            c.message.contains(text.as_str()),
            "case {name}: message {:?} does not name {text:?}",
            c.message
        );
        let expected_status = if *cond_type == "Valid" {
            "False"
        } else {
            "True"
        };
        ensure!(c.status == expected_status, "case {name}: {c:?}");
    }
    // Nothing ran, nothing was touched.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for r in runs(&cluster, &ns.name).await? {
        let st = r.status.clone().unwrap_or_default();
        let kills = st.observations.as_ref().map_or(0, |o| o.killed_pods.len());
        ensure!(kills == 0, "{} killed {kills} pods", r.spec.experiment);
        ensure!(
            matches!(st.phase, RunPhase::Gated | RunPhase::Failed),
            "{} reached {:?}",
            r.spec.experiment,
            st.phase
        );
    }
    ensure!(
        live_uids(&cluster, &ns.name).await? == uids(&before),
        "pods changed"
    );
    Ok(())
}

/// Deletes a namespace the test created by hand.
struct NamespaceCleanup((String, String), String);

impl Drop for NamespaceCleanup {
    fn drop(&mut self) {
        let ((kubectl, kubeconfig), ns) = (&self.0, &self.1);
        let _ = std::process::Command::new(kubectl)
            .args([
                "delete",
                "namespace",
                ns,
                "--wait=false",
                "--ignore-not-found",
            ])
            .env("KUBECONFIG", kubeconfig)
            .output();
    }
}
