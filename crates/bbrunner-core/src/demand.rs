//! Pipelines the operator heard of through webhooks, from push to end: which still need their
//! definition read, which ended and can teach their steps' durations, and which are under way
//! for a pool's lookahead. Pure: events and readings in, with the time; bounded, so that a
//! flood of deliveries costs memory no matter how many.

use std::collections::BTreeMap;

use crate::lookahead::{Durations, Pipeline, PlannedStep, Progress, Trigger};
use crate::units::Seconds;
use crate::webhook::{PipelineEvent, RepositoryName, Status};

/// At most this many pipelines are tracked; past it the oldest push is forgotten.
pub const MAX_TRACKED: usize = 1024;
/// A pipeline not ended after this long is forgotten (Bitbucket fails a step queued 2.5 hours
/// and stops one run 2): its end was missed.
pub const MAX_AGE: Seconds = 6.0 * 3600.0;
/// A commit status changed longer ago than this is an old delivery, refused.
pub const STALE_AFTER: Seconds = 3600.0;

/// What is known of a pipeline's definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    /// Not read yet.
    Unread,
    /// Its stages, as the commit's `bitbucket-pipelines.yml` gives them.
    Stages(Vec<Vec<PlannedStep>>),
    /// Nothing to look ahead with: the push starts no pipeline, it was not a push (a pipeline
    /// run by hand), or its file could not be read or parsed (the operator warned).
    Nothing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    pub repository: RepositoryName,
    pub commit: String,
    /// What started it, where a push said.
    pub trigger: Option<Trigger>,
    pub pushed_at: Seconds,
    pub started_at: Option<Seconds>,
    pub ended: bool,
    pub build_number: Option<u64>,
    pub definition: Definition,
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// News: a pool may want to look again.
    New,
    /// Already known (a redelivery, or a second event for the same thing): nothing changed.
    Known,
    /// A status from longer ago than [`STALE_AFTER`]: refused.
    Stale,
}

#[derive(Debug, Clone, Default)]
pub struct Tracker {
    pipelines: BTreeMap<(RepositoryName, String), Tracked>,
    pub durations: Durations,
}

impl Tracker {
    pub fn apply(&mut self, event: &PipelineEvent, now: Seconds) -> Change {
        match event {
            PipelineEvent::Pushed {
                repository,
                commit,
                trigger,
            } => {
                let key = (repository.clone(), commit.clone());
                if self.pipelines.contains_key(&key) {
                    return Change::Known;
                }
                self.insert(Tracked {
                    repository: repository.clone(),
                    commit: commit.clone(),
                    trigger: Some(trigger.clone()),
                    pushed_at: now,
                    started_at: None,
                    ended: false,
                    build_number: None,
                    definition: Definition::Unread,
                });
                Change::New
            }
            PipelineEvent::Status {
                repository,
                commit,
                status,
                build_number,
                updated_at,
            } => {
                if updated_at.is_some_and(|at| now - at > STALE_AFTER) {
                    return Change::Stale;
                }
                let key = (repository.clone(), commit.clone());
                let tracked = match self.pipelines.get_mut(&key) {
                    Some(tracked) => tracked,
                    None => {
                        // A pipeline no push announced (run by hand or on a schedule): its
                        // steps' durations are still worth learning.
                        self.insert(Tracked {
                            repository: repository.clone(),
                            commit: commit.clone(),
                            trigger: None,
                            pushed_at: now,
                            started_at: None,
                            ended: false,
                            build_number: None,
                            definition: Definition::Nothing,
                        });
                        self.pipelines.get_mut(&key).expect("just inserted")
                    }
                };
                if build_number.is_some() {
                    tracked.build_number = *build_number;
                }
                match status {
                    Status::InProgress if tracked.started_at.is_none() && !tracked.ended => {
                        tracked.started_at = Some(now);
                        Change::New
                    }
                    Status::Ended if !tracked.ended => {
                        tracked.ended = true;
                        Change::New
                    }
                    _ => Change::Known,
                }
            }
        }
    }

