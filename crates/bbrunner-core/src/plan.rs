//! The reconcile planner: from what Bitbucket and Kubernetes show of one pool, the actions
//! that bring it to what its spec asks, without ever touching a busy runner.
//!
//! A runner is identified by its UUID across three places: the runner in Bitbucket, its Secret
//! (the only copy of its OAuth secret, written right after creation) and its pod. The pod's
//! name is derived from the pool and the UUID, so there can never be two pods for one runner.
//! Everything here is derived from observation: a crash between any two actions leaves a state
//! the next plan repairs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::RunnerUuid;
use crate::reason::Reason;
use crate::scaling::{Decision, Observed, PolicyMemory, Scaling, busy_on_arrival, desired};
use crate::schedule::Overrides;
use crate::units::Seconds;

/// A runner's status in Bitbucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunnerStatus {
    Unregistered,
    Online,
    Offline,
    Disabled,
    Other,
}

/// One of this pool's runners as Bitbucket lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRunner {
    pub uuid: RunnerUuid,
    pub status: RunnerStatus,
    pub busy: bool,
    /// When its status last changed (from `state.updated_on`), if known.
    pub status_since: Option<Seconds>,
    /// Its labels as Bitbucket lists them; `None` where not known (then taken as current).
    pub labels: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// One of this pool's runner pods.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPod {
    pub runner: RunnerUuid,
    pub phase: PodPhase,
    pub terminating: bool,
    /// The scheduler's message when the pod cannot be placed.
    pub unschedulable: Option<String>,
    pub created_at: Seconds,
    /// Since when the pod has been Ready, if it is.
    pub ready_since: Option<Seconds>,
    /// The runner ran a step (recorded on the pod, for ephemeral pools).
    pub ran_step: bool,
    /// The revision of the pool's pod template the pod was made from, if recorded.
    pub template: Option<String>,
}

/// One of this pool's registration Secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedSecret {
    pub runner: RunnerUuid,
    pub created_at: Seconds,
}

/// Everything observed at one reconcile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    pub now: Seconds,
    /// This pool's runners (named for it) in Bitbucket.
    pub runners: Vec<ObservedRunner>,
    /// When that list was fetched: pods and Secrets newer than it may belong to runners it
    /// does not show yet.
    pub runners_fetched_at: Seconds,
    pub pods: Vec<ObservedPod>,
    pub secrets: Vec<ObservedSecret>,
    pub memory: PolicyMemory,
    /// Steps queued for this pool's labels, when known.
    pub queued: Option<u32>,
    /// Runners the pipelines under way will need when their next stages start
    /// ([`crate::lookahead::runners_ahead`]).
    pub ahead: u32,
    /// Runners the scope may still take before Bitbucket's limit of 100.
    pub scope_room: u32,
}

/// The pool as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub scaling: Scaling,
    pub overrides: Overrides,
    pub ephemeral: bool,
    /// A runner that stays UNREGISTERED or OFFLINE this long is replaced.
    pub registration_ttl: Seconds,
    /// Set while the pool is being deleted: since when, and how long busy runners may finish.
    pub deleting_since: Option<Seconds>,
    pub deletion_grace: Seconds,
    /// The labels every runner should carry (all of them, `self.hosted` included); empty: not
    /// checked.
    pub labels: Vec<String>,
    /// The revision of the pod template runner pods should be made from; `None`: not checked.
    pub template: Option<String>,
}

impl PoolSettings {
    /// Runners a rollout may take out of service at once: a quarter of `max`, at least one.
    /// Their replacements start meanwhile, so the pool holds up to this many pods over `max`.
    pub fn rollout_surge(&self) -> u32 {
        self.scaling.max.div_ceil(4).max(1)
    }

