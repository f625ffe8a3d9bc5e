//! Shared helpers for end-to-end tests against the local control plane.
//!
//! The cluster is started by `tests/cluster/up.sh` (`make cluster-up`), which
//! writes `.cluster/env`. A missing or unreachable cluster fails the test with
//! the reason: these tests never skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The running local cluster, as described by `.cluster/env`.
pub struct Cluster {
    pub client: kube::Client,
    pub env: HashMap<String, String>,
}

/// The `KEY=value` lines of `.cluster/env`, which tests/cluster/up.sh
/// writes.
fn cluster_env() -> Result<HashMap<String, String>> {
    let env_path = repo_root().join(".cluster/env");
    let text = std::fs::read_to_string(&env_path).with_context(|| {
        format!(
            "{} is missing: start the local cluster with `make cluster-up` (or run `make test`)",
            env_path.display()
        )
    })?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect())
}

/// Resident memory of process `pid` in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    resident(pid).map(|r| r.total_kib)
}

/// A process's resident memory, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resident {
    /// `VmRSS`, KiB.
    pub total_kib: u64,
    /// `RssAnon`, KiB: the heap and the stacks. The rest is file-backed,
    /// mostly the binary's own code, which no change to the heap reduces.
    pub anon_kib: u64,
}

fn resident(pid: u32) -> Option<Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Resident {
        total_kib: field("VmRSS:")?,
        anon_kib: field("RssAnon:")?,
    })
}

impl Cluster {
    /// Connect to the cluster `make cluster-up` started. Fails with a clear
    /// message when it is not there.
    pub async fn connect() -> Result<Self> {
        let env = cluster_env()?;
        let kubeconfig_path = env
            .get("KUBECONFIG")
            .context(".cluster/env has no KUBECONFIG line")?;
        let kubeconfig = Kubeconfig::read_from(kubeconfig_path)
            .with_context(|| format!("reading kubeconfig {kubeconfig_path}"))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .context("building client config from .cluster/kubeconfig")?;
        let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
        client
            .apiserver_version()
            .await
            .context("the local kube-apiserver does not answer; is `make cluster-up` running?")?;
        Ok(Self { client, env })
    }

    /// A value from `.cluster/env`, or an error naming the key.
    pub fn var(&self, key: &str) -> Result<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .with_context(|| format!(".cluster/env has no {key} line"))
    }

    /// Run kubectl against the local cluster.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_stdin(args, None)
    }

    /// Run kubectl with `stdin` fed to it (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        use std::io::Write;
        let kubectl = self
            .env
            .get("KUBECTL")
            .cloned()
            .unwrap_or_else(|| "kubectl".to_owned());
        let mut child = Command::new(&kubectl)
            .args(args)
            .env("KUBECONFIG", self.var("KUBECONFIG")?)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {kubectl}"))?;
        if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
            pipe.write_all(input.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Apply the CRDs in `crds/` (server-side, idempotent) and wait until
    /// they are established.
    pub fn install_crds(&self) -> Result<()> {
        let dir = repo_root().join("crds");
        let dir = dir.to_string_lossy();
        let out = self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &dir])?;
        if !out.status.success() {
            bail!(
                "kubectl apply -f crds/ failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &dir,
        ])?;
        if !out.status.success() {
            bail!(
                "CRDs not established: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A fresh namespace for one test, opted in to experiments, deleted when
    /// the guard drops.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let suffix: u32 = rand::random::<u32>() % 1_000_000;
        let name = format!("{prefix}-{suffix:06}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": { headroom::resources::CHAOS_ENABLED_LABEL: "enabled", "headroom.dev/test": "e2e" }
            }
        }))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace {
            name,
            kubeconfig: self.var("KUBECONFIG")?.to_owned(),
            kubectl: self
                .env
                .get("KUBECTL")
                .cloned()
                .unwrap_or_else(|| "kubectl".into()),
        })
    }
}

/// A namespace owned by one test.
pub struct TestNamespace {
    pub name: String,
    kubeconfig: String,
    kubectl: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot be async; kubectl is the simplest way to clean up
        // without blocking the runtime on a nested one. The test's operator
        // is gone by now (declared later, dropped first), so nobody would
        // lift the experiments' finalizers: lift them, or the namespace
        // stays Terminating.
        let kubectl = |args: &[&str]| {
            Command::new(&self.kubectl)
                .args(args)
                .env("KUBECONFIG", &self.kubeconfig)
                .output()
        };
        if let Ok(out) = kubectl(&["-n", &self.name, "get", "chaosexperiments", "-o", "name"]) {
            for exp in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = kubectl(&[
                    "-n",
                    &self.name,
                    "patch",
                    exp,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
            }
        }
        let _ = Command::new(&self.kubectl)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .output();
    }
}

