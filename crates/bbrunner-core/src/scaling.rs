//! Scaling policies: pure functions from what a pool looks like now to how many runners it
//! should have. The operator and the simulator run these same functions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::forecast::{self, DemandProfile};
use crate::schedule::Overrides;
use crate::units::RUNNERS_PER_SCOPE;
use crate::units::Seconds;

/// Which policy decides the desired runner count.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// desired = busy + minIdle (one or two fewer while the pool is active or busy), plus the
    /// runners that took a step on arrival, and what the demand forecast expects.
    #[default]
    IdleBuffer,
    /// desired = busy + queued steps + minIdle, when the queue is known.
    Queue,
    /// A model of Atlassian's runners-autoscaler `percentageRunnersIdle`.
    AtlassianRatio,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 3] = [Self::IdleBuffer, Self::Queue, Self::AtlassianRatio];

    pub fn name(self) -> &'static str {
        match self {
            Self::IdleBuffer => "idle-buffer",
            Self::Queue => "queue",
            Self::AtlassianRatio => "atlassian-ratio",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == raw)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Atlassian's runners-autoscaler settings, with its defaults (reference §5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AtlassianParams {
    pub poll_interval: Seconds,
    pub scale_up_threshold: f64,
    pub scale_down_threshold: f64,
    pub scale_up_multiplier: f64,
    pub scale_down_multiplier: f64,
    pub cool_down: Seconds,
    /// Pause after each runner it creates.
    pub create_pause: Seconds,
}

impl Default for AtlassianParams {
    fn default() -> Self {
        Self {
            poll_interval: 600.0,
            scale_up_threshold: 0.5,
            scale_down_threshold: 0.2,
            scale_up_multiplier: 1.5,
            scale_down_multiplier: 0.5,
            cool_down: 300.0,
            create_pause: 10.0,
        }
    }
}

/// A pool's scaling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    pub min: u32,
    pub max: u32,
    pub min_idle: u32,
    pub policy: PolicyKind,
    pub scale_down_delay: Seconds,
    pub poll_interval: Seconds,
    /// Whether the demand forecast readies runners ahead of busy times ([`crate::forecast`]).
    pub forecast: bool,
    /// Whether the pipelines under way ready the runners of their next stages
    /// ([`crate::lookahead`]).
    pub lookahead: bool,
    pub atlassian: AtlassianParams,
    /// Windows with their own floor (see `schedule`).
    pub schedules: Vec<crate::schedule::Schedule>,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            min: 1,
            max: 10,
            min_idle: 3,
            policy: PolicyKind::IdleBuffer,
            scale_down_delay: 90.0,
            poll_interval: 15.0,
            forecast: true,
            lookahead: true,
            atlassian: AtlassianParams::default(),
            schedules: Vec::new(),
        }
    }
}

/// What a policy sees of a pool at one poll. Runners being drained (disabled) are not counted:
/// they are leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    /// Created but not yet online: pod pending or runner UNREGISTERED. Counted as capacity so
    /// that a slow start never makes us overshoot.
    pub starting: u32,
    pub idle: u32,
    pub busy: u32,
    /// Steps waiting for this pool's labels, when the pipelines API says.
    pub queued: Option<u32>,
    /// Busy runners that came online within the last two polls: each took a step as soon as
    /// it could, so steps were waiting for it and as many more may still be waiting. This is
    /// how a fan-out shows itself when the queue cannot be seen.
    pub busy_on_arrival: u32,
    /// Runners the pipelines under way will need beyond the busy ones when their next stage
    /// starts, within a runner's start time ([`crate::lookahead`]).
    pub ahead: u32,
}

impl Observed {
    pub fn capacity(&self) -> u32 {
        self.starting + self.idle + self.busy
    }
}

/// Requests a `queue` pool leaves in its identity's hourly budget for the runner list, creates
/// and repairs: it reads the pipelines API only while more than these remain.
pub const QUEUE_BUDGET_RESERVE: u32 = 100;

/// The share of an identity's hourly budget its runner lists may spend (three fifths); the rest is for
/// creating, repairing and deleting runners, and for reading the queue and pipelines.
pub const LIST_SHARE: f64 = 0.6;

