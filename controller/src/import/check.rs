//! The output is checked as `headroom rules` would check it, before it is
//! printed, and what fails is blamed on the source field that produced it:
//! a user fixes the file they have, not the one Headroom would write.

use crate::indicator::IndicatorError;
use crate::resources::slo::ServiceLevelObjective;

use super::ImportError;

/// The source fields each part of a translated SLO came from.
#[derive(Clone, Debug, Default)]
pub struct Blame {
    pub name: String,
    pub namespace: String,
    pub errors: String,
    pub total: String,
    pub window: String,
    pub tiers: String,
    pub labels: String,
    pub alert_name: String,
}

/// A Kubernetes object name (DNS-1123 subdomain). Also a label value in the
/// rules and, prefixed with `headroom-`, a `PrometheusRule` name.
fn object_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > 253 - "headroom-".len() {
        return Err(format!("{name:?} must be 1 to 244 characters"));
    }
    if !name.chars().all(ok_char) || !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Err(format!(
            "{name:?} is not a valid object name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A Prometheus label (or alert) name.
pub fn label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Check one translated SLO.
pub fn check(slo: &ServiceLevelObjective, blame: &Blame) -> Result<(), ImportError> {
    object_name(slo.metadata.name.as_deref().unwrap_or_default())
        .map_err(|why| ImportError::new(&blame.name, why))?;
    if let Some(ns) = &slo.metadata.namespace {
        if ns.len() > 63 || ns.contains('.') {
            return Err(ImportError::new(
                &blame.namespace,
                format!("{ns:?} is not a valid namespace name"),
            ));
        }
        object_name(ns).map_err(|why| ImportError::new(&blame.namespace, why))?;
    }
    if let Some(r) = &slo.spec.indicator.ratio {
        for (q, field) in [(&r.errors, &blame.errors), (&r.total, &blame.total)] {
            if q.contains("{{") {
                return Err(ImportError::new(
                    field,
                    format!(
                        "{q:?} holds a template other than {{{{.window}}}}, which only the source tool can fill in"
                    ),
                ));
            }
        }
    }
    crate::indicator::validate(&slo.spec.indicator).map_err(|e| {
        let field = match &e {
            IndicatorError::MissingWindow { field }
            | IndicatorError::InvalidPromql { field, .. } => {
                if field.ends_with("errors") {
                    &blame.errors
                } else {
                    &blame.total
                }
            }
            _ => &blame.errors,
        };
        // The message names Headroom's field; say which one, after the source's.
        ImportError::new(field, format!("translated into {e}"))
    })?;
    let period = crate::duration::parse_duration(&slo.spec.window)
        .map_err(|e| ImportError::new(&blame.window, e.to_string()))?;
    let alerting = slo.spec.alerting.clone().unwrap_or_default();
    crate::budget::tiers_for(period, alerting.tiers.as_deref())
        .map_err(|why| ImportError::new(&blame.tiers, format!("translated into {why}")))?;
    let tier_labels = alerting
        .tiers
        .iter()
        .flatten()
        .flat_map(|t| t.labels.keys());
    for key in alerting.labels.keys().chain(tier_labels) {
        if !label_name(key) {
            return Err(ImportError::new(
                &blame.labels,
                format!("{key:?} is not a Prometheus label name"),
            ));
        }
    }
    if let Some(name) = &alerting.alert_name
        && !label_name(name)
    {
        return Err(ImportError::new(
            &blame.alert_name,
            format!("{name:?} is not a valid alert name"),
        ));
    }
    // Last, what `headroom rules` itself would say of the whole SLO.
    let (_, skipped) = crate::rules::rule_file(std::slice::from_ref(slo), "http://127.0.0.1:9464");
    if let Some((_, why)) = skipped.first() {
        return Err(ImportError::new(
            &blame.name,
            format!("translated into {why}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, ok) in [
            ("checkout", true),
            ("a.b-c9", true),
            ("Checkout", false),
            ("-a", false),
            ("a_b", false),
            ("", false),
        ] {
            assert_eq!(object_name(name).is_ok(), ok, "{name}");
        }
        for (name, ok) in [
            ("severity", true),
            ("_x1", true),
            ("1x", false),
            ("a-b", false),
        ] {
            assert_eq!(label_name(name), ok, "{name}");
        }
    }
}
