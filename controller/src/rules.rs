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
use crate::long_windows::{self, Mode, Source};
use crate::resources::slo::{ServiceLevelObjective, Severity};
use crate::slo_eval::TierPlan;

/// Name of the recorded error ratio over `window` (e.g. `5m`).
pub fn recorded_metric(window: &str) -> String {
    format!("headroom:slo_error_ratio:rate{window}")
}

/// Name of the recorded event rate (traffic) over `window`.
pub fn recorded_traffic_metric(window: &str) -> String {
    format!("headroom:slo_requests:rate{window}")
}

/// Name of the recorded bad-event rate over `window` (long windows are
/// tiled from it, see `long_windows.rs`).
pub fn recorded_errors_metric(window: &str) -> String {
    format!("headroom:slo_errors:rate{window}")
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
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_duration: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The alert on experiments whose last run refuted their hypothesis.
pub const REFUTED_ALERT: &str = "HeadroomHypothesisRefuted";
/// The group that holds it, beside the SLOs' groups.
pub const EXPERIMENTS_GROUP: &str = "headroom-experiments";

/// `HeadroomHypothesisRefuted`: one alert per experiment whose last run was
/// refuted (`headroom_experiment_last_verdict{verdict="Refuted"}`), linking
/// to the experiment's runbook page with the finding. A later run that
/// confirms the hypothesis clears it. `max by` keeps one series per
/// experiment when several operator replicas are scraped.
pub fn experiment_group(dashboard_url: &str) -> RuleGroup {
    experiment_group_in(dashboard_url, None)
}

/// [`experiment_group`] for the experiments of one namespace: the form of a
/// namespace's `PrometheusRule`, which a namespace-scoped rule selection
/// (the Prometheus Operator's, with its namespace label enforced) loads.
pub fn experiment_group_in(dashboard_url: &str, namespace: Option<&str>) -> RuleGroup {
    let labels = "{{ $labels.namespace }}/{{ $labels.experiment }}";
    let selector = match namespace {
        Some(ns) => format!(r#"{{namespace="{ns}",verdict="Refuted"}}"#),
        None => r#"{verdict="Refuted"}"#.to_owned(),
    };
    RuleGroup {
        name: EXPERIMENTS_GROUP.to_owned(),
        rules: vec![Rule {
            record: None,
            alert: Some(REFUTED_ALERT.to_owned()),
            expr: format!(
                "max by (namespace, experiment) (headroom_experiment_last_verdict{selector}) == 1"
            ),
            for_duration: None,
            labels: BTreeMap::from([("severity".to_owned(), "ticket".to_owned())]),
            annotations: BTreeMap::from([
                (
                    "summary".to_owned(),
                    format!("Experiment {labels}: hypothesis refuted"),
                ),
                (
                    "description".to_owned(),
                    format!(
                        "The last run of ChaosExperiment {labels} broke an expectation: a known weakness, with its evidence on the run page. The fault was restored when the run ended. A later run that confirms the hypothesis clears this alert."
                    ),
                ),
                (
                    "runbook_url".to_owned(),
                    format!(
                        "{}/runbooks/experiment/{{{{ $labels.namespace }}}}/{{{{ $labels.experiment }}}}",
                        dashboard_url.trim_end_matches('/')
                    ),
                ),
            ]),
        }],
    }
}

/// The operator's whole rule file: every SLO's group, then the experiments'
/// group. What `headroom rules` prints and `--rules-dir` holds.
pub fn operator_rule_file<'a>(
    slos: impl IntoIterator<Item = &'a ServiceLevelObjective>,
    dashboard_url: &str,
    mode: Mode,
) -> (RuleFile, Vec<(String, String)>) {
    let (mut file, skipped) = rule_file_with(slos, dashboard_url, mode);
    file.groups.push(experiment_group(dashboard_url));
    (file, skipped)
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
    mode: Mode,
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
    let record = |name: String, expr: String| Rule {
        record: Some(name),
        alert: None,
        expr,
        for_duration: None,
        labels: ids.clone(),
        annotations: BTreeMap::new(),
    };
    // Indicators with separate error and request rates get cheap long
    // windows; Sloth's and Pyrra's recorded ratios are read as they are.
    let splittable = match windows.first() {
        Some(w) => indicator::window_queries(&slo.spec.indicator, &format_duration(*w))?
            .error_rate
            .is_some(),
        None => false,
    };
    let mode = if splittable { mode } else { Mode::Exact };
    for (w, source) in long_windows::plan(&windows, mode) {
        let w = format_duration(w);
        let (errors_m, requests_m) = (recorded_errors_metric(&w), recorded_traffic_metric(&w));
        match (mode, source) {
            (Mode::Exact, _) => {
                let q = indicator::window_queries(&slo.spec.indicator, &w)?;
                rules.push(record(recorded_metric(&w), q.error_ratio));
                continue;
            }
            (Mode::Recorded, Source::Raw) => {
                let q = indicator::window_queries(&slo.spec.indicator, &w)?;
                let (Some(errors), Some(total)) = (q.error_rate, q.total_rate) else {
                    rules.push(record(recorded_metric(&w), q.error_ratio));
                    continue;
                };
                rules.push(record(errors_m.clone(), errors));
                rules.push(record(requests_m.clone(), total));
            }
            (Mode::Recorded, Source::Tiled { from, tiles }) => {
                let from_w = format_duration(from);
                rules.push(record(
                    errors_m.clone(),
                    long_windows::tiled_expr(
                        &recorded_errors_metric(&from_w),
                        &selector,
                        from,
                        tiles,
                    ),
                ));
                rules.push(record(
                    requests_m.clone(),
                    long_windows::tiled_expr(
                        &recorded_traffic_metric(&from_w),
                        &selector,
                        from,
                        tiles,
                    ),
                ));
            }
        }
        rules.push(record(
            recorded_metric(&w),
            format!("{errors_m}{selector} / {requests_m}{selector}"),
        ));
    }

    // Traffic over the shortest window, for the minTrafficPerSecond floor
    // (recorded above with every window's rates in Recorded mode).
    if let (Mode::Exact, Some(shortest)) = (mode, windows.first()) {
        let w = format_duration(*shortest);
        if let Some(total) = indicator::window_queries(&slo.spec.indicator, &w)?.total_rate {
            rules.push(Rule {
                record: Some(recorded_traffic_metric(&w)),
                alert: None,
                expr: total,
                for_duration: None,
                labels: ids.clone(),
                annotations: BTreeMap::new(),
            });
        }
    }

    let runbook = runbook_url(slo, dashboard_url);
    let alerting = slo.spec.alerting.clone().unwrap_or_default();
    let alert_name = alerting.alert_name.as_deref().unwrap_or(ALERT_NAME);
    for tier in tiers.iter().filter(|t| !t.disabled) {
        let spec = alerting
            .tiers
            .as_deref()
            .and_then(|specs| specs.iter().find(|s| s.name == tier.name));
        let (long, short) = (format_duration(tier.long), format_duration(tier.short));
        // Compare error ratios with threshold × budget: the same as burn rate
        // against the threshold, without a division per sample.
        // Rounded so (1 − 0.999) × 14.4 reads 0.0144, not 0.014399999999998.
        let bound = (tier.threshold * budget * 1e12).round() / 1e12;
        let expr = format!(
            "{long_m}{selector} > {bound} and {short_m}{selector} > {bound}",
            long_m = recorded_metric(&long),
            short_m = recorded_metric(&short),
        );
        // Precedence, lowest first: Headroom's defaults, the SLO's labels,
        // the tier's labels, then the identity labels, which the alert
        // must keep to name its SLO.
        let mut labels = BTreeMap::from([
            ("service".to_owned(), slo.spec.service.clone()),
            ("tier".to_owned(), tier.name.clone()),
            (
                "severity".to_owned(),
                match tier.severity {
                    Severity::Page => "page",
                    Severity::Ticket => "ticket",
                }
                .to_owned(),
            ),
        ]);
        labels.extend(alerting.labels.clone());
        if let Some(spec) = spec {
            labels.extend(spec.labels.clone());
        }
        labels.extend(ids.clone());
        let mut annotations = BTreeMap::from([
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
        // The SLO's annotations, then the tier's, win over Headroom's.
        annotations.extend(alerting.annotations.clone());
        if let Some(spec) = spec {
            annotations.extend(spec.annotations.clone());
        }
        let rule = Rule {
            record: None,
            alert: Some(alert_name.to_owned()),
            expr,
            for_duration: spec.and_then(|s| s.for_duration.clone()),
            labels,
            annotations,
        };
        // Tiers whose alerts end with the same name, labels and `for:`
        // (a user label overriding `tier`, as Sloth's page and ticket
        // alerts do) become one rule joined with `or`: two rules of a group
        // writing the same ALERTS series would collide in Prometheus.
        match rules.iter_mut().find(|r| {
            r.alert == rule.alert && r.labels == rule.labels && r.for_duration == rule.for_duration
        }) {
            Some(same) => {
                same.expr = format!("({}) or ({})", same.expr, rule.expr);
                if let (Some(a), Some(b)) = (
                    same.annotations.get_mut("description"),
                    rule.annotations.get("description"),
                ) && a != b
                {
                    a.push_str(" Or: ");
                    a.push_str(b);
                }
            }
            None => rules.push(rule),
        }
    }
    for a in &alerting.absent {
        let mut labels = alerting.labels.clone();
        labels.extend(a.labels.clone());
        labels.extend(ids.clone());
        rules.push(Rule {
            record: None,
            alert: Some(a.alert_name.clone()),
            expr: absent_expr(a),
            for_duration: a.for_duration.clone(),
            labels,
            annotations: BTreeMap::from([
                (
                    "summary".to_owned(),
                    format!("{} has no data for SLO {ns}/{name}", a.selector.trim()),
                ),
                ("runbook_url".to_owned(), runbook.clone()),
            ]),
        });
    }
    Ok(RuleGroup {
        name: format!("headroom-slo-{ns}-{name}"),
        rules,
    })
}

/// The expression of an absent-series alert.
pub fn absent_expr(a: &crate::resources::slo::AbsentAlertSpec) -> String {
    format!("absent({}) == 1", a.selector.trim())
}

/// The share of the budget, in percent, a tier guards: BR*·L/P.
fn tier_budget_percent(tier: &TierPlan, period: std::time::Duration) -> f64 {
    tier.threshold * tier.long.as_secs_f64() / period.as_secs_f64() * 100.0
}

const HEADER: &str = "# Generated by Headroom from ServiceLevelObjectives; do not edit.\n";

/// Render a rule file as YAML.
pub fn to_yaml(file: &RuleFile) -> Result<String, serde_yaml::Error> {
    Ok(format!("{HEADER}{}", serde_yaml::to_string(file)?))
}

/// One rule file for many SLOs. SLOs whose rules cannot be built are left
/// out and returned with the reason, so one bad SLO does not hide the rest.
pub fn rule_file<'a>(
    slos: impl IntoIterator<Item = &'a ServiceLevelObjective>,
    dashboard_url: &str,
) -> (RuleFile, Vec<(String, String)>) {
    rule_file_with(slos, dashboard_url, Mode::default())
}

/// [`rule_file`] with long windows computed as `mode` says.
pub fn rule_file_with<'a>(
    slos: impl IntoIterator<Item = &'a ServiceLevelObjective>,
    dashboard_url: &str,
    mode: Mode,
) -> (RuleFile, Vec<(String, String)>) {
    let mut groups = Vec::new();
    let mut skipped = Vec::new();
    for slo in slos {
        match group_for(slo, dashboard_url, mode) {
            Ok(group) => groups.push(group),
            Err(why) => skipped.push(why),
        }
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    (RuleFile { groups }, skipped)
}

/// One SLO's group, or `(namespace/name, reason)`.
fn group_for(
    slo: &ServiceLevelObjective,
    dashboard_url: &str,
    mode: Mode,
) -> Result<RuleGroup, (String, String)> {
    crate::duration::parse_duration(&slo.spec.window)
        .map_err(|e| format!("spec.window: {e}"))
        .and_then(|period| {
            let tiers = crate::budget::tiers_for(
                period,
                slo.spec.alerting.as_ref().and_then(|a| a.tiers.as_deref()),
            )?;
            // The operator cannot check a selector with the API server's
            // schema; a broken one would make Prometheus refuse the group.
            for (i, a) in slo.spec.alerting.iter().flat_map(|a| &a.absent).enumerate() {
                promql_parser::parser::parse(&absent_expr(a)).map_err(|e| {
                    format!("spec.alerting.absent[{i}].selector is not a PromQL selector: {e}")
                })?;
            }
            slo_rules(slo, period, &tiers, dashboard_url, mode).map_err(|e| e.to_string())
        })
        .map_err(|reason| {
            (
                format!(
                    "{}/{}",
                    slo.metadata.namespace.as_deref().unwrap_or("default"),
                    slo.metadata.name.as_deref().unwrap_or_default()
                ),
                reason,
            )
        })
}

/// Write the same document as `to_yaml(&operator_rule_file(..))`, one group at a
/// time: ten thousand SLOs make tens of megabytes of YAML, which the
/// operator should not hold in memory at once. Returns the SLOs left out.
pub fn write_rule_file<W: std::io::Write>(
    mut out: W,
    slos: &[&ServiceLevelObjective],
    dashboard_url: &str,
) -> Result<Vec<(String, String)>, RuleFileError> {
    let mut order: Vec<(String, &ServiceLevelObjective)> = slos
        .iter()
        .map(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            let name = s.metadata.name.as_deref().unwrap_or_default();
            (format!("headroom-slo-{ns}-{name}"), *s)
        })
        .collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    out.write_all(HEADER.as_bytes())?;
    // Never empty: the experiments' group closes every file.
    out.write_all(b"groups:\n")?;
    let mut skipped = Vec::new();
    for (_, slo) in order {
        match group_for(slo, dashboard_url, Mode::default()) {
            Ok(group) => serde_yaml::to_writer(&mut out, &[group])?,
            Err(why) => skipped.push(why),
        }
    }
    serde_yaml::to_writer(&mut out, &[experiment_group(dashboard_url)])?;
    out.flush()?;
    Ok(skipped)
}

/// Writing a rule file failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleFileError {
    #[error("writing the rule file: {0}")]
    Io(#[from] std::io::Error),
    #[error("rendering the rule file: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_file_is_the_rendered_file() {
        let a = slo(CHECKOUT);
        let mut b = slo(CHECKOUT);
        b.metadata.name = Some("another".into());
        b.metadata.namespace = Some("a-b".into());
        let mut bad = slo(CHECKOUT);
        bad.metadata.name = Some("bad".into());
        bad.spec.window = "soon".into();
        for set in [vec![], vec![&a], vec![&a, &b, &bad], vec![&bad]] {
            let owned: Vec<ServiceLevelObjective> = set.iter().map(|s| (*s).clone()).collect();
            let (file, skipped) = operator_rule_file(&owned, "http://x", Mode::default());
            let mut out = Vec::new();
            let streamed_skipped = write_rule_file(&mut out, &set, "http://x").expect("written");
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                to_yaml(&file).expect("rendered")
            );
            assert_eq!(streamed_skipped, skipped);
        }
    }

    fn slo(yaml: &str) -> ServiceLevelObjective {
        serde_yaml::from_str(yaml).expect("valid SLO")
    }

    const CHECKOUT: &str = r#"