/// The shortest poll interval that keeps the runner lists of an identity's `scopes` within
/// [`LIST_SHARE`] of its `requests_per_hour`, shared evenly: pools of one scope share a list,
/// and a pool asking to poll faster than this polls this often, so that one pool with a fast
/// poll cannot spend the budget its identity's other pools need.
pub fn fair_poll_interval(requests_per_hour: u32, scopes: usize) -> Seconds {
    let lists_per_hour = f64::from(requests_per_hour.max(1)) * LIST_SHARE;
    3600.0 * scopes.max(1) as f64 / lists_per_hour
}

/// How long a scope's runner list may be reused, for a pool polling every `poll` seconds
/// with its identity's `fair` interval: half a poll, so that each poll sees a fresh list, and
/// never much less than the fair interval, so that reconciles woken between polls (a pod's
/// change, a webhook) reuse it and the lists stay within the share.
pub fn list_max_age(poll: Seconds, fair: Seconds) -> Seconds {
    (poll / 2.0).max(fair * 0.9)
}

/// Whether a pool reads the queue (the pipelines API) at this poll: `queue` pools only, and only
/// while `calls` more requests leave [`QUEUE_BUDGET_RESERVE`] of the budget; otherwise the
/// policy falls back to idle-buffer. The operator and the simulator both ask this.
pub fn reads_queue(policy: PolicyKind, remaining_budget: u32, calls: u32) -> bool {
    policy == PolicyKind::Queue && remaining_budget >= calls + QUEUE_BUDGET_RESERVE
}

/// Whether a busy runner online since `online_since` took its step on arrival: within two
/// polls, so that no poll saw it idle ([`Observed::busy_on_arrival`]).
pub fn busy_on_arrival(online_since: Seconds, now: Seconds, poll_interval: Seconds) -> bool {
    now - online_since < 2.0 * poll_interval
}

/// How far back occupancy looks (the time constant of its exponential average).
pub const OCCUPANCY_WINDOW: Seconds = 3600.0;
/// At this occupancy or more the pool counts as active and keeps one warm runner fewer.
pub const ACTIVE_OCCUPANCY: f64 = 0.5;
/// At this occupancy or more (a step running nearly all the time) it keeps two fewer.
pub const BUSY_OCCUPANCY: f64 = 0.8;

/// Memory a policy keeps between polls (stored in the pool's status by the operator).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PolicyMemory {
    /// Since when capacity has exceeded what the policy wants.
    pub surplus_since: Option<Seconds>,
    /// Share of the recent past with at least one step running, exponentially weighted over
    /// [`OCCUPANCY_WINDOW`], as of `occupancy_at`.
    pub occupancy: f64,
    pub occupancy_at: Option<Seconds>,
    /// Whether a step has been running since `occupancy_at`. The memory changes only when
    /// this does, so that a steady pool's status does not change at every poll (each status
    /// change would wake the pool's reconcile again).
    pub occupied: bool,
    /// The demand the pool saw at each time of the week ([`crate::forecast`]).
    pub profile: DemandProfile,
    /// The 15-minute slot being observed (counted from the Unix epoch) and its peak demand so
    /// far; folded into `profile` when the slot ends.
    pub slot: Option<i64>,
    pub slot_peak: u32,
}

impl PolicyMemory {
    /// Occupancy at `now`: exact for the observed signal, which is constant between the
    /// changes the memory records (0 with no history).
    pub fn occupancy_now(&self, now: Seconds) -> f64 {
        let Some(at) = self.occupancy_at else {
            return 0.0;
        };
        let sample = if self.occupied { 1.0 } else { 0.0 };
        sample + (self.occupancy - sample) * (-(now - at).max(0.0) / OCCUPANCY_WINDOW).exp()
    }

    /// The memory after seeing `demand` (busy runners, plus queued steps where known) at
    /// `now`: the slot's peak, and a finished slot's peak folded into the profile.
    fn observe_demand(mut self, demand: u32, now: Seconds) -> Self {
        let slot = forecast::slot_number(now);
        if self.slot == Some(slot) {
            self.slot_peak = self.slot_peak.max(demand);
            return self;
        }
        self.fold_slot();
        self.slot = Some(slot);
        self.slot_peak = demand;
        self
    }

    fn fold_slot(&mut self) {
        if let Some(slot) = self.slot.take() {
            let start = slot as Seconds * forecast::SLOT;
            self.profile
                .learn(forecast::slot_of_week(start), self.slot_peak);
        }
    }