    /// Whether a runner (as Bitbucket lists it) and its pod are made from the pool's current
    /// spec: its labels, and its pod's template.
    fn is_current(&self, runner: Option<&ObservedRunner>, pod: Option<&ObservedPod>) -> bool {
        let labels_match = match runner.and_then(|r| r.labels.as_ref()) {
            Some(labels) if !self.labels.is_empty() => {
                let mut have: Vec<&str> = labels.iter().map(String::as_str).collect();
                let mut want: Vec<&str> = self.labels.iter().map(String::as_str).collect();
                have.sort_unstable();
                have.dedup();
                want.sort_unstable();
                want.dedup();
                have == want
            }
            _ => true,
        };
        let template_matches = match (&self.template, pod) {
            (Some(current), Some(pod)) => pod.template.as_deref() == Some(current.as_str()),
            _ => true,
        };
        labels_match && template_matches
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Create a runner in Bitbucket, then its Secret, then its pod.
    CreateRunner,
    /// The same, in place of this runner of an earlier spec, which the plan drains.
    ReplaceRunner(RunnerUuid),
    /// Create the pod of a runner whose Secret exists.
    CreatePod(RunnerUuid),
    DeletePod(RunnerUuid),
    DeleteSecret(RunnerUuid),
    DisableRunner(RunnerUuid),
    EnableRunner(RunnerUuid),
    DeleteRunner(RunnerUuid),
    /// Record on the pod that its runner ran a step.
    MarkRanStep(RunnerUuid),
    /// The pool is gone from Bitbucket: let Kubernetes delete it.
    RemoveFinalizer,
}

impl Action {
    /// The existing runner the action is about.
    pub fn runner(&self) -> Option<&RunnerUuid> {
        match self {
            Action::CreatePod(u)
            | Action::DeletePod(u)
            | Action::DeleteSecret(u)
            | Action::DisableRunner(u)
            | Action::EnableRunner(u)
            | Action::DeleteRunner(u)
            | Action::ReplaceRunner(u)
            | Action::MarkRanStep(u) => Some(u),
            Action::CreateRunner | Action::RemoveFinalizer => None,
        }
    }
}

/// Counts for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    pub starting: u32,
    /// Busy, idle, or online and disabled: overlaps the states below.
    pub online: u32,
    pub busy: u32,
    pub idle: u32,
    pub disabled: u32,
    pub offline: u32,
    /// Being retired by this plan.
    pub removing: u32,
    /// Made from the current spec, and from an earlier one (labels or pod template) not yet
    /// replaced: they overlap the states above.
    pub updated: u32,
    pub outdated: u32,
}

impl Counts {
    /// Runners that serve or will: what the policy weighs against its desired count.
    pub fn capacity(&self) -> u32 {
        self.starting + self.offline + self.idle + self.busy
    }

