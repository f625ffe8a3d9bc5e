//! The budget gate: may an experiment start now? A pure function of the
//! guarding SLOs' fresh figures, the policy, the global pause and the other
//! runs. Every doubt closes it: a missing SLO, an unreadable one, no data,
//! low traffic all say "do not inject", each with its own reason.

use crate::conditions;
use crate::reasons::{Abort, AbortReason};
use crate::resources::experiment::BudgetPolicy;
use crate::resources::slo::ServiceLevelObjectiveStatus;

/// The budget policy with its defaults filled in, as ratios.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Budget that must remain on every guarding SLO (ratio, 0.5 = 50%).
    pub min_budget_remaining: f64,
    /// Highest short-window burn rate allowed at the start.
    pub max_burn_rate_to_start: f64,
    /// Budget a run may spend before it is aborted (ratio, 0.02 = 2%).
    pub max_budget_spend: f64,
    /// Short-window burn rate that aborts a run; `None` means each SLO's
    /// fastest page tier.
    pub abort_burn_rate: Option<f64>,
}

impl Policy {
    pub fn from_spec(p: &BudgetPolicy) -> Self {
        Self {
            min_budget_remaining: p.min_budget_remaining.unwrap_or(50.0) / 100.0,
            max_burn_rate_to_start: p.max_burn_rate_to_start.unwrap_or(1.0),
            max_budget_spend: p.max_budget_spend.unwrap_or(2.0) / 100.0,
            abort_burn_rate: p.abort_burn_rate,
        }
    }
}

/// A guarding SLO as the gate sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum SloReading {
    /// No SLO of that name in the experiment's namespace.
    Missing,
    /// Freshly evaluated: the status it would have now, and the short
    /// windows of its burn-rate tiers.
    Evaluated {
        // Boxed: a status is large beside `Missing`.
        status: Box<ServiceLevelObjectiveStatus>,
        short_windows: Vec<String>,
    },
}

/// Everything the decision depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct GateInput<'a> {
    pub slos: &'a [(String, SloReading)],
    pub policy: Policy,
    /// `Some(why)` when the global pause is set, or cannot be read.
    pub paused: Option<String>,
    /// `Some(run)` when another run holds the same target.
    pub target_held_by: Option<String>,
}

/// The decision, with a machine reason and a sentence with the figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub open: bool,
    pub reason: String,
    pub message: String,
}

impl Decision {
    fn closed(reason: &str, message: String) -> Self {
        Self {
            open: false,
            reason: reason.to_owned(),
            message,
        }
    }
}

