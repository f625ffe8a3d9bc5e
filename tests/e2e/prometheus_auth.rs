//! Reading SLOs from Prometheus as users' stacks serve it: the local data
//! behind basic auth over TLS under a path prefix (a second Prometheus with
//! `--web.config.file`), and behind prom-label-proxy enforcing a tenant
//! label from `X-Scope-OrgID` (both started by tests/cluster/up.sh).
//! Refused credentials must close the budget (never a stale "budget
//! available") with a message naming the flag to fix.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{Cluster, Operator, eventually};
use kube::api::{Api, PostParams};
use serde_json::json;

fn slo(name: &str) -> Result<ServiceLevelObjective> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": { "name": name },
        "spec": {
            "service": "checkout",
            "objective": 99.0,
            "window": "1h",
            "indicator": { "ratio": {
                "errors": "sum(rate(http_requests_total{job=\"checkout\",code=~\"5..\"}[$window]))",
                "total": "sum(rate(http_requests_total{job=\"checkout\"}[$window]))"
            }},
            "alerting": { "tiers": [
                { "name": "page-fast", "severity": "page", "budgetPercent": 2, "longWindow": "2m", "shortWindow": "30s" }
            ]}
        }
    }))?)
}

/// The parts of tests/cluster/up.sh these tests need, or an error that
/// says how to get them (never a silent skip).
struct Stack {
    tls_url: String,
    ca_file: String,
    basic_auth: String,
    proxy_url: String,
}

impl Stack {
    fn of(cluster: &Cluster) -> Result<Self> {
        let var = |k: &str| -> Result<String> {
            let v = cluster.var(k).with_context(|| {
                "the TLS Prometheus and prom-label-proxy are not part of the running cluster: \
                 run tests/cluster/up.sh from this tree (it starts them beside the others)"
            })?;
            Ok(v.to_owned())
        };
        let stack = Self {
            tls_url: var("PROMETHEUS_TLS_URL")?,
            ca_file: var("PROMETHEUS_TLS_CA_FILE")?,
            basic_auth: std::fs::read_to_string(var("PROMETHEUS_TLS_BASIC_AUTH_FILE")?)
                .context("reading the TLS Prometheus's credentials written by up.sh")?,
            proxy_url: var("PROMETHEUS_LABEL_PROXY_URL")?,
        };
        Ok(stack)
    }
}

/// A credentials file of this test's own, as a mounted Secret's key.
struct SecretFile(PathBuf);

impl SecretFile {
    fn new(name: &str, contents: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "headroom-e2e-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let file = Self(path);
        file.write(contents)?;
        Ok(file)
    }

    /// Replace it whole (new inode), as the kubelet updates a Secret volume.
    fn write(&self, contents: &str) -> Result<()> {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, contents)?;
        std::fs::rename(&tmp, &self.0)?;
        Ok(())
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
}

