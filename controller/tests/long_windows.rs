//! The long windows tiled from recorded short ones (`long_windows.rs`)
//! alert at the same times as today's exact rules (`rate(x[30d])` over the
//! raw counters), under `promtool test rules`, for the SRE Workbook's
//! scenarios: 2% of the budget in 1h, 5% in 6h, 10% in 3d, and a burn that
//! stops (what fired resolves). Same input series, the two SLOs side by
//! side; a mismatch is a step where one fired and the other did not fire
//! within one evaluation interval of it.

use std::fmt::Write as _;

use headroom::long_windows::Mode;
use headroom::resources::slo::ServiceLevelObjective;

const OBJECTIVE: f64 = 99.9;
const BUDGET: f64 = 1.0 - OBJECTIVE / 100.0;
/// Requests per minute.
const TRAFFIC: f64 = 6000.0;

fn slo(name: &str) -> ServiceLevelObjective {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: headroom.dev/v1alpha1
kind: ServiceLevelObjective
metadata: {{ name: {name}, namespace: shop }}
spec:
  service: checkout
  objective: {OBJECTIVE}
  window: 30d
  indicator:
    ratio:
      errors: sum(rate(http_requests_total{{job="checkout",code=~"5.."}}[$window]))
      total: sum(rate(http_requests_total{{job="checkout"}}[$window]))
"#
    ))
    .expect("valid SLO")
}

struct Scenario {
    name: &'static str,
    /// Burn rate (multiple of the budget) from `start` to `end` minutes.
    burn: f64,
    start: u64,
    end: u64,
    /// Length in minutes.
    length: u64,
    /// The tier that must fire (in both) during the scenario.
    fires: &'static str,
    /// Whether the page alerts must have resolved by the end.
    clears: bool,
    /// Evaluation interval, seconds (samples come every minute).
    step: u64,
}

const SCENARIOS: [Scenario; 4] = [
    // 2% of a 30-day budget in an hour is 14.4x: 20x pages on 1h/5m.
    Scenario {
        name: "2% in 1h",
        burn: 20.0,
        start: 10,
        end: 80,
        length: 150,
        fires: "page-fast",
        clears: false,
        step: 60,
    },
    // 5% in 6h is 6x: 8x for seven hours pages on 6h/30m, not on 1h.
    Scenario {
        name: "5% in 6h",
        burn: 8.0,
        start: 10,
        end: 420,
        length: 420,
        fires: "page-slow",
        clears: false,
        step: 60,
    },
    // 10% in 3d is 1x: 1.5x for two and a half days opens a ticket on 3d/6h.
    // Five-minute steps: three thousand six hundred one-minute steps of
    // 30-day raw windows would make the exact side slow to evaluate.
    Scenario {
        name: "10% in 3d",
        burn: 1.5,
        start: 60,
        end: 3600,
        length: 3600,
        fires: "ticket-slow",
        clears: false,
        step: 300,
    },
    // A fast burn that stops: the page fires, then everything resolves.
    Scenario {
        name: "clears",
        burn: 20.0,
        start: 10,
        end: 45,
        length: 240,
        fires: "page-fast",
        clears: true,
        step: 60,
    },
];

/// Counter values, one a minute.
fn values(s: &Scenario, errors: bool) -> String {
    let ratio = s.burn * BUDGET;
    let mut v: f64 = 0.0;
    let mut out = String::new();
    for minute in 0..=s.length {
        let r = if minute >= s.start && minute < s.end {
            ratio
        } else {
            0.0
        };
        let _ = write!(out, "{} ", v.round());
        v += TRAFFIC * if errors { r } else { 1.0 - r };
    }
    out.trim_end().to_owned()
}