    /// The states every runner is in exactly one of (`online` overlaps them), so that their
    /// sum is the pool's runners, pods and registrations.
    pub fn disjoint(&self) -> [(&'static str, u32); 6] {
        [
            ("starting", self.starting),
            ("idle", self.idle),
            ("busy", self.busy),
            ("disabled", self.disabled),
            ("offline", self.offline),
            ("removing", self.removing),
        ]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub decision: Decision,
    pub counts: Counts,
    pub memory: PolicyMemory,
    /// Why runner pods cannot be placed, if they cannot.
    pub unschedulable: Option<String>,
    /// Runners wanted but not created because the scope is at Bitbucket's limit.
    pub blocked_by_quota: u32,
    /// Why each runner is touched, for the operator's log and Events.
    pub why: BTreeMap<RunnerUuid, &'static str>,
}

impl Plan {
    /// The runners whose pods are on their way out, and since when: drained while idle (since
    /// Bitbucket says they were disabled, never later than now), or retired by this plan.
    /// Their cache claims are free within seconds.
    pub fn leaving(&self, observed: &Observation) -> Vec<(RunnerUuid, Seconds)> {
        let now = observed.now;
        let drained = observed
            .runners
            .iter()
            .filter(|r| r.status == RunnerStatus::Disabled && !r.busy)
            .map(|r| (r.uuid.clone(), r.status_since.unwrap_or(now).min(now)));
        let retired = self.actions.iter().filter_map(|a| match a {
            Action::DisableRunner(u)
            | Action::DeleteRunner(u)
            | Action::ReplaceRunner(u)
            | Action::DeletePod(u) => Some((u.clone(), now)),
            _ => None,
        });
        drained.chain(retired).collect()
    }

    /// The runners whose pod the actions bring back (its name was known before).
    pub fn recreated(&self) -> impl Iterator<Item = &RunnerUuid> {
        self.actions.iter().filter_map(|a| match a {
            Action::CreatePod(u) => Some(u),
            _ => None,
        })
    }

    /// How many runner pods the actions create (each may take a cache claim).
    pub fn pods_to_create(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::CreateRunner | Action::ReplaceRunner(_) | Action::CreatePod(_)
                )
            })
            .count()
    }

    /// Why `action` is planned.
    pub fn reason(&self, action: &Action) -> &'static str {
        match action {
            Action::CreateRunner => self.decision.reason,
            Action::RemoveFinalizer => "every runner of the deleted pool is gone",
            runner_action => runner_action
                .runner()
                .and_then(|u| self.why.get(u).copied())
                .unwrap_or("repair"),
        }
    }

    /// What keeps the pool from working as asked, as a Degraded reason and message, worst
    /// first. `deleting_credentials` names the pool's credentials Secret when it is being
    /// deleted.
    pub fn problem(&self, deleting_credentials: Option<&str>) -> Option<(Reason, String)> {
        if let Some(secret) = deleting_credentials {
            return Some((
                Reason::CredentialsDeleting,
                format!(
                    "the credentials Secret {secret} is being deleted; it is kept until no pool uses it, so that deleting this pool can still remove its runners in Bitbucket. Delete the pool, or point spec.credentials at another Secret"
                ),
            ));
        }
        if self.blocked_by_quota > 0 {
            return Some((
                Reason::QuotaExceeded,
                format!(
                    "{} runner(s) wanted, but the scope is at Bitbucket's limit of 100 runners",
                    self.blocked_by_quota
                ),
            ));
        }
        self.unschedulable.as_ref().map(|m| {
            (
                Reason::Unschedulable,
                format!("runner pods cannot be scheduled: {m}"),
            )
        })
    }
}

/// What we know of one runner UUID across the three places.
struct Joined<'a> {
    uuid: RunnerUuid,
    runner: Option<&'a ObservedRunner>,
    pod: Option<&'a ObservedPod>,
    secret: Option<&'a ObservedSecret>,
}

/// Each UUID's runner, pod and Secret (the first of each where the lists repeat one), in UUID
/// order. Indexed, not searched: the simulator plans every poll of a month-long trace.
fn join(observed: &Observation) -> Vec<Joined<'_>> {
    let mut by_uuid: BTreeMap<&RunnerUuid, Joined<'_>> = BTreeMap::new();
    for r in &observed.runners {
        by_uuid
            .entry(&r.uuid)
            .or_insert_with(|| Joined::of(&r.uuid))
            .runner
            .get_or_insert(r);
    }
    for p in &observed.pods {
        by_uuid
            .entry(&p.runner)
            .or_insert_with(|| Joined::of(&p.runner))
            .pod
            .get_or_insert(p);
    }
    for s in &observed.secrets {
        by_uuid
            .entry(&s.runner)
            .or_insert_with(|| Joined::of(&s.runner))
            .secret
            .get_or_insert(s);
    }
    by_uuid.into_values().collect()
}

impl Joined<'_> {
    fn of(uuid: &RunnerUuid) -> Self {
        Self {
            uuid: uuid.clone(),
            runner: None,
            pod: None,
            secret: None,
        }
    }
}

