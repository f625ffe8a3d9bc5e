//! `make bench`: figures, not assertions. Run alone (it loads the shared
//! Prometheus with many rules) by scripts/bench.sh, against the release
//! build of the operator (HEADROOM_BIN). Prints tables.
//!
//! - SLO evaluation with N SLOs (BENCH_SLOS, default 100,1000), once with
//!   the recording rules and once with direct per-SLO queries: PromQL
//!   queries per cycle, Kubernetes status writes per cycle when nothing
//!   changed, evaluation time, operator RSS and CPU.
//! - Abort reaction over BENCH_ABORT_RUNS runs (default 20): from the first
//!   instant Prometheus shows the burn rate over the abort threshold to
//!   the start of the restore.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, RuleFileGuard, eventually};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::experiment::{
    ERRORS, OBJECTIVE, TOTAL, calm, experiment, first_crossing, now_secs, runs, set_error_ratio,
    slo, web,
};

const INTERVAL_SECS: u64 = 10;

/// An SLO whose figures never change (error ratio 0, traffic 100/s), so a
/// cycle with nothing new must write nothing.
fn steady_slo(name: &str) -> Result<ServiceLevelObjective> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": { "name": name },
        "spec": {
            "service": "bench",
            "objective": 99.9,
            "window": "30d",
            "indicator": { "ratio": {
                "errors": "vector(0) + 0 * sum(count_over_time(up[$window]))",
                "total": "vector(100) + 0 * sum(count_over_time(up[$window]))"
            }}
        }
    }))?)
}

async fn scrape(url: &str) -> Result<HashMap<String, f64>> {
    let text = reqwest::get(url).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect())
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

struct Figures {
    queries_per_cycle: f64,
    writes_per_cycle: f64,
    eval_seconds_per_cycle: f64,
    ready_after: Duration,
    rss_mib: f64,
    cpu_per_cycle: f64,
}

async fn measure(cluster: &Cluster, n: usize, direct: bool) -> Result<Figures> {
    let ns = cluster.namespace(&format!("bench-{n}")).await?;
    let _rules = RuleFileGuard::for_namespace(cluster, &ns.name)?;
    let rules_dir = cluster.var("PROMETHEUS_RULES_DIR")?.to_owned();
    let interval = format!("{INTERVAL_SECS}s");
    let mut args = vec![
        "--evaluation-interval",
        interval.as_str(),
        "--rules-dir",
        rules_dir.as_str(),
        "--prometheus-reload",
    ];
    if direct {
        args.push("--direct-queries");
    }
    let operator = Operator::start_in(cluster, &ns.name, &args)?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let s = steady_slo(&format!("slo-{i:05}"))?;
                api.create(&PostParams::default(), &s).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let want = if direct {
        "DirectQuery"
    } else {
        "RecordingRules"
    };
    eventually(
        &format!("{n} SLOs evaluated from {want}"),
        Duration::from_secs(600),
        Duration::from_secs(2),
        || async {
            let list = api.list(&ListParams::default()).await?.items;
            let done = list
                .iter()
                .filter(|s| s.status.as_ref().and_then(|st| st.source.as_deref()) == Some(want))
                .count();
            Ok((done == n).then_some(()))
        },
    )
    .await
    .with_context(|| operator.log().chars().rev().take(3000).collect::<String>())?;
    let ready_after = started.elapsed();
    // One cycle to settle (statuses written once), then measure three.
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECS + 2)).await;
    let cycles = 3.0;
    let a = scrape(&operator.metrics_url).await?;
    let cpu_a = operator.cpu_seconds().unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECS * 3)).await;
    let b = scrape(&operator.metrics_url).await?;
    let cpu_b = operator.cpu_seconds().unwrap_or(0.0);
    let d = |k: &str| get(&b, k) - get(&a, k);
    let figures = Figures {
        queries_per_cycle: d("headroom_prometheus_queries_total") / cycles,
        writes_per_cycle: d("headroom_status_writes_total{controller=\"slo\"}") / cycles,
        eval_seconds_per_cycle: d("headroom_slo_evaluation_duration_seconds_sum") / cycles,
        ready_after,
        rss_mib: operator.rss_kib().unwrap_or(0) as f64 / 1024.0,
        cpu_per_cycle: (cpu_b - cpu_a) / cycles,
    };
    drop(operator);
    // Delete the SLOs before the namespace so the next size starts clean.
    let _ = api
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    Ok(figures)
}

