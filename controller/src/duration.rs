//! Prometheus durations (`250ms`, `30s`, `5m`, `1h30m`, `30d`, `4w`, `1y`).
//!
//! Specs carry durations as text so they read like PromQL ranges. This is the
//! one parser, and it accepts what Prometheus's own `model.ParseDuration`
//! accepts (bar the unit-less `0`): one or more `<digits><unit>` groups with
//! units largest first, each at most once, up to Prometheus's limit of about
//! 292 years. So a window the API server accepts is also a valid PromQL range,
//! and `30m1h` is refused here rather than by Prometheus later.
//!
//! [`format_duration`] is Prometheus's own `model.Duration.String()`: the
//! form Sloth and Pyrra put in their recording-rule names. A 28-day window
//! is `4w` there (`slo:sli_error:ratio_rate4w`), not `28d`, so names built
//! from it match theirs.

use std::fmt::Write as _;
use std::time::Duration;

use thiserror::Error;

/// Regex (anchored) for the CRD schema's `pattern`: exactly the strings
/// [`parse_duration`] accepts, except those longer than Prometheus's limit,
/// which no regex can tell apart (the schema also caps the length). It lives
/// in `headroom-experiments` because the fault library's specs use it too.
pub use headroom_experiments::schema::DURATION_PATTERN;

/// The largest duration Prometheus represents: `i64::MAX` nanoseconds, in
/// milliseconds (about 292 years).
pub const MAX_MILLIS: u64 = i64::MAX as u64 / 1_000_000;

/// Why a duration text was refused. Every message quotes the text.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    /// Not `<digits><unit>` groups with units largest first.
    #[error(
        "invalid duration {text:?}: use a number followed by ms, s, m, h, d, w or y, \
         e.g. 5m or 30d (combine units largest first, e.g. 1h30m)"
    )]
    Invalid { text: String },
    /// Beyond what Prometheus can represent.
    #[error("duration {text:?} is too long: Prometheus durations end at about 292 years")]
    TooLong { text: String },
    /// Zero where a window or interval must be positive.
    #[error("duration {text:?} must be greater than zero, e.g. 30s or 5m")]
    Zero { text: String },
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Units in the only order Prometheus accepts them, with milliseconds each.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * DAY_MS),
    ("w", 7 * DAY_MS),
    ("d", DAY_MS),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parse a Prometheus duration. Zero (`0s`) is allowed here; callers that
/// need a positive duration (windows, intervals) use
/// [`parse_positive_duration`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid {
        text: text.to_owned(),
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let mut rest = text;
    // Index into UNITS of the largest unit still allowed.
    let mut next_unit = 0;
    let mut total_ms: u64 = 0;
    // Keep reading after an overflow so that a syntax error, the likelier
    // mistake, is the one reported.
    let mut too_long = false;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let (number, after) = rest.split_at(digits);
        // The whole run of letters is the unit, so `ms` is never read as `m`
        // followed by a stray `s`. Both counts are of ASCII bytes, so the
        // splits fall on character boundaries.
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = after.split_at(letters);
        let index = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(invalid)?
            + next_unit;
        next_unit = index + 1;
        rest = tail;
        // `number` is all ASCII digits, so parsing fails only on overflow.
        let added = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[index].1))
            .and_then(|ms| total_ms.checked_add(ms));
        match added {
            Some(sum) => total_ms = sum,
            None => too_long = true,
        }
    }
    if too_long || total_ms > MAX_MILLIS {
        return Err(DurationError::TooLong {
            text: text.to_owned(),
        });
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parse a duration that must be greater than zero: windows, intervals,
/// experiment durations.
pub fn parse_positive_duration(text: &str) -> Result<Duration, DurationError> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(DurationError::Zero {
            text: text.to_owned(),
        });
    }
    Ok(d)
}

/// Prometheus's text for `d`, as `model.Duration.String()` writes it: the
/// largest units first, years and weeks only when they divide exactly
/// (`4w`, `30d`, `90d`, `1h30m`, `250ms`; zero is `0s`). Used for range
/// selectors (`[5m]`) and recording-rule names (`ratio_rate4w`), which must
/// match what Sloth and Pyrra generate. Sub-millisecond parts are dropped:
/// Prometheus cannot express them.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, scale) in UNITS {
        let exact_only = matches!(unit, "y" | "w");
        if ms >= scale && !(exact_only && ms % scale != 0) {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}{unit}", ms / scale);
            ms %= scale;
        }
    }
    out
}

