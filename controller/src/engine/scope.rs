//! What an action may touch. Every namespace it reaches (pods, workloads,
//! Services) must be opted in and never the operator's own; an action's
//! own admission check (e.g. a `host` target against the operator's
//! `--connection-target-allow`) runs beside it. Anyone who may create a
//! ChaosExperiment would otherwise make the operator reach anything it can.

use kube::ResourceExt;
use kube::api::Api;

use super::actions::{self, Touched};
use crate::context::Context;
use crate::reasons::{Refusal, RefuseReason};
use crate::resources::CHAOS_ENABLED_LABEL;
use crate::resources::experiment::ChaosExperiment;

/// Every namespace the experiment's action touches, each once. A `host`
/// target touches no namespace of the cluster; the experiment's own is
/// listed then, as for every action that defaults to it.
pub fn touched_namespaces(exp: &ChaosExperiment) -> Vec<Touched> {
    let own = exp.namespace().unwrap_or_default();
    let mut out = actions::spec_of(&exp.spec.action).touched(&own);
    out.extend(super::checks::touched(&exp.spec));
    if out.is_empty() {
        out.push(Touched::own(&own));
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|t| seen.insert(t.namespace.clone()));
    out
}

/// Refuse the experiment unless every namespace it touches is opted in and
/// none is the operator's own. The refusal's message names the field.
pub async fn check_namespaces(ctx: &Context, exp: &ChaosExperiment) -> Result<(), Refusal> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    for Touched { field, namespace } in touched_namespaces(exp) {
        if namespace == ctx.operator_namespace {
            return Err(Refusal::new(
                RefuseReason::NamespaceNotAllowed,
                format!(
                    "{field}: the action targets namespace {namespace}, the operator's own; Headroom never injects there"
                ),
            ));
        }
        match api.get_opt(&namespace).await {
            Ok(Some(n))
                if n.labels().get(CHAOS_ENABLED_LABEL).map(String::as_str) == Some("enabled") => {}
            Ok(Some(_)) => {
                return Err(Refusal::new(
                    RefuseReason::NamespaceNotOptedIn,
                    format!(
                        "{field}: namespace {namespace} is not opted in to experiments: run `kubectl label namespace {namespace} {CHAOS_ENABLED_LABEL}=enabled` or point {field} at an opted-in namespace"
                    ),
                ));
            }
            Ok(None) => {
                return Err(Refusal::new(
                    RefuseReason::NamespaceNotFound,
                    format!("{field}: namespace {namespace} does not exist"),
                ));
            }
            Err(e) => {
                return Err(Refusal::new(
                    RefuseReason::KubernetesApiError,
                    format!("reading namespace {namespace} ({field}): {e}"),
                ));
            }
        }
    }
    Ok(())
}

/// Everything the operator checks about what an experiment touches before
/// it is valid: the namespaces, then the action's and the checks' own
/// admission checks.
pub async fn check(ctx: &Context, exp: &ChaosExperiment) -> Result<(), Refusal> {
    check_namespaces(ctx, exp).await?;
    actions::spec_of(&exp.spec.action)
        .admit(ctx, &exp.namespace().unwrap_or_default())
        .await?;
    super::checks::admit(ctx, &exp.spec).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exp(action: serde_json::Value) -> ChaosExperiment {
        serde_json::from_value(json!({
            "apiVersion": "headroom.dev/v1alpha1", "kind": "ChaosExperiment",
            "metadata": { "name": "e", "namespace": "shop" },
            "spec": {
                "hypothesis": { "description": "h" }, "slos": ["s"],
                "action": action, "duration": "1m"
            }
        }))
        .expect("experiment")
    }

    #[test]
    fn every_namespace_an_action_touches_is_listed_with_its_field() {
        let t = |field: &'static str, ns: &str| Touched {
            field,
            namespace: ns.to_owned(),
        };
        let cases = [
            (
                json!({ "podKill": { "selector": { "matchLabels": { "a": "b" } }, "count": 1 } }),
                vec![t("metadata.namespace", "shop")],
            ),
            (
                json!({ "podKill": { "namespace": "web", "selector": { "matchLabels": { "a": "b" } }, "count": 1 } }),
                vec![t("spec.action.podKill.namespace", "web")],
            ),
            (
                json!({ "scaleDown": { "target": { "kind": "Deployment", "name": "w", "namespace": "web" }, "scaleUpTo": 4, "scaleDownTo": 2, "expectOrder": "NewestFirst" } }),
                vec![t("spec.action.scaleDown.target.namespace", "web")],
            ),
            (
                json!({ "connectionExhaustion": { "target": { "service": "pg", "namespace": "kube-system", "port": 5432 }, "connections": 5, "holdFor": "5s" } }),
                vec![t(
                    "spec.action.connectionExhaustion.target.namespace",
                    "kube-system",
                )],
            ),
            (
                json!({ "connectionExhaustion": { "target": { "service": "pg", "port": 5432 }, "connections": 5, "holdFor": "5s" } }),
                vec![t("metadata.namespace", "shop")],
            ),
            (
                json!({ "connectionExhaustion": { "target": { "host": "db", "port": 5432 }, "connections": 5, "holdFor": "5s" } }),
                vec![t("metadata.namespace", "shop")],
            ),
            (
                json!({ "connectionExhaustion": { "mode": "ScaleClients", "clients": { "kind": "Deployment", "name": "c", "namespace": "load" }, "connections": 5, "holdFor": "5s" } }),
                vec![t(
                    "spec.action.connectionExhaustion.clients.namespace",
                    "load",
                )],
            ),
        ];
        for (action, want) in cases {
            assert_eq!(touched_namespaces(&exp(action.clone())), want, "{action}");
        }
    }
}
