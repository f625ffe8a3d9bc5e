//! What an experiment may make the operator touch: every namespace an
//! action reaches is opted in and not the operator's own, and `host`
//! targets only where `--connection-target-allow` says.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::experiment::{ERRORS, calm, experiment, final_run, runs, set_error_ratio, slo};

/// The experiment's `Valid` condition once it says `False`.
async fn refused(
    exps: &Api<ChaosExperiment>,
    name: &str,
    operator: &Operator,
) -> Result<Condition> {
    eventually(
        &format!("experiment {name} refused (Valid=False)"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let e = exps.get(name).await?;
            Ok(e.status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Valid"))
                .filter(|c| c.status == "False"))
        },
    )
    .await
    .with_context(|| operator.log())
}

/// No run of the namespace went past the gate.
async fn nothing_injected(cluster: &Cluster, ns: &str) -> Result<()> {
    for r in runs(cluster, ns).await? {
        let st = r.status.unwrap_or_default();
        ensure!(
            matches!(st.phase, RunPhase::Gated | RunPhase::Failed)
                && st.timeline.iter().all(|t| t.step != "ConnectionsHeld"),
            "run {} reached {:?}: {:?}",
            r.spec.experiment,
            st.phase,
            st.timeline
        );
    }
    Ok(())
}

/// A Service with no selector, so it exists without reaching anything.
fn service(name: &str) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "ports": [{ "port": 5432 }] }
    }))?)
}

/// A namespace that did not opt in, deleted at the end of the test.
struct ClosedNamespace(Api<Namespace>, String);

impl ClosedNamespace {
    async fn create(cluster: &Cluster, name: String) -> Result<Self> {
        let api = Api::<Namespace>::all(cluster.client.clone());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({ "metadata": { "name": name, "labels": { "headroom.dev/test": "e2e" } } }),
            )?,
        )
        .await?;
        Ok(Self(api, name))
    }
}

impl Drop for ClosedNamespace {
    fn drop(&mut self) {
        let (api, name) = (self.0.clone(), self.1.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { api.delete(&name, &DeleteParams::default()).await });
        }
    }
}

