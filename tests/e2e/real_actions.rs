//! The actions against real pods: `checkout-real` on the real node, where
//! each pod is a `/checkout` process with its own PostgreSQL pool, and its
//! callers (real-node.sh's load generator) reach it through the Service's
//! ClusterIP. What these runs record, kwok pods cannot show: requests a
//! killed process dropped in flight, its process gone from the host, its
//! sessions gone from `pg_stat_activity`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use headroom::resources::ExperimentRun;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::{RunPhase, Verdict};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::real_node::{
    container, each_holds_sessions, host_pid_of, ready_checkout_pods, real_pod_sessions,
};

pub(crate) const NS: &str = "checkout-real";
/// What callers got, by status code; `code="none"`: no response at all.
const CALLS: &str = "checkout_client_requests_total{job=\"checkout-real-load\"}";

pub(crate) fn slo(name: &str) -> Result<ServiceLevelObjective> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": { "name": name },
        "spec": {
            "service": "checkout-real",
            "description": "what callers of checkout-real's Service get, counted by the callers",
            "objective": 90,
            "window": "2m",
            "indicator": { "ratio": {
                "errors": "sum(rate(checkout_client_requests_total{job=\"checkout-real-load\",code!=\"200\"}[$window]))",
                "total": format!("sum(rate({CALLS}[$window]))"),
            } },
            "minTrafficPerSecond": 1,
            "alerting": { "tiers": [
                { "name": "page-fast", "severity": "page", "budgetPercent": 75, "longWindow": "30s", "shortWindow": "15s" }
            ]}
        }
    }))?)
}

pub(crate) fn experiment(
    name: &str,
    slo: &str,
    action: Value,
    description: &str,
) -> Result<ChaosExperiment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": { "name": name },
        "spec": {
            "hypothesis": {
                "description": description,
                "recoversWithin": "30s",
                // Checked every observe interval: requests that got no
                // response over the last 10s.
                "checks": [{ "name": "no-request-lost", "failureThreshold": 1, "promql": {
                    "query": "sum(increase(checkout_client_requests_total{job=\"checkout-real-load\",code=\"none\"}[10s]))",
                    "op": "<", "value": 1
                } }]
            },
            "slos": [slo],
            "budgetPolicy": { "minBudgetRemaining": 10, "maxBurnRateToStart": 1, "abortBurnRate": 20, "maxBudgetSpend": 50 },
            "action": action,
            "duration": "15s",
            "observeInterval": "2s",
            "blastRadius": { "maxPods": 1 }
        }
    }))?)
}

/// Wait until the callers' error ratio over the SLO's 2m period is below
/// 3% (the gate asks for 10% of a 10% budget left): an earlier test's fault
/// must age out first.
pub(crate) async fn calm_callers(cluster: &Cluster) -> Result<()> {
    let prom = cluster.var("PROMETHEUS_URL")?;
    let q = format!(
        "sum(rate(checkout_client_requests_total{{job=\"checkout-real-load\",code!=\"200\"}}[2m])) / sum(rate({CALLS}[2m]))"
    );
    eventually(
        "the callers' error ratio over 2m below 3%",
        Duration::from_secs(240),
        Duration::from_secs(2),
        || async {
            Ok(headroom_e2e::prom_query(prom, &q)
                .await?
                .filter(|r| *r < 0.03)
                .map(|_| ()))
        },
    )
    .await
}

/// Wait until no request got lost over the last 15s, so the check of the
/// next run sees only what that run did.
async fn no_recent_loss(cluster: &Cluster) -> Result<()> {
    let prom = cluster.var("PROMETHEUS_URL")?;
    let q = "sum(increase(checkout_client_requests_total{job=\"checkout-real-load\",code=\"none\"}[15s]))";
    eventually(
        "no request lost over the last 15s",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            Ok(headroom_e2e::prom_query(prom, q)
                .await?
                .filter(|n| *n < 0.5)
                .map(|_| ()))
        },
    )
    .await
}

/// Requests the load generator sent that got no response, so far.
async fn lost_requests() -> Result<u64> {
    Ok(load_stats().await?["transport_errors"]
        .as_u64()
        .unwrap_or(0))
}

