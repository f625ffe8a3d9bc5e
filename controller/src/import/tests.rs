//! Table tests of the translation: what each construct becomes, and which
//! field each refusal names.

use super::*;
use crate::resources::slo::Severity;

fn sloth(text: &str) -> Result<Imported, DocumentError> {
    import(Format::Sloth, text, &Options::default())
}

fn field_of(r: Result<Imported, DocumentError>) -> String {
    match r {
        Ok(i) => panic!("expected a refusal, got {} SLO(s)", i.slos.len()),
        Err(e) => e.error.field,
    }
}

const SLOTH: &str = r#"
version: prometheus/v1
service: myservice
labels: { owner: myteam, tier: "2" }
slos:
  - name: requests-availability
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_requests_total{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_requests_total{job="myservice"}[{{ .window }}]))
    alerting:
      name: MyServiceHighErrorRate
      labels: { category: availability }
      annotations: { summary: "High error rate", runbook_url: "https://rb/x" }
      page_alert:
        labels: { severity: pageteam, routing_key: myteam }
      ticket_alert:
        disable: true
"#;

#[test]
fn sloth_keeps_routing_names_and_disabled_alerts() {
    let out = sloth(SLOTH).expect("translates");
    let s = &out.slos[0];
    assert_eq!(
        s.metadata.name.as_deref(),
        Some("myservice-requests-availability")
    );
    let r = s.spec.indicator.ratio.as_ref().expect("ratio");
    assert_eq!(
        r.total,
        r#"sum(rate(http_requests_total{job="myservice"}[$window]))"#
    );
    let a = s.spec.alerting.as_ref().expect("alerting");
    assert_eq!(a.alert_name.as_deref(), Some("MyServiceHighErrorRate"));
    assert_eq!(a.runbook_url.as_deref(), Some("https://rb/x"));
    assert_eq!(a.labels.get("owner").map(String::as_str), Some("myteam"));
    assert_eq!(
        a.labels.get("category").map(String::as_str),
        Some("availability")
    );
    assert_eq!(
        a.annotations.get("summary").map(String::as_str),
        Some("High error rate")
    );
    let tiers = a.tiers.as_ref().expect("tiers");
    let summary: Vec<(&str, Severity, bool, &str, &str)> = tiers
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.severity,
                t.disabled,
                t.long_window.as_str(),
                t.labels.get("severity").map_or("", String::as_str),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("page-quick", Severity::Page, false, "1h", "pageteam"),
            ("page-slow", Severity::Page, false, "6h", "pageteam"),
            ("ticket-quick", Severity::Ticket, true, "1d", ""),
            ("ticket-slow", Severity::Ticket, true, "3d", ""),
        ]
    );
    // The rules: the SLO's `tier: "2"` label wins over Headroom's tier name,
    // so the two page tiers end with the same labels and become one alert
    // joined with `or`, as Sloth's page alert is.
    let (file, skipped) = crate::rules::rule_file(&out.slos, "http://x");
    assert!(skipped.is_empty(), "{skipped:?}");
    let alerts: Vec<_> = file.groups[0]
        .rules
        .iter()
        .filter(|r| r.alert.is_some())
        .collect();
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].expr.contains(") or ("), "{}", alerts[0].expr);
    for a in alerts {
        assert_eq!(a.alert.as_deref(), Some("MyServiceHighErrorRate"));
        assert_eq!(
            a.labels.get("severity").map(String::as_str),
            Some("pageteam")
        );
        assert_eq!(
            a.labels.get("sloth_severity").map(String::as_str),
            Some("page")
        );
        assert_eq!(a.labels.get("tier").map(String::as_str), Some("2"));
        assert_eq!(
            a.annotations.get("runbook_url").map(String::as_str),
            Some("https://rb/x")
        );
    }
}

