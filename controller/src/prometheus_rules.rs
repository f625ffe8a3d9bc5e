//! `PrometheusRule` objects (the Prometheus Operator's `monitoring.coreos.com/v1`)
//! for clusters where that CRD is served: one object per SLO, holding the
//! same groups `headroom rules` prints, owned by the SLO so that deleting the
//! SLO deletes its rules.
//!
//! Without the CRD this writer stays idle; `--rules-dir` (rules_writer.rs)
//! serves a Prometheus that loads rule files instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams,
};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::context::{Context, MANAGER};
use crate::resources::ServiceLevelObjective;
use crate::rule_metadata::Defaults;
use crate::rules;

pub const GROUP: &str = "monitoring.coreos.com";
pub const VERSION: &str = "v1";
pub const KIND: &str = "PrometheusRule";

/// Label on every object this writer owns; also how it finds them again.
pub use crate::rule_metadata::MANAGED_BY_LABEL;
pub const MANAGED_BY: &str = "headroom";
/// Names the SLO an object belongs to, for `kubectl get -l`.
pub const SLO_LABEL: &str = "headroom.dev/slo";
/// Hash of the applied content: an unchanged SLO costs no write, also
/// after an operator restart.
pub const CONTENT_HASH_ANNOTATION: &str = "headroom.dev/content-hash";
/// Content hash of an object emptied because its SLO yields no rules.
const EMPTIED: &str = "emptied";

/// How often to ask the API server whether the CRD is (still) served: it
/// may be installed or removed while the operator runs.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(180);

/// The `PrometheusRule` resource, as the Prometheus Operator's CRD defines it.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, KIND),
        "prometheusrules",
    )
}

/// Name of the object holding one SLO's rules.
pub fn object_name(slo_name: &str) -> String {
    format!("headroom-{slo_name}")
}

/// The `PrometheusRule` for one SLO, or why there is none. The SLO must come
/// from the API server: the owner reference needs its uid.
pub fn build(
    slo: &ServiceLevelObjective,
    dashboard_url: &str,
    metadata: &Defaults,
) -> Result<DynamicObject, String> {
    let name = slo.metadata.name.as_deref().ok_or("SLO without a name")?;
    let namespace = slo
        .metadata
        .namespace
        .as_deref()
        .ok_or("SLO without a namespace")?;
    let owner = slo
        .controller_owner_ref(&())
        .ok_or("SLO without a uid (not read from the API server)")?;
    let (file, skipped) = rules::rule_file(std::slice::from_ref(slo), dashboard_url);
    if let Some((_, reason)) = skipped.into_iter().next() {
        return Err(reason);
    }
    let spec = serde_json::json!({ "groups": file.groups });
    let own = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (SLO_LABEL.to_owned(), name.to_owned()),
    ]);
    let per_slo = slo
        .spec
        .alerting
        .as_ref()
        .and_then(|a| a.prometheus_rule.as_ref());
    let (labels, mut annotations) =
        crate::rule_metadata::merge(&own, &BTreeMap::new(), metadata, per_slo)?;
    let owners = vec![owner];
    let hash = content_hash(&serde_json::json!({
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": owners,
        "spec": spec,
    }));
    annotations.insert(CONTENT_HASH_ANNOTATION.to_owned(), hash);
    let mut obj = DynamicObject::new(&object_name(name), &api_resource()).within(namespace);
    obj.metadata = ObjectMeta {
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: Some(owners),
        ..obj.metadata
    };
    obj.data = serde_json::json!({ "spec": spec });
    Ok(obj)
}

/// Name of the `PrometheusRule` that holds a namespace's
/// `HeadroomHypothesisRefuted` alert. A dot, where SLOs' objects have
/// `headroom-<slo>`: no SLO name can make this one.
pub const EXPERIMENTS_OBJECT: &str = "headroom.experiments";

