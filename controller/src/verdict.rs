//! Verdicts: each expectation of the hypothesis against what was measured,
//! then the run's verdict as their conjunction. Pure, so every case of
//! "not enough evidence" can be tested without a cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::format_duration;
use crate::reasons::AbortReason;
use crate::resources::experiment::Hypothesis;
use crate::resources::run::{ExpectationResult, Verdict};

/// How the pods came back after the fault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recovery {
    /// Ready pods were back to the count before the fault after this long.
    Recovered(Duration),
    /// Not back after watching for this long.
    NotRecovered(Duration),
    /// Nothing was measured (no fault applied, or an action without pods).
    Unmeasured,
}

/// What the run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// Highest short-window burn rate seen per guarding SLO; `None` when
    /// Prometheus never answered with a value during the run.
    pub max_burn_rates: BTreeMap<String, Option<f64>>,
    pub recovery: Recovery,
}

/// Results for every expectation and the verdict they add up to.
pub fn judge(
    hypothesis: &Hypothesis,
    guarding: &[String],
    recovers_within: Option<Duration>,
    measured: &Measured,
) -> (Verdict, Vec<ExpectationResult>) {
    let mut results = Vec::new();
    if let Some(holds) = &hypothesis.slo_holds {
        let covered = if holds.slos.is_empty() {
            guarding
        } else {
            &holds.slos
        };
        for slo in covered {
            let bound = format!("<= {}", holds.max_burn_rate);
            let max = measured.max_burn_rates.get(slo).copied().flatten();
            let (result, message) = match max {
                Some(m) if m <= holds.max_burn_rate => (
                    Verdict::Confirmed,
                    "the burn rate stayed within the bound".to_owned(),
                ),
                Some(_) => (
                    Verdict::Refuted,
                    "the burn rate went above the bound".to_owned(),
                ),
                None => (
                    Verdict::Inconclusive,
                    "no burn rate was measured during the run".to_owned(),
                ),
            };
            results.push(ExpectationResult {
                name: format!("sloHolds/{slo}"),
                result,
                measured: max.map(|m| format!("{m:.3}")),
                bound: Some(bound),
                message: Some(message),
            });
        }
    }
    if let Some(bound) = recovers_within {
        let bound_text = format!("<= {}", format_duration(bound));
        let (result, measured_text, message) = match measured.recovery {
            Recovery::Recovered(d) if d <= bound => (
                Verdict::Confirmed,
                Some(seconds(d)),
                "Ready pods were back within the bound".to_owned(),
            ),
            Recovery::Recovered(d) => (
                Verdict::Refuted,
                Some(seconds(d)),
                "Ready pods came back, later than the bound".to_owned(),
            ),
            Recovery::NotRecovered(watched) if watched >= bound => (
                Verdict::Refuted,
                Some(format!("> {}", seconds(watched))),
                "Ready pods were not back within the bound".to_owned(),
            ),
            Recovery::NotRecovered(watched) => (
                Verdict::Inconclusive,
                Some(format!("> {}", seconds(watched))),
                "the run ended before the bound elapsed".to_owned(),
            ),
            Recovery::Unmeasured => (
                Verdict::Inconclusive,
                None,
                "recovery was not measured (no pod was touched)".to_owned(),
            ),
        };
        results.push(ExpectationResult {
            name: "recoversWithin".into(),
            result,
            measured: measured_text,
            bound: Some(bound_text),
            message: Some(message),
        });
    }
    (conjunction(&results), results)
}

/// All confirmed → Confirmed; any refuted → Refuted; otherwise (or with no
/// machine-checked expectation at all) Inconclusive.
pub fn conjunction(results: &[ExpectationResult]) -> Verdict {
    if results.iter().any(|r| r.result == Verdict::Refuted) {
        Verdict::Refuted
    } else if !results.is_empty() && results.iter().all(|r| r.result == Verdict::Confirmed) {
        Verdict::Confirmed
    } else {
        Verdict::Inconclusive
    }
}

