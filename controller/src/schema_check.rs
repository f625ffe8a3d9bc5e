//! A document checked against a CRD's structural schema and CEL rules
//! without an API server, in the API server's order: nulls of non-nullable
//! fields pruned, defaults applied, unknown fields refused (what
//! `kubectl apply`'s strict field validation does), the OpenAPI keywords,
//! then each `x-kubernetes-validations` rule with `self` bound to its node,
//! typed by the schema (an `integer` field is a CEL int, a `number` a
//! double, as the API server converts them).
//!
//! Written against the schema walk of the API server, not a JSON Schema
//! library: those know neither nullable pruning, defaulting before the
//! rules, `x-kubernetes-*` nor CEL, and the messages here name each field
//! in the API server's dotted form (`spec.action.podKill.count`), so the
//! same table of bad specs is checked against both (tests/e2e).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// One refusal: the field, as the API server names it, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The schema of one of Headroom's kinds, as its CRD in `crds/` has it.
pub fn for_kind(kind: &str) -> Option<JSONSchemaProps> {
    use crate::resources::{
        experiment::ChaosExperiment, run::ExperimentRun, slo::ServiceLevelObjective,
    };
    use kube::CustomResourceExt;
    let crd = match kind {
        "ServiceLevelObjective" => ServiceLevelObjective::crd(),
        "ChaosExperiment" => ChaosExperiment::crd(),
        "ExperimentRun" => ExperimentRun::crd(),
        _ => return None,
    };
    schema_of(&crd).cloned()
}

/// The served schema of a CRD (its storage version's).
pub fn schema_of(crd: &CustomResourceDefinition) -> Option<&JSONSchemaProps> {
    let versions = &crd.spec.versions;
    versions
        .iter()
        .find(|v| v.storage)
        .or(versions.first())?
        .schema
        .as_ref()?
        .open_api_v3_schema
        .as_ref()
}

/// Check `doc` (a whole object: apiVersion, kind, metadata, spec) against
/// `schema`, the CRD's `openAPIV3Schema`. Defaults are applied to `doc`.
/// `status` is not checked: the API server ignores it on create.
pub fn check(schema: &JSONSchemaProps, doc: &mut Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(name) = doc.pointer("/metadata/name") {
        match name.as_str() {
            Some(n) if is_dns_subdomain(n) => {}
            _ => errors.push(FieldError {
                path: "metadata.name".into(),
                message: format!(
                    "Invalid value: {name}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253)"
                ),
            }),
        }
    } else if doc.pointer("/metadata/generateName").is_none() {
        errors.push(FieldError {
            path: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        });
    }
    let Some(obj) = doc.as_object_mut() else {
        errors.push(FieldError {
            path: "<root>".into(),
            message: "must be an object".into(),
        });
        return errors;
    };
    let props = schema.properties.as_ref();
    for (key, value) in obj.iter_mut() {
        let sub = props.and_then(|p| p.get(key));
        match (key.as_str(), sub) {
            // The API server checks metadata itself; status is ignored.
            ("metadata" | "status" | "apiVersion" | "kind", _) => {}
            (_, Some(sub)) => {
                prune_and_default(sub, value);
                walk(sub, value, key, &mut errors);
            }
            (_, None) => errors.push(unknown(key)),
        }
    }
    errors
}

fn is_dns_subdomain(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| ok(c) || c == '-' || c == '.')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

fn unknown(path: &str) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: "unknown field: the schema has none of this name; remove it or check its spelling"
            .into(),
    }
}

fn items_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(s) => Some(s),
        JSONSchemaPropsOrArray::Schemas(v) => v.first(),
    }
}

fn map_values_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.additional_properties.as_ref()? {
        JSONSchemaPropsOrBool::Schema(s) => Some(s),
        JSONSchemaPropsOrBool::Bool(_) => None,
    }
}

