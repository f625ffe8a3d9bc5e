//! One watch and one in-memory copy per kind for the whole process.
//!
//! The dashboard reads these stores on every replica; the controllers, which
//! run only on the leader, take their triggers from the same watches through
//! a [`Tap`], and the rule writers read the stores instead of listing every
//! SLO each cycle. A second copy per controller would double the operator's
//! memory at ten thousand SLOs. Objects are stored without `managedFields`,
//! which nothing here reads and which is often the largest part of them.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::ExperimentRun;
use crate::resources::slo::ServiceLevelObjective;

/// What a change must touch to trigger a reconcile: a hash of the fields
/// that matter, so that the operator's own status writes do not.
type Predicate<K> = fn(&K) -> u64;

/// Forwards changed objects to a controller, once one listens.
pub struct Tap<K: Resource> {
    inner: Arc<Mutex<TapState<K>>>,
    predicate: Predicate<K>,
}

struct TapState<K: Resource> {
    sender: Option<mpsc::UnboundedSender<Arc<K>>>,
    /// Predicate hash by a hash of namespace and name: an `ObjectRef` key
    /// holds two strings per object (2 MiB at ten thousand SLOs). Two
    /// objects whose keys collide cost at worst an extra reconcile, or a
    /// missed one only if their predicate hashes collide too.
    seen: HashMap<u64, u64>,
}

impl<K: Resource> Clone for Tap<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            predicate: self.predicate,
        }
    }
}

impl<K> Tap<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn new(predicate: Predicate<K>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(TapState {
                sender: None,
                seen: HashMap::new(),
            })),
            predicate,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TapState<K>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called for every object the watch applies.
    fn offer(&self, obj: &Arc<K>) {
        let mut state = self.state();
        let Some(sender) = state.sender.clone() else {
            return;
        };
        let hash = (self.predicate)(obj);
        if state.seen.insert(key_of(obj.as_ref()), hash) != Some(hash)
            && sender.send(obj.clone()).is_err()
        {
            state.sender = None;
        }
    }

    /// A deleted object: nothing to compare its next version with.
    fn forget(&self, obj: &K) {
        self.state().seen.remove(&key_of(obj));
    }

    /// The trigger stream of a controller: every object in `store` now,
    /// then each change that passes the predicate. Objects a controller
    /// schedules twice are reconciled once.
    pub fn subscribe(&self, store: &Store<K>) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let snapshot = {
            let mut state = self.state();
            // Listen first, then snapshot: a change in between is sent
            // twice rather than lost.
            state.sender = Some(tx);
            let snapshot = store.state();
            state.seen = snapshot
                .iter()
                .map(|o| (key_of(o.as_ref()), (self.predicate)(o)))
                .collect();
            snapshot
        };
        futures::stream::iter(snapshot).chain(tokio_stream_from(rx))
    }
}

/// Name and namespace only, hashed: the uid and resource version change
/// with a re-created or updated object, which is the same key here.
pub(crate) fn key_of<K: Resource>(obj: &K) -> u64 {
    hash_of(|h| (&obj.meta().namespace, &obj.meta().name).hash(h))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn hash_of(f: impl FnOnce(&mut std::collections::hash_map::DefaultHasher)) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f(&mut h);
    h.finish()
}

/// SLOs: a spec change (new generation) or a deletion.
fn slo_trigger(s: &ServiceLevelObjective) -> u64 {
    hash_of(|h| {
        s.metadata.generation.hash(h);
        s.metadata.deletion_timestamp.is_some().hash(h);
    })
}

/// Experiments: spec, deletion, finalizers and a "run now" request; never
/// the operator's own status writes (the gate message carries live figures,
/// so reacting to them would loop).
fn experiment_trigger(e: &ChaosExperiment) -> u64 {
    hash_of(|h| {
        e.metadata.generation.hash(h);
        e.metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .hash(h);
        e.metadata.finalizers.hash(h);
        e.annotations().get(crate::resources::RUN_NOW).hash(h);
    })
}

/// Runs: any change their owner's reconcile reads (phase, verdict, steps,
/// driver, deletion), but not a driver's heartbeat renewal alone: that
/// would reconcile the experiment every few seconds in every instance. An
/// instance waiting for a heartbeat to run out requeues itself for then.
fn run_trigger(r: &ExperimentRun) -> u64 {
    hash_of(|h| {
        r.metadata.generation.hash(h);
        r.metadata.deletion_timestamp.is_some().hash(h);
        let Some(st) = r.status.as_ref() else {
            return;
        };
        let mut status = st.clone();
        if let Some(d) = status.driver.as_mut() {
            d.heartbeat_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            );
        }
        serde_json::to_string(&status).unwrap_or_default().hash(h);
    })
}

