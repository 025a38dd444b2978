//! Replaying a workload against scaling policies. The engine is deterministic: the same trace,
//! settings and seed give the same figures.

pub mod engine;
mod pipelines;
mod result;
mod rng;
pub mod scenarios;
mod volumes;

use serde::Deserialize;
use thiserror::Error;

use crate::labels::validate_label;
use crate::manifests::RunnerSize;
use crate::units::Seconds;

pub use engine::{ColdStart, PolicyResult, Sample, SimConfig, StartLatency, simulate};
pub use scenarios::Scenario;

/// One step of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceStep {
    /// Seconds from the start of the trace: when the step queues, or, for a step of a
    /// pipeline, when the pipeline was pushed (its stage queues once the one before ends).
    pub at: Seconds,
    pub duration: Seconds,
    pub labels: Vec<String>,
    pub size: RunnerSize,
    /// The pipeline and stage it belongs to, where the trace gave pipelines.
    pub pipeline: Option<PipelineStep>,
}

/// Where a step sits in its pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineStep {
    /// The pipeline, numbered in the trace's order.
    pub id: u32,
    pub stage: u32,
    pub repository: String,
    /// The step's name (what its duration is learned by).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("trace line {line}: {message}")]
pub struct TraceError {
    pub line: usize,
    pub message: String,
}

/// A line of a trace: one step, or one pipeline.
#[derive(Deserialize)]
#[serde(untagged)]
enum TraceLine {
    Step(StepLine),
    Pipeline(PipelineLine),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepLine {
    at: f64,
    duration: f64,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    size: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineLine {
    at: f64,
    repository: String,
    pipeline: Vec<Vec<PipelineStepLine>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineStepLine {
    name: String,
    duration: f64,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    size: Option<String>,
}

/// The latest arrival a trace may hold: a year, in seconds. A simulation runs in time
/// proportional to the span it covers.
pub const MAX_TRACE_AT: f64 = 365.0 * 86_400.0;
/// The longest step a trace may hold: a day (Bitbucket stops steps at two hours).
pub const MAX_STEP_DURATION: f64 = 86_400.0;
pub use crate::lookahead::MAX_PIPELINE_STEPS;

/// A step of a line, checked: its duration, labels and size, or what is wrong with it.
fn checked_step(
    duration: f64,
    labels: Option<Vec<String>>,
    size: Option<&str>,
) -> Result<(Seconds, Vec<String>, RunnerSize), String> {
    if !(duration.is_finite() && (0.0..=MAX_STEP_DURATION).contains(&duration)) {
        return Err(format!(
            "\"duration\" must be seconds from 0 to {MAX_STEP_DURATION} (a day; Bitbucket stops a step at 2 hours); got {duration}"
        ));
    }
    let labels = labels.unwrap_or_else(|| vec!["self.hosted".into(), "linux".into()]);
    if let Some(e) = labels.iter().find_map(|l| validate_label(l).err()) {
        return Err(e.to_string());
    }
    let size = size
        .map(RunnerSize::parse)
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    Ok((duration, labels, size))
}

/// Read a JSON Lines trace: one step `{"at", "duration", "labels", "size"}`, or one pipeline
/// `{"at", "repository", "pipeline": [[{"name", "duration", "labels", "size"}, ...], ...]}`
/// (stages in order, the steps of a stage in parallel), per line; blank lines and lines
/// starting with `#` are skipped. Every bad line is reported with its number.
pub fn parse_trace(text: &str) -> Result<Vec<TraceStep>, Vec<TraceError>> {
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    let mut pipelines = 0u32;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let mut fail = |message: String| errors.push(TraceError { line, message });
        let parsed: TraceLine = match serde_json::from_str(raw) {
            Ok(p) => p,
            Err(_) => {
                fail("neither a step {\"at\", \"duration\", \"labels\", \"size\"} nor a pipeline {\"at\", \"repository\", \"pipeline\": [[step, ...], ...]} (steps with \"name\")".into());
                continue;
            }
        };
        let at = match &parsed {
            TraceLine::Step(s) => s.at,
            TraceLine::Pipeline(p) => p.at,
        };
        if !(at.is_finite() && (0.0..=MAX_TRACE_AT).contains(&at)) {
            fail(format!(
                "\"at\" must be seconds from 0 to {MAX_TRACE_AT} (a year); got {at}"
            ));
            continue;
        }
        match parsed {
            TraceLine::Step(s) => match checked_step(s.duration, s.labels, s.size.as_deref()) {
                Ok((duration, labels, size)) => steps.push(TraceStep {
                    at,
                    duration,
                    labels,
                    size,
                    pipeline: None,
                }),
                Err(message) => fail(message),
            },
            TraceLine::Pipeline(p) => {
                let count: usize = p.pipeline.iter().map(Vec::len).sum();
                if p.pipeline.iter().any(Vec::is_empty) || count == 0 {
                    fail("a pipeline needs stages of at least one step each".into());
                    continue;
                }
                if count > MAX_PIPELINE_STEPS {
                    fail(format!(
                        "a pipeline has at most {MAX_PIPELINE_STEPS} steps, as in Bitbucket; this one has {count}"
                    ));
                    continue;
                }
                let mut expanded = Vec::with_capacity(count);
                let mut bad = None;
                for (stage, steps_of_stage) in p.pipeline.into_iter().enumerate() {
                    for step in steps_of_stage {
                        if step.name.trim().is_empty() {
                            bad = Some("every step of a pipeline needs a \"name\"".to_owned());
                            break;
                        }
                        match checked_step(step.duration, step.labels, step.size.as_deref()) {
                            Ok((duration, labels, size)) => expanded.push(TraceStep {
                                at,
                                duration,
                                labels,
                                size,
                                pipeline: Some(PipelineStep {
                                    id: pipelines,
                                    stage: stage as u32,
                                    repository: p.repository.clone(),
                                    name: step.name,
                                }),
                            }),
                            Err(message) => {
                                bad = Some(format!("step {:?}: {message}", step.name));
                                break;
                            }
                        }
                    }
                }
                match bad {
                    Some(message) => fail(message),
                    None => {
                        pipelines += 1;
                        steps.extend(expanded);
                    }
                }
            }
        }
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

/// What a pool learns over `history` (a week per run, in order) under `config`, kept in it
/// for the measured run: its demand forecast ([`SimConfig::history`]) and its steps'
/// durations ([`SimConfig::durations`]).
pub fn learn(history: &[Vec<TraceStep>], config: &mut SimConfig) {
    for week in history {
        let learned = simulate(week, config, &mut |_| {});
        config.history = learned.learned;
        config.durations = learned.durations;
    }
}

#[cfg(test)]
mod tests;
