//! `headroom validate -f FILE…`: what a pipeline can check before
//! `kubectl apply`, without a cluster. Every document is first checked as
//! the API server would admit it, against this version's CRD schema and
//! its CEL rules ([`crate::schema_check`]: types, bounds, patterns, enums,
//! required and unknown fields, every `x-kubernetes-validations` rule);
//! one that passes is read as the type its `kind` names and checked as the
//! operator checks it: an SLO as `headroom rules` translates it (PromQL
//! parses, `$window` present, tiers valid), an experiment with the
//! operator's own spec checks (durations, schedule, time zone, the
//! action's own rules), and each experiment's `spec.slos` against the SLOs
//! of the same namespace in the files.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::resources::experiment::ChaosExperiment;
use crate::resources::slo::ServiceLevelObjective;

/// One problem, located: `file: document N (Kind ns/name): what and fix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub place: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// What was read, for the summary line.
#[derive(Debug, Default)]
pub struct Report {
    pub slos: usize,
    pub experiments: usize,
    pub problems: Vec<Problem>,
}

/// The document as the API server would store it (defaults applied), or
/// its schema and CEL refusals; `None` for a kind with no CRD here.
fn admit(
    kind: &str,
    value: &serde_yaml::Value,
) -> Result<Option<serde_yaml::Value>, Vec<crate::schema_check::FieldError>> {
    if !matches!(kind, "ServiceLevelObjective" | "ChaosExperiment") {
        return Ok(None);
    }
    let Some(schema) = crate::schema_check::for_kind(kind) else {
        return Ok(None);
    };
    let mut doc: serde_json::Value = match serde_json::to_value(value) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![crate::schema_check::FieldError {
                path: "<document>".into(),
                message: format!("not representable as JSON: {e}"),
            }]);
        }
    };
    let errors = crate::schema_check::check(&schema, &mut doc);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(serde_json::from_value(doc).ok())
}

/// Namespace (`default` when unset) and name of a document not yet read
/// as its type.
fn namespace_and_name(value: &serde_yaml::Value) -> (String, String) {
    let field = |k: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    (
        field("namespace").unwrap_or_else(|| "default".into()),
        field("name").unwrap_or_default(),
    )
}

/// `Kind ns/name` of a document not yet read as its type.
fn describe(kind: &str, value: &serde_yaml::Value) -> String {
    let (ns, name) = namespace_and_name(value);
    format!("{kind} {ns}/{name}")
}

/// Check the documents of several files, given as (name, text).
pub fn validate(files: &[(String, String)]) -> Report {
    let mut report = Report::default();
    let mut slos: Vec<(String, ServiceLevelObjective)> = Vec::new();
    let mut experiments: Vec<(String, ChaosExperiment)> = Vec::new();
    let mut refused_slos: Vec<(String, String)> = Vec::new();
    for (file, text) in files {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let place = format!("{file}: document {}", i + 1);
            let value = match serde_yaml::Value::deserialize(doc) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(v) => v,
                Err(e) => {
                    report.problems.push(Problem {
                        place,
                        message: format!("not YAML: {e}"),
                    });
                    continue;
                }
            };
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            let admitted = match admit(&kind, &value) {
                Ok(v) => v,
                Err(errors) => {
                    if kind == "ServiceLevelObjective" {
                        // Named already: an experiment that names it is
                        // not told it is missing as well.
                        refused_slos.push(namespace_and_name(&value));
                    }
                    let who = describe(&kind, &value);
                    report.problems.extend(errors.into_iter().map(|e| Problem {
                        place: format!("{place} ({who})"),
                        message: e.to_string(),
                    }));
                    continue;
                }
            };
            let value = admitted.unwrap_or(value);
            match kind.as_str() {
                "ServiceLevelObjective" => match serde_yaml::from_value(value) {
                    Ok(slo) => slos.push((place, slo)),
                    Err(e) => report.problems.push(Problem {
                        place: format!("{place} (ServiceLevelObjective)"),
                        message: e.to_string(),
                    }),
                },
                "ChaosExperiment" => match serde_yaml::from_value(value) {
                    Ok(exp) => experiments.push((place, exp)),
                    Err(e) => report.problems.push(Problem {
                        place: format!("{place} (ChaosExperiment)"),
                        message: e.to_string(),
                    }),
                },
                other => report.problems.push(Problem {
                    place,
                    message: format!(
                        "kind {other:?} is not one headroom validate reads: ServiceLevelObjective or ChaosExperiment"
                    ),
                }),
            }
        }
    }
    let name = |m: &kube::core::ObjectMeta| {
        (
            m.namespace.clone().unwrap_or_else(|| "default".into()),
            m.name.clone().unwrap_or_default(),
        )
    };
    let mut known: BTreeSet<(String, String)> = BTreeSet::new();
    known.extend(refused_slos);
    for (place, slo) in &slos {
        let (ns, n) = name(&slo.metadata);
        let place = format!("{place} (ServiceLevelObjective {ns}/{n})");
        if !known.insert((ns.clone(), n.clone())) {
            report.problems.push(Problem {
                place: place.clone(),
                message: "defined twice in these files".into(),
            });
        }
        let (_, skipped) = crate::rules::rule_file(std::slice::from_ref(slo), "http://headroom");
        for (_, reason) in skipped {
            report.problems.push(Problem {
                place: place.clone(),
                message: reason,
            });
        }
    }
    for (place, exp) in &experiments {
        let (ns, n) = name(&exp.metadata);
        let place = format!("{place} (ChaosExperiment {ns}/{n})");
        if let Err((reason, message)) = crate::reconcile::experiment::validate_spec(&exp.spec) {
            report.problems.push(Problem {
                place: place.clone(),
                message: format!("{reason}: {message}"),
            });
        }
        for s in &exp.spec.slos {
            if !known.contains(&(ns.clone(), s.clone())) {
                report.problems.push(Problem {
                    place: place.clone(),
                    message: format!(
                        "spec.slos names {s}, which no ServiceLevelObjective in namespace {ns} of these files defines; add its file to the command"
                    ),
                });
            }
        }
    }
    report.slos = slos.len();
    report.experiments = experiments.len();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLO: &str = r#"
