//! OpenSLO `v1` and `v1alpha` SLOs with Prometheus ratio indicators.
//!
//! A file may hold several documents, or one list of them, and an SLO may
//! refer to an `SLI` elsewhere in the file; `Service`, `DataSource` and
//! other kinds beside the SLO are read past. OpenSLO states alerting only
//! through alert policies, which are not translated: an SLO without them
//! alerts on nothing, so its Headroom tiers come disabled (evaluated, shown,
//! gating experiments, but silent), as Sloth's own OpenSLO import emits no
//! alerts either.

use std::collections::BTreeMap;

use promql_parser::parser::{self, Expr};
use serde_yaml::Value;

use crate::duration::{format_duration, parse_positive_duration};
use crate::resources::slo::{
    Alerting, BurnRateTierSpec, Indicator, RatioIndicator, ServiceLevelObjective,
    ServiceLevelObjectiveSpec,
};

use super::check::{Blame, check};
use super::node::At;
use super::{DocumentError, ImportError, window_template};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V1Alpha,
}

fn version(root: &At) -> Result<Version, ImportError> {
    match root.req_str("apiVersion")? {
        "openslo/v1" => Ok(Version::V1),
        "openslo/v1alpha" => Ok(Version::V1Alpha),
        other => Err(ImportError::new(
            "apiVersion",
            format!("{other:?}: only openslo/v1 and openslo/v1alpha are OpenSLO"),
        )),
    }
}

/// Translate every SLO of the file's documents.
pub fn translate(
    docs: &[(usize, Value)],
) -> Result<(Vec<ServiceLevelObjective>, Vec<String>), DocumentError> {
    let at = |document: usize| move |error: ImportError| DocumentError { document, error };
    // SLIs by name, for `indicatorRef`.
    let mut slis = BTreeMap::new();
    for (document, doc) in docs {
        let root = At::root(doc, "");
        if root.get("kind").and_then(|k| k.str().ok()) == Some("SLI") {
            let name = root.req("metadata").and_then(|m| m.req_str("name"));
            slis.insert(name.map_err(at(*document))?.to_owned(), doc);
        }
    }
    let mut slos = Vec::new();
    let mut notes = Vec::new();
    for (document, doc) in docs {
        let root = At::root(doc, "");
        let v = version(&root).map_err(at(*document))?;
        match root.req_str("kind").map_err(at(*document))? {
            "SLO" => {
                let (s, n) = slo(&root, v, &slis).map_err(at(*document))?;
                slos.extend(s);
                notes.extend(n);
            }
            // Read past: they describe, but do not change, what is measured.
            "Service"
            | "SLI"
            | "DataSource"
            | "AlertNotificationTarget"
            | "AlertPolicy"
            | "AlertCondition" => {}
            other => {
                return Err(at(*document)(ImportError::new(
                    "kind",
                    format!("{other:?} is not an OpenSLO kind"),
                )));
            }
        }
    }
    if slos.is_empty() {
        return Err(DocumentError {
            document: 1,
            error: ImportError::new("kind", "the file holds no OpenSLO SLO"),
        });
    }
    Ok((slos, notes))
}

/// A query as a per-window rate: a `{{.window}}` template is used as
/// written; a counter selector is rated; anything else cannot be windowed.
fn windowed(query: &At, counter: bool) -> Result<(String, bool), ImportError> {
    let text = window_template(query.str()?.trim());
    if text.contains(crate::indicator::WINDOW_PLACEHOLDER) {
        return Ok((text, true));
    }
    match parser::parse(&text) {
        Ok(Expr::VectorSelector(_)) if counter => {
            Ok((format!("sum(rate({text}[$window]))"), false))
        }
        Ok(Expr::VectorSelector(_)) => Err(ImportError::new(
            query.path(),
            "a gauge (counter: false) holds no events to count over a window; Headroom needs counters (counter: true) or a query with {{.window}}",
        )),
        Ok(_) => Err(ImportError::new(
            query.path(),
            format!(
                "{text:?} is already aggregated and has no {{{{.window}}}}: Headroom needs a counter selector it can rate() over each window, or the query written with [{{{{.window}}}}] where the range goes"
            ),
        )),
        Err(e) => Err(ImportError::new(query.path(), format!("not PromQL: {e}"))),
    }
}

