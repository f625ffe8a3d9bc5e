//! SLO evaluation against the real Prometheus scraping the example service.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const OBJECTIVE: f64 = 99.0;

fn slo(name: &str, errors: &str) -> Result<ServiceLevelObjective> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": { "name": name },
        "spec": {
            "service": "checkout",
            "objective": OBJECTIVE,
            "window": "1h",
            "indicator": { "ratio": {
                "errors": errors,
                "total": "sum(rate(http_requests_total{job=\"checkout\"}[$window]))"
            }},
            "alerting": { "tiers": [
                { "name": "page-fast", "severity": "page", "budgetPercent": 2, "longWindow": "2m", "shortWindow": "30s" },
                { "name": "ticket-slow", "severity": "ticket", "budgetPercent": 10, "longWindow": "10m", "shortWindow": "1m" }
            ]}
        }
    }))?)
}

const ERRORS: &str = "sum(rate(http_requests_total{job=\"checkout\",code=~\"5..\"}[$window]))";

async fn set_error_ratio(cluster: &Cluster, ratio: f64) -> Result<()> {
    let url = format!(
        "{}/admin/error-rate?ratio={ratio}",
        cluster.var("CHECKOUT_URL")?
    );
    reqwest::Client::new()
        .post(&url)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?
        .error_for_status()?;
    Ok(())
}

fn condition<'a>(slo: &'a ServiceLevelObjective, type_: &str) -> Option<(&'a str, &'a str)> {
    slo.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Prometheus's own answer for the burn rate over `window` at `time`.
async fn burn_rate_at(prom: &str, window: &str, time: i64) -> Result<f64> {
    let q = format!(
        "({}) / ({}) / {}",
        ERRORS.replace("$window", window),
        "sum(rate(http_requests_total{job=\"checkout\"}[$window]))".replace("$window", window),
        1.0 - OBJECTIVE / 100.0
    );
    let body: Value = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q.as_str()), ("time", &time.to_string())])
        .send()
        .await?
        .json()
        .await?;
    body["data"]["result"][0]["value"][1]
        .as_str()
        .context("no result")?
        .parse()
        .map_err(Into::into)
}

#[tokio::test]
async fn burn_rate_in_status_matches_prometheus_and_known_error_ratio() -> Result<()> {
    let _checkout = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("slo-burn").await?;
    let prom = cluster.var("PROMETHEUS_URL")?.to_owned();
    let injected = 0.2;
    set_error_ratio(&cluster, injected).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    api.create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;

    // Let the 30s window fill with the injected ratio, then compare.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let result = eventually(
        "a fresh 30s burn rate",
        Duration::from_secs(60),
        Duration::from_secs(2),
        || async {
            let s = api.get("checkout").await?;
            let Some(status) = s.status.as_ref() else {
                return Ok(None);
            };
            let Some(br) = status
                .burn_rates
                .iter()
                .find(|w| w.window == "30s")
                .and_then(|w| w.burn_rate)
            else {
                return Ok(None);
            };
            let Some(at) = status.last_evaluated.as_ref() else {
                return Ok(None);
            };
            Ok(Some((br, at.0.as_second(), s.clone())))
        },
    )
    .await;
    set_error_ratio(&cluster, 0.0).await?;
    let (status_br, at, slo) = result.with_context(|| operator.log())?;
    let prom_br = burn_rate_at(&prom, "30s", at).await?;
    let hand = injected / (1.0 - OBJECTIVE / 100.0);
    assert!(
        (status_br - prom_br).abs() <= 0.05 * prom_br,
        "status burn rate {status_br} vs Prometheus {prom_br} at {at}"
    );
    assert!(
        (status_br - hand).abs() <= 0.25 * hand,
        "status burn rate {status_br} far from {hand} implied by the injected ratio {injected}"
    );
    assert_eq!(condition(&slo, "Ready"), Some(("True", "Evaluated")));
    assert_eq!(
        condition(&slo, "Burning"),
        Some(("True", "PageTierExceeded")),
        "{:?}",
        slo.status
    );
    // `kubectl get slo` shows the page tier's burn for this 1h SLO too (the
    // column once read a window named 1h, which only 30d SLOs have).
    let out = cluster.kubectl(&["get", "slo", "-n", &ns.name])?;
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "BURN")
        .context("no BURN (PAGE) column")?;
    let shown: f64 = row
        .get(column)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no page burn rate in\n{table}"))?;
    assert!(
        shown > 0.0,
        "page burn rate {shown} while burning:\n{table}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_promql_and_unreachable_prometheus_show_in_status() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("slo-faults").await?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &slo("bad-query", "sum(rate(http_requests_total{[$window]))")?,
    )
    .await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    let bad = eventually(
        "InvalidQuery in status",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || async {
            let s = api.get("bad-query").await?;
            Ok((condition(&s, "Ready") == Some(("False", "InvalidQuery"))).then_some(s))
        },
    )
    .await
    .with_context(|| operator.log())?;
    let msg = &bad
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    assert!(
        msg.iter()
            .any(|c| c.type_ == "Ready" && c.message.contains("spec.indicator.ratio.errors")),
        "message should name the field: {msg:?}"
    );
    drop(operator);

    // A Prometheus that does not answer: the budget is never reported as fine.
    api.create(&PostParams::default(), &slo("no-prometheus", ERRORS)?)
        .await?;
    let closed = format!("http://127.0.0.1:{}", headroom_e2e::free_port()?);
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &["--evaluation-interval", "2s", "--prometheus-url", &closed],
    )?;
    let s = eventually(
        "PrometheusUnavailable in status",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || async {
            let s = api.get("no-prometheus").await?;
            Ok((condition(&s, "Ready") == Some(("False", "PrometheusUnavailable"))).then_some(s))
        },
    )
    .await
    .with_context(|| operator.log())?;
    if condition(&s, "BudgetAvailable") != Some(("Unknown", "PrometheusUnavailable")) {
        bail!(
            "BudgetAvailable must be Unknown without Prometheus: {:?}",
            s.status
        );
    }
    Ok(())
}

