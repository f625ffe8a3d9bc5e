//! Memory harness (issue 22): what the operator holds with N SLOs and N/10
//! experiments in its watch caches, measured without a cluster.
//!
//! ```sh
//! MIMALLOC_PURGE_DELAY=0 cargo run --release --example memory   # RSS, on mimalloc as the image runs it
//! cargo run --release --example memory --features dhat-heap  # live heap bytes (dhat) + dhat-heap.json
//! cargo run --release --example memory -- --objects created  # objects as `make bench` creates them
//! ```
//!
//! Each size runs in a process of its own (the harness starts itself with
//! `--one N`), so one size's freed memory does not flatter the next. Each
//! process: starts what `headroom run` starts before its caches fill (the
//! tokio runtime, a kube client, the Prometheus client, the metrics
//! registry), fills the caches through `caches::apply` from the JSON the
//! API server sends (so the trimming is the operator's), then runs the SLO
//! evaluator's loop over the store (one cycle: every SLO evaluated once,
//! then waiting for the next tick), each evaluation reading its windows
//! through the operator's `RecordedCache` from a stand-in Prometheus (in the parent process, on a
//! loopback port the system picks) that answers every recorded window with
//! one series per SLO, then renders `/metrics` once (a scrape) and writes
//! the rule file once to a sink (what the rules writer does when a spec
//! changes).
//!
//! Not included: the watch streams' buffers and list pages, the kube
//! client's connections and TLS sessions, the dashboard's pages, the
//! PrometheusRule writer, Kubernetes events and status patches (and their
//! responses).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use headroom::caches;
use headroom::metrics::Metrics;
use headroom::recorded::RecordedCache;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::slo::ServiceLevelObjective;
use headroom::slo_eval::{self, Figures};
use headroom::tick_loop::Next;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The operator's allocator, so that RSS is the operator's.
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 3] = [100, 1_000, 10_000];
const INTERVAL: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let objects = match args.iter().position(|a| a == "--objects") {
        Some(i) => Objects::parse(args.get(i + 1).map(String::as_str).unwrap_or_default())?,
        None => Objects::Applied,
    };
    match args.iter().position(|a| a == "--one") {
        Some(i) => {
            let n = args
                .get(i + 1)
                .and_then(|n| n.parse().ok())
                .context("--one N")?;
            let url = args
                .iter()
                .position(|a| a == "--prometheus")
                .and_then(|i| args.get(i + 1))
                .context("--prometheus URL")?;
            one(n, objects, url)
        }
        None => table(objects),
    }
}

/// How the objects reached the API server.
#[derive(Clone, Copy, PartialEq)]
enum Objects {
    /// `kubectl apply` of a manifest with labels: the API server keeps the
    /// manifest in the last-applied-configuration annotation.
    Applied,
    /// Created by a client, as `make bench` does: no labels, no annotation.
    Created,
}

impl Objects {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "applied" => Ok(Self::Applied),
            "created" => Ok(Self::Created),
            other => bail!("--objects applied|created, not {other:?}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Created => "created",
        }
    }
}

