//! From Prometheus figures to an SLO's status: burn rates, budget remaining
//! and the conditions `Ready`, `BudgetAvailable` and `Burning`.
//!
//! Pure: the reconciler gathers the figures, this decides what they mean.
//! Every doubt (no data, too little traffic, an unreadable query, an
//! unreachable Prometheus) yields `BudgetAvailable=Unknown` or `False`,
//! never `True`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::budget;
use crate::conditions::{self, Status};
use crate::resources::slo::{
    ServiceLevelObjectiveSpec, ServiceLevelObjectiveStatus, Severity, WindowBurnRate,
};

pub use crate::budget::TierPlan;

/// What Prometheus said, per window (keyed by the Prometheus duration text).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Error ratio per window; `None` when Prometheus had no finite value.
    pub error_ratios: BTreeMap<String, Option<f64>>,
    /// Events per second over the shortest window, when the indicator has
    /// a total to count.
    pub traffic_per_second: Option<f64>,
    /// `RecordingRules` or `DirectQuery`.
    pub source: String,
}

/// Why there are no figures at all.
#[derive(Clone, Debug, PartialEq)]
pub enum Unreadable {
    /// The spec cannot be turned into queries.
    InvalidSpec {
        reason: &'static str,
        message: String,
    },
    /// Prometheus did not answer.
    PrometheusUnavailable(String),
    /// Not read this time: the recorded series are missing and every
    /// direct read is taken. The reconciler leaves the status as it is and
    /// tries again shortly; evaluated anyway, it reads as unavailable.
    Deferred,
}