/// checkout-real's 2 Ready pods, once each holds PostgreSQL sessions of its
/// own, and the sessions by pod.
async fn two_pods_with_sessions(
    cluster: &Cluster,
    pods: &Api<Pod>,
) -> Result<(Vec<Pod>, BTreeMap<String, i64>)> {
    eventually(
        "2 Ready checkout-real pods, each with its PostgreSQL sessions",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let ready = ready_checkout_pods(pods).await?;
            let sessions = real_pod_sessions(cluster).await?;
            let all = ready.len() == 2 && each_holds_sessions(&ready, &sessions);
            Ok(all.then_some((ready, sessions)))
        },
    )
    .await
    .context("checkout-real's pods (tests/cluster/real-node.sh) with their PostgreSQL pools")
}

pub(crate) async fn load_stats() -> Result<Value> {
    Ok(reqwest::get("http://127.0.0.1:28082/stats")
        .await
        .context("the load generator (real-node.sh's checkout-real-load)")?
        .json()
        .await?)
}

/// The run of `experiment` once it is final.
pub(crate) async fn final_run_of(cluster: &Cluster, experiment: &str) -> Result<ExperimentRun> {
    let runs: Api<ExperimentRun> = Api::namespaced(cluster.client.clone(), NS);
    eventually(
        "the run in a final phase",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || async {
            Ok(runs
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|r| {
                    r.spec.experiment == experiment
                        && r.status.as_ref().is_some_and(|s| s.phase.is_final())
                }))
        },
    )
    .await
}

/// Deletes the experiment and the SLO while the operator still runs (it
/// lifts the experiment's finalizer), whatever the test's outcome.
pub(crate) async fn clean_up(cluster: &Cluster, experiment: &str, slo: &str) {
    let exps: Api<ChaosExperiment> = Api::namespaced(cluster.client.clone(), NS);
    let _ = exps.delete(experiment, &DeleteParams::default()).await;
    let _ = eventually(
        "the experiment deleted",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok(exps.get_opt(experiment).await?.is_none().then_some(())) },
    )
    .await;
    let _ = Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), NS)
        .delete(slo, &DeleteParams::default())
        .await;
}

