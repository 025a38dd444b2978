//! The pipelines of a trace as a run plays them: stages in order, the steps of a stage in
//! parallel, a stage queuing when the one before has ended (closed loop: waiting delays all
//! that follows), and the time runners cost each pipeline.

use crate::lookahead::{self, PlannedStep, Progress};
use crate::simulate::TraceStep;
use crate::units::Seconds;

struct Run {
    repository: String,
    pushed: Seconds,
    /// Its steps (indices into the trace), by stage.
    stages: Vec<Vec<usize>>,
    stage: usize,
    /// Steps of the running stage not yet done.
    remaining: usize,
    stage_started: Seconds,
    /// Whether its first stage has queued.
    queued: bool,
    /// A step failed: nothing after it runs.
    failed: bool,
    /// Whether the operator knows of it (a webhook on its push, or the pipelines API).
    known: bool,
    /// The sum of its stages' longest steps: its wall time on runners always ready.
    critical_path: Seconds,
}

pub(super) struct Runs {
    runs: Vec<Run>,
    /// The runs queued or known, not yet ended or failed: what each poll looks at, so that
    /// a poll costs what is under way, not the whole trace.
    under_way: std::collections::BTreeSet<usize>,
    /// Each step's run, if it belongs to one.
    of_step: Vec<Option<usize>>,
    /// Wall time minus critical path of every pipeline that completed.
    overheads: Vec<Seconds>,
}

impl Runs {
    pub(super) fn new(steps: &[TraceStep]) -> Self {
        let mut by_id: std::collections::BTreeMap<u32, usize> = Default::default();
        let mut runs: Vec<Run> = Vec::new();
        let mut of_step = vec![None; steps.len()];
        for (i, step) in steps.iter().enumerate() {
            let Some(p) = &step.pipeline else {
                continue;
            };
            let run = *by_id.entry(p.id).or_insert_with(|| {
                runs.push(Run {
                    repository: p.repository.clone(),
                    pushed: step.at,
                    stages: Vec::new(),
                    stage: 0,
                    remaining: 0,
                    stage_started: step.at,
                    queued: false,
                    failed: false,
                    known: false,
                    critical_path: 0.0,
                });
                runs.len() - 1
            });
            let stages = &mut runs[run].stages;
            let stage = p.stage as usize;
            if stages.len() <= stage {
                stages.resize_with(stage + 1, Vec::new);
            }
            stages[stage].push(i);
            of_step[i] = Some(run);
        }
        for run in &mut runs {
            run.stages.retain(|s| !s.is_empty());
            run.remaining = run.stages.first().map_or(0, Vec::len);
            run.critical_path = run
                .stages
                .iter()
                .map(|s| s.iter().map(|&i| steps[i].duration).fold(0.0, f64::max))
                .sum();
        }
        Self {
            runs,
            under_way: Default::default(),
            of_step,
            overheads: Vec::new(),
        }
    }

    /// Whether the step queues at its own `at` (a step of no pipeline, or of a first stage).
    pub(super) fn arrives_on_its_own(&self, step: usize) -> bool {
        self.of_step[step].is_none_or(|r| self.runs[r].stages[0].contains(&step))
    }

    /// Each pipeline's push time and index, for the webhooks that announce them.
    pub(super) fn pushes(&self) -> impl Iterator<Item = (usize, Seconds)> + '_ {
        self.runs.iter().enumerate().map(|(r, run)| (r, run.pushed))
    }

    /// The operator learns of pipeline `run` (a webhook, or the pipelines API).
    pub(super) fn make_known(&mut self, run: usize) {
        let it = &mut self.runs[run];
        it.known = true;
        if !it.failed && it.stage < it.stages.len() {
            self.under_way.insert(run);
        }
    }

    /// Every pipeline under way that the operator does not know of yet.
    pub(super) fn unknown_under_way(&self) -> Vec<usize> {
        self.under_way
            .iter()
            .copied()
            .filter(|&r| self.runs[r].queued && !self.runs[r].known)
            .collect()
    }

    /// A step queued: a first stage's marks its pipeline as started.
    pub(super) fn queued(&mut self, step: usize) {
        if let Some(r) = self.of_step[step] {
            self.runs[r].queued = true;
            self.under_way.insert(r);
        }
    }

    /// A step ended at `now`: the next stage's steps to queue now, if its stage is over, and
    /// whether its pipeline just ended. The duration is learned per repository and step name.
    pub(super) fn done(
        &mut self,
        step: usize,
        steps: &[TraceStep],
        now: Seconds,
        durations: &mut lookahead::Durations,
    ) -> (Vec<usize>, bool) {
        let Some(r) = self.of_step[step] else {
            return (Vec::new(), false);
        };
        if let Some(p) = &steps[step].pipeline {
            durations.learn(&p.repository, &p.name, steps[step].duration);
        }
        let run = &mut self.runs[r];
        run.remaining -= 1;
        if run.remaining > 0 || run.failed {
            return (Vec::new(), false);
        }
        run.stage += 1;
        match run.stages.get(run.stage) {
            Some(next) => {
                run.remaining = next.len();
                run.stage_started = now;
                (next.clone(), false)
            }
            None => {
                self.overheads
                    .push((now - run.pushed - run.critical_path).max(0.0));
                self.under_way.remove(&r);
                (Vec::new(), true)
            }
        }
    }

    /// A step failed: the steps of its pipeline that will now never run.
    pub(super) fn failed(&mut self, step: usize) -> Vec<usize> {
        let Some(r) = self.of_step[step] else {
            return Vec::new();
        };
        let run = &mut self.runs[r];
        if run.failed {
            return Vec::new();
        }
        run.failed = true;
        self.under_way.remove(&r);
        run.stages
            .iter()
            .skip(run.stage + 1)
            .flatten()
            .copied()
            .collect()
    }

    /// The pipelines the operator knows of and that are still under way, as the lookahead
    /// reads them: with the stage each runs where the pipelines API was read (`seen`), else
    /// only their start (webhooks), from which their stage is estimated.
    pub(super) fn known(&self, steps: &[TraceStep], seen: bool) -> Vec<lookahead::Pipeline> {
        let planned = |i: usize| {
            let p = steps[i].pipeline.as_ref().expect("a pipeline's step");
            PlannedStep {
                name: p.name.clone(),
                labels: steps[i].labels.clone(),
            }
        };
        self.under_way
            .iter()
            .map(|&r| &self.runs[r])
            .filter(|run| run.known)
            .map(|run| lookahead::Pipeline {
                repository: run.repository.clone(),
                stages: run
                    .stages
                    .iter()
                    .map(|s| s.iter().map(|&i| planned(i)).collect())
                    .collect(),
                progress: match (run.queued, seen) {
                    (false, _) => Progress::Pushed { at: run.pushed },
                    (true, true) => Progress::Running {
                        stage: run.stage,
                        since: run.stage_started,
                    },
                    // A pipeline's first stage queues as it is pushed.
                    (true, false) => Progress::Started { at: run.pushed },
                },
            })
            .collect()
    }

    /// Completed pipelines' overheads, sorted.
    pub(super) fn overheads(&self) -> Vec<Seconds> {
        let mut sorted = self.overheads.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }
}
