//! Keeps the generated rule file in step with the SLOs in the cluster, for
//! a Prometheus that loads rule files from a directory.

use std::sync::Arc;

use anyhow::Context as _;
use kube::api::ListParams;
use tracing::{info, warn};

use crate::cli::RunArgs;
use crate::reconcile::Context;
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

/// Rewrite the rule file whenever the SLOs change; never returns unless
/// the directory cannot be written at start.
pub async fn run(ctx: Arc<Context>, args: RunArgs) -> anyhow::Result<()> {
    let Some(dir) = args.rules_dir.clone() else {
        std::future::pending::<()>().await;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("--rules-dir {}", dir.display()))?;
    let path = dir.join(file_name(ctx.watch_namespace.as_deref()));
    let api = ctx.watched::<ServiceLevelObjective>();
    let http = reqwest::Client::new();
    let mut last = std::fs::read_to_string(&path).unwrap_or_default();
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let (file, skipped) = rules::rule_file(&list.items, &args.dashboard_url);
                for (slo, reason) in skipped {
                    warn!(%slo, %reason, "no rules for SLO");
                }
                match rules::to_yaml(&file) {
                    Ok(text) if text != last => {
                        write_atomically(&path, &text)?;
                        info!(path = %path.display(), groups = file.groups.len(), "rules written");
                        last = text;
                        if args.prometheus_reload {
                            let url =
                                format!("{}/-/reload", args.prometheus_url.trim_end_matches('/'));
                            if let Err(e) = http
                                .post(&url)
                                .send()
                                .await
                                .and_then(|r| r.error_for_status())
                            {
                                warn!(error = %e, "Prometheus reload failed");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "rendering rules failed"),
                }
            }
            Err(e) => warn!(error = %e, "listing SLOs for rules failed"),
        }
        tokio::time::sleep(ctx.evaluation_interval).await;
    }
}

/// Prometheus may read the file at any moment: never let it see half of it.
fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("yml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
