//! Error-budget maths, as in the SRE Workbook (ch. 5, "Alerting on SLOs")
//! and Sloth. Pure functions: no I/O, no clock.
//!
//! - error ratio E(w) = bad / total over window w
//! - burn rate BR(w) = E(w) / (1 − SLO): 1 spends the budget in exactly the
//!   period, 14.4 spends a 30-day budget in 50 hours
//! - the burn rate that spends fraction b of the budget within long window L
//!   of period P: BR* = b · P / L
//! - budget remaining = ((1 − SLO) − E(P)) / (1 − SLO), negative when overspent
//!
//! Units: objectives are percentages (`99.9`); error ratios, budgets and
//! budget fractions are fractions (`0.001`); burn rates and thresholds are
//! multiples of the sustainable rate (unitless); periods and windows are
//! [`Duration`]s. Everything is `f64`, and a figure that is not finite means
//! "unknown": callers close the gate on it, never open it.

use std::time::Duration;

use thiserror::Error;

use crate::duration::{format_duration, parse_positive_duration};
use crate::resources::slo::{BurnRateTierSpec, Severity};

/// One burn-rate tier with its windows parsed and its threshold BR* worked
/// out for the SLO's period. Built by [`TierPlan::new`], [`default_tiers`]
/// or [`tiers_for`], which check the windows.
#[derive(Clone, Debug, PartialEq)]
pub struct TierPlan {
    pub name: String,
    pub severity: Severity,
    /// Share of the whole budget (0 < b ≤ 1) the tier guards, e.g. 0.02.
    pub budget_fraction: f64,
    /// Long window L: how much burning it takes to alert.
    pub long: Duration,
    /// Short window: stops the alert soon after the burning stops.
    pub short: Duration,
    /// BR* = b · P / L for the period the plan was made for.
    pub threshold: f64,
    /// Evaluated and shown, but no alert is emitted for it.
    pub disabled: bool,
}

/// Why a tier's numbers cannot be used.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum TierError {
    #[error("budget fraction {0} must be greater than 0 and at most 1")]
    BudgetFraction(f64),
    #[error("windows must be greater than zero")]
    ZeroWindow,
    #[error("short window {short} must be shorter than long window {long}")]
    ShortNotBelowLong { short: String, long: String },
    #[error("long window {long} must not exceed the SLO window {period}")]
    LongBeyondPeriod { long: String, period: String },
}

impl TierPlan {
    /// A tier that spends `budget_fraction` of the budget of `period` within
    /// `long`, with its threshold. Checks 0 < b ≤ 1 and 0 < short < long ≤
    /// period: a long window beyond the period would alert on errors that
    /// have already left the budget, and a short window that is not shorter
    /// cannot end an alert sooner.
    pub fn new(
        name: impl Into<String>,
        severity: Severity,
        budget_fraction: f64,
        long: Duration,
        short: Duration,
        period: Duration,
    ) -> Result<Self, TierError> {
        // Written so that NaN fails too.
        if !(budget_fraction > 0.0 && budget_fraction <= 1.0) {
            return Err(TierError::BudgetFraction(budget_fraction));
        }
        if short.is_zero() || long.is_zero() {
            return Err(TierError::ZeroWindow);
        }
        if short >= long {
            return Err(TierError::ShortNotBelowLong {
                short: format_duration(short),
                long: format_duration(long),
            });
        }
        if long > period {
            return Err(TierError::LongBeyondPeriod {
                long: format_duration(long),
                period: format_duration(period),
            });
        }
        Ok(Self {
            name: name.into(),
            severity,
            budget_fraction,
            long,
            short,
            threshold: threshold(budget_fraction, period, long),
            disabled: false,
        })
    }
}

/// The error budget as a fraction of events: 1 − objective/100 (0.001 for
/// 99.9).
pub fn error_budget(objective_percent: f64) -> f64 {
    1.0 - objective_percent / 100.0
}

