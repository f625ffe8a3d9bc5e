//! PromQL queries per evaluation cycle, counted by the operator itself
//! (`headroom_prometheus_queries_total`): with the recording rules loaded
//! they do not grow with the number of SLOs.
//!
//! `HEADROOM_QUERY_SLO_COUNTS` (default `1,10`) and `HEADROOM_DIRECT_QUERIES=1`
//! let the same test gather the figures for more SLOs, or for direct
//! per-SLO queries, by hand.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{Cluster, Operator, RuleFileGuard, eventually};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// Short, so that the 1 → 10 comparison fits well within a minute and a half.
const DEFAULT_INTERVAL_SECS: u64 = 2;
/// Cycles per measurement.
const CYCLES: u32 = 6;

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

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T> {
    match std::env::var(key) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}={v} is not valid")),
        Err(_) => Ok(default),
    }
}

const QUERIES: &str = "headroom_prometheus_queries_total";
const ROUNDS: &str = "headroom_recorded_read_rounds_total";

/// (queries sent, read rounds started), from one read of `/metrics`.
async fn counters(operator: &Operator) -> Result<(f64, f64)> {
    let values = operator.metric_values().await?;
    let get = |name: &str| {
        values
            .get(name)
            .copied()
            .with_context(|| format!("no {name} on {}", operator.metrics_url))
    };
    Ok((get(QUERIES)?, get(ROUNDS)?))
}

/// The counters at a moment between two rounds: unchanged over a few
/// hundred milliseconds, so that no round is counted without its queries.
async fn between_rounds(operator: &Operator, interval: Duration) -> Result<(f64, f64, Instant)> {
    let started = Instant::now();
    let mut last = counters(operator).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = counters(operator).await?;
        if now == last {
            return Ok((now.0, now.1, Instant::now()));
        }
        if started.elapsed() > interval * 3 {
            bail!("the operator never paused between rounds of queries");
        }
        last = now;
    }
}

/// Queries per cycle with the recording rules: the operator reads in rounds
/// of one evaluation interval (recorded.rs) and counts them. Over `CYCLES`
/// intervals: the queries sent per round, after checking that rounds came
/// no more often than once per interval (else "per round" would hide them).
async fn queries_per_round(operator: &Operator, interval: Duration) -> Result<f64> {
    let (q0, r0, t0) = between_rounds(operator, interval).await?;
    tokio::time::sleep(interval * CYCLES).await;
    let (q1, r1, t1) = between_rounds(operator, interval).await?;
    let rounds = r1 - r0;
    let intervals = (t1 - t0).as_secs_f64() / interval.as_secs_f64();
    if rounds < 1.0 || rounds > intervals.ceil() {
        bail!("{rounds} read rounds in {intervals:.2} intervals: expected one per interval");
    }
    Ok((q1 - q0) / rounds)
}

/// Queries per cycle with direct queries (no rounds): the query counter's
/// rise over `CYCLES` intervals.
async fn queries_per_interval(operator: &Operator, interval: Duration) -> Result<f64> {
    let (q0, _) = counters(operator).await?;
    let t0 = Instant::now();
    tokio::time::sleep(interval * CYCLES).await;
    let (q1, _) = counters(operator).await?;
    Ok((q1 - q0) / (t0.elapsed().as_secs_f64() / interval.as_secs_f64()))
}

#[tokio::test]
async fn queries_per_cycle_do_not_grow_with_slos_once_rules_are_loaded() -> Result<()> {
    let counts: Vec<usize> = std::env::var("HEADROOM_QUERY_SLO_COUNTS")
        .unwrap_or_else(|_| "1,10".into())
        .split(',')
        .map(|n| n.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .context("HEADROOM_QUERY_SLO_COUNTS must be a list like 1,10,100")?;
    if counts.len() < 2 || counts.windows(2).any(|w| w[0] >= w[1]) {
        bail!("HEADROOM_QUERY_SLO_COUNTS must rise, with at least two counts: {counts:?}");
    }
    let direct = std::env::var("HEADROOM_DIRECT_QUERIES").is_ok_and(|v| v == "1");
    let interval = Duration::from_secs(env_or(
        "HEADROOM_QUERY_INTERVAL_SECS",
        DEFAULT_INTERVAL_SECS,
    )?);

    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("slo-queries").await?;
    let rules_dir = cluster.var("PROMETHEUS_RULES_DIR")?.to_owned();
    let _rule_file = RuleFileGuard::for_namespace(&cluster, &ns.name)?;
    let interval_flag = format!("{}s", interval.as_secs());
    let mut args = vec![
        "--evaluation-interval",
        &interval_flag,
        "--rules-dir",
        &rules_dir,
        "--prometheus-reload",
    ];
    if direct {
        args.push("--direct-queries");
    }
    let operator = Operator::start_in(&cluster, &ns.name, &args)?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    let want_source = if direct {
        "DirectQuery"
    } else {
        "RecordingRules"
    };

    let mut figures = Vec::new();
    let mut created = 0;
    for &n in &counts {
        while created < n {
            api.create(&PostParams::default(), &slo(&format!("slo-{created:03}"))?)
                .await?;
            created += 1;
        }
        // The figures count only once every SLO reads the source measured.
        eventually(
            &format!("all {n} SLOs to read from {want_source}"),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let list = api.list(&ListParams::default()).await?;
                let ready = list
                    .items
                    .iter()
                    .filter(|s| {
                        s.status.as_ref().and_then(|s| s.source.as_deref()) == Some(want_source)
                    })
                    .count();
                Ok((ready == n).then_some(()))
            },
        )
        .await
        .with_context(|| operator.log())?;
        let per_cycle = if direct {
            queries_per_interval(&operator, interval).await?
        } else {
            queries_per_round(&operator, interval).await?
        };
        println!(
            "queries per cycle: {n} SLOs, {want_source}, interval {interval_flag}: {per_cycle:.2}"
        );
        figures.push((n, per_cycle));
    }

    let (first_n, first) = figures[0];
    if first <= 0.0 {
        bail!("no queries counted with {first_n} SLO(s): is the counter wired?");
    }
    if !direct {
        for &(n, per_cycle) in &figures[1..] {
            assert_eq!(
                per_cycle, first,
                "queries per cycle grew with the SLOs: {first:.2} with {first_n}, {per_cycle:.2} with {n} (all {figures:?})"
            );
        }
    }
    Ok(())
}