/// Decide. The first closed check wins, in the order a person would look:
/// pause, target, then each SLO in turn.
pub fn decide(input: &GateInput<'_>) -> Decision {
    if let Some(why) = &input.paused {
        return Decision::closed("GlobalPause", format!("the global pause is set: {why}"));
    }
    if let Some(run) = &input.target_held_by {
        return Decision::closed(
            "TargetBusy",
            format!("run {run} holds the same target; one fault per target at a time"),
        );
    }
    if input.slos.is_empty() {
        return Decision::closed("NoGuardingSlo", "spec.slos names no SLO".into());
    }
    let p = input.policy;
    let mut summary = Vec::new();
    for (name, reading) in input.slos {
        let (status, short_windows) = match reading {
            SloReading::Missing => {
                return Decision::closed(
                    "SloNotFound",
                    format!(
                        "ServiceLevelObjective {name} (spec.slos) does not exist in this namespace"
                    ),
                );
            }
            SloReading::Evaluated {
                status,
                short_windows,
            } => (status, short_windows),
        };
        if let Some(c) = conditions::get(&status.conditions, "Ready")
            && c.status != "True"
        {
            return Decision::closed(&c.reason, format!("{name}: {}", c.message));
        }
        match conditions::get(&status.conditions, "BudgetAvailable") {
            Some(c) if c.status == "Unknown" => {
                return Decision::closed(&c.reason, format!("{name}: {}", c.message));
            }
            None => {
                return Decision::closed("NoData", format!("{name}: not evaluated"));
            }
            _ => {}
        }
        let Some(remaining) = status.budget_remaining.filter(|r| r.is_finite()) else {
            return Decision::closed("NoData", format!("{name}: budget remaining is unknown"));
        };
        if remaining < p.min_budget_remaining {
            return Decision::closed(
                "BudgetBelowPolicy",
                format!(
                    "{name}: {:.1}% of the error budget remains; budgetPolicy.minBudgetRemaining is {:.1}%",
                    remaining * 100.0,
                    p.min_budget_remaining * 100.0
                ),
            );
        }
        if let Some(c) = conditions::get(&status.conditions, "Burning")
            && c.status == "True"
            && c.reason == "PageTierExceeded"
        {
            return Decision::closed(
                "PageAlertFiring",
                format!(
                    "{name}: a page-tier burn-rate alert is firing ({})",
                    c.message
                ),
            );
        }
        let mut worst: Option<(f64, &str)> = None;
        for w in short_windows {
            let rate = status
                .burn_rates
                .iter()
                .find(|b| &b.window == w)
                .and_then(|b| b.burn_rate);
            let Some(rate) = rate.filter(|r| r.is_finite()) else {
                return Decision::closed(
                    "NoData",
                    format!("{name}: no burn rate over the short window {w}"),
                );
            };
            if worst.is_none_or(|(r, _)| rate > r) {
                worst = Some((rate, w));
            }
        }
        if let Some((rate, w)) = worst {
            if rate > p.max_burn_rate_to_start {
                return Decision::closed(
                    "BurnRateTooHigh",
                    format!(
                        "{name}: burn rate {rate:.2} over {w} is above budgetPolicy.maxBurnRateToStart {:.2}",
                        p.max_burn_rate_to_start
                    ),
                );
            }
            summary.push(format!(
                "{name}: {:.1}% budget left, burn {rate:.2} over {w}",
                remaining * 100.0
            ));
        } else {
            summary.push(format!("{name}: {:.1}% budget left", remaining * 100.0));
        }
    }
    Decision {
        open: true,
        reason: "Open".into(),
        message: summary.join("; "),
    }
}

/// One guarding SLO read during a run.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardReading {
    pub slo: String,
    /// The window the abort rule watches (the fastest page tier's short one).
    pub window: String,
    /// Burn rate over `window`; `None` when Prometheus had no value.
    pub burn_rate: Option<f64>,
    /// Burn rate that aborts the run.
    pub abort_at: f64,
    /// Share of the budget spent since the fault was applied; `None` until
    /// the run is long enough to measure it.
    pub spent: Option<f64>,
    /// Share of the budget spent by the next observation if the spend goes
    /// on at its current pace (see [`projected_spend`]); `None` when it
    /// cannot be projected.
    pub projected: Option<f64>,
}

/// How much of its cap a run spent (`spent / cap`; above 1 is an
/// overshoot). `None` for a cap of zero or less, which any spend overshoots.
pub fn spent_of_cap(spent: f64, cap: f64) -> Option<f64> {
    (cap > 0.0 && spent.is_finite()).then(|| spent.max(0.0) / cap)
}

/// The spend measured at one observation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpendPoint {
    /// Time since the fault was applied.
    pub elapsed: std::time::Duration,
    /// Share of the budget spent since then.
    pub spent: f64,
}

/// The share of the budget that will have been spent at the next
/// observation, `next_in` from now, if spending goes on at its current
/// pace. The pace is the faster of two readings: the burn rate now (a burn
/// rate of b spends b/period of the budget per second) and the spend since
/// the previous observation (`previous`, the start of the run when there is
/// none). Between two observations the budget can go far past the cap; a
/// run is stopped on this figure so that it ends near the cap, not one
/// whole interval beyond it.
pub fn projected_spend(
    now: SpendPoint,
    previous: SpendPoint,
    burn_rate: Option<f64>,
    period: std::time::Duration,
    next_in: std::time::Duration,
) -> f64 {
    let by_burn = match burn_rate {
        Some(b) if b.is_finite() && !period.is_zero() => b.max(0.0) / period.as_secs_f64(),
        _ => 0.0,
    };
    let dt = now.elapsed.saturating_sub(previous.elapsed).as_secs_f64();
    let by_spend = if dt > 0.0 {
        ((now.spent - previous.spent) / dt).max(0.0)
    } else {
        0.0
    };
    now.spent + by_burn.max(by_spend) * next_in.as_secs_f64()
}

