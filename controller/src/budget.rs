//! Error-budget maths, as in the SRE Workbook (ch. 5) and Sloth.
//!
//! - error ratio E(w) = bad / total over window w
//! - burn rate BR(w) = E(w) / (1 − SLO)
//! - the burn rate that spends fraction b of the budget within long window L
//!   of period P: BR* = b · P / L
//! - budget remaining = ((1 − SLO) − E(P)) / (1 − SLO), negative when overspent
//!
//! Objectives are percentages (99.9); ratios are fractions (0.001).

use std::time::Duration;

use crate::duration::{format_duration, parse_positive_duration};
use crate::resources::slo::{BurnRateTierSpec, Severity};

/// One burn-rate tier with parsed windows and its threshold BR*.
#[derive(Clone, Debug, PartialEq)]
pub struct TierPlan {
    pub name: String,
    pub severity: Severity,
    /// Share of the budget (0 < b ≤ 1) the tier guards.
    pub budget_fraction: f64,
    pub long: Duration,
    pub short: Duration,
    /// BR* = b · P / L.
    pub threshold: f64,
    /// Evaluated but not alerted on.
    pub disabled: bool,
}

/// bad / total; `None` when there is no traffic or a figure is not finite
/// (no traffic is "unknown", never "no errors").
pub fn error_ratio(bad: f64, total: f64) -> Option<f64> {
    (bad.is_finite() && total.is_finite() && total > 0.0 && bad >= 0.0).then(|| bad / total)
}

/// The error budget as a fraction: 1 − objective/100.
pub fn error_budget(objective_percent: f64) -> f64 {
    1.0 - objective_percent / 100.0
}

/// BR = E / (1 − SLO).
pub fn burn_rate(error_ratio: f64, objective_percent: f64) -> f64 {
    error_ratio / error_budget(objective_percent)
}

/// BR* = b · P / L: the burn rate that spends fraction `b` of the budget of
/// period `period` within `long`.
pub fn threshold(budget_fraction: f64, period: Duration, long: Duration) -> f64 {
    budget_fraction * period.as_secs_f64() / long.as_secs_f64()
}

/// ((1 − SLO) − E(P)) / (1 − SLO); 1 untouched, 0 spent, negative overspent.
pub fn budget_remaining(period_error_ratio: f64, objective_percent: f64) -> f64 {
    let budget = error_budget(objective_percent);
    (budget - period_error_ratio) / budget
}

/// How long the remaining budget lasts at `burn_rate`: the whole budget
/// lasts P / BR, so `remaining` of it lasts remaining · P / BR. `None` when
/// nothing is burning; zero when the budget is already gone.
pub fn time_to_exhaustion(remaining: f64, burn_rate: f64, period: Duration) -> Option<Duration> {
    if !(remaining.is_finite() && burn_rate.is_finite()) || burn_rate <= 0.0 {
        return None;
    }
    if remaining <= 0.0 {
        return Some(Duration::ZERO);
    }
    Duration::try_from_secs_f64(remaining * period.as_secs_f64() / burn_rate).ok()
}

/// A tier fires when both windows burn faster than its threshold (strictly,
/// as the Workbook's and Sloth's `>`).
pub fn alert_fires(tier: &TierPlan, burn_long: f64, burn_short: f64) -> bool {
    burn_long > tier.threshold && burn_short > tier.threshold
}

const DAY: u64 = 24 * 3600;

/// The Workbook table for a 30-day period: (name, severity, b, long, short).
const WORKBOOK: [(&str, Severity, f64, u64, u64); 4] = [
    ("page-fast", Severity::Page, 0.02, 3600, 300),
    ("page-slow", Severity::Page, 0.05, 6 * 3600, 1800),
    ("ticket-fast", Severity::Ticket, 0.10, DAY, 2 * 3600),
    ("ticket-slow", Severity::Ticket, 0.10, 3 * DAY, 6 * 3600),
];

/// Default tiers for `period`.
///
/// 30d and 28d keep the Workbook's windows, as Sloth does, so 28d gets
/// Sloth's thresholds (13.44, 5.6, 2.8, 0.933). Any other period scales the
/// windows by P / 30d (whole seconds, at least 1s), which keeps the
/// thresholds at 14.4 / 6 / 3 / 1: a 7d SLO pages on 2% of its budget in
/// 14 minutes, a 1h SLO (tests) on 2% in 2 seconds.
pub fn default_tiers(period: Duration) -> Vec<TierPlan> {
    let p = period.as_secs_f64();
    let keep = period == Duration::from_secs(30 * DAY) || period == Duration::from_secs(28 * DAY);
    let scale = |secs: u64| -> Duration {
        if keep {
            Duration::from_secs(secs)
        } else {
            Duration::from_secs(((secs as f64) * p / (30.0 * DAY as f64)).round().max(1.0) as u64)
        }
    };
    WORKBOOK
        .iter()
        .map(|&(name, severity, b, long, short)| {
            let (long, short) = (scale(long), scale(short));
            TierPlan {
                name: name.to_owned(),
                severity,
                budget_fraction: b,
                long,
                short,
                threshold: threshold(b, period, long),
                disabled: false,
            }
        })
        .collect()
}

