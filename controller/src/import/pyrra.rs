//! Pyrra's `ServiceLevelObjective` (`pyrra.dev/v1alpha1`), as its
//! Kubernetes and filesystem modes read it.
//!
//! Pyrra's burn-rate alerts are four tiers whose windows scale with the SLO
//! window (1h/5m at 28d) and whose factors are fixed (14, 7, 2, 1), each with
//! a `for:` duration (`slo/rules.go`, `Windows`). They are translated tier by
//! tier, with the factor as the tier's `burnRate`, its `for:`, its alert
//! name and its labels (`severity`, `long`, `short`, `exhaustion`, the
//! `pyrra.dev/`-prefixed labels of the object and the total metric's
//! equality matchers), so the same alert fires at the same time with the
//! same routing.

use std::collections::BTreeMap;
use std::time::Duration;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use serde_yaml::Value;

use crate::duration::{format_duration, parse_positive_duration};
use crate::resources::slo::{
    AbsentAlertSpec, Alerting, BurnRateTierSpec, Indicator, RatioIndicator, ServiceLevelObjective,
    ServiceLevelObjectiveSpec, Severity,
};

use super::ImportError;
use super::check::{Blame, check};
use super::node::At;

/// Labels and annotations with this prefix are copied, without it, onto
/// Pyrra's rules (`PropagationLabelsPrefix`).
const PROPAGATION_PREFIX: &str = "pyrra.dev/";

/// Pyrra's burn-rate alert name when `alerting.name` is unset.
const DEFAULT_ALERT_NAME: &str = "ErrorBudgetBurn";

/// Pyrra's absent alert name when `alerting.absentName` is unset.
const DEFAULT_ABSENT_NAME: &str = "SLOMetricAbsent";

/// Pyrra's `AbsentDuration`: how long a 100% error rate takes to trip the
/// fastest tier's long window, plus that tier's `for:`, to the minute.
fn absent_duration(period: Duration, objective_percent: f64) -> Duration {
    let Some(fastest) = windows(period).into_iter().next() else {
        return Duration::ZERO;
    };
    let threshold = fastest.factor * (1.0 - objective_percent / 100.0);
    // Go converts the float seconds to a whole number of seconds first.
    let secs = (threshold * fastest.long.as_secs_f64()) as u64;
    round_minute((Duration::from_secs(secs) + fastest.for_duration).as_nanos())
}

/// One of Pyrra's burn-rate windows for an SLO window.
#[derive(Clone, Debug, PartialEq)]
pub struct PyrraWindow {
    pub critical: bool,
    pub for_duration: Duration,
    pub long: Duration,
    pub short: Duration,
    pub factor: f64,
}

/// Go's `time.Duration.Round(time.Minute)`: half away from zero.
fn round_minute(nanos: u128) -> Duration {
    let minute = 60_000_000_000u128;
    let r = (nanos + minute / 2) / minute * minute;
    Duration::from_nanos(u64::try_from(r).unwrap_or(u64::MAX))
}

/// Pyrra's `Windows(sloWindow)`: each window is the SLO window divided by
/// an integer (Go integer division of nanoseconds), rounded to the minute.
pub fn windows(slo_window: Duration) -> Vec<PyrraWindow> {
    let w = slo_window.as_nanos();
    let d = |div: u128| round_minute(w / div);
    vec![
        PyrraWindow {
            critical: true,
            for_duration: d(28 * 24 * 30),
            long: d(28 * 24),
            short: d(28 * 24 * 12),
            factor: 14.0,
        },
        PyrraWindow {
            critical: true,
            for_duration: d(28 * 24 * 4),
            long: d(28 * 4),
            short: d(28 * 24 * 2),
            factor: 7.0,
        },
        PyrraWindow {
            critical: false,
            for_duration: d(28 * 24),
            long: d(28),
            short: d(28 * 12),
            factor: 2.0,
        },
        PyrraWindow {
            critical: false,
            for_duration: d(28 * 8),
            long: d(7),
            short: d(28 * 4),
            factor: 1.0,
        },
    ]
}

