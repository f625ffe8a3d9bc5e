//! The admin-injected error fraction: parsing what `POST /admin/error-rate`
//! was given, and deciding which requests fail.

use std::sync::atomic::{AtomicU64, Ordering};

/// The current injected error ratio, shared between handlers.
#[derive(Debug, Default)]
pub struct ErrorRatio(AtomicU64);

impl ErrorRatio {
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, ratio: f64) -> Result<(), String> {
        validate(ratio)?;
        self.0.store(ratio.to_bits(), Ordering::Relaxed);
        Ok(())
    }
}

fn validate(ratio: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!("ratio must be within 0 and 1, got {ratio}"))
    }
}

/// Whether a request with uniform `draw` in [0, 1) fails: exactly the
/// fraction `ratio` of draws does, 0 never and 1 always.
pub fn inject(ratio: f64, draw: f64) -> bool {
    draw < ratio
}

/// The ratio from the query string (`ratio=0.2`) or, failing that, from the
/// body as a form (`ratio=0.2`), JSON (`{"ratio": 0.2}`) or a bare number,
/// so curl, scripts and tests can all use their natural form.
pub fn parse_ratio(query: Option<&str>, body: &str) -> Result<f64, String> {
    if let Some(v) = query.and_then(|q| form_value(q, "ratio")) {
        return number(v);
    }
    let body = body.trim();
    if body.is_empty() {
        return Err("ratio missing: send ?ratio=0.2 or a body ratio=0.2".into());
    }
    if body.starts_with('{') {
        let json: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("body is not JSON: {e}"))?;
        return json
            .get("ratio")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| "JSON body needs a number field \"ratio\"".to_owned())
            .and_then(validate);
    }
    match form_value(body, "ratio") {
        Some(v) => number(v),
        None if !body.contains('=') => number(body),
        None => Err("ratio missing from the form body".into()),
    }
}

fn form_value<'a>(form: &'a str, key: &str) -> Option<&'a str> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn number(s: &str) -> Result<f64, String> {
    let ratio = s
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("ratio is not a number: {s:?}"))?;
    validate(ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injects_exactly_the_ratio_of_uniform_draws() {
        let draws = (0..1000).map(|i| f64::from(i) / 1000.0);
        let failed = |ratio| draws.clone().filter(|d| inject(ratio, *d)).count();
        assert_eq!(failed(0.0), 0);
        assert_eq!(failed(0.2), 200);
        assert_eq!(failed(0.5), 500);
        assert_eq!(failed(1.0), 1000);
    }

    #[test]
    fn accepts_query_form_json_and_bare_bodies() {
        assert_eq!(parse_ratio(Some("ratio=0.2"), ""), Ok(0.2));
        assert_eq!(parse_ratio(Some("x=1&ratio=0.3"), "ratio=0.9"), Ok(0.3));
        assert_eq!(parse_ratio(None, "ratio=0.25\n"), Ok(0.25));
        assert_eq!(parse_ratio(Some("other=1"), "ratio=1"), Ok(1.0));
        assert_eq!(parse_ratio(None, r#"{"ratio": 0.5}"#), Ok(0.5));
        assert_eq!(parse_ratio(None, "0"), Ok(0.0));
    }

    #[test]
    fn refuses_out_of_range_and_garbage() {
        for (q, body) in [
            (Some("ratio=1.5"), ""),
            (Some("ratio=-0.1"), ""),
            (Some("ratio=NaN"), ""),
            (Some("ratio=abc"), ""),
            (None, ""),
            (None, "ratio="),
            (None, "foo=0.2"),
            (None, r#"{"ratio": "0.2"}"#),
            (None, r#"{"ratio": 2}"#),
            (None, "{"),
        ] {
            assert!(parse_ratio(q, body).is_err(), "{q:?} {body:?} accepted");
        }
    }

    #[test]
    fn shared_ratio_keeps_the_last_valid_value() {
        let r = ErrorRatio::default();
        assert_eq!(r.get(), 0.0);
        assert!(r.set(0.4).is_ok());
        assert!(r.set(7.0).is_err());
        assert_eq!(r.get(), 0.4);
    }
}
