//! Notifications against real webhooks (an HTTP server in the test) listed
//! in a real Secret of the operator's namespace: a run that completes and
//! one that aborts are told to every webhook exactly once, in order, with
//! the verdict, the reason and the run link; a webhook that fails twice is
//! retried and gets each notice once; one that never answers gets each
//! notice once (not retried) and delays neither the runs nor the others; a
//! `.slack` key gets Slack messages; a webhook added to the Secret while
//! the operator runs gets the next run's notices.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use headroom::resources::ExperimentRun;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::experiment::{
    ERRORS, calm, experiment, now_secs, observing, runs, set_error_ratio, slo, timeline_time, web,
};

/// One request a webhook received, with what it answered.
#[derive(Clone, Debug)]
struct Received {
    at: f64,
    status: u16,
    body: Value,
}

type Log = Arc<Mutex<HashMap<String, Vec<Received>>>>;

/// `/flaky` answers 503 to its first 2 requests; `/hang` never answers
/// within the operator's timeout; every other path answers 200.
async fn hook(State(log): State<Log>, Path(name): Path<String>, body: String) -> StatusCode {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let status = {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        let seen = log.entry(name.clone()).or_default();
        let status = match name.as_str() {
            "flaky" if seen.len() < 2 => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        };
        seen.push(Received {
            at: now_secs(),
            status: status.as_u16(),
            body,
        });
        status
    };
    if name == "hang" {
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
    status
}

async fn serve() -> Result<(u16, Log)> {
    let log = Log::default();
    let app = Router::new()
        .route("/{name}", post(hook))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, log))
}

fn received(log: &Log, name: &str) -> Vec<Received> {
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
        .unwrap_or_default()
}

/// The run of `experiment` once it is in a final phase.
async fn final_run_of(
    cluster: &Cluster,
    ns: &str,
    experiment: &str,
    timeout: Duration,
) -> Result<ExperimentRun> {
    eventually(
        &format!("a finished run of {experiment}"),
        timeout,
        Duration::from_millis(300),
        || async {
            Ok(runs(cluster, ns).await?.into_iter().find(|r| {
                r.spec.experiment == experiment
                    && r.status
                        .as_ref()
                        .is_some_and(|s| s.phase.is_final() && s.phase != RunPhase::Gated)
            }))
        },
    )
    .await
}