/// The tiers' names, and the key of `alerting.severities` for each.
const TIERS: [(&str, &str); 4] = [
    ("fast-burn", "fastBurn"),
    ("medium-burn", "mediumBurn"),
    ("slow-burn", "slowBurn"),
    ("long-term-burn", "longTermBurn"),
];

/// A metric of Pyrra's indicator: a plain vector selector, as Pyrra demands.
struct Selector {
    text: String,
    equal: BTreeMap<String, String>,
}

fn selector(node: &At) -> Result<Selector, ImportError> {
    let m = node.req("metric")?;
    let text = m.str()?.trim().to_owned();
    let expr = parser::parse(&text).map_err(|e| ImportError::new(m.path(), e))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(ImportError::new(
            m.path(),
            "must be a metric selector such as http_requests_total{job=\"api\"}, as Pyrra requires",
        ));
    };
    let equal = vs
        .matchers
        .matchers
        .iter()
        .filter(|m| matches!(m.op, MatchOp::Equal) && m.name != "__name__")
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    Ok(Selector { text, equal })
}

fn rate(s: &Selector) -> String {
    format!("sum(rate({}[$window]))", s.text)
}

/// What one indicator translates into: errors, total, the total's metric
/// (for Pyrra's labels) and the source fields to blame.
struct Translated {
    errors: String,
    total: String,
    /// The metrics Pyrra's absent alerts watch.
    absent: Vec<String>,
    total_selector: Selector,
    errors_field: String,
    total_field: String,
}

fn indicator(spec: &At) -> Result<Translated, ImportError> {
    let ind = spec.req("indicator")?;
    ind.refuse_if_set(
        "latencyNative",
        "native histograms are not read by Headroom's indicators, which count classic buckets or counters",
    )?;
    let no_grouping = |n: &At| {
        n.refuse_if_set(
            "grouping",
            "a grouped SLO is one objective per group; Headroom's SLO is one series: write one SLO per group value",
        )
    };
    if let Some(r) = ind.get("ratio") {
        no_grouping(&r)?;
        let errors = selector(&r.req("errors")?)?;
        let total = selector(&r.req("total")?)?;
        // Pyrra's burn rate: sum(rate(errors[w])) / sum(rate(total[w])).
        return Ok(Translated {
            errors: rate(&errors),
            total: rate(&total),
            absent: vec![total.text.clone()],
            errors_field: r.field("errors.metric"),
            total_field: r.field("total.metric"),
            total_selector: total,
        });
    }
    if let Some(l) = ind.get("latency") {
        no_grouping(&l)?;
        let success = selector(&l.req("success")?)?;
        let total = selector(&l.req("total")?)?;
        // Pyrra: (total − success) / total, over rates.
        return Ok(Translated {
            errors: format!("{} - {}", rate(&total), rate(&success)),
            total: rate(&total),
            absent: vec![total.text.clone(), success.text.clone()],
            errors_field: l.field("success.metric"),
            total_field: l.field("total.metric"),
            total_selector: total,
        });
    }
    if let Some(b) = ind.get("bool_gauge") {
        no_grouping(&b)?;
        let gauge = selector(&b)?;
        // Pyrra: (count − sum) / count of the 0/1 samples in the window.
        let count = format!("sum(count_over_time({}[$window]))", gauge.text);
        let sum = format!("sum(sum_over_time({}[$window]))", gauge.text);
        return Ok(Translated {
            errors: format!("{count} - {sum}"),
            total: count,
            absent: vec![gauge.text.clone()],
            errors_field: b.field("metric"),
            total_field: b.field("metric"),
            total_selector: gauge,
        });
    }
    Err(ImportError::new(
        ind.path(),
        "needs one of ratio, latency or bool_gauge",
    ))
}

