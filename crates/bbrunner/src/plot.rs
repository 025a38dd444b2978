//! The simulation plot: a title saying what was simulated, one panel per policy (queued steps
//! and runners over time, the pool's max as a dashed line), and a last panel with each
//! policy's distribution of queue waits, the headline figure. Okabe-Ito colours, which
//! colour-blind readers can tell apart.

use std::path::Path;

use anyhow::{Result, anyhow};
use bbrunner_core::simulate::{PolicyResult, Sample};
use plotters::prelude::*;

const WIDTH: u32 = 1000;
const PANEL_HEIGHT: u32 = 260;
const TITLE_HEIGHT: u32 = 40;

const ORANGE: RGBColor = RGBColor(230, 159, 0);
const SKY_BLUE: RGBColor = RGBColor(86, 180, 233);
const GREEN: RGBColor = RGBColor(0, 158, 115);
const VERMILLION: RGBColor = RGBColor(213, 94, 0);
const BLUE: RGBColor = RGBColor(0, 114, 178);
const PURPLE: RGBColor = RGBColor(204, 121, 167);
const GREY: RGBColor = RGBColor(120, 120, 120);
/// One per policy in the distribution panel.
const POLICY_COLOURS: [RGBColor; 6] = [BLUE, VERMILLION, GREEN, ORANGE, PURPLE, SKY_BLUE];

/// A line of a policy's panel: its legend, its colour, and the value it follows.
type Series = (&'static str, RGBColor, fn(&Sample) -> u32);

/// What the plot's title says of the run.
pub struct Title<'a> {
    pub workload: &'a str,
    pub seed: u64,
    pub min: u32,
    pub max: u32,
    pub min_idle: u32,
    pub start_latency_s: f64,
    /// Weeks the forecast learned from before the measured run.
    pub history_weeks: usize,
}

/// Samples up to the last one with work (queued or busy) and one more: the hour the
/// simulator runs on after the last step is no part of the picture.
fn with_work(timeline: &[Sample]) -> &[Sample] {
    let end = timeline
        .iter()
        .rposition(|s| s.queued > 0 || s.busy > 0)
        .map_or(timeline.len(), |i| (i + 2).min(timeline.len()));
    &timeline[..end]
}

pub fn write_svg(path: &Path, title: &Title<'_>, results: &[PolicyResult]) -> Result<()> {
    let panels = results.len().max(1) + 1;
    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let (top, body) = root.split_vertically(TITLE_HEIGHT);
    top.titled(
        &format!(
            "{}, seed {}: pool min {}, max {}, minIdle {}; runner start {:.0} s; {} weeks learned",
            title.workload,
            title.seed,
            title.min,
            title.max,
            title.min_idle,
            title.start_latency_s,
            title.history_weeks
        ),
        ("sans-serif", 22),
    )
    .map_err(|e| anyhow!("plot: {e}"))?;
    let areas = body.split_evenly((panels, 1));
    let x_max = results
        .iter()
        .flat_map(|r| with_work(&r.timeline).last())
        .map(|s| s.t / 3600.0)
        .fold(0.1, f64::max);
    let y_max = results
        .iter()
        .flat_map(|r| with_work(&r.timeline))
        .map(|s| s.queued.max(s.online + s.starting))
        .max()
        .unwrap_or(1)
        .max(title.max);
    for (result, area) in results.iter().zip(&areas) {
        draw_panel(area, result, x_max, y_max, title.max).map_err(|e| anyhow!("plot: {e}"))?;
    }
    draw_waits(&areas[panels - 1], results).map_err(|e| anyhow!("plot: {e}"))?;
    root.present()
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    result: &PolicyResult,
    x_max: f64,
    y_max: u32,
    pool_max: u32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let caption = format!(
        "{}: p95 wait {:.0} s, idle {:.1} runner-h, {} failed",
        result.name, result.p95_wait_s, result.idle_runner_hours, result.failed_steps
    );
    // Headroom above the data for the legend, so that it covers no line.
    let top = (f64::from(y_max) * 1.75).ceil();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..x_max, 0.0..top)?;
    let whole = |v: &f64| format!("{v:.0}");
    chart
        .configure_mesh()
        .x_desc("hours")
        .y_desc("count")
        .x_labels((x_max.ceil() as usize + 1).min(25))
        .y_labels((top as usize + 1).min(12))
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    let timeline = with_work(&result.timeline);
    let series: [Series; 4] = [
        ("queued steps", VERMILLION, |s| s.queued),
        ("runners online", BLUE, |s| s.online),
        ("runners busy", GREEN, |s| s.busy),
        ("runners starting", ORANGE, |s| s.starting),
    ];
    for (name, colour, value) in series {
        chart
            .draw_series(LineSeries::new(
                timeline.iter().map(|s| (s.t / 3600.0, f64::from(value(s)))),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    let max = f64::from(pool_max);
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, max), (x_max, max)],
            6,
            4,
            GREY.stroke_width(1),
        ))?
        .label("pool max")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREY.stroke_width(1)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// Each policy's share of steps that waited at most so long: the curve further left and
/// higher is the better one.
fn draw_waits<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    results: &[PolicyResult],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // To the slowest p99, so that one policy's far tail does not flatten the others.
    let x_max = results
        .iter()
        .map(|r| r.p99_wait_s)
        .fold(60.0, f64::max)
        .ceil();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "queue wait: share of steps started within",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..1.05)?;
    chart
        .configure_mesh()
        .x_desc("seconds waited")
        .y_desc("share of steps")
        .x_label_formatter(&|v: &f64| format!("{v:.0}"))
        .y_label_formatter(&|v: &f64| format!("{:.0}%", v * 100.0))
        .draw()?;
    for (result, colour) in results.iter().zip(POLICY_COLOURS.iter().cycle()) {
        let n = result.waits.len().max(1) as f64;
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                result
                    .waits
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w.min(x_max), (i + 1) as f64 / n)),
                colour.stroke_width(2),
            ))?
            .label(result.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        // The curves rise at the left: the lower right is empty.
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}
