//! `headroom import openslo|sloth|pyrra FILE`: translate SLOs other tools
//! define into ServiceLevelObjectives. Ratio (event) SLIs translate; what
//! cannot is refused with the field that stops it, never half-translated.

use serde_yaml::Value;
use thiserror::Error;

use crate::resources::slo::{
    Indicator, RatioIndicator, ServiceLevelObjective, ServiceLevelObjectiveSpec,
};

#[derive(Debug, Error, PartialEq)]
#[error("{field}: {reason}")]
pub struct ImportError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ImportError {
    ImportError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str], field: &str) -> Result<&'a str, ImportError> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key).ok_or_else(|| err(field, "missing"))?;
    }
    cur.as_str().ok_or_else(|| err(field, "must be a string"))
}

fn number(v: &Value, field: &str) -> Result<f64, ImportError> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| err(field, "not a number")),
        // Pyrra writes targets as strings ("99.5").
        Value::String(s) => s
            .parse()
            .map_err(|_| err(field, format!("{s:?} is not a number"))),
        _ => Err(err(field, "missing or not a number")),
    }
}

fn slo(
    name: &str,
    namespace: Option<&str>,
    spec: ServiceLevelObjectiveSpec,
) -> Result<ServiceLevelObjective, ImportError> {
    if !(spec.objective > 0.0 && spec.objective < 100.0) {
        return Err(err(
            "objective",
            format!(
                "{} is not strictly between 0 and 100 percent",
                spec.objective
            ),
        ));
    }
    let mut slo = ServiceLevelObjective::new(name, spec);
    slo.metadata.namespace = namespace.map(str::to_owned);
    Ok(slo)
}

fn ratio(errors: String, total: String) -> Indicator {
    Indicator {
        ratio: Some(RatioIndicator { errors, total }),
        ..Default::default()
    }
}

/// A counter selector as a per-second rate over `$window`.
fn rate(selector: &str) -> String {
    format!("sum(rate({}[$window]))", selector.trim())
}

/// Sloth's `prometheus/v1` spec: one SLO per entry of `slos`, `{{.window}}`
/// becomes `$window`. Sloth's period is a CLI flag, so the window is 30d.
pub fn sloth(doc: &Value) -> Result<Vec<ServiceLevelObjective>, ImportError> {
    let version = str_at(doc, &["version"], "version")?;
    if version != "prometheus/v1" {
        return Err(err(
            "version",
            format!("{version:?}: only prometheus/v1 is supported"),
        ));
    }
    let service = str_at(doc, &["service"], "service")?;
    let slos = doc
        .get("slos")
        .and_then(Value::as_sequence)
        .ok_or_else(|| err("slos", "missing"))?;
    let window = |q: &str| {
        q.replace("{{.window}}", "$window")
            .replace("{{ .window }}", "$window")
    };
    slos.iter()
        .enumerate()
        .map(|(i, s)| {
            let f = |name: &str| format!("slos[{i}].{name}");
            let name = str_at(s, &["name"], &f("name"))?;
            let sli = s.get("sli").ok_or_else(|| err(f("sli"), "missing"))?;
            let Some(events) = sli.get("events") else {
                return Err(err(
                    f("sli"),
                    "only `events` SLIs can be imported (raw and plugin SLIs cannot)",
                ));
            };
            let errors = window(str_at(
                events,
                &["error_query"],
                &f("sli.events.error_query"),
            )?);
            let total = window(str_at(
                events,
                &["total_query"],
                &f("sli.events.total_query"),
            )?);
            slo(
                &format!("{service}-{name}"),
                None,
                ServiceLevelObjectiveSpec {
                    service: service.to_owned(),
                    description: s
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    objective: number(s.get("objective").unwrap_or(&Value::Null), &f("objective"))?,
                    window: "30d".into(),
                    indicator: ratio(errors, total),
                    alerting: None,
                    min_traffic_per_second: None,
                },
            )
        })
        .collect()
}

