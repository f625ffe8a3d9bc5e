//! Every PromQL expression in the Grafana dashboards under `dashboards/`
//! must parse, and every metric it names must be one the operator exports
//! (`Metrics::render`), one Headroom's recording rules record
//! (`rules::rule_file`), or a Prometheus built-in.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use headroom::metrics::{ControllerLabels, Metrics, ReasonLabels, RunLabels};
use headroom::resources::slo::ServiceLevelObjective;
use headroom::rules;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use regex::Regex;
use serde_json::Value;

/// Series Prometheus makes itself.
const BUILTINS: &[&str] = &["ALERTS", "ALERTS_FOR_STATE", "up"];

/// An SLO on a 30d window with the default (SRE Workbook) tiers.
const DEFAULT_TIERS: &str = r#"
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
"#;

/// An SLO on a 1h window with custom, minute-scale tiers.
const CUSTOM_TIERS: &str = r#"
apiVersion: headroom.dev/v1alpha1
kind: ServiceLevelObjective
metadata: { name: checkout-latency, namespace: shop }
spec:
  service: checkout
  objective: 99
  window: 1h
  indicator:
    ratio:
      errors: sum(rate(http_requests_total{job="checkout",code=~"5.."}[$window]))
      total: sum(rate(http_requests_total{job="checkout"}[$window]))
  alerting:
    tiers:
      - { name: page-fast, severity: page, budgetPercent: 2, longWindow: 5m, shortWindow: 1m }
      - { name: ticket-slow, severity: ticket, budgetPercent: 10, longWindow: 30m, shortWindow: 5m }
"#;

/// The metric names a dashboard may use.
struct Known {
    /// Exported by the operator, with `_total`, `_bucket`, `_sum`, `_count`.
    exported: BTreeSet<String>,
    /// Recorded by the rules of each representative SLO; the first is the
    /// 30d SLO with default tiers.
    recorded: Vec<(String, BTreeSet<String>)>,
}

impl Known {
    fn build() -> Self {
        let recorded = [
            ("default tiers, 30d", DEFAULT_TIERS),
            ("custom tiers, 1h", CUSTOM_TIERS),
        ]
        .into_iter()
        .map(|(label, yaml)| (label.to_owned(), recorded_names(yaml)))
        .collect();
        Self {
            exported: exported_names(&populated_metrics().render()),
            recorded,
        }
    }

    /// Names an exact metric name may take: exported, built in, or recorded
    /// for the default 30d tiers (windows of custom tiers vary per SLO, so a
    /// dashboard names them only through a regex that works for every SLO).
    fn accepts_exact(&self, name: &str) -> bool {
        self.exported.contains(name)
            || BUILTINS.contains(&name)
            || self.recorded.first().is_some_and(|(_, r)| r.contains(name))
    }

    /// A `__name__=~` regex must match a name in every SLO's universe, so the
    /// panel shows data whatever the SLO's tiers.
    fn regex_misses(&self, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let base = || {
            self.exported
                .iter()
                .map(String::as_str)
                .chain(BUILTINS.iter().copied())
        };
        self.recorded
            .iter()
            .filter(|(_, rec)| !base().chain(rec.iter().map(String::as_str)).any(&matches))
            .map(|(label, _)| label.clone())
            .collect()
    }
}

/// The operator's metrics with one series in every family: the exposition
/// leaves out families without series.
fn populated_metrics() -> Metrics {
    let m = Metrics::default();
    let controller = ControllerLabels {
        controller: "experiment".into(),
    };
    // The per-SLO gauges come from the SLOs' status in the watch cache.
    let (store, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
        serde_json::from_value::<headroom::resources::slo::ServiceLevelObjective>(
            serde_json::json!({
                "apiVersion": "headroom.dev/v1alpha1",
                "kind": "ServiceLevelObjective",
                "metadata": { "name": "checkout-availability", "namespace": "shop" },
                "spec": {
                    "service": "checkout", "objective": 99.9, "window": "30d",
                    "indicator": { "ratio": { "errors": "e[$window]", "total": "t[$window]" } }
                },
                "status": {
                    "budgetRemaining": 0.5,
                    "dataPresent": true,
                    "burnRates": [{ "window": "5m", "errorRatio": 0.001, "burnRate": 1.0 }]
                }
            }),
        )
        .expect("valid SLO"),
    ));
    m.slo_gauges.serve(store);
    // The per-experiment gauges come from the experiments' status.
    let (store, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
        serde_json::from_value::<headroom::resources::experiment::ChaosExperiment>(
            serde_json::json!({
                "apiVersion": "headroom.dev/v1alpha1",
                "kind": "ChaosExperiment",
                "metadata": { "name": "kill-one", "namespace": "shop" },
                "spec": {
                    "hypothesis": { "description": "h" },
                    "slos": ["checkout-availability"],
                    "action": { "podKill": { "selector": { "matchLabels": { "app": "web" } } } }
                },
                "status": { "phase": "Running", "lastVerdict": "Refuted" }
            }),
        )
        .expect("valid experiment"),
    ));
    m.experiment_gauges.serve(store);
    m.status_writes.get_or_create(&controller).inc();
    m.reconcile_errors.get_or_create(&controller).inc();
    m.runs
        .get_or_create(&RunLabels {
            phase: "Completed".into(),
            verdict: "Confirmed".into(),
        })
        .inc();
    m.gate_decisions
        .get_or_create(&ReasonLabels {
            reason: "Open".into(),
        })
        .inc();
    m
}

