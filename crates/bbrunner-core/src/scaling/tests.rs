use super::*;
use proptest::prelude::*;

/// A pool keeping one warm runner (the rules read simplest with one).
fn scaling(policy: PolicyKind) -> Scaling {
    Scaling {
        policy,
        min_idle: 1,
        ..Scaling::default()
    }
}

fn obs(starting: u32, idle: u32, busy: u32, queued: Option<u32>) -> Observed {
    Observed {
        starting,
        idle,
        busy,
        queued,
        busy_on_arrival: 0,
        ahead: 0,
    }
}

/// Memory of a pool whose occupancy was `occupancy` at time 0.
fn occupied(occupancy: f64) -> PolicyMemory {
    PolicyMemory {
        occupancy,
        occupancy_at: Some(0.0),
        ..PolicyMemory::default()
    }
}

#[test]
fn idle_buffer_keeps_one_warm_runner_and_counts_starting_ones() {
    let s = scaling(PolicyKind::IdleBuffer);
    let m = occupied(0.0);
    let (d, _) = desired(&s, Overrides::default(), &obs(0, 0, 3, None), m, 0.0);
    assert_eq!(d.desired, 4);
    // One is already starting: desired stays 4, so the planner creates nothing more.
    let (d, _) = desired(&s, Overrides::default(), &obs(1, 0, 3, None), m, 0.0);
    assert_eq!(d.desired, 4);
    let (d, _) = desired(&s, Overrides::default(), &obs(0, 0, 12, None), m, 0.0);
    assert_eq!((d.desired, d.reason), (10, "at max"));
}

#[test]
fn the_queue_is_read_only_by_queue_pools_within_the_budget_reserve() {
    assert!(reads_queue(PolicyKind::Queue, 105, 5));
    assert!(!reads_queue(PolicyKind::Queue, 104, 5));
    assert!(!reads_queue(PolicyKind::IdleBuffer, 900, 1));
}

#[test]
fn a_busy_pool_keeps_fewer_runners_warm_but_at_least_one() {
    let s = Scaling {
        min_idle: 3,
        ..scaling(PolicyKind::IdleBuffer)
    };
    let o = obs(0, 0, 2, None);
    let (quiet, _) = desired(&s, Overrides::default(), &o, occupied(0.3), 15.0);
    assert_eq!((quiet.desired, quiet.reason), (5, "busy + minIdle"));
    let (active, _) = desired(&s, Overrides::default(), &o, occupied(0.6), 15.0);
    assert_eq!(
        (active.desired, active.reason),
        (4, "busy + minIdle - 1 while active")
    );
    let (busy, _) = desired(&s, Overrides::default(), &o, occupied(0.9), 15.0);
    assert_eq!(
        (busy.desired, busy.reason),
        (3, "busy + minIdle - 2 while busy")
    );
    // One warm runner stays however busy the pool is...
    let one = scaling(PolicyKind::IdleBuffer);
    let (d, _) = desired(&one, Overrides::default(), &o, occupied(0.9), 15.0);
    assert_eq!((d.desired, d.reason), (3, "busy + minIdle"));
    // ...and minIdle 0 asks for no idle runners at all.
    let none = Scaling {
        min_idle: 0,
        ..s.clone()
    };
    let (d, _) = desired(&none, Overrides::default(), &o, occupied(0.9), 15.0);
    assert_eq!(d.desired, 2);
    // The queue policy keeps the same warm runners beside the queue.
    let queue = Scaling {
        policy: PolicyKind::Queue,
        ..s.clone()
    };
    let (d, _) = desired(
        &queue,
        Overrides::default(),
        &obs(0, 0, 2, Some(4)),
        occupied(0.9),
        15.0,
    );
    assert_eq!(
        (d.desired, d.reason),
        (7, "busy + queued steps + minIdle - 2 while busy")
    );
}

