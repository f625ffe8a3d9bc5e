//! Prometheus stops in the middle of a run and comes back: the status fails
//! closed while it is gone and recovers after. A private Prometheus stands
//! in for the shared one, which other tests rely on.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{Cluster, Operator, PrivatePrometheus, eventually};
use kube::api::{Api, PostParams};
use serde_json::json;

const INTERVAL: Duration = Duration::from_secs(2);

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
            "alerting": { "tiers": [
                { "name": "page-fast", "severity": "page", "budgetPercent": 2, "longWindow": "2m", "shortWindow": "30s" },
                { "name": "ticket-slow", "severity": "ticket", "budgetPercent": 10, "longWindow": "10m", "shortWindow": "1m" }
            ]}
        }
    }))?)
}

fn condition(slo: &ServiceLevelObjective, type_: &str) -> Option<(String, String)> {
    slo.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn ready_with_budget(slo: &ServiceLevelObjective) -> bool {
    condition(slo, "Ready").is_some_and(|(s, _)| s == "True")
        && slo
            .status
            .as_ref()
            .is_some_and(|s| s.budget_remaining.is_some() && !s.burn_rates.is_empty())
}

fn fails_closed(slo: &ServiceLevelObjective) -> bool {
    condition(slo, "Ready") == Some(("False".into(), "PrometheusUnavailable".into()))
        && condition(slo, "BudgetAvailable").is_some_and(|(s, _)| s == "Unknown")
}

#[tokio::test]
async fn prometheus_stopped_mid_run_fails_closed_then_recovers() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("slo-outage").await?;
    let mut prometheus = PrivatePrometheus::start(&cluster).await?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    api.create(&PostParams::default(), &slo("checkout")?)
        .await?;
    let interval = format!("{}s", INTERVAL.as_secs());
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            &interval,
            "--prometheus-timeout",
            "1s",
            "--prometheus-url",
            &prometheus.url,
        ],
    )?;

    // Rates need two scrapes of the fresh Prometheus first.
    eventually(
        "Ready=True with budget figures from the private Prometheus",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async { Ok(ready_with_budget(&api.get("checkout").await?).then_some(())) },
    )
    .await
    .with_context(|| format!("{}\n{}", operator.log(), prometheus.log()))?;

    prometheus.kill()?;
    let killed = Instant::now();
    // One interval to notice, one for the query to time out, one spare.
    let s = eventually(
        "Ready=False PrometheusUnavailable and BudgetAvailable=Unknown",
        INTERVAL * 3 + Duration::from_secs(1),
        Duration::from_millis(250),
        || async {
            let s = api.get("checkout").await?;
            Ok(fails_closed(&s).then_some(s))
        },
    )
    .await
    .with_context(|| operator.log())?;
    println!(
        "status failed closed {:.1}s after Prometheus was killed",
        killed.elapsed().as_secs_f64()
    );
    if s.status
        .as_ref()
        .is_some_and(|s| s.budget_remaining.is_some())
    {
        bail!(
            "budget figure kept while Prometheus is gone: {:?}",
            s.status
        );
    }
    // While it stays down, no cycle brings back a stale "available".
    let watch_until = Instant::now() + INTERVAL * 3;
    while Instant::now() < watch_until {
        let s = api.get("checkout").await?;
        if !fails_closed(&s) {
            bail!("status changed while Prometheus is down: {:?}", s.status);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    prometheus.resume().await?;
    eventually(
        "Ready=True again once Prometheus is back",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok(ready_with_budget(&api.get("checkout").await?).then_some(())) },
    )
    .await
    .with_context(|| format!("{}\n{}", operator.log(), prometheus.log()))?;
    Ok(())
}
