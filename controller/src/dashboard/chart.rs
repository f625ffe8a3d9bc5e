//! A burn-rate chart drawn on the server as SVG: no script, readable
//! without JavaScript, small.

use maud::{Markup, html};

/// One line of the chart.
pub struct Series {
    pub name: String,
    /// (unix seconds, burn rate)
    pub points: Vec<(f64, f64)>,
}

/// A vertical marker, e.g. injection or restore.
pub struct Marker {
    pub at: f64,
    pub label: String,
}

const W: f64 = 760.0;
const H: f64 = 220.0;
const PAD_L: f64 = 44.0;
const PAD_B: f64 = 22.0;
const PAD_T: f64 = 10.0;
const COLOURS: [&str; 4] = ["#1f6feb", "#8250df", "#bf8700", "#1a7f37"];

/// The chart, or `None` when there is nothing to draw.
pub fn burn_rate_chart(
    series: &[Series],
    markers: &[Marker],
    threshold: Option<f64>,
) -> Option<Markup> {
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if all.is_empty() {
        return None;
    }
    let t0 = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let t1 = all
        .iter()
        .map(|p| p.0)
        .fold(f64::NEG_INFINITY, f64::max)
        .max(t0 + 1.0);
    let ymax = all
        .iter()
        .map(|p| p.1)
        .chain(threshold)
        .fold(1.0_f64, f64::max)
        * 1.1;
    let x = |t: f64| PAD_L + (t - t0) / (t1 - t0) * (W - PAD_L - 5.0);
    let y = |v: f64| PAD_T + (1.0 - v / ymax) * (H - PAD_T - PAD_B);
    Some(html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label="burn rate across the run" {
            rect x="0" y="0" width=(W) height=(H) fill="#fff" {}
            line x1=(PAD_L) y1=(y(0.0)) x2=(W - 5.0) y2=(y(0.0)) stroke="#888" {}
            line x1=(PAD_L) y1=(PAD_T) x2=(PAD_L) y2=(y(0.0)) stroke="#888" {}
            text x="4" y=(PAD_T + 10.0) font-size="11" { (format!("{ymax:.1}")) }
            text x="4" y=(y(0.0)) font-size="11" { "0" }
            text x=(PAD_L) y=(H - 6.0) font-size="11" { (format!("{:.0}s", 0.0)) }
            text x=(W - 40.0) y=(H - 6.0) font-size="11" { (format!("{:.0}s", t1 - t0)) }
            @if let Some(th) = threshold {
                line x1=(PAD_L) y1=(y(th)) x2=(W - 5.0) y2=(y(th)) stroke="#c23030" stroke-dasharray="4 3" {}
                text x=(W - 150.0) y=(y(th) - 3.0) font-size="11" fill="#c23030" { "abort at " (format!("{th:.2}")) }
            }
            @for m in markers {
                @if m.at >= t0 && m.at <= t1 {
                    line x1=(x(m.at)) y1=(PAD_T) x2=(x(m.at)) y2=(y(0.0)) stroke="#444" stroke-dasharray="2 2" {}
                    text x=(x(m.at) + 3.0) y=(PAD_T + 10.0) font-size="11" { (m.label) }
                }
            }
            @for (i, s) in series.iter().enumerate() {
                polyline fill="none" stroke=(COLOURS[i % COLOURS.len()]) stroke-width="1.5"
                    points=(s.points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect::<Vec<_>>().join(" ")) {}
                text x=(PAD_L + 8.0 + 140.0 * i as f64) y=(H - 6.0 - 14.0) font-size="11" fill=(COLOURS[i % COLOURS.len()]) { (s.name) }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_markers_and_threshold() {
        let series = [Series {
            name: "checkout <5m>".into(),
            points: vec![(100.0, 0.5), (110.0, 2.0), (120.0, 12.0)],
        }];
        let markers = [
            Marker {
                at: 105.0,
                label: "inject".into(),
            },
            Marker {
                at: 500.0,
                label: "outside".into(),
            },
        ];
        let svg = burn_rate_chart(&series, &markers, Some(10.0))
            .expect("chart")
            .into_string();
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("abort at 10.00"));
        assert!(svg.contains(">inject<"));
        assert!(
            !svg.contains("outside"),
            "markers outside the range are left out"
        );
        assert!(svg.contains("checkout &lt;5m&gt;"));
        assert!(burn_rate_chart(&[], &[], None).is_none());
    }
}