/// The firing alerts Prometheus reports for an SLO, with their annotations.
async fn firing_alerts(prom: &str, namespace: &str) -> Result<Vec<Value>> {
    let body: Value = reqwest::Client::new()
        .get(format!("{prom}/api/v1/alerts"))
        .send()
        .await?
        .json()
        .await?;
    Ok(body["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["namespace"] == namespace && a["state"] == "firing")
        .collect())
}

#[tokio::test]
async fn page_alert_fires_in_prometheus_with_runbook_url() -> Result<()> {
    let _checkout = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("slo-alert").await?;
    let _rule_file = headroom_e2e::RuleFileGuard::for_namespace(&cluster, &ns.name)?;
    let prom = cluster.var("PROMETHEUS_URL")?.to_owned();
    let rules_dir = cluster.var("PROMETHEUS_RULES_DIR")?.to_owned();
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    api.create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "2s",
            "--rules-dir",
            &rules_dir,
            "--prometheus-reload",
            "--dashboard-url",
            "http://dashboard.test",
        ],
    )?;
    set_error_ratio(&cluster, 0.3).await?;
    let alerts = eventually(
        "the page alert to fire",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || async {
            let alerts = firing_alerts(&prom, &ns.name).await?;
            Ok(alerts
                .iter()
                .any(|a| a["labels"]["severity"] == "page")
                .then_some(alerts))
        },
    )
    .await;
    set_error_ratio(&cluster, 0.0).await?;
    let alerts = alerts.with_context(|| operator.log())?;
    let page = alerts
        .iter()
        .find(|a| a["labels"]["severity"] == "page")
        .context("page alert")?;
    assert_eq!(page["labels"]["alertname"], "HeadroomErrorBudgetBurn");
    assert_eq!(page["labels"]["slo"], "checkout");
    assert_eq!(
        page["annotations"]["runbook_url"],
        format!("http://dashboard.test/runbooks/slo/{}/checkout", ns.name)
    );
    // The SLO was read from the recording rules once they were loaded.
    let s = eventually(
        "status read from recording rules",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || async {
            let s = api.get("checkout").await?;
            Ok(
                (s.status.as_ref().and_then(|s| s.source.as_deref()) == Some("RecordingRules"))
                    .then_some(s),
            )
        },
    )
    .await
    .with_context(|| operator.log())?;
    assert!(s.status.is_some());
    Ok(())
}