/// The verdict of a run that was aborted for `reason`. Any abort other
/// than the budget being at risk (Prometheus or the API server away, a
/// pause, a deletion, a refused injection) cut the fault short: what held
/// until then does not confirm the hypothesis. A refutation stands, since
/// the harm was observed.
pub fn after_abort(verdict: Verdict, reason: AbortReason) -> Verdict {
    match verdict {
        Verdict::Confirmed if !reason.is_measurement() => Verdict::Inconclusive,
        v => v,
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::experiment::SloHolds;

    fn hypothesis(max_burn: Option<f64>) -> Hypothesis {
        Hypothesis {
            description: "h".into(),
            slo_holds: max_burn.map(|m| SloHolds {
                max_burn_rate: m,
                slos: vec![],
            }),
            recovers_within: None,
            checks: Vec::new(),
        }
    }

    #[test]
    fn aborts_that_cut_the_fault_short_confirm_nothing() {
        use Verdict::*;
        let cases = [
            (Confirmed, "BurnRateAboveAbort", Confirmed),
            (Confirmed, "BudgetSpendAboveLimit", Confirmed),
            (Confirmed, "KubernetesApiUnavailable", Inconclusive),
            (Confirmed, "PrometheusUnavailable", Inconclusive),
            (Confirmed, "GlobalPause", Inconclusive),
            (Confirmed, "Interrupted", Inconclusive),
            (Confirmed, "InjectionRefused", Inconclusive),
            (Refuted, "GlobalPause", Refuted),
            (Refuted, "BurnRateAboveAbort", Refuted),
            (Inconclusive, "BurnRateAboveAbort", Inconclusive),
        ];
        for (verdict, reason, want) in cases {
            assert_eq!(
                after_abort(verdict, AbortReason::parse(reason).expect("a reason")),
                want,
                "{verdict:?} after {reason}"
            );
        }
    }

    #[test]
    fn verdicts() {
        let secs = Duration::from_secs;
        struct Case {
            name: &'static str,
            max_burn: Option<f64>,
            measured_burn: Option<f64>,
            within: Option<Duration>,
            recovery: Recovery,
            verdict: Verdict,
        }
        let cases = [
            Case {
                name: "both hold",
                max_burn: Some(2.0),
                measured_burn: Some(1.2),
                within: Some(secs(30)),
                recovery: Recovery::Recovered(secs(4)),
                verdict: Verdict::Confirmed,
            },
            Case {
                name: "bound is inclusive",
                max_burn: Some(2.0),
                measured_burn: Some(2.0),
                within: Some(secs(30)),
                recovery: Recovery::Recovered(secs(30)),
                verdict: Verdict::Confirmed,
            },
            Case {
                name: "burn above the bound refutes",
                max_burn: Some(2.0),
                measured_burn: Some(14.5),
                within: Some(secs(30)),
                recovery: Recovery::Recovered(secs(4)),
                verdict: Verdict::Refuted,
            },
            Case {
                name: "slow recovery refutes",
                max_burn: Some(2.0),
                measured_burn: Some(0.1),
                within: Some(secs(30)),
                recovery: Recovery::Recovered(secs(31)),
                verdict: Verdict::Refuted,
            },
            Case {
                name: "never recovered while watched past the bound refutes",
                max_burn: None,
                measured_burn: None,
                within: Some(secs(30)),
                recovery: Recovery::NotRecovered(secs(45)),
                verdict: Verdict::Refuted,
            },
            Case {
                name: "aborted before the bound: inconclusive",
                max_burn: None,
                measured_burn: None,
                within: Some(secs(30)),
                recovery: Recovery::NotRecovered(secs(10)),
                verdict: Verdict::Inconclusive,
            },
            Case {
                name: "no burn data: inconclusive",
                max_burn: Some(2.0),
                measured_burn: None,
                within: None,
                recovery: Recovery::Unmeasured,
                verdict: Verdict::Inconclusive,
            },
            Case {
                name: "refuted beats inconclusive",
                max_burn: Some(2.0),
                measured_burn: Some(3.0),
                within: Some(secs(30)),
                recovery: Recovery::Unmeasured,
                verdict: Verdict::Refuted,
            },
            Case {
                name: "no machine-checked expectation: inconclusive",
                max_burn: None,
                measured_burn: Some(3.0),
                within: None,
                recovery: Recovery::Recovered(secs(1)),
                verdict: Verdict::Inconclusive,
            },
        ];
        for c in cases {
            let measured = Measured {
                max_burn_rates: [("checkout".to_owned(), c.measured_burn)].into(),
                recovery: c.recovery,
            };
            let (verdict, results) = judge(
                &hypothesis(c.max_burn),
                &["checkout".to_owned()],
                c.within,
                &measured,
            );
            assert_eq!(verdict, c.verdict, "{}: {results:?}", c.name);
        }
    }

    #[test]
    fn results_show_measure_beside_bound() {
        let measured = Measured {
            max_burn_rates: [("checkout".to_owned(), Some(3.25))].into(),
            recovery: Recovery::Recovered(Duration::from_millis(4200)),
        };
        let (_, results) = judge(
            &hypothesis(Some(2.0)),
            &["checkout".to_owned()],
            Some(Duration::from_secs(30)),
            &measured,
        );
        assert_eq!(results[0].name, "sloHolds/checkout");
        assert_eq!(results[0].measured.as_deref(), Some("3.250"));
        assert_eq!(results[0].bound.as_deref(), Some("<= 2"));
        assert_eq!(results[1].name, "recoversWithin");
        assert_eq!(results[1].measured.as_deref(), Some("4.2s"));
        assert_eq!(results[1].bound.as_deref(), Some("<= 30s"));
    }
}
