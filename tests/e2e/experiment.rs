//! The experiment engine against the real control plane, the real
//! ReplicaSet controller on kwok nodes, and the real Prometheus scraping
//! the example service.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use headroom::resources::ExperimentRun;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::{RunPhase, Verdict};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, TestNamespace, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

/// 90% over 2m, with one fast page tier on a 15s short window (burn rate
/// threshold 0.75 × 2m / 30s = 3). The period is short on purpose: tests
/// share one example service and several raise its error rate on purpose.
/// On a young cluster (CI starts it minutes before these tests) a longer
/// period would hold little else than those errors, leaving the budget spent
/// and the gate closed; over 2m an earlier test's errors age out quickly.
pub(crate) const OBJECTIVE: f64 = 90.0;
pub(crate) const PERIOD: &str = "2m";
pub(crate) const TOTAL: &str = "sum(rate(http_requests_total{job=\"checkout\"}[$window]))";
pub(crate) const ERRORS: &str =
    "sum(rate(http_requests_total{job=\"checkout\",code=~\"5..\"}[$window]))";

pub(crate) fn slo(name: &str, errors: &str) -> Result<ServiceLevelObjective> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": { "name": name },
        "spec": {
            "service": "checkout",
            "objective": OBJECTIVE,
            "window": PERIOD,
            "indicator": { "ratio": { "errors": errors, "total": TOTAL } },
            "minTrafficPerSecond": 1,
            "alerting": { "tiers": [
                { "name": "page-fast", "severity": "page", "budgetPercent": 75, "longWindow": "30s", "shortWindow": "15s" }
            ]}
        }
    }))?)
}

pub(crate) fn experiment(name: &str, slo: &str, extra: Value) -> Result<ChaosExperiment> {
    let mut spec = json!({
        "hypothesis": {
            "description": "losing one web pod does not burn the checkout budget faster than 2x, and the pod is back within 30s",
            "sloHolds": { "maxBurnRate": 2 },
            "recoversWithin": "30s"
        },
        "slos": [slo],
        "budgetPolicy": { "minBudgetRemaining": 10, "maxBurnRateToStart": 1, "abortBurnRate": 3, "maxBudgetSpend": 50 },
        "action": { "podKill": { "selector": { "matchLabels": { "app": "web" } }, "count": 1, "gracePeriodSeconds": 0 } },
        "duration": "15s",
        "observeInterval": "2s",
        "blastRadius": { "maxPods": 1 }
    });
    merge(&mut spec, extra);
    Ok(serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": { "name": name },
        "spec": spec
    }))?)
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// A 3-replica Deployment `web` on the kwok nodes, Ready.
pub(crate) async fn web(cluster: &Cluster, ns: &TestNamespace) -> Result<Vec<Pod>> {
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns.name);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": { "name": "web" },
                "spec": {
                    "replicas": 3,
                    "selector": { "matchLabels": { "app": "web" } },
                    "template": {
                        "metadata": { "labels": { "app": "web" } },
                        "spec": {
                            "nodeSelector": { "type": "kwok" },
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{ "name": "web", "image": "headroom.local/web:test" }],
                            "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }]
                        }
                    }
                }
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns.name);
    eventually(
        "3 Ready web pods",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let list: Vec<Pod> = pods
                .list(&ListParams::default().labels("app=web"))
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
                .collect();
            Ok((list.len() == 3).then_some(list))
        },
    )
    .await
}

pub(crate) fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub(crate) fn uids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().filter_map(|p| p.metadata.uid.clone()).collect()
}

pub(crate) async fn live_uids(cluster: &Cluster, ns: &str) -> Result<BTreeSet<String>> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    Ok(uids(
        &pods
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items,
    ))
}

pub(crate) async fn set_error_ratio(cluster: &Cluster, ratio: f64) -> Result<()> {
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

/// The experiment's runs, oldest first.
pub(crate) async fn runs(cluster: &Cluster, ns: &str) -> Result<Vec<ExperimentRun>> {
    let api: Api<ExperimentRun> = Api::namespaced(cluster.client.clone(), ns);
    let mut list = api.list(&ListParams::default()).await?.items;
    list.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(list)
}

/// Wait for a run of the namespace to be observing (its fault in place).
pub(crate) async fn observing(
    cluster: &Cluster,
    ns: &str,
    timeout: Duration,
) -> Result<ExperimentRun> {
    eventually(
        "a run observing",
        timeout,
        Duration::from_millis(200),
        || async {
            Ok(runs(cluster, ns).await?.into_iter().find(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == RunPhase::Observing)
            }))
        },
    )
    .await
}