#[test]
fn sloth_kubernetes_form_and_period() {
    let text = r#"
apiVersion: sloth.slok.dev/v1
kind: PrometheusServiceLevel
metadata: { name: x, namespace: monitoring }
spec:
  service: svc
  slos:
    - name: avail
      objective: 99
      sli:
        events:
          errorQuery: sum(rate(e[{{.window}}]))
          totalQuery: sum(rate(t[{{.window}}]))
      alerting:
        pageAlert: { disable: true }
        ticketAlert: { disable: true }
"#;
    let out = import(
        Format::Sloth,
        text,
        &Options {
            period: Some("28d".into()),
            windows: Vec::new(),
        },
    )
    .expect("translates");
    let s = &out.slos[0];
    assert_eq!(s.metadata.namespace.as_deref(), Some("monitoring"));
    assert_eq!(s.spec.window, "28d");
    assert!(
        s.spec
            .alerting
            .as_ref()
            .and_then(|a| a.tiers.as_ref())
            .expect("tiers")
            .iter()
            .all(|t| t.disabled)
    );
    let (file, _) = crate::rules::rule_file(&out.slos, "http://x");
    assert!(
        file.groups[0].rules.iter().all(|r| r.alert.is_none()),
        "no alert when Sloth had none"
    );
    // A period without a catalogue is refused, as Sloth refuses it.
    let e = import(
        Format::Sloth,
        text,
        &Options {
            period: Some("7d".into()),
            windows: Vec::new(),
        },
    )
    .expect_err("no 7d catalogue");
    assert_eq!(e.error.field, "--period");
}

#[test]
fn sloth_custom_window_catalogue() {
    let windows: Value = serde_yaml::from_str(
        r#"
apiVersion: sloth.slok.dev/v1
kind: AlertWindows
spec:
  sloPeriod: 7d
  page:
    quick: { errorBudgetPercent: 8, shortWindow: 5m, longWindow: 1h }
    slow: { errorBudgetPercent: 12.5, shortWindow: 30m, longWindow: 6h }
  ticket:
    quick: { errorBudgetPercent: 20, shortWindow: 2h, longWindow: 1d }
    slow: { errorBudgetPercent: 42, shortWindow: 6h, longWindow: 3d }
"#,
    )
    .expect("yaml");
    let options = Options {
        period: Some("7d".into()),
        windows: vec![AlertWindows::parse(&windows).expect("catalogue")],
    };
    let out = import(Format::Sloth, SLOTH, &options).expect("translates");
    let plan = crate::budget::tiers_for(
        std::time::Duration::from_secs(7 * 86_400),
        out.slos[0]
            .spec
            .alerting
            .as_ref()
            .and_then(|a| a.tiers.as_deref()),
    )
    .expect("tiers");
    // Sloth's speed: 8% of 168h within 1h = 13.44.
    assert!(
        (plan[0].threshold - 13.44).abs() < 1e-9,
        "{}",
        plan[0].threshold
    );
}

