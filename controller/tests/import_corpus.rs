//! The import corpus (`tests/import-corpus/`): the example files of Sloth,
//! Pyrra and OpenSLO. Every file either imports (into a stated number of
//! SLOs) or is refused naming a stated source field: an explicit table, so
//! a change in what is accepted shows up here. For the files that import
//! and have the source tool's own rules beside them, `promtool test rules`
//! feeds the same synthetic series to the source's rules and to Headroom's
//! (what `headroom rules` prints for the imported SLOs) and checks that the
//! same alerts fire and resolve at the same times, within one evaluation
//! interval; for OpenSLO files, whose source rules (Sloth's) hold no alerts,
//! that the recorded error ratios are the same.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use headroom::import::{Format, Options, import};
use headroom::resources::slo::ServiceLevelObjective;

/// What a corpus file must do.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Imports into this many SLOs.
    Imports(usize),
    /// Is refused, naming this source field.
    Refused(&'static str),
}

/// How a series moves with the scenario's error ratio r.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// Counts good events: (1 − r) of the traffic.
    Good,
    /// Counts bad events: r of the traffic.
    Bad,
    /// Counts every event.
    Total,
}

/// What the source's rules are compared on.
#[derive(Clone, Copy, Debug)]
enum Compare {
    /// Sloth's alerts: one per SLO and severity (`sloth_severity`).
    SlothAlerts,
    /// Pyrra's alerts: one per tier (`long`).
    PyrraAlerts,
    /// Sloth's recorded error ratios of OpenSLO files (Sloth emits no
    /// alerts for them).
    SlothRatios,
}

struct Reference {
    /// The source tool's rules, relative to the corpus.
    rules: &'static str,
    compare: Compare,
    /// Series that satisfy the source's selectors, with their role.
    series: &'static [(&'static str, Role)],
    /// Whether the source alerts at all (disabled alerts stay quiet).
    fires: bool,
}

struct Case {
    format: Format,
    file: &'static str,
    expect: Expect,
    reference: Option<Reference>,
}

const HTTP_MYSERVICE: &[(&str, Role)] = &[
    (
        r#"http_request_duration_seconds_count{job="myservice",code="500"}"#,
        Role::Bad,
    ),
    (
        r#"http_request_duration_seconds_count{job="myservice",code="200"}"#,
        Role::Good,
    ),
];

const APISERVER: &[(&str, Role)] = &[
    (r#"apiserver_request_total{code="500"}"#, Role::Bad),
    (r#"apiserver_request_total{code="200"}"#, Role::Good),
    (
        r#"apiserver_request_duration_seconds_count{verb="GET"}"#,
        Role::Total,
    ),
    (
        r#"apiserver_request_duration_seconds_bucket{le="0.4",verb="GET"}"#,
        Role::Good,
    ),
    (
        r#"apiserver_request_duration_seconds_bucket{le="5",verb="GET"}"#,
        Role::Good,
    ),
];

fn case(format: Format, file: &'static str, expect: Expect) -> Case {
    Case {
        format,
        file,
        expect,
        reference: None,
    }
}

fn compared(
    format: Format,
    file: &'static str,
    expect: Expect,
    rules: &'static str,
    compare: Compare,
    series: &'static [(&'static str, Role)],
) -> Case {
    Case {
        format,
        file,
        expect,
        reference: Some(Reference {
            rules,
            compare,
            series,
            fires: true,
        }),
    }
}