#[test]
fn occupancy_is_the_share_of_the_last_hour_with_a_step_running() {
    let s = scaling(PolicyKind::IdleBuffer);
    let poll = |memory, busy, now| {
        desired(
            &s,
            Overrides::default(),
            &obs(0, 1, busy, None),
            memory,
            now,
        )
        .1
    };
    let mut memory = occupied(0.0);
    // An hour of 15 s polls with a step always running.
    for step in 1..=240 {
        memory = poll(memory, 1, f64::from(step) * 15.0);
    }
    let expected = 1.0 - (-(3600.0 - 15.0) / 3600.0f64).exp();
    assert!((memory.occupancy_now(3600.0) - expected).abs() < 1e-9);
    // Steady, so the memory (and the status holding it) changed once, when the step started.
    assert_eq!((memory.occupancy_at, memory.occupied), (Some(15.0), true));
    // The pool turns idle an hour later: a change, marked; then it decays by 1/e an hour.
    memory = poll(memory, 0, 7200.0);
    let marked = 1.0 - (-(7200.0 - 15.0) / 3600.0f64).exp();
    assert_eq!(
        (memory.occupancy_at, memory.occupied),
        (Some(7200.0), false)
    );
    assert!((memory.occupancy - marked).abs() < 1e-9);
    assert!((memory.occupancy_now(10_800.0) - marked * (-1.0f64).exp()).abs() < 1e-9);
    // With no history, the first sample is the estimate.
    let fresh = poll(PolicyMemory::default(), 1, 50.0);
    assert_eq!(
        (fresh.occupancy, fresh.occupancy_at, fresh.occupied),
        (1.0, Some(50.0), true)
    );
}

#[test]
fn runners_busy_on_arrival_start_as_many_again() {
    let s = scaling(PolicyKind::IdleBuffer);
    // Two runners came up and took a step at once: steps were queued behind them.
    let o = Observed {
        busy_on_arrival: 2,
        ..obs(0, 0, 3, None)
    };
    let (d, _) = desired(&s, Overrides::default(), &o, occupied(0.0), 15.0);
    assert_eq!(
        (d.desired, d.reason),
        (6, "busy + minIdle + runners busy on arrival")
    );
    // The queue, when known, says it exactly: arrivals add nothing.
    let q = scaling(PolicyKind::Queue);
    let known = Observed {
        queued: Some(0),
        ..o
    };
    let (d, _) = desired(&q, Overrides::default(), &known, occupied(0.0), 15.0);
    assert_eq!(d.desired, 4);
}

#[test]
fn scale_down_waits_for_the_delay_of_continuous_surplus() {
    let s = scaling(PolicyKind::IdleBuffer);
    let surplus = obs(0, 4, 1, None);
    let (d, m) = desired(&s, Overrides::default(), &surplus, occupied(0.0), 100.0);
    assert_eq!(d.desired, 5);
    assert_eq!(m.surplus_since, Some(100.0));
    let (d, m) = desired(&s, Overrides::default(), &surplus, m, 189.0);
    assert_eq!(d.desired, 5);
    let (d, m2) = desired(&s, Overrides::default(), &surplus, m, 190.0);
    assert_eq!((d.desired, d.reason), (2, "surplus past scaleDownDelay"));
    assert_eq!(m2.surplus_since, Some(100.0));
    // Demand back: the clock resets.
    let (_, m3) = desired(&s, Overrides::default(), &obs(0, 0, 5, None), m2, 401.0);
    assert_eq!(m3.surplus_since, None);
}

#[test]
fn queue_policy_uses_the_queue_when_known_and_falls_back_otherwise() {
    let s = scaling(PolicyKind::Queue);
    let m = occupied(0.0);
    assert_eq!(
        desired(&s, Overrides::default(), &obs(0, 1, 2, Some(4)), m, 0.0)
            .0
            .desired,
        7
    );
    assert_eq!(
        desired(&s, Overrides::default(), &obs(0, 1, 2, None), m, 0.0)
            .0
            .desired,
        3
    );
}

#[test]
fn schedule_overrides_raise_the_floor() {
    let s = scaling(PolicyKind::IdleBuffer);
    let o = Overrides {
        min: Some(5),
        min_idle: Some(2),
    };
    assert_eq!(
        desired(&s, o, &obs(0, 0, 0, None), occupied(0.0), 0.0)
            .0
            .desired,
        5
    );
    assert_eq!(
        desired(&s, o, &obs(0, 0, 6, None), occupied(0.0), 0.0)
            .0
            .desired,
        8
    );
}