/// The status for `spec` given figures (or why there are none). `previous`
/// supplies the conditions, so transition times move only on flips.
pub fn evaluate(
    spec: &ServiceLevelObjectiveSpec,
    tiers: &[TierPlan],
    period_window: &str,
    figures: Result<&Figures, &Unreadable>,
    previous: &ServiceLevelObjectiveStatus,
    generation: Option<i64>,
    now: Time,
) -> ServiceLevelObjectiveStatus {
    let mut status = ServiceLevelObjectiveStatus {
        conditions: previous.conditions.clone(),
        observed_generation: generation,
        ..Default::default()
    };
    let mut set = |type_: &str, s: Status, reason: &str, message: String| {
        conditions::upsert(
            &mut status.conditions,
            type_,
            s,
            reason,
            message,
            generation,
            now.clone(),
        );
    };
    let figures = match figures {
        Ok(f) => f,
        Err(Unreadable::InvalidSpec { reason, message }) => {
            set("Ready", Status::False, reason, message.clone());
            set(
                "BudgetAvailable",
                Status::Unknown,
                reason,
                "the SLO cannot be evaluated: fix the spec".into(),
            );
            set(
                "Burning",
                Status::Unknown,
                reason,
                "the SLO cannot be evaluated: fix the spec".into(),
            );
            return status;
        }
        Err(Unreadable::Deferred) => {
            return evaluate(
                spec,
                tiers,
                period_window,
                Err(&Unreadable::PrometheusUnavailable(
                    "recording rules not loaded yet and direct reads busy".into(),
                )),
                previous,
                generation,
                now,
            );
        }
        Err(Unreadable::PrometheusUnavailable(message)) => {
            set(
                "Ready",
                Status::False,
                "PrometheusUnavailable",
                message.clone(),
            );
            set(
                "BudgetAvailable",
                Status::Unknown,
                "PrometheusUnavailable",
                "no fresh figures; the budget is unknown".into(),
            );
            set(
                "Burning",
                Status::Unknown,
                "PrometheusUnavailable",
                "no fresh figures".into(),
            );
            return status;
        }
    };

    let objective = spec.objective;
    status.source = Some(figures.source.clone());
    status.traffic_per_second = figures.traffic_per_second;
    status.burn_rates = figures
        .error_ratios
        .iter()
        .filter(|(w, _)| w.as_str() != period_window)
        .map(|(window, ratio)| WindowBurnRate {
            window: window.clone(),
            error_ratio: *ratio,
            burn_rate: ratio.map(|e| round(budget::burn_rate(e, objective))),
        })
        .collect();
    status
        .burn_rates
        .sort_by_key(|w| crate::duration::parse_duration(&w.window).unwrap_or(Duration::MAX));
    // The fastest page tier's long window (1h for 30d, 2m for a 1h SLO):
    // the figure `kubectl get slo` shows whatever the period.
    status.page_burn_rate = tiers
        .iter()
        .filter(|t| t.severity == crate::resources::slo::Severity::Page)
        .min_by_key(|t| t.long)
        .map(|t| crate::duration::format_duration(t.long))
        .and_then(|w| status.burn_rates.iter().find(|b| b.window == w))
        .and_then(|b| b.burn_rate);
    status.error_ratio = figures.error_ratios.get(period_window).copied().flatten();
    status.budget_remaining = status
        .error_ratio
        .map(|e| round(budget::budget_remaining(e, objective)));
    status.data_present =
        !figures.error_ratios.is_empty() && figures.error_ratios.values().all(Option::is_some);
    status.last_evaluated = Some(now.clone());

    set(
        "Ready",
        Status::True,
        "Evaluated",
        format!("read from Prometheus ({})", figures.source),
    );

    let min_traffic = spec.min_traffic_per_second.unwrap_or(0.0);
    let traffic_known = figures.traffic_per_second.is_some();
    let low_traffic = match figures.traffic_per_second {
        Some(t) => t <= 0.0 || t < min_traffic,
        // Sloth/Pyrra rules carry no event counts; only a floor makes that a doubt.
        None => min_traffic > 0.0,
    };
    if !status.data_present {
        let missing: Vec<&str> = figures
            .error_ratios
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(w, _)| w.as_str())
            .collect();
        let msg = format!(
            "no data for window(s) {}; the budget is unknown",
            missing.join(", ")
        );
        set("BudgetAvailable", Status::Unknown, "NoData", msg.clone());
        set("Burning", Status::Unknown, "NoData", msg);
        return status;
    }
    if low_traffic {
        let msg = match figures.traffic_per_second {
            Some(t) if traffic_known => format!(
                "traffic {t:.3}/s is below minTrafficPerSecond {min_traffic}; the budget is unknown"
            ),
            _ => format!(
                "traffic cannot be measured for this indicator and minTrafficPerSecond is {min_traffic}"
            ),
        };
        set("BudgetAvailable", Status::Unknown, "LowTraffic", msg);
    } else {
        match status.budget_remaining {
            Some(r) if r > 0.0 => set(
                "BudgetAvailable",
                Status::True,
                "BudgetRemaining",
                format!("{:.1}% of the error budget remains", r * 100.0),
            ),
            Some(r) => set(
                "BudgetAvailable",
                Status::False,
                "BudgetExhausted",
                format!("the error budget is spent ({:.1}% remaining)", r * 100.0),
            ),
            None => set(
                "BudgetAvailable",
                Status::Unknown,
                "NoData",
                "no error ratio over the window".into(),
            ),
        }
    }

    let rate = |w: Duration| -> Option<f64> {
        let key = crate::duration::format_duration(w);
        figures
            .error_ratios
            .get(&key)
            .copied()
            .flatten()
            .map(|e| budget::burn_rate(e, objective))
    };
    // The same rule the generated alerts use: both windows over BR*.
    let firing: Vec<&TierPlan> = tiers
        .iter()
        .filter(|t| matches!((rate(t.long), rate(t.short)), (Some(l), Some(s)) if crate::budget::alert_fires(t, l, s)))
        .collect();
    if firing.is_empty() {
        set(
            "Burning",
            Status::False,
            "WithinBudget",
            "no burn-rate tier is exceeded on both its windows".into(),
        );
    } else {
        let page = firing.iter().any(|t| t.severity == Severity::Page);
        let names: Vec<String> = firing
            .iter()
            .map(|t| {
                format!(
                    "{} ({:?}, {}/{} over {:.3})",
                    t.name,
                    t.severity,
                    crate::duration::format_duration(t.long),
                    crate::duration::format_duration(t.short),
                    t.threshold
                )
            })
            .collect();
        set(
            "Burning",
            Status::True,
            if page {
                "PageTierExceeded"
            } else {
                "TicketTierExceeded"
            },
            format!("exceeded: {}", names.join(", ")),
        );
    }
    status
}