/// Every size in a process of its own; one table.
fn table(objects: Objects) -> Result<()> {
    let exe = std::env::current_exe()?;
    let heap = cfg!(feature = "dhat-heap");
    println!(
        "memory harness: N SLOs + N/10 ChaosExperiments in the watch caches, objects {} ({}), one process per N",
        objects.name(),
        if heap {
            "dhat build: heap bytes exact; RSS is the system allocator's plus dhat's bookkeeping, not the operator's"
        } else {
            "mimalloc build: RSS as the operator's; heap bytes need --features dhat-heap"
        }
    );
    println!(
        "MIMALLOC_PURGE_DELAY={} (the image sets 0; mimalloc's default is 1000 ms)",
        std::env::var("MIMALLOC_PURGE_DELAY").unwrap_or_else(|_| "unset".into())
    );
    println!(
        "not included: watch stream buffers and list pages, the kube client's connections and TLS sessions, dashboard pages, PrometheusRule writer, status patches and their answers; Prometheus is a stand-in in the parent process (its answers are read and parsed by the child as the operator does)"
    );
    let prometheus = stand_in::start()?;
    let mut rows = Vec::new();
    for n in SIZES {
        let out = Command::new(&exe)
            .args(["--one", &n.to_string(), "--objects", objects.name()])
            .args(["--prometheus", &format!("{prometheus}/n/{n}")])
            .output()?;
        if !out.status.success() {
            bail!(
                "N={n} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8(out.stdout)?;
        if n == SIZES[0] {
            // The base, stage by stage, once.
            for line in text.lines().filter(|l| l.starts_with("base ")) {
                println!("{line}");
            }
        }
        rows.push((n, Row::parse(&text)));
    }
    let mib = |kib: f64| kib / 1024.0;
    println!(
        "{:>7} {:>6} {:>7} | {:>10} {:>10} {:>11} {:>10} | {:>9} {:>9} {:>9} {:>9}",
        "SLOs",
        "exps",
        "cycle s",
        "heap fill",
        "heap cycle",
        "peak scrape",
        "peak rules",
        "RSS fill",
        "RSS cycle",
        "RSS peak",
        "base RSS"
    );
    for (n, r) in &rows {
        println!(
            "{:>7} {:>6} {:>7.2} | {:>10} {:>10} {:>11} {:>10} | {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            n,
            n / 10,
            r.get("cycle_seconds"),
            r.heap("heap_filled"),
            r.heap("heap_cycle"),
            r.heap("heap_peak_cycle"),
            r.heap("heap_peak_rules"),
            mib(r.get("rss_filled")),
            mib(r.get("rss_cycle")),
            mib(r.get("rss_peak")),
            mib(r.get("rss_base")),
        );
    }
    println!(
        "(heap in MiB of live bytes; RSS in MiB; peak = the highest point so far in the process)"
    );
    if let (Some((n0, a)), Some((n1, b))) = (rows.first(), rows.last()) {
        let per = |k: &str| (b.get(k) - a.get(k)) / (*n1 - *n0) as f64 * 1000.0;
        let heap_per_slo = (b.get("heap_filled") - a.get("heap_filled")) / (*n1 - *n0) as f64;
        println!(
            "growth per 1,000 SLOs (+100 experiments), {n0} → {n1}: RSS filled {:.2} MiB, RSS in a cycle {:.2} MiB{}",
            mib(per("rss_filled")),
            mib(per("rss_cycle")),
            if heap {
                format!(
                    ", live heap {:.2} MiB ({:.0} bytes per SLO with its tenth of an experiment)",
                    per("heap_filled") / 1024.0 / 1024.0,
                    heap_per_slo
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// One child's `key value` lines.
struct Row(Vec<(String, f64)>);

impl Row {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> f64 {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0.0, |(_, v)| *v)
    }

    fn heap(&self, key: &str) -> String {
        match self.0.iter().find(|(k, _)| k == key) {
            Some((_, v)) => format!("{:.2}", v / 1024.0 / 1024.0),
            None => "-".into(),
        }
    }
}

/// VmRSS and VmHWM in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Live heap bytes now and at the highest point so far.
#[cfg(feature = "dhat-heap")]
fn heap() -> Option<(u64, u64)> {
    let s = dhat::HeapStats::get();
    Some((s.curr_bytes as u64, s.max_bytes as u64))
}

#[cfg(not(feature = "dhat-heap"))]
fn heap() -> Option<(u64, u64)> {
    None
}

fn report(stage: &str) {
    let (rss, hwm) = rss();
    println!("rss_{stage} {rss}");
    println!("hwm_{stage} {hwm}");
    if let Some((curr, max)) = heap() {
        println!("heap_{stage} {curr}");
        println!("heap_max_{stage} {max}");
    }
}

fn base(stage: &str, what: &str) {
    let (rss, _) = rss();
    let heap = heap().map_or(String::new(), |(curr, _)| {
        format!(", live heap {:.2} MiB", curr as f64 / 1048576.0)
    });
    println!(
        "base {stage:<16} RSS {:>6.1} MiB{heap}  ({what})",
        rss as f64 / 1024.0
    );
}

fn one(n: usize, objects: Objects, url: &str) -> Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::builder()
        .file_name(format!("dhat-heap-{n}.json"))
        .build();
    base("process", "the binary mapped, before any thread starts");
    // As #[tokio::main]: one worker per core this process may use.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The workers start on first use.
    runtime.block_on(async {
        let handles: Vec<_> = (0..workers * 4)
            .map(|_| tokio::spawn(async { tokio::task::yield_now().await }))
            .collect();
        for h in handles {
            let _ = h.await;
        }
    });
    base(
        "tokio runtime",
        &format!("{workers} worker threads started"),
    );
    runtime.block_on(run(n, objects, url))
}

async fn run(n: usize, objects: Objects, url: &str) -> Result<()> {
    let config = kube::Config::new("https://127.0.0.1:1".parse()?);
    let client = kube::Client::try_from(config)?;
    base(
        "kube client",
        "rustls config and roots, tower stack; never connects",
    );
    let prometheus = headroom::prometheus::Prometheus::new(url, INTERVAL)?;
    base("prometheus client", "reqwest with rustls; never connects");
    let metrics = Arc::new(Metrics::default());
    base("metrics registry", "every family registered, no SLO yet");
    report("base");

    let (caches, mut writers) = caches::empty();
    let ns = format!("bench-{n}");
    writers.slos.apply_watcher_event(&Event::Init);
    for i in 0..n {
        let bytes = serde_json::to_vec(&slo_json(&ns, i, objects)?)?;
        let slo: ServiceLevelObjective = serde_json::from_slice(&bytes)?;
        caches::apply(&mut writers.slos, &caches.slo_tap, Event::InitApply(slo));
    }
    caches::apply(&mut writers.slos, &caches.slo_tap, Event::InitDone);
    writers.experiments.apply_watcher_event(&Event::Init);
    for i in 0..n / 10 {
        let bytes = serde_json::to_vec(&experiment_json(&ns, i, objects))?;
        let exp: ChaosExperiment = serde_json::from_slice(&bytes)?;
        caches::apply(
            &mut writers.experiments,
            &caches.experiment_tap,
            Event::InitApply(exp),
        );
    }
    caches::apply(
        &mut writers.experiments,
        &caches.experiment_tap,
        Event::InitDone,
    );
    caches::apply(&mut writers.runs, &caches.run_tap, Event::Init);
    caches::apply(&mut writers.runs, &caches.run_tap, Event::InitDone);
    report("filled");

    // The leader's part: the SLO evaluator's loop over the shared store,
    // every SLO evaluated once (the trigger stream's first pass), each
    // then waiting for the next tick.
    metrics.slo_gauges.serve(caches.slos.clone());
    metrics.experiment_gauges.serve(caches.experiments.clone());
    let ctx = Arc::new(Cycle {
        prometheus,
        recorded: RecordedCache::new(INTERVAL, Default::default()),
        done: AtomicUsize::new(0),
    });
    let trigger = caches.slo_tap.subscribe(&caches.slos);
    let controller = {
        let ctx = ctx.clone();
        headroom::tick_loop::run(caches.slos.clone(), trigger, INTERVAL, 64, move |slo| {
            let ctx = ctx.clone();
            async move {
                if reconcile(slo, ctx.clone()).await.is_err() {
                    eprintln!("a reconcile failed");
                }
                ctx.done.fetch_add(1, Ordering::Relaxed);
                Next::Tick
            }
        })
    };
    let cycle = std::time::Instant::now();
    let controller = tokio::spawn(controller);
    while ctx.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("cycle_seconds {}", cycle.elapsed().as_secs_f64());
    report("cycle");
    // A scrape of /metrics during the cycle.
    // Piece by piece, as the operator's /metrics answer sends it.
    let scraped: usize = metrics.render_chunks().map(|piece| piece.len()).sum();
    report("scrape");
    println!("scrape_bytes {scraped}");
    if let Some((_, max)) = heap() {
        println!("heap_peak_cycle {max}");
    }
    // The rules writer's pass after a spec change.
    let state = caches.slos.state();
    let refs: Vec<&ServiceLevelObjective> = state.iter().map(AsRef::as_ref).collect();
    let mut out = CountingSink(0);
    headroom::rules::write_rule_file(&mut out, &refs, "http://headroom.example")?;
    drop(refs);
    drop(state);
    println!("rules_bytes {}", out.0);
    report("rules");
    let (_, hwm) = rss();
    println!("rss_peak {hwm}");
    if let Some((_, max)) = heap() {
        println!("heap_peak_rules {max}");
    }
    println!("queries {}", ctx.prometheus.queries_sent());
    controller.abort();
    drop(client);
    Ok(())
}

struct CountingSink(usize);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the harness's reconciles share: the operator's Prometheus client
/// and recorded-series cache, and a count of the reconciles done.
struct Cycle {
    prometheus: headroom::prometheus::Prometheus,
    recorded: RecordedCache,
    done: AtomicUsize,
}

/// The SLO reconcile as the operator's with the recording rules loaded:
/// every window read through the shared per-round cache, the status
/// computed, nothing written when the figures did not change (the bench's
/// steady SLOs). The harness's stand-in answers 0 errors and 100/s.
async fn reconcile(
    slo: Arc<ServiceLevelObjective>,
    ctx: Arc<Cycle>,
) -> Result<(), std::fmt::Error> {
    let (ns, name) = (
        slo.metadata.namespace.as_deref().unwrap_or_default(),
        slo.metadata.name.as_deref().unwrap_or_default(),
    );
    let (period, tiers) = headroom::slo_reader::tier_plans(&slo).map_err(|_| std::fmt::Error)?;
    let mut windows: std::collections::BTreeSet<Duration> =
        tiers.iter().flat_map(|t| [t.long, t.short]).collect();
    windows.insert(period);
    let shortest = windows.first().copied().unwrap_or(period);
    let reads = futures::future::join_all(windows.iter().map(|w| async {
        let w = headroom::duration::format_duration(*w);
        let snapshot = Box::pin(ctx.recorded.error_ratios(&ctx.prometheus, &w)).await;
        (w, snapshot)
    }));
    let shortest = headroom::duration::format_duration(shortest);
    let traffic = Box::pin(ctx.recorded.traffic(&ctx.prometheus, &shortest));
    let (reads, traffic) = futures::join!(reads, traffic);
    let mut figures = Figures {
        error_ratios: Default::default(),
        traffic_per_second: None,
        source: "RecordingRules".into(),
    };
    for (w, snapshot) in reads {
        let value = snapshot.map_err(|_| std::fmt::Error)?.get(ns, name);
        figures
            .error_ratios
            .insert(w, value.ok_or(std::fmt::Error)?);
    }
    figures.traffic_per_second = traffic
        .map_err(|_| std::fmt::Error)?
        .get(ns, name)
        .ok_or(std::fmt::Error)?;
    let previous = slo.status.clone().unwrap_or_default();
    let status = slo_eval::evaluate(
        &slo.spec,
        &tiers,
        &headroom::duration::format_duration(period),
        Ok(&figures),
        &previous,
        slo.metadata.generation,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    if !slo_eval::same_figures(&previous, &status) {
        // A steady SLO never gets here; the count would show it.
        println!("changed {ns}/{name}");
    }
    Ok(())
}

/// The status the operator computes for `slo` from steady figures.
fn evaluated(
    slo: &ServiceLevelObjective,
    previous: &headroom::resources::slo::ServiceLevelObjectiveStatus,
) -> Option<headroom::resources::slo::ServiceLevelObjectiveStatus> {
    let (period, tiers) = headroom::slo_reader::tier_plans(slo).ok()?;
    let mut windows: Vec<Duration> = tiers.iter().flat_map(|t| [t.long, t.short]).collect();
    windows.push(period);
    let figures = Figures {
        error_ratios: windows
            .iter()
            .map(|w| (headroom::duration::format_duration(*w), Some(0.0)))
            .collect(),
        traffic_per_second: Some(100.0),
        source: "RecordingRules".into(),
    };
    Some(slo_eval::evaluate(
        &slo.spec,
        &tiers,
        &headroom::duration::format_duration(period),
        Ok(&figures),
        previous,
        slo.metadata.generation,
        Time("2026-11-30T08:00:10Z".parse().ok()?),
    ))
}

fn uid(kind: u32, i: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{i:012x}")
}

/// An SLO as a watch delivers it: the bench's steady SLO, with the
/// metadata the API server adds and the status the operator wrote.
fn slo_json(ns: &str, i: usize, objects: Objects) -> Result<Value> {
    let name = format!("slo-{i:05}");
    let spec = json!({
        "service": "bench",
        "objective": 99.9,
        "window": "30d",
        "indicator": { "ratio": {
            "errors": "0 * absent_over_time(headroom_bench_nothing[$window])",
            "total": "100 * absent_over_time(headroom_bench_nothing[$window])"
        }}
    });
    let mut slo: ServiceLevelObjective = serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": { "name": name, "namespace": ns, "generation": 1 },
        "spec": spec,
    }))?;
    let status = evaluated(&slo, &Default::default()).context("a valid SLO")?;
    slo.status = Some(status);
    let mut value = serde_json::to_value(&slo)?;
    value["metadata"] = metadata(ns, &name, 1, i, objects, &spec, "ServiceLevelObjective");
    Ok(value)
}

/// A scheduled experiment that is not due, as the bench's idle ones, with
/// the status the operator wrote.
fn experiment_json(ns: &str, i: usize, objects: Objects) -> Value {
    let name = format!("idle-{i:04}");
    let spec = json!({
        "hypothesis": {
            "description": "losing one web pod does not burn the checkout budget faster than 2x, and the pod is back within 30s",
            "sloHolds": { "maxBurnRate": 2 },
            "recoversWithin": "30s"
        },
        "slos": ["slo-00000"],
        "budgetPolicy": { "minBudgetRemaining": 10, "maxBurnRateToStart": 1, "abortBurnRate": 3, "maxBudgetSpend": 50 },
        "action": { "podKill": { "selector": { "matchLabels": { "app": "web" } }, "count": 1, "gracePeriodSeconds": 0 } },
        "duration": "15s",
        "observeInterval": "2s",
        "blastRadius": { "maxPods": 1 },
        "schedule": "0 0 1 1 *"
    });
    json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": metadata(ns, &name, 1, 100_000 + i, objects, &spec, "ChaosExperiment"),
        "spec": spec,
        "status": {
            "action": "podKill",
            "phase": "Idle",
            "nextRun": "2027-01-01T00:00:00Z",
            "observedGeneration": 1,
            "conditions": [
                { "type": "Valid", "status": "True", "reason": "Valid", "message": "the spec passed the operator's checks",
                  "lastTransitionTime": "2026-11-30T08:00:01Z", "observedGeneration": 1 },
                { "type": "Gated", "status": "False", "reason": "Open",
                  "message": "slo-00000: budget 100.0% remaining (min 10%), burn rate 0.00 (max 1 to start)",
                  "lastTransitionTime": "2026-11-30T08:00:01Z", "observedGeneration": 1 }
            ]
        }
    })
}

/// Metadata as the API server returns it, managedFields included (the
/// cache drops them).
fn metadata(
    ns: &str,
    name: &str,
    generation: i64,
    i: usize,
    objects: Objects,
    spec: &Value,
    kind: &str,
) -> Value {
    let mut meta = json!({
        "name": name,
        "namespace": ns,
        "uid": uid(0x5105, i),
        "resourceVersion": (1_000_000 + i).to_string(),
        "generation": generation,
        "creationTimestamp": "2026-11-30T08:00:00Z",
        "managedFields": [
            { "manager": if objects == Objects::Applied { "kubectl-client-side-apply" } else { "headroom-e2e" },
              "operation": "Update", "apiVersion": "headroom.dev/v1alpha1", "time": "2026-11-30T08:00:00Z",
              "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": { ".": {}, "f:service": {}, "f:objective": {}, "f:window": {},
                "f:indicator": { ".": {}, "f:ratio": { ".": {}, "f:errors": {}, "f:total": {} } } } } },
            { "manager": "headroom", "operation": "Apply", "apiVersion": "headroom.dev/v1alpha1", "time": "2026-11-30T08:00:10Z",
              "fieldsType": "FieldsV1", "subresource": "status", "fieldsV1": { "f:status": { "f:budgetRemaining": {}, "f:conditions": {} } } }
        ]
    });
    if objects == Objects::Applied {
        let labels = json!({ "app.kubernetes.io/part-of": "bench", "team": "payments" });
        let applied = json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": kind,
            "metadata": { "labels": labels, "name": name, "namespace": ns },
            "spec": spec,
        });
        meta["labels"] = labels;
        meta["annotations"] =
            json!({ "kubectl.kubernetes.io/last-applied-configuration": format!("{applied}\n") });
    }
    meta
}