#[tokio::test]
async fn connection_exhaustion_refuses_a_service_in_a_namespace_that_did_not_opt_in() -> Result<()>
{
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("scope").await?;
    let home = cluster.namespace("scope-home").await?;
    let closed = ClosedNamespace::create(&cluster, format!("{}-closed", ns.name)).await?;
    for target_ns in [&closed.1, &home.name] {
        Api::<Service>::namespaced(cluster.client.clone(), target_ns)
            .create(&PostParams::default(), &service("pg")?)
            .await?;
    }
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
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
    // (experiment, the Service's namespace, reason, what the message must say)
    let cases = [
        (
            "not-opted-in",
            closed.1.clone(),
            "NamespaceNotOptedIn",
            format!(
                "kubectl label namespace {} headroom.dev/chaos=enabled",
                closed.1
            ),
        ),
        (
            "operator-namespace",
            home.name.clone(),
            "NamespaceNotAllowed",
            "the operator's own".to_owned(),
        ),
    ];
    for (name, target_ns, _, _) in &cases {
        exps.create(
            &PostParams::default(),
            &experiment(
                name,
                "checkout",
                json!({
                    "hypothesis": { "recoversWithin": null },
                    "budgetPolicy": { "minBudgetRemaining": 0, "maxBurnRateToStart": 1000 },
                    "action": { "podKill": null, "connectionExhaustion": {
                        "target": { "service": "pg", "namespace": target_ns, "port": 5432 },
                        "connections": 5, "holdFor": "5s"
                    }},
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
    }
    for (name, _, reason, text) in &cases {
        let c = refused(&exps, name, &operator).await?;
        ensure!(
            c.reason == *reason
                && c.message
                    .contains("spec.action.connectionExhaustion.target.namespace")
                && c.message.contains(text.as_str()),
            "case {name}: {c:?}"
        );
        println!("{name}: {} {}", c.reason, c.message);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    nothing_injected(&cluster, &ns.name).await
}

/// A local listener that counts the connections it accepts.
async fn counting_listener() -> Result<(u16, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    Ok((port, accepted))
}

#[tokio::test]
async fn host_targets_are_refused_unless_the_allow_list_covers_their_address() -> Result<()> {
    // The allowed case runs, guarded by the shared service's SLO.
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    set_error_ratio(&cluster, 0.0).await?;
    calm(&cluster).await?;
    let (port, accepted) = counting_listener().await?;
    let wrong_port = port.wrapping_add(1).max(1);
    // (case, --connection-target-allow, target host, refused with this text)
    let cases: [(&str, Option<String>, &str, Option<String>); 4] = [
        (
            "no-allow-list",
            None,
            "127.0.0.1",
            Some("--connection-target-allow, which is empty".to_owned()),
        ),
        (
            "other-network",
            Some(format!("10.0.0.0/8:{port},192.168.0.0/16:{port}")),
            "127.0.0.1",
            Some(format!("127.0.0.1:{port}")),
        ),
        (
            "other-port",
            Some(format!("127.0.0.0/8:{wrong_port}")),
            "127.0.0.1",
            Some(format!("127.0.0.1:{port}")),
        ),
        (
            "host-entry",
            Some(format!("localhost:{port}")),
            "localhost",
            None,
        ),
    ];
    for (case, allow, host, refusal) in cases {
        let ns = cluster.namespace(&format!("allow-{case}")).await?;
        let mut args = vec!["--evaluation-interval", "2s"];
        if let Some(a) = &allow {
            args.extend(["--connection-target-allow", a.as_str()]);
        }
        let operator = Operator::start_in(&cluster, &ns.name, &args)?;
        Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
            .create(&PostParams::default(), &slo("checkout", ERRORS)?)
            .await?;
        let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
        let before = accepted.load(Ordering::SeqCst);
        exps.create(
            &PostParams::default(),
            &experiment(
                "hold",
                "checkout",
                json!({
                    "hypothesis": { "recoversWithin": null },
                    "budgetPolicy": { "minBudgetRemaining": 0, "maxBurnRateToStart": 1000, "abortBurnRate": 1000, "maxBudgetSpend": 100 },
                    "action": { "podKill": null, "connectionExhaustion": {
                        "target": { "host": host, "port": port },
                        "connections": 3, "rampStep": 3, "holdFor": "2s"
                    }},
                    "duration": "20s",
                    "blastRadius": null
                }),
            )?,
        )
        .await?;
        match refusal {
            Some(text) => {
                let c = refused(&exps, "hold", &operator).await?;
                ensure!(
                    c.reason == "TargetNotAllowed"
                        && c.message
                            .contains("spec.action.connectionExhaustion.target.host")
                        && c.message.contains(&text),
                    "case {case}: {c:?}"
                );
                println!("{case}: {}", c.message);
                tokio::time::sleep(Duration::from_secs(3)).await;
                nothing_injected(&cluster, &ns.name).await?;
                let n = accepted.load(Ordering::SeqCst) - before;
                ensure!(n == 0, "case {case}: the target accepted {n} connections");
            }
            None => {
                let run = final_run(&cluster, &ns.name, Duration::from_secs(60))
                    .await
                    .with_context(|| operator.log())?;
                let st = run.status.context("status")?;
                ensure!(
                    st.phase == RunPhase::Completed,
                    "case {case}: {:?} {:?}\n{}",
                    st.phase,
                    st.reason,
                    operator.log()
                );
                let n = accepted.load(Ordering::SeqCst) - before;
                // The probe and the three held.
                ensure!(n >= 3, "case {case}: the target accepted {n} connections");
                println!("{case}: allowed, {n} connections accepted");
            }
        }
    }
    Ok(())
}
