//! The real node `real-0` (tests/cluster/real-node.sh): kubelet, kube-proxy
//! and containerd with runc beside the kwok nodes. A pod there is a process
//! on this host: its readiness is a probe's answer, `ps` shows it, killing it
//! makes kubelet restart the container, and its Service's ClusterIP reaches
//! it through kube-proxy's iptables rules.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use headroom_e2e::{CHECKOUT, Cluster, eventually};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const NODE: &str = "real-0";
const TAINT: &str = "headroom.dev/real-node";
/// The test server's image, built and imported by real-node.sh.
const IMAGE: &str = "headroom.local/hello:1";
/// How long the server's /ready answers 503 after it starts.
const READY_AFTER_SECS: i64 = 3;

fn condition(pod: &Pod, type_: &str) -> Option<(String, k8s_openapi::jiff::Timestamp)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| Some((c.status.clone(), c.last_transition_time.as_ref()?.0)))
}

/// The container's id (without the `containerd://` prefix), its restart
/// count and when its current process started.
pub(crate) fn container(pod: &Pod) -> Option<(String, i32, k8s_openapi::jiff::Timestamp)> {
    let cs = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let started = cs.state.as_ref()?.running.as_ref()?.started_at.as_ref()?.0;
    let id = cs.container_id.as_ref()?.strip_prefix("containerd://")?;
    Some((id.to_owned(), cs.restart_count, started))
}

/// The host pid of the container `id`'s `/hello`: the process whose cgroup
/// path names the container and that runs it.
fn host_pid(id: &str) -> Option<u32> {
    host_pid_of(id, b"/hello")
}

/// The host pid of the process running `command` in container `id`.
pub(crate) fn host_pid_of(id: &str, command: &[u8]) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(command))
        })
}

/// What `ps` on the host says pid runs.
pub(crate) fn ps_comm(pid: u32) -> Result<String> {
    let out = std::process::Command::new("ps")
        .args(["-o", "comm=", "-p", &pid.to_string()])
        .output()
        .context("running ps")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn get(http: &reqwest::Client, url: &str) -> Result<String> {
    let resp = http.get(url).send().await?;
    ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
    Ok(resp.text().await?)
}

#[tokio::test]
async fn a_pod_on_the_real_node_is_a_process_and_its_cluster_ip_reaches_it() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let Some(node) = Api::<Node>::all(cluster.client.clone())
        .get_opt(NODE)
        .await?
    else {
        bail!(
            "the cluster has no node {NODE}: tests/cluster/up.sh starts it (tests/cluster/real-node.sh), unless HEADROOM_SKIP_REAL_NODE is set"
        );
    };
    let status = node.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ensure!(ready, "node {NODE} is not Ready: {:?}", status.conditions);
    let runtime = status
        .node_info
        .as_ref()
        .map(|i| i.container_runtime_version.clone())
        .unwrap_or_default();
    ensure!(
        runtime.starts_with("containerd://"),
        "node {NODE} runs {runtime:?}, not containerd"
    );
    // Only pods that tolerate the taint land there, and it is in no zone,
    // so the zone tests' kwok pods and outages never touch it.
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    ensure!(
        taints
            .iter()
            .any(|t| t.key == TAINT && t.effect == "NoSchedule"),
        "node {NODE} lacks the taint {TAINT}:NoSchedule: {taints:?}"
    );
    ensure!(
        !node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("topology.kubernetes.io/zone")),
        "node {NODE} has a zone label"
    );

    let ns = cluster.namespace("real-node").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "hello", "labels": { "app": "hello" } },
        "spec": {
            "nodeSelector": { "type": "real" },
            "tolerations": [{ "key": TAINT, "operator": "Exists", "effect": "NoSchedule" }],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "hello",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "env": [{ "name": "READY_AFTER", "value": format!("{READY_AFTER_SECS}s") }],
                "ports": [{ "containerPort": 8080 }],
                "readinessProbe": {
                    "httpGet": { "path": "/ready", "port": 8080 },
                    "periodSeconds": 1,
                    "failureThreshold": 1
                }
            }]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "hello" },
        "spec": {
            "selector": { "app": "hello" },
            "ports": [{ "port": 80, "targetPort": 8080 }]
        }
    }))?;
    let service = Api::<Service>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &service)
        .await?;

    let ready_pod = eventually(
        "the hello pod to be Ready on real-0",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let p = pods.get("hello").await?;
            Ok(matches!(condition(&p, "Ready"), Some((s, _)) if s == "True").then_some(p))
        },
    )
    .await?;
    let on = ready_pod.spec.as_ref().and_then(|s| s.node_name.clone());
    ensure!(on.as_deref() == Some(NODE), "the pod runs on {on:?}");
    let (id, restarts, started) = container(&ready_pod).context("no running container status")?;
    // Ready came from the probe: /ready answers 503 for READY_AFTER after
    // the process starts, so Ready turned True no sooner.
    let (_, ready_at) = condition(&ready_pod, "Ready").context("no Ready condition")?;
    let waited = ready_at.as_second() - started.as_second();
    ensure!(
        waited >= READY_AFTER_SECS - 1,
        "Ready {waited}s after the container started: the probe cannot have run"
    );

    // The process is on this host, and ps sees it.
    let pid = host_pid(&id).with_context(|| format!("no host process in container {id}"))?;
    let comm = ps_comm(pid)?;
    ensure!(comm == "hello", "ps -p {pid} says {comm:?}");

    // The pod's own address, on the node's bridge, answers from the host.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let pod_ip = ready_pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("no pod IP")?;
    ensure!(
        pod_ip.starts_with("10.244.0."),
        "pod IP {pod_ip} is not on the node's bridge"
    );
    let body = get(&http, &format!("http://{pod_ip}:8080/")).await?;
    ensure!(
        body.starts_with("hello from hello"),
        "pod answered {body:?}"
    );

    // And so does the Service's ClusterIP, through kube-proxy's rules.
    let cluster_ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .context("no ClusterIP")?;
    let via_service = eventually(
        "the ClusterIP to answer",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok(get(&http, &format!("http://{cluster_ip}/")).await.ok()) },
    )
    .await?;
    ensure!(
        via_service.starts_with("hello from hello"),
        "ClusterIP {cluster_ip} answered {via_service:?}"
    );

    // Killing the process is seen by kubelet: the container restarts, as a
    // new process.
    let out = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "kill {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restarted = eventually(
        "kubelet to restart the killed container",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = pods.get("hello").await?;
            Ok(container(&p)
                .filter(|(_, r, _)| *r > restarts)
                .map(|(id, _, _)| id))
        },
    )
    .await?;
    let new_pid = eventually(
        "the restarted container's process",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok(host_pid(&restarted)) },
    )
    .await?;
    ensure!(
        new_pid != pid,
        "the restarted container still has pid {pid}"
    );
    Ok(())
}