/// Wait for a Gated record whose gate gave `reason`.
pub(crate) async fn gated_for(
    cluster: &Cluster,
    ns: &str,
    reason: &str,
    timeout: Duration,
) -> Result<ExperimentRun> {
    eventually(
        &format!("a Gated run, reason {reason}"),
        timeout,
        Duration::from_millis(500),
        || async {
            Ok(runs(cluster, ns).await?.into_iter().find(|r| {
                r.status.as_ref().is_some_and(|s| {
                    s.phase == RunPhase::Gated
                        && s.gate.as_ref().is_some_and(|g| g.reason == reason)
                })
            }))
        },
    )
    .await
}

/// Wait for the first run to reach a final phase.
pub(crate) async fn final_run(
    cluster: &Cluster,
    ns: &str,
    timeout: Duration,
) -> Result<ExperimentRun> {
    eventually(
        "a run in a final phase",
        timeout,
        Duration::from_millis(500),
        || async {
            Ok(runs(cluster, ns).await?.into_iter().find(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase.is_final() && s.phase != RunPhase::Gated)
            }))
        },
    )
    .await
}

/// Wait until the SLO has data, a calm short window and at least 30% of its
/// budget left over the period (the gate asks for 10%), so the gate can
/// open: earlier tests raise the shared service's error rate on purpose.
pub(crate) async fn calm(cluster: &Cluster) -> Result<()> {
    let prom = cluster.var("PROMETHEUS_URL")?;
    let ratio = |window: &str| {
        format!(
            "({}) / ({})",
            ERRORS.replace("$window", window),
            TOTAL.replace("$window", window)
        )
    };
    let (short, period) = (ratio("15s"), ratio(PERIOD));
    let most_errors = 0.7 * (1.0 - OBJECTIVE / 100.0);
    eventually(
        "a calm checkout service (error ratio below 5% over 15s, 30% of the budget left)",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || async {
            let s = headroom_e2e::prom_query(prom, &short).await?;
            let p = headroom_e2e::prom_query(prom, &period).await?;
            Ok((s.is_some_and(|r| r < 0.05) && p.is_some_and(|r| r < most_errors)).then_some(()))
        },
    )
    .await
}

pub(crate) fn timeline_time(run: &ExperimentRun, step: &str) -> Option<f64> {
    run.status
        .as_ref()?
        .timeline
        .iter()
        .find(|t| t.step == step)
        .map(|t| t.time.0.as_millisecond() as f64 / 1000.0)
}

#[tokio::test]
async fn healthy_service_run_completes_and_the_replicaset_replaces_the_killed_pod() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("exp-ok").await?;
    set_error_ratio(&cluster, 0.0).await?;
    let before = web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment("kill-one-web", "checkout", json!({}))?,
        )
        .await?;

    let run = final_run(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "phase {:?}: {:?}\n{}",
        status.phase,
        status.reason,
        operator.log()
    );
    let obs = status.observations.clone().context("observations")?;
    ensure!(obs.killed_pods.len() == 1, "one pod killed: {obs:?}");
    let killed = obs.killed_pods[0].uid.clone().context("uid")?;
    ensure!(
        uids(&before).contains(&killed),
        "the killed pod was one of the originals"
    );
    ensure!(status.seed.is_some(), "the seed is recorded");
    let restore = status.restore.clone().context("restore plan")?;
    ensure!(restore.done && restore.ready_pods_before == Some(3));
    // The restore plan was saved before the kill.
    let saved = timeline_time(&run, "RestorePlanSaved").context("RestorePlanSaved")?;
    let kill = timeline_time(&run, "PodKilled").context("PodKilled")?;
    ensure!(saved <= kill, "restore plan at {saved}, kill at {kill}");

    // The real ReplicaSet controller replaced it: 3 Ready pods, the killed
    // UID gone, a new one present.
    let now = web_ready(&cluster, &ns.name).await?;
    ensure!(!now.contains(&killed), "killed pod still present");
    ensure!(
        now.difference(&uids(&before)).count() == 1,
        "one replacement pod"
    );

    let recovery = obs.recovery_seconds.context("recovery measured")?;
    ensure!(recovery > 0.0 && recovery <= 30.0, "recovery {recovery}s");
    ensure!(
        status.verdict == Some(Verdict::Confirmed),
        "verdict {:?}: {:?}",
        status.verdict,
        status.expectations
    );
    let rec = status
        .expectations
        .iter()
        .find(|e| e.name == "recoversWithin")
        .context("recoversWithin result")?;
    ensure!(rec.bound.as_deref() == Some("<= 30s") && rec.measured.is_some());
    println!(
        "recovery {recovery:.1}s; expectations {:?}",
        status.expectations
    );

    // The experiment's status points at the run and its verdict.
    let exp = eventually(
        "experiment status with the last verdict",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || async {
            let e = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
                .get("kill-one-web")
                .await?;
            Ok(e.status
                .clone()
                .filter(|s| s.last_verdict.as_deref() == Some("Confirmed")))
        },
    )
    .await?;
    ensure!(exp.last_run.as_deref() == run.metadata.name.as_deref());
    Ok(())
}

