//! `make bench`: what SLO rules cost Prometheus, side by side with Sloth.
//! Figures, not assertions; needs no Kubernetes. scripts/bench.sh runs it
//! with SLOTH_BIN from tests/cluster/sloth.sh.
//!
//! For each N in BENCH_RULE_SERVICES (default 100,1000): N services, each
//! with one 99.9%/30d ratio SLO over `http_requests_total{service,
//! instance, code}`. 30 days of synthetic counters are backfilled with
//! `promtool tsdb create-blocks-from openmetrics`, then the recorded series
//! each side's long windows read with `promtool tsdb create-blocks-from
//! rules`, so every side reads 30 days as it would in steady state. Then,
//! one after another on copies of that data, a Prometheus loads one rule
//! set: Headroom's (long windows tiled from recorded short ones), Sloth's
//! (`sloth generate`), and today's exact rules (`headroom rules
//! --long-windows exact`: every window `rate(x[w])` over the raw counters).
//! Each scrapes the same live counters. Printed: summed
//! `prometheus_rule_group_last_duration_seconds` per cycle, Prometheus CPU
//! seconds per minute, and both as a ratio to Sloth's.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use headroom::duration::{format_duration, parse_duration};
use headroom::long_windows::Mode;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{PrivatePrometheus, free_port};
use serde_json::json;

const NAMESPACE: &str = "bench";
const SLOTH_SLO: &str = "requests-availability";
/// Rule evaluation and scrape interval of every Prometheus here; recent raw
/// samples and recorded series in the history are this far apart too.
const INTERVAL: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const HISTORY: i64 = 30 * DAY;
/// Raw samples INTERVAL apart for the last three days (the longest raw
/// window Sloth reads), COARSE apart before that.
const FINE_SPAN: i64 = 3 * DAY;
const COARSE: i64 = HOUR;
/// Sloth's recorded 5m ratio older than FINE_SPAN is computed over this
/// window: the raw samples there are COARSE apart, too sparse for [5m].
const SLOTH_OLD_WINDOW: &str = "2h";
/// Status codes and their share of a service's requests: 0.05% errors,
/// under the 0.1% budget, so no side has alerts firing.
const CODES: [(&str, f64); 4] = [
    ("200", 0.9695),
    ("404", 0.03),
    ("500", 0.0003),
    ("503", 0.0002),
];
/// promtool writes blocks of up to 486h (2h·3⁵) with this, so 30 days make
/// a few blocks per run instead of 360 two-hour ones.
const MAX_BLOCK: &str = "744h";
const BLOCK_ALIGN: i64 = 486 * HOUR;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn dur(text: &str) -> Result<Duration> {
    parse_duration(text).map_err(|e| anyhow::anyhow!("{text}: {e}"))
}

/// Run a command to completion; on failure, say which and show its output.
fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let tail: String = text
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("{what} failed ({}): {tail}", out.status);
    }
    Ok(text)
}

/// A directory removed when dropped. Declare it before the processes that
/// use it: locals drop in reverse order.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The synthetic counters: each a pure function of time, so the backfilled
/// history, the top-ups and the live scrape agree.
#[derive(Clone)]
struct Traffic {
    services: usize,
    instances: usize,
    /// Every counter is zero here.
    origin: i64,
}

impl Traffic {
    fn service(s: usize) -> String {
        format!("svc-{s:04}")
    }

    fn series(&self) -> usize {
        self.services * self.instances * CODES.len()
    }

    /// The counter at `t`: 20–100 requests per second per service, split
    /// over its instances and codes, ±30% over the day.
    fn value(&self, service: usize, share: f64, t: i64) -> f64 {
        let rate = (20.0 + (service % 17) as f64 * 5.0) * share / self.instances as f64;
        let x = (t - self.origin) as f64;
        let (day, tau) = (DAY as f64, std::f64::consts::TAU);
        (rate * (x + 0.3 * day / tau * (1.0 - (tau * x / day).cos()))).floor()
    }