fn recorded_names(yaml: &str) -> BTreeSet<String> {
    let slo: ServiceLevelObjective = serde_yaml::from_str(yaml).expect("representative SLO parses");
    let (file, skipped) = rules::rule_file(&[slo], "http://127.0.0.1:9464");
    assert!(
        skipped.is_empty(),
        "representative SLO skipped: {skipped:?}"
    );
    let names: BTreeSet<String> = file
        .groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .filter_map(|r| r.record.clone())
        .collect();
    assert!(!names.is_empty(), "no recording rules for {yaml}");
    names
}

/// Series names in an OpenMetrics exposition, from the `# TYPE` lines (a
/// family without samples yet still has one) and from the sample lines.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                if s.is_empty() || !name.ends_with(s) {
                    names.insert(format!("{name}{s}"));
                } else {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Grafana variables replaced by something PromQL accepts: interval
/// variables by a duration, the rest by a plain string.
fn substitute(expr: &str) -> String {
    let durations =
        Regex::new(r"\$\{?__(?:rate_interval|interval|range)\}?").expect("duration variable regex");
    let braced = Regex::new(r"\$\{[^}]*\}").expect("braced variable regex");
    let bare = Regex::new(r"\$[A-Za-z_][A-Za-z0-9_]*").expect("bare variable regex");
    let s = durations.replace_all(expr, "5m");
    let s = braced.replace_all(&s, "x");
    bare.replace_all(&s, "x").into_owned()
}

/// Metric names an expression selects: selector names and `__name__`
/// matchers (equal or regex).
#[derive(Default)]
struct Names {
    exact: Vec<String>,
    regexes: Vec<Matcher>,
    nameless: Vec<String>,
}

impl ExprVisitor for Names {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        let vs = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let mut named = false;
        if let Some(name) = &vs.name {
            self.exact.push(name.clone());
            named = true;
        }
        let all = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten());
        for m in all.filter(|m| m.name == "__name__") {
            match m.op {
                MatchOp::Equal => {
                    self.exact.push(m.value.clone());
                    named = true;
                }
                MatchOp::Re(_) => {
                    self.regexes.push(m.clone());
                    named = true;
                }
                MatchOp::NotEqual | MatchOp::NotRe(_) => {}
            }
        }
        if !named {
            self.nameless.push(expr.to_string());
        }
        Ok(true)
    }
}

