//! Sloth: the plain `prometheus/v1` spec and the Kubernetes
//! `sloth.slok.dev/v1` `PrometheusServiceLevel`, which say the same in
//! snake_case and camelCase.
//!
//! Sloth alerts once per severity: its page alert is "page quick OR page
//! slow", its ticket alert "ticket quick OR ticket slow", over the windows of
//! the catalogue for the SLO period (Google's 30d and 28d tables unless one
//! is given). Each becomes two Headroom tiers with the same alert name and
//! labels, so the same alert name with the same routing fires whenever
//! Sloth's would.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::duration::{format_duration, parse_positive_duration};
use crate::resources::slo::{
    Alerting, BurnRateTierSpec, Indicator, RatioIndicator, ServiceLevelObjective,
    ServiceLevelObjectiveSpec, Severity,
};

use super::check::{Blame, check};
use super::node::At;
use super::{ImportError, Options, window_template};

/// One window pair of a catalogue.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowPair {
    pub budget_percent: f64,
    pub short: String,
    pub long: String,
}

/// A Sloth `AlertWindows` catalogue: the windows for one SLO period.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertWindows {
    pub period: std::time::Duration,
    pub page_quick: WindowPair,
    pub page_slow: WindowPair,
    pub ticket_quick: WindowPair,
    pub ticket_slow: WindowPair,
}

fn pair(b: f64, short: &str, long: &str) -> WindowPair {
    WindowPair {
        budget_percent: b,
        short: short.into(),
        long: long.into(),
    }
}

/// Sloth's built-in catalogue (`internal/alert/windows/google-{28,30}d.yaml`):
/// the SRE Workbook's table, for 28d and for 30d.
fn builtin(days: u64) -> AlertWindows {
    AlertWindows {
        period: std::time::Duration::from_secs(days * 86_400),
        page_quick: pair(2.0, "5m", "1h"),
        page_slow: pair(5.0, "30m", "6h"),
        ticket_quick: pair(10.0, "2h", "1d"),
        ticket_slow: pair(10.0, "6h", "3d"),
    }
}

impl AlertWindows {
    /// Read an `AlertWindows` document (as Sloth's `--slo-period-windows-path`
    /// files are written).
    pub fn parse(doc: &Value) -> Result<Self, ImportError> {
        let root = At::root(doc, "");
        let kind = root.req_str("kind")?;
        if kind != "AlertWindows" {
            return Err(ImportError::new(
                "kind",
                format!("{kind:?}: a window catalogue is a sloth.slok.dev/v1 AlertWindows"),
            ));
        }
        let spec = root.req("spec")?;
        let period = spec.req("sloPeriod")?;
        let period_d = parse_positive_duration(period.str()?)
            .map_err(|e| ImportError::new(period.path(), e.to_string()))?;
        let read = |sev: &str, speed: &str| -> Result<WindowPair, ImportError> {
            let p = spec.req(sev)?.req(speed)?;
            let b = p.req("errorBudgetPercent")?;
            let budget_percent = b.number()?;
            if !(budget_percent > 0.0 && budget_percent <= 100.0) {
                return Err(ImportError::new(
                    b.path(),
                    "must be above 0 and at most 100",
                ));
            }
            let w = |k: &str| -> Result<String, ImportError> {
                let n = p.req(k)?;
                parse_positive_duration(n.str()?)
                    .map(format_duration)
                    .map_err(|e| ImportError::new(n.path(), e.to_string()))
            };
            Ok(WindowPair {
                budget_percent,
                short: w("shortWindow")?,
                long: w("longWindow")?,
            })
        };
        Ok(AlertWindows {
            period: period_d,
            page_quick: read("page", "quick")?,
            page_slow: read("page", "slow")?,
            ticket_quick: read("ticket", "quick")?,
            ticket_slow: read("ticket", "slow")?,
        })
    }
}

/// `--period` must parse and have a catalogue, as Sloth requires.
pub fn check_options(options: &Options) -> Result<(), ImportError> {
    catalogue(options).map(|_| ())
}

fn catalogue(options: &Options) -> Result<(String, AlertWindows), ImportError> {
    let text = options.period.as_deref().unwrap_or("30d");
    let period =
        parse_positive_duration(text).map_err(|e| ImportError::new("--period", e.to_string()))?;
    // Given catalogues first: Sloth lets a custom 30d table replace Google's.
    let found = options
        .windows
        .iter()
        .find(|w| w.period == period)
        .cloned()
        .or_else(|| {
            [28, 30]
                .into_iter()
                .map(builtin)
                .find(|w| w.period == period)
        });
    match found {
        // As written: 28d stays 28d, not 4w.
        Some(w) => Ok((text.to_owned(), w)),
        None => Err(ImportError::new(
            "--period",
            format!(
                "{text}: Sloth has alert windows for 28d and 30d only; give a catalogue for this period with --windows FILE|DIR (sloth.slok.dev/v1 AlertWindows)"
            ),
        )),
    }
}

