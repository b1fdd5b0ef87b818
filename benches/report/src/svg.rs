//! A hand-written SVG line chart with log-scaled x and y axes, side-by-side
//! panels sharing one scale, and a legend. It knows nothing of softmax.
//!
//! Written by hand: a chart like this is a few hundred SVG elements, and a
//! plotting crate would cost more to build than this file, for a different chart.

use std::fmt::Write as _;

/// One measurement. Points with `on_line` are joined by the series' line;
/// the others are drawn as hollow markers only.
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub on_line: bool,
}

pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// An SVG `stroke-dasharray` ("" for a solid line).
    pub dash: &'static str,
    pub points: Vec<Point>,
}

pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// x values to mark and label exactly (e.g. the row lengths measured);
    /// empty for 1-2-5 ticks.
    pub x_ticks: Vec<f64>,
    /// Lines of small print under the chart.
    pub notes: Vec<String>,
    pub panels: Vec<Panel>,
}

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 340.0;
const MARGIN_L: f64 = 64.0;
const MARGIN_R: f64 = 16.0;
const MARGIN_T: f64 = 56.0;
const MARGIN_B: f64 = 48.0;
const LEGEND_W: f64 = 230.0;
const NOTE_LINE_H: f64 = 15.0;

/// A log10 axis: `lo` and `hi` are log10 of the ends, mapped onto `[p0, p1]` pixels.
struct LogAxis {
    lo: f64,
    hi: f64,
    p0: f64,
    p1: f64,
}

impl LogAxis {
    /// Every value, with a margin so markers do not sit on the frame.
    fn covering(values: impl Iterator<Item = f64>, p0: f64, p1: f64) -> Self {
        const MARGIN_DECADES: f64 = 0.12;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v.log10());
            hi = hi.max(v.log10());
        }
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 0.5 {
            let mid = (lo + hi) / 2.0;
            (lo, hi) = (mid - 0.25, mid + 0.25);
        }
        Self {
            lo: lo - MARGIN_DECADES,
            hi: hi + MARGIN_DECADES,
            p0,
            p1,
        }
    }

    fn pixel(&self, v: f64) -> f64 {
        self.p0 + (v.log10() - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)
    }

    /// (value, labelled) for 1, 2 and 5 times every power of ten in range;
    /// 2 and 5 are labelled only where a decade is tall enough for three labels.
    fn ticks(&self) -> Vec<(f64, bool)> {
        let pixels_per_decade = (self.p1 - self.p0).abs() / (self.hi - self.lo);
        let mut ticks = Vec::new();
        for decade in self.lo.floor() as i32..=self.hi.ceil() as i32 {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powi(decade);
                if (self.lo..=self.hi).contains(&v.log10()) {
                    ticks.push((v, m == 1.0 || pixels_per_decade >= 60.0));
                }
            }
        }
        ticks
    }
}