#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn bench_slo_evaluation() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let sizes: Vec<usize> = std::env::var("BENCH_SLOS")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // Direct queries cost one query per window per SLO per cycle; above
    // BENCH_DIRECT_MAX SLOs (default 100) they take too long on 2 cores.
    let direct_max: usize = std::env::var("BENCH_DIRECT_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    println!(
        "\nSLO evaluation, evaluation interval {INTERVAL_SECS}s, operator {}",
        std::env::var("HEADROOM_BIN").unwrap_or_else(|_| "target/debug/headroom".into())
    );
    println!(
        "{:>7}  {:<15}  {:>17}  {:>19}  {:>18}  {:>13}  {:>14}  {:>9}",
        "SLOs",
        "reads",
        "queries/cycle",
        "status writes/cycle",
        "eval time/cycle s",
        "CPU/cycle s",
        "all ready in s",
        "RSS MiB"
    );
    for &n in &sizes {
        for direct in [false, true] {
            if direct && n > direct_max {
                continue;
            }
            let f = measure(&cluster, n, direct).await?;
            println!(
                "{:>7}  {:<15}  {:>17.1}  {:>19.1}  {:>18.3}  {:>13.3}  {:>14.1}  {:>9.1}",
                n,
                if direct {
                    "direct queries"
                } else {
                    "recording rules"
                },
                f.queries_per_cycle,
                f.writes_per_cycle,
                f.eval_seconds_per_cycle,
                f.cpu_per_cycle,
                f.ready_after.as_secs_f64(),
                f.rss_mib
            );
        }
    }
    Ok(())
}

#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn bench_abort_reaction() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let n: usize = std::env::var("BENCH_ABORT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let prom = cluster.var("PROMETHEUS_URL")?.to_owned();
    let ns = cluster.namespace("bench-abort").await?;
    web(&cluster, &ns).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
    let q = format!(
        "(({}) / ({})) / {}",
        ERRORS.replace("$window", "15s"),
        TOTAL.replace("$window", "15s"),
        1.0 - OBJECTIVE / 100.0
    );
    let mut latencies = Vec::new();
    for i in 0..n {
        set_error_ratio(&cluster, 0.0).await?;
        calm(&cluster).await?;
        let name = format!("abort-{i:02}");
        exps.create(
            &PostParams::default(),
            &experiment(&name, "checkout", json!({ "duration": "90s" }))?,
        )
        .await?;
        eventually(
            "the run observing",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                Ok(runs(&cluster, &ns.name).await?.into_iter().find(|r| {
                    r.spec.experiment == name
                        && r.status
                            .as_ref()
                            .is_some_and(|s| s.phase == RunPhase::Observing)
                }))
            },
        )
        .await
        .with_context(|| operator.log())?;
        let raised = now_secs();
        set_error_ratio(&cluster, 0.5).await?;
        let run = eventually(
            "the abort",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                Ok(runs(&cluster, &ns.name).await?.into_iter().find(|r| {
                    r.spec.experiment == name
                        && r.status.as_ref().is_some_and(|s| s.phase.is_final())
                }))
            },
        )
        .await?;
        set_error_ratio(&cluster, 0.0).await?;
        let st = run.status.clone().context("status")?;
        ensure!(
            st.phase == RunPhase::Aborted,
            "run {i}: {:?} {:?}",
            st.phase,
            st.reason
        );
        let at = |step: &str| {
            st.timeline
                .iter()
                .find(|t| t.step == step)
                .map(|t| t.time.0.as_millisecond() as f64 / 1000.0)
        };
        let restore = at("RestoreStarted").context("RestoreStarted")?;
        let crossing = first_crossing(&prom, &q, 3.0, raised - 1.0, restore).await?;
        latencies.push(restore - crossing);
        exps.delete(&name, &DeleteParams::default()).await?;
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "\nAbort reaction over {n} runs (observeInterval 2s; Prometheus crossing → restore started):\n  min {:.3}s  median {:.3}s  p95 {:.3}s  max {:.3}s",
        pick(0.0),
        pick(0.5),
        pick(0.95),
        pick(1.0)
    );
    Ok(())
}