/// podKill with grace 0 on a real pod under load: the process is gone from
/// the host, its PostgreSQL sessions leave `pg_stat_activity`, the
/// ReplicaSet's replacement is Ready within the bound, and the run's check
/// of the callers' lost requests agrees with the load generator's own count.
#[tokio::test]
async fn pod_kill_on_a_real_pod_ends_its_process_and_sessions_and_records_what_callers_lost()
-> Result<()> {
    // No connectionExhaustion (which fills PostgreSQL) while this runs.
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);
    let suffix = rand::random::<u32>() % 1_000_000;
    let (exp_name, slo_name) = (format!("kill-{suffix:06}"), format!("callers-{suffix:06}"));

    // Every Ready pod a /checkout process with sessions of its own.
    let (before, _) = two_pods_with_sessions(&cluster, &pods).await?;
    let mut pids = BTreeMap::new();
    for p in &before {
        let name = p.metadata.name.clone().unwrap_or_default();
        let (id, _, _) = container(p).with_context(|| format!("{name}: no running container"))?;
        let pid = host_pid_of(&id, b"/checkout").with_context(|| format!("{name}: no process"))?;
        pids.insert(name, pid);
    }

    calm_callers(&cluster).await?;
    let operator = Operator::start_in(&cluster, NS, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), NS)
        .create(&PostParams::default(), &slo(&slo_name)?)
        .await?;
    no_recent_loss(&cluster).await?;
    let lost_before = lost_requests().await?;
    let started = Instant::now();
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), NS)
        .create(
            &PostParams::default(),
            &experiment(
                &exp_name,
                &slo_name,
                json!({ "podKill": { "selector": { "matchLabels": { "app": "checkout" } }, "count": 1, "gracePeriodSeconds": 0 } }),
                "killing one of checkout's two pods loses no caller's request, and a replacement is Ready within 30s",
            )?,
        )
        .await?;
    let run = final_run_of(&cluster, &exp_name).await;
    let lost_after = lost_requests().await?;
    let sessions_after = real_pod_sessions(&cluster).await?;
    clean_up(&cluster, &exp_name, &slo_name).await;
    let run = run.with_context(|| operator.log())?;
    let status = run.status.context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}\n{}",
        status.phase,
        status.reason,
        operator.log()
    );
    let obs = status.observations.as_ref().context("no observations")?;
    let killed = obs.killed_pods.first().context("no killed pod recorded")?;
    let pid = pids
        .get(&killed.name)
        .with_context(|| format!("killed {} was not one of {pids:?}", killed.name))?;

    // The process is gone from the host, not just the pod from the API.
    let alive = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(&b"/checkout"[..]));
    ensure!(!alive, "{}'s process {pid} is still running", killed.name);
    // Its sessions went with it; the replacement opened its own.
    ensure!(
        !sessions_after.contains_key(&killed.name),
        "{}'s sessions are still in pg_stat_activity: {sessions_after:?}",
        killed.name
    );
    // Whether callers lost requests depends on the process: deleting a pod
    // with grace 0 still makes kubelet send SIGTERM first (and SIGKILL
    // after its minimum grace), and checkout drains what it is serving on
    // SIGTERM, so at most a request or two racing the endpoint's removal is
    // lost. The run's evidence must say what the callers saw: the check is
    // refuted exactly when they lost one.
    let lost = lost_after.saturating_sub(lost_before);
    let check = status
        .expectations
        .iter()
        .find(|e| e.name == "check/no-request-lost")
        .with_context(|| format!("{:#?}", status.expectations))?;
    ensure!(
        (check.result == Verdict::Refuted) == (lost >= 1),
        "the callers lost {lost} requests but the check says {check:?}"
    );
    let recovery = status
        .expectations
        .iter()
        .find(|e| e.name == "recoversWithin")
        .with_context(|| format!("{:#?}", status.expectations))?;
    ensure!(recovery.result == Verdict::Confirmed, "{recovery:?}");
    println!(
        "real podKill: killed {} (pid {pid}); callers lost {lost} requests (check measured {:?}); \
         recovery {:?}; sessions after {sessions_after:?}; run took {:.1}s",
        killed.name,
        check.measured,
        obs.recovery_seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Host processes running checkout-real's `/checkout` (the host's own
/// checkout runs from target/release, by its full path).
fn checkout_processes() -> usize {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(&b"/checkout"[..]))
                })
                .count()
        })
        .unwrap_or(0)
}