#[test]
fn refusals_name_the_source_field() {
    let ev = "sli: {events: {error_query: 'sum(rate(e[{{.window}}]))', total_query: 'sum(rate(t[{{.window}}]))'}}";
    let cases: Vec<(Format, String, &str)> = vec![
        (
            Format::Sloth,
            "version: prometheus/v1\nservice: s\nslos: [{name: a, objective: 99, sli: {raw: {error_ratio_query: x}}}]".into(),
            "slos[0].sli.raw.error_ratio_query",
        ),
        (
            Format::Sloth,
            "apiVersion: sloth.slok.dev/v1\nkind: PrometheusServiceLevel\nmetadata: {name: a}\nspec: {service: s, slos: [{name: a, objective: 99, sli: {raw: {errorRatioQuery: x}}}]}".into(),
            "spec.slos[0].sli.raw.errorRatioQuery",
        ),
        (
            Format::Sloth,
            "version: prometheus/v2\nservice: s\nslos: []".into(),
            "version",
        ),
        (Format::Sloth, "service: s\nslos: []".into(), "version"),
        (
            Format::Sloth,
            format!("version: prometheus/v1\nservice: s\nslos: [{{name: a, objective: 120, {ev}}}]"),
            "slos[0].objective",
        ),
        (
            Format::Sloth,
            format!("version: prometheus/v1\nservice: s\nslos: [{{name: a, objective: 99, {ev}}}]"),
            "slos[0].alerting.name",
        ),
        (
            Format::Sloth,
            "version: prometheus/v1\nservice: s\nslos: [{name: a, objective: 99, alerting: {name: A}, sli: {events: {error_query: 'sum(rate(e[5m]))', total_query: 'sum(rate(t[{{.window}}]))'}}}]".into(),
            "slos[0].sli.events.error_query",
        ),
        (
            Format::Sloth,
            "version: prometheus/v1\nservice: s\nslos: [{name: a, objective: 99, alerting: {name: A}, sli: {events: {error_query: 'sum(rate(e[{{.window}}])', total_query: 'sum(rate(t[{{.window}}]))'}}}]".into(),
            "slos[0].sli.events.error_query",
        ),
        (
            Format::Sloth,
            format!("version: prometheus/v1\nservice: S\nslos: [{{name: a, objective: 99, alerting: {{name: A}}, {ev}}}]"),
            "slos[0].name (with the service name)",
        ),
        (
            Format::Sloth,
            format!("version: prometheus/v1\nservice: s\nslo_plugins: {{chain: [{{id: x}}]}}\nslos: [{{name: a, objective: 99, {ev}}}]"),
            "slo_plugins",
        ),
        (
            Format::Pyrra,
            "apiVersion: pyrra.dev/v1alpha1\nkind: ServiceLevelObjective\nmetadata: {name: a}\nspec: {target: '99', window: 2w, indicator: {latencyNative: {latency: 1s, total: {metric: x}}}}".into(),
            "spec.indicator.latencyNative",
        ),
        (
            Format::Pyrra,
            "apiVersion: pyrra.dev/v1alpha1\nkind: ServiceLevelObjective\nmetadata: {name: a}\nspec: {target: '99', window: 2w, indicator: {ratio: {errors: {metric: a}, total: {metric: b}, grouping: [handler]}}}".into(),
            "spec.indicator.ratio.grouping",
        ),
        (
            Format::Pyrra,
            "apiVersion: pyrra.dev/v1alpha1\nkind: ServiceLevelObjective\nmetadata: {name: a}\nspec: {target: '99', window: 2w, indicator: {ratio: {errors: {metric: 'sum(a)'}, total: {metric: b}}}}".into(),
            "spec.indicator.ratio.errors.metric",
        ),
        (
            Format::OpenSlo,
            "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec: {service: s, budgetingMethod: Occurrences, timeWindow: [{duration: 28d, isRolling: true}], objectives: [{target: 0.99}], indicatorRef: x}".into(),
            "spec.indicatorRef",
        ),
        (
            Format::OpenSlo,
            "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec: {service: s, budgetingMethod: Timeslices, timeWindow: [{duration: 28d, isRolling: true}], objectives: [{target: 0.99}], indicatorRef: x}".into(),
            "spec.budgetingMethod",
        ),
        (
            Format::OpenSlo,
            "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec: {service: s, budgetingMethod: Occurrences, timeWindow: [{duration: 28d, isRolling: true}], objectives: [{target: 0.99}], indicator: {spec: {ratioMetric: {counter: true, good: {metricSource: {type: Prometheus, spec: {query: 'sum(g)'}}}, total: {metricSource: {type: Prometheus, spec: {query: t}}}}}}}".into(),
            "spec.indicator.spec.ratioMetric.good.metricSource.spec.query",
        ),
        (
            Format::OpenSlo,
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}".into(),
            "apiVersion",
        ),
    ];
    for (format, text, field) in cases {
        let got = field_of(import(format, &text, &Options::default()));
        assert_eq!(got, field, "{text}");
    }
}

const PYRRA: &str = r#"
apiVersion: pyrra.dev/v1alpha1
kind: ServiceLevelObjective
metadata:
  name: api-errors
  namespace: shop
  labels: { pyrra.dev/team: payments, role: alert-rules }
spec:
  target: "99.5"
  window: 4w
  indicator:
    ratio:
      errors: {metric: 'http_requests_total{job="api",code=~"5.."}'}
      total: {metric: 'http_requests_total{job="api"}'}
  alerting:
    name: ApiBurn
"#;