fn preserves_unknown(schema: &JSONSchemaProps) -> bool {
    schema.x_kubernetes_preserve_unknown_fields == Some(true)
        || matches!(
            schema.additional_properties,
            Some(JSONSchemaPropsOrBool::Bool(true))
        )
}

/// Drop nulls the schema does not allow and fill defaults, depth first, as
/// the API server does before it validates.
fn prune_and_default(schema: &JSONSchemaProps, value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if let Some(props) = &schema.properties {
                obj.retain(|k, v| {
                    !(v.is_null() && props.get(k).is_some_and(|p| p.nullable != Some(true)))
                });
                for (k, p) in props {
                    if !obj.contains_key(k)
                        && let Some(d) = &p.default
                    {
                        obj.insert(k.clone(), d.0.clone());
                    }
                }
                for (k, v) in obj.iter_mut() {
                    if let Some(p) = props.get(k) {
                        prune_and_default(p, v);
                    }
                }
            } else if let Some(p) = map_values_schema(schema) {
                for v in obj.values_mut() {
                    prune_and_default(p, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(p) = items_schema(schema) {
                for v in items {
                    prune_and_default(p, v);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// Validate `value` at `path` against `schema`; rules run on a node only
/// when its own subtree passed the schema, as a rule assumes the types.
fn walk(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let before = errors.len();
    let mut err = |message: String| {
        errors.push(FieldError {
            path: path.to_owned(),
            message,
        })
    };
    if value.is_null() {
        if schema.nullable != Some(true) {
            err("Invalid value: null: must not be null".into());
        }
        return;
    }
    let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
    let got = type_name(value);
    if let Some(want) = schema.type_.as_deref() {
        let fits = want == got
            || (want == "number" && got == "integer")
            || (want == "integer" && value.as_f64().is_some_and(|f| f.fract() == 0.0));
        if !fits {
            err(format!(
                "Invalid value: {}: {path} in body must be of type {want}: \"{got}\"",
                shown(value)
            ));
            return;
        }
    } else if int_or_string && !matches!(got, "integer" | "string") {
        err(format!(
            "Invalid value: {}: {path} in body must be of type integer or string",
            shown(value)
        ));
        return;
    }
    if let Some(allowed) = &schema.enum_
        && !allowed.iter().any(|a| a.0 == *value)
    {
        let list: Vec<String> = allowed.iter().map(|a| shown(&a.0)).collect();
        err(format!(
            "Unsupported value: {}: supported values: {}",
            shown(value),
            list.join(", ")
        ));
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            // (bound, exclusive, x is outside it, the words for inside)
            let bounds = [
                schema.minimum.map(|b| {
                    let ex = schema.exclusive_minimum == Some(true);
                    (b, ex, x < b || (ex && x == b), "greater than")
                }),
                schema.maximum.map(|b| {
                    let ex = schema.exclusive_maximum == Some(true);
                    (b, ex, x > b || (ex && x == b), "less than")
                }),
            ];
            for (bound, exclusive, outside, word) in bounds.into_iter().flatten() {
                if outside {
                    let or_equal = if exclusive { "" } else { " or equal to" };
                    err(format!(
                        "Invalid value: {n}: {path} in body should be {word}{or_equal} {bound}"
                    ));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as i64;
            if let Some(min) = schema.min_length
                && len < min
            {
                err(format!(
                    "Invalid value: {s:?}: {path} in body should be at least {min} chars long"
                ));
            }
            if let Some(max) = schema.max_length
                && len > max
            {
                err(format!("Too long: may not be more than {max} bytes"));
            }
            if let Some(p) = &schema.pattern {
                match regex::Regex::new(p) {
                    Ok(re) if re.is_match(s) => {}
                    Ok(_) => err(format!(
                        "Invalid value: {s:?}: {path} in body should match '{p}'"
                    )),
                    Err(e) => err(format!("the schema's pattern {p:?} does not compile: {e}")),
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as i64;
            if let Some(min) = schema.min_items
                && n < min
            {
                err(format!(
                    "Invalid value: {n}: {path} in body should have at least {min} items"
                ));
            }
            if let Some(max) = schema.max_items
                && n > max
            {
                err(format!("Too many: {n}: must have at most {max} items"));
            }
            if let Some(sub) = items_schema(schema) {
                for (i, item) in items.iter().enumerate() {
                    walk(sub, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(obj) => {
            for r in schema.required.iter().flatten() {
                if !obj.contains_key(r) {
                    errors.push(FieldError {
                        path: format!("{path}.{r}"),
                        message: "Required value".into(),
                    });
                }
            }
            if let Some(props) = &schema.properties {
                for (k, v) in obj {
                    match props.get(k) {
                        Some(sub) => walk(sub, v, &format!("{path}.{k}"), errors),
                        None if preserves_unknown(schema) => {}
                        None => errors.push(unknown(&format!("{path}.{k}"))),
                    }
                }
            } else if let Some(sub) = map_values_schema(schema) {
                for (k, v) in obj {
                    walk(sub, v, &format!("{path}[{k}]"), errors);
                }
            }
        }
        _ => {}
    }
    if errors.len() == before {
        rules(schema, value, path, errors);
    }
}

/// The node's `x-kubernetes-validations`, each with `self` bound to it.
fn rules(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(rules) = &schema.x_kubernetes_validations else {
        return;
    };
    for rule in rules {
        let at = match &rule.field_path {
            Some(f) => format!("{path}{f}"),
            None => path.to_owned(),
        };
        // Transition rules compare with the stored object: nothing to
        // compare with offline, as on create.
        if rule.rule.contains("oldSelf") {
            continue;
        }
        let outcome = cel::Program::compile(&rule.rule)
            .map_err(|e| format!("the rule {:?} does not compile: {e}", rule.rule))
            .and_then(|program| {
                let mut ctx = cel::Context::default();
                ctx.add_variable_from_value("self", to_cel(schema, value));
                program
                    .execute(&ctx)
                    .map_err(|e| format!("the rule {:?} failed to evaluate: {e}", rule.rule))
            });
        let message = match outcome {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => format!(
                "Invalid value: {}: {}",
                shown(value),
                rule.message
                    .clone()
                    .unwrap_or_else(|| format!("failed rule: {}", rule.rule))
            ),
            Ok(other) => format!("the rule {:?} gave {other:?}, not a boolean", rule.rule),
            Err(e) => e,
        };
        errors.push(FieldError { path: at, message });
    }
}

/// A JSON value as CEL sees it under `schema`: numbers typed by the schema
/// (a `number` field holding `99` is the double 99.0).
fn to_cel(schema: &JSONSchemaProps, value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (schema.type_.as_deref(), n.as_i64()) {
            (Some("number"), _) | (_, None) => cel::Value::Float(n.as_f64().unwrap_or_default()),
            (_, Some(i)) => cel::Value::Int(i),
        },
        Value::String(s) => cel::Value::String(s.clone().into()),
        Value::Array(items) => {
            let sub = items_schema(schema).cloned().unwrap_or_default();
            cel::Value::List(
                items
                    .iter()
                    .map(|v| to_cel(&sub, v))
                    .collect::<Vec<_>>()
                    .into(),
            )
        }
        Value::Object(obj) => {
            let empty = BTreeMap::new();
            let props = schema.properties.as_ref().unwrap_or(&empty);
            let values = map_values_schema(schema).cloned().unwrap_or_default();
            let map: HashMap<String, cel::Value> = obj
                .iter()
                .map(|(k, v)| (k.clone(), to_cel(props.get(k).unwrap_or(&values), v)))
                .collect();
            cel::Value::from(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    fn experiment_schema() -> JSONSchemaProps {
        let crd = crate::resources::experiment::ChaosExperiment::crd();
        schema_of(&crd).cloned().expect("schema")
    }

    fn experiment(spec_patch: Value) -> Value {
        let mut doc = json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ChaosExperiment",
            "metadata": { "name": "kill-one", "namespace": "shop" },
            "spec": {
                "hypothesis": { "description": "losing a pod does not hurt", "recoversWithin": "30s" },
                "slos": ["checkout-availability"],
                "action": { "podKill": { "selector": { "matchLabels": { "app": "checkout" } }, "count": 1 } },
                "duration": "1m"
            }
        });
        if let (Some(spec), Value::Object(patch)) = (doc["spec"].as_object_mut(), spec_patch) {
            for (k, v) in patch {
                spec.insert(k, v);
            }
        }
        doc
    }

    fn errors(spec_patch: Value) -> Vec<String> {
        check(&experiment_schema(), &mut experiment(spec_patch))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_experiment_passes_and_gets_its_defaults() {
        let mut doc = experiment(json!({}));
        let found = check(&experiment_schema(), &mut doc);
        assert!(found.is_empty(), "{found:?}");
        // Defaults are applied before the rules, as by the API server.
        assert_eq!(doc["spec"]["concurrencyPolicy"], json!("Forbid"));
        assert_eq!(doc["spec"]["observeInterval"], json!("5s"));
    }

    #[test]
    fn each_kind_of_refusal_names_the_field() {
        let cases: Vec<(&str, Value, &[&str])> = vec![
            (
                "a CEL rule on the action union",
                json!({ "action": {} }),
                &["spec.action: Invalid value", "exactly one"],
            ),
            (
                "a CEL rule on a sub-object",
                json!({ "action": { "podKill": { "selector": { "matchLabels": { "app": "x" } }, "count": 1, "percent": 10 } } }),
                &["spec.action.podKill", "count", "percent"],
            ),
            (
                "a CEL rule on a number typed by the schema",
                json!({ "action": { "podKill": { "selector": { "matchLabels": { "app": "x" } }, "percent": 120 } } }),
                &["spec.action.podKill.percent"],
            ),
            (
                "a required field",
                json!({ "slos": null, "hypothesis": {} }),
                &["spec.hypothesis.description: Required value"],
            ),
            (
                "an enum",
                json!({ "schedule": "0 * * * *", "concurrencyPolicy": "Allow" }),
                &[
                    "spec.concurrencyPolicy: Unsupported value: \"Allow\"",
                    "\"Forbid\", \"Replace\"",
                ],
            ),
            (
                "a spec-level rule",
                json!({ "concurrencyPolicy": "Replace" }),
                &[
                    "spec: Invalid value",
                    "spec.concurrencyPolicy Replace needs spec.schedule",
                ],
            ),
            (
                "a pattern",
                json!({ "duration": "5 minutes" }),
                &[
                    "spec.duration: Invalid value: \"5 minutes\"",
                    "should match",
                ],
            ),
            (
                "a type",
                json!({ "slos": "checkout" }),
                &["spec.slos: Invalid value", "must be of type array"],
            ),
            (
                "an unknown field",
                json!({ "durration": "5m" }),
                &["spec.durration: unknown field"],
            ),
            (
                "a list bound",
                json!({ "slos": [] }),
                &["spec.slos", "at least 1 items"],
            ),
        ];
        let mut failures = Vec::new();
        for (name, patch, needles) in cases {
            let found = errors(patch).join("\n");
            for needle in needles {
                if !found.contains(needle) {
                    failures.push(format!("{name}: {needle:?} not in:\n{found}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn a_null_of_a_non_nullable_field_is_pruned_then_required() {
        // `slos: null` is dropped, as by the API server, so the required
        // check names it.
        let found = errors(json!({ "slos": null }));
        assert!(
            found.iter().any(|e| e == "spec.slos: Required value"),
            "{found:?}"
        );
    }

    #[test]
    fn metadata_name_must_be_a_dns_subdomain() {
        let mut doc = experiment(json!({}));
        doc["metadata"]["name"] = json!("Kill_One");
        let found = check(&experiment_schema(), &mut doc);
        assert!(found.iter().any(|e| e.path == "metadata.name"), "{found:?}");
    }
}
