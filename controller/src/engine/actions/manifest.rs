//! `manifest`: create the spec's objects at injection and delete them at
//! restore (also after an abort, a crash or a leader change), so faults of
//! other tools (a NetworkPolicy partition, Chaos Mesh, Litmus) run only
//! while the budget allows. Before the gate opens every kind is resolved by
//! discovery (namespaced kinds only) and a SelfSubjectAccessReview asks
//! whether the operator may create and delete it there: the refusal names
//! the kind, the namespace and the missing verb. Each object created
//! carries the annotation `headroom.dev/created-by: <namespace>/<run>`;
//! the restore deletes an object only if it still carries this run's mark.

use std::time::Duration;

use async_trait::async_trait;
use headroom_experiments::manifest::{ManifestSpec, ObjectRef, object_refs, split_api_version};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams, Preconditions, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use tokio::time::Instant;

use super::{ActionSpec, LiveAction, Touched};
use crate::context::Context;
use crate::engine::record::Record;
use crate::engine::support::{RETRY_FOR, key, retry};
use crate::reasons::{Abort, AbortReason, Refusal, RefuseReason, Step};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{CreatedObject, RestorePlan};

const FIELD: &str = "spec.action.manifest.objects";
/// The mark on each object a run created: `namespace/run`.
pub const CREATED_BY: &str = "headroom.dev/created-by";

fn refs(spec: &ManifestSpec) -> Result<Vec<ObjectRef>, Refusal> {
    object_refs(spec).map_err(|e| Refusal::new(RefuseReason::InvalidSpec, e))
}

/// An object resolved against the API server: its resource and namespace.
struct Resolved {
    index: usize,
    obj: ObjectRef,
    ns: String,
    resource: ApiResource,
}

/// Resolve every object's kind by discovery; namespaced kinds only.
async fn resolve(ctx: &Context, spec: &ManifestSpec, own: &str) -> Result<Vec<Resolved>, Refusal> {
    let mut out = Vec::new();
    for (index, obj) in refs(spec)?.into_iter().enumerate() {
        let (group, version) = obj.group_version();
        let gvk = GroupVersionKind::gvk(group, version, &obj.kind);
        let (resource, caps) = kube::discovery::pinned_kind(&ctx.client, &gvk)
            .await
            .map_err(|e| {
                Refusal::new(
                    RefuseReason::InvalidTarget,
                    format!(
                        "{FIELD}[{index}]: the API server does not serve {} {} ({e}); install its CRD first",
                        obj.api_version, obj.kind
                    ),
                )
            })?;
        if caps.scope != Scope::Namespaced {
            return Err(Refusal::new(
                RefuseReason::InvalidTarget,
                format!(
                    "{FIELD}[{index}]: {} is cluster-scoped; manifest creates only namespaced objects, in opted-in namespaces",
                    obj.kind
                ),
            ));
        }
        let ns = obj.namespace.clone().unwrap_or_else(|| own.to_owned());
        out.push(Resolved {
            index,
            obj,
            ns,
            resource,
        });
    }
    Ok(out)
}

/// Whether the operator may `verb` the resource in `ns`.
async fn may(ctx: &Context, r: &Resolved, verb: &str) -> Result<bool, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(r.resource.group.clone()),
                resource: Some(r.resource.plural.clone()),
                verb: Some(verb.to_owned()),
                namespace: Some(r.ns.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(ctx.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| format!("SelfSubjectAccessReview: {e}"))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The refusal for a verb the operator lacks, with the fix.
pub fn missing_verb(
    index: usize,
    kind: &str,
    plural: &str,
    group: &str,
    ns: &str,
    verb: &str,
) -> String {
    let resource = if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    };
    format!(
        "{FIELD}[{index}]: the operator may not {verb} {kind} ({resource}) in namespace {ns}: a Role there granting the operator's ServiceAccount create, get and delete on {resource} is needed (see README, Delegated faults)"
    )
}

#[async_trait]
impl ActionSpec for ManifestSpec {
    fn touched(&self, own: &str) -> Vec<Touched> {
        let mut out = vec![Touched::own(own)];
        if let Ok(refs) = object_refs(self) {
            out.extend(refs.into_iter().filter_map(|r| {
                Some(Touched {
                    field: "spec.action.manifest.objects[].metadata.namespace",
                    namespace: r.namespace?,
                })
            }));
        }
        out
    }

    fn validate(&self) -> Result<(), Refusal> {
        refs(self).map(|_| ())
    }

