use super::*;
use proptest::prelude::*;

fn uuid(i: u32) -> RunnerUuid {
    RunnerUuid::parse(&format!("00000000-0000-4000-8000-{i:012}")).unwrap()
}

/// A pool keeping one warm runner: the planner's mechanics read simplest with one.
fn pool() -> PoolSettings {
    PoolSettings {
        scaling: Scaling {
            min_idle: 1,
            ..Scaling::default()
        },
        overrides: Overrides::default(),
        ephemeral: false,
        registration_ttl: 600.0,
        deleting_since: None,
        deletion_grace: 3600.0,
        labels: Vec::new(),
        template: None,
    }
}

fn runner(i: u32, status: RunnerStatus, busy: bool) -> ObservedRunner {
    ObservedRunner {
        uuid: uuid(i),
        status,
        busy,
        status_since: Some(900.0),
        labels: None,
    }
}

fn pod(i: u32, phase: PodPhase) -> ObservedPod {
    ObservedPod {
        runner: uuid(i),
        phase,
        terminating: false,
        unschedulable: None,
        created_at: 500.0,
        ready_since: None,
        ran_step: false,
        template: None,
    }
}

fn secret(i: u32) -> ObservedSecret {
    ObservedSecret {
        runner: uuid(i),
        created_at: 500.0,
    }
}

fn observed(
    runners: Vec<ObservedRunner>,
    pods: Vec<ObservedPod>,
    secrets: Vec<ObservedSecret>,
) -> Observation {
    Observation {
        now: 1000.0,
        runners,
        runners_fetched_at: 999.0,
        pods,
        secrets,
        // A quiet history, so that the policy asks for exactly busy + minIdle.
        memory: PolicyMemory {
            occupancy_at: Some(0.0),
            ..PolicyMemory::default()
        },
        queued: None,
        ahead: 0,
        scope_room: 100,
    }
}

fn healthy(
    i: u32,
    status: RunnerStatus,
    busy: bool,
) -> (ObservedRunner, ObservedPod, ObservedSecret) {
    (
        runner(i, status, busy),
        pod(i, PodPhase::Running),
        secret(i),
    )
}

fn world(items: Vec<(ObservedRunner, ObservedPod, ObservedSecret)>) -> Observation {
    let mut o = observed(vec![], vec![], vec![]);
    for (r, p, s) in items {
        o.runners.push(r);
        o.pods.push(p);
        o.secrets.push(s);
    }
    o
}

#[test]
fn an_empty_pool_creates_its_minimum() {
    let p = plan(&pool(), &observed(vec![], vec![], vec![]));
    assert_eq!(p.actions, [Action::CreateRunner]);
    assert_eq!(p.decision.desired, 1);
}

#[test]
fn one_busy_runner_gets_a_warm_spare_and_starting_ones_count() {
    let p = plan(
        &pool(),
        &world(vec![healthy(1, RunnerStatus::Online, true)]),
    );
    assert_eq!(p.actions, [Action::CreateRunner]);
    let p = plan(
        &pool(),
        &world(vec![
            healthy(1, RunnerStatus::Online, true),
            healthy(2, RunnerStatus::Unregistered, false),
        ]),
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.counts.starting, 1);
}

#[test]
fn scale_down_disables_then_deletes_and_keeps_a_runner_that_took_a_step() {
    let mut memory = PolicyMemory {
        surplus_since: Some(0.0),
        ..PolicyMemory::default()
    };
    let mut o = world(vec![
        healthy(1, RunnerStatus::Online, false),
        healthy(2, RunnerStatus::Online, false),
        healthy(3, RunnerStatus::Online, false),
    ]);
    o.memory = memory;
    let p = plan(&pool(), &o);
    let disabled: Vec<&Action> = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::DisableRunner(_)))
        .collect();
    assert_eq!(disabled.len(), 2, "{:?}", p.actions);
    memory = p.memory;

    // Next observation: one drained runner still idle, the other took a step meanwhile.
    let mut o = world(vec![
        healthy(1, RunnerStatus::Online, false),
        healthy(2, RunnerStatus::Disabled, true),
        healthy(3, RunnerStatus::Disabled, false),
    ]);
    o.memory = memory;
    let p = plan(&pool(), &o);
    assert!(p.actions.contains(&Action::EnableRunner(uuid(2))));
    assert!(p.actions.contains(&Action::DeletePod(uuid(3))));
    assert!(p.actions.contains(&Action::DeleteRunner(uuid(3))));
    assert!(p.actions.contains(&Action::DeleteSecret(uuid(3))));
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::DeletePod(u) | Action::DeleteRunner(u) if *u == uuid(2)))
    );
}