/// The expectation table: every file of the corpus, once.
fn cases() -> Vec<Case> {
    use Compare::*;
    use Expect::*;
    use Format::*;
    let mut no_alerts = compared(
        Sloth,
        "sloth/no-alerts.yml",
        Imports(1),
        "sloth/_gen/no-alerts.yml",
        SlothAlerts,
        &[
            (
                r#"http_request_duration_seconds_count{job="myapp",code="500"}"#,
                Role::Bad,
            ),
            (
                r#"http_request_duration_seconds_count{job="myapp",code="200"}"#,
                Role::Good,
            ),
        ],
    );
    if let Some(r) = no_alerts.reference.as_mut() {
        r.fires = false;
    }
    vec![
        // Sloth, prometheus/v1 and sloth.slok.dev/v1.
        compared(
            Sloth,
            "sloth/getting-started.yml",
            Imports(1),
            "sloth/_gen/getting-started.yml",
            SlothAlerts,
            HTTP_MYSERVICE,
        ),
        compared(
            Sloth,
            "sloth/k8s-getting-started.yml",
            Imports(1),
            "sloth/_gen/k8s-getting-started.yml",
            SlothAlerts,
            HTTP_MYSERVICE,
        ),
        compared(
            Sloth,
            "sloth/multifile.yml",
            Imports(2),
            "sloth/_gen/multifile.yml",
            SlothAlerts,
            HTTP_MYSERVICE,
        ),
        compared(
            Sloth,
            "sloth/k8s-multifile.yml",
            Imports(2),
            "sloth/_gen/k8s-multifile.yml",
            SlothAlerts,
            HTTP_MYSERVICE,
        ),
        compared(
            Sloth,
            "sloth/kubernetes-apiserver.yml",
            Imports(2),
            "sloth/_gen/kubernetes-apiserver.yml",
            SlothAlerts,
            APISERVER,
        ),
        no_alerts,
        // Counts gauges below a threshold: imports, but no synthetic
        // series here reproduces Ubiquiti's client gauges.
        case(Sloth, "sloth/home-wifi.yml", Imports(2)),
        case(Sloth, "sloth/k8s-home-wifi.yml", Imports(2)),
        case(
            Sloth,
            "sloth/raw-home-wifi.yml",
            Refused("slos[0].sli.raw.error_ratio_query"),
        ),
        case(
            Sloth,
            "sloth/plugin-getting-started.yml",
            Refused("slos[0].sli.plugin"),
        ),
        case(
            Sloth,
            "sloth/plugin-k8s-getting-started.yml",
            Refused("spec.slos[0].sli.plugin"),
        ),
        case(
            Sloth,
            "sloth/slo-plugin-getting-started.yml",
            Refused("slo_plugins"),
        ),
        case(
            Sloth,
            "sloth/slo-plugin-k8s-getting-started.yml",
            Refused("spec.sloPlugins"),
        ),
        case(
            Sloth,
            "sloth/contrib-slo-plugins.yml",
            Refused("slos[0].plugins"),
        ),
        case(
            Sloth,
            "sloth/contrib-denominator-corrected.yaml",
            Refused("spec.sloPlugins"),
        ),
        case(Sloth, "sloth/victoria-metrics.yml", Refused("slo_plugins")),
        case(Sloth, "sloth/windows/7d.yaml", Refused("kind")),
        case(Sloth, "sloth/windows/custom-30d.yaml", Refused("kind")),
        // Sloth's OpenSLO examples (openslo/v1alpha), read as OpenSLO.
        compared(
            OpenSlo,
            "sloth/openslo-getting-started.yml",
            Imports(1),
            "sloth/_gen/openslo-getting-started.yml",
            SlothRatios,
            HTTP_MYSERVICE,
        ),
        compared(
            OpenSlo,
            "sloth/openslo-kubernetes-apiserver.yml",
            Imports(3),
            "sloth/_gen/openslo-kubernetes-apiserver.yml",
            SlothRatios,
            APISERVER,
        ),
        // Pyrra.
        compared(
            Pyrra,
            "pyrra/nginx.yaml",
            Imports(2),
            "pyrra/_gen/nginx.yaml",
            PyrraAlerts,
            &[
                (
                    r#"nginx_ingress_controller_requests{namespace="lastfm",ingress="lastfm",service="lastfm",status="500"}"#,
                    Role::Bad,
                ),
                (
                    r#"nginx_ingress_controller_requests{namespace="lastfm",ingress="lastfm",service="lastfm",status="200"}"#,
                    Role::Good,
                ),
                (
                    r#"nginx_ingress_controller_request_duration_seconds_bucket{namespace="lastfm",ingress="lastfm",service="lastfm",status="500",le="1"}"#,
                    Role::Good,
                ),
                (
                    r#"nginx_ingress_controller_request_duration_seconds_count{namespace="lastfm",ingress="lastfm",service="lastfm",status="500"}"#,
                    Role::Total,
                ),
            ],
        ),
        compared(
            Pyrra,
            "pyrra/parca-grpc-queryrange-errors.yaml",
            Imports(1),
            "pyrra/_gen/parca-grpc-queryrange-errors.yaml",
            PyrraAlerts,
            &[
                (
                    r#"grpc_server_handled_total{grpc_service="parca.query.v1alpha1.QueryService",grpc_method="QueryRange",grpc_code="Internal"}"#,
                    Role::Bad,
                ),
                (
                    r#"grpc_server_handled_total{grpc_service="parca.query.v1alpha1.QueryService",grpc_method="QueryRange",grpc_code="OK"}"#,
                    Role::Good,
                ),
            ],
        ),
        compared(
            Pyrra,
            "pyrra/prometheus-operator.yaml",
            Imports(1),
            "pyrra/_gen/prometheus-operator.yaml",
            PyrraAlerts,
            &[
                (
                    r#"prometheus_operator_kubernetes_client_http_requests_total{status_code="500"}"#,
                    Role::Bad,
                ),
                (
                    r#"prometheus_operator_kubernetes_client_http_requests_total{status_code="200"}"#,
                    Role::Good,
                ),
            ],
        ),
        compared(
            Pyrra,
            "pyrra/pyrra-filesystem-errors.yaml",
            Imports(1),
            "pyrra/_gen/pyrra-filesystem-errors.yaml",
            PyrraAlerts,
            &[
                ("pyrra_filesystem_reconciles_errors_total", Role::Bad),
                ("pyrra_filesystem_reconciles_total", Role::Total),
            ],
        ),
        compared(
            Pyrra,
            "pyrra/pyrra-kubernetes-errors.yaml",
            Imports(1),
            "pyrra/_gen/pyrra-kubernetes-errors.yaml",
            PyrraAlerts,
            &[
                (
                    r#"controller_runtime_reconcile_total{controller="servicelevelobjective",result="error"}"#,
                    Role::Bad,
                ),
                (
                    r#"controller_runtime_reconcile_total{controller="servicelevelobjective",result="success"}"#,
                    Role::Good,
                ),
            ],
        ),
        compared(
            Pyrra,
            "pyrra/thanos-grpc.yaml",
            Imports(1),
            "pyrra/_gen/thanos-grpc.yaml",
            PyrraAlerts,
            &[
                (
                    r#"grpc_server_handled_total{grpc_service="thanos.Store",grpc_method="Series",namespace="monitoring",job="thanos-store",grpc_code="Unavailable"}"#,
                    Role::Bad,
                ),
                (
                    r#"grpc_server_handled_total{grpc_service="thanos.Store",grpc_method="Series",namespace="monitoring",job="thanos-store",grpc_code="OK"}"#,
                    Role::Good,
                ),
            ],
        ),
        compared(
            Pyrra,
            "pyrra/thanos-http.yaml",
            Imports(1),
            "pyrra/_gen/thanos-http.yaml",
            PyrraAlerts,
            &[
                (
                    r#"http_requests_total{job="thanos-query",handler="query",code="500"}"#,
                    Role::Bad,
                ),
                (
                    r#"http_requests_total{job="thanos-query",handler="query",code="200"}"#,
                    Role::Good,
                ),
            ],
        ),
        compared(
            Pyrra,
            "pyrra/caddy-response-latency.yaml",
            Imports(1),
            "pyrra/_gen/caddy-response-latency.yaml",
            PyrraAlerts,
            &[
                (
                    r#"caddy_http_response_duration_seconds_bucket{job="caddy",handler="subroute",code="200",le="0.05"}"#,
                    Role::Good,
                ),
                (
                    r#"caddy_http_response_duration_seconds_count{job="caddy",handler="subroute",code="200"}"#,
                    Role::Total,
                ),
            ],
        ),
        case(
            Pyrra,
            "pyrra/prometheus-http.yaml",
            Refused("spec.indicator.ratio.grouping"),
        ),
        case(
            Pyrra,
            "pyrra/prometheus-probe-success.yaml",
            Refused("spec.indicator.bool_gauge.grouping"),
        ),
        case(
            Pyrra,
            "pyrra/pyrra-connect-errors.yaml",
            Refused("spec.indicator.ratio.grouping"),
        ),
        case(
            Pyrra,
            "pyrra/pyrra-connect-latency.yaml",
            Refused("spec.indicator.latencyNative"),
        ),
        case(Pyrra, "pyrra/mimir/example-slo.yaml", Imports(1)),
        case(
            Pyrra,
            "pyrra/docker-compose/pyrra/prometheus-http.yaml",
            Imports(1),
        ),
        compared(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-apiserver-read-cluster-latency.yaml",
            Imports(1),
            "pyrra/_gen/kubernetes__manifests__slos__slo-apiserver-read-cluster-latency.yaml",
            PyrraAlerts,
            &[
                (
                    r#"apiserver_request_sli_duration_seconds_bucket{component="apiserver",scope="cluster",verb="LIST",le="5.0"}"#,
                    Role::Good,
                ),
                (
                    r#"apiserver_request_sli_duration_seconds_count{component="apiserver",scope="cluster",verb="LIST"}"#,
                    Role::Total,
                ),
            ],
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-apiserver-read-namespace-latency.yaml",
            Imports(1),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-apiserver-read-resource-latency.yaml",
            Imports(1),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-apiserver-read-response-errors.yaml",
            Imports(1),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-apiserver-write-response-errors.yaml",
            Imports(1),
        ),
        compared(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-coredns-response-errors.yaml",
            Imports(1),
            "pyrra/_gen/kubernetes__manifests__slos__slo-coredns-response-errors.yaml",
            PyrraAlerts,
            &[
                (
                    r#"coredns_dns_responses_total{job="kube-dns",rcode="SERVFAIL"}"#,
                    Role::Bad,
                ),
                (
                    r#"coredns_dns_responses_total{job="kube-dns",rcode="NOERROR"}"#,
                    Role::Good,
                ),
            ],
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-kubelet-request-errors.yaml",
            Imports(1),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-kubelet-runtime-errors.yaml",
            Imports(1),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-prometheus-notification-errors.yaml",
            Imports(1),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-prometheus-operator-http-errors.yaml",
            Imports(1),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-prometheus-operator-reconcile-errors.yaml",
            Refused("spec.indicator.ratio.grouping"),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-prometheus-query-errors.yaml",
            Refused("spec.indicator.ratio.grouping"),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-prometheus-rule-evaluation-failures.yaml",
            Imports(1),
        ),
        case(
            Pyrra,
            "pyrra/kubernetes/manifests/slos/slo-prometheus-sd-kubernetes-errors.yaml",
            Imports(1),
        ),
        // OpenSLO.
        case(
            OpenSlo,
            "openslo/budgeting-method/occurences-slo.yaml",
            Refused("spec.indicator.spec.thresholdMetric"),
        ),
        case(
            OpenSlo,
            "openslo/budgeting-method/ratio-timeslices.yaml",
            Refused("spec.budgetingMethod"),
        ),
        case(
            OpenSlo,
            "openslo/budgeting-method/timeslices-slo.yaml",
            Refused("spec.budgetingMethod"),
        ),
        case(
            OpenSlo,
            "openslo/treat-low-traffic-as-equally-important/timeslices-slo.yaml",
            Refused("spec.budgetingMethod"),
        ),
    ]
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/import-corpus")
}