/// BR = E / (1 − SLO): how many times faster than sustainable the budget is
/// being spent. The objective is validated to 0 < x < 100 (CRD schema); at
/// 100 there is no budget and the result is infinite or NaN, which callers
/// treat as unknown.
pub fn burn_rate(error_ratio: f64, objective_percent: f64) -> f64 {
    error_ratio / error_budget(objective_percent)
}

/// BR* = b · P / L: the burn rate that spends fraction `budget_fraction` of
/// the budget of `period` within `long`. P / L is taken first, so the
/// Workbook's 30-day table comes out exactly (0.02 · 720 = 14.4). Infinite
/// for a zero `long`; tiers are checked so that never happens.
pub fn threshold(budget_fraction: f64, period: Duration, long: Duration) -> f64 {
    budget_fraction * (period.as_secs_f64() / long.as_secs_f64())
}

/// ((1 − SLO) − E(P)) / (1 − SLO), given the error ratio over the whole
/// period: 1 untouched, 0 spent, negative overspent (−1 means twice the
/// budget is gone). Not clamped, so the dashboard shows how far over it is.
pub fn budget_remaining(period_error_ratio: f64, objective_percent: f64) -> f64 {
    let budget = error_budget(objective_percent);
    (budget - period_error_ratio) / budget
}

/// How long the remaining budget lasts at `burn_rate`.
///
/// At burn rate BR the whole budget lasts P / BR, so the fraction
/// `remaining` of it lasts remaining · P / BR. `Some(0)` when the budget is
/// already spent (remaining ≤ 0), whatever the burn rate; `None` when
/// nothing is burning (BR ≤ 0), when a figure is not finite, or when the
/// answer is too large for a [`Duration`]: no exhaustion in sight.
pub fn time_to_exhaustion(remaining: f64, burn_rate: f64, period: Duration) -> Option<Duration> {
    if !(remaining.is_finite() && burn_rate.is_finite()) {
        return None;
    }
    if remaining <= 0.0 {
        return Some(Duration::ZERO);
    }
    if burn_rate <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(remaining * period.as_secs_f64() / burn_rate).ok()
}

/// A tier fires when both windows burn faster than its threshold: strictly
/// greater, as the Workbook's and Sloth's `>`. A NaN burn rate never fires
/// an alert (the gate treats it as unknown separately).
pub fn alert_fires(tier: &TierPlan, burn_long: f64, burn_short: f64) -> bool {
    burn_long > tier.threshold && burn_short > tier.threshold
}

const DAY: u64 = 24 * 3600;
const WORKBOOK_PERIOD: Duration = Duration::from_secs(30 * DAY);

/// The Workbook's table for a 30-day period, as Sloth ships it
/// (`google-30d.yaml`): (name, severity, b, long, short).
const WORKBOOK: [(&str, Severity, f64, Duration, Duration); 4] = [
    (
        "page-fast",
        Severity::Page,
        0.02,
        Duration::from_secs(3600),
        Duration::from_secs(300),
    ),
    (
        "page-slow",
        Severity::Page,
        0.05,
        Duration::from_secs(6 * 3600),
        Duration::from_secs(1800),
    ),
    (
        "ticket-fast",
        Severity::Ticket,
        0.10,
        Duration::from_secs(DAY),
        Duration::from_secs(2 * 3600),
    ),
    (
        "ticket-slow",
        Severity::Ticket,
        0.10,
        Duration::from_secs(3 * DAY),
        Duration::from_secs(6 * 3600),
    ),
];

/// Shortest period the default tiers are made for. Below it the scaled
/// windows shrink to a second or two and stop being distinct; such SLOs
/// (tests, demos) list their own tiers.
pub const MIN_DEFAULT_PERIOD: Duration = Duration::from_secs(3600);