/// The process's watch caches.
pub struct Caches {
    pub slos: Store<ServiceLevelObjective>,
    pub experiments: Store<ChaosExperiment>,
    pub runs: Store<ExperimentRun>,
    pub slo_tap: Tap<ServiceLevelObjective>,
    pub experiment_tap: Tap<ChaosExperiment>,
    pub run_tap: Tap<ExperimentRun>,
}

/// The caches and the future that keeps them filled (run it for the life
/// of the process, on every replica).
pub fn start(
    client: &kube::Client,
    watch_namespace: Option<&str>,
) -> (Arc<Caches>, impl Future<Output = ()> + Send + 'static) {
    let (caches, writers) = empty();
    let s = fill(
        writers.slos,
        crate::context::watched(client, watch_namespace),
        caches.slo_tap.clone(),
    );
    let e = fill(
        writers.experiments,
        crate::context::watched(client, watch_namespace),
        caches.experiment_tap.clone(),
    );
    let r = fill(
        writers.runs,
        crate::context::watched(client, watch_namespace),
        caches.run_tap.clone(),
    );
    (caches, async move {
        futures::join!(s, e, r);
    })
}

async fn fill<K>(writer: reflector::store::Writer<K>, api: kube::Api<K>, tap: Tap<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let mut writer = writer;
    watcher(api, watcher::Config::default())
        .default_backoff()
        .for_each(|event| {
            if let Ok(event) = event {
                apply(&mut writer, &tap, event);
            }
            async {}
        })
        .await;
}