    fn target_key(&self, own: &str) -> String {
        let names: Vec<String> = object_refs(self)
            .unwrap_or_default()
            .iter()
            .map(|r| {
                format!(
                    "{}/{}/{}",
                    r.kind,
                    r.namespace.as_deref().unwrap_or(own),
                    r.name
                )
            })
            .collect();
        format!("manifest/{}", names.join(","))
    }

    async fn admit(&self, ctx: &Context, own: &str) -> Result<(), Refusal> {
        for r in resolve(ctx, self, own).await? {
            for verb in ["create", "get", "delete"] {
                let allowed = may(ctx, &r, verb)
                    .await
                    .map_err(|e| Refusal::new(RefuseReason::KubernetesApiError, e))?;
                if !allowed {
                    return Err(Refusal::new(
                        RefuseReason::NotPermitted,
                        missing_verb(
                            r.index,
                            &r.obj.kind,
                            &r.resource.plural,
                            &r.resource.group,
                            &r.ns,
                            verb,
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn prepare(
        &self,
        ctx: &Context,
        exp: &ChaosExperiment,
    ) -> Result<Box<dyn LiveAction>, Refusal> {
        let own = exp.namespace().unwrap_or_default();
        let resolved = resolve(ctx, self, &own).await?;
        for r in &resolved {
            let api: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), &r.ns, &r.resource);
            let existing = api.get_opt(&r.obj.name).await.map_err(|e| {
                Refusal::new(
                    RefuseReason::KubernetesApiError,
                    format!("reading {} {}/{}: {e}", r.obj.kind, r.ns, r.obj.name),
                )
            })?;
            if existing.is_some() {
                return Err(Refusal::new(
                    RefuseReason::InvalidTarget,
                    format!(
                        "{FIELD}[{}]: {} {}/{} already exists; the restore deletes only what the run created, so the run would leave it or take it away",
                        r.index, r.obj.kind, r.ns, r.obj.name
                    ),
                ));
            }
        }
        Ok(Box::new(Manifest {
            spec: self.clone(),
            run_ns: own,
            owner: String::new(),
            resolved,
        }))
    }

    async fn recover(&self, ctx: &Context, run_ns: &str, rec: &mut Record) -> Result<(), String> {
        let created = rec
            .status
            .restore
            .as_ref()
            .map(|r| r.created_objects.clone())
            .unwrap_or_default();
        let owner = key(run_ns, &rec.name);
        let msg = delete_all(ctx, &created, &owner).await?;
        rec.step(Step::ObjectsDeleted, msg);
        Ok(())
    }
}

/// Delete every object of a plan that still carries `owner`'s mark, and
/// wait (bounded) until each is gone: a Chaos Mesh or Litmus object ends
/// its fault in its finalizer.
async fn delete_all(
    ctx: &Context,
    objects: &[CreatedObject],
    owner: &str,
) -> Result<String, String> {
    let (mut done, mut left) = (Vec::new(), Vec::new());
    for o in objects {
        let (g, v) = split_api_version(&o.api_version);
        let gvk = GroupVersionKind::gvk(g, v, &o.kind);
        let what = format!("{} {}/{}", o.kind, o.namespace, o.name);
        let outcome = retry(&format!("deleting {what}"), RETRY_FOR, || async {
            let (ar, _) = kube::discovery::pinned_kind(&ctx.client, &gvk)
                .await
                .map_err(|e| e.to_string())?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), &o.namespace, &ar);
            let Some(obj) = api.get_opt(&o.name).await.map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            if obj.annotations().get(CREATED_BY).map(String::as_str) != Some(owner) {
                return Ok(Some(false));
            }
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                preconditions: Some(Preconditions {
                    uid: obj.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&o.name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.to_string()),
            }
            // Gone, or still finishing (finalizers) after 30s.
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                match api.get_opt(&o.name).await {
                    Ok(Some(now)) if now.metadata.uid == obj.metadata.uid => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Ok(_) => return Ok(Some(true)),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(Some(true))
        })
        .await;
        match outcome {
            Ok(Some(true)) => done.push(what),
            Ok(None) => left.push(format!("{what} (already gone)")),
            Ok(Some(false)) => left.push(format!("{what} (not this run's: left as it is)")),
            Err(e) => return Err(format!("deleting {what}: {e}")),
        }
    }
    let mut msg = if done.is_empty() {
        "deleted no object".to_owned()
    } else {
        format!("deleted {}", done.join(", "))
    };
    if !left.is_empty() {
        msg.push_str(&format!("; {}", left.join(", ")));
    }
    Ok(msg)
}

/// A manifest prepared for one run.
struct Manifest {
    spec: ManifestSpec,
    run_ns: String,
    /// `namespace/run`; set at injection.
    owner: String,
    resolved: Vec<Resolved>,
}

impl Manifest {
    fn created(&self) -> Vec<CreatedObject> {
        self.resolved
            .iter()
            .map(|r| CreatedObject {
                api_version: r.obj.api_version.clone(),
                kind: r.obj.kind.clone(),
                namespace: r.ns.clone(),
                name: r.obj.name.clone(),
            })
            .collect()
    }
}

#[async_trait]
impl LiveAction for Manifest {
    fn describe(&self) -> String {
        format!(
            "create {}; restore deletes them",
            self.resolved
                .iter()
                .map(|r| format!("{} {}/{}", r.obj.kind, r.ns, r.obj.name))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn restore_plan(&self) -> RestorePlan {
        RestorePlan {
            created_objects: self.created(),
            ..Default::default()
        }
    }

    async fn inject(&mut self, ctx: &Context, rec: &mut Record) -> Result<(), Abort> {
        self.owner = key(&self.run_ns, &rec.name);
        for r in &self.resolved {
            let mut value = self.spec.objects.get(r.index).cloned().unwrap_or_default();
            value["metadata"]["namespace"] = serde_json::Value::String(r.ns.clone());
            value["metadata"]["annotations"][CREATED_BY] =
                serde_json::Value::String(self.owner.clone());
            value["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "headroom".into();
            let obj: DynamicObject = serde_json::from_value(value).map_err(|e| {
                Abort::new(
                    AbortReason::InjectionRefused,
                    format!("{FIELD}[{}]: {e}", r.index),
                )
            })?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), &r.ns, &r.resource);
            api.create(&PostParams::default(), &obj)
                .await
                .map_err(|e| {
                    Abort::new(
                        AbortReason::InjectionRefused,
                        format!("creating {} {}/{}: {e}", r.obj.kind, r.ns, r.obj.name),
                    )
                })?;
            rec.step(
                Step::ObjectCreated,
                format!("created {} {}/{}", r.obj.kind, r.ns, r.obj.name),
            );
        }
        rec.save_or_log().await;
        Ok(())
    }

    async fn progress(
        &mut self,
        ctx: &Context,
        rec: &mut Record,
        deadline: Instant,
    ) -> Result<(), Abort> {
        // The fault is the objects' presence: held until the deadline. One
        // removed by someone else meanwhile is recorded, as evidence that
        // the fault did not last.
        let mut missing: Vec<String> = Vec::new();
        while Instant::now() + Duration::from_secs(2) < deadline {
            tokio::time::sleep(Duration::from_secs(2)).await;
            for r in &self.resolved {
                let what = format!("{} {}/{}", r.obj.kind, r.ns, r.obj.name);
                let api: Api<DynamicObject> =
                    Api::namespaced_with(ctx.client.clone(), &r.ns, &r.resource);
                if let Ok(None) = api.get_opt(&r.obj.name).await
                    && !missing.contains(&what)
                {
                    rec.step(
                        Step::ObjectGone,
                        format!("{what} was deleted before the restore"),
                    );
                    rec.save_or_log().await;
                    missing.push(what);
                }
            }
        }
        tokio::time::sleep_until(deadline).await;
        Ok(())
    }

    async fn restore(&mut self, ctx: &Context, _rec: &mut Record) -> Result<String, String> {
        if self.owner.is_empty() {
            return Ok("nothing was created".to_owned());
        }
        delete_all(ctx, &self.created(), &self.owner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_verb_names_the_kind_the_namespace_and_the_fix() {
        assert_eq!(
            missing_verb(
                1,
                "NetworkPolicy",
                "networkpolicies",
                "networking.k8s.io",
                "shop",
                "delete"
            ),
            "spec.action.manifest.objects[1]: the operator may not delete NetworkPolicy (networkpolicies.networking.k8s.io) in namespace shop: a Role there granting the operator's ServiceAccount create, get and delete on networkpolicies.networking.k8s.io is needed (see README, Delegated faults)"
        );
        assert!(
            missing_verb(0, "ConfigMap", "configmaps", "", "shop", "create")
                .contains("(configmaps)")
        );
    }
}