/// Plan one reconcile of a managed pool.
pub fn plan(pool: &PoolSettings, observed: &Observation) -> Plan {
    let now = observed.now;
    let mut actions = Vec::new();
    let mut counts = Counts::default();
    let mut policy_view = Observed {
        queued: observed.queued,
        ahead: observed.ahead,
        ..Observed::default()
    };
    // Idle, enabled, healthy runners the policy may drain; disabled idle ones it may revive.
    let mut drainable: Vec<RunnerUuid> = Vec::new();
    // Idle runners of an earlier spec, for the rollout to replace.
    let mut outdated_idle: Vec<RunnerUuid> = Vec::new();
    let mut revivable: Vec<RunnerUuid> = Vec::new();
    let mut unschedulable = None;
    let mut why = BTreeMap::new();

    let retire = |actions: &mut Vec<Action>, j: &Joined<'_>| {
        if j.pod.is_some_and(|p| !p.terminating) {
            actions.push(Action::DeletePod(j.uuid.clone()));
        }
        if j.runner.is_some() {
            actions.push(Action::DeleteRunner(j.uuid.clone()));
        }
        if j.secret.is_some() {
            actions.push(Action::DeleteSecret(j.uuid.clone()));
        }
    };

    for j in join(observed) {
        let known_before_list = |created_at: Seconds| created_at < observed.runners_fetched_at;
        let live_pod = j.pod.filter(|p| {
            !p.terminating && p.phase != PodPhase::Failed && p.phase != PodPhase::Succeeded
        });

        // Pool deletion: disable everything, let busy runners finish within the grace.
        if let Some(since) = pool.deleting_since {
            match j.runner {
                Some(r) if r.busy && now - since < pool.deletion_grace => {
                    counts.busy += 1;
                    if r.status != RunnerStatus::Disabled {
                        why.insert(
                            j.uuid.clone(),
                            "pool deleted: the busy runner takes no new step",
                        );
                        actions.push(Action::DisableRunner(j.uuid.clone()));
                    }
                }
                // An idle runner could take a step between the list and a delete: disable it
                // first, and delete it when the next observation still finds it idle.
                Some(r) if !r.busy && r.status == RunnerStatus::Online && live_pod.is_some() => {
                    counts.disabled += 1;
                    why.insert(
                        j.uuid.clone(),
                        "pool deleted: disabled first, deleted once still idle",
                    );
                    actions.push(Action::DisableRunner(j.uuid.clone()));
                }
                _ => {
                    counts.removing += 1;
                    why.insert(j.uuid.clone(), "pool deleted");
                    retire(&mut actions, &j);
                }
            }
            continue;
        }

        let Some(runner) = j.runner else {
            // Not (or not yet) in Bitbucket.
            match (j.pod, j.secret) {
                (Some(p), _) if !known_before_list(p.created_at) => {
                    if p.terminating {
                        counts.removing += 1;
                    } else {
                        counts.starting += 1;
                        policy_view.starting += 1;
                    }
                }
                // Created after the list was read; its pod comes next.
                (None, Some(s)) if !known_before_list(s.created_at) => {
                    counts.starting += 1;
                    policy_view.starting += 1;
                }
                // The runner vanished from Bitbucket: its pod and Secret go too.
                _ => {
                    counts.removing += 1;
                    why.insert(j.uuid.clone(), "runner gone from Bitbucket");
                    retire(&mut actions, &j);
                }
            }
            continue;
        };

        let current = pool.is_current(Some(runner), j.pod);
        if current {
            counts.updated += 1;
        } else {
            counts.outdated += 1;
        }

        if runner.busy {
            // A busy runner is never disabled, deleted, or deprived of its pod: an outdated
            // one is replaced once its step is done.
            counts.busy += 1;
            counts.online += 1;
            policy_view.busy += 1;
            if j.pod
                .and_then(|p| p.ready_since)
                .is_some_and(|ready| busy_on_arrival(ready, now, pool.scaling.poll_interval))
            {
                policy_view.busy_on_arrival += 1;
            }
            if runner.status == RunnerStatus::Disabled {
                // It took a step while we were draining it: keep it.
                why.insert(j.uuid.clone(), "took a step while draining");
                actions.push(Action::EnableRunner(j.uuid.clone()));
            }
            if pool.ephemeral && j.pod.is_some_and(|p| !p.ran_step) {
                why.insert(j.uuid.clone(), "ephemeral runner took its step");
                actions.push(Action::MarkRanStep(j.uuid.clone()));
            }
            continue;
        }

        if runner.status == RunnerStatus::Disabled {
            // Disabled at an earlier reconcile and still idle: finish draining, unless the
            // policy below wants it back.
            let used_up = pool.ephemeral && j.pod.is_some_and(|p| p.ran_step);
            if live_pod.is_some() && !used_up && current {
                counts.disabled += 1;
                revivable.push(j.uuid.clone());
            } else {
                counts.removing += 1;
                let reason = if current {
                    "drained and still idle"
                } else {
                    "rollout: replaced, it ran an earlier spec"
                };
                why.insert(j.uuid.clone(), reason);
                retire(&mut actions, &j);
            }
            continue;
        }

        let Some(pod) = live_pod else {
            if j.pod.is_some_and(|p| !p.terminating) {
                // Failed or completed: remove it; the next reconcile recreates it.
                why.insert(j.uuid.clone(), "pod failed or completed");
                actions.push(Action::DeletePod(j.uuid.clone()));
                counts.starting += 1;
                policy_view.starting += 1;
            } else if j.pod.is_some() {
                // Still terminating: its name is taken until it is gone.
                counts.starting += 1;
                policy_view.starting += 1;
            } else if j.secret.is_some() {
                // The pod vanished: bring it back.
                why.insert(j.uuid.clone(), "pod vanished");
                actions.push(Action::CreatePod(j.uuid.clone()));
                counts.starting += 1;
                policy_view.starting += 1;
            } else {
                // No Secret, so no way to run it (a crash right after creating it): delete.
                counts.removing += 1;
                why.insert(j.uuid.clone(), "no registration Secret: it can never run");
                actions.push(Action::DeleteRunner(j.uuid.clone()));
            }
            continue;
        };

        // Bitbucket's clock is not ours: a status change "in the future" is skew, and the
        // pod's creation (our cluster's clock) is what can be trusted then.
        let age_in_state = now
            - runner
                .status_since
                .filter(|since| *since <= now)
                .unwrap_or(pod.created_at)
                .max(pod.created_at);
        match runner.status {
            RunnerStatus::Online => {
                counts.online += 1;
                if pool.ephemeral && pod.ran_step {
                    // Used once: drain and replace.
                    why.insert(j.uuid.clone(), "ephemeral runner used once");
                    actions.push(Action::DisableRunner(j.uuid.clone()));
                    counts.disabled += 1;
                } else {
                    counts.idle += 1;
                    policy_view.idle += 1;
                    if current {
                        drainable.push(j.uuid.clone());
                    } else {
                        outdated_idle.push(j.uuid.clone());
                    }
                }
            }
            RunnerStatus::Unregistered | RunnerStatus::Offline | RunnerStatus::Other => {
                let waiting_for_room =
                    pod.phase == PodPhase::Pending && pod.unschedulable.is_some();
                if waiting_for_room {
                    unschedulable = pod.unschedulable.clone();
                }
                if !waiting_for_room && age_in_state > pool.registration_ttl {
                    counts.removing += 1;
                    why.insert(j.uuid.clone(), "not online within the registration TTL");
                    retire(&mut actions, &j);
                } else if !current {
                    // Not serving yet: nothing is lost by replacing it at once.
                    counts.removing += 1;
                    why.insert(
                        j.uuid.clone(),
                        "rollout: not online yet, made from an earlier spec",
                    );
                    retire(&mut actions, &j);
                } else {
                    // The policy counts an offline runner as one coming back.
                    if runner.status == RunnerStatus::Offline {
                        counts.offline += 1;
                    } else {
                        counts.starting += 1;
                    }
                    policy_view.starting += 1;
                }
            }
            RunnerStatus::Disabled => unreachable!("handled above"),
        }
    }

    if pool.deleting_since.is_some() {
        if actions.is_empty() && counts.busy == 0 {
            actions.push(Action::RemoveFinalizer);
        }
        return Plan {
            actions,
            decision: Decision {
                desired: 0,
                reason: "pool is being deleted",
            },
            counts,
            memory: observed.memory,
            unschedulable,
            blocked_by_quota: 0,
            why,
        };
    }

    let (decision, memory) = desired(
        &pool.scaling,
        pool.overrides,
        &policy_view,
        observed.memory,
        now,
    );
    let capacity = policy_view.capacity();
    let mut blocked_by_quota = 0;
    if decision.desired > capacity {
        let mut need = decision.desired - capacity;
        for uuid in revivable.drain(..) {
            if need == 0 {
                break;
            }
            why.insert(uuid.clone(), "scale up: a draining runner is kept");
            actions.push(Action::EnableRunner(uuid));
            need -= 1;
        }
        let creatable = need.min(observed.scope_room);
        blocked_by_quota = need - creatable;
        actions.extend(std::iter::repeat_n(
            Action::CreateRunner,
            creatable as usize,
        ));
    } else if decision.desired < capacity {
        let surplus = (capacity - decision.desired) as usize;
        // Surplus goes outdated runners first, then the newest idle ones (list order is by
        // UUID: any order is fair).
        let drained: Vec<RunnerUuid> = outdated_idle
            .iter()
            .chain(drainable.iter().rev())
            .take(surplus)
            .cloned()
            .collect();
        outdated_idle.retain(|u| !drained.contains(u));
        for uuid in drained {
            why.insert(uuid.clone(), "scale down: surplus idle runner");
            actions.push(Action::DisableRunner(uuid));
        }
    }
    // The rollout: idle runners of an earlier spec are drained and replaced, a few at a
    // time, while their replacements (counted among those starting) come up.
    let in_flight = counts.starting + counts.offline;
    let budget = pool.rollout_surge().saturating_sub(in_flight) as usize;
    let created = actions
        .iter()
        .filter(|a| matches!(a, Action::CreateRunner))
        .count() as u32;
    let mut room = observed.scope_room.saturating_sub(created);
    for uuid in outdated_idle.into_iter().take(budget) {
        why.insert(uuid.clone(), "rollout to the current spec");
        actions.push(Action::DisableRunner(uuid.clone()));
        if room > 0 {
            room -= 1;
            actions.push(Action::ReplaceRunner(uuid));
        }
    }
    // Disabled runners not revived finish draining now.
    for uuid in revivable {
        why.insert(uuid.clone(), "drained and still idle");
        actions.push(Action::DeletePod(uuid.clone()));
        actions.push(Action::DeleteRunner(uuid.clone()));
        if observed.secrets.iter().any(|s| s.runner == uuid) {
            actions.push(Action::DeleteSecret(uuid));
        }
    }

    Plan {
        actions,
        decision,
        counts,
        memory,
        unschedulable,
        blocked_by_quota,
        why,
    }
}

