//! The run loop against a mock API server (kube's `tower-test` pattern):
//! every request the driver makes is answered from a small in-memory world
//! and recorded, so the tests can check what a user relies on: the restore
//! plan is written before anything is touched, a dry run touches nothing,
//! a refused run says why, and an abort is followed by the restore.
//! Prometheus is an address nothing listens on, so every read fails, which
//! is itself a case the engine must handle (fail closed).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::driver::{Job, run_for_test};
use crate::context::Context;
use crate::metrics::Metrics;
use crate::prometheus::Prometheus;
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{ExperimentRun, GateRecord};

/// One request the driver made: method, path (with query) and body.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

/// What the mock cluster holds.
struct World {
    /// Whether namespace `shop` carries the opt-in label.
    opted_in: bool,
    /// Ready pods matching the experiment's selector.
    pods: usize,
}

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("web-{i}"), "namespace": "shop", "uid": format!("uid-{i}"),
            "labels": { "app": "web" }, "creationTimestamp": "2026-01-01T00:00:00Z"
        },
        "spec": { "nodeName": "node-a", "containers": [{ "name": "c", "image": "i" }] },
        "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] }
    })
}

fn reply(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(v).expect("json")))
        .expect("response")
}

fn answer(world: &World, method: &Method, path: &str, run: &Value) -> Response<Body> {
    let p = path.split('?').next().unwrap_or(path);
    match (method.as_str(), p) {
        ("GET", "/apis/headroom.dev/v1alpha1/namespaces/shop/servicelevelobjectives/checkout") => {
            reply(
                200,
                &json!({
                    "apiVersion": "headroom.dev/v1alpha1", "kind": "ServiceLevelObjective",
                    "metadata": { "name": "checkout", "namespace": "shop" },
                    "spec": {
                        "service": "checkout", "objective": 99.0, "window": "30d",
                        "indicator": { "ratio": {
                            "errors": "sum(rate(http_requests_total{code=~\"5..\"}[$window]))",
                            "total": "sum(rate(http_requests_total[$window]))"
                        } }
                    }
                }),
            )
        }
        ("GET", "/api/v1/namespaces/shop") => {
            let labels = if world.opted_in {
                json!({ "headroom.dev/chaos": "enabled" })
            } else {
                json!({})
            };
            reply(
                200,
                &json!({ "apiVersion": "v1", "kind": "Namespace",
                         "metadata": { "name": "shop", "labels": labels } }),
            )
        }
        ("GET", "/api/v1/namespaces/shop/pods") => reply(
            200,
            &json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {},
                     "items": (0..world.pods).map(pod).collect::<Vec<_>>() }),
        ),
        ("DELETE", p) if p.starts_with("/api/v1/namespaces/shop/pods/") => reply(200, &pod(0)),
        ("PATCH", "/apis/headroom.dev/v1alpha1/namespaces/shop/experimentruns/r/status") => {
            reply(200, run)
        }
        // Events and the global pause ConfigMap (absent: not paused).
        ("POST", p) if p.contains("/events") => reply(201, &json!({})),
        ("GET", p) if p.contains("/configmaps/") => reply(
            404,
            &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404, "message": "not found" }),
        ),
        _ => reply(
            404,
            &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404, "message": format!("no mock for {method} {path}") }),
        ),
    }
}

fn experiment(dry_run: bool) -> ChaosExperiment {
    serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1", "kind": "ChaosExperiment",
        "metadata": { "name": "e", "namespace": "shop", "uid": "exp-uid" },
        "spec": {
            "hypothesis": { "description": "losing a pod is fine" },
            "slos": ["checkout"],
            "action": { "podKill": { "selector": { "matchLabels": { "app": "web" } }, "count": 1 } },
            "duration": "3s", "observeInterval": "1s", "dryRun": dry_run
        }
    }))
    .expect("experiment")
}

fn run_object() -> Value {
    json!({
        "apiVersion": "headroom.dev/v1alpha1", "kind": "ExperimentRun",
        "metadata": { "name": "r", "namespace": "shop", "uid": "run-uid" },
        "spec": { "experiment": "e", "snapshot": experiment(false).spec }
    })
}

