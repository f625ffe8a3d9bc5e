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

    let budget = 1.0 - spec.objective / 100.0;
    status.source = Some(figures.source.clone());
    status.traffic_per_second = figures.traffic_per_second;
    status.burn_rates = figures
        .error_ratios
        .iter()
        .filter(|(w, _)| w.as_str() != period_window)
        .map(|(window, ratio)| WindowBurnRate {
            window: window.clone(),
            error_ratio: *ratio,
            burn_rate: ratio.map(|e| round(e / budget)),
        })
        .collect();
    status
        .burn_rates
        .sort_by_key(|w| crate::duration::parse_duration(&w.window).unwrap_or(Duration::MAX));
    status.error_ratio = figures.error_ratios.get(period_window).copied().flatten();
    status.budget_remaining = status.error_ratio.map(|e| round((budget - e) / budget));
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
            .map(|e| e / budget)
    };
    let firing: Vec<String> = tiers
        .iter()
        .filter(|t| matches!((rate(t.long), rate(t.short)), (Some(l), Some(s)) if l > t.threshold && s > t.threshold))
        .map(|t| format!("{} ({:?}, {}/{} over {:.3})", t.name, t.severity, crate::duration::format_duration(t.long), crate::duration::format_duration(t.short), t.threshold))
        .collect();
    if firing.is_empty() {
        set(
            "Burning",
            Status::False,
            "WithinBudget",
            "no burn-rate tier is exceeded on both its windows".into(),
        );
    } else {
        let page = tiers.iter().any(|t| {
            t.severity == Severity::Page
                && matches!((rate(t.long), rate(t.short)), (Some(l), Some(s)) if l > t.threshold && s > t.threshold)
        });
        set(
            "Burning",
            Status::True,
            if page {
                "PageTierExceeded"
            } else {
                "TicketTierExceeded"
            },
            format!("exceeded: {}", firing.join(", ")),
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