/// Plan a static pool: one pod per imported registration, nothing created or deleted in
/// Bitbucket. `wanted` are the registrations' runner UUIDs.
pub fn plan_static(wanted: &[RunnerUuid], pods: &[ObservedPod]) -> Vec<Action> {
    let mut actions = Vec::new();
    for uuid in wanted {
        match pods.iter().find(|p| &p.runner == uuid) {
            None => actions.push(Action::CreatePod(uuid.clone())),
            Some(p)
                if !p.terminating && matches!(p.phase, PodPhase::Failed | PodPhase::Succeeded) =>
            {
                actions.push(Action::DeletePod(uuid.clone()))
            }
            Some(_) => {}
        }
    }
    for pod in pods
        .iter()
        .filter(|p| !wanted.contains(&p.runner) && !p.terminating)
    {
        actions.push(Action::DeletePod(pod.runner.clone()));
    }
    actions
}

/// The runner pods whose busy mark (`manifests::ANNOTATION_BUSY`) differs from their
/// runner's state, and the mark each should carry: on while the runner runs a step, off
/// otherwise (a pod whose runner is gone from Bitbucket has nothing to wait for). `pods` are
/// each pod's name, runner and current mark.
pub fn busy_marks_to_change(
    pods: &[(String, RunnerUuid, bool)],
    runners: &[ObservedRunner],
) -> Vec<(String, bool)> {
    let busy: std::collections::BTreeSet<&RunnerUuid> =
        runners.iter().filter(|r| r.busy).map(|r| &r.uuid).collect();
    pods.iter()
        .filter(|(_, runner, marked)| *marked != busy.contains(runner))
        .map(|(name, _, marked)| (name.clone(), !marked))
        .collect()
}

#[cfg(test)]
mod tests;