/// Poll `check` every `every` until it returns `Some`, or fail after `timeout`
/// with `what` in the message.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Run an instant PromQL query and return the first sample's value, if any.
pub async fn prom_query(prometheus_url: &str, query: &str) -> Result<Option<f64>> {
    let url = format!("{}/api/v1/query", prometheus_url.trim_end_matches('/'));
    let body: serde_json::Value = reqwest::Client::new()
        .get(&url)
        .query(&[("query", query)])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("querying Prometheus at {url}"))?
        .error_for_status()?
        .json()
        .await?;
    if body["status"] != "success" {
        bail!("Prometheus answered {body}");
    }
    let value = body["data"]["result"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(|s| s["value"][1].as_str())
        .map(str::parse::<f64>)
        .transpose()?;
    Ok(value)
}

/// Tests that change the shared example service (its replicas, its error
/// rate) hold this, so they do not disturb each other's figures.
pub static CHECKOUT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `headroom run` process for one test, killed when dropped.
pub struct Operator {
    child: std::process::Child,
    pub metrics_url: String,
    pub log_path: PathBuf,
}

impl Operator {
    /// Start the operator binary built by `cargo build -p headroom`
    /// (`make test` builds it first). `HEADROOM_BIN` overrides the path.
    pub fn start(cluster: &Cluster, extra: &[&str]) -> Result<Self> {
        Self::start_on(cluster, free_port()?, extra)
    }

    /// Start listening on `port` (for tests that need the address up front,
    /// e.g. as `--dashboard-url`).
    pub fn start_on(cluster: &Cluster, port: u16, extra: &[&str]) -> Result<Self> {
        Self::spawn(cluster, port, extra, &[])
    }

    /// Like [`Operator::start_in`], allowed to open connections to `allow`
    /// (`--connection-target-allow` entries, given as its environment
    /// variable `HEADROOM_CONNECTION_TARGET_ALLOW`).
    pub fn start_in_allowing(
        cluster: &Cluster,
        namespace: &str,
        extra: &[&str],
        allow: &str,
    ) -> Result<Self> {
        let mut args = vec!["--watch-namespace", namespace];
        args.extend_from_slice(extra);
        Self::spawn(
            cluster,
            free_port()?,
            &args,
            &[("HEADROOM_CONNECTION_TARGET_ALLOW", allow)],
        )
    }

    fn spawn(cluster: &Cluster, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let bin = std::env::var("HEADROOM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target/debug/headroom"));
        if !bin.exists() {
            bail!(
                "{} is missing: run `cargo build -p headroom` first (make test does)",
                bin.display()
            );
        }
        let listen = format!("127.0.0.1:{port}");
        let log_path = std::env::temp_dir().join(format!("headroom-operator-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&bin)
            .arg("run")
            .args(["--listen", &listen])
            .args(extra)
            // The local Prometheus unless the test points elsewhere.
            .env("PROMETHEUS_URL", cluster.var("PROMETHEUS_URL")?)
            .env("KUBECONFIG", cluster.var("KUBECONFIG")?)
            .env("RUST_LOG", "info,headroom=debug")
            // As the image sets it (see the Dockerfile).
            .env("MIMALLOC_PURGE_DELAY", "0")
            .envs(env.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child,
            metrics_url: format!("http://{listen}/metrics"),
            log_path,
        })
    }

    /// Start an operator that watches only `namespace`, so tests running
    /// side by side never act on each other's resources.
    pub fn start_in(cluster: &Cluster, namespace: &str, extra: &[&str]) -> Result<Self> {
        let mut args = vec!["--watch-namespace", namespace];
        args.extend_from_slice(extra);
        Self::start(cluster, &args)
    }

    /// The operator's process id (for its resident memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the operator process in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Resident memory of the operator process, with its anonymous part.
    pub fn resident(&self) -> Option<Resident> {
        resident(self.pid())
    }

