//! The simulation plot: one panel per policy, queued steps and runners over time.

use std::path::Path;

use anyhow::{Result, anyhow};
use bbrunner_core::simulate::{PolicyResult, Sample};
use plotters::prelude::*;

const PANEL_HEIGHT: u32 = 260;

/// A line of the plot: its legend, its colour, and the value it follows.
type Series = (&'static str, RGBColor, fn(&Sample) -> u32);

pub fn write_svg(path: &Path, results: &[PolicyResult]) -> Result<()> {
    let height = PANEL_HEIGHT * results.len().max(1) as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let panels = root.split_evenly((results.len().max(1), 1));
    let x_max = results
        .iter()
        .flat_map(|r| r.timeline.last())
        .map(|s| s.t / 3600.0)
        .fold(0.1, f64::max);
    let y_max = results
        .iter()
        .flat_map(|r| &r.timeline)
        .map(|s| s.queued.max(s.online + s.starting))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    for (result, panel) in results.iter().zip(panels) {
        draw_panel(&panel, result, x_max, y_max).map_err(|e| anyhow!("plot: {e}"))?;
    }
    root.present()
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    result: &PolicyResult,
    x_max: f64,
    y_max: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let caption = format!(
        "{}: p95 wait {:.0} s, idle {:.1} runner-h, {} failed",
        result.name, result.p95_wait_s, result.idle_runner_hours, result.failed_steps
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("hours")
        .y_desc("count")
        .draw()?;
    let series: [Series; 4] = [
        ("queued steps", RED, |s| s.queued),
        ("runners online", BLUE, |s| s.online),
        ("runners busy", GREEN, |s| s.busy),
        ("runners starting", RGBColor(150, 150, 150), |s| s.starting),
    ];
    for (name, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                result
                    .timeline
                    .iter()
                    .map(|s| (s.t / 3600.0, f64::from(value(s)))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}
