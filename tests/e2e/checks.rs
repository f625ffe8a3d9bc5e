//! Checks beyond the burn rate, against the real Prometheus and a real
//! HTTP server: a PromQL expectation refuted and one confirmed, an HTTP
//! abort check that stops the fault after `failureThreshold` failures in a
//! row while one flaky sample neither aborts nor refutes, and checks the
//! operator may not reach refused naming the field.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::{CheckRole, RunPhase, Verdict};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::experiment::{ERRORS, calm, experiment, final_run, set_error_ratio, slo, web};

/// Answers by request count: `/flaky` fails its 2nd request only;
/// `/down` answers 200 once, then 503 for ever.
#[derive(Clone, Default)]
struct Scripted {
    flaky: Arc<AtomicUsize>,
    down: Arc<AtomicUsize>,
}

async fn flaky(State(s): State<Scripted>) -> StatusCode {
    match s.flaky.fetch_add(1, Ordering::SeqCst) {
        1 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

async fn down(State(s): State<Scripted>) -> StatusCode {
    match s.down.fetch_add(1, Ordering::SeqCst) {
        0 => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn serve() -> Result<(u16, Scripted)> {
    let state = Scripted::default();
    let app = Router::new()
        .route("/flaky", get(flaky))
        .route("/down", get(down))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, state))
}

#[tokio::test]
async fn an_http_abort_check_stops_the_fault_after_its_threshold_and_one_flaky_sample_does_not()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("check-http").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let (port, hits) = serve().await?;
    let operator = Operator::start_in_allowing(
        &cluster,
        &ns.name,
        &["--evaluation-interval", "2s"],
        &format!("127.0.0.1:{port}"),
    )?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "with-checks",
                "checkout",
                json!({
                    "hypothesis": {
                        "checks": [{ "name": "storefront", "failureThreshold": 2,
                                     "http": { "url": format!("http://127.0.0.1:{port}/flaky"), "timeout": "1s" } }]
                    },
                    "budgetPolicy": {
                        "abortChecks": [{ "name": "payments", "failureThreshold": 2,
                                          "http": { "url": format!("http://127.0.0.1:{port}/down") } }]
                    },
                    "duration": "60s"
                }),
            )?,
        )
        .await?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(120))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.context("status")?;
    ensure!(
        status.phase == RunPhase::Aborted,
        "{:?} {:?}",
        status.phase,
        status.reason
    );
    let reason = status.reason.clone().unwrap_or_default();
    ensure!(
        reason.starts_with("CheckFailed: check payments failed 2 times in a row"),
        "{reason}"
    );
    ensure!(
        status.restore.as_ref().is_some_and(|r| r.done),
        "not restored"
    );
    // /down answered 200, 503, 503: the abort came at the third sample,
    // not at the first failure.
    ensure!(
        hits.down.load(Ordering::SeqCst) == 3,
        "/down was asked {} times",
        hits.down.load(Ordering::SeqCst)
    );
    let checks = &status.observations.as_ref().context("observations")?.checks;
    let storefront = checks
        .iter()
        .find(|c| c.name == "storefront")
        .context("no storefront record")?;
    ensure!(
        storefront.role == CheckRole::Expectation
            && storefront.samples == 3
            && storefront.failures == 1
            && storefront.max_consecutive_failures == 1,
        "{storefront:?}"
    );
    let payments = checks
        .iter()
        .find(|c| c.name == "payments")
        .context("no payments record")?;
    ensure!(
        payments.role == CheckRole::Abort && payments.failures == 2,
        "{payments:?}"
    );
    let expectation = status
        .expectations
        .iter()
        .find(|e| e.name == "check/storefront")
        .context("no check/storefront expectation")?;
    // One flaky sample did not refute it; the abort cut the run short, so
    // the run as a whole does not confirm the hypothesis.
    ensure!(expectation.result == Verdict::Confirmed, "{expectation:?}");
    ensure!(
        status.verdict == Some(Verdict::Inconclusive),
        "{:?}",
        status.verdict
    );
    Ok(())
}

#[tokio::test]
async fn promql_checks_are_judged_on_the_real_prometheus() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("check-promql").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "promql-checks",
                "checkout",
                json!({
                    "hypothesis": {
                        "checks": [
                            { "name": "checkout-up", "promql": { "query": "sum(up{job=\"checkout\"})", "op": ">=", "value": 1 } },
                            { "name": "no-such-series", "failureThreshold": 2,
                              "promql": { "query": "sum(headroom_e2e_no_such_metric)", "op": "<", "value": 100 } }
                        ]
                    },
                    "duration": "12s"
                }),
            )?,
        )
        .await?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(120))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?} {:?}",
        status.phase,
        status.reason
    );
    let result = |name: &str| {
        status
            .expectations
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.result)
    };
    ensure!(
        result("check/checkout-up") == Some(Verdict::Confirmed),
        "{:#?}",
        status.expectations
    );
    // No data is a doubt: a query without a value fails the check.
    ensure!(
        result("check/no-such-series") == Some(Verdict::Refuted),
        "{:#?}",
        status.expectations
    );
    ensure!(
        status.verdict == Some(Verdict::Refuted),
        "{:?}",
        status.verdict
    );
    let up = status
        .observations
        .as_ref()
        .and_then(|o| o.checks.iter().find(|c| c.name == "checkout-up"))
        .context("no checkout-up record")?;
    ensure!(
        up.samples >= 3 && up.failures == 0 && up.last.as_deref() == Some("1"),
        "{up:?}"
    );
    Ok(())
}

#[tokio::test]
async fn checks_the_operator_may_not_reach_make_the_experiment_invalid_naming_the_field()
-> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("check-refused").await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    // (experiment, check, reason of the Valid condition, text of its message)
    let cases = [
        (
            "outside-allow-list",
            json!({ "name": "outside", "http": { "url": "http://127.0.0.1:9/" } }),
            "TargetNotAllowed",
            "spec.hypothesis.checks[].http.url (outside): 127.0.0.1:9",
        ),
        (
            "not-opted-in",
            json!({ "name": "system", "http": { "url": "http://kube-dns.kube-system.svc:53/" } }),
            "NamespaceNotOptedIn",
            "spec.hypothesis.checks[].http.url: namespace kube-system is not opted in",
        ),
    ];
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);
    for (name, check, _, _) in &cases {
        exps.create(
            &PostParams::default(),
            &experiment(
                name,
                "checkout",
                json!({ "hypothesis": { "checks": [check] } }),
            )?,
        )
        .await?;
    }
    for (name, _, reason, text) in cases {
        let message = crate::experiment::invalid_with(&exps, name, reason, &operator).await?;
        ensure!(message.contains(text), "{name}: {message}");
    }
    let runs = crate::experiment::runs(&cluster, &ns.name).await?;
    ensure!(
        runs.is_empty(),
        "{} runs of invalid experiments",
        runs.len()
    );
    Ok(())
}
