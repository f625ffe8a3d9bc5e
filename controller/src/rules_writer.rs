//! Keeps the generated rule file in step with the SLOs in the cluster, for
//! a Prometheus that loads rule files from a directory.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use anyhow::Context as _;
use kube::runtime::reflector::Store;
use tracing::{info, warn};

use crate::context::Context;
use crate::resources::ServiceLevelObjective;
use crate::rules;

/// File name inside `--rules-dir`; an operator that watches one namespace
/// writes its own file so that several can share a Prometheus.
pub fn file_name(watch_namespace: Option<&str>) -> String {
    match watch_namespace {
        Some(ns) => format!("headroom-slos-{ns}.yml"),
        None => "headroom-slos.yml".to_owned(),
    }
}

/// What the writer needs from the operator's flags.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--rules-dir`: where the file goes; `None` writes nothing.
    pub rules_dir: Option<std::path::PathBuf>,
    /// `--dashboard-url`: base of the default runbook links.
    pub dashboard_url: String,
    /// `--prometheus-reload`: ask Prometheus to reload after a write.
    pub prometheus_reload: bool,
}

/// Rewrite the rule file whenever the SLOs change; never returns unless
/// the directory cannot be written at start. Reads the process's SLO cache:
/// listing every SLO each cycle would cost the API server and this process
/// a full copy of them every interval.
pub async fn run(
    ctx: Arc<Context>,
    args: Options,
    slos: Store<ServiceLevelObjective>,
) -> anyhow::Result<()> {
    let Some(dir) = args.rules_dir.clone() else {
        std::future::pending::<()>().await;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("--rules-dir {}", dir.display()))?;
    let path = dir.join(file_name(ctx.watch_namespace.as_deref()));
    // An empty cache before the first list would write an empty file.
    slos.wait_until_ready()
        .await
        .context("the SLO cache never filled")?;
    let mut last_specs: Option<u64> = None;
    let mut reload_pending = false;
    let mut last_file = std::fs::File::open(&path).ok().and_then(|mut f| {
        let mut h = HashingWriter::new(std::io::sink());
        std::io::copy(&mut f, &mut h).ok().map(|_| h.finish())
    });
    let tmp = path.with_extension("yml.tmp");
    loop {
        let state = slos.state();
        let specs = specs_fingerprint(&state);
        // Rendering ten thousand SLOs' rules takes a while: only when a
        // spec was added, changed or removed.
        if last_specs != Some(specs) {
            last_specs = Some(specs);
            let refs: Vec<&ServiceLevelObjective> = state.iter().map(AsRef::as_ref).collect();
            // Streamed to a temporary file: Prometheus may read the rule
            // file at any moment, so it is replaced whole by a rename.
            // Seconds of blocking file I/O at ten thousand SLOs: tell the
            // runtime, so that run observations and aborts scheduled on
            // this worker move to another thread meanwhile.
            let written = tokio::task::block_in_place(|| {
                std::fs::File::create(&tmp)
                    .map_err(rules::RuleFileError::from)
                    .and_then(|f| {
                        let mut out = HashingWriter::new(std::io::BufWriter::new(f));
                        let skipped = rules::write_rule_file(&mut out, &refs, &args.dashboard_url)?;
                        Ok((skipped, out.finish()))
                    })
            });
            drop(refs);
            match written {
                Ok((skipped, hash)) if last_file != Some(hash) => {
                    for (slo, reason) in skipped {
                        warn!(%slo, %reason, "no rules for SLO");
                    }
                    std::fs::rename(&tmp, &path)
                        .with_context(|| format!("renaming to {}", path.display()))?;
                    info!(path = %path.display(), slos = state.len(), "rules written");
                    last_file = Some(hash);
                    reload_pending = args.prometheus_reload;
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&tmp);
                }
                Err(e) => {
                    // Try again next cycle.
                    last_specs = None;
                    warn!(error = %e, path = %tmp.display(), "writing rules failed");
                }
            }
        }
        // Retried each cycle until Prometheus takes it.
        if reload_pending {
            // The operator's own client: the same TLS, credentials and headers.
            match ctx.prometheus.reload().await {
                Ok(_) => reload_pending = false,
                Err(e) => warn!(error = %e, "Prometheus reload failed; retrying next cycle"),
            }
        }
        drop(state);
        tokio::time::sleep(ctx.evaluation_interval).await;
    }
}

/// Passes bytes through and hashes them, so a file is compared with the
/// last one written without keeping either in memory.
struct HashingWriter<W> {
    inner: W,
    hasher: std::collections::hash_map::DefaultHasher,
}

impl<W: std::io::Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: std::collections::hash_map::DefaultHasher::new(),
        }
    }

    fn finish(self) -> u64 {
        self.hasher.finish()
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.write(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Changes when an SLO is added, removed or given a new spec; independent
/// of the cache's order.
pub(crate) fn specs_fingerprint(slos: &[Arc<ServiceLevelObjective>]) -> u64 {
    slos.iter()
        .map(|s| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                &s.metadata.namespace,
                &s.metadata.name,
                &s.metadata.uid,
                s.metadata.generation,
            )
                .hash(&mut h);
            h.finish()
        })
        .fold(slos.len() as u64, u64::wrapping_add)
}
