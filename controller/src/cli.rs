//! Command-line interface of the `headroom` binary.
//!
//! Every subcommand the design names exists from the start; the ones not
//! built yet say so and exit non-zero rather than pretend to work.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Headroom spends a service's spare error budget on learning.
#[derive(Debug, Parser)]
#[command(name = "headroom", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        split: Option<PathBuf>,
    },
    /// Print the Prometheus recording and alerting rules for the SLOs
    /// (from files, or from the cluster when no file is given).
    Rules {
        /// ServiceLevelObjective YAML files (several documents per file are fine).
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Base URL of the dashboard, for default runbook links.
        #[arg(
            long,
            env = "HEADROOM_DASHBOARD_URL",
            default_value = "http://127.0.0.1:9464"
        )]
        dashboard_url: String,
        /// How long windows are computed: `recorded` (only the shortest
        /// window reads raw samples; the others are tiled from recorded
        /// shorter windows) or `exact` (every window reads raw samples).
        #[arg(long, value_enum, default_value_t = crate::long_windows::Mode::Recorded)]
        long_windows: crate::long_windows::Mode,
    },
    /// Show SLOs, experiments and recent runs as a table.
    Status {
        /// Only this namespace (default: all).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Say, for each experiment, whether it would start now, and why not.
    Plan(PlanArgs),
    /// Set the global pause: no experiment starts, running ones restore.
    Pause(PauseArgs),
    /// Clear the global pause.
    Resume(PauseArgs),
    /// Translate an SLO from another tool into a ServiceLevelObjective.
    Import {
        /// The format of FILE.
        format: ImportFormat,
        /// The file to translate (`-` for standard input).
        file: PathBuf,
        /// Sloth only: the SLO period, as Sloth's `--default-slo-period`
        /// (default 30d). Pyrra and OpenSLO files state their own.
        #[arg(long, value_name = "DURATION")]
        period: Option<String>,
        /// Sloth only: `AlertWindows` catalogues, a file or a directory of
        /// them (Sloth's `--slo-period-windows-path`); may be repeated.
        #[arg(long = "windows", value_name = "FILE|DIR")]
        windows: Vec<PathBuf>,
    },
    /// Check SLO and experiment files offline, as the operator would, before
    /// `kubectl apply`: exits non-zero naming every problem.
    Validate {
        /// YAML files (several documents per file are fine; `-` for
        /// standard input).
        #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Prometheus base URL; may end in a path prefix (`/prometheus` for
    /// Mimir, Thanos behind a router).
    #[arg(long, env = "PROMETHEUS_URL", default_value = "http://127.0.0.1:9090")]
    pub prometheus_url: String,
    /// Address of the dashboard, JSON API and /metrics.
    #[arg(long, env = "HEADROOM_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// How often each SLO is re-read from Prometheus.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse_flag_duration)]
    pub evaluation_interval: std::time::Duration,
    /// A Prometheus query slower than this counts as Prometheus unavailable.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse_flag_duration)]
    pub prometheus_timeout: std::time::Duration,
    #[command(flatten)]
    pub prometheus_client: crate::prometheus_client::ClientArgs,
    /// Read each SLO with its own queries instead of the recording rules
    /// (for comparison; costs one query per window per SLO).
    #[arg(long)]
    pub direct_queries: bool,
    /// Write the generated Prometheus rules to `DIR/headroom-slos.yml`.
    #[arg(long, value_name = "DIR", env = "HEADROOM_RULES_DIR")]
    pub rules_dir: Option<PathBuf>,
    /// A label on every generated `PrometheusRule` object, `KEY=VALUE`
    /// (e.g. `release=kube-prometheus-stack`, what that chart's Prometheus
    /// selects by default); may be repeated. An SLO's
    /// `spec.alerting.prometheusRule.labels` win over it.
    #[arg(long = "prometheus-rule-label", value_name = "KEY=VALUE", value_parser = crate::rule_metadata::parse_label_flag)]
    pub prometheus_rule_labels: Vec<(String, String)>,
    /// An annotation on every generated `PrometheusRule` object,
    /// `KEY=VALUE`; may be repeated.
    #[arg(long = "prometheus-rule-annotation", value_name = "KEY=VALUE", value_parser = crate::rule_metadata::parse_annotation_flag)]
    pub prometheus_rule_annotations: Vec<(String, String)>,
    /// After writing rules, ask Prometheus to reload (`POST /-/reload`).
    #[arg(long)]
    pub prometheus_reload: bool,
    /// Base URL of the dashboard, used for default runbook links and the
    /// run links in notifications.
    #[arg(
        long,
        env = "HEADROOM_DASHBOARD_URL",
        default_value = "http://127.0.0.1:9464"
    )]
    pub dashboard_url: String,
    /// A Secret in the operator's namespace listing notification webhooks:
    /// each key names one, its value is the URL (a key ending in `.slack`
    /// gets Slack-format messages). Runs started, aborted and finished are
    /// POSTed there. Unset: no notifications.
    #[arg(long, value_name = "NAME", env = "HEADROOM_NOTIFY_SECRET")]
    pub notify_secret: Option<String>,
    /// How often the notification Secret is read again, so a changed URL
    /// takes effect without a restart.
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse_flag_duration)]
    pub notify_refresh: std::time::Duration,
    /// One webhook POST, from connecting to the answer. A POST without an
    /// answer in time is not retried (the receiver may have it).
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse_flag_duration)]
    pub notify_timeout: std::time::Duration,
    /// How long one notification is retried at most after connection
    /// errors and 408, 429 or 5xx answers.
    #[arg(long, default_value = "2m", value_parser = crate::duration::parse_flag_duration)]
    pub notify_retry_for: std::time::Duration,
    /// Watch only this namespace's SLOs and experiments (default: all
    /// namespaces). Lets several operators share a cluster, e.g. in tests.
    #[arg(long, value_name = "NAMESPACE", env = "HEADROOM_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// The operator's own namespace: never a target, and where the global
    /// pause ConfigMap `headroom-pause` lives.
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "POD_NAMESPACE",
        default_value = "headroom-system"
    )]
    pub operator_namespace: String,
    /// Run the controllers only while holding the Lease `--lease-name` in
    /// the operator's namespace, so several replicas never both inject.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "headroom")]
    pub lease_name: String,
    /// A leader that has not renewed for this long is replaced.
    #[arg(long, default_value = "15s", value_parser = crate::duration::parse_flag_duration)]
    pub lease_duration: std::time::Duration,
    /// How long a run's heartbeat holds (`status.driver`). The instance
    /// driving a run renews it every third of this; another instance
    /// adopts and restores the run only when it is older than this plus 2s.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse_flag_duration)]
    pub run_lease_duration: std::time::Duration,
    /// A leader that has not renewed its lease for this long stops leading
    /// and drops its faults; shorter than `--lease-duration`, so it has
    /// stopped before a candidate may take over. Default: two thirds of
    /// the lease duration (as client-go).
    #[arg(long, value_parser = crate::duration::parse_flag_duration)]
    pub renew_deadline: Option<std::time::Duration>,
    /// `host` targets of connectionExhaustion that the operator may reach:
    /// comma-separated `CIDR:PORT` or `HOST:PORT` entries (e.g.
    /// `10.0.0.0/8:5432,db.internal:5432`), checked on every address the
    /// host resolves to. Empty: every `host` target is refused.
    #[arg(
        long,
        env = "HEADROOM_CONNECTION_TARGET_ALLOW",
        value_name = "CIDR:PORT|HOST:PORT",
        value_delimiter = ',',
        value_parser = parse_allow_entry
    )]
    pub connection_target_allow: Vec<crate::allow_list::AllowEntry>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct PauseArgs {
    /// The operator's namespace, where the pause ConfigMap lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "headroom-system")]
    pub operator_namespace: String,
    /// Why (kept in the ConfigMap and shown in every gate decision).
    #[arg(long, default_value = "set with headroom pause")]
    pub reason: String,
}

