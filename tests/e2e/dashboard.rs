//! The dashboard over HTTP: pages read from the cluster, actions checked by
//! the API server's TokenReview and SubjectAccessReview.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use headroom::resources::ExperimentRun;
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::run::{RunPhase, Verdict};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{CHECKOUT, Cluster, Operator, eventually};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::experiment::{
    ERRORS, calm, experiment, request_run, runs, set_error_ratio, slo, web, web_ready,
};

fn token(cluster: &Cluster, ns: &str, sa: &str) -> Result<String> {
    let out = cluster.kubectl(&["-n", ns, "create", "serviceaccount", sa])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.kubectl(&["-n", ns, "create", "token", sa, "--duration=10m"])?;
    ensure!(
        out.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

#[tokio::test]
async fn pause_needs_a_token_the_api_server_accepts_and_rbac_allows() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("dash").await?;
    let home = cluster.namespace("dash-home").await?;
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "2s",
            "--operator-namespace",
            &home.name,
        ],
    )?;
    let base = operator.metrics_url.trim_end_matches("/metrics").to_owned();
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let http = reqwest::Client::new();

    // The overview shows the SLO with the figure its status holds.
    let status = eventually(
        "SLO status with a budget",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let s = Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
                .get("checkout")
                .await?;
            Ok(s.status.filter(|st| st.budget_remaining.is_some()))
        },
    )
    .await
    .with_context(|| operator.log())?;
    let figure = headroom::dashboard::views::budget_text(status.budget_remaining);
    let page = eventually(
        "the overview listing the SLO",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let res = http.get(format!("{base}/")).send().await?;
            let text = res.text().await?;
            Ok(text
                .contains(&format!("{}/checkout", ns.name))
                .then_some(text))
        },
    )
    .await?;
    ensure!(page.contains(&figure), "overview lacks {figure}");
    let res = http.get(format!("{base}/")).send().await?;
    let h = res.headers();
    ensure!(
        h.get("content-security-policy")
            .is_some_and(|v| v.to_str().unwrap_or("").contains("default-src 'none'")),
        "CSP missing: {h:?}"
    );
    ensure!(h.get("x-frame-options").is_some() && h.get("x-content-type-options").is_some());

    // No token: 401. A token the API server does not know: 401.
    let url = format!("{base}/api/pause");
    let res = http.post(&url).send().await?;
    ensure!(res.status() == 401, "no token gave {}", res.status());
    let res = http.post(&url).bearer_auth("not-a-token").send().await?;
    ensure!(res.status() == 401, "bad token gave {}", res.status());

    // A valid token without RBAC: 403, and the pause stays off.
    let nobody = token(&cluster, &ns.name, "nobody")?;
    let res = http.post(&url).bearer_auth(&nobody).send().await?;
    let code = res.status();
    let body = res.text().await?;
    ensure!(code == 403, "unprivileged token gave {code}: {body}");
    ensure!(body.contains("may not create configmaps"), "{body}");
    ensure!(headroom_pause(&cluster, &home.name)?.is_none());

    // Allowed to create ConfigMaps in the operator's namespace: 200.
    let operator_sa = token(&cluster, &home.name, "sre")?;
    for args in [
        vec![
            "-n",
            &home.name,
            "create",
            "role",
            "pauser",
            "--verb=create,delete",
            "--resource=configmaps",
        ],
        vec![
            "-n",
            &home.name,
            "create",
            "rolebinding",
            "pauser",
            "--role=pauser",
            &format!("--serviceaccount={}:sre", home.name),
        ],
    ] {
        let out = cluster.kubectl(&args)?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let res = eventually(
        "pause accepted",
        Duration::from_secs(10),
        Duration::from_millis(300),
        || async {
            let res = http
                .post(&url)
                .bearer_auth(&operator_sa)
                .body("game day")
                .send()
                .await?;
            Ok((res.status() == 200).then_some(res))
        },
    )
    .await?;
    let body: serde_json::Value = res.json().await?;
    ensure!(body["paused"] == true, "{body}");
    let reason = headroom_pause(&cluster, &home.name)?.context("pause ConfigMap")?;
    ensure!(reason.contains("game day"), "{reason}");

    // The next gate decision says so.
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment("kill-one-web", "checkout", json!({}))?,
        )
        .await?;
    eventually(
        "GlobalPause in the experiment's gate",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let e = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
                .get("kill-one-web")
                .await?;
            Ok(e.status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Gated"))
                .filter(|c| c.reason == "GlobalPause" && c.message.contains("game day")))
        },
    )
    .await
    .with_context(|| operator.log())?;

    // Resume with the same token clears it.
    let res = http
        .post(format!("{base}/api/resume"))
        .bearer_auth(&operator_sa)
        .send()
        .await?;
    ensure!(res.status() == 200, "resume gave {}", res.status());
    ensure!(headroom_pause(&cluster, &home.name)?.is_none());
    Ok(())
}

