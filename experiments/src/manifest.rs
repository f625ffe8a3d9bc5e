//! `manifest`: delegated faults. Objects given in the spec (a NetworkPolicy
//! that partitions a service, a Chaos Mesh `NetworkChaos`, a Litmus
//! `ChaosEngine`, …) are created at injection and deleted at restore, also
//! after an abort, a crash or a leader change. Headroom then is the
//! error-budget gate for faults it does not implement itself.
//!
//! This module holds the spec and the pure checks of the objects; the live
//! half (discovery, the SelfSubjectAccessReview, create and delete) is the
//! controller's `engine::actions::manifest`.

use kube::KubeSchema;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Create `objects` at injection; delete them at restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSpec {
    /// The objects, as in a manifest file: each with `apiVersion`, `kind`
    /// and `metadata.name`. Only namespaced kinds; an object without
    /// `metadata.namespace` goes to the experiment's namespace. The
    /// operator must be allowed to create and delete each kind there
    /// (checked with a SelfSubjectAccessReview before the gate opens); an
    /// object that already exists is refused, so the restore deletes only
    /// what the run created.
    #[schemars(schema_with = "objects_schema")]
    pub objects: Vec<serde_json::Value>,
}

fn objects_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 20,
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// One object of the spec, as far as Headroom needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    /// `None`: the experiment's namespace.
    pub namespace: Option<String>,
    pub name: String,
}

/// An `apiVersion` as (group, version): the core group is "".
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

impl ObjectRef {
    /// The object's (group, version).
    pub fn group_version(&self) -> (&str, &str) {
        split_api_version(&self.api_version)
    }
}

/// Read each object's identity, or name the object and the field missing.
pub fn object_refs(spec: &ManifestSpec) -> Result<Vec<ObjectRef>, String> {
    let field = "spec.action.manifest.objects";
    let mut out: Vec<ObjectRef> = Vec::new();
    for (i, o) in spec.objects.iter().enumerate() {
        let text = |p: &str| o.pointer(p).and_then(|v| v.as_str()).map(str::to_owned);
        let need = |p: &str, what: &str| {
            text(p)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{field}[{i}] has no {what}"))
        };
        let r = ObjectRef {
            api_version: need("/apiVersion", "apiVersion")?,
            kind: need("/kind", "kind")?,
            namespace: text("/metadata/namespace").filter(|s| !s.is_empty()),
            name: need("/metadata/name", "metadata.name")?,
        };
        if o.pointer("/metadata/generateName").is_some() {
            return Err(format!(
                "{field}[{i}].metadata.generateName: give each object a fixed name, so the restore deletes exactly it"
            ));
        }
        if out.iter().any(|x| {
            x.api_version == r.api_version
                && x.kind == r.kind
                && x.namespace == r.namespace
                && x.name == r.name
        }) {
            return Err(format!("{field}[{i}]: {} {} appears twice", r.kind, r.name));
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_need_a_kind_a_version_and_a_fixed_name() {
        let ok = ManifestSpec {
            objects: vec![
                json!({ "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": { "name": "deny" } }),
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c", "namespace": "other" } }),
            ],
        };
        let refs = object_refs(&ok).expect("valid");
        assert_eq!(refs[0].group_version(), ("networking.k8s.io", "v1"));
        assert_eq!(refs[1].group_version(), ("", "v1"));
        assert_eq!(refs[1].namespace.as_deref(), Some("other"));
        // (case, object, message start)
        let cases = [
            (
                "no kind",
                json!({ "apiVersion": "v1", "metadata": { "name": "x" } }),
                "spec.action.manifest.objects[0] has no kind",
            ),
            (
                "no name",
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {} }),
                "spec.action.manifest.objects[0] has no metadata.name",
            ),
            (
                "generateName",
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "x", "generateName": "x-" } }),
                "spec.action.manifest.objects[0].metadata.generateName",
            ),
        ];
        for (name, o, want) in cases {
            let e = object_refs(&ManifestSpec { objects: vec![o] }).expect_err(name);
            assert!(e.starts_with(want), "{name}: {e}");
        }
        let twice = ManifestSpec {
            objects: vec![ok.objects[0].clone(), ok.objects[0].clone()],
        };
        assert!(
            object_refs(&twice)
                .expect_err("twice")
                .contains("appears twice")
        );
    }
}