#[test]
fn atlassian_ratio_follows_its_thresholds() {
    let s = scaling(PolicyKind::AtlassianRatio);
    assert_eq!(atlassian_ratio(&s, 0, 0, 0), AtlassianAction::Create(1));
    // While none is online it asks for min again: starting runners are invisible to it.
    assert_eq!(atlassian_ratio(&s, 0, 0, 1), AtlassianAction::Create(1));
    // 2/3 busy > 0.5: ceil(3 * 1.5) = 5 → create 2.
    assert_eq!(atlassian_ratio(&s, 3, 2, 3), AtlassianAction::Create(2));
    // Capped at max, counting online runners only.
    assert_eq!(atlassian_ratio(&s, 8, 8, 12), AtlassianAction::Create(2));
    // 0/4 busy < 0.2: the idle ones down to max(floor(4 * 0.5), min) = 2.
    assert_eq!(atlassian_ratio(&s, 4, 0, 4), AtlassianAction::Disable(2));
    // 0 of 9 busy: floor(9 * 0.5) = 4 kept, 5 go.
    assert_eq!(atlassian_ratio(&s, 9, 0, 9), AtlassianAction::Disable(5));
    // Between thresholds: nothing.
    assert_eq!(atlassian_ratio(&s, 4, 1, 4), AtlassianAction::Nothing);
    // Bitbucket's 100 runners in the scope: nothing more.
    assert_eq!(atlassian_ratio(&s, 3, 3, 100), AtlassianAction::Nothing);
}

fn scaling_strategy() -> impl Strategy<Value = Scaling> {
    (
        0u32..5,
        1u32..30,
        0u32..4,
        0.0f64..600.0,
        prop_oneof![Just(PolicyKind::IdleBuffer), Just(PolicyKind::Queue)],
    )
        .prop_map(|(min, span, min_idle, delay, policy)| Scaling {
            min,
            max: min + span,
            min_idle,
            scale_down_delay: delay,
            policy,
            ..Scaling::default()
        })
}

fn observed_strategy() -> impl Strategy<Value = Observed> {
    (
        0u32..10,
        0u32..10,
        0u32..40,
        proptest::option::of(0u32..40),
        0u32..5,
    )
        .prop_map(|(s, i, b, q, arrived)| Observed {
            busy_on_arrival: arrived.min(b),
            ..obs(s, i, b, q)
        })
}

proptest! {
    #[test]
    fn desired_is_within_bounds_and_never_below_busy(
        s in scaling_strategy(),
        o in observed_strategy(),
        since in proptest::option::of(0.0f64..1000.0),
        occupancy in 0.0f64..=1.0,
        now in 1000.0f64..2000.0,
    ) {
        let memory = PolicyMemory { surplus_since: since, ..occupied(occupancy) };
        let (d, _) = desired(&s, Overrides::default(), &o, memory, now);
        prop_assert!(d.desired >= s.min && d.desired <= s.max, "{d:?} {s:?}");
        prop_assert!(d.desired >= o.busy.min(s.max));
    }

    #[test]
    fn desired_is_monotone_in_demand(
        s in scaling_strategy(),
        o in observed_strategy(),
        more_busy in 0u32..10,
        more_queued in 0u32..10,
        more_on_arrival in 0u32..5,
        since in proptest::option::of(0.0f64..1000.0),
        occupancy in 0.0f64..=1.0,
        now in 1000.0f64..2000.0,
    ) {
        let memory = PolicyMemory { surplus_since: since, ..occupied(occupancy) };
        let (low, _) = desired(&s, Overrides::default(), &o, memory, now);
        let busier = Observed {
            busy: o.busy + more_busy,
            queued: o.queued.map(|q| q + more_queued),
            busy_on_arrival: o.busy_on_arrival + more_on_arrival,
            ..o
        };
        let (high, _) = desired(&s, Overrides::default(), &busier, memory, now);
        prop_assert!(high.desired >= low.desired, "{low:?} > {high:?}");
    }

    #[test]
    fn atlassian_never_asks_below_min_nor_creates_past_max_online(
        min in 0u32..3, span in 1u32..15, online in 0u32..20, busy_share in 0.0f64..=1.0, extra in 0u32..5,
    ) {
        let s = Scaling { min, max: min + span, policy: PolicyKind::AtlassianRatio, ..Scaling::default() };
        let busy = (f64::from(online) * busy_share).round() as u32;
        match atlassian_ratio(&s, online, busy, online + extra) {
            AtlassianAction::Create(n) => prop_assert!(online + n <= s.max.max(s.min)),
            AtlassianAction::Disable(n) => {
                prop_assert!(n <= online - busy);
                prop_assert!(online - n >= s.min);
            }
            AtlassianAction::Nothing => {}
        }
    }
}

