//! Demand ahead of the queue: a pipeline's later stages are known the moment it is pushed (its
//! `bitbucket-pipelines.yml` says which steps follow, with which labels), and when they will
//! start is known from how long its steps took before. A pool readies the runners a stage will
//! need just before that stage starts, and no earlier.
//!
//! Pure: the operator feeds it pipelines seen through webhooks and the pipelines API, the
//! simulator the pipelines of its trace; both learn step durations the same way.

use std::collections::BTreeMap;

use crate::units::Seconds;

mod definition;
mod glob;

pub use definition::{DefinitionError, Trigger, resolve};

/// One step of a pipeline as its definition gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// The step's name (what its duration is learned by).
    pub name: String,
    /// Its `runs-on` labels, `self.hosted` and the platform among them; empty for a step that
    /// runs in Bitbucket's cloud.
    pub labels: Vec<String>,
}

/// How far a pipeline has got, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// Pushed at `at` (a `repo:push` webhook); its first stage has not queued yet.
    Pushed { at: Seconds },
    /// Its first stage queued at `at` (the pipeline's commit status went `INPROGRESS`); the
    /// stage it runs now is estimated from its steps' learned durations.
    Started { at: Seconds },
    /// Seen running `stage` since `since` (the pipelines API).
    Running { stage: usize, since: Seconds },
}

/// A pipeline under way: its stages (steps that run together) and how far it has got.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub repository: String,
    pub stages: Vec<Vec<PlannedStep>>,
    pub progress: Progress,
}

/// Bitbucket's limit on a pipeline: 100 steps in all.
pub const MAX_PIPELINE_STEPS: usize = 100;

/// A push is taken as the start of its pipeline this long after it, if no start was heard
/// of (Bitbucket queues a pushed pipeline's first steps within seconds; a lost commit-status
/// webhook must not keep its first stage wanted).
pub const PUSH_STARTS_WITHIN: Seconds = 60.0;

/// Step durations learned per repository and step name: each new one counts half, so that the
/// estimate follows a step that gets slower or faster within a few runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durations {
    /// Each step's expected duration and when it was last learned (a sequence number).
    learned: BTreeMap<(String, String), (Seconds, u64)>,
    sequence: u64,
}

/// At most this many step durations are kept (the least recently learned go first).
pub const MAX_LEARNED: usize = 4096;

impl Durations {
    /// Learn that `name` of `repository` took `duration`.
    pub fn learn(&mut self, repository: &str, name: &str, duration: Seconds) {
        if !duration.is_finite() || duration < 0.0 {
            return;
        }
        self.sequence += 1;
        let key = (repository.to_owned(), name.to_owned());
        let next = match self.learned.get(&key) {
            Some((before, _)) => (before + duration) / 2.0,
            None => duration,
        };
        if self.learned.len() >= MAX_LEARNED && !self.learned.contains_key(&key) {
            let stalest = self
                .learned
                .iter()
                .min_by_key(|(_, (_, learned))| *learned)
                .map(|(key, _)| key.clone());
            if let Some(stalest) = stalest {
                self.learned.remove(&stalest);
            }
        }
        self.learned.insert(key, (next, self.sequence));
    }

    /// How long `name` of `repository` is expected to take, if it was seen.
    pub fn expected(&self, repository: &str, name: &str) -> Option<Seconds> {
        self.learned
            .get(&(repository.to_owned(), name.to_owned()))
            .map(|(seconds, _)| *seconds)
    }

    pub fn len(&self) -> usize {
        self.learned.len()
    }

    pub fn is_empty(&self) -> bool {
        self.learned.is_empty()
    }
}

impl Pipeline {
    /// How long stage `index` is expected to take: its longest step's learned duration.
    /// `None` when a step of it was never seen (nothing to predict with).
    fn stage_duration(&self, index: usize, durations: &Durations) -> Option<Seconds> {
        let mut longest: Seconds = 0.0;
        for step in self.stages.get(index)? {
            longest = longest.max(durations.expected(&self.repository, &step.name)?);
        }
        Some(longest)
    }

    /// The stage running at `now` and since when: as seen, or estimated from the start by the
    /// learned durations. `None` for a pipeline that has not started, or that is expected to
    /// have ended.
    pub fn running_stage(&self, durations: &Durations, now: Seconds) -> Option<(usize, Seconds)> {
        let at = match self.progress {
            Progress::Running { stage, since } => return Some((stage, since)),
            Progress::Pushed { at } if now - at < PUSH_STARTS_WITHIN => return None,
            Progress::Pushed { at } | Progress::Started { at } => at,
        };
        let mut started = at;
        for index in 0..self.stages.len() {
            let Some(duration) = self.stage_duration(index, durations) else {
                // Unknown from here on: say it runs this stage, and predict nothing after it.
                return Some((index, started));
            };
            if started + duration > now {
                return Some((index, started));
            }
            started += duration;
        }
        None
    }