#[test]
fn a_runner_that_took_a_step_as_soon_as_it_was_ready_starts_one_more() {
    let mut o = world(vec![
        healthy(1, RunnerStatus::Online, true),
        healthy(2, RunnerStatus::Online, true),
    ]);
    // Runner 2's pod turned Ready 20 s ago (within two 15 s polls) and it is already busy.
    o.pods[1].ready_since = Some(980.0);
    let p = plan(&pool(), &o);
    assert_eq!(p.decision.desired, 4, "{:?}", p.decision);
    assert_eq!(p.actions, [Action::CreateRunner, Action::CreateRunner]);
    // Ready for longer than two polls: it was seen idle, nothing was waiting for it.
    o.pods[1].ready_since = Some(960.0);
    let p = plan(&pool(), &o);
    assert_eq!(p.actions, [Action::CreateRunner]);
}

#[test]
fn a_drained_runner_is_revived_instead_of_creating_a_new_one() {
    let o = world(vec![
        healthy(1, RunnerStatus::Online, true),
        healthy(2, RunnerStatus::Disabled, false),
    ]);
    let p = plan(&pool(), &o);
    assert_eq!(p.actions, [Action::EnableRunner(uuid(2))]);
}

#[test]
fn repairs_in_both_directions() {
    // Runner 1's pod vanished: it comes back from the Secret.
    // Runner 2 vanished from Bitbucket: its pod and Secret go.
    // Runner 3 was created but its Secret never written (a crash): it cannot run; delete it.
    // Runner 4's pod failed: it is removed, to be recreated.
    let o = observed(
        vec![
            runner(1, RunnerStatus::Online, false),
            runner(3, RunnerStatus::Unregistered, false),
            runner(4, RunnerStatus::Offline, false),
        ],
        vec![pod(2, PodPhase::Running), pod(4, PodPhase::Failed)],
        vec![secret(1), secret(2), secret(4)],
    );
    let p = plan(&pool(), &o);
    for expected in [
        Action::CreatePod(uuid(1)),
        Action::DeletePod(uuid(2)),
        Action::DeleteSecret(uuid(2)),
        Action::DeleteRunner(uuid(3)),
        Action::DeletePod(uuid(4)),
    ] {
        assert!(
            p.actions.contains(&expected),
            "{expected:?} missing from {:?}",
            p.actions
        );
    }
}

#[test]
fn a_pod_newer_than_the_runner_list_is_not_an_orphan() {
    let mut o = observed(vec![], vec![pod(1, PodPhase::Pending)], vec![secret(1)]);
    o.runners_fetched_at = 400.0;
    let p = plan(&pool(), &o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.counts.starting, 1);
}