/// The tiers of an SLO: its own when given, else the defaults. Custom tiers
/// are checked: 0 < b ≤ 100%, short < long ≤ period, names unique.
pub fn tiers_for(
    period: Duration,
    custom: Option<&[BurnRateTierSpec]>,
) -> Result<Vec<TierPlan>, String> {
    let Some(custom) = custom else {
        return Ok(default_tiers(period));
    };
    if custom.is_empty() {
        return Err(
            "spec.alerting.tiers is empty: omit it for the defaults or list at least one tier"
                .into(),
        );
    }
    let mut out = Vec::with_capacity(custom.len());
    for (i, t) in custom.iter().enumerate() {
        let field = |f: &str| format!("spec.alerting.tiers[{i}].{f}");
        let long = parse_positive_duration(&t.long_window)
            .map_err(|e| format!("{}: {e}", field("longWindow")))?;
        let short = parse_positive_duration(&t.short_window)
            .map_err(|e| format!("{}: {e}", field("shortWindow")))?;
        if short >= long {
            return Err(format!(
                "{} ({}) must be shorter than longWindow ({})",
                field("shortWindow"),
                t.short_window,
                t.long_window
            ));
        }
        if long > period {
            return Err(format!(
                "{} ({}) must not exceed spec.window ({})",
                field("longWindow"),
                t.long_window,
                format_duration(period)
            ));
        }
        if !(t.budget_percent > 0.0 && t.budget_percent <= 100.0) {
            return Err(format!(
                "{} must be greater than 0 and at most 100",
                field("budgetPercent")
            ));
        }
        if custom[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("{} {:?} is used twice", field("name"), t.name));
        }
        let b = t.budget_percent / 100.0;
        out.push(TierPlan {
            name: t.name.clone(),
            severity: t.severity,
            budget_fraction: b,
            long,
            short,
            threshold: threshold(b, period, long),
            disabled: t.disabled,
        });
    }
    Ok(out)
}

