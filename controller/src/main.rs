//! The `headroom` binary: a thin shell over the library.

use std::process::ExitCode;

use clap::Parser;
use headroom::cli::{Cli, Command};
use headroom::resources;

/// mimalloc rather than the system allocator: with glibc's per-thread
/// arenas, the memory of a burst (thousands of SLOs read at once) stayed
/// with the process long after it was freed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run(args) = cli.command {
        init_tracing();
        return match headroom::operator::run(*args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("headroom: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("headroom: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Crds { split: None } => {
            for crd in resources::crds() {
                print!("---\n{}", resources::crd_yaml(&crd)?);
            }
            Ok(())
        }
        Command::Crds { split: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for crd in resources::crds() {
                let path = dir.join(resources::crd_file_name(&crd));
                std::fs::write(&path, resources::crd_yaml(&crd)?)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Rules {
            files,
            dashboard_url,
            long_windows,
        } => {
            let slos = if files.is_empty() {
                headroom::cli_support::slos_from_cluster().await?
            } else {
                headroom::cli_support::slos_from_files(&files)?
            };
            let (file, skipped) =
                headroom::rules::operator_rule_file(&slos, &dashboard_url, long_windows);
            print!("{}", headroom::rules::to_yaml(&file)?);
            for (slo, reason) in &skipped {
                eprintln!("headroom: no rules for {slo}: {reason}");
            }
            if skipped.is_empty() {
                Ok(())
            } else {
                anyhow::bail!(
                    "{} SLO(s) could not be translated into rules",
                    skipped.len()
                )
            }
        }
        Command::Validate { files } => {
            let mut texts = Vec::new();
            for path in &files {
                let text = if path.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                };
                texts.push((path.display().to_string(), text));
            }
            let report = headroom::validate::validate(&texts);
            for p in &report.problems {
                eprintln!("{p}");
            }
            if report.problems.is_empty() {
                println!(
                    "{} ServiceLevelObjective(s) and {} ChaosExperiment(s): no problem found",
                    report.slos, report.experiments
                );
                Ok(())
            } else {
                anyhow::bail!("{} problem(s)", report.problems.len())
            }
        }
        Command::Import {
            format,
            file,
            period,
            windows,
        } => {
            let read = |file: &std::path::Path| -> anyhow::Result<String> {
                if file.as_os_str() == "-" {
                    Ok(std::io::read_to_string(std::io::stdin())?)
                } else {
                    std::fs::read_to_string(file)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))
                }
            };
            let mut options = headroom::import::Options {
                period,
                windows: Vec::new(),
            };
            // Sloth's `--slo-period-windows-path` is a directory: take one too.
            let mut window_files = Vec::new();
            for w in &windows {
                if w.is_dir() {
                    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(w)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", w.display()))?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                        .collect();
                    entries.sort();
                    window_files.extend(entries);
                } else {
                    window_files.push(w.clone());
                }
            }
            for w in &window_files {
                let text = read(w)?;
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", w.display()))?;
                    options.windows.push(
                        headroom::import::AlertWindows::parse(&value)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", w.display()))?,
                    );
                }
            }
            let format = match format {
                headroom::cli::ImportFormat::Sloth => headroom::import::Format::Sloth,
                headroom::cli::ImportFormat::Pyrra => headroom::import::Format::Pyrra,
                headroom::cli::ImportFormat::Openslo => headroom::import::Format::OpenSlo,
            };
            let imported = headroom::import::import(format, &read(&file)?, &options)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let mut out = String::new();
            for slo in &imported.slos {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(slo)?);
            }
            print!("{out}");
            for note in &imported.notes {
                eprintln!("headroom import: note: {note}");
            }
            Ok(())
        }
        Command::Plan(args) => headroom::plan::run(args).await,
        Command::Status { namespace } => headroom::status::run(namespace).await,
        Command::Pause(args) => {
            let client = kube::Client::try_default().await?;
            let by = std::env::var("USER").unwrap_or_else(|_| "headroom CLI".into());
            if headroom::pause::set(&client, &args.operator_namespace, &args.reason, &by).await? {
                println!(
                    "global pause set (ConfigMap {}/{}): no experiment starts, running ones abort and restore",
                    args.operator_namespace,
                    headroom::pause::NAME
                );
            } else {
                println!("global pause was already set");
            }
            Ok(())
        }
        Command::Resume(args) => {
            let client = kube::Client::try_default().await?;
            if headroom::pause::clear(&client, &args.operator_namespace).await? {
                println!("global pause cleared");
            } else {
                println!("global pause was not set");
            }
            Ok(())
        }
        other => anyhow::bail!(
            "`{}` is not implemented yet in this build",
            command_name(&other)
        ),
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Run(_) => "headroom run",
        Command::Crds { .. } => "headroom crds",
        Command::Rules { .. } => "headroom rules",
        Command::Status { .. } => "headroom status",
        Command::Plan(_) => "headroom plan",
        Command::Pause(_) => "headroom pause",
        Command::Resume(_) => "headroom resume",
        Command::Import { .. } => "headroom import",
        Command::Validate { .. } => "headroom validate",
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}