#[test]
fn runners_that_never_register_are_replaced_after_the_ttl_but_unschedulable_ones_wait() {
    let mut stuck = pod(1, PodPhase::Running);
    stuck.created_at = 100.0;
    let mut o = observed(
        vec![runner(1, RunnerStatus::Unregistered, false)],
        vec![stuck],
        vec![secret(1)],
    );
    o.runners[0].status_since = Some(100.0);
    let p = plan(&pool(), &o);
    assert!(p.actions.contains(&Action::DeleteRunner(uuid(1))));
    assert!(p.actions.contains(&Action::CreateRunner));

    let mut pending = pod(1, PodPhase::Pending);
    pending.created_at = 100.0;
    pending.unschedulable = Some("0/3 nodes are available: 3 Insufficient memory.".into());
    o.pods = vec![pending];
    let p = plan(&pool(), &o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(p.unschedulable.unwrap().contains("Insufficient memory"));
}

#[test]
fn the_scope_limit_caps_creation() {
    let mut o = observed(vec![], vec![], vec![]);
    o.queued = Some(5);
    o.scope_room = 2;
    let mut settings = pool();
    settings.scaling.policy = crate::scaling::PolicyKind::Queue;
    let p = plan(&settings, &o);
    assert_eq!(
        p.actions
            .iter()
            .filter(|a| **a == Action::CreateRunner)
            .count(),
        2
    );
    assert_eq!(p.blocked_by_quota, 4);
    let (reason, message) = p.problem(None).unwrap();
    assert_eq!(reason, Reason::QuotaExceeded);
    assert!(message.starts_with("4 runner(s) wanted"), "{message}");
}

#[test]
fn the_worst_problem_is_reported_credentials_then_quota_then_scheduling() {
    let mut p = plan(&pool(), &observed(vec![], vec![], vec![]));
    assert_eq!(p.problem(None), None);
    p.unschedulable = Some("0/3 nodes: Insufficient memory".to_owned());
    assert_eq!(p.problem(None).unwrap().0, Reason::Unschedulable);
    p.blocked_by_quota = 1;
    assert_eq!(p.problem(None).unwrap().0, Reason::QuotaExceeded);
    let (reason, message) = p.problem(Some("bitbucket-credentials")).unwrap();
    assert_eq!(reason, Reason::CredentialsDeleting);
    assert!(message.contains("bitbucket-credentials"), "{message}");
}

#[test]
fn ephemeral_runners_are_marked_then_drained_after_one_step() {
    let mut settings = pool();
    settings.ephemeral = true;
    let p = plan(
        &settings,
        &world(vec![healthy(1, RunnerStatus::Online, true)]),
    );
    assert!(p.actions.contains(&Action::MarkRanStep(uuid(1))));
    let (r, mut used, s) = healthy(1, RunnerStatus::Online, false);
    used.ran_step = true;
    let p = plan(&settings, &world(vec![(r, used.clone(), s.clone())]));
    assert!(p.actions.contains(&Action::DisableRunner(uuid(1))));
    assert!(p.actions.contains(&Action::CreateRunner));
    // Drained and used: never revived.
    let p = plan(
        &settings,
        &world(vec![(runner(1, RunnerStatus::Disabled, false), used, s)]),
    );
    assert!(p.actions.contains(&Action::DeleteRunner(uuid(1))));
    assert!(!p.actions.contains(&Action::EnableRunner(uuid(1))));
}

#[test]
fn deletion_waits_for_busy_runners_within_the_grace() {
    let mut settings = pool();
    settings.deleting_since = Some(900.0);
    let o = world(vec![
        healthy(1, RunnerStatus::Online, true),
        healthy(2, RunnerStatus::Online, false),
    ]);
    let p = plan(&settings, &o);
    assert!(p.actions.contains(&Action::DisableRunner(uuid(1))));
    // The idle one is disabled first: it could take a step before a delete arrives.
    assert!(p.actions.contains(&Action::DisableRunner(uuid(2))));
    assert!(!p.actions.contains(&Action::DeleteRunner(uuid(2))));
    assert!(!p.actions.contains(&Action::DeleteRunner(uuid(1))));
    assert!(!p.actions.contains(&Action::RemoveFinalizer));
    // Still idle once disabled: deleted.
    let drained = world(vec![
        healthy(1, RunnerStatus::Online, true),
        healthy(2, RunnerStatus::Disabled, false),
    ]);
    let p = plan(&settings, &drained);
    assert!(p.actions.contains(&Action::DeleteRunner(uuid(2))));
    assert!(!p.actions.contains(&Action::DeleteRunner(uuid(1))));
    // Past the grace, even a busy runner goes.
    settings.deleting_since = Some(1000.0 - 3601.0);
    let p = plan(&settings, &o);
    assert!(p.actions.contains(&Action::DeleteRunner(uuid(1))));
    // Nothing left: the finalizer goes.
    let p = plan(&settings, &observed(vec![], vec![], vec![]));
    assert_eq!(p.actions, [Action::RemoveFinalizer]);
}

#[test]
fn static_pools_keep_one_pod_per_registration() {
    let pods = vec![
        pod(1, PodPhase::Running),
        pod(2, PodPhase::Failed),
        pod(9, PodPhase::Running),
    ];
    let actions = plan_static(&[uuid(1), uuid(2), uuid(3)], &pods);
    assert_eq!(
        actions,
        [
            Action::DeletePod(uuid(2)),
            Action::CreatePod(uuid(3)),
            Action::DeletePod(uuid(9))
        ]
    );
}

// ---------------------------------------------------------------------------------------------

fn status() -> impl Strategy<Value = RunnerStatus> {
    prop_oneof![
        Just(RunnerStatus::Unregistered),
        Just(RunnerStatus::Online),
        Just(RunnerStatus::Offline),
        Just(RunnerStatus::Disabled),
    ]
}

fn phase() -> impl Strategy<Value = PodPhase> {
    prop_oneof![
        Just(PodPhase::Pending),
        Just(PodPhase::Running),
        Just(PodPhase::Failed)
    ]
}

/// A random state of up to 12 runner UUIDs, each present or not in each place.
fn arbitrary_observation() -> impl Strategy<Value = Observation> {
    proptest::collection::vec(
        (
            proptest::option::of((status(), any::<bool>(), 0.0f64..1000.0)),
            proptest::option::of((
                phase(),
                any::<bool>(),
                0.0f64..1000.0,
                any::<bool>(),
                any::<bool>(),
            )),
            proptest::option::of(0.0f64..1000.0),
        ),
        0..12,
    )
    .prop_flat_map(|items| {
        (
            Just(items),
            0.0f64..1000.0,
            proptest::option::of(0u32..20),
            0u32..100,
            proptest::option::of(0.0f64..1000.0),
        )
    })
    .prop_map(|(items, fetched, queued, room, surplus_since)| {
        let mut o = observed(vec![], vec![], vec![]);
        o.runners_fetched_at = fetched;
        o.queued = queued;
        o.scope_room = room;
        o.memory = PolicyMemory {
            surplus_since,
            ..PolicyMemory::default()
        };
        for (i, (r, p, s)) in items.into_iter().enumerate() {
            let i = i as u32;
            if let Some((status, busy, since)) = r {
                o.runners.push(ObservedRunner {
                    uuid: uuid(i),
                    status,
                    busy,
                    status_since: Some(since),
                    labels: None,
                });
            }
            if let Some((phase, terminating, created, unschedulable, ran_step)) = p {
                o.pods.push(ObservedPod {
                    runner: uuid(i),
                    phase,
                    terminating,
                    unschedulable: unschedulable.then(|| "no room".to_owned()),
                    created_at: created,
                    ready_since: (phase == PodPhase::Running).then_some(created),
                    ran_step,
                    template: None,
                });
            }
            if let Some(created) = s {
                o.secrets.push(ObservedSecret {
                    runner: uuid(i),
                    created_at: created,
                });
            }
        }
        o
    })
}

fn arbitrary_pool() -> impl Strategy<Value = PoolSettings> {
    (
        0u32..4,
        1u32..12,
        0u32..3,
        any::<bool>(),
        prop_oneof![
            Just(crate::scaling::PolicyKind::IdleBuffer),
            Just(crate::scaling::PolicyKind::Queue)
        ],
    )
        .prop_map(|(min, span, min_idle, ephemeral, policy)| PoolSettings {
            scaling: Scaling {
                min,
                max: min + span,
                min_idle,
                policy,
                ..Scaling::default()
            },
            ephemeral,
            ..pool()
        })
}

proptest! {
    #[test]
    fn busy_runners_are_never_disabled_deleted_or_left_without_their_pod(pool in arbitrary_pool(), o in arbitrary_observation()) {
        let p = plan(&pool, &o);
        for r in o.runners.iter().filter(|r| r.busy) {
            for a in p.actions.iter().filter(|a| a.runner() == Some(&r.uuid)) {
                prop_assert!(
                    matches!(a, Action::EnableRunner(_) | Action::MarkRanStep(_)),
                    "{a:?} on busy runner"
                );
            }
        }
    }

    #[test]
    fn max_is_never_overshot(pool in arbitrary_pool(), o in arbitrary_observation()) {
        let p = plan(&pool, &o);
        let capacity = p.counts.capacity();
        // Re-enabling a busy runner keeps capacity already counted; reviving an idle one adds.
        let busy = |u: &RunnerUuid| o.runners.iter().any(|r| &r.uuid == u && r.busy);
        let added = p
            .actions
            .iter()
            .filter(|a| match a {
                Action::CreateRunner => true,
                Action::EnableRunner(u) => !busy(u),
                _ => false,
            })
            .count() as u32;
        if added > 0 {
            prop_assert!(capacity + added <= pool.scaling.max, "{capacity} + {added} > {}", pool.scaling.max);
        }
        let creates = p.actions.iter().filter(|a| **a == Action::CreateRunner).count() as u32;
        prop_assert!(creates <= o.scope_room);
    }

    #[test]
    fn every_runner_pod_or_registration_is_in_exactly_one_state(pool in arbitrary_pool(), o in arbitrary_observation()) {
        let p = plan(&pool, &o);
        let mut uuids: Vec<&RunnerUuid> = o.runners.iter().map(|r| &r.uuid)
            .chain(o.pods.iter().map(|p| &p.runner))
            .chain(o.secrets.iter().map(|s| &s.runner))
            .collect();
        uuids.sort();
        uuids.dedup();
        let sum: u32 = p.counts.disjoint().iter().map(|(_, n)| n).sum();
        prop_assert_eq!(sum as usize, uuids.len(), "{:?}", p.counts);
    }

    #[test]
    fn at_most_one_pod_per_runner(pool in arbitrary_pool(), o in arbitrary_observation()) {
        let p = plan(&pool, &o);
        for a in &p.actions {
            if let Action::CreatePod(u) = a {
                prop_assert!(!o.pods.iter().any(|pod| &pod.runner == u), "CreatePod while a pod exists");
                prop_assert!(o.secrets.iter().any(|s| &s.runner == u), "CreatePod without a Secret");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for a in &p.actions {
            if *a != Action::CreateRunner {
                prop_assert!(seen.insert(a.clone()), "duplicate {a:?}");
            }
        }
    }

    #[test]
    fn every_runner_is_backed_by_a_pod_or_on_its_way_out(pool in arbitrary_pool(), o in arbitrary_observation()) {
        let p = plan(&pool, &o);
        for r in o.runners.iter().filter(|r| !r.busy && r.status != RunnerStatus::Disabled) {
            let has_pod = o.pods.iter().any(|pod| pod.runner == r.uuid);
            let has_secret = o.secrets.iter().any(|s| s.runner == r.uuid);
            if !has_pod {
                let handled = p.actions.contains(&Action::CreatePod(r.uuid.clone()))
                    || p.actions.contains(&Action::DeleteRunner(r.uuid.clone()));
                prop_assert!(handled, "runner {} left without a pod (secret: {has_secret})", r.uuid);
                if !has_secret {
                    prop_assert!(p.actions.contains(&Action::DeleteRunner(r.uuid.clone())));
                }
            }
        }
    }

    #[test]
    fn deletion_finishes_only_when_nothing_is_left(mut pool in arbitrary_pool(), o in arbitrary_observation(), since in 0.0f64..1000.0) {
        pool.deleting_since = Some(since);
        let p = plan(&pool, &o);
        if p.actions.contains(&Action::RemoveFinalizer) {
            prop_assert_eq!(p.actions.len(), 1);
            prop_assert!(o.runners.is_empty() && o.secrets.is_empty());
            prop_assert!(o.pods.iter().all(|pod| pod.terminating));
        }
        prop_assert!(!p.actions.iter().any(|a| matches!(a, Action::CreateRunner | Action::CreatePod(_) | Action::EnableRunner(_))));
    }
}

#[test]
fn every_planned_action_carries_the_reason_the_operator_logs() {
    // Runner 1 lost its pod, runner 2 has no Secret (a crash right after creation), runner 3
    // is gone from Bitbucket, and the pool wants one more runner.
    let observation = observed(
        vec![
            runner(1, RunnerStatus::Online, false),
            runner(2, RunnerStatus::Online, false),
        ],
        vec![pod(3, PodPhase::Running)],
        vec![secret(1), secret(3)],
    );
    let planned = plan(&pool(), &observation);
    let reason_of = |wanted: &Action| {
        assert!(planned.actions.contains(wanted), "{wanted:?} not planned");
        planned.reason(wanted)
    };
    assert_eq!(reason_of(&Action::CreatePod(uuid(1))), "pod vanished");
    assert_eq!(
        reason_of(&Action::DeleteRunner(uuid(2))),
        "no registration Secret: it can never run"
    );
    assert_eq!(
        reason_of(&Action::DeletePod(uuid(3))),
        "runner gone from Bitbucket"
    );
    let empty = plan(&pool(), &observed(vec![], vec![], vec![]));
    assert!(empty.actions.contains(&Action::CreateRunner));
    assert_eq!(empty.reason(&Action::CreateRunner), empty.decision.reason);

    let deleting = PoolSettings {
        deleting_since: Some(990.0),
        ..pool()
    };
    let planned = plan(
        &deleting,
        &world(vec![healthy(4, RunnerStatus::Disabled, false)]),
    );
    assert_eq!(
        planned.reason(&Action::DeleteRunner(uuid(4))),
        "pool deleted"
    );
    let planned = plan(
        &deleting,
        &world(vec![healthy(5, RunnerStatus::Online, false)]),
    );
    assert_eq!(
        planned.reason(&Action::DisableRunner(uuid(5))),
        "pool deleted: disabled first, deleted once still idle"
    );
}

#[test]
fn a_status_time_from_a_skewed_clock_falls_back_to_the_pod_s_age() {
    let settings = PoolSettings {
        registration_ttl: 100.0,
        ..pool()
    };
    // Unregistered since "the future" per Bitbucket's clock; the pod is 500 s old here.
    let mut r = runner(1, RunnerStatus::Unregistered, false);
    r.status_since = Some(5000.0);
    let p = plan(
        &settings,
        &world(vec![(r.clone(), pod(1, PodPhase::Running), secret(1))]),
    );
    assert!(
        p.actions.contains(&Action::DeleteRunner(uuid(1))),
        "{:?}",
        p.actions
    );
    // A real recent change still counts: not yet past the TTL.
    r.status_since = Some(950.0);
    let p = plan(
        &settings,
        &world(vec![(r, pod(1, PodPhase::Running), secret(1))]),
    );
    assert!(!p.actions.contains(&Action::DeleteRunner(uuid(1))));
}

/// A pool whose spec moved on: its labels are `[self.hosted, linux, build, big]` and its pod
/// template revision `new`.
fn rolled_pool(max: u32) -> PoolSettings {
    PoolSettings {
        scaling: Scaling {
            min: 0,
            max,
            min_idle: 1,
            ..Scaling::default()
        },
        labels: ["self.hosted", "linux", "build", "big"]
            .map(str::to_owned)
            .to_vec(),
        template: Some("new".into()),
        ..pool()
    }
}

/// A runner online since long with its pod and Secret, of template `template` and labels.
fn made_from(
    i: u32,
    busy: bool,
    labels: &[&str],
    template: &str,
) -> (ObservedRunner, ObservedPod, ObservedSecret) {
    let mut r = runner(i, RunnerStatus::Online, busy);
    r.labels = Some(labels.iter().map(|l| (*l).to_owned()).collect());
    let mut p = pod(i, PodPhase::Running);
    p.template = Some(template.into());
    p.ready_since = Some(600.0);
    (r, p, secret(i))
}

const NEW_LABELS: [&str; 4] = ["linux", "self.hosted", "big", "build"];
const OLD_LABELS: [&str; 3] = ["self.hosted", "linux", "build"];

#[test]
fn current_runners_in_any_label_order_are_left_alone() {
    let o = world(vec![made_from(1, false, &NEW_LABELS, "new")]);
    let p = plan(&rolled_pool(4), &o);
    assert_eq!(p.counts.outdated, 0);
    assert!(
        !p.actions.iter().any(|a| a.runner() == Some(&uuid(1))),
        "{:?}",
        p.actions
    );
}

#[test]
fn an_idle_runner_of_an_earlier_template_or_labels_is_drained_and_replaced() {
    for (labels, template) in [(&NEW_LABELS[..], "old"), (&OLD_LABELS[..], "new")] {
        let o = world(vec![made_from(1, false, labels, template)]);
        let p = plan(&rolled_pool(4), &o);
        assert_eq!(p.counts.outdated, 1);
        assert!(
            p.actions.contains(&Action::DisableRunner(uuid(1))),
            "{:?}",
            p.actions
        );
        assert!(
            p.actions.contains(&Action::ReplaceRunner(uuid(1))),
            "{:?}",
            p.actions
        );
        assert_eq!(
            p.reason(&Action::ReplaceRunner(uuid(1))),
            "rollout to the current spec"
        );
    }
    // Drained and still idle at the next reconcile: it goes, and is not revived.
    let (mut r, p, s) = made_from(1, false, &NEW_LABELS, "old");
    r.status = RunnerStatus::Disabled;
    let planned = plan(&rolled_pool(4), &world(vec![(r, p, s)]));
    assert!(
        planned.actions.contains(&Action::DeleteRunner(uuid(1))),
        "{:?}",
        planned.actions
    );
    assert!(!planned.actions.contains(&Action::EnableRunner(uuid(1))));
}

#[test]
fn a_busy_outdated_runner_is_kept_until_its_step_is_done() {
    let o = world(vec![made_from(1, true, &OLD_LABELS, "old")]);
    let p = plan(&rolled_pool(4), &o);
    assert_eq!(p.counts.outdated, 1);
    assert!(
        !p.actions.iter().any(|a| a.runner() == Some(&uuid(1))),
        "{:?}",
        p.actions
    );
}

#[test]
fn a_rollout_replaces_a_quarter_of_max_at_a_time_and_waits_for_replacements() {
    // Eight idle outdated runners of a pool of max 8: two at a time.
    let runners: Vec<_> = (1..=8)
        .map(|i| made_from(i, false, &NEW_LABELS, "old"))
        .collect();
    let pool = rolled_pool(8);
    assert_eq!(pool.rollout_surge(), 2);
    let p = plan(&pool, &world(runners.clone()));
    let replaced = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::ReplaceRunner(_)))
        .count();
    assert_eq!(replaced, 2, "{:?}", p.actions);
    // With two replacements still starting, none more is made (the surplus they make is
    // drained, outdated runners first).
    let mut o = world(runners);
    for i in 20..22 {
        o.runners.push(runner(i, RunnerStatus::Unregistered, false));
        let mut p = pod(i, PodPhase::Pending);
        p.template = Some("new".into());
        o.pods.push(p);
        o.secrets.push(secret(i));
    }
    let p = plan(&pool, &o);
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::ReplaceRunner(_) | Action::CreateRunner)),
        "{:?}",
        p.actions
    );
}

