//! scaleDown ordering and connectionExhaustion against the real
//! ReplicaSet controller and the real PostgreSQL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::{RunPhase, Verdict};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::experiment::{
    ERRORS, OBJECTIVE, TOTAL, calm, experiment, final_run, now_secs, set_error_ratio, slo, web,
};

/// A run that failed before injecting, with its reason.
async fn failed_reason(cluster: &Cluster, ns: &str, operator: &Operator) -> Result<String> {
    let run = final_run(cluster, ns, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.context("status")?;
    ensure!(
        status.phase == RunPhase::Failed,
        "phase {:?}: {:?}",
        status.phase,
        status.reason
    );
    ensure!(
        status
            .timeline
            .iter()
            .all(|t| t.step != "PodKilled" && t.step != "ScaledUp" && t.step != "ConnectionsHeld"),
        "something was injected: {:?}",
        status.timeline
    );
    status.reason.context("reason")
}

#[tokio::test]
async fn scale_down_records_which_pods_the_replicaset_controller_removed() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("exp-scale").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    // Every pod's creation time, read independently of the operator: a
    // watch sees each pod even if it lives only a moment.
    let created: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let watch = {
        let created = created.clone();
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns.name);
        let stream = watcher(pods, watcher::Config::default().labels("app=web")).touched_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(p)) = stream.next().await {
                if let (Some(uid), Some(t), Ok(mut map)) = (
                    p.metadata.uid.clone(),
                    p.metadata.creation_timestamp.clone(),
                    created.lock(),
                ) {
                    map.insert(uid, t.0.to_string());
                }
            }
        })
    };
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "newest-first",
                "checkout",
                json!({
                    "hypothesis": { "description": "on scale-down the newly created pods are removed first", "recoversWithin": null },
                    "action": { "podKill": null, "scaleDown": {
                        "target": { "kind": "Deployment", "name": "web" },
                        "scaleUpTo": 6, "scaleDownTo": 3, "expectOrder": "NewestFirst"
                    }},
                    "duration": "60s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;

    let run = final_run(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    watch.abort();
    let created = created
        .lock()
        .map_err(|_| anyhow::anyhow!("watch lock"))?
        .clone();
    let status = run.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}\n{}",
        status.phase,
        status.reason,
        operator.log()
    );
    let obs = status.observations.clone().context("observations")?;
    ensure!(
        obs.removed_pods.len() == 3,
        "removed {:?}",
        obs.removed_pods
    );
    ensure!(
        obs.surviving_pods.len() == 3,
        "survived {:?}",
        obs.surviving_pods
    );
    for p in obs.removed_pods.iter().chain(&obs.surviving_pods) {
        ensure!(
            p.created.is_some() && p.node.is_some(),
            "evidence row {p:?}"
        );
    }
    // Independently: did the newest pods go?
    let time = |uid: &Option<String>| -> Result<String> {
        created
            .get(uid.as_deref().unwrap_or(""))
            .cloned()
            .with_context(|| format!("creation time of {uid:?} was never seen"))
    };
    let oldest_removed = obs
        .removed_pods
        .iter()
        .map(|p| time(&p.uid))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .min()
        .context("removed")?;
    let newest_survivor = obs
        .surviving_pods
        .iter()
        .map(|p| time(&p.uid))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .context("survivors")?;
    let newest_first_held = oldest_removed >= newest_survivor;
    let order = status
        .expectations
        .iter()
        .find(|e| e.name == "expectOrder/NewestFirst")
        .context("order expectation")?;
    ensure!(
        (order.result == Verdict::Confirmed) == newest_first_held,
        "verdict {:?} but oldest removed {oldest_removed} vs newest survivor {newest_survivor}",
        order.result
    );
    println!(
        "scaleDown: {:?} ({}), oldest removed {oldest_removed}, newest survivor {newest_survivor}",
        order.result,
        order.measured.clone().unwrap_or_default()
    );
    // Replicas restored to 3.
    let d = Api::<Deployment>::namespaced(cluster.client.clone(), &ns.name)
        .get("web")
        .await?;
    ensure!(d.spec.and_then(|s| s.replicas) == Some(3));
    ensure!(
        status
            .restore
            .is_some_and(|r| r.done && r.workload.is_some_and(|w| w.replicas == 3))
    );
    Ok(())
}

pub(crate) async fn pg_connections(cluster: &Cluster) -> Result<(i64, i64)> {
    let url = cluster.var("DATABASE_ADMIN_URL")?;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting as the PostgreSQL admin")?;
    let task = tokio::spawn(conn);
    let row = client
        .query_one(
            "select count(*) filter (where usename = 'checkout'), \
             count(*) filter (where application_name = 'headroom-connection-exhaustion') \
             from pg_stat_activity where backend_type = 'client backend'",
            &[],
        )
        .await?;
    drop(client);
    task.abort();
    Ok((row.get(0), row.get(1)))
}