#[test]
fn pyrra_keeps_windows_factors_for_and_labels() {
    let out = import(Format::Pyrra, PYRRA, &Options::default()).expect("translates");
    let s = &out.slos[0];
    assert_eq!((s.spec.objective, s.spec.window.as_str()), (99.5, "4w"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
    let a = s.spec.alerting.as_ref().expect("alerting");
    assert_eq!(a.alert_name.as_deref(), Some("ApiBurn"));
    assert_eq!(a.labels.get("team").map(String::as_str), Some("payments"));
    assert_eq!(a.labels.get("job").map(String::as_str), Some("api"));
    assert!(
        !a.labels.contains_key("role"),
        "only pyrra.dev/ labels propagate"
    );
    let tiers = a.tiers.as_ref().expect("tiers");
    // (long, short, burnRate, for, severity label)
    type Row<'a> = (&'a str, &'a str, Option<f64>, Option<&'a str>, &'a str);
    let got: Vec<Row> = tiers
        .iter()
        .map(|t| {
            (
                t.long_window.as_str(),
                t.short_window.as_str(),
                t.burn_rate,
                t.for_duration.as_deref(),
                t.labels.get("severity").map_or("", String::as_str),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("1h", "5m", Some(14.0), Some("2m"), "critical"),
            ("6h", "30m", Some(7.0), Some("15m"), "critical"),
            ("1d", "2h", Some(2.0), Some("1h"), "warning"),
            ("4d", "6h", Some(1.0), Some("3h"), "warning"),
        ]
    );
    // Pyrra's absent alert on the total metric, with its `for:` (28d at
    // 99.5%: 252s + 2m, to the minute).
    let absent: Vec<(&str, &str, Option<&str>)> = a
        .absent
        .iter()
        .map(|x| {
            (
                x.alert_name.as_str(),
                x.selector.as_str(),
                x.for_duration.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        absent,
        vec![(
            "SLOMetricAbsent",
            r#"http_requests_total{job="api"}"#,
            Some("6m")
        )]
    );
    assert!(out.notes.is_empty());
    let (file, skipped) = crate::rules::rule_file(&out.slos, "http://x");
    assert!(skipped.is_empty(), "{skipped:?}");
    let first = file.groups[0]
        .rules
        .iter()
        .find(|r| r.alert.is_some())
        .expect("alert");
    assert_eq!(first.for_duration.as_deref(), Some("2m"));
    assert!(first.expr.contains("> 0.07"), "14 × 0.005: {}", first.expr);
}

#[test]
fn pyrra_disabled_and_burnrates_false_stay_quiet() {
    // Only the burn-rate alerts: Pyrra's absent alert has its own switch.
    for (flag, alerts) in [
        ("disabled: true", vec!["SLOMetricAbsent"]),
        ("burnrates: false", vec!["SLOMetricAbsent"]),
        ("{burnrates: false, absent: false}", vec![]),
    ] {
        let text = if flag.starts_with('{') {
            PYRRA.replace("alerting:\n    name: ApiBurn", &format!("alerting: {flag}"))
        } else {
            PYRRA.replace("name: ApiBurn", flag)
        };
        let out = import(Format::Pyrra, &text, &Options::default()).expect("translates");
        let (file, _) = crate::rules::rule_file(&out.slos, "http://x");
        let got: Vec<&str> = file.groups[0]
            .rules
            .iter()
            .filter_map(|r| r.alert.as_deref())
            .collect();
        assert_eq!(got, alerts, "{flag}");
    }
}

#[test]
fn openslo_forms() {
    // A list of documents with a Service beside an SLO that names its SLI,
    // targetPercent, and queries that already carry the window.
    let text = r#"
- apiVersion: openslo/v1
  kind: Service
  metadata: {name: web}
  spec: {description: the web}
- apiVersion: openslo/v1
  kind: SLI
  metadata: {name: web-good}
  spec:
    ratioMetric:
      counter: true
      good: {metricSource: {type: Prometheus, spec: {query: 'http_requests_total{code!~"5.."}'}}}
      total: {metricSource: {type: Prometheus, spec: {query: http_requests_total}}}
- apiVersion: openslo/v1
  kind: SLO
  metadata: {name: web-availability}
  spec:
    service: web
    indicatorRef: web-good
    budgetingMethod: Occurrences
    timeWindow: [{duration: 28d, isRolling: true}]
    objectives: [{targetPercent: 99.9}]
"#;
    let out = import(Format::OpenSlo, text, &Options::default()).expect("translates");
    assert_eq!(out.slos.len(), 1);
    let s = &out.slos[0];
    assert!((s.spec.objective - 99.9).abs() < 1e-9);
    let r = s.spec.indicator.ratio.as_ref().expect("ratio");
    assert_eq!(
        r.errors,
        r#"sum(rate(http_requests_total[$window])) - sum(rate(http_requests_total{code!~"5.."}[$window]))"#
    );
    let alpha = r#"
apiVersion: openslo/v1alpha
kind: SLO
metadata: {name: my-slo}
spec:
  service: my-service
  budgetingMethod: Occurrences
  objectives:
    - ratioMetrics:
        good: {source: prometheus, queryType: promql, query: 'sum(rate(g[{{.window}}]))'}
        total: {source: prometheus, queryType: promql, query: 'sum(rate(t[{{.window}}]))'}
      target: 0.999
  timeWindows: [{count: 30, unit: Day}]
"#;
    let out = import(Format::OpenSlo, alpha, &Options::default()).expect("translates");
    let s = &out.slos[0];
    assert_eq!((s.spec.objective, s.spec.window.as_str()), (99.9, "30d"));
    assert_eq!(
        s.spec.indicator.ratio.as_ref().expect("ratio").errors,
        "(sum(rate(t[$window]))) - (sum(rate(g[$window])))"
    );
    let (file, _) = crate::rules::rule_file(&out.slos, "http://x");
    assert!(
        file.groups[0].rules.iter().all(|r| r.alert.is_none()),
        "no alert policy, no alert"
    );
}

#[test]
fn window_templates() {
    for (text, want) in [
        ("x[{{.window}}]", "x[$window]"),
        ("x[{{ .window }}]", "x[$window]"),
        ("x[{{.other}}]", "x[{{.other}}]"),
        ("x[{{.window}", "x[{{.window}"),
    ] {
        assert_eq!(window_template(text), want);
    }
}

#[test]
fn pyrra_indicators_translate_as_pyrra_computes_them() {
    let doc = |indicator: &str| {
        format!(
            "apiVersion: pyrra.dev/v1alpha1\nkind: ServiceLevelObjective\nmetadata: {{name: a, namespace: n}}\nspec: {{target: '99', window: 2w, indicator: {indicator}, alerting: {{severities: {{fastBurn: pager}}}}}}"
        )
    };
    // (indicator, errors, total)
    let table = [
        (
            "{latency: {success: {metric: 'h_bucket{le=\"0.5\"}'}, total: {metric: h_count}}}",
            r#"sum(rate(h_count[$window])) - sum(rate(h_bucket{le="0.5"}[$window]))"#,
            "sum(rate(h_count[$window]))",
        ),
        (
            "{bool_gauge: {metric: 'probe_success{job=\"x\"}'}}",
            r#"sum(count_over_time(probe_success{job="x"}[$window])) - sum(sum_over_time(probe_success{job="x"}[$window]))"#,
            r#"sum(count_over_time(probe_success{job="x"}[$window]))"#,
        ),
    ];
    for (indicator, errors, total) in table {
        let out = import(Format::Pyrra, &doc(indicator), &Options::default()).expect(indicator);
        let s = &out.slos[0];
        let r = s.spec.indicator.ratio.as_ref().expect("ratio");
        assert_eq!((r.errors.as_str(), r.total.as_str()), (errors, total));
        let a = s.spec.alerting.as_ref().expect("alerting");
        assert_eq!(a.alert_name.as_deref(), Some("ErrorBudgetBurn"));
        let first = &a.tiers.as_ref().expect("tiers")[0];
        assert_eq!(
            first.labels.get("severity").map(String::as_str),
            Some("pager")
        );
    }
}

#[test]
fn options_are_checked_and_named() {
    let pyrra_period = import(
        Format::Pyrra,
        PYRRA,
        &Options {
            period: Some("28d".into()),
            windows: Vec::new(),
        },
    )
    .expect_err("Pyrra states its own window");
    assert_eq!(pyrra_period.error.field, "--period");
    assert!(
        pyrra_period
            .to_string()
            .starts_with("cannot translate --period"),
        "{pyrra_period}"
    );
    let bad = import(
        Format::Sloth,
        SLOTH,
        &Options {
            period: Some("soon".into()),
            windows: Vec::new(),
        },
    )
    .expect_err("not a duration");
    assert_eq!(bad.error.field, "--period");
}

#[test]
fn sloth_severity_annotations_go_to_their_tiers() {
    let text = SLOTH.replace(
        "labels: { severity: pageteam, routing_key: myteam }",
        "labels: { severity: pageteam }\n        annotations: { title: paged }",
    );
    let out = sloth(&text).expect("translates");
    let tiers = out.slos[0]
        .spec
        .alerting
        .as_ref()
        .and_then(|a| a.tiers.as_ref())
        .expect("tiers");
    assert_eq!(
        tiers[0].annotations.get("title").map(String::as_str),
        Some("paged")
    );
    assert!(tiers[2].annotations.is_empty());
}