/// Every upstream YAML file of the corpus (not the generated rules).
fn corpus_files() -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "_gen") {
                    walk(&p, root, out);
                }
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && let Ok(rel) = p.strip_prefix(root)
            {
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&corpus(), &corpus(), &mut out);
    out
}

fn run(c: &Case) -> Result<Vec<ServiceLevelObjective>, String> {
    let text = std::fs::read_to_string(corpus().join(c.file))
        .map_err(|e| format!("reading {}: {e}", c.file))?;
    import(c.format, &text, &Options::default())
        .map(|i| i.slos)
        .map_err(|e| format!("{}|{}", e.error.field, e))
}

#[test]
fn every_corpus_file_imports_or_is_refused_naming_its_field() {
    let table = cases();
    let listed: BTreeSet<String> = table.iter().map(|c| c.file.to_owned()).collect();
    assert_eq!(listed.len(), table.len(), "a file is listed twice");
    assert_eq!(
        listed,
        corpus_files(),
        "the table and tests/import-corpus differ"
    );
    let mut wrong = Vec::new();
    let (mut imported, mut refused) = (0, 0);
    for c in &table {
        let got = run(c);
        let ok = match (&got, c.expect) {
            (Ok(slos), Expect::Imports(n)) => slos.len() == n,
            (Err(e), Expect::Refused(field)) => e.split('|').next() == Some(field),
            _ => false,
        };
        match &got {
            Ok(_) => imported += 1,
            Err(_) => refused += 1,
        }
        if !ok {
            let got = match got {
                Ok(slos) => format!("imports {} SLO(s)", slos.len()),
                Err(e) => format!("refused: {}", e.split_once('|').map_or(e.as_str(), |x| x.1)),
            };
            wrong.push(format!("{}: expected {:?}, {got}", c.file, c.expect));
        }
    }
    println!("import corpus: {imported} imported, {refused} refused");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Sample interval of the input series: a few samples even in the 1m
/// windows Pyrra gives 7-day SLOs.
const SAMPLE_SECS: u64 = 30;
/// Evaluation interval of the rules, and the tolerance of the comparison.
const STEP_SECS: u64 = 60;
/// Events per sample interval.
const TRAFFIC: f64 = 600.0;

struct Scenario {
    name: &'static str,
    /// Burn rate (multiple of the first SLO's budget) from `start` to `end`
    /// minutes; no errors otherwise.
    burn: f64,
    start: u64,
    end: u64,
    /// Length of the test in minutes.
    length: u64,
    /// Whether every alert must have resolved by the end.
    clears: bool,
}

const SCENARIOS: [Scenario; 3] = [
    // 2% of a 30-day budget goes in an hour at 14.4x: 20x pages.
    Scenario {
        name: "fast-burn",
        burn: 20.0,
        start: 10,
        end: 70,
        length: 150,
        clears: false,
    },
    // Below the fast tiers, above the 6h/30m tier (6x, Pyrra's 7x) for
    // long enough to reach it.
    Scenario {
        name: "slow-burn",
        burn: 10.0,
        start: 10,
        end: 300,
        length: 300,
        clears: false,
    },
    // A short fast burn that stops: what fired resolves.
    Scenario {
        name: "clears",
        burn: 20.0,
        start: 10,
        end: 40,
        length: 240,
        clears: true,
    },
];

/// The counter values of one series through a scenario, one per step.
fn values(role: Role, s: &Scenario, budget: f64) -> String {
    let r_burn = (s.burn * budget).min(0.9);
    let steps = s.length * 60 / SAMPLE_SECS;
    let mut v: f64 = 0.0;
    let mut out = String::new();
    for i in 0..=steps {
        let minute = i * SAMPLE_SECS / 60;
        let r = if minute >= s.start && minute < s.end {
            r_burn
        } else {
            0.0
        };
        let _ = write!(out, "{} ", v.round());
        v += match role {
            Role::Good => TRAFFIC * (1.0 - r),
            Role::Bad => TRAFFIC * r,
            Role::Total => TRAFFIC,
        };
    }
    out.trim_end().to_owned()
}

/// The source's rules as a plain rule file of one group, in the file's
/// order (Sloth writes PrometheusRule objects for its Kubernetes form).
/// One group because promtool evaluates groups in a random order at each
/// step: Sloth's alert group would read its recording groups' values of the
/// step before at some steps and not at others, and the comparison would
/// measure promtool's order instead of the rules. In one group the recording
/// rules come first, as Sloth's groups are written.
fn plain_rules(text: &str) -> Result<String, String> {
    let mut rules = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: serde_yaml::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        let g = v
            .get("spec")
            .and_then(|s| s.get("groups"))
            .or_else(|| v.get("groups"))
            .and_then(|g| g.as_sequence())
            .ok_or("no groups")?;
        for group in g {
            if let Some(r) = group.get("rules").and_then(|r| r.as_sequence()) {
                rules.extend(r.iter().cloned());
            }
        }
    }
    let mut group = serde_yaml::Mapping::new();
    group.insert("name".into(), "source".into());
    group.insert("rules".into(), serde_yaml::Value::Sequence(rules));
    let mut map = serde_yaml::Mapping::new();
    map.insert(
        "groups".into(),
        serde_yaml::Value::Sequence(vec![serde_yaml::Value::Mapping(group)]),
    );
    serde_yaml::to_string(&map).map_err(|e| e.to_string())
}

