//! A deterministic discrete-event simulation of one runner pool under one policy.
//!
//! Modelled: step arrivals with labels and durations; the pool's runners from creation
//! (pod start and registration take a sampled latency) to deletion; each runner's own poll for
//! work every 30 s (it polls at once when it comes online and when it finishes a step); the
//! policy's poll interval, at which bbrunner's policies run the operator's own planner
//! (`plan::plan`, with its disable → delete scale-down protocol and drain order); Bitbucket's failing of a
//! step no online runner could take, and its 2.5 h queue timeout; the API calls each policy
//! makes; where asked ([`ColdStart`]), the time a step loses on a runner whose Docker store is
//! empty, and the warm cache's volumes that spare it. Not modelled: step sizes against memory (the lint's job), API faults and rate
//! limits, Kubernetes scheduling beyond the start latency.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use super::TraceStep;
use super::pipelines::Runs;
pub use super::result::{PolicyResult, Sample, percentile};
use super::rng::Rng;
pub use super::volumes::ColdStart;
use super::volumes::Volumes;
use crate::ids::RunnerUuid;
use crate::labels::Labels;
use crate::lookahead::{Durations, runners_ahead};
use crate::plan::{
    Action, Observation, ObservedPod, ObservedRunner, ObservedSecret, PodPhase, PoolSettings,
    RunnerStatus, plan,
};
use crate::scaling::{
    AtlassianAction, PolicyKind, PolicyMemory, Scaling, atlassian_ratio, fair_poll_interval,
    reads_queue,
};
use crate::schedule::overrides_at;
use crate::units::RUNNERS_PER_SCOPE;
use crate::units::Seconds;

/// The runner's own interval between polls for work.
pub const RUNNER_POLL: Seconds = 30.0;
/// Bitbucket fails a step that waited this long.
pub const QUEUE_TIMEOUT: Seconds = 2.5 * 3600.0;
/// The simulation starts on Monday 2026-01-05 00:00 UTC, so that schedules (cron windows)
/// open as they would in a working week.
pub const SIM_EPOCH: Seconds = 1_767_571_200.0;
/// Samples kept for plots.
const TIMELINE_SAMPLES: usize = 600;

/// Pod start plus registration time: normal, clamped to at least 5 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartLatency {
    pub mean: Seconds,
    pub spread: Seconds,
}

impl Default for StartLatency {
    fn default() -> Self {
        Self {
            mean: 45.0,
            spread: 15.0,
        }
    }
}

/// One simulation's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Labels the pool's runners carry (system labels included).
    pub labels: Labels,
    pub scaling: Scaling,
    pub start_latency: StartLatency,
    pub seed: u64,
    /// API requests per rolling hour the identity may spend (the client's budget).
    pub api_budget: u32,
    /// What the pool learned before this run (its demand profile; see
    /// [`PolicyMemory::learned`]).
    pub history: PolicyMemory,
    /// Step durations learned before this run, for the lookahead.
    pub durations: Durations,
    /// Whether Bitbucket's webhooks reach the operator: it learns of each push at once and
    /// plans then, instead of at its next poll.
    pub webhooks: bool,
    pub cold_start: ColdStart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunnerState {
    Starting,
    Online,
    Deleted,
}

#[derive(Debug, Clone)]
struct Runner {
    /// Its UUID as the planner sees it, made once.
    uuid: RunnerUuid,
    state: RunnerState,
    created_at: Seconds,
    enabled: bool,
    disabled_at: Option<Seconds>,
    step: Option<usize>,
    /// When it last polled: its polls fall on this phase, every RUNNER_POLL.
    poll_phase: Seconds,
    poll_scheduled: bool,
    /// When it came online (its registration).
    online_at: Option<Seconds>,
    /// Its Docker store holds what earlier steps pulled and built.
    store_warm: bool,
    /// Its cache volume, if the pool has a cache.
    volume: Option<usize>,
}