pub(crate) async fn web_ready(cluster: &Cluster, ns: &str) -> Result<BTreeSet<String>> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    eventually(
        "3 Ready web pods again",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let list: Vec<Pod> = pods
                .list(&ListParams::default().labels("app=web"))
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
                .collect();
            Ok((list.len() == 3).then(|| uids(&list)))
        },
    )
    .await
}

#[tokio::test]
async fn budget_below_policy_gates_the_run_and_touches_nothing() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("exp-gated").await?;
    let before = web(&cluster, &ns).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    // Every request counts as bad: the budget is spent many times over.
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("spent", TOTAL)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment("kill-one-web", "spent", json!({}))?,
        )
        .await?;
    let gated = eventually(
        "a Gated run",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            Ok(runs(&cluster, &ns.name).await?.into_iter().find(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase == RunPhase::Gated)
            }))
        },
    )
    .await
    .with_context(|| operator.log())?;
    let gate = gated
        .status
        .as_ref()
        .and_then(|s| s.gate.clone())
        .context("gate record")?;
    ensure!(!gate.open && gate.reason == "BudgetBelowPolicy", "{gate:?}");
    let message = gate.message.clone().unwrap_or_default();
    ensure!(
        message.contains("spent") && message.contains("minBudgetRemaining is 10.0%"),
        "{message}"
    );
    ensure!(
        gate.slos
            .first()
            .and_then(|s| s.budget_remaining)
            .is_some_and(|r| r < 0.0),
        "the figures are recorded: {gate:?}"
    );
    // Nothing touched, and still nothing a few observe intervals later.
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(
        live_uids(&cluster, &ns.name).await? == uids(&before),
        "pods changed"
    );
    ensure!(
        runs(&cluster, &ns.name).await?.iter().all(|r| r
            .status
            .as_ref()
            .is_some_and(|s| s.phase == RunPhase::Gated)),
        "no run went past the gate"
    );
    let exp = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .get("kill-one-web")
        .await?;
    let cond = exp
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Gated").cloned())
        .context("Gated condition")?;
    ensure!(
        cond.status == "True" && cond.reason == "BudgetBelowPolicy",
        "{cond:?}"
    );
    // headroom plan says the same, with the reason.
    let bin = headroom_e2e::repo_root().join("target/debug/headroom");
    let out = std::process::Command::new(&bin)
        .args(["plan", "-n", &ns.name])
        .env("KUBECONFIG", cluster.var("KUBECONFIG")?)
        .env("PROMETHEUS_URL", cluster.var("PROMETHEUS_URL")?)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "plan failed: {text}");
    let line = text
        .lines()
        .find(|l| l.contains("kill-one-web"))
        .context("plan line")?;
    ensure!(
        line.contains(" no ") && line.contains("BudgetBelowPolicy"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn error_rate_raised_mid_run_aborts_within_one_observe_interval() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("exp-abort").await?;
    let prom = cluster.var("PROMETHEUS_URL")?.to_owned();
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            // The spend cap out of the way: over the SLO's 2m period, 50%
            // errors spend half the budget in about the time the 15s window
            // takes to show the burn, so the two aborts would race.
            &experiment(
                "kill-one-web",
                "checkout",
                json!({ "duration": "90s", "budgetPolicy": { "maxBudgetSpend": 100 } }),
            )?,
        )
        .await?;
    observing(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    let raised_at = now_secs();
    set_error_ratio(&cluster, 0.5).await?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(60)).await;
    set_error_ratio(&cluster, 0.0).await?;
    let run = run.with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Aborted,
        "phase {:?} {:?}",
        status.phase,
        status.reason
    );
    let reason = status.reason.clone().unwrap_or_default();
    ensure!(reason.starts_with("BurnRateAboveAbort"), "{reason}");
    ensure!(status.restore.as_ref().is_some_and(|r| r.done), "restored");
    ensure!(
        status.verdict == Some(Verdict::Refuted),
        "{:?}",
        status.expectations
    );

    // When did Prometheus first show the crossing? Its own answer for the
    // abort expression at 100 ms steps from the raise to the abort.
    let abort = timeline_time(&run, "AbortRequested").context("AbortRequested")?;
    let restore = timeline_time(&run, "RestoreStarted").context("RestoreStarted")?;
    let q = format!(
        "(({}) / ({})) / {}",
        ERRORS.replace("$window", "15s"),
        TOTAL.replace("$window", "15s"),
        1.0 - OBJECTIVE / 100.0
    );
    let crossing = first_crossing(&prom, &q, 3.0, raised_at - 1.0, abort).await?;
    let latency = restore - crossing;
    println!(
        "crossing at {crossing:.3}, abort at {abort:.3}, restore started at {restore:.3}: reaction {latency:.3}s (observeInterval 2s)"
    );
    ensure!(
        latency <= 2.0 + 1.0,
        "restore started {latency:.3}s after Prometheus showed the crossing"
    );
    ensure!(latency >= 0.0, "aborted before the crossing? {latency:.3}s");
    Ok(())
}