/// Check one expression (Grafana variables allowed); `Err` says why not.
fn check_expr(known: &Known, expr: &str) -> Result<(), String> {
    let promql = substitute(expr);
    let ast = parser::parse(&promql).map_err(|e| format!("does not parse ({promql}): {e}"))?;
    let mut names = Names::default();
    let Ok(_) = walk_expr(&mut names, &ast);
    let mut problems = Vec::new();
    for name in &names.exact {
        if !known.accepts_exact(name) {
            problems.push(format!(
                "unknown metric {name:?} (neither exported by the operator, recorded for the default 30d tiers, nor built in)"
            ));
        }
    }
    for m in &names.regexes {
        let missing = known.regex_misses(|n| {
            Matcher {
                op: m.op.clone(),
                name: m.name.clone(),
                value: m.value.clone(),
            }
            .is_match(n)
        });
        if !missing.is_empty() {
            problems.push(format!(
                "__name__=~{:?} matches no known metric for the SLO with {}",
                m.value,
                missing.join(", ")
            ));
        }
    }
    for sel in &names.nameless {
        problems.push(format!("selector {sel} names no metric"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Check a query variable's query: `label_values(metric, label)`,
/// `label_values(label)` or `query_result(expr)`.
fn check_variable_query(known: &Known, query: &str) -> Result<(), String> {
    let q = query.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return match split_last_top_level_comma(inner) {
            Some((metric, label)) => {
                if label.trim().is_empty() {
                    return Err("label_values without a label".into());
                }
                check_expr(known, metric)
            }
            // label_values(label): no metric to check.
            None => Ok(()),
        };
    }
    if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return check_expr(known, inner);
    }
    Err(format!("unsupported variable query {q:?}"))
}

fn split_last_top_level_comma(s: &str) -> Option<(&str, &str)> {
    let (mut depth, mut quoted, mut last) = (0i32, false, None);
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        match c {
            '"' if prev != '\\' => quoted = !quoted,
            '(' | '{' | '[' if !quoted => depth += 1,
            ')' | '}' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => last = Some(i),
            _ => {}
        }
        prev = c;
    }
    last.map(|i| (&s[..i], &s[i + 1..]))
}

/// One expression found in a dashboard, with where it was found.
struct Found {
    place: String,
    expr: String,
    variable: bool,
}

/// Every `expr` under panels (rows nest theirs) and annotations, and every
/// query variable's query.
fn collect(dashboard: &Value) -> Vec<Found> {
    let mut out = Vec::new();
    if let Some(panels) = dashboard.get("panels") {
        walk(panels, "panel ?", &mut out);
    }
    if let Some(list) = dashboard.pointer("/annotations/list") {
        for a in list.as_array().into_iter().flatten() {
            let name = a.get("name").and_then(Value::as_str).unwrap_or("?");
            walk(a, &format!("annotation {name:?}"), &mut out);
        }
    }
    for v in dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("type").and_then(Value::as_str) != Some("query") {
            continue;
        }
        let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
        let query = match v.get("query") {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(obj) => obj.get("query").and_then(Value::as_str),
            None => None,
        };
        out.push(Found {
            place: format!("variable ${name}"),
            expr: query.unwrap_or_default().to_owned(),
            variable: true,
        });
    }
    out
}

fn walk(v: &Value, place: &str, out: &mut Vec<Found>) {
    match v {
        Value::Object(map) => {
            let here = match map.get("title").and_then(Value::as_str) {
                Some(title) if map.contains_key("gridPos") => format!("panel {title:?}"),
                _ => place.to_owned(),
            };
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr", Value::String(expr)) => out.push(Found {
                        place: here.clone(),
                        expr: expr.clone(),
                        variable: false,
                    }),
                    _ => walk(child, &here, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, place, out)),
        _ => {}
    }
}