/// Pyrra's `ServiceLevelObjective` (pyrra.dev/v1alpha1) with a ratio indicator.
pub fn pyrra(doc: &Value) -> Result<Vec<ServiceLevelObjective>, ImportError> {
    let kind = str_at(doc, &["kind"], "kind")?;
    if kind != "ServiceLevelObjective"
        || !str_at(doc, &["apiVersion"], "apiVersion")?.starts_with("pyrra.dev/")
    {
        return Err(err("kind", "expected a pyrra.dev ServiceLevelObjective"));
    }
    let name = str_at(doc, &["metadata", "name"], "metadata.name")?;
    let namespace = doc
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let spec = doc.get("spec").ok_or_else(|| err("spec", "missing"))?;
    let indicator = spec
        .get("indicator")
        .ok_or_else(|| err("spec.indicator", "missing"))?;
    let Some(r) = indicator.get("ratio") else {
        return Err(err(
            "spec.indicator",
            "only ratio indicators can be imported (latency and bool_gauge cannot)",
        ));
    };
    if r.get("grouping").is_some() {
        return Err(err(
            "spec.indicator.ratio.grouping",
            "grouped SLOs cannot be imported: one ServiceLevelObjective per group is needed",
        ));
    }
    let errors = rate(str_at(
        r,
        &["errors", "metric"],
        "spec.indicator.ratio.errors.metric",
    )?);
    let total = rate(str_at(
        r,
        &["total", "metric"],
        "spec.indicator.ratio.total.metric",
    )?);
    let window = str_at(spec, &["window"], "spec.window")?;
    crate::duration::parse_duration(window).map_err(|e| err("spec.window", e.to_string()))?;
    slo(
        name,
        namespace,
        ServiceLevelObjectiveSpec {
            service: doc
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| l.get("service"))
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned(),
            description: spec
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            objective: number(spec.get("target").unwrap_or(&Value::Null), "spec.target")?,
            window: window.to_owned(),
            indicator: ratio(errors, total),
            alerting: None,
            min_traffic_per_second: None,
        },
    )
    .map(|s| vec![s])
}

