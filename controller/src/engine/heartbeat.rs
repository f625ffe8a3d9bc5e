//! The driving instance's heartbeat on a run (`status.driver`), and the
//! claim another instance makes before adopting a run whose heartbeat ran
//! out. Both writes are conditional on the resourceVersion just read, so of
//! two instances racing for one run exactly one wins; the decision of who
//! holds a run is `run_owner::holder`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use crate::context::Context;
use crate::resources::run::ExperimentRun;
use crate::run_owner::{Holder, Instance, holder_of};

/// Field manager of `status.driver` alone, so that the run record's own
/// writes (manager `headroom`, the rest of the status) never remove it.
pub const FIELD_MANAGER: &str = "headroom-driver";

/// Conditional writes retried this many times when the run changed between
/// the read and the write (the record's own writes change it too).
const CONFLICT_TRIES: usize = 4;

/// The result of renewing or claiming.
#[derive(Debug)]
pub enum Outcome {
    /// This instance drives the run; the run as written.
    Held(Box<ExperimentRun>),
    /// Another instance drives it (its identity; empty when it has not
    /// written a heartbeat yet).
    Other(String),
    /// The run reached a final phase: nothing to drive.
    Finished,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Write this instance's heartbeat when `may_write` says the run (as just
/// read) may be held by it, conditional on that read.
async fn write_if(
    api: &Api<ExperimentRun>,
    name: &str,
    me: &Instance,
    may_write: impl Fn(&ExperimentRun) -> Result<(), Outcome>,
) -> Result<Outcome, kube::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        let run = api.get(name).await?;
        if run.status.as_ref().is_some_and(|s| s.phase.is_final()) {
            return Ok(Outcome::Finished);
        }
        if let Err(outcome) = may_write(&run) {
            return Ok(outcome);
        }
        let patch = json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ExperimentRun",
            "metadata": { "resourceVersion": run.metadata.resource_version },
            "status": { "driver": me.heartbeat(Timestamp::now()) },
        });
        match api
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(written) => return Ok(Outcome::Held(Box::new(written))),
            Err(e) if is_conflict(&e) && tries < CONFLICT_TRIES => {}
            Err(e) => return Err(e),
        }
    }
}

/// Renew the heartbeat of a run this instance drives. `Other` when another
/// instance has taken it over meanwhile.
pub async fn renew(
    api: &Api<ExperimentRun>,
    name: &str,
    me: &Instance,
) -> Result<Outcome, kube::Error> {
    write_if(api, name, me, |run| {
        match run.status.as_ref().and_then(|s| s.driver.as_ref()) {
            Some(d) if d.instance != me.id => Err(Outcome::Other(d.instance.clone())),
            _ => Ok(()),
        }
    })
    .await
}

/// Claim a run whose driver is gone, to adopt it. `Other` when its driver
/// turns out to be live (or another instance claimed it first).
pub async fn claim(
    api: &Api<ExperimentRun>,
    name: &str,
    me: &Instance,
) -> Result<Outcome, kube::Error> {
    write_if(api, name, me, |run| {
        match holder_of(run, me, Timestamp::now()) {
            Holder::Live { instance, .. } => Err(Outcome::Other(instance)),
            Holder::Gone { .. } => Ok(()),
        }
    })
    .await
}