#[test]
fn a_runner_not_online_yet_of_an_earlier_template_is_replaced_at_once() {
    let (mut r, mut p, s) = made_from(1, false, &NEW_LABELS, "old");
    r.status = RunnerStatus::Unregistered;
    p.phase = PodPhase::Pending;
    p.ready_since = None;
    let planned = plan(&rolled_pool(4), &world(vec![(r, p, s)]));
    assert!(
        planned.actions.contains(&Action::DeletePod(uuid(1))),
        "{:?}",
        planned.actions
    );
    assert!(planned.actions.contains(&Action::DeleteRunner(uuid(1))));
}

proptest! {
    #[test]
    fn a_rollout_never_holds_more_pods_than_max_and_its_surge(n in 1u32..10, max in 1u32..10, outdated in 0u32..10) {
        let pool = rolled_pool(max);
        let runners: Vec<_> = (0..n.min(max))
            .map(|i| made_from(i, false, &NEW_LABELS, if i < outdated { "old" } else { "new" }))
            .collect();
        let p = plan(&pool, &world(runners));
        let creates = p.actions.iter().filter(|a| matches!(a, Action::CreateRunner | Action::ReplaceRunner(_))).count() as u32;
        prop_assert!(n.min(max) + creates <= max + pool.rollout_surge(), "{:?}", p.actions);
    }
}