/// OpenSLO v1 `SLO` with an inline `ratioMetric` over Prometheus counters.
pub fn openslo(doc: &Value) -> Result<Vec<ServiceLevelObjective>, ImportError> {
    if str_at(doc, &["apiVersion"], "apiVersion")? != "openslo/v1"
        || str_at(doc, &["kind"], "kind")? != "SLO"
    {
        return Err(err("kind", "expected apiVersion openslo/v1, kind SLO"));
    }
    let name = str_at(doc, &["metadata", "name"], "metadata.name")?;
    let spec = doc.get("spec").ok_or_else(|| err("spec", "missing"))?;
    if spec.get("indicatorRef").is_some() {
        return Err(err(
            "spec.indicatorRef",
            "referenced SLIs cannot be imported: inline the indicator",
        ));
    }
    if spec
        .get("budgetingMethod")
        .and_then(Value::as_str)
        .is_some_and(|m| m != "Occurrences")
    {
        return Err(err(
            "spec.budgetingMethod",
            "only Occurrences can be imported",
        ));
    }
    let r = spec
        .get("indicator")
        .and_then(|i| i.get("spec"))
        .and_then(|s| s.get("ratioMetric"))
        .ok_or_else(|| {
            err(
                "spec.indicator.spec.ratioMetric",
                "only ratio metrics can be imported",
            )
        })?;
    if r.get("counter").and_then(Value::as_bool) != Some(true) {
        return Err(err(
            "spec.indicator.spec.ratioMetric.counter",
            "only counters (counter: true) can be imported",
        ));
    }
    let query = |side: &str| -> Result<Option<String>, ImportError> {
        let Some(src) = r.get(side) else {
            return Ok(None);
        };
        let field = format!("spec.indicator.spec.ratioMetric.{side}.metricSource");
        let ms = src
            .get("metricSource")
            .ok_or_else(|| err(&field, "missing"))?;
        if !str_at(ms, &["type"], &format!("{field}.type"))?.eq_ignore_ascii_case("prometheus") {
            return Err(err(
                format!("{field}.type"),
                "only Prometheus sources can be imported",
            ));
        }
        Ok(Some(
            str_at(ms, &["spec", "query"], &format!("{field}.spec.query"))?.to_owned(),
        ))
    };
    let total =
        query("total")?.ok_or_else(|| err("spec.indicator.spec.ratioMetric.total", "missing"))?;
    let errors = match (query("bad")?, query("good")?) {
        (Some(bad), _) => rate(&bad),
        (None, Some(good)) => format!("{} - {}", rate(&total), rate(&good)),
        (None, None) => return Err(err("spec.indicator.spec.ratioMetric", "needs good or bad")),
    };
    let windows = spec
        .get("timeWindow")
        .and_then(Value::as_sequence)
        .ok_or_else(|| err("spec.timeWindow", "missing"))?;
    let tw = windows
        .first()
        .ok_or_else(|| err("spec.timeWindow", "empty"))?;
    if tw.get("isRolling").and_then(Value::as_bool) != Some(true) {
        return Err(err(
            "spec.timeWindow[0].isRolling",
            "only rolling windows can be imported",
        ));
    }
    let window = str_at(tw, &["duration"], "spec.timeWindow[0].duration")?;
    crate::duration::parse_duration(window)
        .map_err(|e| err("spec.timeWindow[0].duration", e.to_string()))?;
    let objectives = spec
        .get("objectives")
        .and_then(Value::as_sequence)
        .ok_or_else(|| err("spec.objectives", "missing"))?;
    if objectives.len() != 1 {
        return Err(err(
            "spec.objectives",
            "exactly one objective can be imported",
        ));
    }
    let target = number(
        objectives[0].get("target").unwrap_or(&Value::Null),
        "spec.objectives[0].target",
    )?;
    slo(
        name,
        None,
        ServiceLevelObjectiveSpec {
            service: str_at(spec, &["service"], "spec.service")?.to_owned(),
            description: spec
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            objective: target * 100.0,
            window: window.to_owned(),
            indicator: ratio(errors, rate(&total)),
            alerting: None,
            min_traffic_per_second: None,
        },
    )
    .map(|s| vec![s])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).expect("yaml")
    }

    #[test]
    fn sloth_events_sli_translates() {
        let doc = y(r#"
version: prometheus/v1
service: myservice
slos:
  - name: requests-availability
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_requests_total{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_requests_total{job="myservice"}[{{.window}}]))
"#);
        let out = sloth(&doc).expect("translates");
        let s = &out[0];
        assert_eq!(
            s.metadata.name.as_deref(),
            Some("myservice-requests-availability")
        );
        assert_eq!(s.spec.objective, 99.9);
        let r = s.spec.indicator.ratio.as_ref().expect("ratio");
        assert_eq!(
            r.errors,
            r#"sum(rate(http_requests_total{job="myservice",code=~"(5..|429)"}[$window]))"#
        );
        crate::indicator::validate(&s.spec.indicator).expect("valid PromQL");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(Result<Vec<ServiceLevelObjective>, ImportError>, &str)> = vec![
            (
                sloth(&y(
                    "version: prometheus/v1\nservice: s\nslos: [{name: a, objective: 99, sli: {raw: {error_ratio_query: x}}}]",
                )),
                "slos[0].sli",
            ),
            (
                sloth(&y("version: prometheus/v2\nservice: s\nslos: []")),
                "version",
            ),
            (
                sloth(&y(
                    "version: prometheus/v1\nservice: s\nslos: [{name: a, objective: 120, sli: {events: {error_query: a, total_query: b}}}]",
                )),
                "objective",
            ),
            (
                pyrra(&y(
                    "apiVersion: pyrra.dev/v1alpha1\nkind: ServiceLevelObjective\nmetadata: {name: a}\nspec: {target: '99', window: 2w, indicator: {latency: {}}}",
                )),
                "spec.indicator",
            ),
            (
                openslo(&y(
                    "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec: {service: s, indicatorRef: x}",
                )),
                "spec.indicatorRef",
            ),
        ];
        for (res, field) in cases {
            let e = res.expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn pyrra_and_openslo_ratio_translate() {
        let p = pyrra(&y(r#"
apiVersion: pyrra.dev/v1alpha1
kind: ServiceLevelObjective
metadata: {name: api-errors, namespace: shop}
spec:
  target: "99.5"
  window: 4w
  indicator:
    ratio:
      errors: {metric: 'http_requests_total{job="api",code=~"5.."}'}
      total: {metric: 'http_requests_total{job="api"}'}
"#))
        .expect("translates");
        assert_eq!(
            (p[0].spec.objective, p[0].spec.window.as_str()),
            (99.5, "4w")
        );
        assert_eq!(p[0].metadata.namespace.as_deref(), Some("shop"));
        let o = openslo(&y(r#"
apiVersion: openslo/v1
kind: SLO
metadata: {name: web-availability}
spec:
  service: web
  budgetingMethod: Occurrences
  timeWindow: [{duration: 28d, isRolling: true}]
  objectives: [{target: 0.999}]
  indicator:
    metadata: {name: web-good}
    spec:
      ratioMetric:
        counter: true
        good: {metricSource: {type: Prometheus, spec: {query: 'http_requests_total{code!~"5.."}'}}}
        total: {metricSource: {type: Prometheus, spec: {query: http_requests_total}}}
"#))
        .expect("translates");
        let r = o[0].spec.indicator.ratio.as_ref().expect("ratio");
        assert_eq!(
            r.errors,
            r#"sum(rate(http_requests_total[$window])) - sum(rate(http_requests_total{code!~"5.."}[$window]))"#
        );
        assert!((o[0].spec.objective - 99.9).abs() < 1e-9);
        crate::indicator::validate(&o[0].spec.indicator).expect("valid PromQL");
    }
}