/// The example service as real pods (`checkout-real`, applied by
/// real-node.sh from checkout's release build): each Ready pod is its own
/// `/checkout` process on this host, reads its Deployment through the API
/// server with its ServiceAccount, and serves through the Service's ClusterIP.
#[tokio::test]
async fn checkout_runs_on_the_real_node_as_processes_behind_its_cluster_ip() -> Result<()> {
    const NS: &str = "checkout-real";
    let cluster = Cluster::connect().await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);
    let ready = eventually(
        "checkout-real's pods to be Ready",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=checkout"))
                .await?
                .items;
            let ready: Vec<Pod> = list
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| matches!(condition(p, "Ready"), Some((s, _)) if s == "True"))
                .collect();
            Ok((!ready.is_empty()).then_some(ready))
        },
    )
    .await
    .with_context(|| {
        format!("no Ready checkout pod in {NS}: tests/cluster/real-node.sh deploys it when target/release/checkout exists")
    })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for pod in &ready {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let on = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(on.as_deref() == Some(NODE), "{name} runs on {on:?}");
        let (id, _, _) = container(pod).with_context(|| format!("{name}: no running container"))?;
        let pid = host_pid_of(&id, b"/checkout")
            .with_context(|| format!("{name}: no /checkout process on the host"))?;
        let comm = ps_comm(pid)?;
        ensure!(comm == "checkout", "{name}: ps -p {pid} says {comm:?}");
        // Its own metrics: it read its Deployment's Ready pods from the API.
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .with_context(|| format!("{name}: no pod IP"))?;
        let metrics = get(&http, &format!("http://{ip}:8080/metrics")).await?;
        ensure!(
            metrics
                .lines()
                .any(|l| l.starts_with("checkout_ready_pods ") && l != "checkout_ready_pods 0"),
            "{name}: no Ready pods in its metrics"
        );
    }
    let service = Api::<Service>::namespaced(cluster.client.clone(), NS)
        .get("checkout")
        .await?;
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP")?;
    let body = get(&http, &format!("http://{cluster_ip}/healthz")).await?;
    ensure!(
        body.trim() == "ok",
        "ClusterIP {cluster_ip} answered {body:?}"
    );
    Ok(())
}

/// checkout-real's PostgreSQL sessions by pod: its pods connect as role
/// `checkout_real` (through the node's relay, so all from 127.0.0.1) with
/// their pod name as `application_name`.
pub(crate) async fn real_pod_sessions(cluster: &Cluster) -> Result<BTreeMap<String, i64>> {
    let url = cluster.var("DATABASE_ADMIN_URL")?;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting as the PostgreSQL admin")?;
    let task = tokio::spawn(conn);
    let rows = client
        .query(
            "select application_name, count(*) from pg_stat_activity \
             where backend_type = 'client backend' and usename = 'checkout_real' \
             group by application_name",
            &[],
        )
        .await;
    drop(client);
    task.abort();
    Ok(rows?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect())
}