/// Pairs of (source selector, Headroom selector) that must fire together,
/// and whether the pair is the fastest alert (the one a short burn that
/// stops must see resolve: slower tiers' long windows still hold the burn).
fn alert_pairs(compare: Compare, slos: &[ServiceLevelObjective]) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for slo in slos {
        let name = slo.metadata.name.clone().unwrap_or_default();
        let alerting = slo.spec.alerting.clone().unwrap_or_default();
        let alert = alerting
            .alert_name
            .clone()
            .unwrap_or_else(|| "HeadroomErrorBudgetBurn".into());
        match compare {
            Compare::SlothAlerts => {
                for sev in ["page", "ticket"] {
                    out.push((
                        format!(r#"alertname="{alert}",sloth_id="{name}",sloth_severity="{sev}""#),
                        format!(
                            r#"alertname="{alert}",slo="{name}",sloth_id="",sloth_severity="{sev}""#
                        ),
                        sev == "page",
                    ));
                }
            }
            Compare::PyrraAlerts => {
                for (i, t) in alerting.tiers.iter().flatten().enumerate() {
                    let long = t.labels.get("long").cloned().unwrap_or_default();
                    out.push((
                        format!(r#"alertname="{alert}",slo="{name}",tier="",long="{long}""#),
                        format!(r#"alertname="{alert}",slo="{name}",tier!="",long="{long}""#),
                        i == 0,
                    ));
                }
            }
            Compare::SlothRatios => {}
        }
    }
    out
}

fn firing(selector: &str, range: &str) -> String {
    format!(
        r#"(max(max_over_time(ALERTS{{{selector},alertstate="firing"}}[{range}])) or vector(0))"#
    )
}

fn firing_at_previous_step(selector: &str) -> String {
    let step = STEP_SECS;
    let half = STEP_SECS / 2;
    format!(
        r#"(max(max_over_time(ALERTS{{{selector},alertstate="firing"}}[{half}s] offset {step}s)) or vector(0))"#
    )
}

/// One promtool test per scenario for one case.
fn promtool_file(
    c: &Case,
    r: &Reference,
    slos: &[ServiceLevelObjective],
    source_rules: &str,
    headroom_rules: &str,
) -> String {
    let budget = 1.0 - slos[0].spec.objective / 100.0;
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# {}: the source's rules and Headroom's on the same series",
        c.file
    );
    let _ = writeln!(y, "rule_files: [{source_rules}, {headroom_rules}]");
    let _ = writeln!(y, "evaluation_interval: {STEP_SECS}s");
    let _ = writeln!(y, "tests:");
    // Strictly inside one step either side: ranges that are not multiples
    // of the step select the same samples in Prometheus 2 and 3.
    let around = format!("{}s", STEP_SECS * 2 + STEP_SECS / 2);
    for s in &SCENARIOS {
        let end = format!("{}m", s.length);
        let _ = writeln!(
            y,
            "  - name: {}\n    interval: {SAMPLE_SECS}s\n    input_series:",
            s.name
        );
        for (series, role) in r.series {
            let _ = writeln!(
                y,
                "      - series: '{series}'\n        values: '{}'",
                values(*role, s, budget)
            );
        }
        let _ = writeln!(y, "    promql_expr_test:");
        let mut expr = |e: String, value: u32| {
            let _ = writeln!(
                y,
                "      - expr: '{}'\n        eval_time: {end}\n        exp_samples: [{{labels: \"{{}}\", value: {value}}}]",
                e.replace('\'', "''")
            );
        };
        match r.compare {
            Compare::SlothAlerts | Compare::PyrraAlerts => {
                let pairs = alert_pairs(r.compare, slos);
                let sources: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
                for (src, hr, fastest) in &pairs {
                    // Steps where one fired and the other did not, one step
                    // before, at or one step after.
                    let mismatch = format!(
                        "({a} > bool {b}) + ({c} > bool {d})",
                        a = firing_at_previous_step(src),
                        b = firing(hr, &around),
                        c = firing_at_previous_step(hr),
                        d = firing(src, &around),
                    );
                    expr(
                        format!("sum_over_time(({mismatch})[{end}:{STEP_SECS}s])"),
                        0,
                    );
                    if s.clears && *fastest {
                        expr(
                            format!(r#"max(ALERTS{{{src},alertstate="firing"}}) or vector(0)"#),
                            0,
                        );
                        expr(
                            format!(r#"max(ALERTS{{{hr},alertstate="firing"}}) or vector(0)"#),
                            0,
                        );
                    }
                }
                // Not vacuous: the source alerted in this scenario (or,
                // where its alerts are disabled, never did).
                let any = sources
                    .iter()
                    .map(|src| format!(r#"ALERTS{{{src},alertstate="firing"}}"#))
                    .collect::<Vec<_>>()
                    .join(" or ");
                expr(
                    format!(
                        "(sum_over_time((max({any}) or vector(0))[{end}:{STEP_SECS}s]) > bool 0)"
                    ),
                    u32::from(r.fires),
                );
            }
            Compare::SlothRatios => {
                for slo in slos {
                    let name = slo.metadata.name.clone().unwrap_or_default();
                    for w in ["5m", "30m", "1h", "2h", "6h"] {
                        let src = format!(
                            r#"max(slo:sli_error:ratio_rate{w}{{sloth_slo=~"{name}(-0)?"}})"#
                        );
                        let hr =
                            format!(r#"max(headroom:slo_error_ratio:rate{w}{{slo="{name}"}})"#);
                        expr(
                            format!(
                                "sum_over_time((abs({src} - {hr}) > bool 1e-9)[{end}:{STEP_SECS}s])"
                            ),
                            0,
                        );
                        expr(
                            format!(
                                "(count_over_time(({src} - {hr})[{end}:{STEP_SECS}s]) > bool 0)"
                            ),
                            1,
                        );
                    }
                }
            }
        }
    }
    y
}

#[test]
fn imported_rules_alert_as_the_source_does_under_promtool() {
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is missing: install Debian's `prometheus` package (scripts/test.sh does when it is absent); this test compares alert timing with `promtool test rules` and does not skip"
    );
    let dir = std::env::temp_dir().join(format!("headroom-import-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut tests = Vec::new();
    for c in cases() {
        let Some(r) = &c.reference else { continue };
        let slos = run(&c).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        let stem = c.file.replace('/', "__");
        let source = std::fs::read_to_string(corpus().join(r.rules)).expect("reference rules");
        let source_path = dir.join(format!("{stem}.source.yml"));
        std::fs::write(&source_path, plain_rules(&source).expect("source rules")).expect("write");
        let (file, skipped) = headroom::rules::rule_file(&slos, "http://127.0.0.1:9464");
        assert!(skipped.is_empty(), "{}: {skipped:?}", c.file);
        let hr_path = dir.join(format!("{stem}.headroom.yml"));
        std::fs::write(&hr_path, headroom::rules::to_yaml(&file).expect("yaml")).expect("write");
        let test_path = dir.join(format!("{stem}.test.yml"));
        let test = promtool_file(
            &c,
            r,
            &slos,
            &source_path.to_string_lossy(),
            &hr_path.to_string_lossy(),
        );
        std::fs::write(&test_path, test).expect("write");
        tests.push((c.file, test_path));
    }
    // Two at a time: promtool evaluates every rule at every step, and the
    // machines this runs on have two cores.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some((file, path)) =
                    tests.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let out = std::process::Command::new("promtool")
                        .args(["test", "rules"])
                        .arg(path)
                        .output()
                        .expect("promtool runs");
                    if !out.status.success() {
                        failures.lock().expect("lock").push(format!(
                            "{file} ({}):\n{}{}",
                            path.display(),
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    let compared = tests.len();
    println!("promtool: {compared} corpus files compared with their source's rules");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