/// Keep renewing the heartbeat of run `ns/name` until the task is dropped.
/// When another instance has taken the run over, set `lost` (the run's
/// record then stops writing) and ask the run to abort: it releases what
/// this process holds, and the new driver restores and records the run.
pub async fn keep(ctx: Arc<Context>, ns: String, name: String, lost: Arc<AtomicBool>) {
    let api: Api<ExperimentRun> = Api::namespaced(ctx.client.clone(), &ns);
    let every = ctx.instance.renew_every();
    loop {
        match renew(&api, &name, &ctx.instance).await {
            Ok(Outcome::Held(_)) => {}
            Ok(Outcome::Finished) => return,
            Ok(Outcome::Other(by)) => {
                warn!(run = %name, other = %by, "another operator instance took this run over; stopping here without writing its record");
                lost.store(true, Ordering::SeqCst);
                ctx.runs.abort(
                    &super::key(&ns, &name),
                    &format!("DriverLost: instance {by} took the run over"),
                );
                return;
            }
            // The API server may be away (a restart): keep driving. No one
            // else can claim the run without a successful write either, and
            // the next renewal tells whether someone did.
            Err(e) => warn!(run = %name, error = %e, "renewing the run's heartbeat failed"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Log another instance the first time it is seen driving a run.
pub fn note_peer(ctx: &Context, instance: &str, run: &str) {
    if instance.is_empty() {
        return;
    }
    let mut seen = ctx.peers_seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.insert(instance.to_owned()) {
        info!(other = %instance, run, me = %ctx.instance.id, "another operator instance is driving a run this process sees; leaving it to that instance while its heartbeat holds");
    }
}

/// Every few seconds, from the watch cache of runs: count the other live
/// instances driving runs (`headroom_other_instances`) and log each new one.
pub async fn watch_peers(ctx: Arc<Context>, runs: kube::runtime::reflector::Store<ExperimentRun>) {
    loop {
        let state = runs.state();
        let views = crate::run_owner::drivers(
            state.iter().map(AsRef::as_ref),
            &ctx.instance,
            Timestamp::now(),
        );
        let mut live = 0;
        for v in &views {
            if v.state == crate::run_owner::DriverState::Live {
                live += 1;
                note_peer(&ctx, &v.instance, v.runs.first().map_or("", String::as_str));
            }
        }
        ctx.metrics.other_instances.set(live);
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::Value;
    use std::time::Duration;

    fn me() -> Instance {
        Instance {
            id: "me-1-aaaaaa".into(),
            lease: Duration::from_secs(10),
        }
    }

    /// A run as the API server returns it, driven by `driver` whose last
    /// heartbeat is `age_s` old.
    fn run_json(rv: &str, phase: &str, driver: Option<(&str, i64)>) -> Value {
        let mut status = json!({ "phase": phase });
        if let Some((instance, age_s)) = driver {
            let beat = Timestamp::from_second(Timestamp::now().as_second() - age_s).expect("time");
            status["driver"] = json!({
                "instance": instance,
                "heartbeatTime": beat.to_string(),
                "leaseDurationSeconds": 10,
            });
        }
        json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ExperimentRun",
            "metadata": {
                "name": "r", "namespace": "ns", "resourceVersion": rv,
                "creationTimestamp": "2026-01-01T00:00:00Z"
            },
            "spec": {
                "experiment": "e",
                "snapshot": {
                    "hypothesis": {"description": "h"},
                    "slos": ["s"],
                    "duration": "1m",
                    "action": {"podKill": {"selector": {"matchLabels": {"a": "b"}}}}
                }
            },
            "status": status,
        })
    }

    fn ok(v: &Value) -> Response<Body> {
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(v).expect("json")))
            .expect("response")
    }

    fn conflict() -> Response<Body> {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "the object has been modified", "reason": "Conflict", "code": 409
        });
        Response::builder()
            .status(409)
            .body(Body::from(serde_json::to_vec(&status).expect("json")))
            .expect("response")
    }

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn api() -> (Api<ExperimentRun>, Handle) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "ns");
        (Api::namespaced(client, "ns"), handle)
    }

    /// The next request, answered with `reply`; returns its method and body.
    async fn answer(handle: &mut Handle, reply: Response<Body>) -> (Method, Value) {
        let (req, send) = handle.next_request().await.expect("a request");
        let method = req.method().clone();
        let bytes = req.into_body().collect_bytes().await.expect("body");
        send.send_response(reply);
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        (method, body)
    }

    #[tokio::test]
    async fn claim_of_an_expired_run_writes_the_heartbeat_on_the_version_read() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            let (m, _) = answer(
                &mut handle,
                ok(&run_json("7", "Observing", Some(("dead", 60)))),
            )
            .await;
            assert_eq!(m, Method::GET);
            let written = run_json("8", "Observing", Some(("me-1-aaaaaa", 0)));
            let (m, body) = answer(&mut handle, ok(&written)).await;
            assert_eq!(m, Method::PATCH);
            assert_eq!(
                body["metadata"]["resourceVersion"], "7",
                "conditional on the read"
            );
            assert_eq!(body["status"]["driver"]["instance"], "me-1-aaaaaa");
            assert_eq!(body["status"]["driver"]["leaseDurationSeconds"], 10);
            assert!(
                body["status"].get("phase").is_none(),
                "only the driver is written"
            );
        });
        let out = claim(&api, "r", &me()).await.expect("claim");
        assert!(matches!(out, Outcome::Held(_)), "{out:?}");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn claim_of_a_live_run_writes_nothing() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            answer(
                &mut handle,
                ok(&run_json("7", "Observing", Some(("alive", 3)))),
            )
            .await;
        });
        let out = claim(&api, "r", &me()).await.expect("claim");
        assert!(
            matches!(out, Outcome::Other(ref i) if i == "alive"),
            "{out:?}"
        );
        server.await.expect("server");
        // No second request: the mock would hang on an unanswered one.
    }

    #[tokio::test]
    async fn a_claim_that_loses_the_race_reads_again_and_yields_to_the_winner() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            answer(
                &mut handle,
                ok(&run_json("7", "Observing", Some(("dead", 60)))),
            )
            .await;
            let (m, _) = answer(&mut handle, conflict()).await;
            assert_eq!(m, Method::PATCH);
            // Another instance claimed it between our read and our write.
            let (m, _) = answer(
                &mut handle,
                ok(&run_json("8", "Restoring", Some(("winner", 0)))),
            )
            .await;
            assert_eq!(m, Method::GET);
        });
        let out = claim(&api, "r", &me()).await.expect("claim");
        assert!(
            matches!(out, Outcome::Other(ref i) if i == "winner"),
            "{out:?}"
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn renewal_notices_a_takeover_and_writes_nothing() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            answer(
                &mut handle,
                ok(&run_json("9", "Restoring", Some(("adopter", 1)))),
            )
            .await;
        });
        let out = renew(&api, "r", &me()).await.expect("renew");
        assert!(
            matches!(out, Outcome::Other(ref i) if i == "adopter"),
            "{out:?}"
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn renewal_of_a_finished_run_stops() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            answer(
                &mut handle,
                ok(&run_json("9", "Completed", Some(("me-1-aaaaaa", 1)))),
            )
            .await;
        });
        let out = renew(&api, "r", &me()).await.expect("renew");
        assert!(matches!(out, Outcome::Finished), "{out:?}");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn renewal_of_a_new_run_writes_the_first_heartbeat() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            let mut fresh = run_json("3", "Pending", None);
            fresh.as_object_mut().expect("object").remove("status");
            answer(&mut handle, ok(&fresh)).await;
            let (m, body) = answer(
                &mut handle,
                ok(&run_json("4", "Pending", Some(("me-1-aaaaaa", 0)))),
            )
            .await;
            assert_eq!(m, Method::PATCH);
            assert_eq!(body["metadata"]["resourceVersion"], "3");
        });
        let out = renew(&api, "r", &me()).await.expect("renew");
        assert!(matches!(out, Outcome::Held(_)), "{out:?}");
        server.await.expect("server");
    }
}
