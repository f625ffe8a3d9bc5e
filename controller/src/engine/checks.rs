//! The live half of the checks beyond the burn rate
//! (`headroom_experiments::checks`): resolved and admitted before the fault,
//! sampled at every observation beside the guarding SLOs, judged after it.
//!
//! An HTTP check reaches only what the operator may reach anyway: a Service
//! in an opted-in namespace (its namespace is listed with the action's, see
//! `scope`), or a host the operator's `--connection-target-allow` covers;
//! the addresses approved are the only ones it connects to.

use std::net::SocketAddr;
use std::time::Duration;

use headroom_experiments::checks::{CheckSpec, DEFAULT_HTTP_TIMEOUT, Sample, Tally};

use super::actions::Touched;
use crate::allow_list::allowed_addresses;
use crate::context::Context;
use crate::duration::parse_duration;
use crate::reasons::{Abort, AbortReason, Refusal, RefuseReason};
use crate::resources::experiment::ChaosExperimentSpec;
use crate::resources::run::{CheckRecord, CheckRole, ExpectationResult, Verdict};

const EXPECT_FIELD: &str = "spec.hypothesis.checks[].http.url";
const ABORT_FIELD: &str = "spec.budgetPolicy.abortChecks[].http.url";

/// The namespace of an in-cluster Service host, `name.namespace.svc` or
/// `name.namespace.svc.<cluster domain>`; `None` for any other host.
pub fn service_namespace(host: &str) -> Option<&str> {
    let mut parts = host.split('.');
    let (_name, ns, svc) = (parts.next()?, parts.next()?, parts.next()?);
    (svc == "svc" && !ns.is_empty()).then_some(ns)
}

fn listed(spec: &ChaosExperimentSpec) -> impl Iterator<Item = (&CheckSpec, CheckRole)> {
    spec.hypothesis
        .checks
        .iter()
        .map(|c| (c, CheckRole::Expectation))
        .chain(
            spec.budget_policy
                .abort_checks
                .iter()
                .map(|c| (c, CheckRole::Abort)),
        )
}

fn field(role: CheckRole) -> &'static str {
    match role {
        CheckRole::Expectation => EXPECT_FIELD,
        CheckRole::Abort => ABORT_FIELD,
    }
}

/// The namespaces the HTTP checks reach through Services: they must be
/// opted in like the action's.
pub fn touched(spec: &ChaosExperimentSpec) -> Vec<Touched> {
    listed(spec)
        .filter_map(|(c, role)| {
            let url = reqwest::Url::parse(&c.http.as_ref()?.url).ok()?;
            let ns = service_namespace(url.host_str()?)?.to_owned();
            Some(Touched {
                field: field(role),
                namespace: ns,
            })
        })
        .collect()
}

/// The admission check of the HTTP checks' hosts that are not in-cluster
/// Services (those are governed by the namespace opt-in): the operator's
/// `--connection-target-allow` must cover them. Part of the experiment's
/// Valid condition, so a refused check never gets a run.
pub async fn admit(ctx: &Context, spec: &ChaosExperimentSpec) -> Result<(), Refusal> {
    for (c, role) in listed(spec) {
        let Some(h) = &c.http else { continue };
        let (_, host, port) = parse_url(&c.name, role, &h.url)?;
        if service_namespace(&host).is_none() {
            allowed_addresses(
                &ctx.connection_allow,
                &format!("{} ({})", field(role), c.name),
                &host,
                port,
            )
            .await?;
        }
    }
    Ok(())
}

/// The URL, its host and port, or a refusal naming the field.
fn parse_url(
    name: &str,
    role: CheckRole,
    url: &str,
) -> Result<(reqwest::Url, String, u16), Refusal> {
    let bad = |msg: String| {
        Refusal::new(
            RefuseReason::InvalidTarget,
            format!("{} ({name}): {msg}", field(role)),
        )
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("{url}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| bad(format!("{url} has no host")))?
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad(format!("{url} has no port")))?;
    Ok((parsed, host, port))
}

/// How a check is sampled.
enum Probe {
    Promql {
        query: String,
        op: headroom_experiments::checks::Comparison,
        value: f64,
    },
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
        expect: u16,
    },
}

