//! Prometheus rules generated from SLOs, as Sloth and Pyrra do.
//!
//! Recording rules put every SLO's error ratio per window under one metric
//! name (`headroom:slo_error_ratio:rate<window>`), so the operator reads all
//! SLOs with one query per window. Alert rules implement the multiwindow,
//! multi-burn-rate alerts: a tier fires only when both its long and short
//! windows burn faster than its threshold.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::duration::format_duration;
use crate::indicator::{self, IndicatorError};
use crate::resources::slo::{ServiceLevelObjective, Severity};
use crate::slo_eval::TierPlan;

/// Name of the recorded error ratio over `window` (e.g. `5m`).
pub fn recorded_metric(window: &str) -> String {
    format!("headroom:slo_error_ratio:rate{window}")
}

/// Name of the burn-rate alert.
pub const ALERT_NAME: &str = "HeadroomErrorBudgetBurn";

/// A Prometheus rule file.
#[derive(Debug, Serialize, PartialEq)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    pub expr: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The runbook an SLO's alerts link to: its own, else the dashboard's page.
pub fn runbook_url(slo: &ServiceLevelObjective, dashboard_url: &str) -> String {
    slo.spec
        .alerting
        .as_ref()
        .and_then(|a| a.runbook_url.clone())
        .unwrap_or_else(|| {
            format!(
                "{}/runbooks/slo/{}/{}",
                dashboard_url.trim_end_matches('/'),
                slo.metadata.namespace.as_deref().unwrap_or("default"),
                slo.metadata.name.as_deref().unwrap_or_default()
            )
        })
}

/// Recording and alert rules for one SLO. `period` is the SLO window and
/// `tiers` its burn-rate tiers.
pub fn slo_rules(
    slo: &ServiceLevelObjective,
    period: std::time::Duration,
    tiers: &[TierPlan],
    dashboard_url: &str,
) -> Result<RuleGroup, IndicatorError> {
    let ns = slo
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = slo.metadata.name.clone().unwrap_or_default();
    let ids = BTreeMap::from([
        ("namespace".to_owned(), ns.clone()),
        ("slo".to_owned(), name.clone()),
    ]);
    let selector = format!("{{namespace=\"{ns}\",slo=\"{name}\"}}");
    let budget = 1.0 - slo.spec.objective / 100.0;

    let mut windows: Vec<std::time::Duration> =
        tiers.iter().flat_map(|t| [t.long, t.short]).collect();
    windows.push(period);
    windows.sort();
    windows.dedup();

    let mut rules = Vec::new();
    for w in &windows {
        let w = format_duration(*w);
        let q = indicator::window_queries(&slo.spec.indicator, &w)?;
        rules.push(Rule {
            record: Some(recorded_metric(&w)),
            alert: None,
            expr: q.error_ratio,
            labels: ids.clone(),
            annotations: BTreeMap::new(),
        });
    }

    let runbook = runbook_url(slo, dashboard_url);
    let user_labels = slo
        .spec
        .alerting
        .as_ref()
        .map(|a| a.labels.clone())
        .unwrap_or_default();
    for tier in tiers.iter().filter(|t| !t.disabled) {
        let (long, short) = (format_duration(tier.long), format_duration(tier.short));
        // Compare error ratios with threshold × budget: the same as burn rate
        // against the threshold, without a division per sample.
        let bound = tier.threshold * budget;
        let expr = format!(
            "{long_m}{selector} > {bound} and {short_m}{selector} > {bound}",
            long_m = recorded_metric(&long),
            short_m = recorded_metric(&short),
        );
        let mut labels = user_labels.clone();
        labels.extend(ids.clone());
        labels.insert("service".into(), slo.spec.service.clone());
        labels.insert("tier".into(), tier.name.clone());
        labels.insert(
            "severity".into(),
            match tier.severity {
                Severity::Page => "page",
                Severity::Ticket => "ticket",
            }
            .into(),
        );
        let annotations = BTreeMap::from([
            (
                "summary".to_owned(),
                format!(
                    "{} is burning its error budget too fast ({name})",
                    slo.spec.service
                ),
            ),
            (
                "description".to_owned(),
                format!(
                    "SLO {ns}/{name} ({}% over {}) burns faster than {:.2}x over both {long} and {short}: at this rate {:.0}% of the budget goes within {long}.",
                    slo.spec.objective,
                    slo.spec.window,
                    tier.threshold,
                    tier_budget_percent(tier, period)
                ),
            ),
            ("runbook_url".to_owned(), runbook.clone()),
        ]);
        rules.push(Rule {
            record: None,
            alert: Some(ALERT_NAME.into()),
            expr,
            labels,
            annotations,
        });
    }
    Ok(RuleGroup {
        name: format!("headroom-slo-{ns}-{name}"),
        rules,
    })
}

/// The share of the budget, in percent, a tier guards: BR*·L/P.
fn tier_budget_percent(tier: &TierPlan, period: std::time::Duration) -> f64 {
    tier.threshold * tier.long.as_secs_f64() / period.as_secs_f64() * 100.0
}

/// Render a rule file as YAML.
pub fn to_yaml(file: &RuleFile) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated by Headroom from ServiceLevelObjectives; do not edit.\n{}",
        serde_yaml::to_string(file)?
    ))
}