#[tokio::test]
async fn connection_exhaustion_finds_the_refusal_point_of_postgresql() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("exp-conns").await?;
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    let database: tokio_postgres::Config = cluster.var("DATABASE_URL")?.parse()?;
    let port = database.get_ports().first().copied().context("port")?;
    let user = database.get_user().context("user")?.to_owned();
    let password = String::from_utf8(database.get_password().context("password")?.to_vec())?;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "pg" },
        "stringData": { "username": user, "password": password, "database": "checkout" }
    }))?;
    Api::<Secret>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await?;
    let (baseline, _) = pg_connections(&cluster).await?;
    let allow = format!("127.0.0.1/32:{port}");
    let operator =
        Operator::start_in_allowing(&cluster, &ns.name, &["--evaluation-interval", "2s"], &allow)?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let started = now_secs();
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "exhaust-pg",
                "checkout",
                json!({
                    "hypothesis": { "description": "the checkout service survives the database refusing new sessions", "recoversWithin": null },
                    "budgetPolicy": { "abortBurnRate": 1000, "maxBudgetSpend": 100 },
                    "action": { "podKill": null, "connectionExhaustion": {
                        "target": { "host": "127.0.0.1", "port": port },
                        "protocol": "Postgres", "connections": 40, "rampStep": 4, "rampInterval": "200ms",
                        "holdFor": "10s", "credentialsSecret": { "name": "pg" }
                    }},
                    "duration": "60s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}\n{}",
        status.phase,
        status.reason,
        operator.log()
    );
    let obs = status.observations.clone().context("observations")?;
    let at = obs
        .connections_at_first_refusal
        .context("no refusal recorded")?;
    let max = i32::try_from(cluster.var("POSTGRES_MAX_CONNECTIONS")?.parse::<i64>()?)?;
    ensure!(
        at > 0 && at < max,
        "refusal at {at} with max_connections {max}"
    );
    let message = obs.refusal_message.clone().unwrap_or_default();
    ensure!(
        message.contains("too many clients") || message.contains("connection slots are reserved"),
        "{message}"
    );
    println!("connectionExhaustion: first refusal with {at} held: {message}");

    // The example service could not renew its sessions: its error rate rose.
    // Its pool loses one expired session a second, so on a loaded machine
    // the last ones go, and the errors begin, as the hold ends: a few
    // scrapes later, Prometheus has them.
    let prom = cluster.var("PROMETHEUS_URL")?;
    let peak = eventually(
        "checkout's error ratio to show the refused sessions",
        Duration::from_secs(20),
        Duration::from_secs(1),
        || async {
            let window = format!("{}s", (now_secs() - started).ceil() as i64 + 5);
            let q = format!(
                "max_over_time((({}) / ({}))[{window}:1s])",
                ERRORS.replace("$window", "15s"),
                TOTAL.replace("$window", "15s")
            );
            let peak = headroom_e2e::prom_query(prom, &q).await?.unwrap_or(0.0);
            Ok((peak > 0.05).then_some(peak))
        },
    )
    .await?;
    println!(
        "checkout peak 15s error ratio during the run: {peak:.3} (error budget {:.2})",
        1.0 - OBJECTIVE / 100.0
    );

    // Afterwards: every held connection released, the server back to its
    // baseline (the checkout pool reconnects).
    let (checkout_now, held) = eventually(
        "connections back to baseline",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let (c, h) = pg_connections(&cluster).await?;
            Ok((h == 0 && c == baseline).then_some((c, h)))
        },
    )
    .await?;
    ensure!(held == 0 && checkout_now == baseline);
    ensure!(
        status
            .restore
            .is_some_and(|r| r.done && r.connections_held == Some(0))
    );
    Ok(())
}

#[tokio::test]
async fn bad_targets_give_a_clear_message_and_inject_nothing() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    // The gate must open, so that each failure is the target's.
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    let closed = headroom_e2e::free_port()?;
    let cases = [
        (
            "tcp-closed",
            json!({ "connectionExhaustion": { "target": { "host": "127.0.0.1", "port": closed }, "connections": 5, "holdFor": "5s" } }),
            "TargetUnreachable",
            format!("127.0.0.1:{closed} does not accept connections"),
        ),
        (
            "no-secret",
            json!({ "connectionExhaustion": { "target": { "host": "127.0.0.1", "port": 5432 }, "protocol": "Postgres", "connections": 5, "holdFor": "5s", "credentialsSecret": { "name": "missing" } } }),
            "InvalidTarget",
            "spec.action.connectionExhaustion.credentialsSecret.name: Secret".to_owned(),
        ),
        (
            "no-deployment",
            json!({ "scaleDown": { "target": { "kind": "Deployment", "name": "nope" }, "scaleUpTo": 4, "scaleDownTo": 2, "expectOrder": "NewestFirst" } }),
            "WorkloadNotFound",
            "spec.action.scaleDown.target: Deployment".to_owned(),
        ),
    ];
    // The host targets are on the allow-list, so each failure is the target's.
    let allow = format!("127.0.0.1/32:{closed},127.0.0.1/32:5432");
    for (name, action, reason, text) in cases {
        let ns = cluster.namespace(&format!("exp-bad-{name}")).await?;
        let operator = Operator::start_in_allowing(
            &cluster,
            &ns.name,
            &["--evaluation-interval", "2s"],
            &allow,
        )?;
        // A healthy SLO so the gate opens and the failure is the target's.
        Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
            .create(&PostParams::default(), &slo("checkout", ERRORS)?)
            .await?;
        let mut action = action;
        if let Some(map) = action.as_object_mut() {
            map.insert("podKill".into(), Value::Null);
        }
        let exp = experiment(
            "bad-target",
            "checkout",
            json!({
                "hypothesis": { "description": "h", "recoversWithin": null },
                "budgetPolicy": { "minBudgetRemaining": 0, "maxBurnRateToStart": 1000 },
                "action": action,
                "blastRadius": null
            }),
        )?;
        Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
            .create(&PostParams::default(), &exp)
            .await?;
        let got = failed_reason(&cluster, &ns.name, &operator)
            .await
            .with_context(|| format!("case {name}"))?;
        ensure!(
            got.starts_with(reason) && got.contains(&text),
            "case {name}: {got}"
        );
        let held = pg_connections(&cluster).await?.1;
        ensure!(held == 0, "case {name}: {held} connections held");
    }
    Ok(())
}