fn headroom_pause(cluster: &Cluster, ns: &str) -> Result<Option<String>> {
    let out = cluster.kubectl(&[
        "-n",
        ns,
        "get",
        "configmap",
        "headroom-pause",
        "-o",
        "jsonpath={.data.reason}",
        "--ignore-not-found",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    Ok((!text.trim().is_empty()).then(|| text.trim().to_owned()))
}

/// The text as the dashboard's pages print it (maud escapes these).
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The newest finished run whose name is not in `seen`.
async fn next_final_run(
    cluster: &Cluster,
    ns: &str,
    seen: &[String],
    operator: &Operator,
) -> Result<ExperimentRun> {
    eventually(
        "a new finished run",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            Ok(runs(cluster, ns).await?.into_iter().find(|r| {
                !seen.contains(&r.name_any())
                    && r.status
                        .as_ref()
                        .is_some_and(|s| matches!(s.phase, RunPhase::Completed | RunPhase::Aborted))
            }))
        },
    )
    .await
    .with_context(|| operator.log())
}

/// A page's text once it contains `needle`.
async fn page_with(http: &reqwest::Client, url: &str, what: &str, needle: &str) -> Result<String> {
    eventually(
        what,
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let text = http.get(url).send().await?.text().await?;
            Ok(text.contains(needle).then_some(text))
        },
    )
    .await
}