impl Runner {
    fn idle_online(&self) -> bool {
        self.state == RunnerState::Online && self.step.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Arrival(usize),
    /// A webhook announces pipeline `n`'s push: the operator plans at once.
    Push(usize),
    Timeout(usize),
    Ready(usize),
    Poll(usize),
    Done(usize),
    PolicyPoll,
    Create,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Scheduled {
    at: Seconds,
    seq: u64,
    event: Event,
}

impl Eq for Scheduled {}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.total_cmp(&other.at).then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepOutcome {
    Pending,
    Queued,
    Started,
    Failed,
    /// Of a pipeline whose earlier step failed: it never runs.
    Skipped,
}

struct Sim<'a> {
    steps: &'a [TraceStep],
    config: &'a SimConfig,
    rng: Rng,
    events: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    now: Seconds,
    runners: Vec<Runner>,
    /// Indices of runners not deleted: policies and arrivals look only at these.
    live: Vec<usize>,
    starting: u32,
    online: u32,
    busy: u32,
    /// Steps not yet finished or failed.
    open: usize,
    /// Queued steps in arrival order; one that timed out stays until it comes up.
    queue: VecDeque<usize>,
    /// Steps queued now (the queue less those that timed out).
    waiting: u32,
    outcome: Vec<StepOutcome>,
    /// When each step queued (a later stage's, once the stage before it ended).
    queued_at: Vec<Seconds>,
    waits: Vec<f64>,
    runs: Runs,
    durations: Durations,
    memory: PolicyMemory,
    /// Creations Atlassian's autoscaler still has to make, one per create pause.
    pending_creates: u32,
    volumes: Volumes,
    /// Steps that ran on an empty store.
    cold_steps: usize,
    api_calls: u64,
    /// When recent calls were made, for the rolling-hour budget.
    recent_calls: VecDeque<Seconds>,
    // Integrals and peaks.
    last_t: Seconds,
    idle_seconds: f64,
    busy_seconds: f64,
    peak: u32,
    timeline: Vec<Sample>,
    sample_every: Seconds,
    next_sample: Seconds,
}

/// Run one policy over a trace. `progress` receives the share of simulated time done.
pub fn simulate(
    steps: &[TraceStep],
    config: &SimConfig,
    progress: &mut dyn FnMut(f64),
) -> PolicyResult {
    let horizon = steps.iter().map(|s| s.at + s.duration).fold(0.0, f64::max) + 3600.0;
    let mut sim = Sim {
        steps,
        config,
        rng: Rng::new(config.seed ^ 0x5eed_0f51_u64),
        events: BinaryHeap::new(),
        seq: 0,
        now: 0.0,
        runners: Vec::new(),
        live: Vec::new(),
        starting: 0,
        online: 0,
        busy: 0,
        open: steps.len(),
        queue: VecDeque::new(),
        waiting: 0,
        outcome: vec![StepOutcome::Pending; steps.len()],
        queued_at: steps.iter().map(|s| s.at).collect(),
        waits: Vec::with_capacity(steps.len()),
        runs: Runs::new(steps),
        durations: config.durations.clone(),
        memory: config.history.learned(),
        pending_creates: 0,
        volumes: Volumes::new(config.cold_start.cache_retain),
        cold_steps: 0,
        api_calls: 0,
        recent_calls: VecDeque::new(),
        last_t: 0.0,
        idle_seconds: 0.0,
        busy_seconds: 0.0,
        peak: 0,
        timeline: Vec::with_capacity(TIMELINE_SAMPLES + 1),
        sample_every: horizon / TIMELINE_SAMPLES as f64,
        next_sample: 0.0,
    };
    // A pool in steady state starts with `min` runners online, their stores warm.
    for _ in 0..config.scaling.min {
        let r = sim.add_runner(0.0);
        sim.runners[r].state = RunnerState::Online;
        sim.starting -= 1;
        sim.online += 1;
        sim.runners[r].store_warm = true;
        if let Some(v) = sim.runners[r].volume {
            sim.volumes.warmed(v);
        }
    }
    // Webhooks first: a push is announced as its pipeline's first steps queue.
    if config.webhooks {
        let pushes: Vec<(usize, Seconds)> = sim.runs.pushes().collect();
        for (run, at) in pushes {
            sim.schedule(at, Event::Push(run));
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if sim.runs.arrives_on_its_own(i) {
            sim.schedule(step.at, Event::Arrival(i));
        }
    }
    sim.schedule(0.0, Event::PolicyPoll);

    let mut reported = 0.0;
    while let Some(Reverse(next)) = sim.events.pop() {
        if next.at > horizon && sim.open == 0 {
            break;
        }
        sim.advance(next.at);
        sim.handle(next.event);
        let share = (next.at / horizon).min(1.0);
        if share - reported >= 0.01 {
            reported = share;
            progress(share);
        }
    }
    sim.advance(sim.now.max(horizon));
    progress(1.0);
    sim.result()
}

impl Sim<'_> {
    fn schedule(&mut self, at: Seconds, event: Event) {
        self.seq += 1;
        self.events.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Move the clock, integrating runner-seconds and taking timeline samples.
    fn advance(&mut self, to: Seconds) {
        if to <= self.now {
            return;
        }
        let (starting, online, busy) = (self.starting, self.online, self.busy);
        while self.next_sample <= to && self.timeline.len() <= TIMELINE_SAMPLES {
            self.timeline.push(Sample {
                t: self.next_sample,
                queued: self.waiting,
                starting,
                online,
                busy,
            });
            self.next_sample += self.sample_every;
        }
        let dt = to - self.last_t;
        self.idle_seconds += dt * f64::from(starting + online - busy);
        self.busy_seconds += dt * f64::from(busy);
        self.last_t = to;
        self.now = to;
    }

    fn add_runner(&mut self, now: Seconds) -> usize {
        self.runners.push(Runner {
            uuid: runner_uuid(self.runners.len()),
            state: RunnerState::Starting,
            created_at: now,
            enabled: true,
            disabled_at: None,
            step: None,
            poll_phase: now,
            poll_scheduled: false,
            online_at: None,
            store_warm: false,
            volume: None,
        });
        let r = self.runners.len() - 1;
        self.live.push(r);
        self.starting += 1;
        self.peak = self.peak.max(self.live.len() as u32);
        let delay = self.config.scaling.scale_down_delay;
        if let Some((v, warm)) = self.volumes.mount(self.now, delay) {
            self.runners[r].volume = Some(v);
            self.runners[r].store_warm = warm;
        }
        r
    }

    /// Record one API request.
    fn call(&mut self) {
        self.api_calls += 1;
        self.recent_calls.push_back(self.now);
    }

    /// Whether the pool reads pipelines' definitions to look ahead.
    fn lookahead(&self) -> bool {
        self.config.scaling.lookahead && self.config.scaling.policy != PolicyKind::AtlassianRatio
    }

    /// Requests left in the rolling hour's budget.
    fn remaining_budget(&mut self) -> u32 {
        while self
            .recent_calls
            .front()
            .is_some_and(|t| self.now - t >= 3600.0)
        {
            self.recent_calls.pop_front();
        }
        self.config
            .api_budget
            .saturating_sub(self.recent_calls.len() as u32)
    }

    fn delete(&mut self, r: usize) {
        // Never a busy runner: the planner and Atlassian's cleaner both promise it.
        debug_assert!(self.runners[r].step.is_none());
        match self.runners[r].state {
            RunnerState::Starting => self.starting -= 1,
            RunnerState::Online => self.online -= 1,
            RunnerState::Deleted => return,
        }
        self.runners[r].state = RunnerState::Deleted;
        self.live.retain(|&l| l != r);
        if let Some(v) = self.runners[r].volume.take() {
            self.volumes.release(v, self.now);
        }
        self.call();
    }

    fn fail(&mut self, i: usize) {
        self.outcome[i] = StepOutcome::Failed;
        self.open -= 1;
        for skipped in self.runs.failed(i) {
            self.outcome[skipped] = StepOutcome::Skipped;
            self.open -= 1;
        }
    }

    fn create_runner(&mut self) {
        self.call();
        let r = self.add_runner(self.now);
        let latency = self.config.start_latency;
        let delay = (latency.mean + latency.spread * self.rng.normal()).max(5.0);
        self.schedule(self.now + delay, Event::Ready(r));
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrival(i) => self.arrive(i),
            Event::Push(run) => {
                self.runs.make_known(run);
                if self.config.scaling.policy != PolicyKind::AtlassianRatio {
                    // The pipeline's definition at the pushed commit.
                    if self.lookahead() {
                        self.call();
                    }
                    self.our_poll();
                }
            }
            Event::Timeout(i) => {
                if self.outcome[i] == StepOutcome::Queued {
                    // Left in the queue, skipped when it comes up: removing it here would
                    // cost the queue's length per timeout.
                    self.fail(i);
                    self.waiting -= 1;
                }
            }
            Event::Ready(r) => {
                if self.runners[r].state == RunnerState::Starting {
                    self.runners[r].state = RunnerState::Online;
                    self.runners[r].online_at = Some(self.now);
                    self.starting -= 1;
                    self.online += 1;
                    self.poll(r);
                }
            }
            Event::Poll(r) => {
                self.runners[r].poll_scheduled = false;
                self.poll(r);
            }
            Event::Done(r) => {
                let step = self.runners[r].step.take();
                self.busy -= 1;
                self.open -= 1;
                if let Some(i) = step {
                    let now = self.now;
                    let (next, ended) = self.runs.done(i, self.steps, now, &mut self.durations);
                    for next in next {
                        self.queued_at[next] = now;
                        self.schedule(now, Event::Arrival(next));
                    }
                    // Its commit status tells the operator it ended: it learns its steps'
                    // durations with two calls (the pipeline by its commit, its steps).
                    if ended && self.config.webhooks && self.lookahead() {
                        self.call();
                        self.call();
                    }
                }
                self.poll(r);
            }
            Event::PolicyPoll => self.policy_poll(),
            Event::Create => {
                if self.pending_creates > 0 {
                    self.pending_creates -= 1;
                    // Atlassian's autoscaler reads the runner list again before each create.
                    self.call();
                    self.create_runner();
                    if self.pending_creates > 0 {
                        let pause = self.config.scaling.atlassian.create_pause;
                        self.schedule(self.now + pause, Event::Create);
                    }
                }
            }
        }
    }

    fn arrive(&mut self, i: usize) {
        self.runs.queued(i);
        let step = &self.steps[i];
        let servable = self.config.labels.serves(&step.labels);
        // Bitbucket fails a step at once when no online runner has its labels.
        if !servable || self.online == 0 {
            self.fail(i);
            return;
        }
        self.outcome[i] = StepOutcome::Queued;
        self.queue.push_back(i);
        self.waiting += 1;
        self.schedule(self.now + QUEUE_TIMEOUT, Event::Timeout(i));
        // Idle runners will see it at their next poll.
        let now = self.now;
        let mut polls = Vec::new();
        for &r in &self.live {
            let runner = &mut self.runners[r];
            if runner.idle_online() && runner.enabled && !runner.poll_scheduled {
                let since = now - runner.poll_phase;
                let next = runner.poll_phase + (since / RUNNER_POLL).ceil() * RUNNER_POLL;
                runner.poll_scheduled = true;
                polls.push((next, r));
            }
        }
        for (at, r) in polls {
            self.schedule(at, Event::Poll(r));
        }
    }

    /// A runner asks for work: an enabled idle runner takes the oldest queued step.
    fn poll(&mut self, r: usize) {
        let runner = &mut self.runners[r];
        runner.poll_phase = self.now;
        if !runner.idle_online() || !runner.enabled {
            return;
        }
        let Some(i) = std::iter::from_fn(|| self.queue.pop_front())
            .find(|&i| self.outcome[i] == StepOutcome::Queued)
        else {
            return;
        };
        self.waiting -= 1;
        self.outcome[i] = StepOutcome::Started;
        self.waits.push(self.now - self.queued_at[i]);
        self.runners[r].step = Some(i);
        self.busy += 1;
        let mut duration = self.steps[i].duration;
        if !self.runners[r].store_warm {
            self.cold_steps += 1;
            duration += self.config.cold_start.cost;
            self.runners[r].store_warm = true;
            if let Some(v) = self.runners[r].volume {
                self.volumes.warmed(v);
            }
        }
        self.schedule(self.now + duration, Event::Done(r));
    }

    fn policy_poll(&mut self) {
        let scaling = &self.config.scaling;
        let interval = match scaling.policy {
            PolicyKind::AtlassianRatio => scaling.atlassian.poll_interval,
            // As the operator polls: no faster than the identity's fair share allows.
            _ => scaling
                .poll_interval
                .max(fair_poll_interval(self.config.api_budget, 1)),
        };
        match scaling.policy {
            PolicyKind::AtlassianRatio => self.atlassian_poll(),
            _ => self.our_poll(),
        }
        self.volumes
            .prune(self.now, self.config.scaling.scale_down_delay);
        self.schedule(self.now + interval, Event::PolicyPoll);
    }

    /// bbrunner's loop: what the operator does at each poll, by the operator's own planner
    /// (`plan::plan`) over what Bitbucket and Kubernetes would show, its actions applied to
    /// the model. One list call; the queue where the policy reads it and the budget allows.
    fn our_poll(&mut self) {
        self.call();
        let scaling = self.config.scaling.clone();
        // As the operator asks: one call for the pipelines list, the rest from the reserve.
        let queued = reads_queue(scaling.policy, self.remaining_budget(), 1).then(|| {
            // The pipelines list plus one steps call per active pipeline (one step each).
            for _ in 0..1 + self.waiting + self.busy {
                self.call();
            }
            self.waiting
        });
        // The pipelines API shows the pipelines under way to a pool that reads it.
        if queued.is_some() {
            for run in self.runs.unknown_under_way() {
                self.runs.make_known(run);
            }
        }
        let mut observation = self.observation(queued);
        if scaling.lookahead {
            // Runners must be asked for a start before they are needed, at a poll.
            let latency = self.config.start_latency;
            let lead = latency.mean + latency.spread + scaling.poll_interval;
            let labels = &self.config.labels;
            observation.ahead = runners_ahead(
                &self.runs.known(self.steps, queued.is_some()),
                &self.durations,
                &|wanted: &[String]| labels.serves(wanted),
                self.now,
                lead,
            );
        }
        let pool = PoolSettings {
            overrides: overrides_at(&scaling.schedules, observation.now),
            scaling,
            ephemeral: false,
            registration_ttl: SIM_REGISTRATION_TTL,
            deleting_since: None,
            deletion_grace: SIM_REGISTRATION_TTL,
            // The simulated pool's spec never changes: nothing to roll out.
            labels: Vec::new(),
            template: None,
        };
        let plan = plan(&pool, &observation);
        self.memory = plan.memory;
        for action in plan.actions {
            match action {
                Action::CreateRunner | Action::ReplaceRunner(_) => self.create_runner(),
                Action::DisableRunner(u) => {
                    let now = self.now;
                    let runner = &mut self.runners[runner_index(&u)];
                    runner.enabled = false;
                    runner.disabled_at = Some(now);
                    self.call();
                }
                Action::EnableRunner(u) => {
                    let r = runner_index(&u);
                    self.runners[r].enabled = true;
                    self.runners[r].disabled_at = None;
                    self.call();
                    self.poll(r);
                }
                Action::DeleteRunner(u) => self.delete(runner_index(&u)),
                // Kubernetes' side costs no Bitbucket call and changes nothing modelled here.
                Action::CreatePod(_)
                | Action::DeletePod(_)
                | Action::DeleteSecret(_)
                | Action::MarkRanStep(_)
                | Action::RemoveFinalizer => {}
            }
        }
    }

    /// The pool as the operator would observe it now: each live runner in Bitbucket
    /// (UNREGISTERED while starting, DISABLED once drained), its Secret and its pod (Pending
    /// until the runner is online). Times are on the operator's clock (Unix seconds, from
    /// [`SIM_EPOCH`]), so that schedules and the demand profile see the time of week.
    fn observation(&self, queued: Option<u32>) -> Observation {
        let at = |t: Seconds| SIM_EPOCH + t;
        let mut observation = Observation {
            now: at(self.now),
            runners_fetched_at: at(self.now),
            memory: self.memory,
            queued,
            scope_room: RUNNERS_PER_SCOPE.saturating_sub(self.live.len() as u32),
            ..Observation::default()
        };
        for &r in &self.live {
            let runner = &self.runners[r];
            let uuid = runner.uuid.clone();
            let status = match (runner.state, runner.enabled) {
                (RunnerState::Starting, _) => RunnerStatus::Unregistered,
                (_, false) => RunnerStatus::Disabled,
                _ => RunnerStatus::Online,
            };
            observation.runners.push(ObservedRunner {
                uuid: uuid.clone(),
                status,
                busy: runner.step.is_some(),
                status_since: runner.disabled_at.or(runner.online_at).map(at),
                labels: None,
            });
            observation.pods.push(ObservedPod {
                runner: uuid.clone(),
                phase: if runner.state == RunnerState::Online {
                    PodPhase::Running
                } else {
                    PodPhase::Pending
                },
                terminating: false,
                unschedulable: None,
                created_at: at(runner.created_at),
                ready_since: runner.online_at.map(at),
                ran_step: false,
                template: None,
            });
            observation.secrets.push(ObservedSecret {
                runner: uuid,
                created_at: at(runner.created_at),
            });
        }
        observation
    }

    /// Atlassian's loop: its list call and its cleaner's, the ratio rule, creations spaced
    /// by its pause, and the cleaner deleting runners disabled for a cool-down.
    fn atlassian_poll(&mut self) {
        self.call();
        self.call();
        let scaling = self.config.scaling.clone();
        let params = scaling.atlassian;
        for r in self.live.clone() {
            let runner = &self.runners[r];
            if runner.idle_online()
                && !runner.enabled
                && runner
                    .disabled_at
                    .is_some_and(|t| self.now - t >= params.cool_down)
            {
                self.delete(r);
            }
        }
        let enabled_online = || {
            self.live
                .iter()
                .map(|&r| &self.runners[r])
                .filter(|r| r.state == RunnerState::Online && r.enabled)
        };
        let online = enabled_online().count() as u32;
        let busy = enabled_online().filter(|r| r.step.is_some()).count() as u32;
        let total = self.live.len() as u32 + self.pending_creates;
        match atlassian_ratio(&scaling, online, busy, total) {
            AtlassianAction::Create(n) => {
                if self.pending_creates == 0 {
                    self.schedule(self.now, Event::Create);
                }
                self.pending_creates += n;
            }
            AtlassianAction::Disable(mut n) => {
                let now = self.now;
                for r in self.live.clone().into_iter().rev() {
                    if n == 0 {
                        break;
                    }
                    let runner = &mut self.runners[r];
                    if runner.idle_online()
                        && runner.enabled
                        && now - runner.created_at >= params.cool_down
                    {
                        runner.enabled = false;
                        runner.disabled_at = Some(now);
                        self.call();
                        n -= 1;
                    }
                }
            }
            AtlassianAction::Nothing => {}
        }
    }

    fn result(mut self) -> PolicyResult {
        let count = |outcome: StepOutcome| self.outcome.iter().filter(|o| **o == outcome).count();
        let skipped = count(StepOutcome::Skipped);
        let failed = self.steps.len() - count(StepOutcome::Started) - skipped;
        self.waits.sort_by(f64::total_cmp);
        let pct = |p: f64| percentile(&self.waits, p);
        let overheads = self.runs.overheads();
        let overhead = |p: f64| (!overheads.is_empty()).then(|| percentile(&overheads, p));
        let hours = (self.now / 3600.0).max(1e-9);
        let api_calls_per_hour = self.api_calls as f64 / hours;
        let limit = crate::doctor::BITBUCKET_REQUESTS_PER_HOUR;
        let errors = (api_calls_per_hour > f64::from(limit))
            .then(|| {
                format!(
                    "{api_calls_per_hour:.0} API calls an hour exceed Bitbucket's {limit} per identity: it would answer 429 and the pool would stall; poll less often"
                )
            })
            .into_iter()
            .collect();
        PolicyResult {
            name: self.config.scaling.policy.name().to_owned(),
            steps: self.steps.len(),
            failed_steps: failed,
            skipped_steps: skipped,
            p50_wait_s: pct(0.50),
            p95_wait_s: pct(0.95),
            p99_wait_s: pct(0.99),
            max_wait_s: self.waits.last().copied().unwrap_or(0.0),
            idle_runner_hours: self.idle_seconds / 3600.0,
            busy_runner_hours: self.busy_seconds / 3600.0,
            peak_runners: self.peak,
            runners_created: self.runners.len() - self.config.scaling.min as usize,
            pipelines: self.runs.len(),
            pipeline_overhead_p50_s: overhead(0.50),
            pipeline_overhead_p95_s: overhead(0.95),
            pipeline_overhead_p95_vs_oracle: None,
            api_calls_per_hour,
            cold_steps: self.cold_steps,
            cache_volumes_peak: self.volumes.peak(),
            errors,
            p95_vs_oracle: None,
            idle_vs_oracle: None,
            timeline: self.timeline,
            waits: self.waits,
            learned: self.memory.learned(),
            durations: self.durations,
        }
    }
}

/// A runner of the model as the planner knows it: UUIDs in creation order, so that the
/// planner's list order (by UUID) is the model's.
fn runner_uuid(r: usize) -> RunnerUuid {
    RunnerUuid::parse(&format!("{{00000000-0000-4000-8000-{r:012}}}")).expect("a well-formed UUID")
}

fn runner_index(uuid: &RunnerUuid) -> usize {
    uuid.bare()[24..].parse().expect("a UUID of runner_uuid")
}

/// The operator's default `--registration-ttl`: model runners register within a start.
const SIM_REGISTRATION_TTL: Seconds = 600.0;
