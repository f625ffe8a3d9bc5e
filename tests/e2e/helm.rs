//! The Helm chart (`deploy/helm/headroom`) with Helm built from its Go
//! module (`tests/cluster/helm.sh`, which prints the path `make test` puts
//! in `HELM_BIN`): it lints, renders into objects the API server accepts
//! (server-side dry run), refuses values that would install an operator
//! that cannot work, and installs an operator that evaluates an SLO.
//!
//! The local cluster's nodes are kwok nodes, which run no process, so the
//! chart's pods are scheduled but run nothing. The install is proven where
//! the chart decides anything: the operator binary runs on the host as the
//! installed ServiceAccount (a token from the TokenRequest API, so only the
//! chart's RBAC applies) with the arguments read back from the installed
//! Deployment.

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use headroom::resources::experiment::ChaosExperiment;
use headroom::resources::slo::ServiceLevelObjective;
use headroom_e2e::{Cluster, eventually, free_port, repo_root};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;
use serde_yaml::Value;

use crate::experiment::{ERRORS, slo};
use crate::manifest::{manifest, partition};

fn chart() -> String {
    repo_root()
        .join("deploy/helm/headroom")
        .to_string_lossy()
        .into_owned()
}

/// `helm` with the local cluster's kubeconfig.
fn helm(cluster: &Cluster, args: &[&str]) -> Result<Output> {
    let bin = std::env::var("HELM_BIN").map(PathBuf::from).context(
        "HELM_BIN is not set: tests/cluster/helm.sh builds helm from its Go module and prints its path (make test sets HELM_BIN)",
    )?;
    ensure!(bin.exists(), "HELM_BIN {} does not exist", bin.display());
    Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", cluster.var("KUBECONFIG")?)
        .output()
        .with_context(|| format!("running {}", bin.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` in `namespace` with `--set` values.
fn template(cluster: &Cluster, namespace: &str, sets: &[&str]) -> Result<Output> {
    let chart = chart();
    let mut args = vec!["template", "hr", chart.as_str(), "-n", namespace];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm(cluster, &args)
}

fn docs(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = <Value as serde::Deserialize>::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .with_context(|| format!("no {kind} rendered"))
}

#[tokio::test]
async fn the_chart_lints_renders_through_a_dry_run_and_refuses_bad_values() -> Result<()> {
    let cluster = Cluster::connect().await?;
    cluster.install_crds()?;
    cluster.install_prometheus_rule_crd()?;
    let home = cluster.namespace("helm-render").await?;

    let out = helm(&cluster, &["lint", "--strict", &chart()])?;
    ensure!(out.status.success(), "helm lint: {}", text(&out));

    let full = [
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=kube-prometheus-stack",
        "prometheus.auth.existingSecret=prometheus-client",
        "prometheus.auth.bearerTokenKey=token",
        "prometheus.auth.caKey=ca.crt",
        "prometheus.headers.X-Scope-OrgID=team-a",
        "rules.labels.release=kube-prometheus-stack",
        "podAntiAffinity=hard",
        "replicaCount=3",
        "connectionTargetAllow[0]=10.0.0.0/8:5432",
    ];
    for (name, sets) in [("defaults", &[][..]), ("every option", &full[..])] {
        let out = template(&cluster, &home.name, sets)?;
        ensure!(
            out.status.success(),
            "helm template ({name}): {}",
            text(&out)
        );
        let rendered = String::from_utf8(out.stdout)?;
        let applied =
            cluster.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered))?;
        let said = text(&applied);
        ensure!(
            applied.status.success() && !said.to_lowercase().contains("warning"),
            "the API server refused or warned about the chart ({name}): {said}"
        );
        let objects = docs(&rendered)?;
        // The chart grants exactly what deploy/ grants.
        let kustomize = docs(&std::fs::read_to_string(
            repo_root().join("deploy/clusterrole.yaml"),
        )?)?;
        ensure!(
            of_kind(&objects, "ClusterRole")?["rules"]
                == of_kind(&kustomize, "ClusterRole")?["rules"],
            "the chart's ClusterRole rules differ from deploy/clusterrole.yaml"
        );
        if name == "every option" {
            let spec = &of_kind(&objects, "Deployment")?["spec"]["template"]["spec"];
            let args: Vec<&str> = spec["containers"][0]["args"]
                .as_sequence()
                .context("args")?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            for want in [
                "--prometheus-bearer-token-file=/etc/headroom/prometheus/token",
                "--prometheus-ca-file=/etc/headroom/prometheus/ca.crt",
                "--prometheus-header=X-Scope-OrgID: team-a",
                "--prometheus-rule-label=release=kube-prometheus-stack",
                "--connection-target-allow=10.0.0.0/8:5432",
                "--leader-elect",
            ] {
                ensure!(args.contains(&want), "{want} not in {args:?}");
            }
            ensure!(
                !spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                    .is_null(),
                "podAntiAffinity=hard rendered no required anti-affinity"
            );
            ensure!(of_kind(&objects, "ServiceMonitor").is_ok());
            ensure!(of_kind(&objects, "PodDisruptionBudget").is_ok());
        }
    }

    // Values that would install an operator that cannot work are refused,
    // naming the value and the fix.
    for (sets, needle) in [
        (
            &["replicaCount=2", "leaderElection.enabled=false"][..],
            "replicaCount above 1 needs leaderElection.enabled",
        ),
        (
            &["prometheus.auth.bearerTokenKey=token"][..],
            "prometheus.auth.existingSecret",
        ),
        (&["podAntiAffinity=always"][..], "use soft, hard or none"),
        (&["prometheus.url="][..], "prometheus.url is required"),
    ] {
        let out = template(&cluster, &home.name, sets)?;
        ensure!(
            !out.status.success() && text(&out).contains(needle),
            "helm template {sets:?} should fail naming {needle:?}: {}",
            text(&out)
        );
    }
    Ok(())
}

/// The operator process started as the release's ServiceAccount; killed
/// when dropped.
struct HostOperator {
    child: Child,
    log: PathBuf,
}

impl Drop for HostOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HostOperator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `helm uninstall` when dropped: the release's ClusterRole and binding are
/// cluster-scoped and outlive the test's namespace.
struct Release<'a> {
    cluster: &'a Cluster,
    name: String,
    namespace: String,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = helm(
            self.cluster,
            &["uninstall", &self.name, "-n", &self.namespace],
        );
    }
}

/// A kubeconfig for the local API server that authenticates with `token`
/// only: the cluster's server and CA, no client certificate.
fn token_kubeconfig(cluster: &Cluster, token: &str) -> Result<PathBuf> {
    let admin = kube::config::Kubeconfig::read_from(cluster.var("KUBECONFIG")?)?;
    let c = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .context("the cluster's kubeconfig names no cluster")?;
    let server = c.server.clone().context("no server")?;
    let ca = match (&c.certificate_authority_data, &c.certificate_authority) {
        (Some(data), _) => format!("certificate-authority-data: {data}"),
        (None, Some(path)) => format!("certificate-authority: {path}"),
        (None, None) => bail!("the cluster's kubeconfig has no CA"),
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    {ca}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context: {{ cluster: local, user: sa }}\ncurrent-context: sa\n"
    );
    let path = std::env::temp_dir().join(format!("headroom-helm-{}.kubeconfig", free_port()?));
    std::fs::write(&path, yaml)?;
    Ok(path)
}

#[tokio::test]
async fn a_helm_install_runs_an_operator_that_evaluates_an_slo() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let home = cluster.namespace("helm-home").await?;
    let target = cluster.namespace("helm-target").await?;
    let release = Release {
        cluster: &cluster,
        name: format!("hr-{}", home.name.rsplit('-').next().unwrap_or("0")),
        namespace: home.name.clone(),
    };
    // The chart's crds/ are installed by Helm (or left as they are when
    // present, as Helm does).
    let chart = chart();
    let prometheus = format!("prometheus.url={}", cluster.var("PROMETHEUS_URL")?);
    let watch = format!("watchNamespace={}", target.name);
    let out = helm(
        &cluster,
        &[
            "install",
            &release.name,
            &chart,
            "-n",
            &home.name,
            "--set",
            &prometheus,
            "--set",
            &watch,
            "--set",
            "replicaCount=1",
            "--set",
            "evaluationInterval=2s",
        ],
    )?;
    ensure!(out.status.success(), "helm install: {}", text(&out));
    ensure!(
        text(&out).contains("headroom.dev/chaos=enabled"),
        "NOTES.txt not shown: {}",
        text(&out)
    );

    // What Helm installed, read back from the API server.
    let fullname = format!("{}-headroom", release.name);
    let deployment = Api::<Deployment>::namespaced(cluster.client.clone(), &home.name)
        .get(&fullname)
        .await
        .context("the chart's Deployment")?;
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .context("pod spec")?;
    ensure!(pod.service_account_name.as_deref() == Some(fullname.as_str()));
    let args = pod
        .containers
        .first()
        .and_then(|c| c.args.clone())
        .context("container args")?;
    ensure!(args.first().map(String::as_str) == Some("run"), "{args:?}");

    // The ServiceAccount's own token: only the chart's RBAC applies.
    let out = cluster.kubectl(&[
        "-n",
        &home.name,
        "create",
        "token",
        &fullname,
        "--duration=1h",
    ])?;
    ensure!(out.status.success(), "kubectl create token: {}", text(&out));
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    let kubeconfig = token_kubeconfig(&cluster, &token)?;

    let port = free_port()?;
    let listen = format!("--listen=127.0.0.1:{port}");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a.starts_with("--listen=") {
                listen.clone()
            } else {
                a
            }
        })
        .collect();
    let bin = std::env::var("HEADROOM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/debug/headroom"));
    let log = std::env::temp_dir().join(format!("headroom-helm-operator-{port}.log"));
    let file = std::fs::File::create(&log)?;
    let operator = HostOperator {
        child: Command::new(&bin)
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", &home.name)
            .env("POD_NAME", "helm-e2e")
            .env("RUST_LOG", "info,headroom=debug")
            .env_remove("PROMETHEUS_URL")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
        log,
    };

    Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &target.name)
        .create(&PostParams::default(), &slo("checkout", ERRORS)?)
        .await?;
    let evaluated = eventually(
        "the SLO evaluated by the chart's operator",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let s = Api::<ServiceLevelObjective>::namespaced(cluster.client.clone(), &target.name)
                .get("checkout")
                .await?;
            let ready = s.status.as_ref().is_some_and(|st| {
                st.budget_remaining.is_some()
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok(ready.then_some(s))
        },
    )
    .await
    .with_context(|| operator.log())?;
    println!(
        "SLO evaluated by the chart's operator: budget remaining {:?}",
        evaluated.status.as_ref().and_then(|s| s.budget_remaining)
    );
    // It leads through the chart's Lease, in the release namespace.
    let lease = Api::<Lease>::namespaced(cluster.client.clone(), &home.name)
        .get("headroom")
        .await
        .with_context(|| operator.log())?;
    ensure!(
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .is_some_and(|h| h.contains("helm-e2e")),
        "the Lease is not held by the chart's operator"
    );

    // The chart grants no NetworkPolicy rights, so a delegated fault of that
    // kind is refused before the gate opens: the SelfSubjectAccessReview of
    // the chart's ServiceAccount says no, and the message names the verb.
    let exps = Api::<ChaosExperiment>::namespaced(cluster.client.clone(), &target.name);
    exps.create(
        &PostParams::default(),
        &manifest("partition", json!([partition()]), json!({}))?,
    )
    .await?;
    let message = eventually(
        "the delegated NetworkPolicy refused: Valid=False, NotPermitted",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let e = exps.get("partition").await?;
            Ok(e.status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Valid"))
                .filter(|c| c.reason == "NotPermitted" && c.status == "False")
                .map(|c| c.message))
        },
    )
    .await
    .with_context(|| operator.log())?;
    ensure!(
        message.contains("may not create NetworkPolicy (networkpolicies.networking.k8s.io)"),
        "{message}"
    );
    ensure!(
        exps.get("partition")
            .await?
            .status
            .and_then(|s| s.last_run)
            .is_none(),
        "a run was started for a refused experiment"
    );
    drop(operator);
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}