#[derive(Clone, Debug, clap::Args)]
pub struct PlanArgs {
    /// Only this namespace's experiments (default: all namespaces).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Prometheus base URL.
    #[arg(long, env = "PROMETHEUS_URL", default_value = "http://127.0.0.1:9090")]
    pub prometheus_url: String,
    /// A Prometheus query slower than this counts as Prometheus unavailable.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse_flag_duration)]
    pub prometheus_timeout: std::time::Duration,
    #[command(flatten)]
    pub prometheus_client: crate::prometheus_client::ClientArgs,
    /// The operator's namespace (never a target; home of the pause).
    #[arg(long, env = "POD_NAMESPACE", default_value = "headroom-system")]
    pub operator_namespace: String,
    /// `host` targets of connectionExhaustion that the operator may reach (as `headroom run`):
    /// comma-separated `CIDR:PORT` or `HOST:PORT` entries (e.g.
    /// `10.0.0.0/8:5432,db.internal:5432`), checked on every address the
    /// host resolves to. Empty: every `host` target is refused.
    #[arg(
        long,
        env = "HEADROOM_CONNECTION_TARGET_ALLOW",
        value_name = "CIDR:PORT|HOST:PORT",
        value_delimiter = ',',
        value_parser = parse_allow_entry
    )]
    pub connection_target_allow: Vec<crate::allow_list::AllowEntry>,
}

fn parse_allow_entry(s: &str) -> Result<crate::allow_list::AllowEntry, String> {
    s.parse()
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ImportFormat {
    Openslo,
    Sloth,
    Pyrra,
}
