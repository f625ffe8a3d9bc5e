//! One loop that evaluates every object of a watch cache on each tick of
//! the evaluation interval, and a new or changed one at once.
//!
//! The SLO evaluator used kube-runtime's controller, which keeps a timer
//! and a map entry per object for its requeue: at ten thousand SLOs, about
//! 7 MB of scheduler tables (examples/memory.rs under dhat) to say "every
//! SLO, at the next tick", which all of them always were. This loop keeps
//! nothing per object between ticks: on a tick it takes the cache's list,
//! and only what is queued, running or waiting for a retry has an entry.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::{Instant, MissedTickBehavior};

/// What an evaluation asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Evaluate again at the next tick, with every other object.
    Tick,
    /// Evaluate again after this long (its inputs were not ready, or it
    /// failed), and at the ticks as always.
    RetryIn(Duration),
}

/// Evaluate every object in `store` at each tick of `interval` on the wall
/// clock (`cycles::until_next_tick`: all evaluations of a cycle come
/// together, and share one read per window), each object of `triggers` at
/// once, at most `in_flight` at a time. Runs until `triggers` ends.
///
/// A tick that comes while the last tick's objects still wait for a slot
/// adds none: the operator does not keep up, and queueing every object
/// again would only grow the queue. An object triggered while it is being
/// evaluated is evaluated again once that ends, with its latest version.
pub async fn run<K, F, Fut>(
    store: Store<K>,
    triggers: impl Stream<Item = Arc<K>>,
    interval: Duration,
    in_flight: usize,
    evaluate: F,
) where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: Fn(Arc<K>) -> Fut,
    Fut: Future<Output = Next>,
{
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let first = Instant::now() + crate::cycles::until_next_tick(since_epoch, interval);
    run_from(first, store, triggers, interval, in_flight, evaluate).await;
}

/// [`run`] with its first tick at `first`.
async fn run_from<K, F, Fut>(
    first: Instant,
    store: Store<K>,
    triggers: impl Stream<Item = Arc<K>>,
    interval: Duration,
    in_flight: usize,
    evaluate: F,
) where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: Fn(Arc<K>) -> Fut,
    Fut: Future<Output = Next>,
{
    let mut ticks = tokio::time::interval_at(first, interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut triggers = std::pin::pin!(triggers);
    let mut state: State<K> = State::default();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < in_flight.max(1) {
            let Some(queued) = state.next_to_start() else {
                break;
            };
            // The cache's latest version: the queue may hold an older one.
            let Some(obj) = store.get(&ObjectRef::from_obj(queued.as_ref())) else {
                // Deleted meanwhile.
                state.finished(&queued, Next::Tick, Instant::now());
                continue;
            };
            let evaluation = evaluate(obj.clone());
            running.push(async move { (obj, evaluation.await) });
        }
        let retry_at = state.next_retry();
        tokio::select! {
            Some((obj, next)) = running.next(), if !running.is_empty() => {
                if let Some(again) = state.finished(&obj, next, Instant::now()) {
                    state.trigger(again);
                }
            }
            trigger = triggers.next() => match trigger {
                Some(obj) => state.trigger(obj),
                None => return,
            },
            _ = ticks.tick() => state.tick(store.state()),
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                for obj in state.due_retries(Instant::now()) {
                    state.trigger(obj);
                }
            }
        }
    }
}

/// The loop's bookkeeping, apart from its timers and futures. Objects are
/// known by a hash of namespace and name (`caches::key_of`).
struct State<K> {
    /// Triggered objects: started before the tick's.
    triggered: VecDeque<Arc<K>>,
    /// The current tick's objects not started yet.
    ticked: VecDeque<Arc<K>>,
    /// Keys in `triggered` or `ticked`: each object is queued once.
    queued: HashSet<u64>,
    running: HashSet<u64>,
    /// Running objects triggered again meanwhile.
    again: HashSet<u64>,
    /// Retries by when they are due; an entry whose time no longer matches
    /// `retries` was cancelled.
    retry_times: BinaryHeap<Reverse<(Instant, u64)>>,
    retries: HashMap<u64, (Instant, Arc<K>)>,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            triggered: VecDeque::new(),
            ticked: VecDeque::new(),
            queued: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
            retry_times: BinaryHeap::new(),
            retries: HashMap::new(),
        }
    }
}

impl<K: Resource> State<K> {
    /// Evaluate `obj` as soon as a slot is free; once more after its
    /// current evaluation if it is running.
    fn trigger(&mut self, obj: Arc<K>) {
        let key = crate::caches::key_of(obj.as_ref());
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.queued.insert(key) {
            self.triggered.push_back(obj);
        }
    }