/// When to look again after an observation that did not abort: after
/// `every` (`observeInterval`), or after a quarter of it (at least 1s)
/// while any guard's spend, at its projected pace, would pass half the cap
/// within two intervals.
///
/// Why: the pace is read from data that lags the errors. When errors start
/// in the middle of an interval, the burn rate over the abort window and
/// the spend since the last look both average in the calm before the step,
/// so a projection over a whole interval can be short by up to the whole
/// step. Measured with a step to burn rate 3.5 against a 40% cap on a 2m
/// period and a 10s interval, 3 runs of 10 passed the cap with a fixed
/// interval; looking sooner once the spend moves reads the new pace before
/// the next interval's spend is out of reach. Only runs that are spending
/// fast query Prometheus more often.
pub fn next_observation(
    readings: &[GuardReading],
    max_budget_spend: f64,
    every: std::time::Duration,
) -> std::time::Duration {
    let soon = (every / 4)
        .max(std::time::Duration::from_secs(1))
        .min(every);
    let hurried = readings.iter().any(|r| match (r.spent, r.projected) {
        // Two intervals at the projected pace: spent + 2 × (projected − spent).
        (Some(spent), Some(projected)) => 2.0 * projected - spent >= max_budget_spend / 2.0,
        // Before the spend is measurable only the burn rate paces it.
        (None, Some(projected)) => 2.0 * projected >= max_budget_spend / 2.0,
        _ => false,
    });
    if hurried { soon } else { every }
}

