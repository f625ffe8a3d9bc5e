//! Property tests over the input a user controls: durations, `$window`
//! substitution and whole experiment/SLO specs as JSON. `make test` runs
//! them with `PROPTEST_CASES` set; none may panic, and each checks an
//! invariant a user would notice.

use std::time::Duration;

use headroom::duration::{DurationError, format_duration, parse_duration};
use headroom::indicator::{substitute_window, window_queries};
use headroom::resources::experiment::ChaosExperimentSpec;
use headroom::resources::slo::ServiceLevelObjectiveSpec;
use headroom_experiments::schema::DURATION_PATTERN;
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9$_ {}()\\[\\]=~\".,:-]{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("hypothesis".to_owned()),
                    Just("description".to_owned()),
                    Just("slos".to_owned()),
                    Just("action".to_owned()),
                    Just("podKill".to_owned()),
                    Just("selector".to_owned()),
                    Just("matchLabels".to_owned()),
                    Just("count".to_owned()),
                    Just("percent".to_owned()),
                    Just("duration".to_owned()),
                    Just("observeInterval".to_owned()),
                    Just("schedule".to_owned()),
                    Just("objective".to_owned()),
                    Just("window".to_owned()),
                    Just("indicator".to_owned()),
                    Just("ratio".to_owned()),
                    Just("errors".to_owned()),
                    Just("total".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// What we print, we read back exactly (millisecond precision).
    #[test]
    fn durations_round_trip(ms in 0u64..(10 * 365 * 24 * 3600 * 1000)) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(d)).ok(), Some(d));
    }

    /// The parser and the CRD's pattern agree on any short string: what the
    /// API server accepts, the operator accepts, except beyond Prometheus's
    /// ~292-year limit (found by this test: `300y`), which it refuses with
    /// its own message; what the API server refuses never parses.
    #[test]
    fn duration_parser_agrees_with_the_schema(text in "[0-9ywdhms-]{0,12}") {
        let pattern = regex::Regex::new(DURATION_PATTERN).expect("pattern compiles");
        match (pattern.is_match(&text), parse_duration(&text)) {
            (true, Ok(_)) | (false, Err(DurationError::Invalid { .. })) => {}
            (true, Err(DurationError::TooLong { .. })) => {}
            (matched, parsed) => prop_assert!(false, "{:?}: pattern {} but parser {:?}", text, matched, parsed),
        }
    }

    /// Arbitrary text never panics the parser.
    #[test]
    fn duration_parser_never_panics(text in "\\PC{0,40}") {
        let _ = parse_duration(&text);
    }

    /// Substitution leaves no placeholder and changes nothing else.
    #[test]
    fn window_substitution(prefix in "[^$]{0,20}", suffix in "[^$]{0,20}", n in 0usize..4, ms in 1000u64..100_000_000) {
        let window = format_duration(Duration::from_millis(ms));
        let query = format!("{prefix}{}{suffix}", "[$window]".repeat(n));
        let out = substitute_window(&query, &window);
        prop_assert!(!out.contains("$window"));
        prop_assert_eq!(out, format!("{prefix}{}{suffix}", format!("[{window}]").repeat(n)));
    }

    /// Any JSON either fails to deserialise or gives a spec the operator's
    /// checks accept or refuse with a message naming a spec field; never a
    /// panic.
    #[test]
    fn experiment_specs_never_panic(v in json_value()) {
        if let Ok(spec) = serde_json::from_value::<ChaosExperimentSpec>(v)
            && let Err((_, message)) = headroom::reconcile::experiment::validate_spec(&spec)
        {
            prop_assert!(message.contains("spec."), "{}", message);
        }
    }

    /// Any JSON SLO spec either fails to deserialise or yields queries (or
    /// a refusal) without panicking.
    #[test]
    fn slo_specs_never_panic(v in json_value(), ms in 1000u64..100_000_000) {
        if let Ok(spec) = serde_json::from_value::<ServiceLevelObjectiveSpec>(v) {
            let _ = headroom::indicator::validate(&spec.indicator);
            let _ = window_queries(&spec.indicator, &format_duration(Duration::from_millis(ms)));
            let _ = parse_duration(&spec.window);
        }
    }
}

/// The case the property test found: valid in form, too long for Prometheus.
#[test]
fn too_long_durations_are_refused_with_their_own_message() {
    let err = parse_duration("300y").expect_err("300y is beyond 292 years");
    assert!(matches!(err, DurationError::TooLong { .. }), "{err}");
    assert!(err.to_string().contains("292 years"));
}