    /// A tick: every object not queued or running already, unless the last
    /// tick's are still waiting.
    fn tick(&mut self, objects: Vec<Arc<K>>) {
        if !self.ticked.is_empty() {
            return;
        }
        for obj in objects {
            let key = crate::caches::key_of(obj.as_ref());
            if !self.running.contains(&key) && self.queued.insert(key) {
                self.ticked.push_back(obj);
            }
        }
    }

    fn next_to_start(&mut self) -> Option<Arc<K>> {
        let obj = self
            .triggered
            .pop_front()
            .or_else(|| self.ticked.pop_front())?;
        let key = crate::caches::key_of(obj.as_ref());
        self.queued.remove(&key);
        self.running.insert(key);
        Some(obj)
    }

    /// An evaluation ended (or found its object deleted): returns the
    /// object when it was triggered again meanwhile. A retry it asks for
    /// replaces any earlier one; a success cancels it.
    fn finished(&mut self, obj: &Arc<K>, next: Next, now: Instant) -> Option<Arc<K>> {
        let key = crate::caches::key_of(obj.as_ref());
        self.running.remove(&key);
        self.retries.remove(&key);
        if let Next::RetryIn(after) = next {
            let at = now + after;
            self.retries.insert(key, (at, obj.clone()));
            self.retry_times.push(Reverse((at, key)));
        }
        if self.running.is_empty() && self.queued.is_empty() {
            // Between cycles nothing is queued: the capacity of a cycle of
            // ten thousand need not stay.
            self.queued.shrink_to_fit();
            self.running.shrink_to_fit();
            self.triggered.shrink_to_fit();
            self.ticked.shrink_to_fit();
        }
        self.again.remove(&key).then(|| obj.clone())
    }

    /// When the earliest retry is due, dropping cancelled entries.
    fn next_retry(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.retry_times.peek().copied() {
            if self.retries.get(&key).is_some_and(|(due, _)| *due == at) {
                return Some(at);
            }
            self.retry_times.pop();
        }
        self.retry_times.shrink_to_fit();
        None
    }

