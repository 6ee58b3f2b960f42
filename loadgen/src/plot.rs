//! `--plot FILE.svg`: latency percentiles (p50, p90, p99, p99.9) over time,
//! one panel per latency series of the report; with a soak report, the soak
//! series' panel marks the windows over threshold (circles: p99 over 5× the
//! median window's, crosses: over 50 ms) and a last panel shows server RSS
//! and CPU per delivered message per minute. Drawn with plotters' SVG
//! backend only.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{LoadError, Result};
use crate::minutes::MinuteBucket;
use crate::report::{Report, WindowPoint};
use crate::soak::WindowStats;

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

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
    let minutes = report
        .soak
        .as_ref()
        .map(|s| s.minutes.as_slice())
        .filter(|m| !m.is_empty());
    let count = (panels.len() + usize::from(minutes.is_some())).max(1);
    let rows = u32::try_from(count).unwrap_or(1);
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT * rows)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((count, 1));
    for ((name, points), area) in panels.iter().zip(areas.iter()) {
        let title = format!(
            "tern-load {}: {} latency (ms) over time (s)",
            report.scenario, name
        );
        let marks = report
            .soak
            .as_ref()
            .filter(|s| &s.series == *name)
            .map(|s| &s.windows);
        panel(area, &title, points, marks).map_err(&err)?;
    }
    if let (Some(minutes), Some(area)) = (minutes, areas.get(panels.len())) {
        minute_panel(area, &report.scenario, minutes).map_err(&err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn panel(
    area: &Area<'_>,
    title: &str,
    points: &[WindowPoint],
    marks: Option<&WindowStats>,
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
    if let Some(marks) = marks {
        mark_windows(&mut chart, marks, x_max, y_max)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The two thresholds as horizontal lines (when in range) and a marker on
/// every window over one: a circle over 5× the median, a cross over 50 ms.
fn mark_windows(
    chart: &mut Chart<'_, '_>,
    marks: &WindowStats,
    x_max: f64,
    y_max: f64,
) -> Result<(), String> {
    let outlier = (
        "5× median p99",
        marks.outlier_threshold_us,
        RGBColor(255, 140, 0),
    );
    let absolute = ("50 ms", marks.absolute_threshold_us, BLACK);
    for (label, us, color) in [outlier, absolute] {
        let y = us as f64 / 1000.0;
        if y > y_max || us == 0 {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                [(0.0, y), (x_max, y)],
                color.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    let at = |w: &crate::soak::Window| ((w.second + 1) as f64, w.p99_us as f64 / 1000.0);
    let over = |limit: u64| marks.flagged.iter().filter(move |w| w.p99_us > limit);
    chart
        .draw_series(over(marks.outlier_threshold_us).map(|w| Circle::new(at(w), 6, outlier.2)))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(over(marks.absolute_threshold_us).map(|w| Cross::new(at(w), 6, BLACK)))
        .map_err(|e| e.to_string())?;
    Ok(())
}

type Points = Vec<(f64, f64)>;

/// (minutes since the start, RSS MB) and (minutes, CPU µs per message) at
/// the end of each bucket that has them.
fn minute_points(minutes: &[MinuteBucket]) -> (Points, Points) {
    let x = |m: &MinuteBucket| m.end_s / 60.0;
    let rss = minutes
        .iter()
        .filter_map(|m| Some((x(m), m.rss_end_bytes? as f64 / 1e6)))
        .collect();
    let cpu = minutes
        .iter()
        .filter_map(|m| Some((x(m), m.server_cpu_per_msg_us?)))
        .collect();
    (rss, cpu)
}

/// Server RSS (MB, left axis) and CPU per delivered message (µs, right
/// axis) at the end of each minute.
fn minute_panel(area: &Area<'_>, scenario: &str, minutes: &[MinuteBucket]) -> Result<(), String> {
    let (rss, cpu) = minute_points(minutes);
    let x_max = minutes.iter().map(|m| m.end_s / 60.0).fold(1.0, f64::max);
    let top = |v: &[(f64, f64)]| v.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let title =
        format!("tern-load {scenario}: server RSS (MB) and CPU per message (µs) per minute");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..top(&rss))
        .map_err(|e| e.to_string())?
        .set_secondary_coord(0.0..x_max, 0.0..top(&cpu));
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("RSS MB")
        .draw()
        .map_err(e)?;
    let axes = chart
        .configure_secondary_axes()
        .y_desc("CPU µs / message")
        .draw();
    axes.map_err(e)?;
    let dots = |p: &Points, c: RGBColor| -> Vec<Circle<(f64, f64), i32>> {
        p.iter().map(|p| Circle::new(*p, 3, c.filled())).collect()
    };
    let legend =
        |c: RGBColor| move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 16, y)], c);
    chart
        .draw_series(LineSeries::new(rss.clone(), BLUE.stroke_width(2)))
        .map_err(e)?
        .label("server RSS (MB)")
        .legend(legend(BLUE));
    chart.draw_series(dots(&rss, BLUE)).map_err(e)?;
    chart
        .draw_secondary_series(LineSeries::new(cpu.clone(), RED.stroke_width(2)))
        .map_err(e)?
        .label("server CPU per message (µs)")
        .legend(legend(RED));
    chart.draw_secondary_series(dots(&cpu, RED)).map_err(e)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)
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

    #[test]
    fn marks_flagged_windows_and_draws_the_minute_panel() {
        use crate::minutes::{per_minute, ResourceSample};
        use crate::soak::{window_stats, SoakReport, Window};
        let mut r = Report::new("chat", serde_json::Value::Null, TargetInfo::default());
        let windows: Vec<Window> = (0..10u64)
            .map(|second| Window {
                second,
                count: 100,
                p99_us: if second == 4 { 90_000 } else { 2_000 },
            })
            .collect();
        r.timeline.insert(
            "send_deliver".into(),
            windows
                .iter()
                .map(|w| WindowPoint {
                    t_s: (w.second + 1) as f64,
                    count: w.count,
                    p99_us: w.p99_us,
                    p999_us: w.p99_us,
                    max_us: w.p99_us,
                    ..WindowPoint::default()
                })
                .collect(),
        );
        let samples: Vec<ResourceSample> = (0..=4u64)
            .map(|i| ResourceSample {
                t_s: i as f64 * 30.0,
                delivered: i * 100,
                rss_bytes: Some(50_000_000 + i),
                cpu_ns: Some(i * 9_000_000),
            })
            .collect();
        r.soak = Some(SoakReport {
            series: "send_deliver".into(),
            windows: window_stats(&windows, 50_000),
            minutes: per_minute(&samples),
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.svg");
        plot(&r, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("CPU per message (µs) per minute"), "{svg}");
        assert!(svg.contains("5× median p99") && svg.contains("50 ms"));
        // one circle on the flagged window, one per minute on each of 2 lines
        assert_eq!(r.soak.as_ref().unwrap().minutes.len(), 3);
        assert_eq!(svg.matches("<circle").count(), 1 + 2 * 3);
    }
}