    /// CPU time (user + system) of the operator process so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The operator's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// Kill the kube-apiserver with SIGKILL, leave it down for `down_for`,
    /// then start it again with `tests/cluster/up.sh` (which starts only the
    /// parts that are not running) and wait until it answers. Returns how
    /// long the API server was unreachable. Only for tests that run alone:
    /// every other client of the cluster sees the outage too.
    pub async fn restart_apiserver(&self, down_for: Duration) -> Result<Duration> {
        let root = repo_root();
        let pid_file = root.join(".cluster/pids/kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?
            .trim()
            .to_owned();
        let killed = std::time::Instant::now();
        let out = Command::new("kill").args(["-KILL", &pid]).output()?;
        if !out.status.success() {
            bail!(
                "kill -KILL {pid} (kube-apiserver): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Gone for real: a zombie has no exe link.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/exe")).is_ok() {
            if std::time::Instant::now() > deadline {
                bail!("kube-apiserver (pid {pid}) still runs 10s after SIGKILL");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(down_for).await;
        let up = tokio::process::Command::new(root.join("tests/cluster/up.sh"))
            .output()
            .await
            .context("running tests/cluster/up.sh")?;
        if !up.status.success() {
            bail!(
                "tests/cluster/up.sh could not start the kube-apiserver again:\n{}{}",
                String::from_utf8_lossy(&up.stdout),
                String::from_utf8_lossy(&up.stderr)
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.client.apiserver_version().await.is_err() {
            if std::time::Instant::now() > deadline {
                bail!("the kube-apiserver does not answer 60s after up.sh");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(killed.elapsed())
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Cluster {
    /// Install the Prometheus Operator's PrometheusRule CRD with
    /// `tests/cluster/prometheus-operator-crd.sh` (idempotent; up.sh runs it
    /// too), and fail with its output when it cannot.
    pub fn install_prometheus_rule_crd(&self) -> Result<()> {
        let script = repo_root().join("tests/cluster/prometheus-operator-crd.sh");
        let out = Command::new(&script)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Operator {
    /// The operator's unlabelled samples from one read of `/metrics`
    /// (counters under their `_total` names), so that several are seen at
    /// the same instant.
    pub async fn metric_values(&self) -> Result<HashMap<String, f64>> {
        let text = reqwest::Client::new()
            .get(&self.metrics_url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("GET {}", self.metrics_url))?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(name, v)| Some((name.to_owned(), v.trim().parse().ok()?)))
            .collect())
    }
}

/// A Prometheus of one test's own (the binary the local cluster runs), on
/// its own port with its own data directory, scraping the example service
/// as the shared one does. Tests that stop Prometheus use this, never the
/// shared one. Killed when dropped.
pub struct PrivatePrometheus {
    child: Option<std::process::Child>,
    pub port: u16,
    pub url: String,
    pub dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePrometheus {
    /// `PROMETHEUS_BIN` from the environment, else the Prometheus the
    /// local cluster runs (its `.cluster/env` line), so a test's own
    /// Prometheus is the same version as the shared one.
    pub fn binary() -> Result<PathBuf> {
        let bin = match std::env::var("PROMETHEUS_BIN") {
            Ok(bin) => PathBuf::from(bin),
            Err(_) => PathBuf::from(
                cluster_env()?
                    .remove("PROMETHEUS_BIN")
                    .context(".cluster/env has no PROMETHEUS_BIN line: restart the local cluster with `make cluster-up` (or set PROMETHEUS_BIN)")?,
            ),
        };
        if !bin.exists() {
            bail!(
                "{} is missing: tests/cluster/up.sh builds Prometheus (or set PROMETHEUS_BIN)",
                bin.display()
            );
        }
        Ok(bin)
    }

    /// Start it and wait until it is ready.
    pub async fn start(cluster: &Cluster) -> Result<Self> {
        Self::start_with(cluster, "1s").await
    }

    /// Start one that evaluates the rule files in [`Self::rules_dir`] every
    /// `evaluation_interval` (benchmarks with thousands of SLOs need a
    /// longer one than the shared Prometheus's 1s).
    pub async fn start_with(cluster: &Cluster, evaluation_interval: &str) -> Result<Self> {
        Self::start_scraping(cluster, evaluation_interval, &[]).await
    }

    /// [`Self::start_with`], also scraping each `(job, host:port,
    /// interval)` of `extra` (its `/metrics`).
    pub async fn start_scraping(
        cluster: &Cluster,
        evaluation_interval: &str,
        extra: &[(&str, &str, &str)],
    ) -> Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("headroom-prometheus-{port}"));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("rules"))?;
        let checkout = cluster
            .var("CHECKOUT_URL")?
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: {evaluation_interval}\n\
                 rule_files: [\"{}/*.yml\"]\n\
                 scrape_configs:\n  - job_name: checkout\n    static_configs: [{{ targets: [\"{checkout}\"] }}]\n{}",
                dir.join("rules").display(),
                extra
                    .iter()
                    .map(|(job, target, interval)| format!(
                        "  - job_name: {job}\n    scrape_interval: {interval}\n    scrape_timeout: {interval}\n    \
                         fallback_scrape_protocol: PrometheusText0.0.4\n    static_configs: [{{ targets: [\"{target}\"] }}]\n"
                    ))
                    .collect::<String>()
            ),
        )?;
        let mut p = Self {
            child: None,
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            bin: Self::binary()?,
        };
        p.resume().await?;
        Ok(p)
    }

    /// Kill it at once (no clean shutdown), as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Start it again on the same port and data directory; wait until ready.
    pub async fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("Prometheus on port {} is already running", self.port);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("prometheus.log"))?;
        let child = Command::new(&self.bin)
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            // POST /-/reload, which `headroom run --prometheus-reload` sends.
            .arg("--web.enable-lifecycle")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let ready = format!("{}/-/ready", self.url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("Prometheus exited with {status}: {}", self.log());
            }
            if let Ok(r) = reqwest::get(&ready).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "Prometheus on port {} not ready after 30s: {}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Its resident memory in KiB, while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.child.as_ref()?.id())
    }

    /// Its log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The directory of rule files it loads (on `/-/reload`).
    pub fn rules_dir(&self) -> PathBuf {
        self.dir.join("rules")
    }
}

impl Drop for PrivatePrometheus {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The rule file an operator started with `--rules-dir` writes for one
/// namespace into the shared Prometheus's rules directory; removed (and
/// Prometheus reloaded) when dropped, so a test's rules do not outlive its
/// namespace. Declare it before the operator so it drops after it.
pub struct RuleFileGuard {
    path: PathBuf,
    reload: String,
}

impl RuleFileGuard {
    pub fn for_namespace(cluster: &Cluster, namespace: &str) -> Result<Self> {
        Ok(Self {
            path: Path::new(cluster.var("PROMETHEUS_RULES_DIR")?)
                .join(headroom::rules_writer::file_name(Some(namespace))),
            reload: cluster.var("PROMETHEUS_RELOAD")?.to_owned(),
        })
    }
}

impl Drop for RuleFileGuard {
    fn drop(&mut self) {
        if std::fs::remove_file(&self.path).is_ok() {
            let _ = Command::new(&self.reload).output();
        }
    }
}

/// Established TCP connections that process `pid` holds to local `port`,
/// read from /proc (the socket inodes of its descriptors matched against
/// the kernel's TCP table), so a test sees exactly which process holds
/// what, without asking the process.
pub fn tcp_connections_to(pid: u32, port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: std::collections::BTreeSet<String> = fds
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let wanted = format!("{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    // rem_address is col 2 (addr:PORT in hex), st col 3
                    // (01 = ESTABLISHED), inode col 9.
                    cols.len() > 9
                        && cols[2].rsplit(':').next() == Some(wanted.as_str())
                        && cols[3] == "01"
                        && inodes.contains(cols[9])
                })
                .count()
        })
        .sum()
}

/// The kube-apiserver stopped with SIGSTOP: it keeps its sockets, so every
/// call hangs instead of failing. Continued (SIGCONT) by `resume` or when
/// dropped, so a failing test never leaves the cluster frozen. Only for
/// tests that run alone (`disruptive.rs`).
pub struct FrozenApiserver {
    pid: String,
    resumed: bool,
}

impl Cluster {
    pub fn freeze_apiserver(&self) -> Result<FrozenApiserver> {
        let pid_file = repo_root().join(".cluster/pids/kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?
            .trim()
            .to_owned();
        let out = Command::new("kill").args(["-STOP", &pid]).output()?;
        if !out.status.success() {
            bail!(
                "kill -STOP {pid} (kube-apiserver): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(FrozenApiserver {
            pid,
            resumed: false,
        })
    }
}

impl FrozenApiserver {
    pub fn resume(&mut self) -> Result<()> {
        let out = Command::new("kill").args(["-CONT", &self.pid]).output()?;
        if !out.status.success() {
            bail!(
                "kill -CONT {} (kube-apiserver): {}",
                self.pid,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.resumed = true;
        Ok(())
    }
}

impl Drop for FrozenApiserver {
    fn drop(&mut self) {
        if !self.resumed {
            let _ = Command::new("kill").args(["-CONT", &self.pid]).output();
        }
    }
}

impl Cluster {
    /// Restart the local PostgreSQL as a failover would end its sessions:
    /// `pg_ctl restart -m fast` with the options it was started with, then
    /// the pid file `tests/cluster/up.sh` and `down.sh` read is updated.
    /// Returns how long it took. Only for tests that run alone: every
    /// client of the database loses its sessions.
    pub async fn restart_postgresql(&self) -> Result<Duration> {
        let c = repo_root().join(".cluster");
        let exe = std::fs::read_to_string(c.join("pids/postgresql.exe"))
            .context("reading .cluster/pids/postgresql.exe")?;
        let bin = Path::new(exe.trim())
            .parent()
            .context("the PostgreSQL binary's directory")?
            .to_path_buf();
        let data = c.join("postgres");
        let started = std::time::Instant::now();
        let out = tokio::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(c.join("logs/postgresql.log"))
            .args(["-m", "fast", "-w", "-t", "30", "restart"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("running pg_ctl restart")?;
        if !out.status.success() {
            bail!(
                "pg_ctl restart failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .context("reading postmaster.pid")?
            .lines()
            .next()
            .context("postmaster.pid is empty")?
            .to_owned();
        std::fs::write(c.join("pids/postgresql.pid"), format!("{pid}\n"))?;
        Ok(started.elapsed())
    }
}