/// One side (good, bad, total) of a ratio: its query node.
fn side<'a>(ratio: &At<'a>, key: &str, v: Version) -> Result<Option<At<'a>>, ImportError> {
    let Some(s) = ratio.get(key) else {
        return Ok(None);
    };
    match v {
        Version::V1 => {
            let ms = s
                .get("metricSource")
                .ok_or_else(|| ImportError::new(s.field("metricSource"), "missing"))?;
            ms.refuse_if_set(
                "metricSourceRef",
                "data sources defined elsewhere are not read: write the Prometheus query inline",
            )?;
            let t = ms.req("type")?;
            if !t.str()?.eq_ignore_ascii_case("prometheus") {
                return Err(ImportError::new(
                    t.path(),
                    format!("{:?}: only Prometheus sources can be imported", t.str()?),
                ));
            }
            ms.req("spec")?.req("query").map(Some)
        }
        Version::V1Alpha => {
            let src = s.req("source")?;
            if !src.str()?.eq_ignore_ascii_case("prometheus") {
                return Err(ImportError::new(
                    src.path(),
                    format!("{:?}: only Prometheus sources can be imported", src.str()?),
                ));
            }
            if let Some(qt) = s.get("queryType")
                && !qt.str()?.eq_ignore_ascii_case("promql")
            {
                return Err(ImportError::new(
                    qt.path(),
                    "only promql queries can be imported",
                ));
            }
            s.req("query").map(Some)
        }
    }
}

struct Ratio {
    errors: String,
    total: String,
    errors_field: String,
    total_field: String,
}

fn ratio(r: &At, v: Version) -> Result<Ratio, ImportError> {
    r.refuse_if_set(
        "rawType",
        "a raw ratio cannot be split into the error and total rates Headroom needs",
    )?;
    r.refuse_if_set(
        "raw",
        "a raw ratio cannot be split into the error and total rates Headroom needs",
    )?;
    let counter = match v {
        Version::V1 => r.opt_bool("counter")?.unwrap_or(false),
        // v1alpha has no such field in practice; its queries carry the window.
        Version::V1Alpha => r.opt_bool("counter")?.unwrap_or(true),
    };
    let total_q =
        side(r, "total", v)?.ok_or_else(|| ImportError::new(r.field("total"), "missing"))?;
    let (total, total_tpl) = windowed(&total_q, counter)?;
    if let Some(bad_q) = side(r, "bad", v)? {
        let (bad, _) = windowed(&bad_q, counter)?;
        return Ok(Ratio {
            errors: bad,
            total,
            errors_field: bad_q.path().to_owned(),
            total_field: total_q.path().to_owned(),
        });
    }
    let good_q = side(r, "good", v)?
        .ok_or_else(|| ImportError::new(r.path(), "needs good or bad beside total"))?;
    let (good, good_tpl) = windowed(&good_q, counter)?;
    let errors = if total_tpl || good_tpl {
        format!("({total}) - ({good})")
    } else {
        format!("{total} - {good}")
    };
    Ok(Ratio {
        errors,
        total,
        errors_field: good_q.path().to_owned(),
        total_field: total_q.path().to_owned(),
    })
}