/// One scaleDown of a Deployment spread evenly over the two zones of the
/// kwok nodes (3 pods per zone at 6 replicas), down to `down_to`, with
/// `expectZoneSpread`; returns the zone-spread expectation.
async fn zone_spread_run(
    cluster: &Cluster,
    down_to: i32,
) -> Result<headroom::resources::run::ExpectationResult> {
    let ns = cluster.namespace("zone-spread").await?;
    Api::<Deployment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "spread" },
                "spec": {
                    "replicas": 2,
                    "selector": { "matchLabels": { "app": "spread" } },
                    "template": {
                        "metadata": { "labels": { "app": "spread" } },
                        "spec": {
                            "nodeSelector": { "type": "kwok" },
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{ "name": "spread", "image": "headroom.local/spread:test" }],
                            "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }],
                            "topologySpreadConstraints": [{
                                "maxSkew": 1,
                                "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": "DoNotSchedule",
                                "labelSelector": { "matchLabels": { "app": "spread" } }
                            }]
                        }
                    }
                }
            }))?,
        )
        .await?;
    let operator = Operator::start_in(cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "zones",
                "checkout",
                json!({
                    "hypothesis": { "description": "no zone loses all of its replicas on scale-down", "recoversWithin": null },
                    "action": { "podKill": null, "scaleDown": {
                        "target": { "kind": "Deployment", "name": "spread" },
                        "scaleUpTo": 6, "scaleDownTo": down_to, "expectOrder": "MostCrowdedNodeFirst",
                        "expectZoneSpread": true
                    }},
                    "duration": "60s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
    let run = final_run(cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}\n{:?}",
        status.phase,
        status.reason,
        status.timeline
    );
    // The verdict reaches /metrics, where HeadroomHypothesisRefuted reads it.
    let verdict = format!("{:?}", status.verdict.context("no verdict")?);
    let series = format!(
        "headroom_experiment_last_verdict{{namespace=\"{}\",experiment=\"zones\",verdict=\"{verdict}\"}} 1",
        ns.name
    );
    eventually(
        "the last verdict on /metrics",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let text = reqwest::get(&operator.metrics_url).await?.text().await?;
            Ok(text.lines().any(|l| l == series).then_some(()))
        },
    )
    .await
    .with_context(|| format!("{series} not exported"))?;
    let obs = status.observations.context("observations")?;
    let zones: Vec<String> = obs
        .removed_pods
        .iter()
        .chain(&obs.surviving_pods)
        .map(|p| p.zone.clone().unwrap_or_default())
        .collect();
    ensure!(
        zones.iter().filter(|z| *z == "zone-a").count() == 3
            && zones.iter().filter(|z| *z == "zone-b").count() == 3,
        "the 6 pods were not 3 per zone: {zones:?}"
    );
    status
        .expectations
        .into_iter()
        .find(|e| e.name == "expectZoneSpread")
        .context("no expectZoneSpread result")
}

#[tokio::test]
async fn scale_down_zone_spread_is_refuted_naming_the_zone_it_emptied_and_confirmed_when_each_keeps_one()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    // 6 → 1: one zone is left with nothing, whichever the controller picks.
    let emptied = zone_spread_run(&cluster, 1).await?;
    println!("6 → 1: {emptied:?}");
    ensure!(emptied.result == Verdict::Refuted, "{emptied:?}");
    // (zone_spread_run checked that the run's verdict is on /metrics as
    // headroom_experiment_last_verdict, which the refuted alert reads.)
    let message = emptied.message.clone().unwrap_or_default();
    let measured = emptied.measured.clone().unwrap_or_default();
    ensure!(
        (message.contains("zone zone-a") && measured.contains("zone-a 3→0"))
            || (message.contains("zone zone-b") && measured.contains("zone-b 3→0")),
        "the refutation does not name the emptied zone: {emptied:?}"
    );
    // 6 → 4: two removals cannot empty a zone of three.
    let kept = zone_spread_run(&cluster, 4).await?;
    println!("6 → 4: {kept:?}");
    ensure!(kept.result == Verdict::Confirmed, "{kept:?}");
    Ok(())
}