/// "128", "4k", "1M", "0.5": short tick labels.
fn tick_label(v: f64) -> String {
    let (scaled, suffix) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let digits = if scaled >= 1.0 { 0 } else { 3 };
    let text = format!("{scaled:.digits$}");
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    };
    format!("{text}{suffix}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole chart as an SVG document.
pub fn render(chart: &Chart) -> String {
    let panels = chart.panels.len().max(1) as f64;
    let width = panels * PANEL_W + LEGEND_W;
    let height = PANEL_H + chart.notes.len() as f64 * NOTE_LINE_H + 12.0;
    let all_points = || {
        chart
            .panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    // Every panel shares the same axes so they can be compared by eye.
    let x = LogAxis::covering(all_points().map(|p| p.x), MARGIN_L, PANEL_W - MARGIN_R);
    let y = LogAxis::covering(all_points().map(|p| p.y), PANEL_H - MARGIN_B, MARGIN_T);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="16" font-weight="bold">{}</text>"#,
        MARGIN_L,
        escape(&chart.title)
    );
    for (i, panel) in chart.panels.iter().enumerate() {
        let dx = i as f64 * PANEL_W;
        let _ = writeln!(svg, r#"<g transform="translate({dx},0)">"#);
        draw_axes(&mut svg, chart, &panel.title, &x, &y);
        for series in &panel.series {
            draw_series(&mut svg, series, &x, &y);
        }
        let _ = writeln!(svg, "</g>");
    }
    draw_legend(&mut svg, chart, panels * PANEL_W);
    for (i, note) in chart.notes.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" font-size="11" fill="#444">{}</text>"##,
            MARGIN_L,
            PANEL_H + 4.0 + i as f64 * NOTE_LINE_H,
            escape(note)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_axes(svg: &mut String, chart: &Chart, title: &str, x: &LogAxis, y: &LogAxis) {
    let (left, right, top, bottom) = (x.p0, x.p1, y.p1, y.p0);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        (left + right) / 2.0,
        top - 10.0,
        escape(title)
    );
    // Explicit x ticks carry exact labels (row lengths like 32000 and 128256).
    let x_ticks: Vec<(f64, bool, String)> = match chart.x_ticks.is_empty() {
        true => x
            .ticks()
            .into_iter()
            .map(|(v, l)| (v, l, tick_label(v)))
            .collect(),
        false => chart
            .x_ticks
            .iter()
            .map(|&v| (v, true, format!("{v}")))
            .collect(),
    };
    for (v, labelled, label) in x_ticks {
        let px = x.pixel(v);
        let shade = if labelled { "#ccc" } else { "#eee" };
        let _ = writeln!(
            svg,
            r#"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="{shade}"/>"#
        );
        if labelled {
            let _ = writeln!(
                svg,
                r#"<text x="{px:.1}" y="{}" text-anchor="middle" font-size="10">{label}</text>"#,
                bottom + 15.0,
            );
        }
    }
    for (v, labelled) in y.ticks() {
        let py = y.pixel(v);
        let shade = if labelled { "#ccc" } else { "#eee" };
        let _ = writeln!(
            svg,
            r#"<line x1="{left}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="{shade}"/>"#
        );
        if !labelled {
            continue;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            py + 4.0,
            tick_label(v)
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        right - left,
        bottom - top
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        bottom + 36.0,
        escape(&chart.x_label)
    );
    let (lx, ly) = (left - 46.0, (top + bottom) / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{lx}" y="{ly}" text-anchor="middle" transform="rotate(-90 {lx} {ly})">{}</text>"#,
        escape(&chart.y_label)
    );
}

fn draw_series(svg: &mut String, series: &Series, x: &LogAxis, y: &LogAxis) {
    let mut points: Vec<&Point> = series.points.iter().collect();
    points.sort_by(|a, b| a.x.total_cmp(&b.x));
    let line: Vec<String> = points
        .iter()
        .filter(|p| p.on_line)
        .map(|p| format!("{:.1},{:.1}", x.pixel(p.x), y.pixel(p.y)))
        .collect();
    if line.len() > 1 {
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.8" stroke-dasharray="{}"/>"#,
            line.join(" "),
            series.color,
            series.dash
        );
    }
    for p in points {
        let fill = if p.on_line { series.color } else { "white" };
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{fill}" stroke="{}" stroke-width="1.3"><title>{}: {} → {:.3}</title></circle>"#,
            x.pixel(p.x),
            y.pixel(p.y),
            series.color,
            escape(&series.label),
            p.x,
            p.y
        );
    }
}

fn draw_legend(svg: &mut String, chart: &Chart, left: f64) {
    // Panels usually hold the same series; list each label once, in first-seen order.
    let mut seen: Vec<&Series> = Vec::new();
    for series in chart.panels.iter().flat_map(|p| &p.series) {
        if !seen.iter().any(|s| s.label == series.label) {
            seen.push(series);
        }
    }
    for (i, series) in seen.iter().enumerate() {
        let ly = MARGIN_T + 6.0 + i as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2" stroke-dasharray="{}"/>"#,
            left + 4.0,
            left + 34.0,
            series.color,
            series.dash
        );
        let _ = writeln!(
            svg,
            r#"<circle cx="{}" cy="{ly}" r="3" fill="{}"/>"#,
            left + 19.0,
            series.color
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            left + 40.0,
            ly + 4.0,
            escape(&series.label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(100.0), "100");
        assert_eq!(tick_label(2000.0), "2k");
        assert_eq!(tick_label(1e6), "1M");
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(0.01), "0.01");
    }

    #[test]
    fn axis_covers_every_value_with_a_margin() {
        let axis = LogAxis::covering([100.0, 100_000.0].into_iter(), 0.0, 100.0);
        assert!(axis.pixel(100.0) > 0.0 && axis.pixel(100.0) < 10.0);
        assert!(axis.pixel(1e5) < 100.0 && axis.pixel(1e5) > 90.0);
        let ticks = axis.ticks();
        assert_eq!(ticks.first().map(|t| t.0), Some(100.0));
        assert_eq!(ticks.last().map(|t| t.0), Some(100_000.0));
    }

    #[test]
    fn render_escapes_text_and_closes() {
        let chart = Chart {
            title: "a < b & c".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_ticks: vec![10.0, 100.0],
            notes: vec![],
            panels: vec![Panel {
                title: "p".into(),
                series: vec![Series {
                    label: "s".into(),
                    color: "red",
                    dash: "",
                    points: vec![
                        Point {
                            x: 10.0,
                            y: 1.0,
                            on_line: true,
                        },
                        Point {
                            x: 100.0,
                            y: 2.0,
                            on_line: true,
                        },
                    ],
                }],
            }],
        };
        let svg = render(&chart);
        assert!(svg.contains("a &lt; b &amp; c"));
        assert!(svg.contains("<polyline"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
