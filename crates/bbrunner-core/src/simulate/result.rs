//! What a run of the simulation measures.

use serde::Serialize;

use crate::lookahead::Durations;
use crate::scaling::PolicyMemory;
use crate::units::Seconds;

/// One point of the timeline, for plots.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub t: Seconds,
    pub queued: u32,
    pub starting: u32,
    pub online: u32,
    pub busy: u32,
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyResult {
    pub name: String,
    pub steps: usize,
    pub failed_steps: usize,
    /// Steps of pipelines that failed before them: they never ran.
    pub skipped_steps: usize,
    pub p50_wait_s: f64,
    pub p95_wait_s: f64,
    pub p99_wait_s: f64,
    pub max_wait_s: f64,
    pub idle_runner_hours: f64,
    pub busy_runner_hours: f64,
    pub peak_runners: u32,
    /// Runners created during the run (churn: each costs a start latency and API calls).
    pub runners_created: usize,
    /// Pipelines of the trace, and the time runners cost those that completed: wall time
    /// minus the critical path of their steps' durations.
    pub pipelines: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_overhead_p50_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_overhead_p95_s: Option<f64>,
    pub api_calls_per_hour: f64,
    /// Steps that ran on an empty Docker store (see [`super::volumes::ColdStart`]).
    pub cold_steps: usize,
    /// The most cache volumes the pool held at once (0 without a cache).
    pub cache_volumes_peak: u32,
    /// What makes this policy's result unusable in practice (an API rate Bitbucket refuses).
    pub errors: Vec<String>,
    /// p95 wait over the always-warm oracle's (every one of the pool's `max` runners online).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_vs_oracle: Option<f64>,
    /// Idle runner-hours over the oracle's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_vs_oracle: Option<f64>,
    /// Pipeline overhead p95 over the oracle's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_overhead_p95_vs_oracle: Option<f64>,
    #[serde(skip)]
    pub timeline: Vec<Sample>,
    /// Every started step's queue wait, in seconds, sorted (for the plot's distributions).
    #[serde(skip)]
    pub waits: Vec<f64>,
    /// What the pool learned, for a next run ([`super::SimConfig::history`]).
    #[serde(skip)]
    pub learned: PolicyMemory,
    /// Step durations learned, for a next run ([`super::SimConfig::durations`]).
    #[serde(skip)]
    pub durations: Durations,
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