/// scaleDown of the real Deployment from 4 to 2: the ReplicaSet controller
/// chooses which processes end; the run records which, and each removed
/// pod's process and PostgreSQL sessions are gone while the survivors keep
/// theirs. What the callers lost to the graceful removal is printed.
#[tokio::test]
async fn scale_down_on_real_pods_ends_the_removed_processes_and_their_sessions() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);
    let suffix = rand::random::<u32>() % 1_000_000;
    let (exp_name, slo_name) = (format!("scale-{suffix:06}"), format!("callers-{suffix:06}"));
    eventually(
        "2 Ready checkout-real pods",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async { Ok((ready_checkout_pods(&pods).await?.len() == 2).then_some(())) },
    )
    .await
    .context("checkout-real's pods (tests/cluster/real-node.sh)")?;

    calm_callers(&cluster).await?;
    let operator = Operator::start_in(&cluster, NS, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), NS)
        .create(&PostParams::default(), &slo(&slo_name)?)
        .await?;
    let lost_before = lost_requests().await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), NS)
        .create(
            &PostParams::default(),
            &experiment(
                &exp_name,
                &slo_name,
                json!({ "scaleDown": {
                    "target": { "kind": "Deployment", "name": "checkout" },
                    "scaleUpTo": 4, "scaleDownTo": 2, "expectOrder": "NewestFirst"
                } }),
                "scaling checkout from 4 to 2 removes the newest pods and loses no caller's request",
            )?,
        )
        .await?;
    let run = final_run_of(&cluster, &exp_name).await;
    let lost = lost_requests().await?.saturating_sub(lost_before);
    clean_up(&cluster, &exp_name, &slo_name).await;
    let run = run.with_context(|| operator.log())?;
    let status = run.status.context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}\n{}",
        status.phase,
        status.reason,
        operator.log()
    );
    let obs = status.observations.as_ref().context("no observations")?;
    ensure!(
        obs.removed_pods.len() == 2 && obs.surviving_pods.len() == 2,
        "removed {:?}, survived {:?}",
        obs.removed_pods,
        obs.surviving_pods
    );
    // Restored to 2 replicas: two processes, each with its sessions; none
    // of the removed pods' sessions are left.
    let sessions = eventually(
        "2 checkout-real processes, the survivors' sessions only",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let sessions = real_pod_sessions(&cluster).await?;
            let removed_gone = obs
                .removed_pods
                .iter()
                .all(|p| !sessions.contains_key(&p.name));
            Ok((removed_gone && checkout_processes() == 2).then_some(sessions))
        },
    )
    .await?;
    for p in &obs.surviving_pods {
        ensure!(
            sessions.get(&p.name).is_some_and(|n| *n > 0),
            "survivor {} holds no session: {sessions:?}",
            p.name
        );
    }
    let order = status
        .expectations
        .iter()
        .find(|e| e.name == "expectOrder/NewestFirst")
        .context("order expectation")?;
    let check = status
        .expectations
        .iter()
        .find(|e| e.name == "check/no-request-lost")
        .context("check expectation")?;
    println!(
        "real scaleDown 4 -> 2: removed {:?}; order {:?} ({}); callers lost {lost} requests \
         (check {:?}, measured {:?}); sessions after {sessions:?}",
        obs.removed_pods.iter().map(|p| &p.name).collect::<Vec<_>>(),
        order.result,
        order.measured.clone().unwrap_or_default(),
        check.result,
        check.measured
    );
    Ok(())
}

/// Database errors checkout-real's pods counted over the last `seconds`,
/// summed over the pods Prometheus found by Kubernetes service discovery.
async fn real_pods_db_errors(cluster: &Cluster, seconds: u64) -> Result<f64> {
    Ok(headroom_e2e::prom_query(
        cluster.var("PROMETHEUS_URL")?,
        &format!(
            "sum(increase(checkout_db_connection_errors_total{{job=\"checkout-real\"}}[{seconds}s])) or vector(0)"
        ),
    )
    .await?
    .unwrap_or(0.0))
}

