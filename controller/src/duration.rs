//! Prometheus-style durations (`250ms`, `30s`, `5m`, `1h30m`, `30d`, `1w`).
//!
//! Specs carry durations as text so they read like PromQL ranges; this is
//! the one parser, and `format_duration` gives back the shortest text, used
//! in range selectors (`[5m]`) and recording-rule names (`rate5m`).

use std::time::Duration;

use thiserror::Error;

pub use headroom_experiments::schema::DURATION_PATTERN;

/// A duration that cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid duration {text:?}: use a number followed by ms, s, m, h, d or w, e.g. 5m or 30d")]
pub struct DurationError {
    pub text: String,
}

const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parse a duration made of `<digits><unit>` groups. Zero is allowed here;
/// callers that need a positive duration use [`parse_positive_duration`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        text: text.to_owned(),
    };
    if text.is_empty() {
        return Err(err());
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        // `ms` before `m`: try the longer unit name first.
        let scale = if let Some(r) = rest.strip_prefix("ms") {
            rest = r;
            1
        } else {
            let (unit, scale) = UNITS
                .iter()
                .find(|(u, _)| *u != "ms" && rest.starts_with(u))
                .copied()
                .ok_or_else(err)?;
            rest = &rest[unit.len()..];
            scale
        };
        total_ms = value
            .checked_mul(scale)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parse a duration that must be greater than zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, DurationError> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(DurationError {
            text: text.to_owned(),
        }),
        d => Ok(d),
    }
}

/// The shortest Prometheus text for `d`, e.g. `1h`, `1m30s`, `250ms`.
/// Sub-millisecond parts are dropped: Prometheus cannot express them.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    // Days, not weeks: `30d` is how SLO windows are written and named.
    for (unit, scale) in UNITS.into_iter().filter(|(u, _)| *u != "w") {
        if ms >= scale {
            out.push_str(&format!("{}{unit}", ms / scale));
            ms %= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        let s = Duration::from_secs;
        for (text, want) in [
            ("30s", Some(s(30))),
            ("5m", Some(s(300))),
            ("1h", Some(s(3600))),
            ("1h30m", Some(s(5400))),
            ("30d", Some(s(30 * 86400))),
            ("28d", Some(s(28 * 86400))),
            ("1w", Some(s(7 * 86400))),
            ("250ms", Some(Duration::from_millis(250))),
            ("0s", Some(s(0))),
            ("", None),
            ("5", None),
            ("m", None),
            ("5x", None),
            ("-5m", None),
            ("5 m", None),
            ("1.5h", None),
            ("99999999999999999999d", None),
            ("9999999999999999w", None),
        ] {
            assert_eq!(parse_duration(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn zero_is_not_positive() {
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("1s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn formats_shortest_form_and_round_trips() {
        for (secs, text) in [
            (3600, "1h"),
            (300, "5m"),
            (90, "1m30s"),
            (86400, "1d"),
            (30 * 86400, "30d"),
            (7 * 86400, "7d"),
            (0, "0s"),
        ] {
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)));
        }
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn error_names_the_text_and_the_fix() {
        let e = parse_duration("5x").expect_err("invalid").to_string();
        assert!(e.contains("\"5x\"") && e.contains("e.g. 5m"), "{e}");
    }
}
