//! The dashboard in a real browser: Debian's Chromium driven by Playwright
//! (tests/browser/dashboard.test.mjs), against a cluster state this test
//! sets up: an SLO with figures, a completed podKill run, and the alert
//! rules loaded into Prometheus with their runbook links.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::RunPhase;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, RuleFileGuard, eventually, repo_root};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::experiment::{ERRORS, calm, experiment, final_run, set_error_ratio, slo, web};

/// The runbook link of a generated alert for `ns`, as Prometheus loaded it.
async fn runbook_url_from_prometheus(prom: &str, ns: &str) -> Result<Option<String>> {
    let body: Value = reqwest::get(format!("{prom}/api/v1/rules?type=alert"))
        .await?
        .json()
        .await?;
    let needle = format!("/runbooks/slo/{ns}/checkout");
    for group in body["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            if let Some(url) = rule["annotations"]["runbook_url"].as_str()
                && url.ends_with(&needle)
            {
                return Ok(Some(url.to_owned()));
            }
        }
    }
    Ok(None)
}

#[tokio::test]
async fn dashboard_pages_in_chromium() -> Result<()> {
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    ensure!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: tests/cluster/up.sh installs Debian's chromium"
    );
    let browser_dir = repo_root().join("tests/browser");
    ensure!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` (make test does)"
    );
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("browser").await?;
    let _rules = RuleFileGuard::for_namespace(&cluster, &ns.name)?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let port = headroom_e2e::free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let rules_dir = cluster.var("PROMETHEUS_RULES_DIR")?.to_owned();
    let operator = Operator::start_on(
        &cluster,
        port,
        &[
            "--watch-namespace",
            &ns.name,
            "--evaluation-interval",
            "2s",
            "--rules-dir",
            &rules_dir,
            "--prometheus-reload",
            "--dashboard-url",
            &base,
        ],
    )?;
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment("kill-one-web", "checkout", json!({}))?,
        )
        .await?;
    let run = final_run(&cluster, &ns.name, Duration::from_secs(90))
        .await
        .with_context(|| operator.log())?;
    let status = run.status.clone().context("status")?;
    ensure!(
        status.phase == RunPhase::Completed,
        "{:?}: {:?}",
        status.phase,
        status.reason
    );
    let verdict = format!("{:?}", status.verdict.context("verdict")?);
    let prom = cluster.var("PROMETHEUS_URL")?.to_owned();
    let runbook = eventually(
        "the alert rules with their runbook link loaded in Prometheus",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || runbook_url_from_prometheus(&prom, &ns.name),
    )
    .await
    .with_context(|| operator.log())?;
    ensure!(
        runbook.starts_with(&base),
        "runbook {runbook} is not on the dashboard {base}"
    );

    let shots = repo_root().join("target/browser");
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", "dashboard.test.mjs"])
        .current_dir(&browser_dir)
        .env("DASHBOARD_URL", &base)
        .env("SLO_KEY", format!("{}/checkout", ns.name))
        .env("RUN_PATH", format!("/runs/{}/{}", ns.name, run.name_any()))
        .env("RUN_NAME", run.name_any())
        .env("RUN_VERDICT", &verdict)
        .env("RUNBOOK_URL", &runbook)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM_PATH", &chromium)
        .output()
        .context("running node (is Node.js installed?)")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    if !out.status.success() {
        bail!(
            "the browser test failed:\n{report}\noperator log:\n{}",
            operator.log()
        );
    }
    for shot in ["overview.png", "run.png", "runbook.png", "slo.png"] {
        ensure!(shots.join(shot).exists(), "screenshot {shot} missing");
    }
    Ok(())
}