fn alerts(slo: &str, tier: &str) -> String {
    format!(r#"alertname="HeadroomErrorBudgetBurn",slo="{slo}",tier="{tier}""#)
}

fn firing(selector: &str, range: &str) -> String {
    format!(
        r#"(max(max_over_time(ALERTS{{{selector},alertstate="firing"}}[{range}])) or vector(0))"#
    )
}

fn firing_at_previous_step(selector: &str, step: u64) -> String {
    let half = step / 2;
    format!(
        r#"(max(max_over_time(ALERTS{{{selector},alertstate="firing"}}[{half}s] offset {step}s)) or vector(0))"#
    )
}

/// One promtool test file for one scenario.
fn test_file(s: &Scenario, exact: &str, recorded: &str) -> String {
    let step = s.step;
    let mut y = String::new();
    let _ = writeln!(y, "rule_files: [{exact}, {recorded}]");
    let _ = writeln!(y, "evaluation_interval: {step}s");
    let _ = writeln!(y, "tests:");
    let _ = writeln!(
        y,
        "  - name: {:?}\n    interval: 1m\n    input_series:",
        s.name
    );
    for (code, errors) in [("200", false), ("500", true)] {
        let _ = writeln!(
            y,
            "      - series: 'http_requests_total{{job=\"checkout\",code=\"{code}\"}}'\n        values: '{}'",
            values(s, errors)
        );
    }
    let _ = writeln!(y, "    promql_expr_test:");
    let end = format!("{}m", s.length);
    let mut expr = |e: String, value: u32| {
        let _ = writeln!(
            y,
            "      - expr: '{}'\n        eval_time: {end}\n        exp_samples: [{{labels: \"{{}}\", value: {value}}}]",
            e.replace('\'', "''")
        );
    };
    // Ranges strictly inside a step either side.
    let around = format!("{}s", step * 2 + step / 2);
    for tier in ["page-fast", "page-slow", "ticket-fast", "ticket-slow"] {
        let (a, b) = (alerts("exact", tier), alerts("recorded", tier));
        let mismatch = format!(
            "({} > bool {}) + ({} > bool {})",
            firing_at_previous_step(&a, step),
            firing(&b, &around),
            firing_at_previous_step(&b, step),
            firing(&a, &around),
        );
        expr(format!("sum_over_time(({mismatch})[{end}:{step}s])"), 0);
        // The page tiers resolve once their short windows are past the
        // burn; the ticket tiers' long windows still hold it (as they
        // should: a third of the test's history burned at 20x).
        if s.clears && tier.starts_with("page") {
            for sel in [&a, &b] {
                expr(
                    format!(r#"max(ALERTS{{{sel},alertstate="firing"}}) or vector(0)"#),
                    0,
                );
            }
        }
    }
    // Not vacuous: the scenario's tier fired, in both.
    for slo in ["exact", "recorded"] {
        let sel = alerts(slo, s.fires);
        expr(
            format!(
                r#"(sum_over_time((max(ALERTS{{{sel},alertstate="firing"}}) or vector(0))[{end}:{step}s]) > bool 0)"#
            ),
            1,
        );
    }
    y
}

#[test]
fn recorded_long_windows_alert_when_the_exact_rules_do_under_promtool() {
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is missing: install Debian's `prometheus` package (scripts/test.sh does when it is absent); this test compares alert timing with `promtool test rules` and does not skip"
    );
    let dir = std::env::temp_dir().join(format!("headroom-long-windows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut paths = Vec::new();
    for (name, mode) in [("exact", Mode::Exact), ("recorded", Mode::Recorded)] {
        let (file, skipped) =
            headroom::rules::rule_file_with(&[slo(name)], "http://127.0.0.1:9464", mode);
        assert!(skipped.is_empty(), "{skipped:?}");
        let path = dir.join(format!("{name}.yml"));
        std::fs::write(&path, headroom::rules::to_yaml(&file).expect("yaml")).expect("write");
        paths.push(path);
    }
    let tests: Vec<(&str, std::path::PathBuf)> = SCENARIOS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = dir.join(format!("scenario-{i}.test.yml"));
            let text = test_file(s, &paths[0].to_string_lossy(), &paths[1].to_string_lossy());
            std::fs::write(&path, text).expect("write");
            (s.name, path)
        })
        .collect();
    // Two at a time: the machines this runs on have two cores.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some((name, path)) =
                    tests.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let started = std::time::Instant::now();
                    let out = std::process::Command::new("promtool")
                        .args(["test", "rules"])
                        .arg(path)
                        .output()
                        .expect("promtool runs");
                    println!("promtool: {name}: {:.1}s", started.elapsed().as_secs_f64());
                    if !out.status.success() {
                        failures.lock().expect("lock").push(format!(
                            "{name} ({}):\n{}{}",
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
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
