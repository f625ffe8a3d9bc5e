//! The dashboard over HTTP: pages read from the cluster, actions checked by
//! the API server's TokenReview and SubjectAccessReview.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{Cluster, Operator, eventually};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::experiment::{ERRORS, experiment, slo};

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