/// The field names of the two spellings.
struct Keys {
    error_query: &'static str,
    total_query: &'static str,
    error_ratio_query: &'static str,
    page_alert: &'static str,
    ticket_alert: &'static str,
    slo_plugins: &'static str,
}

const PLAIN: Keys = Keys {
    error_query: "error_query",
    total_query: "total_query",
    error_ratio_query: "error_ratio_query",
    page_alert: "page_alert",
    ticket_alert: "ticket_alert",
    slo_plugins: "slo_plugins",
};

const KUBERNETES: Keys = Keys {
    error_query: "errorQuery",
    total_query: "totalQuery",
    error_ratio_query: "errorRatioQuery",
    page_alert: "pageAlert",
    ticket_alert: "ticketAlert",
    slo_plugins: "sloPlugins",
};

/// Translate one Sloth document: one ServiceLevelObjective per SLO.
pub fn translate(
    doc: Value,
    options: &Options,
) -> Result<(Vec<ServiceLevelObjective>, Vec<String>), ImportError> {
    let root = At::root(&doc, "");
    let (keys, spec, namespace) = match root.get("apiVersion") {
        Some(api) => {
            let api_version = api.str()?;
            let kind = root.req_str("kind")?;
            if api_version != "sloth.slok.dev/v1" {
                return Err(ImportError::new(
                    "apiVersion",
                    format!("{api_version:?}: Sloth's Kubernetes form is sloth.slok.dev/v1"),
                ));
            }
            if kind == "AlertWindows" {
                return Err(ImportError::new(
                    "kind",
                    "AlertWindows is a window catalogue, not an SLO: pass it with --windows",
                ));
            }
            if kind != "PrometheusServiceLevel" {
                return Err(ImportError::new(
                    "kind",
                    format!("{kind:?}: only PrometheusServiceLevel holds SLOs"),
                ));
            }
            let ns = root
                .get("metadata")
                .map(|m| m.opt_str("namespace"))
                .transpose()?
                .flatten();
            (&KUBERNETES, root.req("spec")?, ns)
        }
        None => {
            let version = root.get("version").ok_or_else(|| {
                ImportError::new(
                    "version",
                    "missing: a Sloth file starts with `version: prometheus/v1` (or `apiVersion: sloth.slok.dev/v1` with `kind: PrometheusServiceLevel`)",
                )
            })?;
            let v = version.str()?;
            if v != "prometheus/v1" {
                return Err(ImportError::new(
                    "version",
                    format!("{v:?}: only prometheus/v1 is a Sloth SLO spec"),
                ));
            }
            (&PLAIN, root.clone(), None)
        }
    };
    let (period, windows) = catalogue(options)?;
    let service = spec.req_str("service")?;
    let service_labels = spec.opt_string_map("labels")?;
    spec.refuse_if_set(
        keys.slo_plugins,
        "SLO plugins rewrite the generated rules in ways only Sloth knows; Headroom cannot reproduce them",
    )?;
    let slos = spec.req("slos")?;
    let mut out = Vec::new();
    for s in slos.seq()? {
        out.push(one(
            &s,
            keys,
            service,
            &service_labels,
            namespace,
            &period,
            &windows,
        )?);
    }
    Ok((out, Vec::new()))
}