/// The fastest page tier's threshold: the default abort burn rate.
pub fn page_threshold(tiers: &[TierPlan]) -> Option<f64> {
    tiers
        .iter()
        .filter(|t| t.severity == Severity::Page)
        .map(|t| t.threshold)
        .fold(None, |acc: Option<f64>, t| {
            Some(acc.map_or(t, |a| a.max(t)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(days: u64) -> Duration {
        Duration::from_secs(days * DAY)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn workbook_thresholds_for_30d() {
        let tiers = default_tiers(d(30));
        let got: Vec<(&str, f64, String, String)> = tiers
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.threshold,
                    format_duration(t.long),
                    format_duration(t.short),
                )
            })
            .collect();
        let want = [
            ("page-fast", 14.4, "1h", "5m"),
            ("page-slow", 6.0, "6h", "30m"),
            ("ticket-fast", 3.0, "1d", "2h"),
            ("ticket-slow", 1.0, "3d", "6h"),
        ];
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.0, w.0);
            assert!(close(g.1, w.1), "{}: {} != {}", g.0, g.1, w.1);
            assert_eq!((g.2.as_str(), g.3.as_str()), (w.2, w.3));
        }
    }

    #[test]
    fn sloth_thresholds_for_28d() {
        let want = [13.44, 5.6, 2.8, 0.933_333_333_333_333_3];
        for (t, w) in default_tiers(d(28)).iter().zip(want) {
            assert!(close(t.threshold, w), "{}: {} != {w}", t.name, t.threshold);
        }
    }

    #[test]
    fn other_periods_scale_windows_and_keep_thresholds() {
        // 1h period (tests): page-fast is 2s/1s… scaled, thresholds unchanged.
        let tiers = default_tiers(Duration::from_secs(3600));
        let windows: Vec<(u64, u64)> = tiers
            .iter()
            .map(|t| (t.long.as_secs(), t.short.as_secs()))
            .collect();
        assert_eq!(windows, vec![(5, 1), (30, 3), (120, 10), (360, 30)]);
        for (t, w) in tiers.iter().zip([14.4, 6.0, 3.0, 1.0]) {
            // Rounding the windows moves thresholds a little; b·P/L is exact for them.
            assert!(close(
                t.threshold,
                t.budget_fraction * 3600.0 / t.long.as_secs_f64()
            ));
            assert!(
                (t.threshold - w).abs() / w < 0.05,
                "{}: {} vs {w}",
                t.name,
                t.threshold
            );
        }
        let week = default_tiers(d(7));
        assert_eq!(format_duration(week[0].long), "14m");
        assert!(close(week[0].threshold, 14.4));
    }

    #[test]
    fn burn_rate_and_error_ratio_table() {
        // (bad, total, objective, error ratio, burn rate)
        let cases = [
            (1.44, 100.0, 99.9, Some(0.0144), Some(14.4)),
            (1.0, 1000.0, 99.9, Some(0.001), Some(1.0)),
            (0.0, 50.0, 99.0, Some(0.0), Some(0.0)),
            (20.0, 100.0, 99.0, Some(0.2), Some(20.0)),
            (1.0, 0.0, 99.9, None, None),
            (f64::NAN, 10.0, 99.9, None, None),
            (1.0, f64::INFINITY, 99.9, None, None),
        ];
        for (bad, total, slo, want_e, want_br) in cases {
            let e = error_ratio(bad, total);
            assert_eq!(
                e.map(|e| (e * 1e9).round()),
                want_e.map(|w: f64| (w * 1e9).round()),
                "{bad}/{total}"
            );
            let br = e.map(|e| burn_rate(e, slo));
            match (br, want_br) {
                (Some(a), Some(b)) => assert!(close(a, b), "{a} != {b}"),
                (a, b) => assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn budget_remaining_table() {
        for (e, slo, want) in [
            (0.0, 99.9, 1.0),
            (0.0005, 99.9, 0.5),
            (0.001, 99.9, 0.0),
            (0.002, 99.9, -1.0),
            (0.0025, 99.0, 0.75),
            (0.05, 99.0, -4.0),
        ] {
            let got = budget_remaining(e, slo);
            assert!(close(got, want), "E={e} SLO={slo}: {got} != {want}");
        }
    }

    #[test]
    fn time_to_exhaustion_table() {
        let p = d(30);
        // Burning at 1x, a full budget lasts the period.
        assert_eq!(time_to_exhaustion(1.0, 1.0, p), Some(p));
        // At 14.4x, half the budget lasts 30d·0.5/14.4 = 25h.
        assert_eq!(
            time_to_exhaustion(0.5, 14.4, p),
            Some(Duration::from_secs(25 * 3600))
        );
        assert_eq!(time_to_exhaustion(-0.2, 3.0, p), Some(Duration::ZERO));
        assert_eq!(time_to_exhaustion(0.5, 0.0, p), None);
        assert_eq!(time_to_exhaustion(f64::NAN, 1.0, p), None);
    }

    #[test]
    fn alert_needs_both_windows_over_threshold() {
        let tier = &default_tiers(d(30))[0];
        assert!(alert_fires(tier, 15.0, 20.0));
        assert!(
            !alert_fires(tier, 15.0, 10.0),
            "short window recovered: no alert"
        );
        assert!(
            !alert_fires(tier, 10.0, 20.0),
            "long window below: no alert"
        );
        assert!(!alert_fires(tier, 14.4, 14.4), "equal is not over");
    }

    fn spec(name: &str, b: f64, long: &str, short: &str) -> BurnRateTierSpec {
        BurnRateTierSpec {
            name: name.into(),
            severity: Severity::Page,
            budget_percent: b,
            long_window: long.into(),
            short_window: short.into(),
            disabled: false,
        }
    }

    #[test]
    fn custom_tiers_for_short_periods() {
        let tiers = tiers_for(
            Duration::from_secs(3600),
            Some(&[spec("fast", 2.0, "2m", "30s")]),
        )
        .expect("valid");
        assert!(close(tiers[0].threshold, 0.02 * 60.0 / 2.0));
        assert_eq!(page_threshold(&tiers), Some(tiers[0].threshold));
    }

    #[test]
    fn invalid_custom_tiers_name_the_field() {
        let h = Duration::from_secs(3600);
        for (tiers, needle) in [
            (vec![spec("a", 2.0, "1m", "5m")], "tiers[0].shortWindow"),
            (vec![spec("a", 2.0, "2h", "5m")], "tiers[0].longWindow"),
            (vec![spec("a", 0.0, "10m", "5m")], "tiers[0].budgetPercent"),
            (vec![spec("a", 2.0, "10m", "5x")], "tiers[0].shortWindow"),
            (
                vec![spec("a", 2.0, "10m", "5m"), spec("a", 5.0, "20m", "5m")],
                "tiers[1].name",
            ),
            (vec![], "empty"),
        ] {
            let err = tiers_for(h, Some(&tiers)).expect_err(needle);
            assert!(err.contains(needle), "{err:?} should name {needle}");
        }
    }
}
