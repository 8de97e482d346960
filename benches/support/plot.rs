//! Latency percentile curves as a hand-written SVG: one curve per server
//! run, percentile on the x axis (spaced by nines: 0, 90, 99, 99.9, ...),
//! round-trip latency on a log y axis.

use std::fmt::Write as _;
use std::io;

use hdrhistogram::Histogram;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 50.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// One curve: its legend and its latencies (nanoseconds).
pub struct Curve<'a> {
    pub name: String,
    pub latency: &'a Histogram<u64>,
}

/// Writes the curves to `path` as SVG, titled `title`.
pub fn write_svg(path: &str, title: &str, curves: &[Curve]) -> io::Result<()> {
    std::fs::write(path, svg(title, curves))
}

/// The SVG text. The x axis reaches the percentile the smallest sample can
/// still tell apart (`1 - 1/count`), at most 99.999; below that, a point
/// would be one request.
pub fn svg(title: &str, curves: &[Curve]) -> String {
    let samples = curves
        .iter()
        .map(|c| c.latency.len())
        .min()
        .unwrap_or(0)
        .max(10);
    let nines = (samples as f64).log10().floor().clamp(1.0, 5.0);
    let us = |h: &Histogram<u64>, q: f64| (h.value_at_quantile(q) as f64 / 1000.0).max(1.0);
    let quantile = |x: f64| 1.0 - 10f64.powf(-x);
    let lowest = curves
        .iter()
        .map(|c| us(c.latency, 0.0))
        .fold(f64::MAX, f64::min);
    let highest = curves
        .iter()
        .map(|c| us(c.latency, quantile(nines)))
        .fold(1.0, f64::max);
    let (y_lo, y_hi) = (
        lowest.log10().floor(),
        highest.log10().ceil().max(lowest.log10().floor() + 1.0),
    );
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |x: f64| LEFT + x / nines * plot_w;
    let py = |us: f64| TOP + (y_hi - us.log10()) / (y_hi - y_lo) * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid: one vertical line per nine, one horizontal line per decade and
    // lighter ones at 2x and 5x.
    for nine in 0..=nines as usize {
        let x = px(nine as f64);
        let label = match nine {
            0 => "0%".to_string(),
            n => format!(
                "{:.*}%",
                n.saturating_sub(2),
                100.0 - 100.0 * 10f64.powi(-(n as i32))
            ),
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 20.0
        );
    }
    for decade in y_lo as i32..=y_hi as i32 {
        for (step, colour) in [(1.0, "#ccc"), (2.0, "#eee"), (5.0, "#eee")] {
            let value = step * 10f64.powi(decade);
            if value.log10() > y_hi + 1e-9 {
                continue;
            }
            let y = py(value);
            let _ = writeln!(
                out,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}"/>"#,
                LEFT + plot_w
            );
            if step == 1.0 {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    LEFT - 8.0,
                    y + 4.0,
                    micros(value)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">round-trip latency (log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    for (i, curve) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = (0..=200)
            .map(|step| {
                let x = nines * step as f64 / 200.0;
                format!("{:.1},{:.1}", px(x), py(us(curve.latency, quantile(x))))
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let legend_y = TOP + 20.0 + 20.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{} (p50 {}, p99 {})</text>"#,
            LEFT + 15.0,
            legend_y - 4.0,
            LEFT + 40.0,
            legend_y - 4.0,
            LEFT + 48.0,
            legend_y,
            escape(&curve.name),
            micros(us(curve.latency, 0.5)),
            micros(us(curve.latency, 0.99)),
        );
    }
    out.push_str("</svg>\n");
    out
}

/// `value` µs as a short label: 50 µs, 1.2 ms, 3 s.
fn micros(value: f64) -> String {
    if value >= 1e6 {
        format!("{} s", trim(value / 1e6))
    } else if value >= 1e3 {
        format!("{} ms", trim(value / 1e3))
    } else {
        format!("{} µs", trim(value))
    }
}

fn trim(value: f64) -> String {
    if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
