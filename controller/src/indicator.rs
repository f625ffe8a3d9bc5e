//! Turning an SLO's indicator into PromQL.
//!
//! The API server checks the shape of a spec; only the operator can check
//! that a query is PromQL. This module builds the per-window queries and
//! parses each with `promql-parser`, so a typo is reported in the SLO's
//! status (reason `InvalidQuery`) instead of surfacing as "no data".

use promql_parser::parser;
use thiserror::Error;

use crate::resources::slo::{Indicator, LatencyIndicator, RatioIndicator};

/// Placeholder users write where the range goes.
pub const WINDOW_PLACEHOLDER: &str = "$window";

/// Why an indicator cannot be turned into a query.
#[derive(Debug, Error, PartialEq)]
pub enum IndicatorError {
    #[error("spec.indicator must set exactly one of ratio, latency, sloth or pyrra")]
    NotExactlyOne,
    #[error(
        "{field} must contain $window where the range goes, e.g. rate(http_requests_total[$window])"
    )]
    MissingWindow { field: &'static str },
    #[error("{field} is not valid PromQL: {message}")]
    InvalidPromql {
        field: &'static str,
        message: String,
    },
    #[error("spec.indicator.latency.threshold {0:?} is not a duration such as 100ms or 0.25s")]
    InvalidThreshold(String),
    #[error("{field} {value:?} contains characters that cannot appear in a label value")]
    InvalidLabelValue { field: &'static str, value: String },
}

/// The queries that measure one window: the error ratio and, where the
/// indicator has one, the rate of all events (for the traffic floor).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowQueries {
    pub error_ratio: String,
    pub total_rate: Option<String>,
    /// The bad events' rate alone, where the indicator has one (not for
    /// Sloth's or Pyrra's recorded ratios): long windows are tiled from
    /// the error and request rates of shorter ones (`long_windows.rs`).
    pub error_rate: Option<String>,
}

/// Replace every `$window` with a Prometheus range such as `5m`.
pub fn substitute_window(query: &str, window: &str) -> String {
    query.replace(WINDOW_PLACEHOLDER, window)
}

fn check(field: &'static str, query: &str) -> Result<(), IndicatorError> {
    parser::parse(query)
        .map(|_| ())
        .map_err(|message| IndicatorError::InvalidPromql { field, message })
}

