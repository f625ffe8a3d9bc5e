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

/// Height of one row of marker labels.
const ROW_H: f64 = 13.0;
/// Width of one character at font-size 11 (a generous average, so that
/// labels estimated apart are apart in any sans-serif font).
const CHAR_W: f64 = 6.6;
/// Space kept between two labels on one row.
const LABEL_GAP: f64 = 4.0;

/// Where a marker's label is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LabelPlace {
    /// The text's anchor: its start, or its end when `end_anchored`.
    x: f64,
    /// Row below the top (0 = first).
    row: usize,
    /// Drawn to the left of its line (it would leave the chart otherwise).
    end_anchored: bool,
}

impl LabelPlace {
    /// The horizontal extent the text covers.
    fn span(&self, label: &str) -> (f64, f64) {
        let w = label_width(label);
        if self.end_anchored {
            (self.x - w, self.x)
        } else {
            (self.x, self.x + w)
        }
    }
}

fn label_width(label: &str) -> f64 {
    CHAR_W * label.chars().count() as f64
}

/// Place each marker's label (given its line's x) so that no two overlap:
/// beside its line, on the first row where it fits. Markers close in time
/// (inject, abort and restore a second apart) would otherwise print on top
/// of each other. Pure, so the positions are tested without a browser.
fn place_labels(markers: &[(f64, &str)]) -> Vec<LabelPlace> {
    let mut order: Vec<usize> = (0..markers.len()).collect();
    order.sort_by(|a, b| markers[*a].0.total_cmp(&markers[*b].0));
    let mut taken: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut out = vec![
        LabelPlace {
            x: 0.0,
            row: 0,
            end_anchored: false,
        };
        markers.len()
    ];
    for i in order {
        let (line_x, label) = markers[i];
        let end_anchored = line_x + 3.0 + label_width(label) > W - 5.0;
        let x = if end_anchored {
            line_x - 3.0
        } else {
            line_x + 3.0
        };
        let mut place = LabelPlace {
            x,
            row: 0,
            end_anchored,
        };
        let (a, b) = place.span(label);
        let fits = |row: &Vec<(f64, f64)>| {
            row.iter()
                .all(|(s, e)| b + LABEL_GAP <= *s || a >= *e + LABEL_GAP)
        };
        place.row = taken.iter().position(fits).unwrap_or(taken.len());
        if place.row == taken.len() {
            taken.push(Vec::new());
        }
        taken[place.row].push((a, b));
        out[i] = place;
    }
    out
}

/// A time span drawn as a shaded band that links somewhere, e.g. a run on
/// the SLO page.
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
    /// Shown on hover.
    pub title: String,
    pub href: String,
    /// Fill and label colour, e.g. red for a refuted run.
    pub colour: &'static str,
}

/// A horizontal line with its label, e.g. the abort threshold.
pub struct Threshold {
    pub value: f64,
    pub label: String,
}

/// What one chart shows. The run page and the SLO page draw with the same
/// code; they differ in these fields only.
#[derive(Default)]
pub struct Chart<'a> {
    /// For screen readers.
    pub aria_label: &'a str,
    pub series: &'a [Series],
    pub markers: &'a [Marker],
    pub bands: &'a [Band],
    pub threshold: Option<Threshold>,
    /// The time span drawn; by default the data's.
    pub span: Option<(f64, f64)>,
    /// Text at the left and right ends of the time axis; by default the
    /// seconds since the start ("0s" … "95s").
    pub time_labels: Option<(String, String)>,
    /// Appended to the value axis' top label, e.g. `%`.
    pub unit: &'a str,
}

/// The burn-rate chart of a run, or `None` when there is nothing to draw.
pub fn burn_rate_chart(
    series: &[Series],
    markers: &[Marker],
    threshold: Option<f64>,
) -> Option<Markup> {
    draw(&Chart {
        aria_label: "burn rate across the run",
        series,
        markers,
        threshold: threshold.map(|th| Threshold {
            value: th,
            label: format!("abort at {th:.2}"),
        }),
        ..Chart::default()
    })
}