    /// When the stage running at `now` is expected to end: its start plus its longest step's
    /// learned duration. `None` when a step of it was never seen.
    pub fn stage_ends(&self, durations: &Durations, now: Seconds) -> Option<Seconds> {
        let (stage, since) = self.running_stage(durations, now)?;
        Some(since + self.stage_duration(stage, durations)?)
    }
}

/// Runners readied per step of a stage about to start. The readied runners are anyone's:
/// steps of other pipelines arrive meanwhile and take some, and a stage's steps reach the
/// runners within a poll of each other, not at once. Against once the steps, twice cut the
/// step p95 from 1.67 to 1.23 times the oracle's on held-out pipelines (workday: 1.86 to
/// 1.56), for at most 0.03 more idle (BENCHMARKS.md, "Demand ahead").
pub const READY_FACTOR: u32 = 2;

/// Runners a pool should have ready now beyond its busy ones for the stages about to start
/// ([`READY_FACTOR`] per step): for a pipeline just pushed, its first stage's steps; for each
/// other whose running stage is expected to end within `lead` (a runner's start time and a
/// poll), the next stage's steps, less the runners its running stage holds here (they free up as it ends). Only the steps
/// this pool serves (`serves`, by their labels) count; a step of Bitbucket's cloud never does.
pub fn runners_ahead(
    pipelines: &[Pipeline],
    durations: &Durations,
    serves: &dyn Fn(&[String]) -> bool,
    now: Seconds,
    lead: Seconds,
) -> u32 {
    let here = |steps: &[PlannedStep]| {
        steps
            .iter()
            .filter(|s| !s.labels.is_empty() && serves(&s.labels))
            .count() as u32
    };
    let mut ahead = 0;
    for pipeline in pipelines {
        if let Progress::Pushed { at } = pipeline.progress
            && now - at < PUSH_STARTS_WITHIN
        {
            ahead += pipeline
                .stages
                .first()
                .map_or(0, |first| here(first) * READY_FACTOR);
            continue;
        }
        let Some((stage, since)) = pipeline.running_stage(durations, now) else {
            continue;
        };
        let Some(next) = pipeline.stages.get(stage + 1) else {
            continue;
        };
        let Some(duration) = pipeline.stage_duration(stage, durations) else {
            continue;
        };
        if since + duration - now > lead {
            continue;
        }
        ahead += (here(next) * READY_FACTOR).saturating_sub(here(&pipeline.stages[stage]));
    }
    ahead
}

/// How far ahead of a stage its runners are asked for: the time a runner takes to start (the
/// slowest of the recent starts seen, else `default_start`) and a poll, since runners are only
/// asked for at a poll.
pub fn lead(recent_starts: &[Seconds], default_start: Seconds, poll: Seconds) -> Seconds {
    let start = recent_starts
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .fold(None, |most: Option<Seconds>, s| {
            Some(most.map_or(s, |m| m.max(s)))
        })
        .unwrap_or(default_start);
    start.min(MAX_LEAD) + poll
}

