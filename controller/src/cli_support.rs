//! Helpers shared by the CLI subcommands.

use std::path::PathBuf;

use anyhow::Context as _;
use kube::api::{Api, ListParams};
use serde::Deserialize;

use crate::resources::ServiceLevelObjective;

/// Every ServiceLevelObjective document in `files`; other kinds are skipped,
/// and a document that claims to be an SLO but does not parse is an error
/// naming the file.
pub fn slos_from_files(files: &[PathBuf]) -> anyhow::Result<Vec<ServiceLevelObjective>> {
    let mut out = Vec::new();
    for path in files {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc)
                .with_context(|| format!("{}: document {} is not YAML", path.display(), i + 1))?;
            if value.get("kind").and_then(|k| k.as_str()) != Some("ServiceLevelObjective") {
                continue;
            }
            let slo: ServiceLevelObjective = serde_yaml::from_value(value).with_context(|| {
                format!(
                    "{}: document {} is not a valid ServiceLevelObjective",
                    path.display(),
                    i + 1
                )
            })?;
            out.push(slo);
        }
    }
    Ok(out)
}

/// Every ServiceLevelObjective in the cluster the kubeconfig points at.
pub async fn slos_from_cluster() -> anyhow::Result<Vec<ServiceLevelObjective>> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (set KUBECONFIG, or pass -f FILE)")?;
    let list = Api::<ServiceLevelObjective>::all(client)
        .list(&ListParams::default())
        .await
        .context("listing ServiceLevelObjectives")?;
    Ok(list.items)
}
