//! What an experiment may make the operator touch: every namespace an
//! action reaches is opted in and not the operator's own.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{Cluster, Operator, eventually};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::experiment::{ERRORS, experiment, runs, slo};

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