/// The chart, or `None` when there is no point to draw.
pub fn draw(c: &Chart<'_>) -> Option<Markup> {
    let all: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if all.is_empty() {
        return None;
    }
    let (t0, t1) = c.span.unwrap_or_else(|| {
        (
            all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
            all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
        )
    });
    let t1 = t1.max(t0 + 1.0);
    let threshold = c.threshold.as_ref().map(|t| t.value);
    let ymax = all
        .iter()
        .map(|p| p.1)
        .chain(threshold)
        .fold(1.0_f64, f64::max)
        * 1.1;
    // Below zero only when a value is (a budget overspent): the zero line
    // then moves up and the lowest value sets the bottom.
    let ymin = all.iter().map(|p| p.1).fold(0.0_f64, f64::min) * 1.1;
    let x = |t: f64| PAD_L + (t.clamp(t0, t1) - t0) / (t1 - t0) * (W - PAD_L - 5.0);
    let y = |v: f64| PAD_T + (ymax - v) / (ymax - ymin) * (H - PAD_T - PAD_B);
    let inside: Vec<&Marker> = c
        .markers
        .iter()
        .filter(|m| m.at >= t0 && m.at <= t1)
        .collect();
    let bands: Vec<&Band> = c
        .bands
        .iter()
        .filter(|b| b.to >= t0 && b.from <= t1)
        .collect();
    // Marker and band labels share the rows, so neither covers the other.
    let places = place_labels(
        &inside
            .iter()
            .map(|m| (x(m.at), m.label.as_str()))
            .chain(bands.iter().map(|b| (x(b.from), b.label.as_str())))
            .collect::<Vec<_>>(),
    );
    let (marker_places, band_places) = places.split_at(inside.len());
    let shown: Vec<(&Marker, &LabelPlace)> = inside.into_iter().zip(marker_places).collect();
    let bands: Vec<(&Band, &LabelPlace)> = bands.into_iter().zip(band_places).collect();
    let label_y = |at: &LabelPlace| PAD_T + 10.0 + ROW_H * at.row as f64;
    // The threshold's label goes above its line, unless that is where the
    // marker labels' rows are (a line near the top): then below it.
    let rows_bottom = places
        .iter()
        .map(|p| label_y(p) + 3.0)
        .fold(0.0_f64, f64::max);
    let threshold_label_y = |v: f64| {
        if y(v) - 13.0 < rows_bottom {
            y(v) + 12.0
        } else {
            y(v) - 3.0
        }
    };
    let (left, right) = c
        .time_labels
        .clone()
        .unwrap_or_else(|| ("0s".to_owned(), format!("{:.0}s", t1 - t0)));
    Some(html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(c.aria_label) {
            rect x="0" y="0" width=(W) height=(H) fill="#fff" {}
            @for (b, at) in &bands {
                a.band href=(b.href) {
                    title { (b.title) }
                    rect x=(x(b.from)) y=(PAD_T) width=((x(b.to) - x(b.from)).max(2.0)) height=(y(ymin) - PAD_T) fill=(b.colour) fill-opacity="0.15" {}
                    text x=(at.x) y=(label_y(at)) font-size="11" text-anchor=(if at.end_anchored { "end" } else { "start" }) fill=(b.colour) { (b.label) }
                }
            }
            line x1=(PAD_L) y1=(y(0.0)) x2=(W - 5.0) y2=(y(0.0)) stroke="#888" {}
            line x1=(PAD_L) y1=(PAD_T) x2=(PAD_L) y2=(y(ymin)) stroke="#888" {}
            text x="4" y=(PAD_T + 10.0) font-size="11" { (format!("{ymax:.1}{}", c.unit)) }
            text x="4" y=(y(0.0)) font-size="11" { "0" }
            @if ymin < 0.0 { text x="4" y=(y(ymin)) font-size="11" { (format!("{ymin:.1}{}", c.unit)) } }
            text x=(PAD_L) y=(H - 6.0) font-size="11" { (left) }
            text x=(W - 5.0) y=(H - 6.0) font-size="11" text-anchor="end" { (right) }
            @if let Some(th) = &c.threshold {
                line x1=(PAD_L) y1=(y(th.value)) x2=(W - 5.0) y2=(y(th.value)) stroke="#c23030" stroke-dasharray="4 3" {}
                text x=(W - 5.0) y=(threshold_label_y(th.value)) font-size="11" text-anchor="end" fill="#c23030" pointer-events="none" { (th.label) }
            }
            @for (m, at) in &shown {
                line x1=(x(m.at)) y1=(PAD_T) x2=(x(m.at)) y2=(y(ymin)) stroke="#444" stroke-dasharray="2 2" {}
                @if at.end_anchored {
                    text x=(at.x) y=(label_y(at)) font-size="11" text-anchor="end" { (m.label) }
                } @else {
                    text x=(at.x) y=(label_y(at)) font-size="11" { (m.label) }
                }
            }
            @for (i, s) in c.series.iter().enumerate() {
                polyline fill="none" stroke=(COLOURS[i % COLOURS.len()]) stroke-width="1.5" pointer-events="none"
                    points=(s.points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect::<Vec<_>>().join(" ")) {}
                text x=(PAD_L + 8.0 + 140.0 * i as f64) y=(H - 6.0 - 14.0) font-size="11" fill=(COLOURS[i % COLOURS.len()]) pointer-events="none" { (s.name) }
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

    #[test]
    fn bands_link_to_their_runs_and_a_negative_budget_stays_inside() {
        let series = [Series {
            name: "budget remaining".into(),
            points: vec![(0.0, 100.0), (50.0, 20.0), (100.0, -40.0)],
        }];
        let bands = [
            Band {
                from: 40.0,
                to: 60.0,
                label: "Refuted".into(),
                title: "r-1 (e)".into(),
                href: "/runs/shop/r-1".into(),
                colour: "#c23030",
            },
            Band {
                from: 500.0,
                to: 600.0,
                label: "later".into(),
                title: String::new(),
                href: "/runs/shop/r-2".into(),
                colour: "#c23030",
            },
        ];
        let svg = draw(&Chart {
            aria_label: "budget",
            series: &series,
            bands: &bands,
            span: Some((0.0, 200.0)),
            time_labels: Some(("200s ago".into(), "now".into())),
            unit: "%",
            ..Chart::default()
        })
        .expect("chart")
        .into_string();
        assert!(svg.contains(r#"href="/runs/shop/r-1""#), "{svg}");
        assert!(svg.contains(">Refuted<"));
        assert!(!svg.contains("r-2"), "bands outside the span are left out");
        assert!(svg.contains(">200s ago<") && svg.contains(">now<"));
        assert!(
            svg.contains(">-44.0%<"),
            "the bottom label shows the lowest value: {svg}"
        );
        // Every point's y is within the drawing area.
        let points = svg.split("points=\"").nth(1).expect("points");
        for p in points.split('"').next().expect("list").split(' ') {
            let y: f64 = p.split(',').nth(1).expect("y").parse().expect("number");
            assert!((PAD_T..=H - PAD_B).contains(&y), "{p} outside");
        }
    }

    /// A threshold near the top (burn rates far below 1×) would print its
    /// label across the band labels' first row: it goes below its line.
    #[test]
    fn a_threshold_label_near_the_top_moves_below_the_band_labels() {
        let series = [Series {
            name: "burn".into(),
            points: vec![(0.0, 0.0), (100.0, 0.0)],
        }];
        let bands = [Band {
            from: 90.0,
            to: 95.0,
            label: "Confirmed".into(),
            title: String::new(),
            href: "/runs/a/b".into(),
            colour: "#2e7d32",
        }];
        let chart = |bands: &[Band]| {
            draw(&Chart {
                series: &series,
                bands,
                threshold: Some(Threshold {
                    value: 1.0,
                    label: "1x".into(),
                }),
                ..Chart::default()
            })
            .expect("chart")
            .into_string()
        };
        let y_of = |svg: &str, label: &str| -> f64 {
            let end = svg.find(&format!(">{label}<")).expect(label);
            let start = svg[..end].rfind("<text").expect("text element");
            let attrs = &svg[start..end];
            let y = attrs.find(" y=\"").expect("y") + 4;
            attrs[y..]
                .split('"')
                .next()
                .expect("y")
                .parse()
                .expect("number")
        };
        let with_band = chart(&bands);
        assert!(y_of(&with_band, "1x") - 10.0 > y_of(&with_band, "Confirmed") + 3.0);
        let alone = chart(&[]);
        assert!(
            y_of(&alone, "1x") < y_of(&with_band, "1x"),
            "above its line when free"
        );
    }

    fn overlap(a: (f64, f64), b: (f64, f64)) -> bool {
        a.0 < b.1 && b.0 < a.1
    }

    #[test]
    fn labels_of_close_markers_never_overlap() {
        // (line x and label of each marker, rows expected)
        type Case<'a> = (&'a [(f64, &'a str)], &'a [usize]);
        let cases: [Case; 5] = [
            // Far apart: one row.
            (&[(100.0, "inject"), (400.0, "restore")], &[0, 0]),
            // A second apart: stacked.
            (
                &[(100.0, "inject"), (102.0, "abort"), (104.0, "restore")],
                &[0, 1, 2],
            ),
            // Out of order in the input: placed by position all the same.
            (&[(104.0, "restore"), (100.0, "inject")], &[1, 0]),
            // Close to the right edge: drawn left of the line, still apart.
            (&[(740.0, "abort"), (750.0, "restore")], &[0, 1]),
            // Enough room after the first label: back on the first row.
            (
                &[(100.0, "inject"), (102.0, "abort"), (200.0, "restore")],
                &[0, 1, 0],
            ),
        ];
        for (markers, rows) in cases {
            let places = place_labels(markers);
            assert_eq!(
                places.iter().map(|p| p.row).collect::<Vec<_>>(),
                rows.to_vec(),
                "{markers:?}"
            );
            for (i, (p, (_, label))) in places.iter().zip(markers.iter()).enumerate() {
                let span = p.span(label);
                assert!(
                    span.0 >= 0.0 && span.1 <= W,
                    "{label} at {span:?} leaves the chart"
                );
                for (q, (_, other)) in places.iter().zip(markers.iter()).skip(i + 1) {
                    assert!(
                        p.row != q.row || !overlap(span, q.span(other)),
                        "{label} {p:?} overlaps {other} {q:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_svg_puts_close_labels_on_separate_rows() {
        let series = [Series {
            name: "checkout".into(),
            points: vec![(0.0, 0.5), (120.0, 2.0)],
        }];
        let markers = ["inject", "abort", "restore"]
            .iter()
            .enumerate()
            .map(|(i, l)| Marker {
                at: 60.0 + i as f64,
                label: (*l).into(),
            })
            .collect::<Vec<_>>();
        let svg = burn_rate_chart(&series, &markers, None)
            .expect("chart")
            .into_string();
        // The y of each label's <text>, read back from the SVG.
        let y_of = |label: &str| -> String {
            let end = svg.find(&format!(">{label}<")).expect(label);
            let start = svg[..end].rfind("<text").expect("text element");
            let attrs = &svg[start..end];
            let y = attrs.find(" y=\"").expect("y") + 4;
            attrs[y..].split('"').next().expect("y value").to_owned()
        };
        let ys: std::collections::BTreeSet<String> = ["inject", "abort", "restore"]
            .iter()
            .map(|l| y_of(l))
            .collect();
        assert_eq!(ys.len(), 3, "labels share a row: {ys:?}\n{svg}");
    }
}