/// Keep status stable across evaluations that differ only in float noise,
/// so identical figures do not cause a write.
fn round(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// The status without the fields that change on every evaluation; two
/// statuses equal under this need no write.
pub fn same_figures(a: &ServiceLevelObjectiveStatus, b: &ServiceLevelObjectiveStatus) -> bool {
    let strip = |s: &ServiceLevelObjectiveStatus| {
        let mut s = s.clone();
        s.last_evaluated = None;
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::slo::{Indicator, ServiceLevelObjectiveSpec, SlothIndicator};

    fn spec(min_traffic: Option<f64>) -> ServiceLevelObjectiveSpec {
        ServiceLevelObjectiveSpec {
            service: "checkout".into(),
            description: None,
            objective: 99.0,
            window: "1h".into(),
            indicator: Indicator {
                sloth: Some(Box::new(SlothIndicator { id: "x".into() })),
                ..Default::default()
            },
            alerting: None,
            min_traffic_per_second: min_traffic,
        }
    }

    fn tiers() -> Vec<TierPlan> {
        crate::budget::default_tiers(Duration::from_secs(3600))
    }

    fn figures(ratio: Option<f64>, period: Option<f64>, traffic: Option<f64>) -> Figures {
        let mut error_ratios: BTreeMap<String, Option<f64>> = tiers()
            .iter()
            .flat_map(|t| [t.long, t.short])
            .map(|w| (crate::duration::format_duration(w), ratio))
            .collect();
        error_ratios.insert("1h".into(), period);
        Figures {
            error_ratios,
            traffic_per_second: traffic,
            source: "DirectQuery".into(),
        }
    }

    fn conds(s: &ServiceLevelObjectiveStatus) -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    fn at() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_000).expect("valid"))
    }

    /// Spec, figures (or why none), expected (type, status, reason) of the
    /// three conditions.
    type Case<'a> = (
        ServiceLevelObjectiveSpec,
        Result<Figures, &'a Unreadable>,
        [(&'a str, &'a str, &'a str); 3],
    );

    #[test]
    fn every_doubt_is_never_budget_available() {
        let unavailable = Unreadable::PrometheusUnavailable("connection refused".into());
        let invalid = Unreadable::InvalidSpec {
            reason: "InvalidQuery",
            message: "bad".into(),
        };
        let cases: Vec<Case> = vec![
            (
                spec(None),
                Ok(figures(Some(0.001), Some(0.002), Some(50.0))),
                [
                    ("Ready", "True", "Evaluated"),
                    ("BudgetAvailable", "True", "BudgetRemaining"),
                    ("Burning", "False", "WithinBudget"),
                ],
            ),
            (
                spec(None),
                Ok(figures(Some(0.2), Some(0.02), Some(50.0))),
                [
                    ("Ready", "True", "Evaluated"),
                    ("BudgetAvailable", "False", "BudgetExhausted"),
                    ("Burning", "True", "PageTierExceeded"),
                ],
            ),
            (
                spec(None),
                Ok(figures(None, Some(0.002), Some(50.0))),
                [
                    ("Ready", "True", "Evaluated"),
                    ("BudgetAvailable", "Unknown", "NoData"),
                    ("Burning", "Unknown", "NoData"),
                ],
            ),
            (
                spec(Some(10.0)),
                Ok(figures(Some(0.0), Some(0.0), Some(2.0))),
                [
                    ("Ready", "True", "Evaluated"),
                    ("BudgetAvailable", "Unknown", "LowTraffic"),
                    ("Burning", "False", "WithinBudget"),
                ],
            ),
            (
                spec(Some(1.0)),
                Ok(figures(Some(0.0), Some(0.0), None)),
                [
                    ("Ready", "True", "Evaluated"),
                    ("BudgetAvailable", "Unknown", "LowTraffic"),
                    ("Burning", "False", "WithinBudget"),
                ],
            ),
            (
                spec(None),
                Err(&unavailable),
                [
                    ("Ready", "False", "PrometheusUnavailable"),
                    ("BudgetAvailable", "Unknown", "PrometheusUnavailable"),
                    ("Burning", "Unknown", "PrometheusUnavailable"),
                ],
            ),
            // Deferred figures are never evaluated by the reconciler; if
            // they were, they would read as no figures.
            (
                spec(None),
                Err(&Unreadable::Deferred),
                [
                    ("Ready", "False", "PrometheusUnavailable"),
                    ("BudgetAvailable", "Unknown", "PrometheusUnavailable"),
                    ("Burning", "Unknown", "PrometheusUnavailable"),
                ],
            ),
            (
                spec(None),
                Err(&invalid),
                [
                    ("Ready", "False", "InvalidQuery"),
                    ("BudgetAvailable", "Unknown", "InvalidQuery"),
                    ("Burning", "Unknown", "InvalidQuery"),
                ],
            ),
        ];
        for (i, (spec, figs, want)) in cases.into_iter().enumerate() {
            let s = evaluate(
                &spec,
                &tiers(),
                "1h",
                figs.as_ref().map_err(|e| *e),
                &Default::default(),
                Some(1),
                at(),
            );
            let want: Vec<(String, String, String)> = want
                .iter()
                .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
                .collect();
            assert_eq!(conds(&s), want, "case {i}");
        }
    }

    #[test]
    fn figures_become_burn_rates_and_budget() {
        let s = evaluate(
            &spec(None),
            &tiers(),
            "1h",
            Ok(&figures(Some(0.02), Some(0.0025), Some(50.0))),
            &Default::default(),
            None,
            at(),
        );
        assert_eq!(s.budget_remaining, Some(0.75));
        assert!(
            s.burn_rates.iter().all(|w| w.burn_rate == Some(2.0)),
            "{:?}",
            s.burn_rates
        );
        assert_eq!(
            s.burn_rates.first().map(|w| w.window.as_str()),
            Some("1s"),
            "sorted shortest first"
        );
        assert!(s.data_present);
        // The same figures again: nothing to write.
        let again = evaluate(
            &spec(None),
            &tiers(),
            "1h",
            Ok(&figures(Some(0.02), Some(0.0025), Some(50.0))),
            &s,
            None,
            at(),
        );
        assert!(same_figures(&s, &again));
    }

    /// `kubectl get slo` shows the fastest page tier's long-window burn for
    /// any period, not only for windows named `1h`.
    #[test]
    fn page_burn_rate_is_the_fastest_page_tiers_long_window() {
        let page_long = tiers()
            .iter()
            .filter(|t| t.severity == crate::resources::slo::Severity::Page)
            .map(|t| t.long)
            .min()
            .expect("a page tier");
        let window = crate::duration::format_duration(page_long);
        assert_ne!(window, "1h", "the 1h SLO's page window is not named 1h");
        let mut f = figures(Some(0.02), Some(0.0025), Some(50.0));
        f.error_ratios.insert(window.clone(), Some(0.05));
        let s = evaluate(
            &spec(None),
            &tiers(),
            "1h",
            Ok(&f),
            &Default::default(),
            None,
            at(),
        );
        assert_eq!(
            s.page_burn_rate,
            Some(5.0),
            "window {window}: {:?}",
            s.burn_rates
        );
    }
}
