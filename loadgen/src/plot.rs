//! `--plot FILE.svg`: latency percentiles (p50, p90, p99, p99.9) over time,
//! one panel per latency series of the report, drawn with plotters' SVG
//! backend only.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{LoadError, Result};
use crate::report::{Report, WindowPoint};

const PANEL_HEIGHT: u32 = 320;
const WIDTH: u32 = 1000;

type Pick = fn(&WindowPoint) -> u64;

/// The percentile lines drawn in each panel, with their colours.
const LINES: [(&str, Pick, RGBColor); 4] = [
    ("p50", |w| w.p50_us, BLUE),
    ("p90", |w| w.p90_us, GREEN),
    ("p99", |w| w.p99_us, RED),
    ("p99.9", |w| w.p999_us, MAGENTA),
];

/// Writes the report's timelines to `path` as SVG.
pub fn plot(report: &Report, path: &Path) -> Result<()> {
    let panels: Vec<(&String, &Vec<WindowPoint>)> = report
        .timeline
        .iter()
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let err = |detail: String| LoadError::Plot {
        path: path.into(),
        detail,
    };
    let rows = u32::try_from(panels.len().max(1)).unwrap_or(1);
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT * rows)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for ((name, points), area) in panels.iter().zip(areas.iter()) {
        let title = format!(
            "tern-load {}: {} latency (ms) over time (s)",
            report.scenario, name
        );
        panel(area, &title, points).map_err(&err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    points: &[WindowPoint],
) -> Result<(), String> {
    let x_max = points.iter().map(|p| p.t_s).fold(1.0, f64::max);
    let y_max = points
        .iter()
        .map(|p| p.p999_us as f64 / 1000.0)
        .fold(0.001, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    for (label, pick, color) in LINES {
        let series = points.iter().map(|p| (p.t_s, pick(p) as f64 / 1000.0));
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::report::TargetInfo;

    #[test]
    fn writes_an_svg_with_every_series() {
        let mut r = Report::new("chat", serde_json::Value::Null, TargetInfo::default());
        for name in ["send_ack", "send_deliver"] {
            let points = (1..5)
                .map(|t| WindowPoint {
                    t_s: t as f64,
                    count: 10,
                    p50_us: 100 * t,
                    p90_us: 200 * t,
                    p99_us: 300 * t,
                    p999_us: 400 * t,
                    max_us: 500 * t,
                })
                .collect();
            r.timeline.insert(name.into(), points);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        plot(&r, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("send_deliver") && svg.contains("p99.9"));
    }
}