/// The indicator's ratio (v1): inline, or an SLI of the file by name.
fn v1_ratio(spec: &At, slis: &BTreeMap<String, &Value>) -> Result<Ratio, ImportError> {
    let sli = match (spec.get("indicator"), spec.get("indicatorRef")) {
        (Some(i), _) => i,
        (None, Some(r)) => {
            let name = r.str()?;
            let doc = slis.get(name).ok_or_else(|| {
                ImportError::new(
                    r.path(),
                    format!("names SLI {name:?}, which is not in this file: put the SLI document beside the SLO"),
                )
            })?;
            At::root(doc, &format!("(SLI {name})"))
        }
        (None, None) => {
            return Err(ImportError::new(spec.field("indicator"), "missing"));
        }
    };
    let s = sli.req("spec")?;
    if s.get("thresholdMetric").is_some() {
        return Err(ImportError::new(
            s.field("thresholdMetric"),
            "a threshold metric is judged per time slice, not counted as good and bad events; Headroom's SLOs count events",
        ));
    }
    let r = s.get("ratioMetric").ok_or_else(|| {
        ImportError::new(
            s.field("ratioMetric"),
            "missing: only ratio metrics can be imported",
        )
    })?;
    ratio(&r, Version::V1)
}

/// v1: `timeWindow`; v1alpha: `timeWindows` with count and unit.
fn period(spec: &At, v: Version) -> Result<(String, String), ImportError> {
    let key = match v {
        Version::V1 => "timeWindow",
        Version::V1Alpha => "timeWindows",
    };
    let list = spec.req(key)?.seq()?;
    let [tw] = list.as_slice() else {
        return Err(ImportError::new(
            spec.field(key),
            "exactly one time window can be imported",
        ));
    };
    tw.refuse_if_set(
        "calendar",
        "calendar-aligned windows restart at fixed dates; Headroom's window is rolling",
    )?;
    let rolling = tw.opt_bool("isRolling")?;
    if rolling == Some(false) || (v == Version::V1 && rolling.is_none()) {
        return Err(ImportError::new(
            tw.field("isRolling"),
            "only rolling windows (isRolling: true) can be imported",
        ));
    }
    let (text, field) = match v {
        Version::V1 => (tw.req_str("duration")?.to_owned(), tw.field("duration")),
        Version::V1Alpha => {
            let count = tw.req("count")?.number()?;
            let unit_node = tw.req("unit")?;
            let unit = match unit_node.str()? {
                "Second" => "s",
                "Minute" => "m",
                "Hour" => "h",
                "Day" => "d",
                "Week" => "w",
                other => {
                    return Err(ImportError::new(
                        unit_node.path(),
                        format!(
                            "{other:?}: months, quarters and years vary in length; give the window in days or weeks"
                        ),
                    ));
                }
            };
            if count.fract() != 0.0 || count < 1.0 {
                return Err(ImportError::new(
                    tw.field("count"),
                    "must be a whole number above 0",
                ));
            }
            (format!("{count}{unit}"), tw.field("count"))
        }
    };
    parse_positive_duration(&text).map_err(|e| ImportError::new(&field, e.to_string()))?;
    Ok((text, field))
}

/// Headroom's default tiers for the period, all disabled (see the module
/// comment).
fn silent_tiers(period: &str) -> Vec<BurnRateTierSpec> {
    let Ok(p) = crate::duration::parse_duration(period) else {
        return Vec::new();
    };
    crate::budget::default_tiers(p)
        .into_iter()
        .map(|t| BurnRateTierSpec {
            name: t.name,
            severity: t.severity,
            budget_percent: t.budget_fraction * 100.0,
            long_window: format_duration(t.long),
            short_window: format_duration(t.short),
            disabled: true,
            burn_rate: None,
            for_duration: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        })
        .collect()
}