/// The source's alert block for one severity.
struct SeverityAlert {
    disabled: bool,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn severity_alert(alerting: Option<&At>, key: &str) -> Result<SeverityAlert, ImportError> {
    let Some(a) = alerting.and_then(|a| a.get(key)) else {
        return Ok(SeverityAlert {
            disabled: false,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        });
    };
    Ok(SeverityAlert {
        disabled: a.opt_bool("disable")?.unwrap_or(false),
        labels: a.opt_string_map("labels")?,
        annotations: a.opt_string_map("annotations")?,
    })
}

fn one(
    s: &At,
    keys: &Keys,
    service: &str,
    service_labels: &BTreeMap<String, String>,
    namespace: Option<&str>,
    period: &str,
    windows: &AlertWindows,
) -> Result<ServiceLevelObjective, ImportError> {
    let name = s.req_str("name")?;
    let objective_node = s.req("objective")?;
    let objective = objective_node.number()?;
    if !(objective > 0.0 && objective < 100.0) {
        return Err(ImportError::new(
            objective_node.path(),
            format!("{objective} is not strictly between 0 and 100 percent"),
        ));
    }
    s.refuse_if_set(
        "plugins",
        "SLO plugins rewrite the generated rules in ways only Sloth knows; Headroom cannot reproduce them",
    )?;
    let sli = s.req("sli")?;
    if sli.get("raw").is_some() {
        return Err(ImportError::new(
            format!("{}.raw.{}", sli.path(), keys.error_ratio_query),
            "a precomputed error ratio cannot be split into the error and total rates Headroom needs (for burn rates and the traffic floor); rewrite it as `events` with error and total queries",
        ));
    }
    if sli.get("plugin").is_some() {
        return Err(ImportError::new(
            format!("{}.plugin", sli.path()),
            "SLI plugins are Go code that only Sloth runs; rewrite the SLI as `events`",
        ));
    }
    let events = sli
        .get("events")
        .ok_or_else(|| ImportError::new(sli.path(), "needs `events` (error and total queries)"))?;
    let errors = window_template(events.req_str(keys.error_query)?.trim());
    let total = window_template(events.req_str(keys.total_query)?.trim());

    // Sloth puts the service's and the SLO's labels (the SLO's win) on its
    // recording rules, and so on its alerts; alerting.labels go on both
    // alerts, each severity's labels on its own.
    let mut labels = service_labels.clone();
    labels.extend(s.opt_string_map("labels")?);
    let alerting = s.get("alerting");
    let page = severity_alert(alerting.as_ref(), keys.page_alert)?;
    let ticket = severity_alert(alerting.as_ref(), keys.ticket_alert)?;
    let mut annotations = BTreeMap::new();
    let mut alert_name = None;
    if let Some(a) = &alerting {
        labels.extend(a.opt_string_map("labels")?);
        annotations = a.opt_string_map("annotations")?;
        alert_name = a.opt_str("name")?.filter(|n| !n.is_empty());
    }
    if alert_name.is_none() && !(page.disabled && ticket.disabled) {
        return Err(ImportError::new(
            format!("{}.alerting.name", s.path()),
            "missing: Sloth requires an alert name when page or ticket alerts are enabled",
        ));
    }
    let runbook_url = annotations.remove("runbook_url");
    let tier = |name: &str, severity: Severity, w: &WindowPair, alert: &SeverityAlert| {
        let mut labels = alert.labels.clone();
        // Sloth's own routing label, which its users' Alertmanager routes on.
        labels.insert(
            "sloth_severity".into(),
            match severity {
                Severity::Page => "page",
                Severity::Ticket => "ticket",
            }
            .into(),
        );
        BurnRateTierSpec {
            name: name.into(),
            severity,
            budget_percent: w.budget_percent,
            long_window: w.long.clone(),
            short_window: w.short.clone(),
            disabled: alert.disabled,
            burn_rate: None,
            for_duration: None,
            labels,
            annotations: alert.annotations.clone(),
        }
    };
    let tiers = vec![
        tier("page-quick", Severity::Page, &windows.page_quick, &page),
        tier("page-slow", Severity::Page, &windows.page_slow, &page),
        tier(
            "ticket-quick",
            Severity::Ticket,
            &windows.ticket_quick,
            &ticket,
        ),
        tier(
            "ticket-slow",
            Severity::Ticket,
            &windows.ticket_slow,
            &ticket,
        ),
    ];
    let mut slo = ServiceLevelObjective::new(
        // Sloth's own id for the SLO (`sloth_id`).
        &format!("{service}-{name}"),
        ServiceLevelObjectiveSpec {
            service: service.to_owned(),
            description: s.opt_str("description")?.map(str::to_owned),
            objective,
            window: period.to_owned(),
            indicator: Indicator {
                ratio: Some(Box::new(RatioIndicator { errors, total })),
                ..Default::default()
            },
            alerting: Some(Box::new(Alerting {
                runbook_url,
                labels,
                annotations,
                alert_name: alert_name.map(str::to_owned),
                tiers: Some(tiers),
                absent: Vec::new(),
                prometheus_rule: None,
            })),
            min_traffic_per_second: None,
        },
    );
    slo.metadata.namespace = namespace.map(str::to_owned);
    let events_path = events.path();
    check(
        &slo,
        &Blame {
            name: format!("{} (with the service name)", s.field("name")),
            namespace: "metadata.namespace".into(),
            errors: format!("{events_path}.{}", keys.error_query),
            total: format!("{events_path}.{}", keys.total_query),
            window: "--period".into(),
            tiers: "--period / --windows".into(),
            labels: format!("{} or its alerting labels", s.field("labels")),
            alert_name: format!("{}.alerting.name", s.path()),
        },
    )?;
    Ok(slo)
}