pub(crate) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The first time in [from, to] at which `query` is above `threshold`.
pub(crate) async fn first_crossing(
    prom: &str,
    query: &str,
    threshold: f64,
    from: f64,
    to: f64,
) -> Result<f64> {
    let body: Value = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query_range"))
        .query(&[
            ("query", query.to_owned()),
            ("start", format!("{from:.3}")),
            ("end", format!("{to:.3}")),
            ("step", "0.1".to_owned()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let values = body["data"]["result"][0]["values"]
        .as_array()
        .with_context(|| format!("no range result: {body}"))?;
    for v in values {
        let t = v[0].as_f64().context("time")?;
        let x: f64 = v[1].as_str().context("value")?.parse()?;
        if x > threshold {
            return Ok(t);
        }
    }
    bail!("Prometheus never showed the burn rate above {threshold} between {from} and {to}")
}

#[tokio::test]
async fn global_pause_aborts_the_run_and_closes_the_gate() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("exp-pause").await?;
    // Its own operator namespace, so this pause touches no other test.
    let home = cluster.namespace("exp-pause-home").await?;
    set_error_ratio(&cluster, 0.0).await?;
    let before = web(&cluster, &ns).await?;
    calm(&cluster).await?;
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
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "kill-one-web",
                "checkout",
                json!({ "duration": "90s", "schedule": "* * * * *" }),
            )?,
        )
        .await?;
    observing(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    // One kubectl command sets the pause.
    let out = cluster.kubectl(&[
        "-n",
        &home.name,
        "create",
        "configmap",
        "headroom-pause",
        "--from-literal=reason=game day over",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = final_run(&cluster, &ns.name, Duration::from_secs(30))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(status.phase == RunPhase::Aborted, "{:?}", status.phase);
    let reason = status.reason.clone().unwrap_or_default();
    ensure!(
        reason.starts_with("GlobalPause") && reason.contains("game day over"),
        "{reason}"
    );
    ensure!(status.restore.as_ref().is_some_and(|r| r.done));
    // The next gate decision says so; no pod is touched while paused.
    let paused_uids = web_ready(&cluster, &ns.name).await?;
    let gated = gated_for(&cluster, &ns.name, "GlobalPause", Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    ensure!(gated.status.is_some());
    ensure!(live_uids(&cluster, &ns.name).await? == paused_uids);
    ensure!(paused_uids.len() == before.len());
    // And one command clears it.
    let out = cluster.kubectl(&["-n", &home.name, "delete", "configmap", "headroom-pause"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn a_new_operator_restores_a_run_left_by_a_killed_one() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("exp-crash").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let first = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment("kill-one-web", "checkout", json!({ "duration": "90s" }))?,
        )
        .await?;
    let in_place = observing(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| first.log())?;
    // SIGKILL: no chance to restore on the way out.
    drop(first);
    let second = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| second.log())?;
    ensure!(run.metadata.uid == in_place.metadata.uid, "the same run");
    let status = run.status.clone().context("status")?;
    ensure!(status.phase == RunPhase::Aborted, "{:?}", status.phase);
    ensure!(
        status
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("OperatorRestarted")),
        "{:?}",
        status.reason
    );
    ensure!(status.restore.as_ref().is_some_and(|r| r.done));
    ensure!(
        status.timeline.iter().any(|t| t.step == "RecoveryStarted"),
        "{:?}",
        status.timeline
    );
    // Exactly one pod was ever killed: the new instance did not inject again.
    ensure!(
        status
            .observations
            .as_ref()
            .map_or(0, |o| o.killed_pods.len())
            == 1
    );
    web_ready(&cluster, &ns.name).await?;
    Ok(())
}

/// A run-now request on the experiment, as the dashboard's button makes it.
pub(crate) async fn request_run(cluster: &Cluster, ns: &str, name: &str) -> Result<()> {
    let at = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)?
        .to_string();
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), ns)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({
                "metadata": { "annotations": { headroom::resources::RUN_NOW: at } }
            })),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn finished_runs_beyond_run_history_limit_are_deleted_oldest_first() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("history").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    // Dry runs: each request ends in a Completed run within seconds.
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "history",
                "checkout",
                json!({ "dryRun": true, "runHistoryLimit": 2, "schedule": "0 0 1 1 *" }),
            )?,
        )
        .await?;
    let mut made: Vec<String> = Vec::new();
    for i in 0..4 {
        // Creation times are whole seconds and a request must be newer than
        // the last run by more than one.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        request_run(&cluster, &ns.name, "history").await?;
        let seen = made.clone();
        let run = eventually(
            &format!("run {} finished", i + 1),
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                Ok(runs(&cluster, &ns.name).await?.into_iter().find(|r| {
                    !seen.contains(&r.name_any())
                        && r.status
                            .as_ref()
                            .is_some_and(|s| s.phase == RunPhase::Completed)
                }))
            },
        )
        .await
        .with_context(|| operator.log())?;
        made.push(run.name_any());
    }
    let newest: Vec<String> = made[2..].to_vec();
    let kept = eventually(
        "only the 2 newest runs kept",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            let mut names: Vec<String> = runs(&cluster, &ns.name)
                .await?
                .iter()
                .map(|r| r.name_any())
                .collect();
            names.sort();
            let mut want = newest.clone();
            want.sort();
            Ok((names == want).then_some(names))
        },
    )
    .await
    .with_context(|| format!("made {made:?}\n{}", operator.log()))?;
    println!("made {made:?}; kept {kept:?}");
    let exp = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .get("history")
        .await?;
    ensure!(
        exp.status.and_then(|s| s.last_run) == made.last().cloned(),
        "lastRun is not the newest run"
    );
    Ok(())
}

