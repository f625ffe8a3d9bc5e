//! `headroom validate -f FILE…`: what a pipeline can check before
//! `kubectl apply`, without a cluster. Every document is read as the type
//! its `kind` names (so a wrong field type or a missing field is named),
//! then checked as the operator checks it: an SLO as `headroom rules`
//! translates it (PromQL parses, `$window` present, tiers valid), an
//! experiment with the operator's own spec checks (durations, schedule,
//! time zone, the action's own rules), and each experiment's `spec.slos`
//! against the SLOs of the same namespace in the files. The schema and CEL
//! rules stay the API server's: `kubectl apply --dry-run=server` checks
//! them against the installed CRDs.

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

/// Check the documents of several files, given as (name, text).
pub fn validate(files: &[(String, String)]) -> Report {
    let mut report = Report::default();
    let mut slos: Vec<(String, ServiceLevelObjective)> = Vec::new();
    let mut experiments: Vec<(String, ChaosExperiment)> = Vec::new();
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
                .unwrap_or_default();
            match kind {
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
  action: {{ podKill: {{ selector: {{ matchLabels: {{ app: web }} }} }} }}
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
        assert!(has("document 5 (ChaosExperiment)"), "{text:#?}");
        assert_eq!(text.len(), 5, "{text:#?}");
    }
}