apiVersion: headroom.dev/v1alpha1
kind: ServiceLevelObjective
metadata: { name: checkout-availability, namespace: shop }
spec:
  service: checkout
  objective: 99.9
  window: 30d
  indicator:
    ratio:
      errors: sum(rate(http_requests_total{job="checkout",code=~"5.."}[$window]))
      total: sum(rate(http_requests_total{job="checkout"}[$window]))
  alerting:
    labels: { team: payments }
"#;

    #[test]
    fn default_tiers_give_workbook_alerts_with_runbook() {
        let (file, skipped) = rule_file(&[slo(CHECKOUT)], "http://headroom.example:9464/");
        assert!(skipped.is_empty(), "{skipped:?}");
        let rules = &file.groups[0].rules;
        let records: Vec<&str> = rules.iter().filter_map(|r| r.record.as_deref()).collect();
        let ratios: Vec<&str> = records
            .iter()
            .copied()
            .filter(|r| r.starts_with("headroom:slo_error_ratio:"))
            .collect();
        assert_eq!(
            ratios,
            vec![
                "headroom:slo_error_ratio:rate5m",
                "headroom:slo_error_ratio:rate30m",
                "headroom:slo_error_ratio:rate1h",
                "headroom:slo_error_ratio:rate2h",
                "headroom:slo_error_ratio:rate6h",
                "headroom:slo_error_ratio:rate1d",
                "headroom:slo_error_ratio:rate3d",
                "headroom:slo_error_ratio:rate30d",
            ]
        );
        assert!(records.contains(&"headroom:slo_requests:rate5m"));
        // Only the shortest window reads raw samples: no range but [5m].
        for r in rules.iter().filter(|r| r.record.is_some()) {
            for range in r.expr.split('[').skip(1) {
                assert!(
                    range.starts_with("5m]"),
                    "{}: {}",
                    r.record.as_deref().unwrap_or_default(),
                    r.expr
                );
            }
        }
        // Today's exact rules stay one ratio per window, from raw samples.
        let (exact, _) = rule_file_with(
            &[slo(CHECKOUT)],
            "http://headroom.example:9464/",
            Mode::Exact,
        );
        assert!(
            exact.groups[0]
                .rules
                .iter()
                .any(|r| r.expr.contains("[30d]")),
            "the exact rules read 30 days"
        );
        let alerts: Vec<&Rule> = rules.iter().filter(|r| r.alert.is_some()).collect();
        assert_eq!(alerts.len(), 4);
        // Page-fast: 14.4 × 0.001 on both 1h and 5m.
        assert!(alerts[0].expr.contains("headroom:slo_error_ratio:rate1h{namespace=\"shop\",slo=\"checkout-availability\"} > 0.0144"), "{}", alerts[0].expr);
        assert!(
            alerts[0]
                .expr
                .contains(" and headroom:slo_error_ratio:rate5m{"),
            "{}",
            alerts[0].expr
        );
        assert_eq!(
            alerts[0].labels.get("severity").map(String::as_str),
            Some("page")
        );
        assert_eq!(
            alerts[2].labels.get("severity").map(String::as_str),
            Some("ticket")
        );
        assert_eq!(
            alerts[0].labels.get("team").map(String::as_str),
            Some("payments")
        );
        assert_eq!(
            alerts[0].annotations.get("runbook_url").map(String::as_str),
            Some("http://headroom.example:9464/runbooks/slo/shop/checkout-availability")
        );
        // Every expression is PromQL.
        for r in rules {
            promql_parser::parser::parse(&r.expr).unwrap_or_else(|e| panic!("{}: {e}", r.expr));
        }
    }

    #[test]
    fn tier_fields_name_labels_and_precedence() {
        let text = CHECKOUT.replace(
            "labels: { team: payments }",
            r#"alertName: CheckoutBurn
    labels: { team: payments, severity: critical, slo: not-this }
    annotations: { summary: own summary, runbook_url: https://rb }
    tiers:
      - { name: fast, severity: page, budgetPercent: 2, longWindow: 1h, shortWindow: 5m, burnRate: 14, for: 2m, labels: { severity: pager } }
      - { name: slow, severity: ticket, budgetPercent: 10, longWindow: 1d, shortWindow: 2h, annotations: { summary: slow one } }
      - { name: off, severity: ticket, budgetPercent: 10, longWindow: 3d, shortWindow: 6h, disabled: true }"#,
        );
        let (file, skipped) = rule_file(&[slo(&text)], "http://x");
        assert!(skipped.is_empty(), "{skipped:?}");
        let alerts: Vec<&Rule> = file.groups[0]
            .rules
            .iter()
            .filter(|r| r.alert.is_some())
            .collect();
        // (alert, for, severity, slo, summary, runbook)
        let got: Vec<_> = alerts
            .iter()
            .map(|a| {
                (
                    a.alert.as_deref(),
                    a.for_duration.as_deref(),
                    a.labels.get("severity").map(String::as_str),
                    a.labels.get("slo").map(String::as_str),
                    a.annotations.get("summary").map(String::as_str),
                    a.annotations.get("runbook_url").map(String::as_str),
                )
            })
            .collect();
        let (name, slo_label) = (Some("CheckoutBurn"), Some("checkout-availability"));
        assert_eq!(
            got,
            vec![
                (
                    name,
                    Some("2m"),
                    Some("pager"),
                    slo_label,
                    Some("own summary"),
                    Some("https://rb")
                ),
                (
                    name,
                    None,
                    Some("critical"),
                    slo_label,
                    Some("slow one"),
                    Some("https://rb")
                ),
            ]
        );
        // burnRate is the threshold itself: 14 × 0.001.
        assert!(alerts[0].expr.contains("> 0.014 and"), "{}", alerts[0].expr);
    }

    #[test]
    fn spec_runbook_wins_and_bad_slos_are_reported_not_dropped_silently() {
        let own = CHECKOUT.replace(
            "labels: { team: payments }",
            "runbookUrl: https://wiki/runbooks/checkout",
        );
        let bad = CHECKOUT
            .replace("name: checkout-availability", "name: broken")
            .replace("[$window]))\n      total", "[$window])\n      total");
        let (file, skipped) = rule_file(&[slo(&own), slo(&bad)], "http://x");
        assert_eq!(file.groups.len(), 1);
        let alert = file.groups[0]
            .rules
            .iter()
            .find(|r| r.alert.is_some())
            .expect("alert");
        assert_eq!(
            alert.annotations.get("runbook_url").map(String::as_str),
            Some("https://wiki/runbooks/checkout")
        );
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].0 == "shop/broken" && skipped[0].1.contains("spec.indicator.ratio.errors"),
            "{skipped:?}"
        );
    }
}
