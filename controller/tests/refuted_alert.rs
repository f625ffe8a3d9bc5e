//! `HeadroomHypothesisRefuted` under `promtool test rules`: it fires once per
//! experiment whose last verdict is Refuted (also when two operator
//! replicas export the series), carries the runbook link to the finding,
//! never fires for a Confirmed experiment, and clears when a later run
//! confirms the hypothesis (the Refuted series is gone).

use headroom::rules::{RuleFile, experiment_group, to_yaml};

const TEST: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # Two replicas export the refuted experiment for 6 minutes; then a
      # confirming run replaces the verdict.
      - series: 'headroom_experiment_last_verdict{instance="a", namespace="shop", experiment="db", verdict="Refuted"}'
        values: '1x5 _x10'
      - series: 'headroom_experiment_last_verdict{instance="b", namespace="shop", experiment="db", verdict="Refuted"}'
        values: '1x5 _x10'
      - series: 'headroom_experiment_last_verdict{instance="a", namespace="shop", experiment="db", verdict="Confirmed"}'
        values: '_x6 1x9'
      - series: 'headroom_experiment_last_verdict{instance="a", namespace="shop", experiment="web", verdict="Confirmed"}'
        values: '1x15'
    alert_rule_test:
      - eval_time: 3m
        alertname: HeadroomHypothesisRefuted
        exp_alerts:
          - exp_labels:
              severity: ticket
              namespace: shop
              experiment: db
            exp_annotations:
              summary: 'Experiment shop/db: hypothesis refuted'
              description: 'The last run of ChaosExperiment shop/db broke an expectation: a known weakness, with its evidence on the run page. The fault was restored when the run ended. A later run that confirms the hypothesis clears this alert.'
              runbook_url: 'http://dash.example/runbooks/experiment/shop/db'
      - eval_time: 14m
        alertname: HeadroomHypothesisRefuted
        exp_alerts: []
"#;

#[test]
fn the_refuted_alert_fires_per_experiment_links_the_finding_and_clears_on_confirmation() {
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is missing: install Debian's `prometheus` package (scripts/test.sh does when it is absent); this test does not skip"
    );
    let dir = std::env::temp_dir().join(format!("headroom-refuted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = RuleFile {
        groups: vec![experiment_group("http://dash.example/")],
    };
    std::fs::write(dir.join("rules.yaml"), to_yaml(&file).expect("yaml")).expect("rules");
    std::fs::write(dir.join("test.yaml"), TEST).expect("test");
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", "test.yaml"])
        .current_dir(&dir)
        .output()
        .expect("promtool runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
