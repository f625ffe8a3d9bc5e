//! The local control plane is real: the ReplicaSet controller schedules and
//! removes pods on kwok nodes, Prometheus scrapes the example service, and
//! PostgreSQL enforces its connection limit.

use std::time::Duration;

use anyhow::{Context, Result};
use headroom_e2e::{Cluster, eventually, prom_query};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn ready_pods(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

async fn scale(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
    )
    .await
    .with_context(|| format!("scaling {name} to {replicas}"))?;
    Ok(())
}

#[tokio::test]
async fn replicaset_controller_schedules_and_removes_pods_on_kwok_nodes() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("cluster-rs").await?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns.name);
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "containers": [{ "name": "web", "image": "headroom.local/web:test" }],
                    "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }]
                }
            }
        }
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let lp = ListParams::default().labels("app=web");

    let running = eventually(
        "3 Ready pods",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let list = pods.list(&lp).await?.items;
            Ok((ready_pods(&list) == 3).then_some(list))
        },
    )
    .await?;
    for pod in &running {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            !node.is_empty(),
            "pod {:?} was not scheduled",
            pod.metadata.name
        );
    }

    let before: Vec<String> = running
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    scale(&deployments, "web", 1).await?;
    let after = eventually(
        "scale-down to 1 pod",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let list = pods.list(&lp).await?.items;
            let live: Vec<Pod> = list
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            Ok((live.len() == 1).then_some(live))
        },
    )
    .await?;
    let survivor = after[0].metadata.uid.clone().unwrap_or_default();
    assert!(
        before.contains(&survivor),
        "the surviving pod should be one of the original three, not a new one"
    );
    Ok(())
}

#[tokio::test]
async fn prometheus_scrapes_the_example_service_and_its_errors_follow_ready_pods() -> Result<()> {
    let _checkout = headroom_e2e::CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    let prom = cluster.var("PROMETHEUS_URL")?.to_owned();
    let up = eventually(
        "Prometheus to scrape checkout",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            let prom = prom.clone();
            async move { prom_query(&prom, r#"up{job="checkout"}"#).await }
        },
    )
    .await?;
    assert_eq!(up, 1.0, "checkout target is down in Prometheus");

    // Fewer Ready pods means less capacity and more 503s; the ratio is read
    // back from Prometheus, as the operator will read it.
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "checkout");
    let original = deployments
        .get("checkout")
        .await?
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(3);
    let ratio = r#"sum(rate(http_requests_total{job="checkout",code=~"5.."}[10s])) / sum(rate(http_requests_total{job="checkout"}[10s]))"#;

    let result = async {
        scale(&deployments, "checkout", 1).await?;
        let high = eventually(
            "error ratio to rise with 1 Ready pod",
            Duration::from_secs(90),
            Duration::from_secs(1),
            || {
                let prom = prom.clone();
                async move { Ok(prom_query(&prom, ratio).await?.filter(|r| *r > 0.2)) }
            },
        )
        .await?;
        scale(&deployments, "checkout", original).await?;
        let low = eventually(
            "error ratio to fall back with all pods Ready",
            Duration::from_secs(90),
            Duration::from_secs(1),
            || {
                let prom = prom.clone();
                async move { Ok(prom_query(&prom, ratio).await?.filter(|r| *r < 0.05)) }
            },
        )
        .await?;
        anyhow::Ok((high, low))
    }
    .await;
    scale(&deployments, "checkout", original).await?;
    let (high, low) = result?;
    assert!(
        high > low,
        "error ratio with 1 pod ({high}) should exceed ratio with {original} ({low})"
    );
    Ok(())
}

#[tokio::test]
async fn postgres_refuses_connections_past_max_connections() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let url = cluster.var("DATABASE_URL")?.to_owned();
    let max: usize = cluster.var("POSTGRES_MAX_CONNECTIONS")?.parse()?;
    let mut held = Vec::new();
    let mut refusal = None;
    for _ in 0..max + 5 {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                let task = tokio::spawn(conn);
                held.push((client, task));
            }
            Err(err) => {
                refusal = Some(err);
                break;
            }
        }
    }
    let err = refusal.with_context(|| {
        format!(
            "opened {} connections without a refusal (max_connections = {max})",
            held.len()
        )
    })?;
    let code = err.as_db_error().map(|e| e.code().code().to_owned());
    assert_eq!(
        code.as_deref(),
        Some("53300"),
        "expected too_many_connections, got {err}"
    );
    assert!(
        held.len() < max,
        "held {} connections, max_connections is {max}",
        held.len()
    );
    drop(held);
    Ok(())
}