/// Why a running experiment must stop now, if it must: Prometheus not
/// answering or a missing figure counts as a reason (fail closed).
pub fn abort_reason(
    readings: &Result<Vec<GuardReading>, String>,
    max_budget_spend: f64,
) -> Option<Abort> {
    let readings = match readings {
        Ok(r) => r,
        Err(e) => {
            return Some(Abort::new(
                AbortReason::PrometheusUnavailable,
                format!("Prometheus did not answer: {e}"),
            ));
        }
    };
    for r in readings {
        match r.burn_rate {
            None => {
                return Some(Abort::new(
                    AbortReason::NoData,
                    format!(
                        "{}: no burn rate over {}; cannot watch the budget",
                        r.slo, r.window
                    ),
                ));
            }
            Some(b) if !b.is_finite() || b > r.abort_at => {
                return Some(Abort::new(
                    AbortReason::BurnRateAboveAbort,
                    format!(
                        "{}: burn rate {b:.2} over {} crossed the abort threshold {:.2}",
                        r.slo, r.window, r.abort_at
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Some(spent) = r.spent
            && spent > max_budget_spend
        {
            return Some(Abort::new(
                AbortReason::BudgetSpendAboveLimit,
                format!(
                    "{}: the run spent {:.2}% of the error budget; budgetPolicy.maxBudgetSpend is {:.2}%",
                    r.slo,
                    spent * 100.0,
                    max_budget_spend * 100.0
                ),
            ));
        }
        if let Some(projected) = r.projected
            && projected > max_budget_spend
        {
            return Some(Abort::new(
                AbortReason::BudgetSpendProjectedAboveLimit,
                format!(
                    "{}: the run has spent {:.2}% of the error budget and at this pace would spend {:.2}% by the next observation; budgetPolicy.maxBudgetSpend is {:.2}%",
                    r.slo,
                    r.spent.unwrap_or(0.0) * 100.0,
                    projected * 100.0,
                    max_budget_spend * 100.0
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Status, upsert};
    use crate::resources::slo::WindowBurnRate;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn status(
        ready: (Status, &str),
        budget: (Status, &str),
        burning: (Status, &str),
        remaining: Option<f64>,
        short_burn: Option<f64>,
    ) -> ServiceLevelObjectiveStatus {
        let mut s = ServiceLevelObjectiveStatus {
            budget_remaining: remaining,
            burn_rates: vec![WindowBurnRate {
                window: "1m".into(),
                error_ratio: short_burn.map(|b| b / 100.0),
                burn_rate: short_burn,
            }],
            data_present: true,
            ..Default::default()
        };
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        upsert(
            &mut s.conditions,
            "Ready",
            ready.0,
            ready.1,
            "m",
            None,
            t.clone(),
        );
        upsert(
            &mut s.conditions,
            "BudgetAvailable",
            budget.0,
            budget.1,
            "traffic is low",
            None,
            t.clone(),
        );
        upsert(
            &mut s.conditions,
            "Burning",
            burning.0,
            burning.1,
            "m",
            None,
            t,
        );
        s
    }

    fn healthy(remaining: f64, burn: f64) -> SloReading {
        SloReading::Evaluated {
            status: Box::new(status(
                (Status::True, "Evaluated"),
                (Status::True, "BudgetRemaining"),
                (Status::False, "WithinBudget"),
                Some(remaining),
                Some(burn),
            )),
            short_windows: vec!["1m".into()],
        }
    }

    fn policy() -> Policy {
        Policy::from_spec(&BudgetPolicy::default())
    }

    #[test]
    fn defaults_are_the_design_defaults() {
        let p = policy();
        assert_eq!(p.min_budget_remaining, 0.5);
        assert_eq!(p.max_burn_rate_to_start, 1.0);
        assert_eq!(p.max_budget_spend, 0.02);
        assert_eq!(p.abort_burn_rate, None);
    }

    #[test]
    fn decisions() {
        struct Case {
            name: &'static str,
            slos: Vec<(String, SloReading)>,
            paused: Option<&'static str>,
            held: Option<&'static str>,
            reason: &'static str,
        }
        let one = |r: SloReading| vec![("checkout".to_owned(), r)];
        let evaluated = |ready, budget, burning, remaining, burn| SloReading::Evaluated {
            status: Box::new(status(ready, budget, burning, remaining, burn)),
            short_windows: vec!["1m".into()],
        };
        let cases = vec![
            Case {
                name: "healthy service, ample budget",
                slos: one(healthy(0.9, 0.5)),
                paused: None,
                held: None,
                reason: "Open",
            },
            Case {
                name: "exactly at the policy bounds still opens",
                slos: one(healthy(0.5, 1.0)),
                paused: None,
                held: None,
                reason: "Open",
            },
            Case {
                name: "global pause wins over everything",
                slos: one(healthy(0.9, 0.5)),
                paused: Some("incident 42"),
                held: None,
                reason: "GlobalPause",
            },
            Case {
                name: "another run holds the target",
                slos: one(healthy(0.9, 0.5)),
                paused: None,
                held: Some("other-run"),
                reason: "TargetBusy",
            },
            Case {
                name: "no guarding SLO",
                slos: vec![],
                paused: None,
                held: None,
                reason: "NoGuardingSlo",
            },
            Case {
                name: "unknown SLO name",
                slos: one(SloReading::Missing),
                paused: None,
                held: None,
                reason: "SloNotFound",
            },
            Case {
                name: "Prometheus down",
                slos: one(evaluated(
                    (Status::False, "PrometheusUnavailable"),
                    (Status::Unknown, "PrometheusUnavailable"),
                    (Status::Unknown, "PrometheusUnavailable"),
                    None,
                    None,
                )),
                paused: None,
                held: None,
                reason: "PrometheusUnavailable",
            },
            Case {
                name: "invalid query",
                slos: one(evaluated(
                    (Status::False, "InvalidQuery"),
                    (Status::Unknown, "InvalidQuery"),
                    (Status::Unknown, "InvalidQuery"),
                    None,
                    None,
                )),
                paused: None,
                held: None,
                reason: "InvalidQuery",
            },
            Case {
                name: "no data",
                slos: one(evaluated(
                    (Status::True, "Evaluated"),
                    (Status::Unknown, "NoData"),
                    (Status::Unknown, "NoData"),
                    None,
                    None,
                )),
                paused: None,
                held: None,
                reason: "NoData",
            },
            Case {
                name: "low traffic is not fine",
                slos: one(evaluated(
                    (Status::True, "Evaluated"),
                    (Status::Unknown, "LowTraffic"),
                    (Status::False, "WithinBudget"),
                    Some(0.99),
                    Some(0.0),
                )),
                paused: None,
                held: None,
                reason: "LowTraffic",
            },
            Case {
                name: "budget below policy",
                slos: one(healthy(0.3, 0.5)),
                paused: None,
                held: None,
                reason: "BudgetBelowPolicy",
            },
            Case {
                name: "overspent budget",
                slos: one(evaluated(
                    (Status::True, "Evaluated"),
                    (Status::False, "BudgetExhausted"),
                    (Status::False, "WithinBudget"),
                    Some(-0.2),
                    Some(0.5),
                )),
                paused: None,
                held: None,
                reason: "BudgetBelowPolicy",
            },
            Case {
                name: "page alert firing",
                slos: one(evaluated(
                    (Status::True, "Evaluated"),
                    (Status::True, "BudgetRemaining"),
                    (Status::True, "PageTierExceeded"),
                    Some(0.9),
                    Some(0.5),
                )),
                paused: None,
                held: None,
                reason: "PageAlertFiring",
            },
            Case {
                name: "a ticket alert alone does not close the gate",
                slos: one(evaluated(
                    (Status::True, "Evaluated"),
                    (Status::True, "BudgetRemaining"),
                    (Status::True, "TicketTierExceeded"),
                    Some(0.9),
                    Some(0.5),
                )),
                paused: None,
                held: None,
                reason: "Open",
            },
            Case {
                name: "short window burning too fast",
                slos: one(healthy(0.9, 1.5)),
                paused: None,
                held: None,
                reason: "BurnRateTooHigh",
            },
            Case {
                name: "short window without data",
                slos: one(evaluated(
                    (Status::True, "Evaluated"),
                    (Status::True, "BudgetRemaining"),
                    (Status::False, "WithinBudget"),
                    Some(0.9),
                    None,
                )),
                paused: None,
                held: None,
                reason: "NoData",
            },
            Case {
                name: "NaN budget is a doubt",
                slos: one(healthy(f64::NAN, 0.1)),
                paused: None,
                held: None,
                reason: "NoData",
            },
            Case {
                name: "second SLO closes it",
                slos: vec![
                    ("a".into(), healthy(0.9, 0.1)),
                    ("b".into(), healthy(0.1, 0.1)),
                ],
                paused: None,
                held: None,
                reason: "BudgetBelowPolicy",
            },
        ];
        for c in cases {
            let d = decide(&GateInput {
                slos: &c.slos,
                policy: policy(),
                paused: c.paused.map(str::to_owned),
                target_held_by: c.held.map(str::to_owned),
            });
            assert_eq!(d.reason, c.reason, "{}: {}", c.name, d.message);
            assert_eq!(d.open, c.reason == "Open", "{}", c.name);
            assert!(!d.message.is_empty(), "{}", c.name);
        }
    }

    #[test]
    fn messages_carry_the_figures() {
        let slos = vec![("checkout".to_owned(), healthy(0.312, 0.5))];
        let d = decide(&GateInput {
            slos: &slos,
            policy: policy(),
            paused: None,
            target_held_by: None,
        });
        assert_eq!(
            d.message,
            "checkout: 31.2% of the error budget remains; budgetPolicy.minBudgetRemaining is 50.0%"
        );
    }

    #[test]
    fn abort_rules() {
        let reading = |burn: Option<f64>, spent: Option<f64>| GuardReading {
            slo: "checkout".into(),
            window: "30s".into(),
            burn_rate: burn,
            abort_at: 10.0,
            spent,
            projected: None,
        };
        let projected = |spent: f64, projected: f64| GuardReading {
            projected: Some(projected),
            ..reading(Some(1.0), Some(spent))
        };
        type Case = (
            &'static str,
            Result<Vec<GuardReading>, String>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("calm", Ok(vec![reading(Some(1.0), Some(0.001))]), None),
            (
                "at the threshold is not over",
                Ok(vec![reading(Some(10.0), None)]),
                None,
            ),
            (
                "over the threshold",
                Ok(vec![reading(Some(10.5), None)]),
                Some("BurnRateAboveAbort"),
            ),
            (
                "NaN burn",
                Ok(vec![reading(Some(f64::NAN), None)]),
                Some("BurnRateAboveAbort"),
            ),
            ("no data", Ok(vec![reading(None, None)]), Some("NoData")),
            (
                "Prometheus down",
                Err("connection refused".into()),
                Some("PrometheusUnavailable"),
            ),
            (
                "spend over the limit",
                Ok(vec![reading(Some(1.0), Some(0.03))]),
                Some("BudgetSpendAboveLimit"),
            ),
            (
                "spend not yet measurable",
                Ok(vec![reading(Some(1.0), None)]),
                None,
            ),
            (
                "under the limit now, over it by the next observation",
                Ok(vec![projected(0.012, 0.025)]),
                Some("BudgetSpendProjectedAboveLimit"),
            ),
            (
                "under the limit now and at the next observation",
                Ok(vec![projected(0.012, 0.018)]),
                None,
            ),
            (
                "over the limit already names the spend, not the projection",
                Ok(vec![projected(0.03, 0.05)]),
                Some("BudgetSpendAboveLimit"),
            ),
        ];
        for (name, readings, want) in cases {
            assert_eq!(
                abort_reason(&readings, 0.02).map(|a| a.reason.as_str()),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn next_observation_comes_sooner_while_the_spend_heads_for_the_cap() {
        use std::time::Duration;
        let reading = |spent: Option<f64>, projected: Option<f64>| GuardReading {
            slo: "s".into(),
            window: "5m".into(),
            burn_rate: Some(1.0),
            abort_at: 14.4,
            spent,
            projected,
        };
        let ten = Duration::from_secs(10);
        let soon = Duration::from_millis(2500);
        // (case, readings, cap, every, next)
        let cases = [
            (
                "nothing spent",
                vec![reading(Some(0.0), Some(0.0))],
                0.4,
                ten,
                ten,
            ),
            // 2% now, 4% projected: 6% two intervals on, under half of 40%.
            (
                "slow spend",
                vec![reading(Some(0.02), Some(0.04))],
                0.4,
                ten,
                ten,
            ),
            // The step at f = 5s of the measured runs: 14.5% spent, 29%
            // projected: 43.5% two intervals on.
            (
                "a step in errors",
                vec![reading(Some(0.145), Some(0.29))],
                0.4,
                ten,
                soon,
            ),
            (
                "exactly half",
                vec![reading(Some(0.0), Some(0.1))],
                0.4,
                ten,
                soon,
            ),
            (
                "burn rate only",
                vec![reading(None, Some(0.11))],
                0.4,
                ten,
                soon,
            ),
            ("unknown", vec![reading(None, None)], 0.4, ten, ten),
            (
                "any guard",
                vec![reading(Some(0.0), Some(0.0)), reading(Some(0.1), Some(0.2))],
                0.4,
                ten,
                soon,
            ),
            // Never below a second, never above the interval.
            (
                "short interval",
                vec![reading(Some(0.1), Some(0.2))],
                0.4,
                Duration::from_secs(2),
                Duration::from_secs(1),
            ),
            (
                "sub-second interval",
                vec![reading(Some(0.1), Some(0.2))],
                0.4,
                Duration::from_millis(500),
                Duration::from_millis(500),
            ),
        ];
        for (name, readings, cap, every, want) in cases {
            assert_eq!(next_observation(&readings, cap, every), want, "{name}");
        }
    }

    #[test]
    fn projected_spend_takes_the_faster_pace() {
        use std::time::Duration;
        let at = |secs: u64, spent: f64| SpendPoint {
            elapsed: Duration::from_secs(secs),
            spent,
        };
        let hour = Duration::from_secs(3600);
        let five = Duration::from_secs(5);
        // (case, now, previous, burn rate, period, next in, projected)
        let cases = [
            ("idle", at(10, 0.0), at(0, 0.0), Some(0.0), hour, five, 0.0),
            // Burn rate 36 over a 1h period: 1% of the budget a second.
            (
                "by burn rate",
                at(10, 0.01),
                at(5, 0.01),
                Some(36.0),
                hour,
                five,
                0.06,
            ),
            // 2% in the last 5s: 0.4%/s, faster than the burn rate says.
            (
                "by measured spend",
                at(10, 0.03),
                at(5, 0.01),
                Some(0.0),
                hour,
                five,
                0.05,
            ),
            (
                "from the run's start",
                at(10, 0.02),
                at(0, 0.0),
                None,
                hour,
                five,
                0.03,
            ),
            // A spend that went down (a noisy read) projects no refund.
            (
                "no negative pace",
                at(10, 0.01),
                at(5, 0.02),
                Some(0.0),
                hour,
                five,
                0.01,
            ),
            (
                "NaN burn ignored",
                at(10, 0.01),
                at(5, 0.01),
                Some(f64::NAN),
                hour,
                five,
                0.01,
            ),
            (
                "same instant",
                at(5, 0.01),
                at(5, 0.0),
                None,
                hour,
                five,
                0.01,
            ),
        ];
        for (name, now, previous, burn, period, next_in, want) in cases {
            let got = projected_spend(now, previous, burn, period, next_in);
            assert!((got - want).abs() < 1e-9, "{name}: {got} != {want}");
        }
    }
}