/// Default tiers for `period`.
///
/// - 30d and 28d keep the Workbook's windows and budget shares, exactly as
///   Sloth does: Sloth ships one window set per period
///   (`internal/alert/windows/google-30d.yaml` and `google-28d.yaml`, both
///   1h/5m 2%, 6h/30m 5%, 1d/2h 10%, 3d/6h 10%) and computes the factor as
///   `errorBudgetPercent · period / 100 / longWindow`
///   (`internal/alert/window.go`, `getBurnRateFactor`). So 30d gives 14.4,
///   6, 3, 1 and 28d gives 13.44, 5.6, 2.8, 0.933.
/// - Other periods: Sloth refuses them (unless given a custom window
///   catalog); Pyrra (`slo/rules.go`, `Windows`) scales its windows in
///   proportion to the period (1h/5m at 28d) and keeps fixed factors. We do
///   the same from the Workbook's 30-day table: windows × P / 30d, rounded
///   to whole seconds (recording-rule names and PromQL ranges need whole
///   units) with a floor of 1s, and BR* = b · P / L from the rounded
///   windows, so every tier still means "b of the budget within L" and the
///   factors stay close to 14.4 / 6 / 3 / 1. A 7d SLO pages on 2% of its
///   budget in 14m (short window 1m10s); a 1h SLO gets 5s/1s, 30s/3s,
///   2m/10s and 6m/30s, which only a Prometheus scraping every second can
///   fill. Bigger floors were rejected: a window pushed up while the
///   period stays put lowers BR* (a 1-minute long window in a 1h period
///   pages at 1.2×, below the ticket tiers). Data too thin for a window
///   reads as "unknown", which closes the gate; SLOs with short periods
///   should list their own tiers.
///
/// Periods below [`MIN_DEFAULT_PERIOD`] are refused by [`tiers_for`].
pub fn default_tiers(period: Duration) -> Vec<TierPlan> {
    let keep = period == WORKBOOK_PERIOD || period == Duration::from_secs(28 * DAY);
    let scale = |window: Duration| -> Duration {
        if keep {
            return window;
        }
        // window · P / 30d in whole seconds, rounded half up. Integer
        // milliseconds, so 2.5s is not read as 2.4999…s; u128 cannot
        // overflow (3d in ms times a u64 of ms).
        let base_ms = WORKBOOK_PERIOD.as_millis();
        let num = window.as_millis() * period.as_millis();
        let secs = (num + base_ms * 500) / (base_ms * 1000);
        Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX).max(1))
    };
    WORKBOOK
        .iter()
        .map(|&(name, severity, b, long, short)| {
            let long = scale(long);
            TierPlan {
                name: name.to_owned(),
                severity,
                budget_fraction: b,
                long,
                short: scale(short),
                threshold: threshold(b, period, long),
                disabled: false,
            }
        })
        .collect()
}

/// The tiers of an SLO: its own when given, else [`default_tiers`]. Errors
/// name the spec field and say what to write instead.
pub fn tiers_for(
    period: Duration,
    custom: Option<&[BurnRateTierSpec]>,
) -> Result<Vec<TierPlan>, String> {
    let Some(custom) = custom else {
        if period < MIN_DEFAULT_PERIOD {
            return Err(format!(
                "spec.window {} is shorter than {}, the shortest window the default burn-rate \
                 tiers are made for: list spec.alerting.tiers",
                format_duration(period),
                format_duration(MIN_DEFAULT_PERIOD)
            ));
        }
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
        if custom[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("{} {:?} is used twice", field("name"), t.name));
        }
        let plan = TierPlan::new(
            t.name.clone(),
            t.severity,
            t.budget_percent / 100.0,
            long,
            short,
            period,
        )
        .map_err(|e| match e {
            TierError::BudgetFraction(_) => format!(
                "{} ({}) must be greater than 0 and at most 100",
                field("budgetPercent"),
                t.budget_percent
            ),
            // Both windows were parsed as positive above.
            TierError::ZeroWindow => format!("{}: {e}", field("shortWindow")),
            TierError::ShortNotBelowLong { .. } => format!(
                "{} ({}) must be shorter than longWindow ({})",
                field("shortWindow"),
                t.short_window,
                t.long_window
            ),
            TierError::LongBeyondPeriod { .. } => format!(
                "{} ({}) must not exceed spec.window ({})",
                field("longWindow"),
                t.long_window,
                format_duration(period)
            ),
        })?;
        let threshold = match t.burn_rate {
            // Written so that NaN fails too.
            Some(rate) if !(rate > 0.0 && rate.is_finite()) => {
                return Err(format!(
                    "{} ({rate}) must be a number greater than 0",
                    field("burnRate")
                ));
            }
            Some(rate) => rate,
            None => plan.threshold,
        };
        if let Some(f) = &t.for_duration {
            crate::duration::parse_duration(f).map_err(|e| format!("{}: {e}", field("for")))?;
        }
        out.push(TierPlan {
            disabled: t.disabled,
            threshold,
            ..plan
        });
    }
    Ok(out)
}