/// Translate one Pyrra document.
pub fn translate(doc: Value) -> Result<(Vec<ServiceLevelObjective>, Vec<String>), ImportError> {
    let root = At::root(&doc, "");
    let api = root.req_str("apiVersion")?;
    let kind = root.req_str("kind")?;
    if !api.starts_with("pyrra.dev/") || kind != "ServiceLevelObjective" {
        return Err(ImportError::new(
            "kind",
            format!("{api} {kind}: expected a pyrra.dev/v1alpha1 ServiceLevelObjective"),
        ));
    }
    let meta = root.req("metadata")?;
    let name = meta.req_str("name")?;
    let namespace = meta.opt_str("namespace")?;
    let meta_labels = meta.opt_string_map("labels")?;
    let meta_annotations = meta.opt_string_map("annotations")?;
    let spec = root.req("spec")?;
    let target = spec.req("target")?;
    let objective = target.number()?;
    if !(objective > 0.0 && objective < 100.0) {
        return Err(ImportError::new(
            target.path(),
            format!("{objective} is not strictly between 0 and 100 percent"),
        ));
    }
    let window_node = spec.req("window")?;
    let period = parse_positive_duration(window_node.str()?)
        .map_err(|e| ImportError::new(window_node.path(), e.to_string()))?;
    if spec.opt_bool("performanceOverAccuracy")? == Some(true) {
        return Err(ImportError::new(
            spec.field("performanceOverAccuracy"),
            "Pyrra then reads the window from 5m increases in a separate rule group; Headroom reads its own recording rules: remove it to import",
        ));
    }
    if spec.opt_str("partial_response_strategy")? == Some("warn") {
        return Err(ImportError::new(
            spec.field("partial_response_strategy"),
            "\"warn\" makes Thanos Ruler evaluate rules on partial data; Headroom's rules have no such setting",
        ));
    }
    let t = indicator(&spec)?;

    let alerting = spec.get("alerting");
    let flag = |key: &str| -> Result<Option<bool>, ImportError> {
        alerting
            .as_ref()
            .map(|a| a.opt_bool(key))
            .transpose()
            .map(Option::flatten)
    };
    // `disabled` (deprecated) and `burnrates: false` both keep the
    // recording rules and drop the burn-rate alerts.
    let quiet = flag("disabled")? == Some(true) || flag("burnrates")? == Some(false);
    let alert_name = match &alerting {
        Some(a) => a.opt_str("name")?.filter(|n| !n.is_empty()),
        None => None,
    };
    let severities = match &alerting {
        Some(a) => a
            .get("severities")
            .map(|s| s.string_map())
            .transpose()?
            .unwrap_or_default(),
        None => BTreeMap::new(),
    };
    // Pyrra's absent alerts: on unless `absent: false`, and independent of
    // `disabled` and `burnrates`.
    let absent_name = match &alerting {
        Some(a) => a.opt_str("absentName")?.filter(|n| !n.is_empty()),
        None => None,
    };
    let absent_severity = severities
        .get("absent")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| "critical".into());
    let absent = if flag("absent")? == Some(false) {
        Vec::new()
    } else {
        let for_duration = format_duration(absent_duration(period, objective));
        t.absent
            .iter()
            .map(|selector| AbsentAlertSpec {
                alert_name: absent_name.unwrap_or(DEFAULT_ABSENT_NAME).to_owned(),
                selector: selector.clone(),
                for_duration: Some(for_duration.clone()),
                labels: BTreeMap::from([("severity".to_owned(), absent_severity.clone())]),
            })
            .collect()
    };

    // Pyrra's common labels: the SLO name and the propagated object labels;
    // its alerts add the total metric's equality matchers. `namespace` and
    // `slo` stay Headroom's (the same values when the object is namespaced
    // as the SLO is).
    let mut labels: BTreeMap<String, String> = meta_labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PROPAGATION_PREFIX)?.to_owned(), v.clone())))
        .collect();
    labels.extend(t.total_selector.equal.clone());
    labels.remove("namespace");
    labels.remove("slo");
    let annotations: BTreeMap<String, String> = meta_annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PROPAGATION_PREFIX)?.to_owned(), v.clone())))
        .collect();

    let tiers = windows(period)
        .into_iter()
        .zip(TIERS)
        .map(|(w, (tier_name, severity_key))| {
            let severity_label = severities
                .get(severity_key)
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| if w.critical { "critical" } else { "warning" }.into());
            let exhaustion = Duration::from_secs((period.as_secs_f64() / w.factor) as u64);
            BurnRateTierSpec {
                name: tier_name.into(),
                severity: if w.critical {
                    Severity::Page
                } else {
                    Severity::Ticket
                },
                // Describes the tier; the factor below is what alerts.
                budget_percent: (w.factor * w.long.as_secs_f64() / period.as_secs_f64() * 100.0)
                    .min(100.0),
                long_window: format_duration(w.long),
                short_window: format_duration(w.short),
                disabled: quiet,
                burn_rate: Some(w.factor),
                for_duration: (!w.for_duration.is_zero()).then(|| format_duration(w.for_duration)),
                labels: BTreeMap::from([
                    ("severity".to_owned(), severity_label),
                    ("long".to_owned(), format_duration(w.long)),
                    ("short".to_owned(), format_duration(w.short)),
                    ("exhaustion".to_owned(), format_duration(exhaustion)),
                ]),
                annotations: BTreeMap::new(),
            }
        })
        .collect();

    let mut slo = ServiceLevelObjective::new(
        name,
        ServiceLevelObjectiveSpec {
            // Pyrra has no service field; a `service` label is the closest.
            service: meta_labels
                .get("service")
                .map_or(name, String::as_str)
                .to_owned(),
            description: spec
                .opt_str("description")?
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
            objective,
            window: window_node.str()?.to_owned(),
            indicator: Indicator {
                ratio: Some(Box::new(RatioIndicator {
                    errors: t.errors,
                    total: t.total,
                })),
                ..Default::default()
            },
            alerting: Some(Box::new(Alerting {
                // A propagated `runbook_url` annotation is kept as such.
                runbook_url: None,
                labels,
                annotations,
                // Pyrra's default name, so routes on it keep matching.
                alert_name: Some(alert_name.unwrap_or(DEFAULT_ALERT_NAME).to_owned()),
                tiers: Some(tiers),
                absent,
                prometheus_rule: None,
            })),
            min_traffic_per_second: None,
        },
    );
    slo.metadata.namespace = namespace.map(str::to_owned);
    check(
        &slo,
        &Blame {
            name: "metadata.name".into(),
            namespace: "metadata.namespace".into(),
            errors: t.errors_field,
            total: t.total_field,
            window: window_node.path().to_owned(),
            tiers: window_node.path().to_owned(),
            labels: "metadata.labels (pyrra.dev/…) or the total metric's matchers".into(),
            alert_name: "spec.alerting.name".into(),
        },
    )?;
    Ok((vec![slo], Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u64) -> Duration {
        Duration::from_secs(n * 60)
    }

    #[test]
    fn absent_duration_as_pyrra() {
        // 28d at 99%: 14 × 0.01 × 1h = 504s, + 2m = 10m24s → 10m.
        // 28d at 99.5%: 252s + 2m = 6m12s → 6m. 2w at 99%: 30m → 252s + 1m → 5m.
        let day = 24 * 60;
        for (period, objective, want) in [
            (28 * day, 99.0, 10),
            (28 * day, 99.5, 6),
            (14 * day, 99.0, 5),
        ] {
            assert_eq!(
                absent_duration(m(period), objective),
                m(want),
                "{period} {objective}"
            );
        }
    }

    #[test]
    fn windows_match_pyrra_for_common_periods() {
        // (period, [(for, long, short)]) as Pyrra's Windows gives them.
        let day = 24 * 60;
        let table = [
            (
                28 * day,
                [
                    (2, 60, 5),
                    (15, 360, 30),
                    (60, day, 120),
                    (180, 4 * day, 360),
                ],
            ),
            (
                7 * day,
                // 7d/20160 = 30s rounds up to 1m; 7d/8064 = 75s rounds to 1m.
                [(1, 15, 1), (4, 90, 8), (15, 360, 30), (45, day, 90)],
            ),
        ];
        for (period, expect) in table {
            let got = windows(m(period));
            for (w, (f, l, s)) in got.iter().zip(expect) {
                assert_eq!(
                    (w.for_duration, w.long, w.short),
                    (m(f), m(l), m(s)),
                    "{period}"
                );
            }
        }
    }
}