/// The Unix time of the schedule slot a run is named after (`…-s<time>`).
fn slot_of(run: &ExperimentRun) -> Option<i64> {
    run.name_any().rsplit_once("-s")?.1.parse().ok()
}

#[tokio::test]
async fn a_schedule_slot_during_a_run_is_skipped_or_replaces_the_run() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let forbid = cluster.namespace("slot-forbid").await?;
    let replace = cluster.namespace("slot-replace").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &forbid).await?;
    web(&cluster, &replace).await?;
    calm(&cluster).await?;
    // Every minute, each run 100s long: the second slot always comes while
    // the first slot's run is in flight.
    let mut operators = Vec::new();
    for (ns, policy) in [(&forbid, "Forbid"), (&replace, "Replace")] {
        operators.push(Operator::start_in(
            &cluster,
            &ns.name,
            &["--evaluation-interval", "2s"],
        )?);
        Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
            .create(&PostParams::default(), &slo("checkout", ERRORS)?)
            .await?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(
                &PostParams::default(),
                &experiment(
                    "every-minute",
                    "checkout",
                    json!({ "duration": "100s", "schedule": "* * * * *", "concurrencyPolicy": policy }),
                )?,
            )
            .await?;
    }
    let logs = || format!("{}\n{}", operators[0].log(), operators[1].log());
    let first_forbid = observing(&cluster, &forbid.name, Duration::from_secs(75))
        .await
        .with_context(logs)?;
    let first_replace = observing(&cluster, &replace.name, Duration::from_secs(75))
        .await
        .with_context(logs)?;

    // Forbid: the next slot is recorded as skipped, naming the run in flight.
    let skipped = gated_for(
        &cluster,
        &forbid.name,
        "RunInProgress",
        Duration::from_secs(75),
    )
    .await
    .with_context(logs)?;
    let reason = skipped
        .status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_default();
    ensure!(
        reason.contains(&first_forbid.name_any()) && reason.contains("Forbid"),
        "{reason}"
    );
    let skipped_slot = slot_of(&skipped).context("the skipped record names its slot")?;

    // Replace: the first run is aborted and restored, and the slot's own
    // run starts in its place.
    let replaced = final_run(&cluster, &replace.name, Duration::from_secs(75))
        .await
        .with_context(logs)?;
    ensure!(replaced.metadata.uid == first_replace.metadata.uid);
    let status = replaced.status.clone().context("status")?;
    ensure!(status.phase == RunPhase::Aborted, "{:?}", status.phase);
    let reason = status.reason.clone().unwrap_or_default();
    ensure!(
        reason.starts_with("Interrupted") && reason.contains("concurrencyPolicy is Replace"),
        "{reason}"
    );
    ensure!(status.restore.as_ref().is_some_and(|r| r.done));
    let successor = eventually(
        "the replacing slot's run in flight",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            Ok(runs(&cluster, &replace.name).await?.into_iter().find(|r| {
                r.metadata.uid != first_replace.metadata.uid
                    && r.status.as_ref().is_some_and(|s| s.phase.holds_fault())
            }))
        },
    )
    .await
    .with_context(logs)?;
    ensure!(
        slot_of(&successor) > slot_of(&first_replace),
        "{} after {}",
        successor.name_any(),
        first_replace.name_any()
    );

    // Forbid: the first run runs its course, and the skipped slot does not
    // start late when it ends: nothing else starts before the slot after it.
    let done = final_run(&cluster, &forbid.name, Duration::from_secs(90))
        .await
        .with_context(logs)?;
    ensure!(done.metadata.uid == first_forbid.metadata.uid);
    ensure!(
        done.status
            .as_ref()
            .is_some_and(|s| s.phase == RunPhase::Completed),
        "{:?}",
        done.status.as_ref().map(|s| s.phase)
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    for r in runs(&cluster, &forbid.name).await? {
        let gated = r
            .status
            .as_ref()
            .is_some_and(|s| s.phase == RunPhase::Gated);
        if r.metadata.uid == first_forbid.metadata.uid || gated {
            continue;
        }
        ensure!(
            slot_of(&r).is_some_and(|s| s > skipped_slot),
            "{} started for a slot no later than the skipped one ({skipped_slot})",
            r.name_any()
        );
    }
    Ok(())
}

/// An operator that leads through a 4s Lease in `home`, and whose runs'
/// heartbeats run out 4s after it dies: the next instance adopts its runs
/// (restores them) as soon as the leader Lease allows.
pub(crate) fn failover_args(home: &str) -> [&str; 9] {
    [
        "--evaluation-interval",
        "2s",
        "--operator-namespace",
        home,
        "--leader-elect",
        "--lease-duration",
        "4s",
        "--run-lease-duration",
        "4s",
    ]
}

/// Wait until experiment `name`'s Valid condition is False with `reason`;
/// its message.
pub(crate) async fn invalid_with(
    exps: &Api<ChaosExperiment>,
    name: &str,
    reason: &str,
    operator: &Operator,
) -> Result<String> {
    let c = eventually(
        &format!("{name}: Valid=False with reason {reason}"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let e = exps.get(name).await?;
            Ok(e.status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Valid"))
                .filter(|c| c.reason == reason && c.status == "False"))
        },
    )
    .await
    .with_context(|| operator.log())?;
    Ok(c.message)
}