/// Panels (rows' nested panels included) without a description.
fn undescribed_panels(dashboard: &Value) -> Vec<String> {
    fn go(panels: &Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p.get("title").and_then(Value::as_str).unwrap_or("?");
            let is_row = p.get("type").and_then(Value::as_str) == Some("row");
            let described = p
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !is_row && !described {
                out.push(title.to_owned());
            }
            if let Some(nested) = p.get("panels") {
                go(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(panels) = dashboard.get("panels") {
        go(panels, &mut out);
    }
    out
}

fn dashboard_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

#[test]
fn every_dashboard_expression_parses_and_names_known_metrics() {
    let known = Known::build();
    let files = dashboard_files();
    assert!(
        files.len() >= 2,
        "expected the dashboards in dashboards/, found {files:?}"
    );
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in &files {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let file = file.unwrap_or_default();
        for found in collect(&load(path)) {
            checked += 1;
            let result = if found.variable {
                check_variable_query(&known, &found.expr)
            } else {
                check_expr(&known, &found.expr)
            };
            if let Err(why) = result {
                failures.push(format!("{file}: {}: `{}`: {why}", found.place, found.expr));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} dashboard expression(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 10, "only {checked} expressions checked");
    eprintln!("checked {checked} dashboard expressions");
}

#[test]
fn dashboards_have_the_variables_and_descriptions() {
    for path in dashboard_files() {
        let d = load(&path);
        let vars: Vec<(&str, &str)> = d
            .pointer("/templating/list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v.get("name")?.as_str()?, v.get("type")?.as_str()?)))
            .collect();
        for (name, kind) in [
            ("datasource", "datasource"),
            ("namespace", "query"),
            ("slo", "query"),
        ] {
            assert!(
                vars.contains(&(name, kind)),
                "{}: no {kind} variable ${name}",
                path.display()
            );
        }
        assert!(
            vars.iter().any(|(n, _)| *n == "dashboard_url"),
            "{}: no $dashboard_url variable",
            path.display()
        );
        let undescribed = undescribed_panels(&d);
        assert!(
            undescribed.is_empty(),
            "{}: panels without a description: {undescribed:?}",
            path.display()
        );
        assert!(
            d.get("schemaVersion")
                .and_then(Value::as_u64)
                .is_some_and(|v| v >= 36),
            "{}: schemaVersion missing or old",
            path.display()
        );
    }
}

#[test]
fn the_checker_catches_wrong_expressions() {
    let known = Known::build();
    // The representative SLOs record what the rules module says they do.
    let default_rec = &known.recorded[0].1;
    assert!(default_rec.contains("headroom:slo_error_ratio:rate30d"));
    assert!(default_rec.contains("headroom:slo_requests:rate5m"));
    assert!(
        known.recorded[1]
            .1
            .contains("headroom:slo_error_ratio:rate1m")
    );
    // Exported names carry their OpenMetrics suffixes.
    for name in [
        "headroom_slo_budget_remaining_ratio",
        "headroom_prometheus_errors_total",
        "headroom_abort_latency_seconds_bucket",
        "headroom_experiment_runs_active",
    ] {
        assert!(known.exported.contains(name), "{name} not exported");
    }

    let good = [
        "sum(rate(headroom_prometheus_errors_total[$__rate_interval]))",
        r#"headroom:slo_error_ratio:rate1h{namespace=~"$namespace", slo=~"${slo}"}"#,
        r#"{__name__=~"headroom:slo_error_ratio:rate.+"}"#,
        r#"count(ALERTS{alertname="HeadroomErrorBudgetBurn"}) or vector(0)"#,
    ];
    for e in good {
        assert_eq!(check_expr(&known, e), Ok(()), "{e}");
    }
    let bad = [
        // Does not parse.
        (
            "sum(rate(headroom_prometheus_errors_total[5m])",
            "does not parse",
        ),
        // Counter without its _total suffix.
        ("rate(headroom_prometheus_errors[5m])", "unknown metric"),
        // Histogram without _bucket.
        (
            "histogram_quantile(0.9, rate(headroom_abort_latency_seconds[5m]))",
            "unknown metric",
        ),
        // A window only custom tiers record.
        ("headroom:slo_error_ratio:rate1m", "unknown metric"),
        // A made-up window.
        ("headroom:slo_error_ratio:rate7h", "unknown metric"),
        (r#"{__name__="headroom_nope"}"#, "unknown metric"),
        // A regex only the default tiers satisfy.
        (
            r#"{__name__=~"headroom:slo_error_ratio:rate3d"}"#,
            "custom tiers",
        ),
        (r#"{namespace="shop"}"#, "names no metric"),
    ];
    for (e, why) in bad {
        match check_expr(&known, e) {
            Err(msg) => assert!(msg.contains(why), "{e}: {msg}"),
            Ok(()) => panic!("{e} was accepted"),
        }
    }
    assert_eq!(
        check_variable_query(
            &known,
            r#"label_values(headroom_slo_budget_remaining_ratio{namespace=~"$namespace"}, slo)"#
        ),
        Ok(())
    );
    assert!(check_variable_query(&known, "label_values(headroom_budget, slo)").is_err());

    // And the file walk finds expressions in nested rows, annotations and
    // variables, reporting the panel title.
    let d: Value = serde_json::json!({
        "panels": [{"type": "row", "title": "r", "gridPos": {}, "panels": [
            {"title": "inner", "gridPos": {}, "targets": [{"expr": "headroom_wrong"}]}
        ]}],
        "annotations": {"list": [{"name": "a", "expr": "up"}]},
        "templating": {"list": [{"type": "query", "name": "v",
            "query": {"query": "label_values(up, job)"}}]}
    });
    let found = collect(&d);
    let places: Vec<&str> = found.iter().map(|f| f.place.as_str()).collect();
    assert_eq!(
        places,
        vec!["panel \"inner\"", "annotation \"a\"", "variable $v"]
    );
    assert!(check_expr(&known, &found[0].expr).is_err());
}