/// The `PrometheusRule` with the refuted-hypothesis alert for the
/// experiments of `namespace` (one per namespace with SLOs, since an
/// experiment's guarding SLOs live beside it). It has no owner: when the
/// namespace's last SLO goes, the pass empties it like a stale SLO object.
pub fn build_experiments(
    namespace: &str,
    dashboard_url: &str,
    metadata: &Defaults,
) -> Result<DynamicObject, String> {
    let spec = serde_json::json!({
        "groups": [rules::experiment_group_in(dashboard_url, Some(namespace))]
    });
    let own = BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())]);
    let (labels, mut annotations) =
        crate::rule_metadata::merge(&own, &BTreeMap::new(), metadata, None)?;
    let hash = content_hash(&serde_json::json!({
        "labels": labels,
        "annotations": annotations,
        "spec": spec,
    }));
    annotations.insert(CONTENT_HASH_ANNOTATION.to_owned(), hash);
    let mut obj = DynamicObject::new(EXPERIMENTS_OBJECT, &api_resource()).within(namespace);
    obj.metadata = ObjectMeta {
        labels: Some(labels),
        annotations: Some(annotations),
        ..obj.metadata
    };
    obj.data = serde_json::json!({ "spec": spec });
    Ok(obj)
}

/// FNV-1a over the JSON text: stable across builds and Rust versions, unlike
/// std's hasher, so a restarted operator recognises what it wrote.
fn content_hash(value: &serde_json::Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn applied_hash(obj: &DynamicObject) -> Option<&str> {
    obj.annotations()
        .get(CONTENT_HASH_ANNOTATION)
        .map(String::as_str)
}

/// Whether the API server serves `monitoring.coreos.com/v1` `prometheusrules`;
/// `None` when discovery itself failed (keep the previous answer).
async fn discover(client: &kube::Client) -> Option<bool> {
    let gvk = GroupVersionKind::gvk(GROUP, VERSION, KIND);
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(_) => Some(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Some(false),
        // The group is served, without this kind.
        Err(kube::Error::Discovery(_)) => Some(false),
        Err(e) => {
            warn!(error = %e, "discovery of {GROUP}/{VERSION} failed");
            None
        }
    }
}

/// Keep one `PrometheusRule` per watched SLO while the CRD is served; never
/// returns. A pass runs when an SLO spec changed, and at each discovery
/// (every 3 minutes) to repair objects changed or deleted by hand.
pub async fn run(
    ctx: Arc<Context>,
    dashboard_url: String,
    metadata: Defaults,
    slos: Store<ServiceLevelObjective>,
) -> anyhow::Result<()> {
    let mut served = false;
    let mut discovered_at: Option<Instant> = None;
    // An empty cache before the first list would empty every object.
    slos.wait_until_ready()
        .await
        .map_err(|e| anyhow::anyhow!("the SLO cache never filled: {e}"))?;
    let mut synced: Option<u64> = None;
    loop {
        if discovered_at.is_none_or(|at| at.elapsed() >= DISCOVERY_INTERVAL) {
            // A failed discovery is retried next cycle rather than in minutes.
            if let Some(now) = discover(&ctx.client).await {
                if now != served || discovered_at.is_none() {
                    info!(
                        served = now,
                        "{KIND} ({GROUP}/{VERSION}) discovery: objects are written only when served"
                    );
                }
                served = now;
                discovered_at = Some(Instant::now());
                synced = None;
            }
        }
        let state = slos.state();
        let specs = crate::rules_writer::specs_fingerprint(&state);
        if !served || synced == Some(specs) {
            drop(state);
            tokio::time::sleep(ctx.evaluation_interval).await;
            continue;
        }
        // Names only: holding the snapshot through a pass that applies
        // thousands of objects would keep a second copy of every SLO whose
        // status changed meanwhile.
        let keys: Vec<ObjectRef<ServiceLevelObjective>> = state
            .iter()
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        drop(state);
        let result = sync(&ctx, &slos, keys, &dashboard_url, &metadata).await;
        if result.is_ok() {
            synced = Some(specs);
        }
        if let Err(e) = result {
            if let kube::Error::Api(status) = &e
                && status.is_not_found()
            {
                // The CRD went away between two discoveries.
                served = false;
                discovered_at = None;
            }
            warn!(error = %e, "writing {KIND} objects failed");
        }
        tokio::time::sleep(ctx.evaluation_interval).await;
    }
}

/// The rules API over the watched namespaces.
fn rules_api(ctx: &Context, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = api_resource();
    match namespace.or(ctx.watch_namespace.as_deref()) {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
        None => Api::all_with(ctx.client.clone(), &ar),
    }
}

/// name → content hash of every object this writer owns, read a page at a
/// time: metadata only (the hash is an annotation), and each page dropped
/// once read, since thousands of objects' managedFields are megabytes.
async fn applied_hashes(
    ctx: &Context,
) -> Result<BTreeMap<(String, String), Option<String>>, kube::Error> {
    let api = rules_api(ctx, None);
    let mut params = ListParams::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
        .limit(500);
    let mut applied = BTreeMap::new();
    loop {
        let page = api.list_metadata(&params).await?;
        for o in &page.items {
            applied.insert(
                (o.namespace().unwrap_or_default(), o.name_any()),
                o.annotations().get(CONTENT_HASH_ANNOTATION).cloned(),
            );
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(applied),
        }
    }
}

/// Objects applied at once in a pass: thousands of SLOs at one request at
/// a time took minutes.
const CONCURRENT_APPLIES: usize = 8;

/// One pass: apply what is missing or changed, empty objects whose SLO no
/// longer yields rules (a deleted SLO's object goes with the garbage
/// collector; this covers an SLO whose spec became untranslatable).
async fn sync(
    ctx: &Context,
    store: &Store<ServiceLevelObjective>,
    keys: Vec<ObjectRef<ServiceLevelObjective>>,
    dashboard_url: &str,
    metadata: &Defaults,
) -> Result<(), kube::Error> {
    let applied = applied_hashes(ctx).await?;
    let mut wanted = BTreeSet::new();
    let mut todo = Vec::new();
    for slo_key in keys {
        // The cache's current version; one SLO at a time.
        let Some(slo) = store.get(&slo_key) else {
            continue;
        };
        let obj = match build(&slo, dashboard_url, metadata) {
            Ok(obj) => obj,
            Err(reason) => {
                warn!(namespace = ?slo.namespace(), slo = %slo.name_any(), %reason, "no {KIND} for SLO");
                continue;
            }
        };
        let key = (obj.namespace().unwrap_or_default(), obj.name_any());
        wanted.insert(key.clone());
        if applied.get(&key).and_then(Option::as_deref) != applied_hash(&obj) {
            todo.push((slo_key, key));
        }
    }
    // One experiments object per namespace that has SLOs.
    let namespaces: BTreeSet<String> = keys_namespaces(store);
    for ns in &namespaces {
        let obj = match build_experiments(ns, dashboard_url, metadata) {
            Ok(obj) => obj,
            Err(reason) => {
                warn!(namespace = %ns, %reason, "no {KIND} for the experiments");
                continue;
            }
        };
        let key = (ns.clone(), obj.name_any());
        wanted.insert(key.clone());
        if applied.get(&key).and_then(Option::as_deref) == applied_hash(&obj) {
            continue;
        }
        match rules_api(ctx, Some(ns))
            .patch(
                EXPERIMENTS_OBJECT,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
        {
            Ok(_) => info!(namespace = %ns, name = EXPERIMENTS_OBJECT, "{KIND} applied"),
            Err(kube::Error::Api(s)) if s.is_not_found() => return Err(kube::Error::Api(s)),
            Err(e) => {
                warn!(namespace = %ns, name = EXPERIMENTS_OBJECT, error = %e, "applying {KIND} failed")
            }
        }
    }
    let results: Vec<Result<(), kube::Error>> = futures::stream::iter(todo)
        .map(|(slo_key, (ns, name))| async move {
            // Built again rather than kept: thousands of rule groups held
            // for the whole pass would be the pass's largest cost.
            let Some(obj) = store
                .get(&slo_key)
                .and_then(|s| build(&s, dashboard_url, metadata).ok())
            else {
                return Ok(());
            };
            match rules_api(ctx, Some(&ns))
                .patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&obj),
                )
                .await
            {
                Ok(_) => {
                    info!(namespace = %ns, name = %name, "{KIND} applied");
                    Ok(())
                }
                // Not found: the CRD is gone; the caller discovers again.
                Err(kube::Error::Api(s)) if s.is_not_found() => Err(kube::Error::Api(s)),
                // One refused object (e.g. a name too long) must not stop the rest.
                Err(e) => {
                    warn!(namespace = %ns, name = %name, error = %e, "applying {KIND} failed");
                    Ok(())
                }
            }
        })
        .buffer_unordered(CONCURRENT_APPLIES)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    // An SLO whose spec no longer yields rules: empty its object rather
    // than delete it, so the operator needs no delete verb beyond pods (the
    // garbage collector removes the object with its SLO).
    for ((ns, name), hash) in applied.iter().filter(|(k, _)| !wanted.contains(*k)) {
        if hash.as_deref() == Some(EMPTIED) {
            continue;
        }
        let patch = serde_json::json!({
            "metadata": { "annotations": { CONTENT_HASH_ANNOTATION: EMPTIED } },
            "spec": { "groups": [] }
        });
        match rules_api(ctx, Some(ns))
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => info!(namespace = %ns, name = %name, "stale {KIND} emptied"),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Namespaces of the SLOs in the cache.
fn keys_namespaces(store: &Store<ServiceLevelObjective>) -> BTreeSet<String> {
    store
        .state()
        .iter()
        .filter_map(|s| s.metadata.namespace.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo(yaml: &str) -> ServiceLevelObjective {
        serde_yaml::from_str(yaml).expect("valid SLO")
    }

    const CHECKOUT: &str = r#"
apiVersion: headroom.dev/v1alpha1
kind: ServiceLevelObjective
metadata: { name: checkout-availability, namespace: shop, uid: 0b5c7c1e-1111-4a2b-9c3d-123456789abc }
spec:
  service: checkout
  objective: 99.9
  window: 30d
  indicator:
    ratio:
      errors: sum(rate(http_requests_total{job="checkout",code=~"5.."}[$window]))
      total: sum(rate(http_requests_total{job="checkout"}[$window]))
  alerting:
    runbookUrl: https://wiki.example/runbooks/checkout
"#;

    #[test]
    fn object_holds_the_rule_groups_owned_by_the_slo() {
        let s = slo(CHECKOUT);
        let obj = build(&s, "http://dash", &Defaults::default()).expect("object");
        let value = serde_json::to_value(&obj).expect("json");
        assert_eq!(value["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(value["kind"], "PrometheusRule");
        assert_eq!(value["metadata"]["name"], "headroom-checkout-availability");
        assert_eq!(value["metadata"]["namespace"], "shop");
        assert_eq!(
            value["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "headroom"
        );
        let owner = &value["metadata"]["ownerReferences"][0];
        assert_eq!(owner["apiVersion"], "headroom.dev/v1alpha1");
        assert_eq!(owner["kind"], "ServiceLevelObjective");
        assert_eq!(owner["name"], "checkout-availability");
        assert_eq!(owner["uid"], "0b5c7c1e-1111-4a2b-9c3d-123456789abc");
        assert_eq!(owner["controller"], true);
        // Exactly what `headroom rules` prints for this SLO.
        let (file, _) = rules::rule_file(std::slice::from_ref(&s), "http://dash");
        assert_eq!(
            value["spec"]["groups"],
            serde_json::to_value(&file.groups).expect("json")
        );
        let alert = value["spec"]["groups"][0]["rules"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r.get("alert").is_some()))
            .expect("an alert rule");
        assert_eq!(
            alert["annotations"]["runbook_url"],
            "https://wiki.example/runbooks/checkout"
        );
    }

    #[test]
    fn hash_follows_content() {
        let a = build(&slo(CHECKOUT), "http://dash", &Defaults::default()).expect("object");
        let same = build(&slo(CHECKOUT), "http://dash", &Defaults::default()).expect("object");
        let changed = build(
            &slo(&CHECKOUT.replace("99.9", "99.5")),
            "http://dash",
            &Defaults::default(),
        )
        .expect("object");
        assert!(applied_hash(&a).is_some());
        assert_eq!(applied_hash(&a), applied_hash(&same));
        assert_ne!(applied_hash(&a), applied_hash(&changed));
    }

    #[test]
    fn no_object_without_uid_or_with_untranslatable_spec() {
        let no_uid = CHECKOUT.replace(", uid: 0b5c7c1e-1111-4a2b-9c3d-123456789abc", "");
        assert!(
            build(&slo(&no_uid), "http://dash", &Defaults::default())
                .expect_err("needs a uid")
                .contains("uid")
        );
        let bad = CHECKOUT.replace("[$window]))\n      total", "[$window])\n      total");
        assert!(
            build(&slo(&bad), "http://dash", &Defaults::default())
                .expect_err("bad PromQL")
                .contains("spec.indicator.ratio.errors")
        );
    }
}
