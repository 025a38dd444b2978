//! Built-in workloads, generated from a seed, sized for the default pool (max 10 runners):
//! their peaks need up to about ten runners, so the figures compare policies rather than a
//! pool too small for its work. Steps come in pipelines: a push fans out into 1 to 3 parallel
//! steps arriving together, as parallel steps do.

use super::TraceStep;
use super::rng::Rng;
use crate::manifests::RunnerSize;
use crate::units::Seconds;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A 10-hour working day: morning ramp, lunch dip, busy afternoon.
    Workday,
    /// Quiet hours broken by three fan-outs of eight parallel steps (a monorepo push).
    Burst,
    /// A day with a nightly batch of eight 20-minute jobs at 02:00.
    Nightly,
    /// Eight hours at a constant rate.
    Steady,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [Self::Workday, Self::Burst, Self::Nightly, Self::Steady];

    pub fn name(self) -> &'static str {
        match self {
            Self::Workday => "workday",
            Self::Burst => "burst",
            Self::Nightly => "nightly",
            Self::Steady => "steady",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == raw)
    }

    /// `weeks` earlier days of this scenario, one a week, in the order a pool learns them:
    /// other seeds of it, as a pool that has served the same workload has seen it.
    pub fn history(self, seed: u64, weeks: u32) -> Vec<Vec<TraceStep>> {
        (1..=weeks)
            .map(|week| self.generate(seed ^ (u64::from(week) << 32)))
            .collect()
    }

    pub fn generate(self, seed: u64) -> Vec<TraceStep> {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ self as u64);
        let mut steps = Vec::new();
        match self {
            Self::Workday => {
                // Pipelines per hour over the day, hour by hour from 08:00.
                let rates = [4.0, 10.0, 14.0, 14.0, 5.0, 13.0, 15.0, 15.0, 12.0, 6.0];
                for (hour, rate) in rates.iter().enumerate() {
                    pipelines(
                        &mut rng,
                        &mut steps,
                        hour as f64 * 3600.0,
                        3600.0,
                        *rate,
                        240.0,
                    );
                }
            }
            Self::Burst => {
                pipelines(&mut rng, &mut steps, 0.0, 6.0 * 3600.0, 3.0, 240.0);
                for at in [3600.0, 3.0 * 3600.0, 5.0 * 3600.0] {
                    for _ in 0..8 {
                        let offset = rng.uniform() * 60.0;
                        steps.push(step(&mut rng, at + offset, 300.0));
                    }
                }
            }
            Self::Nightly => {
                pipelines(&mut rng, &mut steps, 0.0, 24.0 * 3600.0, 2.0, 240.0);
                for _ in 0..8 {
                    let offset = rng.uniform() * 300.0;
                    steps.push(step(&mut rng, 2.0 * 3600.0 + offset, 1200.0));
                }
            }
            Self::Steady => {
                pipelines(&mut rng, &mut steps, 0.0, 8.0 * 3600.0, 8.0, 300.0);
            }
        }
        steps.sort_by(|a, b| a.at.total_cmp(&b.at));
        steps
    }
}

fn step(rng: &mut Rng, at: Seconds, median: Seconds) -> TraceStep {
    TraceStep {
        at,
        duration: rng.lognormal(median, 0.6).clamp(20.0, 7200.0),
        labels: vec!["self.hosted".into(), "linux".into()],
        size: RunnerSize::X1,
    }
}

/// Poisson arrivals of pipelines at `rate` per hour in `[start, start + span)`, each fanning
/// out into 1 to 3 steps.
fn pipelines(
    rng: &mut Rng,
    steps: &mut Vec<TraceStep>,
    start: Seconds,
    span: Seconds,
    rate: f64,
    median: Seconds,
) {
    let mut t = start + rng.exponential(3600.0 / rate);
    while t < start + span {
        let fan_out = rng.between(1, 3);
        for _ in 0..fan_out {
            steps.push(step(rng, t, median));
        }
        t += rng.exponential(3600.0 / rate);
    }
}

/// A long synthetic trace for benchmarks: `days` days of `per_day` steps.
pub fn long_trace(days: u32, per_day: u32, seed: u64) -> Vec<TraceStep> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::with_capacity((days * per_day) as usize);
    for day in 0..days {
        // Working hours only: 10 hours a day.
        let start = f64::from(day) * 86_400.0 + 8.0 * 3600.0;
        for _ in 0..per_day {
            let at = start + rng.uniform() * 10.0 * 3600.0;
            steps.push(step(&mut rng, at, 240.0));
        }
    }
    steps.sort_by(|a, b| a.at.total_cmp(&b.at));
    steps
}