#[test]
fn only_busy_marks_that_differ_from_the_runner_s_state_change() {
    let uuid = |n: u8| RunnerUuid::parse(&format!("{n:08}-0000-0000-0000-000000000000")).unwrap();
    let runner = |n: u8, busy: bool| ObservedRunner {
        uuid: uuid(n),
        status: RunnerStatus::Online,
        busy,
        status_since: None,
        labels: None,
    };
    let pod = |n: u8, marked: bool| (format!("pod-{n}"), uuid(n), marked);
    let pods = [pod(1, false), pod(2, true), pod(3, true), pod(4, false)];
    let runners = [
        runner(1, true),
        runner(2, true),
        runner(3, false),
        runner(4, false),
    ];
    assert_eq!(
        busy_marks_to_change(&pods, &runners),
        [("pod-1".to_owned(), true), ("pod-3".to_owned(), false)]
    );
    // A pod whose runner is gone from Bitbucket has nothing to wait for.
    assert_eq!(
        busy_marks_to_change(&[pod(5, true)], &[]),
        [("pod-5".to_owned(), false)]
    );
}

#[test]
fn runners_drained_while_idle_or_retired_now_are_leaving_since_then() {
    let mut drained = runner(1, RunnerStatus::Disabled, false);
    drained.status_since = Some(900.0);
    let mut skewed = runner(2, RunnerStatus::Disabled, false);
    // Bitbucket's clock ahead of ours: never later than now.
    skewed.status_since = Some(5000.0);
    let draining_busy = runner(3, RunnerStatus::Disabled, true);
    let mut o = world(vec![
        (drained, pod(1, PodPhase::Running), secret(1)),
        (skewed, pod(2, PodPhase::Running), secret(2)),
        (draining_busy, pod(3, PodPhase::Running), secret(3)),
    ]);
    o.now = 1000.0;
    let retiring = Plan {
        actions: vec![
            Action::DeleteRunner(uuid(4)),
            Action::CreateRunner,
            Action::CreatePod(uuid(5)),
        ],
        ..plan(&pool(), &o)
    };
    assert_eq!(
        retiring.leaving(&o),
        [(uuid(1), 900.0), (uuid(2), 1000.0), (uuid(4), 1000.0)],
        "a busy runner's pod stays until its step ends"
    );
    assert_eq!(retiring.recreated().collect::<Vec<_>>(), [&uuid(5)]);
    assert_eq!(retiring.pods_to_create(), 2);
}