/// Drive one run against the mock world; every request, in order.
async fn drive(world: World, dry_run: bool) -> (ExperimentRun, Vec<Seen>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "shop");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let run_json = run_object();
    let server = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let bytes = req.into_body().collect_bytes().await.expect("body");
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            send.send_response(answer(&world, &method, &path, &run_json));
            log.lock().expect("log").push(Seen { method, path, body });
        }
    });
    let ctx = Context {
        client: client.clone(),
        prometheus: Prometheus::new("http://127.0.0.1:9", Duration::from_millis(500))
            .expect("prometheus client"),
        metrics: Arc::new(Metrics::default()),
        evaluation_interval: Duration::from_secs(10),
        recorded: None,
        watch_namespace: None,
        operator_namespace: "headroom-system".into(),
        runs: Default::default(),
        recorder: kube::runtime::events::Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "headroom-test".into(),
                instance: None,
            },
        ),
        indicator_checks: Default::default(),
        direct_reads: tokio::sync::Semaphore::new(1),
        instance: crate::run_owner::Instance::new(Duration::from_secs(10)),
        peers_seen: Default::default(),
        run_cache: None,
        connection_allow: Default::default(),
        notifier: crate::notify::Notifier::disabled(),
    };
    let run: ExperimentRun = serde_json::from_value(run_object()).expect("run");
    let (_tx, abort) = watch::channel(None);
    let job = Job {
        experiment: experiment(dry_run),
        run: run.clone(),
        gate: GateRecord {
            open: true,
            reason: "Open".into(),
            ..Default::default()
        },
        abort,
    };
    let status = tokio::time::timeout(Duration::from_secs(60), run_for_test(&ctx, job))
        .await
        .expect("the run ends");
    drop(ctx);
    server.abort();
    let mut run = run;
    run.status = Some(status);
    let seen = seen.lock().expect("log").clone();
    (run, seen)
}

fn status_writes(seen: &[Seen]) -> Vec<&Value> {
    seen.iter()
        .filter(|s| s.method == Method::PATCH && s.path.contains("/experimentruns/r/status"))
        .map(|s| &s.body["status"])
        .collect()
}

fn steps(status: &Value) -> Vec<&str> {
    status["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["step"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_dry_run_saves_the_plan_and_touches_nothing() {
    let (run, seen) = drive(
        World {
            opted_in: true,
            pods: 3,
        },
        true,
    )
    .await;
    let status = run.status.expect("status");
    assert_eq!(
        format!("{:?}/{:?}", status.phase, status.verdict),
        "Completed/Some(Inconclusive)"
    );
    assert!(
        !seen.iter().any(|s| s.method == Method::DELETE),
        "a dry run deleted something: {seen:?}"
    );
    let writes = status_writes(&seen);
    assert_eq!(writes[0]["phase"], "Injecting", "{writes:?}");
    assert_eq!(writes[0]["restore"]["readyPodsBefore"], 3);
    let last = writes.last().expect("a final write");
    assert_eq!(steps(last), ["RestorePlanSaved", "DryRun"]);
    assert!(
        last["timeline"][1]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("dry run: would delete 1 of 3 pods")),
        "{last}"
    );
}

#[tokio::test]
async fn a_namespace_that_did_not_opt_in_fails_the_run_before_anything_is_touched() {
    let (run, seen) = drive(
        World {
            opted_in: false,
            pods: 3,
        },
        false,
    )
    .await;
    let status = run.status.expect("status");
    assert_eq!(format!("{:?}", status.phase), "Failed");
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason
            .starts_with("NamespaceNotOptedIn: metadata.namespace: namespace shop is not opted in"),
        "{reason}"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.method == Method::DELETE || s.path.contains("/pods")),
        "a refused run read or touched pods: {seen:?}"
    );
    let writes = status_writes(&seen);
    assert_eq!(writes.len(), 1, "one final write: {writes:?}");
    assert_eq!(steps(writes[0]), ["NamespaceNotOptedIn"]);
}

#[tokio::test]
async fn the_plan_is_written_before_the_first_pod_is_deleted_and_a_silent_prometheus_aborts_the_run()
 {
    let (run, seen) = drive(
        World {
            opted_in: true,
            pods: 3,
        },
        false,
    )
    .await;
    let plan_write = seen
        .iter()
        .position(|s| {
            s.method == Method::PATCH && s.body["status"]["restore"]["readyPodsBefore"] == 3
        })
        .expect("the restore plan was written");
    let first_delete = seen
        .iter()
        .position(|s| s.method == Method::DELETE)
        .expect("a pod was deleted");
    assert!(plan_write < first_delete, "{seen:?}");
    // Prometheus never answers: the first observation aborts (fail closed),
    // the restore runs, and the verdict cannot confirm anything.
    let status = run.status.expect("status");
    assert_eq!(format!("{:?}", status.phase), "Aborted");
    assert_eq!(format!("{:?}", status.verdict), "Some(Inconclusive)");
    let reason = status.reason.unwrap_or_default();
    assert!(reason.starts_with("PrometheusUnavailable: "), "{reason}");
    let writes = status_writes(&seen);
    let all = steps(writes.last().expect("final"));
    for step in [
        "RestorePlanSaved",
        "PodKilled",
        "AbortRequested",
        "RestoreStarted",
        "Restored",
        "Verdict",
    ] {
        assert!(all.contains(&step), "{step} missing from {all:?}");
    }
    let pos = |s: &str| all.iter().position(|x| *x == s);
    assert!(pos("AbortRequested") < pos("RestoreStarted"));
    assert!(pos("RestoreStarted") < pos("Restored"));
}
