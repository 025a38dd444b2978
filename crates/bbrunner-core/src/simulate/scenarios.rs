//! Built-in workloads, generated from a seed, sized for the default pool (max 10 runners):
//! their peaks need up to about ten runners, so the figures compare policies rather than a
//! pool too small for its work. Steps come in pipelines: a push fans out into 1 to 3 parallel
//! steps arriving together, as parallel steps do (one stage); `pipelines` has stages.

use super::rng::Rng;
use super::{PipelineStep, TraceStep};
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
    /// A working day of pushes to four repositories, each pipeline a build, then two to four
    /// test steps in parallel, then a deploy: stages that wait for each other.
    Pipelines,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Self::Workday,
        Self::Burst,
        Self::Nightly,
        Self::Steady,
        Self::Pipelines,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Workday => "workday",
            Self::Burst => "burst",
            Self::Nightly => "nightly",
            Self::Steady => "steady",
            Self::Pipelines => "pipelines",
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
        let mut ids = 0..;
        match self {
            Self::Workday => {
                // Pipelines per hour over the day, hour by hour from 08:00.
                let rates = [4.0, 10.0, 14.0, 14.0, 5.0, 13.0, 15.0, 15.0, 12.0, 6.0];
                for (hour, rate) in rates.iter().enumerate() {
                    pipelines(
                        &mut rng,
                        &mut steps,
                        &mut ids,
                        hour as f64 * 3600.0,
                        3600.0,
                        *rate,
                        240.0,
                    );
                }
            }
            Self::Burst => {
                pipelines(
                    &mut rng,
                    &mut steps,
                    &mut ids,
                    0.0,
                    6.0 * 3600.0,
                    3.0,
                    240.0,
                );
                for at in [3600.0, 3.0 * 3600.0, 5.0 * 3600.0] {
                    // Pipelines of one step each, pushed within a minute.
                    for _ in 0..8 {
                        let offset = rng.uniform() * 60.0;
                        let step = step(&mut rng, at + offset, 300.0);
                        steps.push(in_pipeline(step, ids.next(), "monorepo", "part"));
                    }
                }
            }
            Self::Nightly => {
                pipelines(
                    &mut rng,
                    &mut steps,
                    &mut ids,
                    0.0,
                    24.0 * 3600.0,
                    2.0,
                    240.0,
                );
                for i in 0..8 {
                    let offset = rng.uniform() * 300.0;
                    let step = step(&mut rng, 2.0 * 3600.0 + offset, 1200.0);
                    steps.push(in_pipeline(step, ids.next(), "batch", &format!("job-{i}")));
                }
            }
            Self::Steady => {
                pipelines(
                    &mut rng,
                    &mut steps,
                    &mut ids,
                    0.0,
                    8.0 * 3600.0,
                    8.0,
                    300.0,
                );
            }
            Self::Pipelines => staged_pipelines(&mut rng, &mut steps, &mut ids),
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
        pipeline: None,
    }
}

/// `step` as step `name` of pipeline `id` (of one stage) of `repository`.
fn in_pipeline(step: TraceStep, id: Option<u32>, repository: &str, name: &str) -> TraceStep {
    TraceStep {
        pipeline: Some(PipelineStep {
            id: id.expect("pipeline ids do not run out"),
            stage: 0,
            repository: repository.to_owned(),
            name: name.to_owned(),
        }),
        ..step
    }
}

/// Poisson arrivals of pipelines at `rate` per hour in `[start, start + span)`, each fanning
/// out into 1 to 3 steps.
fn pipelines(
    rng: &mut Rng,
    steps: &mut Vec<TraceStep>,
    ids: &mut std::ops::RangeFrom<u32>,
    start: Seconds,
    span: Seconds,
    rate: f64,
    median: Seconds,
) {
    let mut t = start + rng.exponential(3600.0 / rate);
    while t < start + span {
        let fan_out = rng.between(1, 3);
        let id = ids.next();
        for i in 0..fan_out {
            let step = step(rng, t, median);
            steps.push(in_pipeline(step, id, "app", &format!("test-{i}")));
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

/// Pushes over a working day to four repositories, each with its own build, tests and
/// deploy (their typical durations the same every day, each run varying around them), as a
/// pool that serves a team's repositories sees them.
fn staged_pipelines(rng: &mut Rng, steps: &mut Vec<TraceStep>, ids: &mut std::ops::RangeFrom<u32>) {
    // The team's repositories, whatever the day.
    let mut team = Rng::new(0x7EA3);
    struct Repository {
        name: String,
        build: Seconds,
        tests: Vec<Seconds>,
        deploy: Seconds,
    }
    let repositories: Vec<Repository> = (0..4)
        .map(|r| Repository {
            name: format!("repo-{r}"),
            build: team.lognormal(180.0, 0.4).clamp(60.0, 900.0),
            tests: (0..team.between(2, 4))
                .map(|_| team.lognormal(150.0, 0.5).clamp(30.0, 900.0))
                .collect(),
            deploy: team.lognormal(60.0, 0.3).clamp(20.0, 300.0),
        })
        .collect();
    // Pushes per hour over the day, hour by hour from 08:00.
    let rates = [2.0, 4.0, 6.0, 6.0, 2.0, 5.0, 6.0, 6.0, 5.0, 2.0];
    for (hour, rate) in rates.iter().enumerate() {
        let start = hour as f64 * 3600.0;
        let mut t = start + rng.exponential(3600.0 / rate);
        while t < start + 3600.0 {
            let repository = &repositories[rng.between(0, 3) as usize];
            let id = ids.next().expect("pipeline ids do not run out");
            let mut stage = |stage: u32, name: String, typical: Seconds, rng: &mut Rng| {
                steps.push(TraceStep {
                    at: t,
                    duration: rng.lognormal(typical, 0.15).clamp(10.0, 7200.0),
                    labels: vec!["self.hosted".into(), "linux".into()],
                    size: RunnerSize::X1,
                    pipeline: Some(PipelineStep {
                        id,
                        stage,
                        repository: repository.name.clone(),
                        name,
                    }),
                });
            };
            stage(0, "build".into(), repository.build, rng);
            for (i, typical) in repository.tests.iter().enumerate() {
                stage(1, format!("test-{i}"), *typical, rng);
            }
            stage(2, "deploy".into(), repository.deploy, rng);
            t += rng.exponential(3600.0 / rate);
        }
    }
}