/// connectionExhaustion of PostgreSQL while the real pods' pools renew their
/// sessions (every 5 s): the run records where PostgreSQL first refused, the
/// pods themselves count the refusals of their own reconnects (scraped
/// through service discovery), and after the restore each pod holds
/// sessions again.
#[tokio::test]
async fn connection_exhaustion_is_felt_by_the_real_pods_pools() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);
    let suffix = rand::random::<u32>() % 1_000_000;
    let (exp_name, slo_name, secret_name) = (
        format!("exhaust-{suffix:06}"),
        format!("callers-{suffix:06}"),
        format!("pg-{suffix:06}"),
    );
    two_pods_with_sessions(&cluster, &pods).await?;
    let database: tokio_postgres::Config = cluster.var("DATABASE_URL")?.parse()?;
    let port = database.get_ports().first().copied().context("port")?;
    let user = database.get_user().context("user")?.to_owned();
    let password = String::from_utf8(database.get_password().context("password")?.to_vec())?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.client.clone(), NS);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": secret_name },
                "stringData": { "username": user, "password": password, "database": "checkout" }
            }))?,
        )
        .await?;
    calm_callers(&cluster).await?;
    let started = Instant::now();
    let operator = Operator::start_in_allowing(
        &cluster,
        NS,
        &["--evaluation-interval", "2s"],
        &format!("127.0.0.1/32:{port}"),
    )?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), NS)
        .create(&PostParams::default(), &slo(&slo_name)?)
        .await?;
    let mut exp = experiment(
        &exp_name,
        &slo_name,
        json!({ "connectionExhaustion": {
            "target": { "host": "127.0.0.1", "port": port },
            "protocol": "Postgres", "connections": 40, "rampStep": 4, "rampInterval": "200ms",
            "holdFor": "12s", "credentialsSecret": { "name": secret_name }
        } }),
        "checkout's pods keep serving while PostgreSQL refuses new sessions",
    )?;
    exp.spec.blast_radius = None;
    exp.spec.duration = "60s".into();
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), NS)
        .create(&PostParams::default(), &exp)
        .await?;
    let run = final_run_of(&cluster, &exp_name).await;
    // Scraped every second: the last refusals are in within a few.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = real_pods_db_errors(&cluster, started.elapsed().as_secs() + 2).await?;
    clean_up(&cluster, &exp_name, &slo_name).await;
    let _ = secrets.delete(&secret_name, &DeleteParams::default()).await;
    let run = run.with_context(|| operator.log())?;
    let status = run.status.context("status")?;
    // The pods' refused reconnects fail callers' requests (500, database
    // unavailable): the callers' budget may run out before the hold ends,
    // and then the run is aborted and the connections released early.
    let by_budget = status.phase == RunPhase::Aborted
        && status
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("BudgetSpend") || r.starts_with("BurnRate"));
    ensure!(
        status.phase == RunPhase::Completed || by_budget,
        "{:?} {:?}\n{}",
        status.phase,
        status.reason,
        operator.log()
    );
    ensure!(
        status
            .restore
            .as_ref()
            .is_some_and(|r| r.done && r.connections_held == Some(0)),
        "restore {:?}",
        status.restore
    );
    let obs = status.observations.as_ref().context("no observations")?;
    let at = obs
        .connections_at_first_refusal
        .context("no refusal recorded")?;
    ensure!(
        refused >= 1.0,
        "the real pods counted no refused session while PostgreSQL was full ({refused})"
    );
    // Restored: each pod's pool back.
    let (_, sessions) = two_pods_with_sessions(&cluster, &pods).await?;
    println!(
        "real connectionExhaustion: first refusal with {at} held ({}); the real pods counted {refused} \
         refused or lost sessions of their own; sessions after the restore {sessions:?}; {:?} ({:?}), verdict {:?}",
        obs.refusal_message.clone().unwrap_or_default(),
        status.phase,
        status.reason,
        status.verdict
    );
    Ok(())
}

/// What a deleted pod's SIGTERM spares its callers, a crash does not: SIGKILL
/// to a real pod's process under load breaks the connections it was serving,
/// and the callers count those requests as lost (`error="dropped"` or
/// refused until kubelet restarts the container).
#[tokio::test]
async fn sigkill_to_a_real_pods_process_loses_the_requests_it_was_serving() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);
    let ready = eventually(
        "2 Ready checkout-real pods",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let ready = ready_checkout_pods(&pods).await?;
            Ok((ready.len() == 2).then_some(ready))
        },
    )
    .await
    .context("checkout-real's pods (tests/cluster/real-node.sh)")?;
    let victim = &ready[0];
    let name = victim.metadata.name.clone().unwrap_or_default();
    let (id, restarts, _) = container(victim).with_context(|| format!("{name}: no container"))?;
    let pid = host_pid_of(&id, b"/checkout").with_context(|| format!("{name}: no process"))?;
    let lost_before = lost_requests().await?;
    let out = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output()?;
    ensure!(out.status.success(), "kill -KILL {pid}");
    let lost = eventually(
        "the callers to count lost requests",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            let now = lost_requests().await?;
            Ok((now > lost_before).then_some(now - lost_before))
        },
    )
    .await?;
    // kubelet restarts the container: a new process in the same pod.
    eventually(
        "kubelet to restart the killed container, Ready",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = pods.get(&name).await?;
            Ok(container(&p)
                .filter(|(_, r, _)| *r > restarts)
                .filter(|_| crate::experiment::ready(&p))
                .map(|_| ()))
        },
    )
    .await?;
    println!("SIGKILL to {name}'s process (pid {pid}): the callers lost {lost} requests");
    Ok(())
}
