//! `headroom plan`: for each experiment, would it start now, and if not,
//! exactly why. The same checks the operator makes, read-only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tokio::sync::watch;

use crate::cli::PlanArgs;
use crate::context::Context;
use crate::engine::{self, ActiveRun, evaluate_gate, key};
use crate::metrics::Metrics;
use crate::prometheus::Prometheus;
use crate::reconcile::experiment::{check_target, validate_spec};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{ExperimentRun, RunPhase};
use crate::slo_reader::Freshness;

/// One line of the plan.
pub struct Line {
    pub namespace: String,
    pub name: String,
    pub action: String,
    pub would_start: bool,
    pub reason: String,
    pub message: String,
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());
    let ctx = Context {
        client: client.clone(),
        prometheus: Prometheus::with_options(&crate::prometheus_client::ClientOptions {
            url: args.prometheus_url.clone(),
            timeout: args.prometheus_timeout,
            args: args.prometheus_client.clone(),
        })
        .with_context(|| format!("--prometheus-url {}", args.prometheus_url))?,
        metrics,
        evaluation_interval: Duration::from_secs(10),
        recorded: None,
        watch_namespace: args.namespace.clone(),
        indicator_checks: Default::default(),
        direct_reads: tokio::sync::Semaphore::new(crate::context::DIRECT_READS),
        run_cache: None,
        instance: crate::run_owner::Instance::new(crate::run_owner::DEFAULT_LEASE),
        peers_seen: Default::default(),
        connection_allow: crate::allow_list::AllowList(args.connection_target_allow.clone()),
        notifier: crate::notify::Notifier::disabled(),
        operator_namespace: args.operator_namespace.clone(),
        runs: engine::Registry::default(),
        recorder: kube::runtime::events::Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "headroom-plan".into(),
                instance: None,
            },
        ),
    };
    let lines = plan(&ctx).await?;
    print!("{}", render(&lines));
    Ok(())
}

/// The plan for every watched experiment.
pub async fn plan(ctx: &Context) -> anyhow::Result<Vec<Line>> {
    let experiments = ctx
        .watched::<ChaosExperiment>()
        .list(&ListParams::default())
        .await
        .context("listing ChaosExperiments")?
        .items;
    let runs = Api::<ExperimentRun>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .context("listing ExperimentRuns")?
        .items;
    // Faults in place anywhere hold their targets, as in the operator.
    for run in &runs {
        let phase = run.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if phase.holds_fault() {
            let ns = run.namespace().unwrap_or_default();
            let mut exp = ChaosExperiment::new(&run.spec.experiment, run.spec.snapshot.clone());
            exp.metadata.namespace = Some(ns.clone());
            let (tx, _) = watch::channel(None);
            ctx.runs.insert(
                key(&ns, &run.name_any()),
                ActiveRun {
                    experiment: key(&ns, &run.spec.experiment),
                    target: engine::target_key(&exp),
                    abort: tx,
                },
            );
        }
    }
    let mut lines = Vec::new();
    for exp in &experiments {
        let ns = exp.namespace().unwrap_or_default();
        let mut line = Line {
            namespace: ns.clone(),
            name: exp.name_any(),
            action: exp.spec.action.kind().to_owned(),
            would_start: false,
            reason: String::new(),
            message: String::new(),
        };
        let mine: Vec<&ExperimentRun> = runs
            .iter()
            .filter(|r| {
                r.namespace().as_deref() == Some(ns.as_str()) && r.spec.experiment == exp.name_any()
            })
            .collect();
        let checks = match validate_spec(&exp.spec) {
            Ok(()) => check_target(ctx, exp).await,
            Err(e) => Err(e),
        };
        if let Err((reason, message)) = checks {
            line.reason = reason.into();
            line.message = message;
        } else if exp.spec.suspend {
            line.reason = "Suspended".into();
            line.message = "spec.suspend is true".into();
        } else if let Some(r) = mine
            .iter()
            .find(|r| r.status.as_ref().is_some_and(|s| s.phase.holds_fault()))
        {
            line.reason = "Running".into();
            line.message = format!("run {} is in progress", r.name_any());
        } else if exp.spec.schedule.is_none()
            && mine.iter().any(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.phase != RunPhase::Gated)
            })
        {
            line.reason = "AlreadyRan".into();
            line.message =
                "an experiment without spec.schedule runs once; set a schedule to run it again"
                    .into();
        } else {
            let outcome = evaluate_gate(ctx, exp, Freshness::Fresh).await;
            line.would_start = outcome.decision.open;
            line.reason = outcome.decision.reason;
            line.message = outcome.decision.message;
            if let Some(schedule) = &exp.spec.schedule
                && let Ok(next) = crate::reconcile::experiment::next_fire(
                    schedule,
                    exp.spec.time_zone.as_deref(),
                    chrono::Utc::now(),
                )
            {
                line.message = format!(
                    "{} (next scheduled start {})",
                    line.message,
                    next.to_rfc3339()
                );
            }
        }
        lines.push(line);
    }
    Ok(lines)
}

/// A table in kubectl's style.
pub fn render(lines: &[Line]) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_owned(),
        "EXPERIMENT".to_owned(),
        "ACTION".to_owned(),
        "WOULD START".to_owned(),
        "REASON".to_owned(),
        "MESSAGE".to_owned(),
    ]];
    for l in lines {
        rows.push([
            l.namespace.clone(),
            l.name.clone(),
            l.action.clone(),
            if l.would_start { "yes" } else { "no" }.to_owned(),
            l.reason.clone(),
            l.message.clone(),
        ]);
    }
    if lines.is_empty() {
        return "No experiments found.\n".into();
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i == 5 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let lines = vec![
            Line {
                namespace: "shop".into(),
                name: "kill-one".into(),
                action: "podKill".into(),
                would_start: false,
                reason: "BudgetBelowPolicy".into(),
                message: "checkout: 31.2% left".into(),
            },
            Line {
                namespace: "shop".into(),
                name: "k".into(),
                action: "podKill".into(),
                would_start: true,
                reason: "Open".into(),
                message: "ok".into(),
            },
        ];
        let text = render(&lines);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3);
        let col = |row: &str| row.find("podKill").or_else(|| row.find("ACTION"));
        assert_eq!(col(rows[0]), col(rows[1]));
        assert_eq!(col(rows[1]), col(rows[2]));
        assert!(rows[1].contains("no") && rows[1].ends_with("checkout: 31.2% left"));
        assert_eq!(render(&[]), "No experiments found.\n");
    }
}