/// A stand-in for Prometheus's query API, in the parent process so that
/// its memory is not the child's: every recorded metric of the operator
/// answers one series per SLO of `/n/<N>/`, as the recording rules would
/// (labels `__name__`, `namespace`, `slo`).
mod stand_in {
    use anyhow::Result;
    use axum::extract::{Form, Path};
    use std::collections::HashMap;

    /// The base URL; the server runs on a thread of its own until the
    /// process ends.
    pub fn start() -> Result<String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        listener.set_nonblocking(true)?;
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the stand-in Prometheus");
            runtime.block_on(async move {
                let app =
                    axum::Router::new().route("/n/{n}/api/v1/query", axum::routing::post(query));
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("the stand-in's listener");
                let _ = axum::serve(listener, app).await;
            });
        });
        Ok(url)
    }

    async fn query(Path(n): Path<usize>, Form(form): Form<HashMap<String, String>>) -> String {
        let metric = form.get("query").cloned().unwrap_or_default();
        let value = if metric.contains("slo_requests") {
            "100"
        } else {
            "0"
        };
        let ns = format!("bench-{n}");
        let mut out =
            String::from(r#"{"status":"success","data":{"resultType":"vector","result":["#);
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                r#"{{"metric":{{"__name__":"{metric}","namespace":"{ns}","slo":"slo-{i:05}"}},"value":[1764489610.123,"{value}"]}}"#
            ));
        }
        out.push_str("]}}");
        out
    }
}