/// Runners are never asked for more than this far ahead of a stage, whatever a slow start
/// suggested: past it, warming early costs more idle time than it saves waiting.
pub const MAX_LEAD: Seconds = 600.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, labels: &[&str]) -> PlannedStep {
        PlannedStep {
            name: name.into(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    /// build → three tests → deploy, all on `build` runners but the deploy on `deploy` ones.
    fn pipeline(progress: Progress) -> Pipeline {
        Pipeline {
            repository: "app".into(),
            stages: vec![
                vec![step("build", &["build"])],
                vec![
                    step("unit", &["build"]),
                    step("lint", &["build"]),
                    step("e2e", &["build"]),
                ],
                vec![step("deploy", &["deploy"])],
            ],
            progress,
        }
    }

    fn running(stage: usize, since: Seconds) -> Pipeline {
        pipeline(Progress::Running { stage, since })
    }

    fn learned() -> Durations {
        let mut d = Durations::default();
        for (name, seconds) in [
            ("build", 300.0),
            ("unit", 120.0),
            ("lint", 60.0),
            ("e2e", 600.0),
            ("deploy", 90.0),
        ] {
            d.learn("app", name, seconds);
        }
        d
    }

    fn builds(labels: &[String]) -> bool {
        labels.iter().all(|l| l == "build")
    }

    fn deploys(labels: &[String]) -> bool {
        labels.iter().all(|l| l == "deploy")
    }

    #[test]
    fn the_next_stage_is_readied_within_a_runner_s_start_time_of_it_and_not_before() {
        let pipelines = [running(0, 1000.0)];
        // The build ends at 1300; runners take 60 s to start.
        assert_eq!(
            runners_ahead(&pipelines, &learned(), &builds, 1200.0, 60.0),
            0
        );
        // Three tests follow one build: twice three, less the build's runner, which frees up.
        assert_eq!(
            runners_ahead(&pipelines, &learned(), &builds, 1245.0, 60.0),
            3 * READY_FACTOR - 1
        );
        // The deploy runs elsewhere: the tests' pool readies nothing for it.
        let testing = [running(1, 1300.0)];
        assert_eq!(
            runners_ahead(&testing, &learned(), &builds, 1890.0, 60.0),
            0
        );
        assert_eq!(
            runners_ahead(&testing, &learned(), &deploys, 1890.0, 60.0),
            READY_FACTOR
        );
        // The last stage has nothing after it.
        let deploying = [running(2, 1900.0)];
        assert_eq!(
            runners_ahead(&deploying, &learned(), &deploys, 1980.0, 60.0),
            0
        );
    }

    #[test]
    fn a_pipeline_known_from_its_push_needs_its_first_stage_at_once_and_only_briefly() {
        let pushed = [pipeline(Progress::Pushed { at: 1000.0 })];
        let none = Durations::default();
        assert_eq!(
            runners_ahead(&pushed, &none, &builds, 1000.0, 60.0),
            READY_FACTOR
        );
        // No start heard of: after a while the push counts as the start, and with nothing
        // learned nothing is predicted (a lost webhook never keeps runners wanted).
        assert_eq!(
            runners_ahead(&pushed, &none, &builds, 1000.0 + PUSH_STARTS_WITHIN, 60.0),
            0
        );
    }

    #[test]
    fn a_started_pipeline_s_stage_is_estimated_from_what_its_steps_took_before() {
        let started = pipeline(Progress::Started { at: 1000.0 });
        let d = learned();
        assert_eq!(started.running_stage(&d, 1100.0), Some((0, 1000.0)));
        // The build is expected to end at 1300, the tests (600 s, the longest) at 1900.
        assert_eq!(started.running_stage(&d, 1400.0), Some((1, 1300.0)));
        assert_eq!(started.running_stage(&d, 1950.0), Some((2, 1900.0)));
        assert_eq!(
            started.running_stage(&d, 2000.0),
            None,
            "expected to have ended"
        );
        assert_eq!(
            runners_ahead(std::slice::from_ref(&started), &d, &builds, 1245.0, 60.0),
            3 * READY_FACTOR - 1
        );
        assert_eq!(
            runners_ahead(&[started], &d, &deploys, 1850.0, 60.0),
            READY_FACTOR
        );
    }

    #[test]
    fn a_stage_with_a_step_never_seen_is_not_predicted() {
        let mut fresh = Durations::default();
        fresh.learn("app", "build", 300.0);
        assert_eq!(running(1, 1300.0).stage_ends(&fresh, 1400.0), None);
        assert_eq!(running(0, 1300.0).stage_ends(&fresh, 1400.0), Some(1600.0));
        // An estimate stops at the first stage it cannot time.
        let started = pipeline(Progress::Started { at: 1000.0 });
        assert_eq!(started.running_stage(&fresh, 5000.0), Some((1, 1300.0)));
        assert_eq!(runners_ahead(&[started], &fresh, &deploys, 5000.0, 60.0), 0);
        // Other repositories' steps of the same name are other steps.
        let other = Pipeline {
            repository: "other".into(),
            ..running(0, 0.0)
        };
        assert_eq!(other.stage_ends(&fresh, 10.0), None);
    }

    #[test]
    fn cloud_steps_never_count() {
        let mut p = running(0, 1000.0);
        p.stages[1].push(step("cloud", &[]));
        assert_eq!(
            runners_ahead(&[p], &learned(), &|_| true, 1245.0, 60.0),
            3 * READY_FACTOR - 1
        );
    }

    #[test]
    fn durations_follow_a_step_that_changes_and_forget_the_stalest() {
        let mut d = Durations::default();
        d.learn("app", "build", 100.0);
        d.learn("app", "build", 300.0);
        assert_eq!(d.expected("app", "build"), Some(200.0));
        d.learn("app", "build", f64::NAN);
        assert_eq!(d.expected("app", "build"), Some(200.0));
        for i in 0..MAX_LEARNED {
            d.learn("repo", &format!("step{i}"), 1.0);
        }
        assert_eq!(d.len(), MAX_LEARNED);
        assert_eq!(d.expected("app", "build"), None, "the stalest went first");
        assert_eq!(d.expected("repo", "step0"), Some(1.0));
    }

    #[test]
    fn the_lead_is_the_slowest_recent_start_and_a_poll() {
        assert_eq!(lead(&[], 60.0, 15.0), 75.0);
        assert_eq!(lead(&[20.0, 45.0, f64::NAN], 60.0, 15.0), 60.0);
        assert_eq!(lead(&[5000.0], 60.0, 15.0), MAX_LEAD + 15.0);
    }
}