    fn due_retries(&mut self, now: Instant) -> Vec<Arc<K>> {
        let mut due = Vec::new();
        while let Some(at) = self.next_retry() {
            if at > now {
                break;
            }
            if let Some(Reverse((_, key))) = self.retry_times.pop()
                && let Some((_, obj)) = self.retries.remove(&key)
            {
                due.push(obj);
            }
        }
        if self.retries.is_empty() {
            self.retries.shrink_to_fit();
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::slo::ServiceLevelObjective;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use std::sync::Mutex;

    fn slo(name: &str, generation: i64) -> ServiceLevelObjective {
        crate::caches::tests::slo(name, generation, 1.0)
    }

    /// Each evaluation's start as (whole virtual seconds since the start,
    /// name, generation).
    type Log = Arc<Mutex<Vec<(u64, String, i64)>>>;

    const SECOND: Duration = Duration::from_secs(1);

    /// The loop over a store of `names` with its first tick 10 s after the
    /// start and a 10 s interval; each evaluation takes `takes` and answers
    /// `answer(name, its evaluations so far, this one included)`.
    struct Harness {
        writer: reflector::store::Writer<ServiceLevelObjective>,
        triggers: tokio::sync::mpsc::UnboundedSender<Arc<ServiceLevelObjective>>,
        log: Log,
    }

    impl Harness {
        fn start(
            names: &[&str],
            in_flight: usize,
            takes: Duration,
            answer: fn(&str, usize) -> Next,
        ) -> Self {
            let (store, mut writer) = reflector::store();
            writer.apply_watcher_event(&Event::Init);
            for n in names {
                writer.apply_watcher_event(&Event::InitApply(slo(n, 1)));
            }
            writer.apply_watcher_event(&Event::InitDone);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let triggers = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let log: Log = Arc::default();
            let seen = log.clone();
            let start = Instant::now();
            tokio::spawn(run_from(
                start + 10 * SECOND,
                store,
                triggers,
                10 * SECOND,
                in_flight,
                move |obj: Arc<ServiceLevelObjective>| {
                    let seen = seen.clone();
                    async move {
                        let name = obj.metadata.name.clone().unwrap_or_default();
                        let count = {
                            let mut log = seen.lock().expect("log");
                            log.push((
                                start.elapsed().as_secs(),
                                name.clone(),
                                obj.metadata.generation.unwrap_or_default(),
                            ));
                            log.iter().filter(|(_, n, _)| *n == name).count()
                        };
                        tokio::time::sleep(takes).await;
                        answer(&name, count)
                    }
                },
            ));
            Self {
                writer,
                triggers: tx,
                log,
            }
        }

        /// Changed in the cache, and triggered as the tap would.
        fn apply(&mut self, obj: ServiceLevelObjective) {
            self.writer.apply_watcher_event(&Event::Apply(obj.clone()));
            self.triggers.send(Arc::new(obj)).expect("the loop runs");
        }

        /// The evaluations that started in [from, to) seconds, sorted.
        fn started(&self, from: u64, to: u64) -> Vec<(u64, String, i64)> {
            let mut got: Vec<_> = self
                .log
                .lock()
                .expect("log")
                .iter()
                .filter(|(t, ..)| (from..to).contains(t))
                .cloned()
                .collect();
            got.sort();
            got
        }
    }

    fn at(t: u64, name: &str, generation: i64) -> (u64, String, i64) {
        (t, name.to_owned(), generation)
    }

    fn tick(_: &str, _: usize) -> Next {
        Next::Tick
    }

    #[tokio::test(start_paused = true)]
    async fn every_object_at_each_tick_and_a_changed_one_at_once() {
        let mut h = Harness::start(&["a", "b"], 8, Duration::ZERO, tick);
        tokio::time::sleep(3 * SECOND).await;
        h.apply(slo("c", 1));
        tokio::time::sleep(30 * SECOND).await;
        assert_eq!(
            h.started(0, 10),
            [at(3, "c", 1)],
            "only the new one before the first tick"
        );
        for t in [10, 20, 30] {
            assert_eq!(
                h.started(t, t + 1),
                [at(t, "a", 1), at(t, "b", 1), at(t, "c", 1)],
                "tick at {t}s"
            );
        }
        assert_eq!(h.started(11, 20), [], "nothing between the ticks");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_reads_the_latest_version_and_a_deleted_object_is_not_evaluated() {
        // Every first evaluation asks for a retry 2 s later.
        let mut h = Harness::start(&["a", "b"], 8, Duration::ZERO, |_, n| {
            if n == 1 {
                Next::RetryIn(2 * SECOND)
            } else {
                Next::Tick
            }
        });
        tokio::time::sleep(10 * SECOND + SECOND / 2).await;
        assert_eq!(h.started(10, 11), [at(10, "a", 1), at(10, "b", 1)]);
        // Before the retry: "a" has a new spec in the cache (and is
        // triggered by it), "b" is deleted.
        h.writer.apply_watcher_event(&Event::Delete(slo("b", 1)));
        h.apply(slo("a", 2));
        tokio::time::sleep(15 * SECOND).await;
        assert_eq!(
            h.started(10, 25),
            [
                at(10, "a", 1),
                at(10, "a", 2),
                at(10, "b", 1),
                at(20, "a", 2)
            ],
            "the change at once; the retry of a, due at 12s, was the change's evaluation already queued or run: {:?}",
            h.started(0, 100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_comes_back_after_its_delay() {
        let h = Harness::start(&["a"], 8, Duration::ZERO, |_, n| {
            if n < 3 {
                Next::RetryIn(3 * SECOND)
            } else {
                Next::Tick
            }
        });
        tokio::time::sleep(25 * SECOND).await;
        assert_eq!(
            h.started(0, 25),
            [
                at(10, "a", 1),
                at(13, "a", 1),
                at(16, "a", 1),
                at(20, "a", 1)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_in_flight_at_once() {
        let names = ["a", "b", "c", "d", "e", "f", "g"];
        let h = Harness::start(&names, 3, SECOND, tick);
        tokio::time::sleep(15 * SECOND).await;
        let starts: Vec<u64> = h.started(10, 20).iter().map(|(t, ..)| *t).collect();
        assert_eq!(starts, [10, 10, 10, 11, 11, 11, 12]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_while_the_last_one_is_still_queued_adds_nothing() {
        // One at a time, 4 s each: the tick at 10s takes until 30s.
        let h = Harness::start(&["a", "b", "c", "d", "e"], 1, 4 * SECOND, tick);
        tokio::time::sleep(40 * SECOND).await;
        // By name: a tick takes the cache's list in the cache's own order.
        let names = |from, to| -> Vec<String> {
            let mut names: Vec<String> =
                h.started(from, to).into_iter().map(|(_, n, _)| n).collect();
            names.sort();
            names
        };
        assert_eq!(names(10, 30), ["a", "b", "c", "d", "e"], "each once");
        assert_eq!(
            names(30, 40).len(),
            3,
            "the tick at 30s: {:?}",
            h.started(0, 100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_an_evaluation_is_evaluated_after_it() {
        let mut h = Harness::start(&["a"], 8, 5 * SECOND, tick);
        tokio::time::sleep(12 * SECOND).await;
        h.apply(slo("a", 2));
        tokio::time::sleep(5 * SECOND).await;
        assert_eq!(h.started(0, 17), [at(10, "a", 1), at(15, "a", 2)]);
    }
}