    /// What another run of the same pool starts from: the profile, with the slot being
    /// observed folded in, and nothing tied to this run's clock.
    pub fn learned(mut self) -> Self {
        self.fold_slot();
        Self {
            profile: self.profile,
            ..Self::default()
        }
    }

    /// The memory after seeing `busy` runners at `now`, and the occupancy now. With no
    /// history, the first sample is the estimate.
    fn observe_occupancy(self, busy: u32, now: Seconds) -> (Self, f64) {
        let occupied = busy > 0;
        let current = match self.occupancy_at {
            Some(_) => self.occupancy_now(now),
            None if occupied => 1.0,
            None => 0.0,
        };
        if self.occupancy_at.is_some() && occupied == self.occupied {
            return (self, current);
        }
        let marked = Self {
            occupancy: current,
            occupancy_at: Some(now),
            occupied,
            ..self
        };
        (marked, current)
    }
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub desired: u32,
    pub reason: &'static str,
}

/// Why the policy keeps as many warm runners as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warm {
    Quiet,
    Active,
    Busy,
}

/// Idle runners to keep ready: `minIdle` while the pool is quiet, one fewer while it is active
/// (occupancy at least [`ACTIVE_OCCUPANCY`]) and two fewer while busy ([`BUSY_OCCUPANCY`]), but
/// at least one unless `minIdle` is 0. A busy pool's steps finish often, and each finishing
/// step frees a runner for the next arrival; measured on the built-in scenarios, the quiet
/// pool's full buffer held through busy hours cost more idle time than it saved waits.
pub fn warm(min_idle: u32, occupancy: f64) -> (u32, Warm) {
    let state = if occupancy >= BUSY_OCCUPANCY {
        Warm::Busy
    } else if occupancy >= ACTIVE_OCCUPANCY {
        Warm::Active
    } else {
        Warm::Quiet
    };
    let fewer = match state {
        Warm::Quiet => 0,
        Warm::Active => 1,
        Warm::Busy => 2,
    };
    if min_idle == 0 {
        return (0, Warm::Quiet);
    }
    let warm = min_idle.saturating_sub(fewer).max(1);
    // The reason names only a reduction that applied.
    (warm, if warm == min_idle { Warm::Quiet } else { state })
}

