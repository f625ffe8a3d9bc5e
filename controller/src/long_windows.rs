//! Long windows from recorded short ones.
//!
//! Computed from the raw counters, `rate(x[30d])` reads thirty days of
//! samples of every series at each evaluation. Instead, only the shortest
//! window reads raw samples; every longer window `w` is the mean of `n`
//! consecutive, non-overlapping values of a shorter recorded window `d`
//! (`w = n·d`), looked up at offsets `0, d, 2d, …` — instant lookups of
//! one recorded series each, whatever the window's length. The error and
//! request rates are tiled separately and divided at the end, so the ratio
//! weighs each part by its traffic, as `rate()` over the whole window does.
//!
//! The result is exact when the rule group's evaluation times fall on
//! multiples of `d` (an evaluation interval that divides `d`, which the
//! usual 1m, 30s or 15s do) and every evaluation ran; a missed evaluation
//! shifts one tile by up to one interval. Tiles older than the recorded
//! history count as no events, so a new SLO's long windows cover the
//! history recorded so far (as Sloth's mean of its 5m ratios does) instead
//! of staying empty for 30 days. A window that is no multiple of a shorter
//! one (or would need more than [`MAX_TILES`] tiles) stays exact.

use std::time::Duration;

/// At most this many tiles per window: 30d from 3d is 10, 28d from 1d 28.
pub const MAX_TILES: u64 = 32;

/// How the rules compute each window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Only the shortest window reads raw samples; longer ones are tiled
    /// from recorded shorter windows.
    #[default]
    Recorded,
    /// Every window reads the raw counters (`rate(x[30d])`): exact, and
    /// costs a window's worth of samples per series per evaluation.
    Exact,
}

/// Where one window's rates come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The indicator's queries over the raw series.
    Raw,
    /// The mean of `tiles` consecutive values of the recorded window `from`.
    Tiled { from: Duration, tiles: u64 },
}

/// For each window (sorted, no duplicates), its source. Pure.
pub fn plan(windows: &[Duration], mode: Mode) -> Vec<(Duration, Source)> {
    let mut out: Vec<(Duration, Source)> = Vec::with_capacity(windows.len());
    for &w in windows {
        let source = match mode {
            Mode::Exact => Source::Raw,
            Mode::Recorded => out
                .iter()
                .map(|(d, _)| *d)
                .filter(|d| !d.is_zero() && *d < w && w.as_millis() % d.as_millis() == 0)
                .map(|d| {
                    (
                        d,
                        u64::try_from(w.as_millis() / d.as_millis()).unwrap_or(u64::MAX),
                    )
                })
                .filter(|(_, n)| *n <= MAX_TILES)
                // The fewest tiles: the longest shorter window that fits.
                .min_by_key(|(_, n)| *n)
                .map_or(Source::Raw, |(from, tiles)| Source::Tiled { from, tiles }),
        };
        out.push((w, source));
    }
    out
}

/// The expression that tiles `metric` (a recorded rate over `from`,
/// selected by `selector`) into `tiles` consecutive windows. Pure.
pub fn tiled_expr(metric: &str, selector: &str, from: Duration, tiles: u64) -> String {
    let series = format!("{metric}{selector}");
    let terms: Vec<String> = (0..tiles)
        .map(|k| match k {
            0 => series.clone(),
            // Older than the recorded history: no events in that tile
            // (the current series times zero keeps the labels).
            _ => format!(
                "({series} offset {} or {series} * 0)",
                crate::duration::format_duration(
                    from.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX))
                )
            ),
        })
        .collect();
    format!("({}) / {tiles}", terms.join(" + "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Duration {
        crate::duration::parse_duration(text).expect("duration")
    }

    #[test]
    fn each_window_tiles_the_longest_shorter_window_that_divides_it() {
        let windows: Vec<Duration> = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]
            .iter()
            .map(|w| d(w))
            .collect();
        let got: Vec<(String, String)> = plan(&windows, Mode::Recorded)
            .into_iter()
            .map(|(w, s)| {
                (
                    crate::duration::format_duration(w),
                    match s {
                        Source::Raw => "raw".to_owned(),
                        Source::Tiled { from, tiles } => {
                            format!("{tiles}x{}", crate::duration::format_duration(from))
                        }
                    },
                )
            })
            .collect();
        let want = [
            ("5m", "raw"),
            ("30m", "6x5m"),
            ("1h", "2x30m"),
            ("2h", "2x1h"),
            ("6h", "3x2h"),
            ("1d", "4x6h"),
            ("3d", "3x1d"),
            ("30d", "10x3d"),
        ];
        assert_eq!(
            got,
            want.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<Vec<_>>()
        );
        assert!(
            plan(&windows, Mode::Exact)
                .iter()
                .all(|(_, s)| *s == Source::Raw)
        );
    }

    #[test]
    fn windows_without_a_divisor_or_with_too_many_tiles_stay_raw() {
        let cases: &[(&[&str], &str, Source)] = &[
            // 7m is no multiple of 5m.
            (&["5m", "7m"], "7m", Source::Raw),
            // 1d from 5m would be 288 tiles.
            (&["5m", "1d"], "1d", Source::Raw),
            (
                &["5m", "2h40m"],
                "2h40m",
                Source::Tiled {
                    from: d("5m"),
                    tiles: 32,
                },
            ),
            (
                &["30s", "1m", "2m", "10m", "1h"],
                "1h",
                Source::Tiled {
                    from: d("10m"),
                    tiles: 6,
                },
            ),
        ];
        for (windows, which, want) in cases {
            let ws: Vec<Duration> = windows.iter().map(|w| d(w)).collect();
            let got = plan(&ws, Mode::Recorded)
                .into_iter()
                .find(|(w, _)| *w == d(which))
                .map(|(_, s)| s);
            assert_eq!(got, Some(*want), "{windows:?} {which}");
        }
    }

    #[test]
    fn tiles_look_back_by_whole_windows_and_count_missing_history_as_nothing() {
        let e = tiled_expr("m", "{slo=\"a\"}", d("30m"), 3);
        assert_eq!(
            e,
            "(m{slo=\"a\"} + (m{slo=\"a\"} offset 30m or m{slo=\"a\"} * 0) + (m{slo=\"a\"} offset 1h or m{slo=\"a\"} * 0)) / 3"
        );
        promql_parser::parser::parse(&e).expect("PromQL");
    }
}