struct LiveCheck {
    spec: CheckSpec,
    role: CheckRole,
    probe: Probe,
    tally: Tally,
}

/// The run's checks, with what they have seen.
#[derive(Default)]
pub struct Checks {
    items: Vec<LiveCheck>,
}

impl Checks {
    /// Resolve and admit every check of the spec, or refuse naming the field.
    pub async fn prepare(ctx: &Context, spec: &ChaosExperimentSpec) -> Result<Self, Refusal> {
        let mut items = Vec::new();
        for (c, role) in listed(spec) {
            let probe = match (&c.promql, &c.http) {
                (Some(p), _) => {
                    promql_parser::parser::parse(&p.query).map_err(|e| {
                        Refusal::new(
                            RefuseReason::InvalidSpec,
                            format!("check {}: promql.query: {e}", c.name),
                        )
                    })?;
                    Probe::Promql {
                        query: p.query.clone(),
                        op: p.op,
                        value: p.value,
                    }
                }
                (None, Some(h)) => http_probe(ctx, &c.name, role, h).await?,
                (None, None) => {
                    return Err(Refusal::new(
                        RefuseReason::InvalidSpec,
                        format!("check {}: set one of promql or http", c.name),
                    ));
                }
            };
            items.push(LiveCheck {
                spec: c.clone(),
                role,
                probe,
                tally: Tally::default(),
            });
        }
        Ok(Self { items })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sample every check once; an abort when an abort check has just
    /// failed `failureThreshold` times in a row.
    pub async fn sample(&mut self, ctx: &Context) -> Option<Abort> {
        let mut abort = None;
        for c in &mut self.items {
            let sample = c.probe.sample(ctx).await;
            let fired = c.tally.add(sample, c.spec.threshold());
            if fired && c.role == CheckRole::Abort && abort.is_none() {
                abort = Some(Abort::new(
                    AbortReason::CheckFailed,
                    format!(
                        "check {} failed {} times in a row (wanted {}; last: {})",
                        c.spec.name,
                        c.spec.threshold(),
                        c.spec.bound(),
                        c.tally.last
                    ),
                ));
            }
        }
        abort
    }

    /// The evidence: every check's samples.
    pub fn records(&self) -> Vec<CheckRecord> {
        self.items
            .iter()
            .map(|c| CheckRecord {
                name: c.spec.name.clone(),
                role: c.role,
                bound: c.spec.bound(),
                samples: i32::try_from(c.tally.samples).unwrap_or(i32::MAX),
                failures: i32::try_from(c.tally.failures).unwrap_or(i32::MAX),
                max_consecutive_failures: i32::try_from(c.tally.max_consecutive)
                    .unwrap_or(i32::MAX),
                failure_threshold: i32::try_from(c.spec.threshold()).unwrap_or(i32::MAX),
                last: (!c.tally.last.is_empty()).then(|| c.tally.last.clone()),
            })
            .collect()
    }

    /// The expectations of `hypothesis.checks`.
    pub fn expectations(&self) -> Vec<ExpectationResult> {
        self.items
            .iter()
            .filter(|c| c.role == CheckRole::Expectation)
            .map(|c| judge(&c.spec, &c.tally))
            .collect()
    }
}

/// One check's expectation from its tally.
fn judge(spec: &CheckSpec, t: &Tally) -> ExpectationResult {
    let threshold = spec.threshold();
    let (result, message) = if t.samples == 0 {
        (
            Verdict::Inconclusive,
            "never sampled: the fault ended before the first observation".to_owned(),
        )
    } else if t.failed(threshold) {
        (
            Verdict::Refuted,
            format!(
                "failed {} times in a row (threshold {threshold}); last: {}",
                t.max_consecutive, t.last
            ),
        )
    } else {
        (
            Verdict::Confirmed,
            format!(
                "{} of {} samples failed, never {threshold} in a row",
                t.failures, t.samples
            ),
        )
    };
    ExpectationResult {
        name: format!("check/{}", spec.name),
        result,
        measured: Some(format!(
            "{} failures of {} samples, at most {} in a row",
            t.failures, t.samples, t.max_consecutive
        )),
        bound: Some(format!(
            "{}; fewer than {threshold} failures in a row",
            spec.bound()
        )),
        message: Some(message),
    }
}

async fn http_probe(
    ctx: &Context,
    name: &str,
    role: CheckRole,
    h: &headroom_experiments::checks::HttpCheck,
) -> Result<Probe, Refusal> {
    let field = field(role);
    let (url, host, port) = parse_url(name, role, &h.url)?;
    let timeout = parse_duration(h.timeout.as_deref().unwrap_or(DEFAULT_HTTP_TIMEOUT))
        .unwrap_or(Duration::from_secs(2));
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        // A redirect could lead anywhere: the status is the answer.
        .redirect(reqwest::redirect::Policy::none());
    if service_namespace(&host).is_none() {
        // Pinned to the addresses the allow-list approved, so a name that
        // later resolves elsewhere changes nothing.
        let addrs: Vec<SocketAddr> = allowed_addresses(
            &ctx.connection_allow,
            &format!("{field} ({name})"),
            &host,
            port,
        )
        .await?;
        builder = builder.resolve_to_addrs(&host, &addrs);
    }
    let client = builder.build().map_err(|e| {
        Refusal::new(
            RefuseReason::InvalidTarget,
            format!("{field} ({name}): HTTP client: {e}"),
        )
    })?;
    Ok(Probe::Http {
        client,
        url,
        expect: h
            .expect_status
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(200),
    })
}

impl Probe {
    async fn sample(&self, ctx: &Context) -> Sample {
        match self {
            Self::Promql { query, op, value } => match ctx.prometheus.scalar(query).await {
                Ok(Some(v)) if op.holds(v, *value) => Sample::Pass(format!("{v}")),
                Ok(Some(v)) => Sample::Fail(format!("{v}")),
                // No data is a doubt, and a doubt is a failure.
                Ok(None) => Sample::Fail("no value (empty result or several series)".into()),
                Err(e) => Sample::Fail(format!("query failed: {e}")),
            },
            Self::Http {
                client,
                url,
                expect,
            } => {
                let started = std::time::Instant::now();
                match client.get(url.clone()).send().await {
                    Ok(r) if r.status().as_u16() == *expect => Sample::Pass(format!(
                        "{} in {}ms",
                        r.status().as_u16(),
                        started.elapsed().as_millis()
                    )),
                    Ok(r) => Sample::Fail(format!("{}", r.status().as_u16())),
                    Err(e) if e.is_timeout() => Sample::Fail("timed out".into()),
                    Err(e) => Sample::Fail(format!("no answer: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_experiments::checks::{Comparison, PromqlCheck};

    #[test]
    fn service_hosts_name_their_namespace() {
        let cases = [
            ("web.shop.svc", Some("shop")),
            ("web.shop.svc.cluster.local", Some("shop")),
            ("web.shop", None),
            ("example.com", None),
            ("127.0.0.1", None),
            ("a.b.svcx", None),
        ];
        for (host, want) in cases {
            assert_eq!(service_namespace(host), want, "{host}");
        }
    }

    #[test]
    fn a_check_is_judged_from_its_runs_of_failures() {
        let spec = CheckSpec {
            name: "queue".into(),
            promql: Some(PromqlCheck {
                query: "q".into(),
                op: Comparison::Lt,
                value: 100.0,
            }),
            http: None,
            failure_threshold: Some(2),
        };
        let tally = |samples, failures, max_consecutive| Tally {
            samples,
            failures,
            consecutive: 0,
            max_consecutive,
            last: "150".into(),
        };
        // (case, tally, verdict)
        let cases = [
            ("never sampled", tally(0, 0, 0), Verdict::Inconclusive),
            ("flaky", tally(5, 2, 1), Verdict::Confirmed),
            ("two in a row", tally(5, 2, 2), Verdict::Refuted),
        ];
        for (name, t, want) in cases {
            let r = judge(&spec, &t);
            assert_eq!(r.result, want, "{name}: {r:?}");
            assert_eq!(r.name, "check/queue");
        }
    }
}