    fn insert(&mut self, tracked: Tracked) {
        if self.pipelines.len() >= MAX_TRACKED {
            let oldest = self
                .pipelines
                .iter()
                .min_by(|a, b| a.1.pushed_at.total_cmp(&b.1.pushed_at))
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.pipelines.remove(&oldest);
            }
        }
        self.pipelines.insert(
            (tracked.repository.clone(), tracked.commit.clone()),
            tracked,
        );
    }

    /// Forget pipelines older than [`MAX_AGE`].
    pub fn expire(&mut self, now: Seconds) {
        self.pipelines.retain(|_, p| now - p.pushed_at <= MAX_AGE);
    }

    /// Pipelines under way whose definition is still to read, in `workspace` (and
    /// `repository`, for a pool of one), oldest first.
    pub fn unread(&self, workspace: &str, repository: Option<&str>) -> Vec<&Tracked> {
        let mut unread: Vec<&Tracked> = self
            .of(workspace, repository)
            .filter(|p| !p.ended && p.definition == Definition::Unread)
            .collect();
        unread.sort_by(|a, b| a.pushed_at.total_cmp(&b.pushed_at));
        unread
    }

    pub fn set_definition(
        &mut self,
        repository: &RepositoryName,
        commit: &str,
        definition: Definition,
    ) {
        if let Some(tracked) = self
            .pipelines
            .get_mut(&(repository.clone(), commit.to_owned()))
        {
            tracked.definition = definition;
        }
    }

    /// Ended pipelines whose steps' durations are still to learn.
    pub fn ended(&self, workspace: &str, repository: Option<&str>) -> Vec<&Tracked> {
        self.of(workspace, repository).filter(|p| p.ended).collect()
    }

    /// Learn an ended pipeline's steps' durations (name, seconds), and forget it.
    pub fn learned(
        &mut self,
        repository: &RepositoryName,
        commit: &str,
        steps: &[(String, Seconds)],
    ) {
        for (name, seconds) in steps {
            self.durations.learn(&repository.slug, name, *seconds);
        }
        self.pipelines
            .remove(&(repository.clone(), commit.to_owned()));
    }

    /// The pipelines under way in `workspace` (and `repository`) whose stages are known, as
    /// the lookahead reads them.
    pub fn under_way(&self, workspace: &str, repository: Option<&str>) -> Vec<Pipeline> {
        self.of(workspace, repository)
            .filter(|p| !p.ended)
            .filter_map(|p| match &p.definition {
                Definition::Stages(stages) => Some(Pipeline {
                    repository: p.repository.slug.clone(),
                    stages: stages.clone(),
                    progress: match p.started_at {
                        Some(at) => Progress::Started { at },
                        None => Progress::Pushed { at: p.pushed_at },
                    },
                }),
                _ => None,
            })
            .collect()
    }

    fn of<'a, 'b>(
        &'a self,
        workspace: &'b str,
        repository: Option<&'b str>,
    ) -> impl Iterator<Item = &'a Tracked> {
        self.pipelines.values().filter(move |p| {
            p.repository.workspace == workspace && repository.is_none_or(|r| p.repository.slug == r)
        })
    }

    pub fn len(&self) -> usize {
        self.pipelines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(slug: &str) -> RepositoryName {
        RepositoryName {
            workspace: "acme".into(),
            slug: slug.into(),
        }
    }

    fn push(slug: &str, commit: &str) -> PipelineEvent {
        PipelineEvent::Pushed {
            repository: repo(slug),
            commit: commit.into(),
            trigger: Trigger::Branch("main".into()),
        }
    }

    fn status(slug: &str, commit: &str, status: Status, updated_at: f64) -> PipelineEvent {
        PipelineEvent::Status {
            repository: repo(slug),
            commit: commit.into(),
            status,
            build_number: Some(7),
            updated_at: Some(updated_at),
        }
    }

    fn stages() -> Vec<Vec<PlannedStep>> {
        vec![vec![PlannedStep {
            name: "build".into(),
            labels: vec!["self.hosted".into()],
        }]]
    }

    #[test]
    fn a_pipeline_goes_from_push_to_read_to_started_to_learned() {
        let mut t = Tracker::default();
        assert_eq!(t.apply(&push("app", "c1"), 100.0), Change::New);
        assert_eq!(
            t.apply(&push("app", "c1"), 101.0),
            Change::Known,
            "a redelivery"
        );
        assert_eq!(t.unread("acme", None).len(), 1);
        assert_eq!(t.unread("acme", Some("other")).len(), 0);
        assert!(
            t.under_way("acme", None).is_empty(),
            "nothing to look ahead with yet"
        );
        t.set_definition(&repo("app"), "c1", Definition::Stages(stages()));
        assert!(t.unread("acme", None).is_empty());
        assert_eq!(
            t.under_way("acme", Some("app"))[0].progress,
            Progress::Pushed { at: 100.0 }
        );
        assert_eq!(
            t.apply(&status("app", "c1", Status::InProgress, 105.0), 105.0),
            Change::New
        );
        assert_eq!(
            t.apply(&status("app", "c1", Status::InProgress, 105.0), 106.0),
            Change::Known
        );
        assert_eq!(
            t.under_way("acme", None)[0].progress,
            Progress::Started { at: 105.0 }
        );
        assert_eq!(
            t.apply(&status("app", "c1", Status::Ended, 400.0), 400.0),
            Change::New
        );
        assert!(t.under_way("acme", None).is_empty());
        assert_eq!(t.ended("acme", None)[0].build_number, Some(7));
        t.learned(&repo("app"), "c1", &[("build".into(), 290.0)]);
        assert!(t.is_empty());
        assert_eq!(t.durations.expected("app", "build"), Some(290.0));
    }

    #[test]
    fn old_statuses_are_refused_and_unannounced_pipelines_are_learned_from() {
        let mut t = Tracker::default();
        let old = status("app", "c1", Status::Ended, 0.0);
        assert_eq!(t.apply(&old, STALE_AFTER + 1.0), Change::Stale);
        assert!(t.is_empty());
        // A pipeline run by hand: no push, but its end teaches durations.
        assert_eq!(
            t.apply(&status("app", "c2", Status::Ended, 10.0), 10.0),
            Change::New
        );
        assert_eq!(t.ended("acme", None).len(), 1);
        assert!(t.unread("acme", None).is_empty(), "no definition to read");
    }

    #[test]
    fn a_flood_is_bounded_and_old_pipelines_expire() {
        let mut t = Tracker::default();
        for i in 0..(MAX_TRACKED + 50) {
            t.apply(&push("app", &format!("c{i}")), i as f64);
        }
        assert_eq!(t.len(), MAX_TRACKED);
        assert!(
            t.unread("acme", None).iter().all(|p| p.pushed_at >= 50.0),
            "the oldest went"
        );
        t.expire(MAX_TRACKED as f64 + 50.0 + MAX_AGE);
        assert!(t.len() < MAX_TRACKED);
        t.expire(1e9);
        assert!(t.is_empty());
    }
}