fn slo(
    root: &At,
    v: Version,
    slis: &BTreeMap<String, &Value>,
) -> Result<(Vec<ServiceLevelObjective>, Vec<String>), ImportError> {
    let meta = root.req("metadata")?;
    let name = meta.req_str("name")?;
    let namespace = meta.opt_str("namespace")?;
    let spec = root.req("spec")?;
    let service = spec.req_str("service")?;
    spec.refuse_if_set(
        "alertPolicies",
        "OpenSLO alert policies are not translated: remove them and state burn-rate tiers in the imported SLO's spec.alerting.tiers",
    )?;
    let method = spec.get("budgetingMethod");
    match method.as_ref().map(|m| m.str()).transpose()? {
        Some("Occurrences") | None if v == Version::V1Alpha => {}
        Some("Occurrences") => {}
        Some(other) => {
            return Err(ImportError::new(
                spec.field("budgetingMethod"),
                format!(
                    "{other:?}: Headroom budgets occurrences (good events over all events), not time slices"
                ),
            ));
        }
        None => return Err(ImportError::new(spec.field("budgetingMethod"), "missing")),
    }
    let (window, window_field) = period(&spec, v)?;
    let objectives = spec.req("objectives")?.seq()?;
    if objectives.is_empty() {
        return Err(ImportError::new(spec.field("objectives"), "empty"));
    }
    let shared = match v {
        Version::V1 => Some(v1_ratio(&spec, slis)?),
        Version::V1Alpha => None,
    };
    let mut out = Vec::new();
    for (i, o) in objectives.iter().enumerate() {
        for (key, why) in [
            (
                "op",
                "a threshold objective compares a metric's value per time slice; Headroom counts events",
            ),
            (
                "value",
                "a threshold objective compares a metric's value per time slice; Headroom counts events",
            ),
            (
                "timeSliceTarget",
                "time-slice objectives are not counted as events",
            ),
            (
                "timeSliceWindow",
                "time-slice objectives are not counted as events",
            ),
            (
                "indicator",
                "per-objective indicators (composite SLOs) are not translated",
            ),
            (
                "indicatorRef",
                "per-objective indicators (composite SLOs) are not translated",
            ),
            ("compositeWeight", "composite SLOs are not translated"),
        ] {
            o.refuse_if_set(key, why)?;
        }
        let objective = match (o.get("target"), o.get("targetPercent")) {
            (Some(_), Some(_)) => {
                return Err(ImportError::new(
                    o.path(),
                    "set target or targetPercent, not both",
                ));
            }
            (Some(t), None) => (t.number()? * 100.0, t.path().to_owned()),
            (None, Some(t)) => (t.number()?, t.path().to_owned()),
            (None, None) => return Err(ImportError::new(o.field("target"), "missing")),
        };
        // 0.999 × 100 is 99.89999999999999 in binary; keep what was meant.
        let percent = (objective.0 * 1e9).round() / 1e9;
        if !(percent > 0.0 && percent < 100.0) {
            return Err(ImportError::new(
                objective.1,
                format!("{percent}% is not strictly between 0 and 100 percent"),
            ));
        }
        let r = match (&shared, v) {
            (Some(r), _) => Ratio {
                errors: r.errors.clone(),
                total: r.total.clone(),
                errors_field: r.errors_field.clone(),
                total_field: r.total_field.clone(),
            },
            (None, _) => ratio(&o.req("ratioMetrics")?, v)?,
        };
        let slo_name = if objectives.len() == 1 {
            name.to_owned()
        } else {
            format!("{name}-{i}")
        };
        let mut slo = ServiceLevelObjective::new(
            &slo_name,
            ServiceLevelObjectiveSpec {
                service: service.to_owned(),
                description: spec.opt_str("description")?.map(str::to_owned),
                objective: percent,
                window: window.clone(),
                indicator: Indicator {
                    ratio: Some(Box::new(RatioIndicator {
                        errors: r.errors,
                        total: r.total,
                    })),
                    ..Default::default()
                },
                alerting: Some(Box::new(Alerting {
                    tiers: Some(silent_tiers(&window)),
                    ..Default::default()
                })),
                min_traffic_per_second: None,
            },
        );
        slo.metadata.namespace = namespace.map(str::to_owned);
        check(
            &slo,
            &Blame {
                name: meta.field("name"),
                namespace: meta.field("namespace"),
                errors: r.errors_field,
                total: r.total_field,
                window: window_field.clone(),
                tiers: window_field.clone(),
                labels: meta.field("labels"),
                alert_name: meta.field("name"),
            },
        )?;
        out.push(slo);
    }
    let notes = vec![format!(
        "{name}: OpenSLO states no alerts without alertPolicies; its burn-rate tiers are imported disabled (set disabled: false to alert)"
    )];
    Ok((out, notes))
}