/// The desired count for our policies (`idle-buffer`, `queue`), with scale-down hysteresis:
/// up at once, down only after `scale_down_delay` of continuous surplus, never below busy.
/// Atlassian's model is not a count policy; see [`atlassian_ratio`].
///
/// Both keep [`warm`] runners idle: `minIdle` while the pool is quiet, so that a pipeline's
/// parallel steps, which arrive together, each find a runner; fewer while steps run most of
/// the time, when finishing steps free runners often enough. Without the queue, `idle-buffer`
/// wants busy + warm, plus the runners that took a step on arrival (steps were queued behind
/// them: growing by as many again serves a large fan-out in a few start latencies instead of
/// one per step). `queue` wants busy + queued + warm. Both then ready what the demand forecast
/// expects at this time of the week ([`crate::forecast`]), unless `minIdle` is 0: zero means
/// no idle runners.
pub fn desired(
    scaling: &Scaling,
    overrides: Overrides,
    observed: &Observed,
    memory: PolicyMemory,
    now: Seconds,
) -> (Decision, PolicyMemory) {
    let min = overrides.min.unwrap_or(scaling.min).min(scaling.max);
    let min_idle = overrides.min_idle.unwrap_or(scaling.min_idle);
    let (memory, occupancy) = memory.observe_occupancy(observed.busy, now);
    let memory = memory.observe_demand(observed.busy + observed.queued.unwrap_or(0), now);
    let (warm, warm_reason) = warm(min_idle, occupancy);
    let (want, reason) = match (scaling.policy, observed.queued) {
        (PolicyKind::Queue, Some(queued)) => (
            observed.busy + queued + warm,
            match warm_reason {
                Warm::Quiet => "busy + queued steps + minIdle",
                Warm::Active => "busy + queued steps + minIdle - 1 while active",
                Warm::Busy => "busy + queued steps + minIdle - 2 while busy",
            },
        ),
        _ => {
            let want = observed.busy + warm + observed.busy_on_arrival;
            let reason = match (warm_reason, observed.busy_on_arrival > 0) {
                (Warm::Quiet, false) => "busy + minIdle",
                (Warm::Active, false) => "busy + minIdle - 1 while active",
                (Warm::Busy, false) => "busy + minIdle - 2 while busy",
                (Warm::Quiet, true) => "busy + minIdle + runners busy on arrival",
                (Warm::Active, true) => "busy + minIdle - 1 while active + runners busy on arrival",
                (Warm::Busy, true) => "busy + minIdle - 2 while busy + runners busy on arrival",
            };
            (want, reason)
        }
    };
    // As many as this time of the week kept busy, ready before the work arrives; none where
    // minIdle 0 asks for no idle runners.
    let expected = if min_idle > 0 && scaling.forecast {
        memory.profile.expected(now)
    } else {
        0
    };
    let (want, reason) = if expected > want {
        (expected, "forecast: busy at this time of week")
    } else {
        (want, reason)
    };
    // The stages about to start, where the warm runners would not cover them.
    let staged = observed.busy + observed.queued.unwrap_or(0) + observed.ahead;
    let (want, reason) = if observed.ahead > 0 && staged > want {
        (staged, "lookahead: the next stages of pipelines under way")
    } else {
        (want, reason)
    };
    let want = want.clamp(min, scaling.max);
    let capacity = observed.capacity();
    if want >= capacity {
        let reason = if want == scaling.max && want > capacity {
            "at max"
        } else {
            reason
        };
        return (
            Decision {
                desired: want,
                reason,
            },
            PolicyMemory {
                surplus_since: None,
                ..memory
            },
        );
    }
    if want == scaling.max && observed.busy >= scaling.max {
        // Over max only because of busy runners (max was lowered): they finish first.
        return (
            Decision {
                desired: scaling.max,
                reason: "at max",
            },
            PolicyMemory {
                surplus_since: None,
                ..memory
            },
        );
    }
    let since = memory.surplus_since.unwrap_or(now);
    let memory = PolicyMemory {
        surplus_since: Some(since),
        ..memory
    };
    if now - since >= scaling.scale_down_delay {
        // Never ask for fewer than are busy: busy runners are not ours to take.
        let desired = want.max(observed.busy.min(scaling.max));
        (
            Decision {
                desired,
                reason: "surplus past scaleDownDelay",
            },
            memory,
        )
    } else {
        (
            Decision {
                desired: capacity.min(scaling.max).max(want),
                reason: "holding surplus until scaleDownDelay",
            },
            memory,
        )
    }
}

/// What Atlassian's autoscaler would do at one of its polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtlassianAction {
    /// Create this many runners, one every `create_pause`.
    Create(u32),
    /// Disable this many idle runners older than the cool-down.
    Disable(u32),
    Nothing,
}

/// Atlassian's `percentageRunnersIdle` (runners-autoscaler 3.x), as its code decides,
/// blind spots included: it counts only ONLINE runners with the group's labels (starting ones
/// are invisible, so while none is online it asks for `min` again at every poll); it scales up
/// by its multiplier when the busy share passes the threshold or fewer than `min` are online;
/// it scales down the *idle* runners to `max(floor(idle × multiplier), min)`; and it looks at
/// Bitbucket only, never at Kubernetes. `total` is every runner in the scope, for Bitbucket's
/// 100.
pub fn atlassian_ratio(scaling: &Scaling, online: u32, busy: u32, total: u32) -> AtlassianAction {
    const MAX_RUNNERS_COUNT: u32 = RUNNERS_PER_SCOPE;
    let p = &scaling.atlassian;
    let idle = online.saturating_sub(busy);
    if total >= MAX_RUNNERS_COUNT {
        return AtlassianAction::Nothing;
    }
    if online == 0 {
        return if scaling.min > 0 {
            AtlassianAction::Create(scaling.min)
        } else {
            AtlassianAction::Nothing
        };
    }
    let ratio = f64::from(busy) / f64::from(online);
    if (ratio > p.scale_up_threshold || online < scaling.min) && online <= scaling.max {
        let target = ((f64::from(online) * p.scale_up_multiplier).ceil() as u32).min(scaling.max);
        return match target.saturating_sub(online) {
            0 => AtlassianAction::Nothing,
            n => AtlassianAction::Create(n),
        };
    }
    if ratio < p.scale_down_threshold && idle > scaling.min {
        let target = ((f64::from(idle) * p.scale_down_multiplier).floor() as u32).max(scaling.min);
        return AtlassianAction::Disable(idle - target);
    }
    AtlassianAction::Nothing
}

#[cfg(test)]
mod tests;