/// The tier whose threshold is the default abort rule of experiments: the
/// fastest page tier (highest threshold), or the fastest tier of any
/// severity when no tier pages. `None` without tiers.
pub fn abort_tier(tiers: &[TierPlan]) -> Option<&TierPlan> {
    fn fastest<'a>(it: impl Iterator<Item = &'a TierPlan>) -> Option<&'a TierPlan> {
        it.max_by(|a, b| a.threshold.total_cmp(&b.threshold))
    }
    fastest(tiers.iter().filter(|t| t.severity == Severity::Page)).or_else(|| fastest(tiers.iter()))
}

/// The share of the budget a run spent: its error ratio over the run, as a
/// burn rate, for the run's share of the period (BR · t / P).
pub fn spent(run_error_ratio: f64, objective_percent: f64, run: Duration, period: Duration) -> f64 {
    burn_rate(run_error_ratio, objective_percent) * run.as_secs_f64() / period.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(days: u64) -> Duration {
        Duration::from_secs(days * DAY)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    /// (name, threshold, long, short) of each tier, windows as text.
    fn summary(tiers: &[TierPlan]) -> Vec<(String, f64, String, String)> {
        tiers
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.threshold,
                    format_duration(t.long),
                    format_duration(t.short),
                )
            })
            .collect()
    }

    #[test]
    fn workbook_thresholds_for_30d_are_exact() {
        let got = summary(&default_tiers(d(30)));
        let want = [
            ("page-fast", 14.4, "1h", "5m"),
            ("page-slow", 6.0, "6h", "30m"),
            ("ticket-fast", 3.0, "1d", "2h"),
            ("ticket-slow", 1.0, "3d", "6h"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (g.0.as_str(), g.1, g.2.as_str(), g.3.as_str()),
                w,
                "exact, not approximately"
            );
        }
        let severities: Vec<Severity> = default_tiers(d(30)).iter().map(|t| t.severity).collect();
        assert_eq!(
            severities,
            [
                Severity::Page,
                Severity::Page,
                Severity::Ticket,
                Severity::Ticket
            ]
        );
    }

    #[test]
    fn workbook_example_99_9_percent() {
        // Workbook: at 99.9% over 30 days, 2% of the budget in 1h is a burn
        // rate of 14.4, i.e. an error ratio of 1.44% over the hour.
        let page = &default_tiers(d(30))[0];
        let ratio = page.threshold * error_budget(99.9);
        assert!(close(ratio, 0.0144), "{ratio}");
        assert!(close(burn_rate(0.0144, 99.9), 14.4));
        // The whole budget at 14.4x lasts 30d / 14.4 = 50h.
        assert_eq!(
            time_to_exhaustion(1.0, 14.4, d(30)),
            Some(Duration::from_secs(50 * 3600))
        );
    }

    #[test]
    fn sloth_thresholds_for_28d() {
        // Sloth google-28d.yaml: same windows, factor = b% · 672h / 100 / L.
        let tiers = default_tiers(d(28));
        let want = [
            (13.44, "1h", "5m"),
            (5.6, "6h", "30m"),
            (2.8, "1d", "2h"),
            (0.933_333_333_333_333_3, "3d", "6h"),
        ];
        for ((_, t, long, short), (w, wl, ws)) in summary(&tiers).into_iter().zip(want) {
            assert!(close(t, w), "{t} != {w}");
            assert_eq!((long.as_str(), short.as_str()), (wl, ws));
        }
    }

    #[test]
    fn other_periods_scale_windows_and_keep_factors() {
        // (period, expected (long, short) in seconds per tier)
        for (period, want) in [
            (secs(3600), [(5, 1), (30, 3), (120, 10), (360, 30)]),
            (d(1), [(120, 10), (720, 60), (2880, 240), (8640, 720)]),
            (d(7), [(840, 70), (5040, 420), (20160, 1680), (60480, 5040)]),
            (
                d(90),
                [
                    (10800, 900),
                    (64800, 5400),
                    (259200, 21600),
                    (777600, 64800),
                ],
            ),
        ] {
            let tiers = default_tiers(period);
            let windows: Vec<(u64, u64)> = tiers
                .iter()
                .map(|t| (t.long.as_secs(), t.short.as_secs()))
                .collect();
            assert_eq!(windows, want, "{}", format_duration(period));
            for (t, w) in tiers.iter().zip([14.4, 6.0, 3.0, 1.0]) {
                // b·P/L from the windows actually evaluated...
                assert!(close(
                    t.threshold,
                    t.budget_fraction * period.as_secs_f64() / t.long.as_secs_f64()
                ));
                // ...which stays within rounding of the Workbook factor.
                assert!(
                    (t.threshold - w).abs() / w < 0.05,
                    "{}: {}",
                    t.name,
                    t.threshold
                );
                assert!(t.short < t.long && t.long <= period);
            }
        }
        let week = default_tiers(d(7));
        assert_eq!(
            (
                format_duration(week[0].long),
                format_duration(week[0].short)
            ),
            ("14m".to_owned(), "1m10s".to_owned())
        );
        assert!(close(week[0].threshold, 14.4));
    }

    #[test]
    fn default_tiers_refused_below_an_hour() {
        assert!(tiers_for(secs(3600), None).is_ok());
        let err = tiers_for(secs(1800), None).expect_err("30m has no defaults");
        assert!(
            err.contains("spec.window 30m") && err.contains("spec.alerting.tiers"),
            "{err}"
        );
        assert_eq!(tiers_for(d(30), None), Ok(default_tiers(d(30))));
    }

    #[test]
    fn burn_rate_table() {
        // (error ratio, objective %, burn rate)
        for (e, slo, want) in [
            (0.0144, 99.9, 14.4),
            (0.001, 99.9, 1.0),
            (0.0, 99.9, 0.0),
            (0.006, 99.9, 6.0),
            (0.2, 99.0, 20.0),
            (0.01, 99.0, 1.0),
            (0.5, 50.0, 1.0),
            (1.0, 99.9, 1000.0),
        ] {
            let got = burn_rate(e, slo);
            assert!(close(got, want), "E={e} SLO={slo}: {got} != {want}");
        }
        // No budget at 100%: not finite, which callers read as unknown.
        assert!(!burn_rate(0.01, 100.0).is_finite());
        assert!(burn_rate(0.0, 100.0).is_nan());
        assert!(burn_rate(f64::NAN, 99.9).is_nan());
    }

    #[test]
    fn threshold_table() {
        // (b, period, long, BR*)
        for (b, p, l, want) in [
            (0.02, d(30), secs(3600), 14.4),
            (0.05, d(30), secs(6 * 3600), 6.0),
            (0.10, d(30), d(1), 3.0),
            (0.10, d(30), d(3), 1.0),
            (0.02, d(28), secs(3600), 13.44),
            (1.0, d(30), d(30), 1.0),
            (0.02, secs(3600), secs(120), 0.6),
            (0.5, d(1), secs(3600), 12.0),
        ] {
            let got = threshold(b, p, l);
            assert!(close(got, want), "b={b}: {got} != {want}");
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
            (1.0, 99.9, -999.0),
        ] {
            let got = budget_remaining(e, slo);
            assert!(close(got, want), "E={e} SLO={slo}: {got} != {want}");
        }
        assert!(budget_remaining(f64::NAN, 99.9).is_nan());
    }

    #[test]
    fn time_to_exhaustion_table() {
        let p = d(30);
        let h = |hours: u64| Some(secs(hours * 3600));
        for (remaining, br, want) in [
            // At 1x a full budget lasts the period.
            (1.0, 1.0, Some(p)),
            // At 14.4x, half the budget lasts 30d·0.5/14.4 = 25h.
            (0.5, 14.4, h(25)),
            (1.0, 6.0, h(120)),
            (0.25, 3.0, h(60)),
            // Already spent: zero, even when nothing burns now.
            (0.0, 3.0, Some(Duration::ZERO)),
            (-0.2, 3.0, Some(Duration::ZERO)),
            (-0.2, 0.0, Some(Duration::ZERO)),
            // Not burning: no exhaustion in sight.
            (0.5, 0.0, None),
            (0.5, -1.0, None),
            (1.0, 1e-300, None),
            (f64::NAN, 1.0, None),
            (0.5, f64::NAN, None),
            (0.5, f64::INFINITY, None),
        ] {
            assert_eq!(
                time_to_exhaustion(remaining, br, p),
                want,
                "remaining={remaining} BR={br}"
            );
        }
        // Short periods too: 1h at 14.4x, whole budget = 250s.
        assert_eq!(time_to_exhaustion(1.0, 14.4, secs(3600)), Some(secs(250)));
    }

    #[test]
    fn a_run_spends_its_burn_rate_times_its_share_of_the_period() {
        // 99.9%: an error ratio of 1.44% over 1h of a 30d period is 14.4x
        // for 1/720 of the period: 2% of the budget, the Workbook's page.
        assert!(close(spent(0.0144, 99.9, secs(3600), d(30)), 0.02));
        assert!(close(spent(0.0, 99.9, secs(3600), d(30)), 0.0));
        // At 1x for the whole period, the whole budget.
        assert!(close(spent(0.001, 99.9, d(30), d(30)), 1.0));
    }

    #[test]
    fn alert_needs_both_windows_strictly_over_threshold() {
        let tier = &default_tiers(d(30))[0];
        for (long, short, fires) in [
            (15.0, 20.0, true),
            (14.5, 14.5, true),
            (15.0, 10.0, false), // short window recovered
            (10.0, 20.0, false), // long window below
            (14.4, 14.4, false), // equal is not over
            (14.4, 20.0, false),
            (f64::NAN, 20.0, false),
            (20.0, f64::NAN, false),
        ] {
            assert_eq!(alert_fires(tier, long, short), fires, "{long}/{short}");
        }
        // From error ratios at 99.9%: 1.5% errors over both windows pages.
        let (l, s) = (burn_rate(0.015, 99.9), burn_rate(0.02, 99.9));
        assert!(alert_fires(tier, l, s));
    }

    #[test]
    fn tier_plan_new_checks_its_numbers() {
        let p = secs(3600);
        let ok =
            TierPlan::new("fast", Severity::Page, 0.02, secs(120), secs(30), p).expect("valid");
        assert!(close(ok.threshold, 0.6));
        assert!(!ok.disabled);
        for (b, long, short, want) in [
            (0.0, 120, 30, TierError::BudgetFraction(0.0)),
            (1.5, 120, 30, TierError::BudgetFraction(1.5)),
            (-0.1, 120, 30, TierError::BudgetFraction(-0.1)),
            (0.02, 120, 0, TierError::ZeroWindow),
            (
                0.02,
                60,
                60,
                TierError::ShortNotBelowLong {
                    short: "1m".into(),
                    long: "1m".into(),
                },
            ),
            (
                0.02,
                7200,
                60,
                TierError::LongBeyondPeriod {
                    long: "2h".into(),
                    period: "1h".into(),
                },
            ),
        ] {
            let got = TierPlan::new("t", Severity::Page, b, secs(long), secs(short), p);
            assert_eq!(got, Err(want));
        }
        assert!(matches!(
            TierPlan::new("t", Severity::Page, f64::NAN, secs(120), secs(30), p),
            Err(TierError::BudgetFraction(_))
        ));
        // The long window may be the whole period: b of the budget over P.
        let whole = TierPlan::new("all", Severity::Ticket, 1.0, p, secs(300), p).expect("valid");
        assert_eq!(whole.threshold, 1.0);
    }

    fn spec(name: &str, b: f64, long: &str, short: &str) -> BurnRateTierSpec {
        BurnRateTierSpec {
            name: name.into(),
            severity: Severity::Page,
            budget_percent: b,
            long_window: long.into(),
            short_window: short.into(),
            disabled: false,
            burn_rate: None,
            for_duration: None,
            labels: Default::default(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn custom_tiers_for_any_period() {
        // The end-to-end tests' tiers: 1h period, minute-scale windows.
        let mut slow = spec("ticket-slow", 10.0, "10m", "1m");
        slow.severity = Severity::Ticket;
        slow.disabled = true;
        let tiers = tiers_for(
            secs(3600),
            Some(&[spec("page-fast", 2.0, "2m", "30s"), slow]),
        )
        .expect("valid");
        assert!(close(tiers[0].threshold, 0.02 * 60.0 / 2.0));
        assert!(close(tiers[1].threshold, 0.1 * 6.0));
        assert_eq!((tiers[0].disabled, tiers[1].disabled), (false, true));
        assert_eq!(
            abort_tier(&tiers).map(|t| t.threshold),
            Some(tiers[0].threshold)
        );
        // Custom Workbook tiers on 30d equal the defaults.
        let custom = tiers_for(
            d(30),
            Some(&[
                spec("page-fast", 2.0, "1h", "5m"),
                spec("page-slow", 5.0, "6h", "30m"),
            ]),
        )
        .expect("valid");
        let defaults = default_tiers(d(30));
        assert_eq!(custom[..], defaults[..2]);
        assert_eq!(abort_tier(&defaults).map(|t| t.threshold), Some(14.4));
        // Without page tiers, the fastest ticket tier.
        assert_eq!(abort_tier(&defaults[2..]).map(|t| t.threshold), Some(3.0));
        assert_eq!(abort_tier(&[]), None);
    }

    #[test]
    fn invalid_custom_tiers_name_the_field() {
        let h = secs(3600);
        for (tiers, needles) in [
            (
                vec![spec("a", 2.0, "1m", "5m")],
                vec!["tiers[0].shortWindow", "(5m)", "(1m)"],
            ),
            (
                vec![spec("a", 2.0, "5m", "5m")],
                vec!["tiers[0].shortWindow", "shorter"],
            ),
            (
                vec![spec("a", 2.0, "2h", "5m")],
                vec!["tiers[0].longWindow", "spec.window (1h)"],
            ),
            (
                vec![spec("a", 0.0, "10m", "5m")],
                vec!["tiers[0].budgetPercent", "at most 100"],
            ),
            (
                vec![spec("a", 150.0, "10m", "5m")],
                vec!["tiers[0].budgetPercent", "(150)"],
            ),
            (
                vec![spec("a", f64::NAN, "10m", "5m")],
                vec!["tiers[0].budgetPercent"],
            ),
            (
                vec![spec("a", 2.0, "10m", "5x")],
                vec!["tiers[0].shortWindow", "\"5x\""],
            ),
            (
                vec![spec("a", 2.0, "0s", "0s")],
                vec!["tiers[0].longWindow", "greater than zero"],
            ),
            (
                vec![spec("a", 2.0, "10m", "5m"), spec("a", 5.0, "20m", "5m")],
                vec!["tiers[1].name", "used twice"],
            ),
            (vec![], vec!["empty"]),
        ] {
            let err = tiers_for(h, Some(&tiers)).expect_err("invalid");
            for needle in needles {
                assert!(err.contains(needle), "{err:?} should contain {needle}");
            }
        }
    }
}