/// Label values are quoted by us; refuse quotes and backslashes rather than
/// escaping them, since a legitimate id never contains them.
fn label_value(field: &'static str, value: &str) -> Result<(), IndicatorError> {
    if value.contains(['"', '\\', '\n']) {
        return Err(IndicatorError::InvalidLabelValue {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// The queries for `window` (a Prometheus duration like `5m`).
pub fn window_queries(
    indicator: &Indicator,
    window: &str,
) -> Result<WindowQueries, IndicatorError> {
    match (
        &indicator.ratio,
        &indicator.latency,
        &indicator.sloth,
        &indicator.pyrra,
    ) {
        (Some(ratio), None, None, None) => ratio_queries(ratio, window),
        (None, Some(latency), None, None) => latency_queries(latency, window),
        (None, None, Some(sloth), None) => {
            label_value("spec.indicator.sloth.id", &sloth.id)?;
            let q = format!(
                "slo:sli_error:ratio_rate{window}{{sloth_id=\"{}\"}}",
                sloth.id
            );
            check("spec.indicator.sloth.id", &q)?;
            Ok(WindowQueries {
                error_ratio: q,
                total_rate: None,
                error_rate: None,
            })
        }
        (None, None, None, Some(pyrra)) => {
            label_value("spec.indicator.pyrra.name", &pyrra.name)?;
            let name = match &pyrra.metric {
                Some(metric) => {
                    label_value("spec.indicator.pyrra.metric", metric)?;
                    format!("__name__=\"{metric}:burnrate{window}\"")
                }
                None => format!("__name__=~\".+:burnrate{window}\""),
            };
            let q = format!("max({{{name},slo=\"{}\"}})", pyrra.name);
            check("spec.indicator.pyrra", &q)?;
            Ok(WindowQueries {
                error_ratio: q,
                total_rate: None,
                error_rate: None,
            })
        }
        _ => Err(IndicatorError::NotExactlyOne),
    }
}

fn ratio_queries(ratio: &RatioIndicator, window: &str) -> Result<WindowQueries, IndicatorError> {
    for (field, q) in [
        ("spec.indicator.ratio.errors", &ratio.errors),
        ("spec.indicator.ratio.total", &ratio.total),
    ] {
        if !q.contains(WINDOW_PLACEHOLDER) {
            return Err(IndicatorError::MissingWindow { field });
        }
        check(field, &substitute_window(q, window))?;
    }
    let errors = substitute_window(&ratio.errors, window);
    let total = substitute_window(&ratio.total, window);
    Ok(WindowQueries {
        error_ratio: format!("({errors}) / ({total})"),
        total_rate: Some(total),
        error_rate: Some(errors),
    })
}

/// Bucket bounds are floats rendered by client libraries in different ways
/// (`0.25`, `1`, `1.0`); match every rendering of the same number.
fn le_matcher(seconds: f64) -> String {
    let shortest = format!("{seconds}");
    if shortest.contains('.') {
        format!("{}0*", shortest.replace('.', "\\\\."))
    } else {
        format!("{shortest}(\\\\.0+)?")
    }
}

fn latency_queries(
    latency: &LatencyIndicator,
    window: &str,
) -> Result<WindowQueries, IndicatorError> {
    let seconds = threshold_seconds(&latency.threshold)
        .ok_or_else(|| IndicatorError::InvalidThreshold(latency.threshold.clone()))?;
    let selector = latency
        .selector
        .as_deref()
        .unwrap_or("")
        .trim()
        .trim_matches(['{', '}']);
    let sep = if selector.is_empty() { "" } else { "," };
    let h = &latency.histogram;
    let good = format!(
        "sum(rate({h}_bucket{{{selector}{sep}le=~\"{}\"}}[{window}]))",
        le_matcher(seconds)
    );
    let total = format!("sum(rate({h}_count{{{selector}}}[{window}]))");
    let error_ratio = format!("1 - ({good}) / ({total})");
    check("spec.indicator.latency", &error_ratio)?;
    Ok(WindowQueries {
        error_ratio,
        error_rate: Some(format!("({total}) - ({good})")),
        total_rate: Some(total),
    })
}

/// `250ms` → 0.25, `1s` → 1.0. Thresholds are small, so only ms, s and m.
fn threshold_seconds(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value > 0.0).then_some(value * scale)
}

/// Check every query an indicator produces, without Prometheus.
pub fn validate(indicator: &Indicator) -> Result<(), IndicatorError> {
    window_queries(indicator, "5m").map(|_| ())
}

/// What checking an SLO's indicator found: `Ok(has_total)` (whether it has
/// a traffic query) or the parser's message.
pub type Checked = Result<bool, String>;

/// (namespace, name) of an SLO.
type SloKey = (String, String);

/// Indicator checks remembered per SLO and generation: parsing every SLO's
/// PromQL on every evaluation would cost most of a cycle's CPU at ten
/// thousand SLOs, and a spec only changes with its generation.
#[derive(Default)]
pub struct CheckCache {
    entries: std::sync::Mutex<std::collections::HashMap<SloKey, (Option<i64>, Checked)>>,
}

impl CheckCache {
    /// Bound on remembered SLOs; past it the cache starts over (names of
    /// deleted SLOs would otherwise stay forever).
    const MAX: usize = 1 << 16;

    pub fn check(
        &self,
        key: (String, String),
        generation: Option<i64>,
        indicator: &Indicator,
    ) -> Checked {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, checked)) = entries.get(&key)
            && *g == generation
            && generation.is_some()
        {
            return checked.clone();
        }
        let checked = window_queries(indicator, "5m")
            .map(|q| q.total_rate.is_some())
            .map_err(|e| e.to_string());
        if entries.len() >= Self::MAX {
            entries.clear();
        }
        entries.insert(key, (generation, checked.clone()));
        checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::slo::{PyrraIndicator, SlothIndicator};

    fn ratio(errors: &str, total: &str) -> Indicator {
        Indicator {
            ratio: Some(Box::new(RatioIndicator {
                errors: errors.into(),
                total: total.into(),
            })),
            ..Default::default()
        }
    }

    fn latency(selector: Option<&str>, threshold: &str) -> Indicator {
        Indicator {
            latency: Some(Box::new(LatencyIndicator {
                histogram: "http_request_duration_seconds".into(),
                selector: selector.map(Into::into),
                threshold: threshold.into(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn ratio_substitutes_window_everywhere() {
        let q = window_queries(
            &ratio(
                r#"sum(rate(http_requests_total{code=~"5.."}[$window]))"#,
                "sum(rate(http_requests_total[$window]))",
            ),
            "1h",
        )
        .expect("valid");
        assert_eq!(
            q.error_ratio,
            r#"(sum(rate(http_requests_total{code=~"5.."}[1h]))) / (sum(rate(http_requests_total[1h])))"#
        );
        assert_eq!(
            q.total_rate.as_deref(),
            Some("sum(rate(http_requests_total[1h]))")
        );
    }

    #[test]
    fn invalid_indicators_name_the_field() {
        let cases: Vec<(Indicator, &str)> = vec![
            (
                ratio("sum(rate(x[5m]))", "sum(rate(y[$window]))"),
                "spec.indicator.ratio.errors must contain $window",
            ),
            (
                ratio("sum(rate(x[$window]))", "sum(rate(y[$window])"),
                "spec.indicator.ratio.total is not valid PromQL",
            ),
            (
                ratio("sum(rate(x{[$window]))", "sum(rate(y[$window]))"),
                "spec.indicator.ratio.errors is not valid PromQL",
            ),
            (latency(None, "fast"), "spec.indicator.latency.threshold"),
            (
                latency(Some("job=checkout"), "250ms"),
                "spec.indicator.latency is not valid PromQL",
            ),
            (
                Indicator {
                    sloth: Some(Box::new(SlothIndicator { id: "a\"b".into() })),
                    ..Default::default()
                },
                "spec.indicator.sloth.id",
            ),
            (Indicator::default(), "exactly one"),
            (
                Indicator {
                    sloth: Some(Box::new(SlothIndicator { id: "a".into() })),
                    pyrra: Some(Box::new(PyrraIndicator {
                        name: "b".into(),
                        metric: None,
                    })),
                    ..Default::default()
                },
                "exactly one",
            ),
        ];
        for (indicator, needle) in cases {
            let err = validate(&indicator).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }

    #[test]
    fn latency_counts_buckets_at_or_below_threshold() {
        let q = window_queries(&latency(Some(r#"job="checkout""#), "250ms"), "5m").expect("valid");
        assert_eq!(
            q.error_ratio,
            r#"1 - (sum(rate(http_request_duration_seconds_bucket{job="checkout",le=~"0\\.250*"}[5m]))) / (sum(rate(http_request_duration_seconds_count{job="checkout"}[5m])))"#
        );
        let q = window_queries(&latency(None, "1s"), "5m").expect("valid");
        assert!(
            q.error_ratio.contains(r#"{le=~"1(\\.0+)?"}"#),
            "{}",
            q.error_ratio
        );
    }

    #[test]
    fn sloth_and_pyrra_read_their_recording_rules() {
        let sloth = Indicator {
            sloth: Some(Box::new(SlothIndicator {
                id: "checkout-availability".into(),
            })),
            ..Default::default()
        };
        assert_eq!(
            window_queries(&sloth, "5m").expect("valid").error_ratio,
            r#"slo:sli_error:ratio_rate5m{sloth_id="checkout-availability"}"#
        );
        let pyrra = Indicator {
            pyrra: Some(Box::new(PyrraIndicator {
                name: "checkout".into(),
                metric: Some("http_requests".into()),
            })),
            ..Default::default()
        };
        assert_eq!(
            window_queries(&pyrra, "1h").expect("valid").error_ratio,
            r#"max({__name__="http_requests:burnrate1h",slo="checkout"})"#
        );
    }

    #[test]
    fn threshold_units() {
        for (text, want) in [
            ("250ms", Some(0.25)),
            ("1s", Some(1.0)),
            ("2m", Some(120.0)),
            ("0ms", None),
            ("1h", None),
            ("x", None),
        ] {
            assert_eq!(threshold_seconds(text), want, "{text}");
        }
    }
}