#[test]
fn the_forecast_readies_runners_before_a_busy_time_of_week_and_learns_it() {
    use crate::forecast::{LEAD, SLOT};
    let s = scaling(PolicyKind::IdleBuffer);
    let monday = 1_767_571_200.0;
    let batch = monday + 2.0 * 3600.0;
    // Week 1: the policy sees ten busy runners at 02:05, and one idle runner at 02:20.
    let (_, m) = desired(
        &s,
        Overrides::default(),
        &obs(0, 1, 0, None),
        occupied(0.0),
        batch - 600.0,
    );
    let (_, m) = desired(
        &s,
        Overrides::default(),
        &obs(0, 0, 10, None),
        m,
        batch + 300.0,
    );
    let (_, m) = desired(
        &s,
        Overrides::default(),
        &obs(0, 1, 0, None),
        m,
        batch + SLOT + 300.0,
    );
    assert_eq!(
        m.profile.seen(),
        2,
        "02:00 and the slot before it folded in"
    );
    // Week 2, a lead before 02:00: eight runners (four fifths of ten) ready, none busy yet.
    let week2 = batch + 7.0 * 86_400.0;
    let early = week2 - LEAD + 1.0;
    let (d, _) = desired(&s, Overrides::default(), &obs(0, 1, 0, None), m, early);
    assert_eq!(
        (d.desired, d.reason),
        (8, "forecast: busy at this time of week")
    );
    let (d, _) = desired(
        &s,
        Overrides::default(),
        &obs(0, 1, 0, None),
        m,
        week2 - LEAD - 60.0,
    );
    assert_eq!(
        (d.desired, d.reason),
        (1, "busy + minIdle"),
        "not before its lead"
    );
    // A pool with the forecast turned off still learns, and readies nothing ahead.
    let off = Scaling {
        forecast: false,
        ..s.clone()
    };
    let (d, m_off) = desired(&off, Overrides::default(), &obs(0, 1, 0, None), m, early);
    assert_eq!((d.desired, d.reason), (1, "busy + minIdle"));
    let (_, m_on) = desired(&s, Overrides::default(), &obs(0, 1, 0, None), m, early);
    assert_eq!(m_off.profile, m_on.profile);
    // minIdle 0 asks for no idle runners: the forecast readies none.
    let none = Scaling {
        min: 0,
        min_idle: 0,
        ..s
    };
    let (d, _) = desired(&none, Overrides::default(), &obs(0, 0, 0, None), m, early);
    assert_eq!(d.desired, 0);
    // What a next run starts from keeps the profile and nothing tied to this run's clock.
    let learned = m.learned();
    assert_eq!(
        learned.profile.seen(),
        3,
        "the slot being observed folded in"
    );
    assert_eq!(
        (learned.slot, learned.occupancy_at, learned.surplus_since),
        (None, None, None)
    );
}

#[test]
fn lookahead_adds_the_next_stages_runners_only_where_warm_ones_fall_short() {
    let scaling = Scaling {
        min_idle: 3,
        ..Scaling::default()
    };
    let quiet = PolicyMemory {
        occupancy_at: Some(0.0),
        ..PolicyMemory::default()
    };
    let mut seen = obs(0, 3, 1, None);
    seen.ahead = 2;
    // Three warm runners cover two more steps: nothing changes.
    let (d, _) = desired(&scaling, Overrides::default(), &seen, quiet, 10.0);
    assert_eq!((d.desired, d.reason), (4, "busy + minIdle"));
    seen.ahead = 6;
    let (d, _) = desired(&scaling, Overrides::default(), &seen, quiet, 10.0);
    assert_eq!(d.desired, 7);
    assert_eq!(
        d.reason,
        "lookahead: the next stages of pipelines under way"
    );
}

#[test]
fn an_identity_s_scopes_share_three_fifths_of_its_budget_for_their_lists() {
    // 900 an hour: 540 lists, 20 s apart for three scopes.
    assert_eq!(fair_poll_interval(900, 3), 20.0);
    // The default 15 s poll is within the share of two scopes; beyond, it stretches.
    assert!(fair_poll_interval(900, 2) < 15.0);
    assert!(fair_poll_interval(900, 3) > 15.0);
    // A 1 s poll never is.
    assert!(fair_poll_interval(900, 1) > 6.0);
    // Never a division by zero.
    assert!(fair_poll_interval(0, 0).is_finite());
}

#[test]
fn a_list_serves_half_a_poll_and_never_much_less_than_the_fair_share() {
    assert_eq!(list_max_age(15.0, 6.0), 7.5);
    // A pool held to its share (polling every 20 s) refetches at each poll, not between.
    assert_eq!(list_max_age(20.0, 20.0), 18.0);
}