/// Parse `5s`-style durations for CLI flags.
pub fn parse_flag_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    const DAY: u64 = 86_400;

    /// (text, what parse_duration gives; None = refused).
    fn table() -> Vec<(&'static str, Option<Duration>)> {
        vec![
            ("30s", Some(s(30))),
            ("5m", Some(s(300))),
            ("1h", Some(s(3600))),
            ("6h", Some(s(6 * 3600))),
            ("1d", Some(s(DAY))),
            ("28d", Some(s(28 * DAY))),
            ("30d", Some(s(30 * DAY))),
            ("1w", Some(s(7 * DAY))),
            ("4w", Some(s(28 * DAY))),
            ("1y", Some(s(365 * DAY))),
            ("1h30m", Some(s(5400))),
            ("1d12h", Some(s(DAY + 12 * 3600))),
            ("1w2d", Some(s(9 * DAY))),
            ("1m30s", Some(s(90))),
            ("90s", Some(s(90))),
            ("1s500ms", Some(Duration::from_millis(1500))),
            ("250ms", Some(Duration::from_millis(250))),
            (
                "1y2w3d4h5m6s7ms",
                Some(Duration::from_millis(
                    ((365 + 14 + 3) * DAY + 4 * 3600 + 5 * 60 + 6) * 1000 + 7,
                )),
            ),
            ("0s", Some(s(0))),
            ("0m0s", Some(s(0))),
            ("05m", Some(s(300))),
            // Refused: empty, no unit, no number, unknown units, signs,
            // spaces, fractions, Unicode digits, units out of order or twice.
            ("", None),
            ("0", None),
            ("5", None),
            ("m", None),
            ("5x", None),
            ("5M", None),
            ("5mx", None),
            ("5sm", None),
            ("1h30", None),
            ("-5m", None),
            ("+5m", None),
            (" 5m", None),
            ("5m ", None),
            ("5 m", None),
            ("1.5h", None),
            ("1e3s", None),
            ("５m", None),
            ("5m\u{e9}", None),
            ("30m1h", None),
            ("5m5m", None),
            ("1s1m", None),
            ("1ms1s", None),
            ("1d1w", None),
            // Too long: beyond Prometheus's ~292 years, or beyond u64.
            ("99999999999999999999d", None),
            ("9999999999999999w", None),
            ("293y", None),
            ("292y", Some(s(292 * 365 * DAY))),
        ]
    }

    #[test]
    fn parses_prometheus_durations() {
        for (text, want) in table() {
            assert_eq!(parse_duration(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn pattern_and_parser_agree() {
        let re = regex::Regex::new(DURATION_PATTERN).expect("DURATION_PATTERN compiles");
        let too_long = ["99999999999999999999d", "9999999999999999w", "293y"];
        for (text, want) in table() {
            // The regex cannot count; the length limit is the one difference.
            let want_match = want.is_some() || too_long.contains(&text);
            assert_eq!(re.is_match(text), want_match, "pattern vs {text:?}");
        }
    }

    #[test]
    fn errors_name_the_text_and_the_fix() {
        let e = parse_duration("5x").expect_err("invalid").to_string();
        assert_eq!(
            e,
            "invalid duration \"5x\": use a number followed by ms, s, m, h, d, w or y, \
             e.g. 5m or 30d (combine units largest first, e.g. 1h30m)"
        );
        assert!(matches!(
            parse_duration("30m1h"),
            Err(DurationError::Invalid { .. })
        ));
        let long = parse_duration("300y").expect_err("too long").to_string();
        assert!(
            long.contains("\"300y\"") && long.contains("292 years"),
            "{long}"
        );
        // A syntax error wins over an overflow earlier in the text.
        assert!(matches!(
            parse_duration("99999999999999999999d5x"),
            Err(DurationError::Invalid { .. })
        ));
    }

    #[test]
    fn zero_is_not_positive() {
        assert_eq!(
            parse_positive_duration("0s"),
            Err(DurationError::Zero { text: "0s".into() })
        );
        assert!(
            parse_positive_duration("0s")
                .expect_err("zero")
                .to_string()
                .contains("greater than zero")
        );
        assert_eq!(parse_positive_duration("1s"), Ok(s(1)));
        assert!(matches!(
            parse_positive_duration("-1s"),
            Err(DurationError::Invalid { .. })
        ));
    }

    #[test]
    fn formats_like_prometheus_and_round_trips() {
        for (d, text) in [
            (s(3600), "1h"),
            (s(300), "5m"),
            (s(90), "1m30s"),
            (s(5400), "1h30m"),
            (s(DAY), "1d"),
            (s(2 * DAY), "2d"),
            (s(7 * DAY), "1w"),
            (s(14 * DAY), "2w"),
            (s(28 * DAY), "4w"),
            (s(30 * DAY), "30d"),
            (s(90 * DAY), "90d"),
            (s(8 * DAY), "8d"),
            (s(365 * DAY), "1y"),
            (s(DAY + 3600), "1d1h"),
            (s(3 * DAY), "3d"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1s500ms"),
            (s(0), "0s"),
        ] {
            assert_eq!(format_duration(d), text, "{d:?}");
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
        // Sub-millisecond parts are dropped, as Prometheus does.
        assert_eq!(format_duration(Duration::from_micros(1500)), "1ms");
        assert_eq!(format_duration(Duration::from_micros(999)), "0s");
    }

    #[test]
    fn format_round_trips_across_scales() {
        let mut ms: u64 = 1;
        while ms <= MAX_MILLIS {
            for d in [ms, ms + 1, ms * 7, ms * 13 + 999] {
                if d > MAX_MILLIS {
                    continue;
                }
                let text = format_duration(Duration::from_millis(d));
                assert_eq!(
                    parse_duration(&text),
                    Ok(Duration::from_millis(d)),
                    "{text}"
                );
            }
            ms *= 3;
        }
        let max = format_duration(Duration::from_millis(MAX_MILLIS));
        assert_eq!(parse_duration(&max), Ok(Duration::from_millis(MAX_MILLIS)));
    }
}
