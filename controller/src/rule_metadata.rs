//! Labels and annotations of the generated `PrometheusRule` objects.
//!
//! A Prometheus run by the Prometheus Operator loads only the rule objects
//! its `ruleSelector` matches (kube-prometheus-stack's default:
//! `release: <helm release>`), so the objects must carry the labels the
//! user's Prometheus selects on: operator-wide from flags, per SLO from
//! `spec.alerting.prometheusRule`.

use std::collections::BTreeMap;

use crate::resources::slo::RuleObjectMetadata;

/// The label that marks the objects Headroom manages (never set by users).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Labels or annotations.
pub type Pairs = BTreeMap<String, String>;

/// Operator-wide labels and annotations (`--prometheus-rule-label`,
/// `--prometheus-rule-annotation`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Defaults {
    pub fn new(labels: &[(String, String)], annotations: &[(String, String)]) -> Self {
        Self {
            labels: labels.iter().cloned().collect(),
            annotations: annotations.iter().cloned().collect(),
        }
    }
}

/// `KEY=VALUE` for `--prometheus-rule-label`.
pub fn parse_label_flag(text: &str) -> Result<(String, String), String> {
    let (key, value) = split_pair(text)?;
    check_key(key).and_then(|()| check_label_value(value))?;
    reserved(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// `KEY=VALUE` for `--prometheus-rule-annotation`.
pub fn parse_annotation_flag(text: &str) -> Result<(String, String), String> {
    let (key, value) = split_pair(text)?;
    check_key(key)?;
    reserved(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

fn split_pair(text: &str) -> Result<(&str, &str), String> {
    text.split_once('=')
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE, e.g. release=kube-prometheus-stack"))
}

/// The object's labels and annotations: Headroom's own (`own`), then the
/// operator's, then the SLO's, later winning, except that Headroom's own
/// keys stay (the writer finds its objects by them). Errors name the field.
pub fn merge(
    own_labels: &BTreeMap<String, String>,
    own_annotations: &BTreeMap<String, String>,
    defaults: &Defaults,
    per_slo: Option<&RuleObjectMetadata>,
) -> Result<(Pairs, Pairs), String> {
    let field = "spec.alerting.prometheusRule";
    let empty = RuleObjectMetadata::default();
    let per_slo = per_slo.unwrap_or(&empty);
    for (k, v) in &per_slo.labels {
        check_key(k)
            .and_then(|()| check_label_value(v))
            .and_then(|()| reserved(k))
            .map_err(|e| format!("{field}.labels[{k:?}]: {e}"))?;
    }
    for k in per_slo.annotations.keys() {
        check_key(k)
            .and_then(|()| reserved(k))
            .map_err(|e| format!("{field}.annotations[{k:?}]: {e}"))?;
    }
    let layer = |own: &BTreeMap<String, String>,
                 wide: &BTreeMap<String, String>,
                 slo: &BTreeMap<String, String>| {
        let mut out = wide.clone();
        out.extend(slo.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    };
    Ok((
        layer(own_labels, &defaults.labels, &per_slo.labels),
        layer(own_annotations, &defaults.annotations, &per_slo.annotations),
    ))
}

/// Keys Headroom sets itself.
fn reserved(key: &str) -> Result<(), String> {
    if key == MANAGED_BY_LABEL || key.starts_with("headroom.dev/") {
        return Err(format!(
            "{key} is Headroom's own (it finds its objects by it); choose another key"
        ));
    }
    Ok(())
}

/// A Kubernetes label or annotation key: an optional DNS-subdomain prefix
/// and `/`, then a name of at most 63 characters.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "{key:?}: the prefix before '/' must be a DNS subdomain (lower case, e.g. example.com)"
            ));
        }
    }
    if name.is_empty() || !is_name(name) {
        return Err(format!(
            "{key:?}: a key's name is 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or a name as in [`check_key`].
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?}: a label value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected key and value, or a part of the error.
    type Want = Result<(&'static str, &'static str), &'static str>;

    #[test]
    fn label_flags_parse_or_say_why_not() {
        let cases: &[(&str, Want)] = &[
            (
                "release=kube-prometheus-stack",
                Ok(("release", "kube-prometheus-stack")),
            ),
            (
                "example.com/team=payments",
                Ok(("example.com/team", "payments")),
            ),
            ("empty=", Ok(("empty", ""))),
            ("release", Err("expected KEY=VALUE")),
            ("Bad Key=x", Err("a key's name")),
            ("Example.com/x=y", Err("DNS subdomain")),
            ("team=a b", Err("a label value")),
            (
                "v=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                Err("at most 63"),
            ),
            ("app.kubernetes.io/managed-by=x", Err("Headroom's own")),
            ("headroom.dev/slo=x", Err("Headroom's own")),
        ];
        for (text, want) in cases {
            match (parse_label_flag(text), want) {
                (Ok((k, v)), Ok((wk, wv))) => assert_eq!((k.as_str(), v.as_str()), (*wk, *wv)),
                (Err(e), Err(part)) => assert!(e.contains(part), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        // Annotation values are free text.
        assert_eq!(
            parse_annotation_flag("description=rules of SLO checkout, see https://x"),
            Ok((
                "description".to_owned(),
                "rules of SLO checkout, see https://x".to_owned()
            ))
        );
        assert!(parse_annotation_flag("headroom.dev/content-hash=1").is_err());
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_slo_wins_over_the_operator_and_headroom_keeps_its_own() {
        let own = map(&[
            ("app.kubernetes.io/managed-by", "headroom"),
            ("headroom.dev/slo", "a"),
        ]);
        let own_ann = map(&[("headroom.dev/content-hash", "1")]);
        let defaults = Defaults {
            labels: map(&[("release", "kube-prometheus-stack"), ("team", "platform")]),
            annotations: map(&[("owner", "sre")]),
        };
        let slo = RuleObjectMetadata {
            labels: map(&[("team", "payments")]),
            annotations: map(&[("owner", "payments")]),
        };
        let (labels, annotations) = merge(&own, &own_ann, &defaults, Some(&slo)).expect("valid");
        assert_eq!(
            labels,
            map(&[
                ("app.kubernetes.io/managed-by", "headroom"),
                ("headroom.dev/slo", "a"),
                ("release", "kube-prometheus-stack"),
                ("team", "payments"),
            ])
        );
        assert_eq!(
            annotations,
            map(&[("headroom.dev/content-hash", "1"), ("owner", "payments")])
        );
        let (labels, _) = merge(&own, &own_ann, &Defaults::default(), None).expect("valid");
        assert_eq!(labels, own);
    }

    #[test]
    fn bad_slo_metadata_names_the_field() {
        let cases: &[(RuleObjectMetadata, &str)] = &[
            (
                RuleObjectMetadata {
                    labels: map(&[("team", "a/b")]),
                    ..Default::default()
                },
                "spec.alerting.prometheusRule.labels[\"team\"]",
            ),
            (
                RuleObjectMetadata {
                    labels: map(&[("app.kubernetes.io/managed-by", "me")]),
                    ..Default::default()
                },
                "Headroom's own",
            ),
            (
                RuleObjectMetadata {
                    annotations: map(&[("bad key", "x")]),
                    ..Default::default()
                },
                "spec.alerting.prometheusRule.annotations[\"bad key\"]",
            ),
        ];
        for (slo, want) in cases {
            let err = merge(
                &BTreeMap::new(),
                &BTreeMap::new(),
                &Defaults::default(),
                Some(slo),
            )
            .expect_err("refused");
            assert!(err.contains(want), "{err}");
        }
    }
}