apiVersion: headroom.dev/v1alpha1
kind: ServiceLevelObjective
metadata: { name: checkout, namespace: shop }
spec:
  service: checkout
  objective: 99.9
  window: 30d
  indicator:
    ratio:
      errors: sum(rate(http_requests_total{code=~"5.."}[$window]))
      total: sum(rate(http_requests_total[$window]))
"#;

    fn experiment(extra: &str) -> String {
        format!(
            r#"
apiVersion: headroom.dev/v1alpha1
kind: ChaosExperiment
metadata: {{ name: kill, namespace: shop }}
spec:
  hypothesis: {{ description: h }}
  slos: [checkout]
  action: {{ podKill: {{ selector: {{ matchLabels: {{ app: web }} }}, count: 1 }} }}
{extra}"#
        )
    }

    fn run(docs: &[&str]) -> Report {
        validate(&[("f.yaml".into(), docs.join("\n---\n"))])
    }

    #[test]
    fn valid_files_have_no_problems() {
        let r = run(&[SLO, &experiment("")]);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!((r.slos, r.experiments), (1, 1));
    }

    #[test]
    fn every_problem_is_named_with_its_place() {
        let bad_query = SLO
            .replace("name: checkout,", "name: broken,")
            .replace("[$window]))\n      total", "[5m]))\n      total");
        let r = run(&[
            SLO,
            &bad_query,
            &experiment("  schedule: \"0 10 * * *\"\n  timeZone: Mars/Olympus\n")
                .replace("slos: [checkout]", "slos: [checkout, missing]"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }",
            "kind: ChaosExperiment\nspec: { slos: 3 }",
        ]);
        let text: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("document 2 (ServiceLevelObjective shop/broken)"),
            "{text:#?}"
        );
        assert!(has("$window"), "{text:#?}");
        assert!(has("InvalidTimeZone: spec.timeZone"), "{text:#?}");
        assert!(has("spec.slos names missing"), "{text:#?}");
        assert!(has("document 4: kind \"ConfigMap\""), "{text:#?}");
        // Refused by the schema: every problem named, none of the
        // operator's checks run on it.
        assert!(
            has(
                "document 5 (ChaosExperiment default/): spec.slos: Invalid value: 3: spec.slos in body must be of type array"
            ),
            "{text:#?}"
        );
        assert!(
            has("document 5 (ChaosExperiment default/): spec.hypothesis: Required value"),
            "{text:#?}"
        );
        assert!(
            has("document 5 (ChaosExperiment default/): metadata.name: Required value"),
            "{text:#?}"
        );
        assert_eq!(text.len(), 8, "{text:#?}");
    }
}
