//! Replaying a workload against scaling policies. The engine is deterministic: the same trace,
//! settings and seed give the same figures.

pub mod engine;
mod rng;
pub mod scenarios;

use serde::Deserialize;
use thiserror::Error;

use crate::labels::validate_label;
use crate::manifests::RunnerSize;
use crate::scaling;
use crate::units::Seconds;

pub use engine::{PolicyResult, Sample, SimConfig, StartLatency, simulate};
pub use scenarios::Scenario;

/// One step of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceStep {
    /// Seconds from the start of the trace.
    pub at: Seconds,
    pub duration: Seconds,
    pub labels: Vec<String>,
    pub size: RunnerSize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("trace line {line}: {message}")]
pub struct TraceError {
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceLine {
    at: f64,
    duration: f64,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    size: Option<String>,
}

/// Read a JSON Lines trace: one `{"at", "duration", "labels", "size"}` per line; blank lines
/// and lines starting with `#` are skipped. Every bad line is reported with its number.
/// The latest arrival a trace may hold: a year, in seconds. A simulation runs in time
/// proportional to the span it covers.
pub const MAX_TRACE_AT: f64 = 365.0 * 86_400.0;
/// The longest step a trace may hold: a day (Bitbucket stops steps at two hours).
pub const MAX_STEP_DURATION: f64 = 86_400.0;

pub fn parse_trace(text: &str) -> Result<Vec<TraceStep>, Vec<TraceError>> {
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let mut fail = |message: String| errors.push(TraceError { line, message });
        let parsed: TraceLine = match serde_json::from_str(raw) {
            Ok(p) => p,
            Err(e) => {
                fail(format!("not a step object: {e}"));
                continue;
            }
        };
        if !(parsed.at.is_finite() && (0.0..=MAX_TRACE_AT).contains(&parsed.at)) {
            fail(format!(
                "\"at\" must be seconds from 0 to {MAX_TRACE_AT} (a year); got {}",
                parsed.at
            ));
            continue;
        }
        if !(parsed.duration.is_finite() && (0.0..=MAX_STEP_DURATION).contains(&parsed.duration)) {
            fail(format!(
                "\"duration\" must be seconds from 0 to {MAX_STEP_DURATION} (a day; Bitbucket stops a step at 2 hours); got {}",
                parsed.duration
            ));
            continue;
        }
        let labels = parsed
            .labels
            .unwrap_or_else(|| vec!["self.hosted".into(), "linux".into()]);
        if let Some(e) = labels.iter().find_map(|l| validate_label(l).err()) {
            fail(e.to_string());
            continue;
        }
        let size = match parsed.size.as_deref().map(RunnerSize::parse).transpose() {
            Ok(size) => size.unwrap_or_default(),
            Err(e) => {
                fail(e.to_string());
                continue;
            }
        };
        steps.push(TraceStep {
            at: parsed.at,
            duration: parsed.duration,
            labels,
            size,
        });
    }
    if errors.is_empty() {
        steps.sort_by(|a, b| a.at.total_cmp(&b.at));
        Ok(steps)
    } else {
        Err(errors)
    }
}

const WEEK: Seconds = 7.0 * 86_400.0;

/// A trace's first `weeks` weeks, one list each, and the rest: each moved back by whole weeks,
/// so that every step keeps its time of week (what the demand forecast learns by).
pub fn split_weeks(steps: &[TraceStep], weeks: u32) -> (Vec<Vec<TraceStep>>, Vec<TraceStep>) {
    let week_of = |step: &TraceStep| (step.at / WEEK).floor() as u32;
    let moved_back = |step: &TraceStep, weeks: u32| TraceStep {
        at: step.at - f64::from(weeks) * WEEK,
        ..step.clone()
    };
    let mut history = vec![Vec::new(); weeks as usize];
    let mut rest = Vec::new();
    for step in steps {
        match week_of(step) {
            week if week < weeks => history[week as usize].push(moved_back(step, week)),
            _ => rest.push(moved_back(step, weeks)),
        }
    }
    (history, rest)
}

/// What a pool learns over `history` (a week per run, in order) under `config`: the memory
/// for the measured run ([`SimConfig::history`]).
pub fn learn(history: &[Vec<TraceStep>], config: &SimConfig) -> scaling::PolicyMemory {
    let mut config = config.clone();
    for week in history {
        config.history = simulate(week, &config, &mut |_| {}).learned;
    }
    config.history
}

#[cfg(test)]
mod tests;
