//! Demand ahead of the queue, as the operator keeps it: pipelines heard of through webhooks
//! ([`bbrunner_core::demand::Tracker`]), the pools to wake when one of theirs is heard of, and
//! the reads a pool's reconcile makes for its lookahead (the pipelines' definitions, the
//! durations of their steps once ended). The decisions are the core's; this is the IO.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bbrunner_core::demand::{Definition, Tracker};
use bbrunner_core::lookahead::{self, DefinitionError};
use bbrunner_core::units::Seconds;
use bbrunner_core::webhook::RepositoryName;
use bitbucket::Client;
use futures::Stream;
use kube::api::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::broadcast;

use super::clock::Clock;
use super::metrics::Metrics;

/// Reads a reconcile makes for its lookahead at most: the rest wait for the next one, so that
/// a burst of pushes never holds a reconcile long or spends the budget at once.
const DEFINITIONS_PER_RECONCILE: usize = 4;
const LEARNINGS_PER_RECONCILE: usize = 2;
/// These reads leave this many requests of the hour's budget to the runners themselves.
const LOOKAHEAD_RESERVE: u32 = 200;
/// A runner's start time until the pool has seen one.
const DEFAULT_START: Seconds = 60.0;

/// A pool asking what is ahead of it.
#[derive(Clone, Copy)]
pub struct Asking<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub workspace: &'a str,
    /// For a pool of one repository.
    pub repository: Option<&'a str>,
    /// Whether its runners take a step with these `runs-on` labels.
    pub serves: &'a (dyn Fn(&[String]) -> bool + Sync),
    /// How long its recent runners took to start, in seconds.
    pub recent_starts: &'a [Seconds],
    pub poll: Seconds,
}

/// Where a pool looks for demand.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    workspace: String,
    repository: Option<String>,
}

pub struct Demand {
    tracker: Mutex<Tracker>,
    pools: Mutex<BTreeMap<(String, String), Watched>>,
    wake: broadcast::Sender<(String, String)>,
    clock: Clock,
}

impl Demand {
    pub fn new(clock: Clock) -> Self {
        Self {
            tracker: Mutex::new(Tracker::default()),
            pools: Mutex::new(BTreeMap::new()),
            wake: broadcast::channel(1024).0,
            clock,
        }
    }

    pub fn now(&self) -> Seconds {
        self.clock.now()
    }

    pub fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember where pool `namespace/name` looks for demand, for the webhooks to wake it.
    pub fn watch(&self, namespace: &str, name: &str, workspace: &str, repository: Option<&str>) {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (namespace.to_owned(), name.to_owned()),
            Watched {
                workspace: workspace.to_owned(),
                repository: repository.map(str::to_owned),
            },
        );
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Wake every pool that serves `repository`; how many.
    pub fn wake_for(&self, repository: &RepositoryName) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let mut woken = 0;
        for ((namespace, name), watched) in pools.iter() {
            if watched.workspace == repository.workspace
                && watched
                    .repository
                    .as_ref()
                    .is_none_or(|r| *r == repository.slug)
            {
                // No receiver yet (not leading): the next poll sees the pipeline anyway.
                let _ = self.wake.send((namespace.clone(), name.clone()));
                woken += 1;
            }
        }
        woken
    }

    /// The pools to reconcile early, in `namespace` (all, for `None`).
    pub fn wakes(
        &self,
        namespace: Option<String>,
        resource: kube::api::ApiResource,
    ) -> impl Stream<Item = ObjectRef<DynamicObject>> + Send + 'static {
        let receiver = self.wake.subscribe();
        futures::stream::unfold(receiver, move |mut receiver| {
            let (namespace, resource) = (namespace.clone(), resource.clone());
            async move {
                loop {
                    match receiver.recv().await {
                        Ok((ns, name)) if namespace.as_ref().is_none_or(|n| *n == ns) => {
                            let pool = ObjectRef::new_with(&name, resource).within(&ns);
                            return Some((pool, receiver));
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
    }

    /// Runners `pool` should ready for the stages ahead of the pipelines under way in its
    /// workspace (or repository): first the definitions still to read and the durations still
    /// to learn, within the budget and a few per reconcile.
    pub async fn runners_ahead(
        &self,
        client: &Client,
        metrics: &Metrics,
        pool: &Asking<'_>,
    ) -> u32 {
        let Asking {
            namespace,
            name,
            workspace,
            repository,
            serves,
            recent_starts,
            poll,
        } = *pool;
        self.watch(namespace, name, workspace, repository);
        let now = self.now();
        let unread: Vec<_> = {
            let mut tracker = self.tracker();
            tracker.expire(now);
            tracker
                .unread(workspace, repository)
                .into_iter()
                .take(DEFINITIONS_PER_RECONCILE)
                .map(|p| (p.repository.clone(), p.commit.clone(), p.trigger.clone()))
                .collect()
        };
        for (repo, commit, trigger) in unread {
            if client.remaining_budget() < LOOKAHEAD_RESERVE {
                break;
            }
            let Some(trigger) = trigger else { continue };
            let definition = match client
                .pipelines_file(&repo.workspace, &repo.slug, &commit)
                .await
            {
                Ok(None) => Definition::Nothing,
                Ok(Some(text)) => match lookahead::resolve(&text, &trigger) {
                    Ok(Some(stages)) => Definition::Stages(stages),
                    Ok(None) => Definition::Nothing,
                    Err(error) => {
                        let reason = match error {
                            DefinitionError::Yaml(_) => "unparsable",
                            DefinitionError::TooManySteps { .. } => "too_many_steps",
                        };
                        metrics.count_definition_error(reason);
                        tracing::warn!(repository = %format!("{}/{}", repo.workspace, repo.slug), %commit, %error, "cannot look ahead in this pipeline; its steps are met as they queue");
                        Definition::Nothing
                    }
                },
                // Worth another try at the next reconcile.
                Err(error) if error.is_retryable() => continue,
                Err(error) => {
                    metrics.count_definition_error("unreadable");
                    tracing::warn!(repository = %format!("{}/{}", repo.workspace, repo.slug), %commit, %error, "cannot read bitbucket-pipelines.yml; its steps are met as they queue");
                    Definition::Nothing
                }
            };
            self.tracker().set_definition(&repo, &commit, definition);
        }
        let ended: Vec<_> = self
            .tracker()
            .ended(workspace, repository)
            .into_iter()
            .take(LEARNINGS_PER_RECONCILE)
            .map(|p| (p.repository.clone(), p.commit.clone(), p.build_number))
            .collect();
        for (repo, commit, build_number) in ended {
            if client.remaining_budget() < LOOKAHEAD_RESERVE {
                break;
            }
            match client
                .finished_steps(&repo.workspace, &repo.slug, build_number, &commit)
                .await
            {
                Ok(steps) => self.tracker().learned(&repo, &commit, &steps),
                Err(error) if error.is_retryable() => {}
                // Gone from the recent list, or refused: nothing to learn from it.
                Err(error) => {
                    tracing::debug!(%error, "cannot learn a finished pipeline's step durations");
                    self.tracker().learned(&repo, &commit, &[]);
                }
            }
        }
        let tracker = self.tracker();
        lookahead::runners_ahead(
            &tracker.under_way(workspace, repository),
            &tracker.durations,
            serves,
            now,
            lookahead::lead(recent_starts, DEFAULT_START, poll),
        )
    }
}
