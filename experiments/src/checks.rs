//! Checks beyond the SLO burn rate: a PromQL comparison or an HTTP probe,
//! evaluated every `observeInterval` while the fault is in place. Listed in
//! `spec.hypothesis.checks` they are expectations (refuted when one fails
//! `failureThreshold` times in a row); listed in
//! `spec.budgetPolicy.abortChecks` they stop the fault the same way. One
//! flaky sample neither aborts nor refutes.
//!
//! The spec and the pure parts (the comparison, the run of consecutive
//! failures) are here; the live evaluation is the controller's
//! `engine::checks`.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One check: exactly one of `promql` or `http`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.promql) != has(self.http)").message("a check sets exactly one of promql or http"))]
pub struct CheckSpec {
    /// The check's name in the run's evidence and expectations, e.g.
    /// `queue-depth` (lower case letters, digits and '-').
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Passes when the query's value compares true with `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<PromqlCheck>,

    /// Passes when a GET of `url` answers `expectStatus` within `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,

    /// Consecutive failures that make the check fail (1 to 100). Defaults
    /// to 3, so one flaky sample neither aborts nor refutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: Option<i32>,
}

/// Default of `failureThreshold`.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

impl CheckSpec {
    pub fn threshold(&self) -> u32 {
        self.failure_threshold
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_FAILURE_THRESHOLD)
    }

    /// What passing means, in words, for the evidence: `queue_depth < 100`.
    pub fn bound(&self) -> String {
        match (&self.promql, &self.http) {
            (Some(p), _) => format!("{} {} {}", p.query, p.op.symbol(), p.value),
            (None, Some(h)) => format!(
                "GET {} answers {} within {}",
                h.url,
                h.expect_status.unwrap_or(200),
                h.timeout.as_deref().unwrap_or(DEFAULT_HTTP_TIMEOUT)
            ),
            (None, None) => String::new(),
        }
    }
}

/// A PromQL comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromqlCheck {
    /// An instant query with one value, e.g.
    /// `sum(rabbitmq_queue_messages{queue="orders"})`. No value (an empty
    /// result) is a failure: no data is a doubt.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// How the value compares with `value` when the check passes.
    pub op: Comparison,
    /// The bound.
    pub value: f64,
}

/// A comparison, written as in PromQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Comparison {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Comparison {
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Eq => "==",
            Self::Ne => "!=",
        }
    }

    /// Whether `value op bound` holds. NaN never passes.
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Self::Lt => value < bound,
            Self::Le => value <= bound,
            Self::Gt => value > bound,
            Self::Ge => value >= bound,
            // Exact, as PromQL's == is.
            #[allow(clippy::float_cmp)]
            Self::Eq => value == bound,
            #[allow(clippy::float_cmp)]
            Self::Ne => !value.is_nan() && value != bound,
        }
    }
}

/// Default of `http.timeout`.
pub const DEFAULT_HTTP_TIMEOUT: &str = "2s";

/// An HTTP probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// `http://` or `https://` URL. Its host must be a Service in an
    /// opted-in namespace (`name.namespace.svc`, optionally followed by the
    /// cluster domain) or be covered by the operator's
    /// `--connection-target-allow`.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,
    /// The status a passing answer has (100 to 599). Defaults to 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<i32>,
    /// How long to wait for the answer, e.g. `2s`. Defaults to 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_duration")]
    pub timeout: Option<String>,
}

/// One sample of a check.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    Pass(String),
    Fail(String),
}

/// The run of a check's samples so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub samples: u32,
    pub failures: u32,
    pub consecutive: u32,
    pub max_consecutive: u32,
    /// The last sample, in words (the value or the status).
    pub last: String,
}

impl Tally {
    /// Count a sample; true when this sample makes the run of consecutive
    /// failures reach `threshold` (the moment an abort check fires).
    pub fn add(&mut self, sample: Sample, threshold: u32) -> bool {
        self.samples += 1;
        let (failed, text) = match sample {
            Sample::Pass(t) => (false, t),
            Sample::Fail(t) => (true, t),
        };
        self.last = text;
        if failed {
            self.failures += 1;
            self.consecutive += 1;
            self.max_consecutive = self.max_consecutive.max(self.consecutive);
            self.consecutive == threshold
        } else {
            self.consecutive = 0;
            false
        }
    }

    /// Whether the check failed at some point: `threshold` in a row.
    pub fn failed(&self, threshold: u32) -> bool {
        self.max_consecutive >= threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_are_promqls_and_nan_never_passes() {
        use Comparison::*;
        // (op, value, bound, holds)
        let cases = [
            (Lt, 1.0, 2.0, true),
            (Lt, 2.0, 2.0, false),
            (Le, 2.0, 2.0, true),
            (Gt, 3.0, 2.0, true),
            (Ge, 2.0, 2.0, true),
            (Ge, 1.9, 2.0, false),
            (Eq, 2.0, 2.0, true),
            (Ne, 2.0, 2.0, false),
            (Ne, 1.0, 2.0, true),
            (Lt, f64::NAN, 2.0, false),
            (Ne, f64::NAN, 2.0, false),
        ];
        for (op, v, b, want) in cases {
            assert_eq!(op.holds(v, b), want, "{v} {} {b}", op.symbol());
        }
    }

    #[test]
    fn a_check_fails_only_on_threshold_failures_in_a_row() {
        let f = || Sample::Fail("x".into());
        let p = || Sample::Pass("ok".into());
        // (case, samples, threshold, fired at sample index, failed)
        type Case = (&'static str, Vec<Sample>, u32, Option<usize>, bool);
        let cases: Vec<Case> = vec![
            ("one flaky sample", vec![p(), f(), p(), p()], 3, None, false),
            (
                "two, broken by a pass",
                vec![f(), f(), p(), f(), f()],
                3,
                None,
                false,
            ),
            (
                "three in a row",
                vec![p(), f(), f(), f(), p()],
                3,
                Some(3),
                true,
            ),
            ("threshold 1", vec![p(), f()], 1, Some(1), true),
            (
                "fires once, not on every later failure",
                vec![f(), f(), f(), f()],
                2,
                Some(1),
                true,
            ),
            ("nothing sampled", vec![], 3, None, false),
        ];
        for (name, samples, threshold, fired_at, failed) in cases {
            let mut t = Tally::default();
            let fired: Vec<usize> = samples
                .into_iter()
                .enumerate()
                .filter_map(|(i, s)| t.add(s, threshold).then_some(i))
                .collect();
            assert_eq!(fired.first().copied(), fired_at, "{name}");
            assert!(fired.len() <= 1, "{name}: fired {fired:?}");
            assert_eq!(t.failed(threshold), failed, "{name}");
        }
    }

    #[test]
    fn the_default_threshold_is_three() {
        let c = CheckSpec {
            name: "q".into(),
            promql: Some(PromqlCheck {
                query: "up".into(),
                op: Comparison::Ge,
                value: 1.0,
            }),
            http: None,
            failure_threshold: None,
        };
        assert_eq!(c.threshold(), 3);
        assert_eq!(c.bound(), "up >= 1");
    }
}