/// `(run, event)` of each generic notice.
fn events(got: &[Received]) -> Vec<(String, String)> {
    got.iter()
        .map(|r| {
            (
                r.body["run"].as_str().unwrap_or("?").to_owned(),
                r.body["event"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// The operator's `headroom_notifications_total{result=…}` and
/// `headroom_notification_retries_total`.
async fn notification_metrics(operator: &Operator) -> Result<HashMap<String, f64>> {
    let text = reqwest::Client::new()
        .get(&operator.metrics_url)
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("headroom_notification"))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(name, v)| Some((name.to_owned(), v.parse().ok()?)))
        .collect())
}

#[tokio::test]
async fn runs_are_notified_once_each_in_order_and_a_dead_webhook_delays_nothing() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("notify").await?;
    // The operator's own namespace, holding the Secret.
    let home = cluster.namespace("notify-home").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    let (port, log) = serve().await?;
    let url = |name: &str| format!("http://127.0.0.1:{port}/{name}");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &home.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": "headroom-notify" },
                "stringData": {
                    "ok": url("ok"),
                    "flaky": url("flaky"),
                    "hang": url("hang"),
                    "team.slack": url("slack"),
                }
            }))?,
        )
        .await?;
    calm(&cluster).await?;
    let dashboard = "http://dashboard.example:9464/";
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "2s",
            "--operator-namespace",
            &home.name,
            "--notify-secret",
            "headroom-notify",
            "--notify-refresh",
            "2s",
            // Longer than the slack the restore checks below allow: a
            // notification awaited by the run would show.
            "--notify-timeout",
            "8s",
            "--dashboard-url",
            dashboard,
        ],
    )?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name);

    // 1. A run that completes.
    exps.create(
        &PostParams::default(),
        &experiment("completes", "checkout", json!({ "duration": "10s" }))?,
    )
    .await?;
    let first = final_run_of(&cluster, &ns.name, "completes", Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    let first_status = first.status.clone().context("status")?;
    ensure!(
        first_status.phase == RunPhase::Completed,
        "{:?} {:?}",
        first_status.phase,
        first_status.reason
    );
    // The fault ran its 10s and was undone then, although the webhook
    // `hang` held the Started notice for 8s.
    let saved = timeline_time(&first, "RestorePlanSaved").context("RestorePlanSaved")?;
    let restore = timeline_time(&first, "RestoreStarted").context("RestoreStarted")?;
    ensure!(
        restore - saved <= 10.0 + 2.0,
        "restore started {:.3}s after the plan was saved (duration 10s)",
        restore - saved
    );
    let first_done = first_status
        .completion_time
        .as_ref()
        .map(|t| t.0.as_millisecond() as f64 / 1000.0)
        .context("completionTime")?;
    let finished_at = eventually(
        "the first run's Finished notice at webhook ok",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            Ok(received(&log, "ok")
                .iter()
                .find(|r| r.body["event"] == "Finished")
                .map(|r| r.at))
        },
    )
    .await
    .with_context(|| operator.log())?;
    println!(
        "Finished notice at webhook ok {:.3}s after the run's completionTime",
        finished_at - first_done
    );

    // 2. A webhook added to the Secret while the operator runs.
    secrets
        .patch(
            "headroom-notify",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "late": url("late") } })),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // 3. A run that aborts: errors raised while the fault is in place.
    calm(&cluster).await?;
    exps.create(
        &PostParams::default(),
        // As in experiment.rs: the spend cap out of the way, so the abort
        // is the burn rate's.
        &experiment(
            "aborts",
            "checkout",
            json!({ "duration": "90s", "budgetPolicy": { "maxBudgetSpend": 100 } }),
        )?,
    )
    .await?;
    observing(&cluster, &ns.name, Duration::from_secs(60))
        .await
        .with_context(|| operator.log())?;
    set_error_ratio(&cluster, 0.5).await?;
    // Said again every 2s: the example service is shared with other test
    // processes, whose setup may reset its error rate meanwhile.
    let keep = {
        let url = format!(
            "{}/admin/error-rate?ratio=0.5",
            cluster.var("CHECKOUT_URL")?
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = reqwest::Client::new().post(&url).send().await;
            }
        })
    };
    let second = final_run_of(&cluster, &ns.name, "aborts", Duration::from_secs(60)).await;
    keep.abort();
    set_error_ratio(&cluster, 0.0).await?;
    let second = second.with_context(|| operator.log())?;
    let second_status = second.status.clone().context("status")?;
    ensure!(
        second_status.phase == RunPhase::Aborted,
        "{:?} {:?}",
        second_status.phase,
        second_status.reason
    );
    let reason = second_status.reason.clone().unwrap_or_default();
    ensure!(reason.starts_with("BurnRateAboveAbort"), "{reason}");
    // The Aborted notice is queued between the abort and the restore; the
    // webhook that never answers must not stand between them.
    let abort = timeline_time(&second, "AbortRequested").context("AbortRequested")?;
    let restore = timeline_time(&second, "RestoreStarted").context("RestoreStarted")?;
    ensure!(
        restore - abort < 1.5,
        "restore started {:.3}s after the abort",
        restore - abort
    );
    println!(
        "abort to restore {:.3}s with a webhook that never answers",
        restore - abort
    );

    // 4. Every webhook has what it should: the dead one last (8s a notice).
    let (r1, r2) = (first.name_any(), second.name_any());
    let all = vec![
        (r1.clone(), "Started".to_owned()),
        (r1.clone(), "Finished".to_owned()),
        (r2.clone(), "Started".to_owned()),
        (r2.clone(), "Aborted".to_owned()),
        (r2.clone(), "Finished".to_owned()),
    ];
    eventually(
        "every notice at every webhook",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let done = received(&log, "ok").len() >= 5
                && received(&log, "flaky").len() >= 7
                && received(&log, "slack").len() >= 5
                && received(&log, "late").len() >= 3
                && received(&log, "hang").len() >= 5;
            Ok(done.then_some(()))
        },
    )
    .await
    .with_context(|| {
        format!(
            "{:#?}\n{}",
            log.lock().map(|l| l.clone()).ok(),
            operator.log()
        )
    })?;
    // A little longer, so a duplicate or a retry would have arrived.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ok = received(&log, "ok");
    ensure!(events(&ok) == all, "ok: {:?}", events(&ok));
    ensure!(ok.iter().all(|r| r.status == 200));
    // The figures of each notice.
    let link = |run: &str| format!("http://dashboard.example:9464/runs/{}/{run}", ns.name);
    for r in &ok {
        let b = &r.body;
        let run = b["run"].as_str().unwrap_or_default();
        ensure!(b["namespace"] == ns.name.as_str(), "{b}");
        ensure!(b["runUrl"] == link(run).as_str(), "{b}");
        ensure!(
            b["id"] == format!("{}/{run}/{}", ns.name, b["event"].as_str().unwrap_or("")),
            "{b}"
        );
        ensure!(b["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{b}");
    }
    let finished = |run: &str| {
        ok.iter()
            .find(|r| r.body["run"] == run && r.body["event"] == "Finished")
            .map(|r| r.body.clone())
    };
    for (run, status) in [(&r1, &first_status), (&r2, &second_status)] {
        let b = finished(run).context("Finished notice")?;
        ensure!(
            b["verdict"] == json!(status.verdict),
            "{b} vs {:?}",
            status.verdict
        );
        ensure!(b["phase"] == json!(status.phase), "{b}");
        ensure!(b["reason"] == json!(status.reason), "{b}");
        let spent = status.budget.as_ref().and_then(|b| b.spent);
        // As recorded (null when the run ended before a spend was measured).
        ensure!(b["budgetSpent"].as_f64() == spent, "{b} vs {spent:?}");
        ensure!(
            run != &r1 || spent.is_some(),
            "the completed run's spend was measured: {b}"
        );
        let after = status.budget.as_ref().and_then(|b| b.remaining_after);
        ensure!(b["budgetRemainingAfter"].as_f64() == after, "{b}");
        ensure!(b["experiment"] == json!(first_or_second(run, &r1)), "{b}");
    }
    ensure!(
        finished(&r1).is_some_and(|b| b["experiment"] == "completes" && b["reason"].is_null()),
        "the completed run has no reason"
    );
    let aborted = ok
        .iter()
        .find(|r| r.body["event"] == "Aborted")
        .context("Aborted notice")?;
    ensure!(
        aborted.body["reason"] == reason.as_str(),
        "{}",
        aborted.body
    );
    ensure!(aborted.body["verdict"].is_null(), "{}", aborted.body);

    // Failed twice with 503, retried, then each notice once.
    let flaky = received(&log, "flaky");
    let statuses: Vec<u16> = flaky.iter().map(|r| r.status).collect();
    ensure!(
        statuses == [503, 503, 200, 200, 200, 200, 200],
        "flaky: {statuses:?}"
    );
    let delivered: Vec<Received> = flaky.iter().filter(|r| r.status == 200).cloned().collect();
    ensure!(events(&delivered) == all, "flaky: {:?}", events(&flaky));
    ensure!(
        events(&flaky[..3]) == vec![(r1.clone(), "Started".to_owned()); 3],
        "the retries are of the first notice: {:?}",
        events(&flaky)
    );
    println!(
        "flaky: delivered {:.3}s after the first attempt (2 retries)",
        flaky[2].at - flaky[0].at
    );

    // Never answers: each notice once (a POST without an answer is not
    // retried), in order, none lost.
    let hang = received(&log, "hang");
    ensure!(events(&hang) == all, "hang: {:?}", events(&hang));

    // Added while the operator ran: the second run's notices only.
    let late = received(&log, "late");
    ensure!(events(&late) == all[2..], "late: {:?}", events(&late));

    // Slack format: text (and blocks) naming the run, the event and the link.
    let slack = received(&log, "slack");
    ensure!(slack.len() == 5, "slack: {} messages", slack.len());
    let words = ["started", "finished", "started", "aborted", "finished"];
    for ((r, (run, _)), word) in slack.iter().zip(&all).zip(words) {
        let text = r.body["text"].as_str().context("slack text")?;
        ensure!(
            text.contains(run.as_str())
                && text.contains(word)
                && text.contains(&format!("<{}|Run page>", link(run))),
            "{text}"
        );
        ensure!(r.body["blocks"][0]["text"]["text"] == text, "{}", r.body);
        ensure!(r.body.get("event").is_none(), "{}", r.body);
    }
    let first_finished = slack[1].body["text"].as_str().unwrap_or_default();
    ensure!(
        first_finished.contains(&format!(
            "hypothesis *{:?}*",
            first_status.verdict.context("verdict")?
        )),
        "{first_finished}"
    );

    // The counters: 5 + 5 + 5 + 3 delivered, the dead webhook's 5 failed,
    // the flaky one's 2 retries, nothing dropped.
    let m = eventually(
        "the notification counters",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let m = notification_metrics(&operator).await?;
            let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
            Ok(
                (get("headroom_notifications_total{result=\"delivered\"}") == 18.0
                    && get("headroom_notifications_total{result=\"failed\"}") == 5.0)
                    .then_some(m),
            )
        },
    )
    .await;
    let m = match m {
        Ok(m) => m,
        Err(e) => anyhow::bail!("{e:#}: {:?}", notification_metrics(&operator).await),
    };
    ensure!(
        m.get("headroom_notification_retries_total") == Some(&2.0),
        "{m:?}"
    );
    ensure!(
        !m.contains_key("headroom_notifications_total{result=\"dropped\"}"),
        "{m:?}"
    );
    let latency: Vec<f64> = ok
        .iter()
        .filter_map(|r| {
            let t: k8s_openapi::jiff::Timestamp = r.body["time"].as_str()?.parse().ok()?;
            Some(r.at - t.as_millisecond() as f64 / 1000.0)
        })
        .collect();
    println!("webhook ok: delivery latency from notice to receipt {latency:.3?} s");
    Ok(())
}

fn first_or_second(run: &str, first: &str) -> &'static str {
    if run == first { "completes" } else { "aborts" }
}