    /// Every series at each of `times` (OpenMetrics lines with timestamps),
    /// or at `now` without a timestamp (the text format a scrape reads).
    fn write(&self, out: &mut impl std::io::Write, times: Option<&[i64]>) -> std::io::Result<()> {
        let now = [now_secs()];
        for s in 0..self.services {
            let svc = Self::service(s);
            for i in 0..self.instances {
                for (code, share) in CODES {
                    let labels = format!(
                        "http_requests_total{{job=\"bench\",service=\"{svc}\",instance=\"10.{}.{}.{i}:8080\",code=\"{code}\"}}",
                        s / 256,
                        s % 256
                    );
                    match times {
                        Some(times) => {
                            for &t in times {
                                writeln!(out, "{labels} {} {t}", self.value(s, share, t))?;
                            }
                        }
                        None => writeln!(out, "{labels} {}", self.value(s, share, now[0]))?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Backfill `times` of every series into `data` with promtool, one input
/// file per block range (promtool reads its whole input once per block).
fn backfill_raw(
    promtool: &Path,
    traffic: &Traffic,
    times: &[i64],
    tmp: &Path,
    data: &Path,
) -> Result<usize> {
    let mut ranges: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for &t in times {
        ranges.entry(t.div_euclid(BLOCK_ALIGN)).or_default().push(t);
    }
    let mut samples = 0;
    for (k, ts) in ranges {
        let file = tmp.join(format!("raw-{k}.om"));
        {
            let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&file)?);
            writeln!(out, "# TYPE http_requests counter")?;
            traffic.write(&mut out, Some(&ts))?;
            writeln!(out, "# EOF")?;
            out.flush()?;
        }
        samples += ts.len() * traffic.series();
        let result = run(
            Command::new(promtool)
                .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
                .arg(format!("--max-block-duration={MAX_BLOCK}"))
                .arg(&file)
                .arg(data),
            "promtool tsdb create-blocks-from openmetrics",
        );
        let _ = std::fs::remove_file(&file);
        result?;
    }
    Ok(samples)
}

/// Serves the counters at their current values for Prometheus to scrape.
/// Stopped when dropped.
struct Exporter {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    fn start(traffic: Traffic) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let mut body = Vec::with_capacity(traffic.series() * 110);
                let _ = traffic.write(&mut body, None);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            }
        });
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One Prometheus on a data directory of ours; killed when dropped.
struct Prom {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prom {
    async fn start(dir: &Path, config: &str, extra: &[&str]) -> Result<Self> {
        let port = free_port()?;
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let log = dir.join("prometheus.log");
        let bin = PrivatePrometheus::binary()?;
        let child = Command::new(&bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            // Nothing of the 30 days may be deleted while we measure.
            .arg("--storage.tsdb.retention.time=3650d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::OpenOptions::new().append(true).open(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut p = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!("Prometheus exited with {status}: {}", p.log_tail());
            }
            if let Ok(r) = reqwest::get(format!("{}/-/ready", p.url)).await
                && r.status().is_success()
            {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                bail!("Prometheus not ready after 300s: {}", p.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// CPU time (user + system) so far, seconds.
    fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let rest = stat.rsplit_once(')').context("/proc stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).context("utime")?.parse::<f64>()?
            + f.get(12).context("stime")?.parse::<f64>()?;
        Ok(ticks / 100.0)
    }

    fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    }

    /// Its own metrics: (name with labels, value).
    async fn metrics(&self) -> Result<Vec<(String, f64)>> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect())
    }

    /// The values of one metric family, one per series.
    async fn family(&self, name: &str) -> Result<Vec<f64>> {
        Ok(self
            .metrics()
            .await?
            .into_iter()
            .filter(|(k, _)| k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .collect())
    }

    async fn query(&self, q: &str) -> Result<Option<f64>> {
        headroom_e2e::prom_query(&self.url, q).await
    }

    fn stop(mut self) -> Result<()> {
        // SIGTERM lets it close the TSDB cleanly.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                bail!("Prometheus did not stop within 60s: {}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn headroom_slos(n: usize) -> Result<Vec<ServiceLevelObjective>> {
    (0..n)
        .map(|s| {
            let svc = Traffic::service(s);
            Ok(serde_json::from_value(json!({
                "apiVersion": "headroom.dev/v1alpha1",
                "kind": "ServiceLevelObjective",
                "metadata": { "name": svc, "namespace": NAMESPACE },
                "spec": {
                    "service": svc,
                    "objective": 99.9,
                    "window": "30d",
                    "indicator": { "ratio": {
                        "errors": format!("sum(rate(http_requests_total{{service=\"{svc}\",code=~\"5..\"}}[$window]))"),
                        "total": format!("sum(rate(http_requests_total{{service=\"{svc}\"}}[$window]))"),
                    }}
                }
            }))?)
        })
        .collect()
}

/// Headroom's rule file for the SLOs, and for each recorded window its
/// long windows are tiled from, the longest window tiled from it.
fn headroom_rules(
    slos: &[ServiceLevelObjective],
    mode: Mode,
) -> Result<(String, BTreeMap<Duration, Duration>)> {
    let (file, skipped) = headroom::rules::rule_file_with(slos, "http://headroom.invalid", mode);
    ensure!(skipped.is_empty(), "Headroom refused SLOs: {skipped:?}");
    let mut levels: BTreeMap<Duration, Duration> = BTreeMap::new();
    let prefix = headroom::rules::recorded_errors_metric("");
    for rule in file.groups.iter().flat_map(|g| &g.rules) {
        let (Some(record), Some(at)) = (rule.record.as_deref(), rule.expr.find(&prefix)) else {
            continue;
        };
        let Some(window) = record.strip_prefix(&prefix) else {
            continue;
        };
        let from: String = rule.expr[at + prefix.len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let (window, from) = (dur(window)?, dur(&from)?);
        let longest = levels.entry(from).or_default();
        *longest = (*longest).max(window);
    }
    Ok((headroom::rules::to_yaml(&file)?, levels))
}

fn sloth_spec(svc: &str) -> String {
    format!(
        r#"version: "prometheus/v1"
service: "{svc}"
slos:
  - name: "{SLOTH_SLO}"
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_requests_total{{service="{svc}",code=~"5.."}}[{{{{.window}}}}]))
        total_query: sum(rate(http_requests_total{{service="{svc}"}}[{{{{.window}}}}]))
    alerting:
      name: HighErrorRate
      page_alert: {{ labels: {{ severity: page }} }}
      ticket_alert: {{ labels: {{ severity: ticket }} }}
"#
    )
}

/// A recording rule to backfill: record, expression, labels.
type BackfillRule<'a> = (String, String, &'a [(&'a str, &'a str)]);

/// One recording rule for every service at once (a rule per SLO would make
/// promtool write a block per SLO per block range).
fn backfill_group(name: &str, interval: i64, rules: &[BackfillRule<'_>]) -> String {
    let mut y = format!("groups:\n- name: {name}\n  interval: {interval}s\n  rules:\n");
    for (record, expr, labels) in rules {
        y.push_str(&format!("  - record: {record}\n    expr: '{expr}'\n"));
        if !labels.is_empty() {
            y.push_str("    labels:\n");
            for (k, v) in *labels {
                y.push_str(&format!("      {k}: {v}\n"));
            }
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
/// Evaluate a backfill rule file over [start, end] against `prom` and move
/// the blocks into `data`.
fn backfill_rules(
    promtool: &Path,
    prom: &Prom,
    rules: &str,
    start: i64,
    end: i64,
    block: &str,
    tmp: &Path,
    data: &Path,
) -> Result<()> {
    let file = tmp.join("backfill.yml");
    std::fs::write(&file, rules)?;
    let out = tmp.join("rule-blocks");
    let _ = std::fs::remove_dir_all(&out);
    run(
        Command::new(promtool)
            .args(["tsdb", "create-blocks-from", "rules", "-q"])
            .arg(format!("--url={}", prom.url))
            .arg(format!("--start={start}"))
            .arg(format!("--end={end}"))
            .arg(format!("--output-dir={}", out.display()))
            .arg(format!("--max-block-duration={block}"))
            .arg(&file),
        "promtool tsdb create-blocks-from rules",
    )
    .with_context(|| format!("backfilling\n{rules}"))?;
    for entry in std::fs::read_dir(&out)? {
        let entry = entry?;
        if entry.path().join("meta.json").exists() {
            std::fs::rename(entry.path(), data.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Whether some blocks in `data` overlap in time: those still await
/// (vertical) compaction.
fn overlapping(data: &Path) -> Result<bool> {
    let mut ranges = Vec::new();
    for entry in std::fs::read_dir(data)? {
        let Ok(text) = std::fs::read_to_string(entry?.path().join("meta.json")) else {
            continue;
        };
        let meta: serde_json::Value = serde_json::from_str(&text)?;
        if let (Some(a), Some(b)) = (meta["minTime"].as_i64(), meta["maxTime"].as_i64()) {
            ranges.push((a, b));
        }
    }
    ranges.sort_unstable();
    Ok(ranges.windows(2).any(|w| w[1].0 < w[0].1))
}

/// Wait until Prometheus has loaded the blocks moved into its directory
/// and compacted them (it reloads and compacts once a minute): no blocks
/// overlap and the process stays idle, so no copy compacts while measured.
async fn settle(prom: &Prom, data: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut still = 0;
    while still < 3 {
        let cpu_a = prom.cpu_seconds()?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let busy = prom.cpu_seconds()? - cpu_a;
        still = if !overlapping(data)? && busy < 0.25 {
            still + 1
        } else {
            0
        };
        ensure!(
            Instant::now() < deadline,
            "blocks still overlap or Prometheus still busy after 30 minutes: {}",
            prom.log_tail()
        );
    }
    let sum = |v: Vec<f64>| v.iter().sum::<f64>();
    let failed = sum(prom
        .family("prometheus_tsdb_compactions_failed_total")
        .await?);
    ensure!(
        failed == 0.0,
        "{failed} compactions failed: {}",
        prom.log_tail()
    );
    Ok(())
}

/// Copy a directory tree with hard links (blocks are never written in
/// place, so the copies share them safely).
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else {
            std::fs::hard_link(entry.path(), &target)?;
        }
    }
    Ok(())
}

struct Side {
    label: &'static str,
    /// Rule files: (name, contents).
    files: Vec<(String, String)>,
    /// A query that must give N: the SLOs' 30d figures all evaluated.
    check: &'static str,
    /// A query whose answer shows the 30d window read 30 days of history,
    /// and the range it must fall in.
    history: Option<(&'static str, f64, f64)>,
}

struct Row {
    rules: f64,
    groups: usize,
    eval_per_cycle: f64,
    cpu_per_minute: f64,
    rss_mib: f64,
    missed: f64,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    side: &Side,
    n: usize,
    cycles: usize,
    traffic: &Traffic,
    exporter: &Exporter,
    promtool: &Path,
    base: &Path,
    base_end: i64,
    work: &Path,
) -> Result<Row> {
    let dir = work.join(side.label.split([' ', ':']).next().unwrap_or("side"));
    let _cleanup = WorkDir(dir.clone());
    link_tree(base, &dir.join("data"))?;
    // The raw samples since the history ends, so no side sees a gap.
    let topup: Vec<i64> = (1..)
        .map(|k| base_end + k * INTERVAL)
        .take_while(|t| *t < now_secs() - 30)
        .collect();
    if !topup.is_empty() {
        backfill_raw(promtool, traffic, &topup, work, &dir.join("data"))?;
    }
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules)?;
    let mut groups = 0;
    for (name, text) in &side.files {
        groups += text.lines().filter(|l| l.starts_with("- name: ")).count();
        std::fs::write(rules.join(name), text)?;
    }
    let config = format!(
        "global:\n  scrape_interval: {INTERVAL}s\n  scrape_timeout: 30s\n  evaluation_interval: {INTERVAL}s\n\
         rule_files: [\"{}/*.yml\"]\n\
         scrape_configs:\n  - job_name: bench\n    honor_labels: true\n    static_configs: [{{ targets: [\"127.0.0.1:{}\"] }}]\n",
        rules.display(),
        exporter.port
    );
    let prom = Prom::start(&dir, &config, &[]).await?;
    // Every group evaluated twice: the first evaluation warms caches.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let its = prom
            .family("prometheus_rule_group_iterations_total")
            .await?;
        if its.len() == groups && its.iter().all(|v| *v >= 2.0) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{}: {} of {groups} rule groups evaluated twice after 600s: {}",
            side.label,
            its.iter().filter(|v| **v >= 2.0).count(),
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let compactions = |v: Vec<f64>| v.iter().sum::<f64>();
    let compacted_a = compactions(prom.family("prometheus_tsdb_compactions_total").await?);
    let (cpu_a, t_a) = (prom.cpu_seconds()?, Instant::now());
    let mut evals = Vec::new();
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_secs(INTERVAL as u64)).await;
        evals.push(
            prom.family("prometheus_rule_group_last_duration_seconds")
                .await?
                .iter()
                .sum::<f64>(),
        );
    }
    let cpu_per_minute = (prom.cpu_seconds()? - cpu_a) / t_a.elapsed().as_secs_f64() * 60.0;
    let compacted =
        compactions(prom.family("prometheus_tsdb_compactions_total").await?) - compacted_a;
    ensure!(
        compacted == 0.0,
        "{}: {compacted} TSDB compactions ran while measuring: the figures would include them",
        side.label
    );
    let failures: f64 = prom
        .family("prometheus_rule_evaluation_failures_total")
        .await?
        .iter()
        .sum();
    ensure!(
        failures == 0.0,
        "{}: {failures} rule evaluations failed: {}",
        side.label,
        prom.log_tail()
    );
    let got = prom.query(side.check).await?;
    ensure!(
        got == Some(n as f64),
        "{}: `{}` gave {got:?}, want {n}: its rules did not evaluate every SLO",
        side.label,
        side.check
    );
    if let Some((q, lo, hi)) = side.history {
        let got = prom.query(q).await?;
        ensure!(
            got.is_some_and(|v| (lo..=hi).contains(&v)),
            "{}: `{q}` gave {got:?}, want {lo}..={hi}: its 30d window did not read the backfilled history",
            side.label
        );
    }
    let row = Row {
        rules: prom
            .family("prometheus_rule_group_rules")
            .await?
            .iter()
            .sum(),
        groups,
        eval_per_cycle: evals.iter().sum::<f64>() / evals.len().max(1) as f64,
        cpu_per_minute,
        rss_mib: prom.rss_mib(),
        missed: prom
            .family("prometheus_rule_group_iterations_missed_total")
            .await?
            .iter()
            .sum(),
    };
    prom.stop()?;
    Ok(row)
}

/// Each row with its evaluation time and CPU divided by Sloth's row's
/// (NaN without a Sloth row).
fn with_sloth_ratios<'a>(
    rows: &'a [(&'a str, Row)],
) -> impl Iterator<Item = (&'a str, &'a Row, f64, f64)> + 'a {
    let sloth = rows
        .iter()
        .find(|(l, _)| l.starts_with("sloth"))
        .map(|(_, r)| (r.eval_per_cycle, r.cpu_per_minute));
    rows.iter().map(move |(label, r)| {
        let (re, rc) = sloth.map_or((f64::NAN, f64::NAN), |(e, c)| {
            (r.eval_per_cycle / e, r.cpu_per_minute / c)
        });
        (*label, r, re, rc)
    })
}

fn print_table(table: &[(usize, Vec<(&str, Row)>)]) {
    println!(
        "\nRule cost per rule set (ratios: this row / Sloth's row; below 1.0 is cheaper than Sloth)"
    );
    println!(
        "{:>8}  {:<52}  {:>7}  {:>7}  {:>12}  {:>9}  {:>8}  {:>6}  {:>10}  {:>9}",
        "services",
        "rules",
        "rules",
        "groups",
        "eval s/cycle",
        "CPU s/min",
        "RSS MiB",
        "missed",
        "eval ratio",
        "CPU ratio"
    );
    for (n, rows) in table {
        for (label, r, re, rc) in with_sloth_ratios(rows) {
            println!(
                "{n:>8}  {label:<52}  {:>7}  {:>7}  {:>12.3}  {:>9.2}  {:>8.0}  {:>6}  {:>10.2}  {:>9.2}",
                r.rules, r.groups, r.eval_per_cycle, r.cpu_per_minute, r.rss_mib, r.missed, re, rc
            );
        }
    }
}

/// The headline figures of each rule set for `make bench`'s one table.
fn record_rows(table: &[(usize, Vec<(&str, Row)>)], instances: usize) -> Result<()> {
    for (n, rows) in table {
        for (label, r, re, rc) in with_sloth_ratios(rows) {
            crate::bench_table::record(
                "rule cost in Prometheus, beside Sloth",
                &format!("{} services: {label}", crate::bench_table::thousands(*n)),
                "rules; eval s/cycle; Prometheus CPU s/min; ratios to Sloth (eval, CPU)",
                format!(
                    "{}; {:.3}; {:.2}; {re:.2}, {rc:.2}",
                    r.rules, r.eval_per_cycle, r.cpu_per_minute
                ),
                &format!(
                    "one 99.9%/30d ratio SLO per service over 30 days of http_requests_total backfilled by promtool ({instances} instances × {} codes per service), evaluated every {INTERVAL}s",
                    CODES.len()
                ),
            )?;
        }
    }
    Ok(())
}

#[tokio::test]
#[ignore = "a benchmark: make bench"]
async fn rule_cost_side_by_side() -> Result<()> {
    let sizes: Vec<usize> = env_or("BENCH_RULE_SERVICES", "100,1000")
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("BENCH_RULE_SERVICES: {s:?}"))
        })
        .collect::<Result<_>>()?;
    let instances: usize = env_or("BENCH_RULE_INSTANCES", "3")
        .parse()
        .context("BENCH_RULE_INSTANCES")?;
    let cycles: usize = env_or("BENCH_RULE_CYCLES", "2")
        .parse()
        .context("BENCH_RULE_CYCLES")?;
    let promtool = PathBuf::from(env_or("PROMTOOL_BIN", "/usr/bin/promtool"));
    let sloth = PathBuf::from(std::env::var("SLOTH_BIN").unwrap_or_else(|_| {
        format!(
            "{}/.cache/headroom/sloth-v0.16.0/sloth",
            env_or("HOME", "/root")
        )
    }));
    for (bin, how) in [
        (
            &promtool,
            "Debian's prometheus package (or set PROMTOOL_BIN)",
        ),
        (
            &sloth,
            "tests/cluster/sloth.sh builds it (or set SLOTH_BIN)",
        ),
    ] {
        ensure!(bin.exists(), "{} is missing: {how}", bin.display());
    }
    let prometheus = PrivatePrometheus::binary()?;
    let version = run(
        Command::new(&prometheus).arg("--version"),
        "prometheus --version",
    )?;
    // `go install` stamps no version: the binary calls itself "dev".
    let sloth_version = env_or("SLOTH_VERSION", "v0.16.0");
    let work = std::env::temp_dir().join(format!("headroom-bench-rules-{}", std::process::id()));
    let _work = WorkDir(work.clone());
    std::fs::create_dir_all(&work)?;

    println!(
        "\nRule cost side by side: one 99.9%/30d ratio SLO per service over http_requests_total{{service,instance,code}}"
    );
    println!(
        "  {} ({}), sloth {} ({}); one Prometheus at a time (never two at once: 2 cores), each on a copy of the same data,",
        version.lines().next().unwrap_or("prometheus"),
        prometheus.display(),
        sloth_version,
        sloth.display()
    );
    println!(
        "  evaluating every {INTERVAL}s and scraping the same live counters every {INTERVAL}s; GOGC={}, GOMEMLIMIT={}",
        env_or("GOGC", "100 (default)"),
        env_or("GOMEMLIMIT", "none")
    );
    println!(
        "  history: {instances} instances x {} codes = {} series per service; raw samples {INTERVAL}s apart for the last {}, {} apart before, 30d in all",
        CODES.len(),
        instances * CODES.len(),
        format_duration(Duration::from_secs(FINE_SPAN as u64)),
        format_duration(Duration::from_secs(COARSE as u64)),
    );
    println!(
        "  eval s/cycle: summed prometheus_rule_group_last_duration_seconds, wall time: groups evaluated at once on the same cores count each other's waits"
    );
    println!(
        "  CPU s/min: the Prometheus process (rules, scrape, TSDB), over {cycles} cycles after two warm-up evaluations"
    );

    let mut table = Vec::new();
    for &n in &sizes {
        let started = Instant::now();
        let base_end = (now_secs() / INTERVAL) * INTERVAL - INTERVAL;
        let start = base_end - HISTORY;
        let traffic = Traffic {
            services: n,
            instances,
            origin: start - DAY,
        };
        let times: Vec<i64> = (start..base_end - FINE_SPAN)
            .step_by(COARSE as usize)
            .chain((base_end - FINE_SPAN..=base_end).step_by(INTERVAL as usize))
            .collect();
        let server_dir = work.join(format!("data-{n}"));
        let data = server_dir.join("data");
        std::fs::create_dir_all(&data)?;
        let samples = backfill_raw(&promtool, &traffic, &times, &work, &data)?;
        println!(
            "\nN = {n}: {} raw series, {} samples each, {:.1}M samples backfilled ({:.0}s)",
            traffic.series(),
            times.len(),
            samples as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );

        // The three rule sets.
        let slos = headroom_slos(n)?;
        let (recorded, levels) = headroom_rules(&slos, Mode::Recorded)?;
        let (exact, _) = headroom_rules(&slos, Mode::Exact)?;
        let specs = work.join(format!("sloth-specs-{n}"));
        let sloth_out = work.join(format!("sloth-rules-{n}"));
        std::fs::create_dir_all(&specs)?;
        std::fs::create_dir_all(&sloth_out)?;
        for s in 0..n {
            let svc = Traffic::service(s);
            std::fs::write(specs.join(format!("{svc}.yml")), sloth_spec(&svc))?;
        }
        run(
            Command::new(&sloth)
                .args(["generate", "--no-log", "-i"])
                .arg(&specs)
                .arg("-o")
                .arg(&sloth_out),
            "sloth generate",
        )?;
        let mut sloth_files = Vec::new();
        for entry in std::fs::read_dir(&sloth_out)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            sloth_files.push((name, std::fs::read_to_string(&path)?));
        }
        ensure!(
            sloth_files.len() == n,
            "sloth generate wrote {} files for {n} specs",
            sloth_files.len()
        );

        // The recorded series each side's long windows read, over the span
        // they read them, computed by one rule per metric for all services.
        let server = Prom::start(
            &server_dir,
            "global:\n  evaluation_interval: 1m\n",
            &["--query.max-samples=2000000000", "--query.timeout=1h"],
        )
        .await?;
        let t = Instant::now();
        let mut notes = Vec::new();
        for (from, longest) in &levels {
            let (from, span) = (format_duration(*from), longest.as_secs() as i64);
            // History read by instant look-ups: one sample per 5m beyond a
            // day (look-ups read one sample, however dense the series).
            let step = if span > DAY { 5 * 60 } else { INTERVAL };
            let by_slo = |sel: &str| {
                format!(
                    "sum by (slo) (label_replace(rate(http_requests_total{sel}[{from}]), \"slo\", \"$1\", \"service\", \"(.*)\"))"
                )
            };
            let ns: &[(&str, &str)] = &[("namespace", NAMESPACE)];
            let rules = backfill_group(
                &format!("backfill-headroom-{from}"),
                step,
                &[
                    (
                        headroom::rules::recorded_errors_metric(&from),
                        by_slo("{code=~\"5..\"}"),
                        ns,
                    ),
                    (
                        headroom::rules::recorded_traffic_metric(&from),
                        by_slo(""),
                        ns,
                    ),
                ],
            );
            backfill_rules(
                &promtool,
                &server,
                &rules,
                base_end - span,
                base_end,
                "162h",
                &work,
                &data,
            )?;
            notes.push(format!(
                "{from} over the last {} ({}s apart)",
                format_duration(*longest),
                step
            ));
        }
        println!(
            "  Headroom: backfilled headroom:slo_errors/requests:rate<w> (as rate() over the raw counters, which the tiles equal) for w = {} ({:.0}s)",
            notes.join(", "),
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        for (window, from, to) in [
            ("5m", base_end - FINE_SPAN, base_end),
            (SLOTH_OLD_WINDOW, start, base_end - FINE_SPAN - INTERVAL),
        ] {
            let ratio = format!(
                "sum without (service) (label_replace(label_replace(sum by (service) (rate(http_requests_total{{code=~\"5..\"}}[{window}])) / sum by (service) (rate(http_requests_total[{window}])), \"sloth_id\", \"$1-{SLOTH_SLO}\", \"service\", \"(.*)\"), \"sloth_service\", \"$1\", \"service\", \"(.*)\"))"
            );
            let labels: &[(&str, &str)] = &[("sloth_slo", SLOTH_SLO), ("sloth_window", "5m")];
            let rules = backfill_group(
                "backfill-sloth",
                INTERVAL,
                &[("slo:sli_error:ratio_rate5m".to_owned(), ratio, labels)],
            );
            backfill_rules(&promtool, &server, &rules, from, to, "54h", &work, &data)?;
        }
        println!(
            "  Sloth: backfilled slo:sli_error:ratio_rate5m (what its 30d period reads) {INTERVAL}s apart over 30d; older than {} computed over [{SLOTH_OLD_WINDOW}] (approximated: the raw samples there are too sparse for [5m]) ({:.0}s)",
            format_duration(Duration::from_secs(FINE_SPAN as u64)),
            t.elapsed().as_secs_f64()
        );
        println!("  exact: nothing to backfill (every window reads the raw counters)");
        let t = Instant::now();
        settle(&server, &data).await?;
        let blocks = server
            .family("prometheus_tsdb_blocks_loaded")
            .await?
            .iter()
            .sum::<f64>();
        server.stop()?;
        // Blocks only: each copy starts with an empty head and WAL of its own.
        for leftover in ["wal", "chunks_head", "lock", "queries.active"] {
            let p = data.join(leftover);
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        println!(
            "  compacted into {blocks} blocks ({:.0}s); preparation took {:.0}s",
            t.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );

        let exporter = Exporter::start(traffic.clone())?;
        let sides = [
            Side {
                label: "headroom: long windows tiled from recorded ones",
                files: vec![("headroom.yml".to_owned(), recorded)],
                check: "count(headroom:slo_error_ratio:rate30d)",
                // svc-0000 serves 20 requests/s on average: a tile missing
                // its history would count as none (0.1 of it per tile).
                history: Some((
                    "headroom:slo_requests:rate30d{slo=\"svc-0000\"}",
                    19.0,
                    21.0,
                )),
            },
            Side {
                label: "sloth v0.16.0: sloth generate",
                files: sloth_files,
                check: "count(slo:sli_error:ratio_rate30d)",
                // One recorded 5m ratio a minute for 30 days.
                history: Some((
                    "count_over_time(slo:sli_error:ratio_rate5m{sloth_id=\"svc-0000-requests-availability\"}[30d])",
                    0.97 * HISTORY as f64 / INTERVAL as f64,
                    HISTORY as f64 / INTERVAL as f64 + 1.0,
                )),
            },
            Side {
                label: "exact: today's rules, rate(x[w]) over raw for every w",
                files: vec![("exact.yml".to_owned(), exact)],
                check: "count(headroom:slo_error_ratio:rate30d)",
                history: None,
            },
        ];
        let mut rows = Vec::new();
        for side in &sides {
            let t = Instant::now();
            let row = measure(
                side, n, cycles, &traffic, &exporter, &promtool, &data, base_end, &work,
            )
            .await
            .with_context(|| format!("N = {n}, {}", side.label))?;
            println!(
                "  measured {} ({:.0}s)",
                side.label,
                t.elapsed().as_secs_f64()
            );
            rows.push((side.label, row));
        }
        drop(exporter);
        let _ = std::fs::remove_dir_all(&server_dir);
        println!("  N = {n} took {:.0}s", started.elapsed().as_secs_f64());
        // Printed now too, so a later size failing does not lose them.
        let done = vec![(n, rows)];
        print_table(&done);
        record_rows(&done, instances)?;
        table.extend(done);
    }

    if table.len() > 1 {
        print_table(&table);
    }
    Ok(())
}