/// The SLO's conditions as (type, status, reason, message).
fn conditions(slo: &ServiceLevelObjective) -> Vec<(String, String, String, String)> {
    slo.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| {
                    (
                        c.type_.clone(),
                        c.status.clone(),
                        c.reason.clone(),
                        c.message.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn condition(slo: &ServiceLevelObjective, type_: &str) -> Option<(String, String, String)> {
    conditions(slo)
        .into_iter()
        .find(|c| c.0 == type_)
        .map(|(_, s, r, m)| (s, r, m))
}

/// Wait until the SLO's status satisfies `pred`; the last status and the
/// operator's log on failure.
async fn wait_for(
    api: &Api<ServiceLevelObjective>,
    name: &str,
    what: &str,
    operator: &Operator,
    pred: impl Fn(&ServiceLevelObjective) -> bool,
) -> Result<ServiceLevelObjective> {
    let last = std::sync::Mutex::new(None);
    let got = eventually(
        what,
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let slo = api.get(name).await?;
            let ok = pred(&slo);
            *last.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(conditions(&slo));
            Ok(ok.then_some(slo))
        },
    )
    .await;
    got.with_context(|| {
        format!(
            "last conditions: {:?}\noperator log:\n{}",
            last.lock().ok().and_then(|l| l.clone()),
            operator.log()
        )
    })
}

/// Read: data and a budget figure. (Whether budget is left depends on
/// what earlier tests did to the shared example service in the last hour.)
fn evaluated(slo: &ServiceLevelObjective) -> bool {
    condition(slo, "Ready").is_some_and(|(s, r, _)| s == "True" && r == "Evaluated")
        && condition(slo, "BudgetAvailable").is_some_and(|(s, _, _)| s == "True" || s == "False")
        && slo
            .status
            .as_ref()
            .is_some_and(|s| s.data_present && s.budget_remaining.is_some())
}

/// Ready=False naming `flag`, and the budget unknown: never the last
/// figure kept as if it were fresh.
fn refused_naming(flag: &'static str) -> impl Fn(&ServiceLevelObjective) -> bool {
    move |slo| {
        condition(slo, "Ready").is_some_and(|(s, r, m)| {
            s == "False" && r == "PrometheusUnavailable" && m.contains(flag)
        }) && condition(slo, "BudgetAvailable").is_some_and(|(s, _, _)| s == "Unknown")
    }
}

#[tokio::test]
async fn basic_auth_over_tls_under_a_path_prefix_and_a_refused_password_names_the_flag()
-> Result<()> {
    let cluster = Cluster::connect().await?;
    let stack = Stack::of(&cluster)?;
    cluster.install_crds()?;
    let ns = cluster.namespace("prom-tls").await?;
    let auth = SecretFile::new("basic-auth", &stack.basic_auth)?;
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "1s",
            "--prometheus-url",
            &stack.tls_url,
            "--prometheus-ca-file",
            &stack.ca_file,
            "--prometheus-basic-auth-file",
            auth.path(),
        ],
    )?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    api.create(&PostParams::default(), &slo("checkout")?)
        .await?;
    wait_for(
        &api,
        "checkout",
        "the SLO read through basic auth over TLS",
        &operator,
        evaluated,
    )
    .await?;

    // The Secret is rotated to a wrong password: read again at once, the
    // budget closes, and the message says which flag's file was refused.
    let user = stack.basic_auth.split(':').next().unwrap_or_default();
    auth.write(&format!("{user}:not-the-password\n"))?;
    let refused = wait_for(
        &api,
        "checkout",
        "Ready=False naming --prometheus-basic-auth-file",
        &operator,
        refused_naming("--prometheus-basic-auth-file"),
    )
    .await?;
    let (_, reason, message) = condition(&refused, "Ready").context("Ready")?;
    assert_eq!(reason, "PrometheusUnavailable", "{message}");
    assert!(message.contains("401"), "{message}");

    // Fixed in the file: the operator picks it up without a restart.
    auth.write(&stack.basic_auth)?;
    wait_for(
        &api,
        "checkout",
        "the SLO read again once the file holds the right password",
        &operator,
        evaluated,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_or_no_credentials_name_the_flag_to_give() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let stack = Stack::of(&cluster)?;
    cluster.install_crds()?;

    // No --prometheus-ca-file: the system roots do not know the local CA.
    let ns = cluster.namespace("prom-noca").await?;
    let auth = SecretFile::new("basic-auth", &stack.basic_auth)?;
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "1s",
            "--prometheus-url",
            &stack.tls_url,
            "--prometheus-basic-auth-file",
            auth.path(),
        ],
    )?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    api.create(&PostParams::default(), &slo("checkout")?)
        .await?;
    wait_for(
        &api,
        "checkout",
        "Ready=False naming --prometheus-ca-file",
        &operator,
        refused_naming("--prometheus-ca-file"),
    )
    .await?;
    drop(operator);

    // The CA but no credentials: Prometheus asks for them.
    let ns = cluster.namespace("prom-noauth").await?;
    let operator = Operator::start_in(
        &cluster,
        &ns.name,
        &[
            "--evaluation-interval",
            "1s",
            "--prometheus-url",
            &stack.tls_url,
            "--prometheus-ca-file",
            &stack.ca_file,
        ],
    )?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &ns.name);
    api.create(&PostParams::default(), &slo("checkout")?)
        .await?;
    wait_for(
        &api,
        "checkout",
        "Ready=False naming --prometheus-basic-auth-file",
        &operator,
        refused_naming("--prometheus-basic-auth-file"),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn prom_label_proxy_enforces_the_tenant_from_the_header() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let stack = Stack::of(&cluster)?;
    cluster.install_crds()?;
    let auth = SecretFile::new("basic-auth", &stack.basic_auth)?;
    let start = |ns: &str, header: Option<&str>| {
        let mut args = vec![
            "--evaluation-interval",
            "1s",
            "--prometheus-url",
            &stack.proxy_url,
            "--prometheus-basic-auth-file",
            auth.path(),
        ];
        if let Some(h) = header {
            args.extend(["--prometheus-header", h]);
        }
        Operator::start_in(&cluster, ns, &args)
    };

    // The tenant that owns the series (label job="checkout"): read.
    let own = cluster.namespace("tenant-own").await?;
    let operator = start(&own.name, Some("X-Scope-OrgID: checkout"))?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &own.name);
    api.create(&PostParams::default(), &slo("checkout")?)
        .await?;
    wait_for(
        &api,
        "checkout",
        "the SLO read as tenant checkout",
        &operator,
        evaluated,
    )
    .await?;
    drop(operator);

    // Another tenant: the proxy rewrites job="checkout" to its own tenant,
    // so the same SLO finds no data and the budget is unknown.
    let other = cluster.namespace("tenant-other").await?;
    let operator = start(&other.name, Some("X-Scope-OrgID: someone-else"))?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &other.name);
    api.create(&PostParams::default(), &slo("checkout")?)
        .await?;
    let seen = wait_for(
        &api,
        "checkout",
        "no data for another tenant",
        &operator,
        |slo| {
            condition(slo, "BudgetAvailable")
                .is_some_and(|(s, r, _)| s == "Unknown" && r == "NoData")
        },
    )
    .await?;
    assert!(
        !seen.status.as_ref().is_some_and(|s| s.data_present),
        "another tenant saw checkout's data: {:?}",
        seen.status
    );
    drop(operator);

    // No tenant header: the proxy refuses, and the message names the flag.
    let none = cluster.namespace("tenant-none").await?;
    let operator = start(&none.name, None)?;
    let api: Api<ServiceLevelObjective> = Api::namespaced(cluster.client.clone(), &none.name);
    api.create(&PostParams::default(), &slo("checkout")?)
        .await?;
    wait_for(
        &api,
        "checkout",
        "Ready=False naming --prometheus-header",
        &operator,
        refused_naming("--prometheus-header"),
    )
    .await?;
    Ok(())
}