/// A run that really refutes its hypothesis (the pods cannot be back
/// within 1ms of a kill) becomes an open weakness on the guarding SLO's
/// runbook, with its sentence and the experiment's remediation; a later
/// run of the same experiment that confirms the hypothesis shows it fixed,
/// naming that run.
#[tokio::test]
async fn a_refuted_run_is_a_known_weakness_until_a_confirming_run_fixes_it() -> Result<()> {
    let _guard = CHECKOUT.lock().await;
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("weakness").await?;
    set_error_ratio(&cluster, 0.0).await?;
    web(&cluster, &ns).await?;
    calm(&cluster).await?;
    let operator = Operator::start_in(&cluster, &ns.name, &["--evaluation-interval", "2s"])?;
    let base = operator.metrics_url.trim_end_matches("/metrics").to_owned();
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let remediation = "set a readiness probe that passes sooner <and> keep a spare replica";
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &experiment(
                "kill-one-web",
                "checkout",
                json!({
                    "hypothesis": { "recoversWithin": "1ms" },
                    "remediation": remediation,
                    // Scheduled far away: only "run now" starts the second run.
                    "schedule": "0 0 1 1 *",
                }),
            )?,
        )
        .await?;
    request_run(&cluster, &ns.name, "kill-one-web").await?;
    let refuted = next_final_run(&cluster, &ns.name, &[], &operator).await?;
    let st = refuted.status.clone().context("status")?;
    ensure!(
        st.verdict == Some(Verdict::Refuted),
        "the first run was not refuted: {:?} {:?} {:?}",
        st.phase,
        st.reason,
        st.expectations
    );
    let sentence = headroom::findings::sentence(&refuted);
    println!("weakness: {sentence}");
    ensure!(
        sentence.contains("pod was killed, Ready pods"),
        "the sentence is not written from the podKill evidence: {sentence}"
    );

    let http = reqwest::Client::new();
    let runbook = format!("{base}/runbooks/slo/{}/checkout", ns.name);
    let page = page_with(
        &http,
        &runbook,
        "the weakness on the SLO runbook",
        "weakness open",
    )
    .await?;
    let open = page
        .split("class=\"weakness open\"")
        .nth(1)
        .context("no open weakness")?;
    ensure!(open.contains(&escaped(&sentence)), "{open}");
    ensure!(open.contains(&escaped(remediation)), "{open}");
    ensure!(
        open.contains(&format!("/runs/{}/{}", ns.name, refuted.name_any())),
        "the weakness does not link its run: {open}"
    );
    ensure!(
        page.find("Known weaknesses") < page.find("When its burn-rate alert fires"),
        "the weaknesses are not first"
    );
    let exp_page = http
        .get(format!(
            "{base}/runbooks/experiment/{}/kill-one-web",
            ns.name
        ))
        .send()
        .await?
        .text()
        .await?;
    ensure!(exp_page.contains("weakness open"), "{exp_page}");

    // Fixed: the hypothesis now allows a real recovery, and the next run
    // confirms it.
    Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &ns.name)
        .patch(
            "kill-one-web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "hypothesis": { "recoversWithin": "60s" } } })),
        )
        .await?;
    web_ready(&cluster, &ns.name).await?;
    // A request must be newer than the last run by more than a second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    request_run(&cluster, &ns.name, "kill-one-web").await?;
    let confirming = next_final_run(&cluster, &ns.name, &[refuted.name_any()], &operator).await?;
    let st = confirming.status.clone().context("status")?;
    ensure!(
        st.verdict == Some(Verdict::Confirmed),
        "the second run did not confirm: {:?} {:?} {:?}",
        st.phase,
        st.reason,
        st.expectations
    );
    let page = page_with(&http, &runbook, "the weakness fixed", "weakness fixed").await?;
    ensure!(!page.contains("weakness open"), "still open: {page}");
    ensure!(page.contains("Known weaknesses (0 open)"), "{page}");
    let fixed = page
        .split("class=\"weakness fixed\"")
        .nth(1)
        .context("no fixed weakness")?;
    let by = fixed.split("fixed-by").nth(1).context("no fixing run")?;
    ensure!(
        by.contains(&format!("/runs/{}/{}", ns.name, confirming.name_any())),
        "the fix does not name run {}: {fixed}",
        confirming.name_any()
    );
    // The JSON counterpart says the same.
    let all: serde_json::Value = http
        .get(format!("{base}/api/findings"))
        .send()
        .await?
        .json()
        .await?;
    let mine = all
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["namespace"] == ns.name.as_str())
        .context("no finding in /api/findings")?;
    ensure!(
        mine["state"] == "Fixed" && mine["run"] == confirming.name_any().as_str(),
        "{mine}"
    );
    Ok(())
}

/// With Prometheus away, the SLO page still answers: the SLO's figures
/// from its last status, and a message where the charts would be.
#[tokio::test]
async fn the_slo_page_says_so_when_prometheus_does_not_answer() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    let ns = cluster.namespace("slo-page").await?;
    // A port nothing listens on.
    let nowhere = format!("http://127.0.0.1:{}", headroom_e2e::free_port()?);
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &["--evaluation-interval", "2s", "--prometheus-url", &nowhere],
    )?;
    let base = operator.metrics_url.trim_end_matches("/metrics").to_owned();
    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let http = reqwest::Client::new();
    let url = format!("{base}/slos/{}/checkout", ns.name);
    // The SLO's own page, not the not-found page served until the
    // operator's cache holds the SLO (both say "SLO").
    let page = page_with(&http, &url, "the SLO page", "id=\"budget-chart\"")
        .await
        .with_context(|| operator.log())?;
    for id in ["budget-chart", "burn-chart"] {
        let at = page
            .find(&format!("id=\"{id}\""))
            .with_context(|| format!("no #{id}: {page}"))?;
        ensure!(
            page[at..].contains("Prometheus did not answer"),
            "#{id} does not say why: {page}"
        );
    }
    ensure!(!page.contains("<svg"), "a chart without data: {page}");
    Ok(())
}