/// kubectl's copy of the manifest it last applied: a second copy of the
/// spec as JSON text on every object applied with kubectl.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the cache keeps of an object the watch delivers: everything but
/// `managedFields` and kubectl's last-applied manifest, which nothing here
/// reads (the operator reads one annotation, `headroom.dev/run-requested`,
/// and never writes a cached object back whole).
pub fn trim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// One watch event into the store and the tap: what [`start`] does with
/// each event, public so that the memory harness (`examples/memory.rs`)
/// measures the cache as the operator fills it.
pub fn apply<K>(
    writer: &mut reflector::store::Writer<K>,
    tap: &Tap<K>,
    mut event: watcher::Event<K>,
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    match &mut event {
        watcher::Event::Apply(obj)
        | watcher::Event::InitApply(obj)
        | watcher::Event::Delete(obj) => trim(obj),
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
    writer.apply_watcher_event(&event);
    // The watcher's own copy: during the initial list the store takes the
    // objects only once the list is complete.
    match event {
        watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => tap.offer(&Arc::new(obj)),
        watcher::Event::Delete(obj) => tap.forget(&obj),
        // The list is in the store now. A controller that subscribed after
        // an object's InitApply and before this snapshotted a store without
        // it, and would never have reconciled it (an SLO created as the
        // operator started stayed unevaluated). Offering the whole list
        // again sends only what the controller has not seen.
        watcher::Event::InitDone => {
            for obj in writer.as_reader().state() {
                tap.offer(&obj);
            }
        }
        watcher::Event::Init => {}
    }
}

/// Empty caches and the writers that fill them, for the memory harness and
/// tests; [`start`] connects the same writers to the watches.
pub fn empty() -> (Arc<Caches>, Writers) {
    let (slos, slo_writer) = reflector::store();
    let (experiments, exp_writer) = reflector::store();
    let (runs, run_writer) = reflector::store();
    let caches = Arc::new(Caches {
        slos,
        experiments,
        runs,
        slo_tap: Tap::new(slo_trigger),
        experiment_tap: Tap::new(experiment_trigger),
        run_tap: Tap::new(run_trigger),
    });
    let writers = Writers {
        slos: slo_writer,
        experiments: exp_writer,
        runs: run_writer,
    };
    (caches, writers)
}

/// The write halves of [`Caches`]' stores.
pub struct Writers {
    pub slos: reflector::store::Writer<ServiceLevelObjective>,
    pub experiments: reflector::store::Writer<ChaosExperiment>,
    pub runs: reflector::store::Writer<ExperimentRun>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures::FutureExt;
    use kube::runtime::watcher::Event;

    /// An SLO as the API server sends it; also the tick loop's fixture.
    pub(crate) fn slo(name: &str, generation: i64, budget: f64) -> ServiceLevelObjective {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ServiceLevelObjective",
            "metadata": { "name": name, "namespace": "shop", "generation": generation },
            "spec": {
                "service": "checkout", "objective": 99.9, "window": "30d",
                "indicator": { "ratio": { "errors": "e[$window]", "total": "t[$window]" } }
            },
            "status": { "budgetRemaining": budget }
        }))
        .expect("valid SLO")
    }

    fn next_name<S: Stream<Item = Arc<ServiceLevelObjective>> + Unpin>(
        s: &mut S,
    ) -> Option<String> {
        s.next().now_or_never().flatten().map(|o| o.name_any())
    }

    #[test]
    fn the_cache_drops_managed_fields_and_kubectls_manifest_only() {
        let with = |annotations: serde_json::Value| -> ServiceLevelObjective {
            let mut s = slo("a", 1, 1.0);
            s.metadata.annotations = serde_json::from_value(annotations).expect("map");
            s.metadata.managed_fields = Some(vec![Default::default()]);
            s.metadata.labels = Some([("team".to_owned(), "x".to_owned())].into());
            s
        };
        let last = serde_json::json!({ LAST_APPLIED: "{}" });
        let mine = serde_json::json!({ crate::resources::RUN_NOW: "2026-11-30T08:00:00Z" });
        let both = serde_json::json!({ LAST_APPLIED: "{}", crate::resources::RUN_NOW: "t" });
        let cases = [
            (serde_json::Value::Null, None),
            (last, None),
            (mine.clone(), Some(mine)),
            (
                both,
                Some(serde_json::json!({ crate::resources::RUN_NOW: "t" })),
            ),
        ];
        for (given, kept) in cases {
            let mut s = with(given.clone());
            trim(&mut s);
            let kept = kept.map(|k| serde_json::from_value(k).expect("map"));
            assert_eq!(s.metadata.annotations, kept, "{given}");
            assert_eq!(s.metadata.managed_fields, None);
            assert_eq!(s.metadata.labels.as_ref().map(|l| l.len()), Some(1));
            assert_eq!(s.spec, slo("a", 1, 1.0).spec);
        }
    }

    #[test]
    fn a_heartbeat_alone_does_not_trigger_the_experiment() {
        let run = |phase: &str, instance: &str, beat: &str| -> ExperimentRun {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "headroom.dev/v1alpha1",
                "kind": "ExperimentRun",
                "metadata": { "name": "r", "namespace": "shop", "resourceVersion": beat },
                "spec": { "experiment": "e", "snapshot": {
                    "hypothesis": {"description": "h"}, "slos": ["s"], "duration": "1m",
                    "action": {"podKill": {"count": 1, "selector": {"matchLabels": {"a": "b"}}}}
                }},
                "status": { "phase": phase, "driver": {
                    "instance": instance, "heartbeatTime": format!("2026-11-30T08:00:{beat}.000000Z"),
                    "leaseDurationSeconds": 10
                }}
            }))
            .expect("valid run")
        };
        let base = run_trigger(&run("Observing", "a", "01"));
        assert_eq!(base, run_trigger(&run("Observing", "a", "04")), "renewal");
        assert_ne!(base, run_trigger(&run("Restoring", "a", "04")), "phase");
        assert_ne!(
            base,
            run_trigger(&run("Observing", "b", "04")),
            "new driver"
        );
    }

    #[test]
    fn a_controller_gets_the_cache_then_spec_changes_only() {
        let (store, mut writer) = reflector::store();
        let tap = Tap::new(slo_trigger);
        // Nobody listens yet (a follower): nothing queues up.
        tap.offer(&Arc::new(slo("early", 1, 1.0)));
        writer.apply_watcher_event(&Event::Apply(slo("a", 1, 1.0)));
        let mut trigger = Box::pin(tap.subscribe(&store));
        assert_eq!(
            next_name(&mut trigger).as_deref(),
            Some("a"),
            "the cache first"
        );
        assert_eq!(next_name(&mut trigger), None);
        // Our own status write: same generation, no trigger.
        tap.offer(&Arc::new(slo("a", 1, 0.5)));
        assert_eq!(next_name(&mut trigger), None);
        // A spec change and a new SLO trigger.
        tap.offer(&Arc::new(slo("a", 2, 0.5)));
        tap.offer(&Arc::new(slo("b", 1, 1.0)));
        assert_eq!(next_name(&mut trigger).as_deref(), Some("a"));
        assert_eq!(next_name(&mut trigger).as_deref(), Some("b"));
        assert_eq!(next_name(&mut trigger), None);
    }

    #[test]
    fn an_object_listed_before_a_controller_subscribes_is_triggered_when_the_list_completes() {
        let (store, mut writer) = reflector::store();
        let tap = Tap::new(slo_trigger);
        apply(&mut writer, &tap, Event::Init);
        // Listed before the controller listens; the store holds it only at
        // InitDone, so the controller's snapshot misses it.
        apply(&mut writer, &tap, Event::InitApply(slo("early", 1, 1.0)));
        let mut trigger = Box::pin(tap.subscribe(&store));
        assert_eq!(next_name(&mut trigger), None, "not in the store yet");
        apply(&mut writer, &tap, Event::InitApply(slo("late", 1, 1.0)));
        apply(&mut writer, &tap, Event::InitDone);
        let mut got = vec![];
        while let Some(name) = next_name(&mut trigger) {
            got.push(name);
        }
        got.sort();
        // Each once: "late" was sent at its InitApply and is not sent again.
        assert_eq!(got, ["early", "late"]);
    }
}