/// Whether every pod in `pods` holds at least one session of its own.
pub(crate) fn each_holds_sessions(pods: &[Pod], sessions: &BTreeMap<String, i64>) -> bool {
    pods.iter().all(|p| {
        sessions
            .get(p.metadata.name.as_deref().unwrap_or_default())
            .is_some_and(|n| *n > 0)
    })
}

/// checkout-real's Ready pods that are not being deleted.
pub(crate) async fn ready_checkout_pods(pods: &Api<Pod>) -> Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels("app=checkout"))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| matches!(condition(p, "Ready"), Some((s, _)) if s == "True"))
        .collect())
}

/// The evidence issue 17 asks of a killed real pod: each checkout-real pod
/// holds its own PostgreSQL pool (`--pool-per-process`); deleting one with
/// grace 0 ends its process on this host and its sessions leave
/// `pg_stat_activity`, and the ReplicaSet's replacement, a new process,
/// opens sessions of its own.
#[tokio::test]
async fn a_killed_checkout_pod_on_the_real_node_takes_its_postgresql_sessions_with_it() -> Result<()>
{
    const NS: &str = "checkout-real";
    // No connectionExhaustion (which fills PostgreSQL) while this runs.
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);

    // Every Ready pod has sessions of its own, named by its pod name.
    let (before, sessions) = eventually(
        "each of checkout-real's Ready pods to hold PostgreSQL sessions",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let ready = ready_checkout_pods(&pods).await?;
            let sessions = real_pod_sessions(&cluster).await?;
            let all = !ready.is_empty() && each_holds_sessions(&ready, &sessions);
            Ok(all.then_some((ready, sessions)))
        },
    )
    .await
    .context("checkout-real's pods (tests/cluster/real-node.sh) with their PostgreSQL pools")?;
    let names: Vec<String> = before
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    println!("checkout-real before the kill: sessions by pod {sessions:?}");

    let victim = &before[0];
    let name = victim.metadata.name.clone().context("pod name")?;
    let (id, _, _) = container(victim).with_context(|| format!("{name}: no running container"))?;
    let pid = host_pid_of(&id, b"/checkout")
        .with_context(|| format!("{name}: no /checkout process on the host"))?;
    ensure!(
        ps_comm(pid)? == "checkout",
        "{name}: pid {pid} is not checkout"
    );

    let killed = Instant::now();
    pods.delete(&name, &DeleteParams::default().grace_period(0))
        .await?;

    // Its process leaves the host...
    eventually(
        "the killed pod's process to leave the host",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let alive = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(&b"/checkout"[..]));
            Ok((!alive).then_some(()))
        },
    )
    .await?;
    let process_gone = killed.elapsed();
    // ...and its sessions leave PostgreSQL.
    eventually(
        "the killed pod's sessions to leave pg_stat_activity",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let sessions = real_pod_sessions(&cluster).await?;
            Ok((!sessions.contains_key(&name)).then_some(()))
        },
    )
    .await?;
    let sessions_gone = killed.elapsed();

    // The ReplicaSet's replacement is a new process with sessions of its own.
    let (replacement, sessions) = eventually(
        "the replacement pod to be Ready with its own PostgreSQL sessions",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let ready = ready_checkout_pods(&pods).await?;
            let sessions = real_pod_sessions(&cluster).await?;
            Ok(ready
                .into_iter()
                .find(|p| {
                    p.metadata.name.as_ref().is_some_and(|n| {
                        !names.contains(n) && sessions.get(n).is_some_and(|c| *c > 0)
                    })
                })
                .map(|p| (p, sessions)))
        },
    )
    .await?;
    let replaced = killed.elapsed();
    let new_name = replacement.metadata.name.clone().unwrap_or_default();
    ensure!(
        !sessions.contains_key(&name),
        "{name}'s sessions came back: {sessions:?}"
    );
    let (new_id, _, _) =
        container(&replacement).with_context(|| format!("{new_name}: no running container"))?;
    let new_pid = host_pid_of(&new_id, b"/checkout")
        .with_context(|| format!("{new_name}: no /checkout process on the host"))?;
    ensure!(
        new_pid != pid,
        "the replacement runs as the killed pid {pid}"
    );
    println!(
        "checkout-real: killed {name} (pid {pid}); process gone after {:.2}s, its sessions gone from pg_stat_activity after {:.2}s; replacement {new_name} (pid {new_pid}) Ready with its own sessions after {:.2}s: {sessions:?}",
        process_gone.as_secs_f64(),
        sessions_gone.as_secs_f64(),
        replaced.as_secs_f64()
    );
    Ok(())
}
