use proptest::prelude::*;

use super::*;

const ON: CacheSettings = CacheSettings {
    enabled: true,
    retain: 10,
    delete_after: 300.0,
};

fn claim(slot: u32, handed: Option<(&str, Seconds)>) -> ObservedClaim {
    ObservedClaim {
        name: claim_name("ci", slot),
        created_at: 0.0,
        terminating: false,
        handed_to: handed.map(|(pod, at)| Handover {
            pod: pod.to_owned(),
            at,
        }),
        skipped_at: None,
    }
}

fn user(pod: &str, slot: u32, live: bool) -> ClaimUser {
    ClaimUser {
        pod: pod.to_owned(),
        claim: claim_name("ci", slot),
        live,
        unschedulable: None,
        leaving_since: None,
    }
}

/// Pods that mount these claims, none coming.
fn mounting(users: &[ClaimUser]) -> PoolPods {
    PoolPods {
        mounts: users.to_vec(),
        coming: Vec::new(),
    }
}

fn none() -> PoolPods {
    PoolPods::default()
}

/// The plan for `count` pods of new runners (none recreated).
fn fresh(
    settings: &CacheSettings,
    claims: &[ObservedClaim],
    pods: &PoolPods,
    count: usize,
    now: Seconds,
) -> CachePlan {
    plan("ci", settings, claims, pods, &NewPods::fresh(count), now)
}

fn claims_of(plan: &CachePlan) -> Vec<&str> {
    plan.handovers
        .iter()
        .filter_map(ClaimChoice::claim)
        .collect()
}

#[test]
fn names_and_slots_round_trip_and_refuse_other_pools_and_padding() {
    assert_eq!(claim_name("ci", 3), "ci-cache-3");
    assert_eq!(slot_of("ci", "ci-cache-3"), Some(3));
    assert_eq!(slot_of("ci", "ci-cache-0"), Some(0));
    assert_eq!(slot_of("ci", "ci-cache-03"), None);
    assert_eq!(slot_of("ci", "cix-cache-3"), None);
    assert_eq!(slot_of("c", "ci-cache-3"), None);
    assert_eq!(slot_of("ci", "ci-cache-x"), None);
}

#[test]
fn the_warmest_free_claim_goes_first_and_new_slots_fill_the_gaps() {
    let claims = [
        claim(0, Some(("old", 100.0))),
        claim(1, None),
        claim(2, Some(("recent", 500.0))),
        claim(4, Some(("busy", 50.0))),
    ];
    let users = [user("busy", 4, true), user("recent", 2, false)];
    let plan = fresh(&ON, &claims, &mounting(&users), 5, 1000.0);
    assert_eq!(
        claims_of(&plan),
        [
            "ci-cache-2",
            "ci-cache-0",
            "ci-cache-1",
            "ci-cache-3",
            "ci-cache-5"
        ]
    );
    assert_eq!(
        plan.handovers[..3]
            .iter()
            .map(|h| matches!(h, ClaimChoice::Reuse { warm: true, .. }))
            .collect::<Vec<_>>(),
        [true, true, false]
    );
    assert!(matches!(plan.handovers[3], ClaimChoice::Create { .. }));
    assert!(plan.delete.is_empty());
}

#[test]
fn a_claim_is_never_handed_on_while_a_live_pod_mounts_it() {
    // A terminating pod is still live: its daemon may still write.
    let claims = [claim(0, Some(("draining", 10.0)))];
    let plan = fresh(
        &ON,
        &claims,
        &mounting(&[user("draining", 0, true)]),
        1,
        1000.0,
    );
    assert_eq!(claims_of(&plan), ["ci-cache-1"]);
    // Once its pod is over (Succeeded or Failed) or gone, it is free again.
    let plan_after = fresh(
        &ON,
        &claims,
        &mounting(&[user("draining", 0, false)]),
        1,
        1000.0,
    );
    assert_eq!(claims_of(&plan_after), ["ci-cache-0"]);
    let plan_gone = fresh(&ON, &claims, &none(), 1, 1000.0);
    assert_eq!(claims_of(&plan_gone), ["ci-cache-0"]);
}

#[test]
fn a_fresh_handover_holds_the_claim_while_its_pod_is_coming() {
    let claims = [claim(0, Some(("coming", 990.0)))];
    // Another operator (or this one, restarted) sees the mark before the pod exists, while
    // the runner's registration does.
    let coming = PoolPods {
        mounts: Vec::new(),
        coming: vec!["coming".into()],
    };
    let plan = fresh(&ON, &claims, &coming, 1, 1000.0);
    assert_eq!(claims_of(&plan), ["ci-cache-1"]);
    // A handover whose pod never came frees the claim after the grace.
    let later = fresh(&ON, &claims, &coming, 1, 990.0 + HANDOVER_GRACE);
    assert_eq!(claims_of(&later), ["ci-cache-0"]);
    // A pod that came and went (its runner replaced after a step) frees it at once.
    let gone = fresh(&ON, &claims, &none(), 1, 1000.0);
    assert_eq!(claims_of(&gone), ["ci-cache-0"]);
}

#[test]
fn terminating_claims_are_neither_handed_on_nor_reused_as_slots() {
    let mut gone = claim(0, Some(("old", 10.0)));
    gone.terminating = true;
    let plan = fresh(&ON, &[gone], &none(), 1, 1000.0);
    assert_eq!(claims_of(&plan), ["ci-cache-1"]);
}

#[test]
fn past_retain_the_coldest_free_claims_go_after_the_delay() {
    let claims = [
        claim(0, Some(("a", 900.0))),
        claim(1, Some(("b", 100.0))),
        claim(2, None),
        claim(3, Some(("c", 50.0))),
    ];
    let retain_two = CacheSettings { retain: 2, ..ON };
    let plan = fresh(&retain_two, &claims, &none(), 0, 1000.0);
    // Coldest first: the never-used one, then the oldest handover; `a` is inside the delay
    // but two are kept anyway.
    assert_eq!(plan.delete, ["ci-cache-2", "ci-cache-3"]);
    // Within the delay, nothing goes.
    let early = fresh(&retain_two, &claims, &none(), 0, 320.0);
    assert_eq!(early.delete, ["ci-cache-2"]);
}

#[test]
fn a_pool_whose_cache_is_off_mounts_none_and_lets_every_free_claim_go() {
    let off = CacheSettings {
        enabled: false,
        ..ON
    };
    let claims = [claim(0, Some(("a", 900.0))), claim(1, Some(("b", 100.0)))];
    let plan = fresh(&off, &claims, &mounting(&[user("b", 1, true)]), 3, 1000.0);
    assert!(plan.handovers.is_empty());
    // The claim in use stays until its pod is over; the other waits out the delay.
    assert!(plan.delete.is_empty());
    let later = fresh(&off, &claims, &mounting(&[user("b", 1, false)]), 3, 1300.0);
    assert_eq!(later.delete, ["ci-cache-1", "ci-cache-0"]);
}

#[test]
fn counts_say_what_each_claim_is() {
    let mut gone = claim(3, None);
    gone.terminating = true;
    let claims = [
        claim(0, Some(("a", 900.0))),
        claim(1, Some(("b", 100.0))),
        claim(2, None),
        gone,
    ];
    let c = counts(&claims, &mounting(&[user("a", 0, true)]), 1000.0);
    assert_eq!(
        c,
        CacheCounts {
            in_use: 1,
            warm: 1,
            cold: 1,
            skipped: 0,
            terminating: 1
        }
    );
    assert_eq!(c.total(), 4);
}

#[test]
fn the_plan_applied_counts_new_and_handed_claims_in_use_and_deleted_ones_going() {
    let claims = [
        claim(0, Some(("a", 100.0))),
        claim(1, None),
        claim(2, Some(("b", 50.0))),
    ];
    let retain_two = CacheSettings { retain: 2, ..ON };
    // One new pod takes the warmest claim; the coldest free one goes past retain.
    let plan = fresh(&retain_two, &claims, &none(), 1, 1000.0);
    assert_eq!(claims_of(&plan), ["ci-cache-0"]);
    assert_eq!(plan.delete, ["ci-cache-1"]);
    let (claims_after, pods_after) = plan.applied(&claims, &none(), 1000.0);
    let after = counts(&claims_after, &pods_after, 1000.0);
    assert_eq!(
        after,
        CacheCounts {
            in_use: 1,
            warm: 1,
            cold: 0,
            skipped: 0,
            terminating: 1
        }
    );
    let grown = fresh(&ON, &claims, &none(), 5, 1000.0);
    let (claims_after, pods_after) = grown.applied(&claims, &none(), 1000.0);
    assert_eq!(counts(&claims_after, &pods_after, 1000.0).in_use, 5);
}

#[test]
fn a_pod_refused_for_its_volume_skips_its_claim_after_the_bound_and_no_new_claim_follows() {
    let claims = [
        claim(0, Some(("stuck", 900.0))),
        claim(1, Some(("b", 100.0))),
    ];
    let stuck = |message: &str| ClaimUser {
        unschedulable: Some(Unschedulable {
            since: 900.0,
            message: message.into(),
        }),
        ..user("stuck", 0, true)
    };
    let conflict = stuck("0/3 nodes are available: 3 node(s) had volume node affinity conflict.");
    let within = fresh(
        &ON,
        &claims,
        &mounting(std::slice::from_ref(&conflict)),
        0,
        1000.0,
    );
    assert!(within.skip.is_empty(), "waiting less than the bound");
    let past = 900.0 + SCHEDULING_BOUND;
    let bound = fresh(
        &ON,
        &claims,
        &mounting(std::slice::from_ref(&conflict)),
        0,
        past,
    );
    assert_eq!(bound.skip.len(), 1);
    assert_eq!(
        (bound.skip[0].claim.as_str(), bound.skip[0].pod.as_str()),
        ("ci-cache-0", "stuck")
    );
    assert!(
        bound.skip[0]
            .message
            .contains("volume node affinity conflict")
    );
    // Memory is no claim's fault: the pod waits for room as any runner does.
    let memory = stuck("0/3 nodes are available: 3 Insufficient memory.");
    let no_fault = fresh(&ON, &claims, &mounting(&[memory]), 0, past);
    assert!(no_fault.skip.is_empty());

    // Once marked (and its pod deleted), the claim is passed over; the free warm claim goes
    // first, and past it pods start without a claim rather than on a new one.
    let (after, pods_after) = bound.applied(&claims, &mounting(&[conflict]), past);
    assert!(pods_after.mounts.is_empty());
    assert_eq!(counts(&after, &pods_after, past).skipped, 1);
    let next = fresh(&ON, &after, &none(), 2, past + 10.0);
    assert_eq!(
        next.handovers,
        [
            ClaimChoice::Reuse {
                claim: "ci-cache-1".into(),
                warm: true
            },
            ClaimChoice::Uncached
        ]
    );
    // After SKIP_FOR it may be tried again.
    let again = fresh(&ON, &after, &none(), 2, past + SKIP_FOR);
    assert_eq!(claims_of(&again), ["ci-cache-0", "ci-cache-1"]);
}

#[test]
fn a_new_pod_waits_for_the_claim_of_a_pod_on_its_way_out_rather_than_start_cold() {
    // An ephemeral runner's successor: its predecessor's pod is deleted, still terminating.
    let claims = [claim(0, Some(("old", 500.0)))];
    let leaving = ClaimUser {
        leaving_since: Some(990.0),
        ..user("old", 0, true)
    };
    let p = fresh(
        &ON,
        &claims,
        &mounting(std::slice::from_ref(&leaving)),
        2,
        1000.0,
    );
    assert_eq!(
        p.handovers,
        [
            ClaimChoice::Wait {
                claim: "ci-cache-0".into()
            },
            ClaimChoice::Create {
                claim: "ci-cache-1".into()
            }
        ],
        "one waits for the leaving claim, the other needs a claim of its own"
    );
    // A pod that takes longer than LEAVING_WAIT to go is not waited for.
    let stuck = fresh(&ON, &claims, &mounting(&[leaving]), 1, 990.0 + LEAVING_WAIT);
    assert_eq!(claims_of(&stuck), ["ci-cache-1"]);
    // Nor a pod that stays.
    let staying = fresh(&ON, &claims, &mounting(&[user("old", 0, true)]), 1, 1000.0);
    assert_eq!(claims_of(&staying), ["ci-cache-1"]);
}

#[test]
fn a_recreated_pod_gets_back_the_claim_handed_to_it() {
    // The operator marked ci-cache-0 for pod "ci-r1" and stopped before creating it; a warmer
    // claim is free, but the pod resumes its own and no other claim is taken for it.
    let claims = [
        claim(0, Some(("ci-r1", 990.0))),
        claim(1, Some(("old", 995.0))),
    ];
    let coming = PoolPods {
        mounts: Vec::new(),
        coming: vec!["ci-r1".into()],
    };
    let recreated = NewPods {
        count: 2,
        recreated: vec!["ci-r1".into()],
    };
    let p = plan("ci", &ON, &claims, &coming, &recreated, 1000.0);
    assert_eq!(
        p.resumed,
        [Resume {
            pod: "ci-r1".into(),
            claim: "ci-cache-0".into()
        }]
    );
    assert_eq!(claims_of(&p), ["ci-cache-1"], "the other new pod");
    // A claim skipped for that pod is not resumed.
    let mut skipped = claims.clone();
    skipped[0].skipped_at = Some(990.0);
    let p = plan("ci", &ON, &skipped, &coming, &recreated, 1000.0);
    assert!(p.resumed.is_empty());
    assert_eq!(p.handovers.len(), 2);
    assert!(!claims_of(&p).contains(&"ci-cache-0"));
}

fn arbitrary_world() -> impl Strategy<Value = (Vec<ObservedClaim>, PoolPods, NewPods)> {
    let claim = (
        0u32..8,
        any::<bool>(),
        proptest::option::of((0u8..6, 0.0..2000.0f64)),
        proptest::option::of(0.0..2000.0f64),
    );
    let user = (
        0u8..6,
        0u32..8,
        any::<bool>(),
        proptest::option::of(0.0..2000.0f64),
        proptest::option::of(1900.0..2000.0f64),
    );
    (
        proptest::collection::vec(claim, 0..8),
        proptest::collection::vec(user, 0..6),
        proptest::collection::vec(0u8..6, 0..4),
        0usize..6,
        proptest::collection::vec(0u8..6, 0..3),
    )
        .prop_map(|(claims, users, coming, count, recreated)| {
            let mut seen = Vec::new();
            let claims = claims
                .into_iter()
                .filter(|(slot, ..)| {
                    let fresh = !seen.contains(slot);
                    seen.push(*slot);
                    fresh
                })
                .map(|(slot, terminating, handed, skipped_at)| ObservedClaim {
                    name: claim_name("ci", slot),
                    created_at: 0.0,
                    terminating,
                    handed_to: handed.map(|(pod, at)| Handover {
                        pod: format!("pod-{pod}"),
                        at,
                    }),
                    skipped_at,
                })
                .collect();
            let users = users
                .into_iter()
                .map(|(pod, slot, live, stuck, leaving_since)| ClaimUser {
                    pod: format!("pod-{pod}"),
                    claim: claim_name("ci", slot),
                    live,
                    unschedulable: stuck.map(|since| Unschedulable {
                        since,
                        message: "1 node(s) had volume node affinity conflict".into(),
                    }),
                    leaving_since,
                })
                .collect();
            let pods = PoolPods {
                mounts: users,
                coming: coming.into_iter().map(|pod| format!("pod-{pod}")).collect(),
            };
            // Recreated pods are among the new ones, and exist no more.
            let mut recreated: Vec<String> = recreated
                .into_iter()
                .map(|pod| format!("pod-{pod}"))
                .filter(|pod| !pods.mounts.iter().any(|u| &u.pod == pod))
                .collect();
            recreated.sort();
            recreated.dedup();
            let new_pods = NewPods {
                count: count.max(recreated.len()),
                recreated,
            };
            (claims, pods, new_pods)
        })
}

proptest! {
    /// Whatever is observed: every new pod gets its own claim (or none, after a skip), none
    /// mounted by a live pod, awaiting its pod or passed over; a deleted claim is neither in
    /// use nor handed over.
    #[test]
    fn handovers_are_exclusive((claims, pods, new_pods) in arbitrary_world(), retain in 0u32..8) {
        let settings = CacheSettings { retain, ..ON };
        let now = 2000.0;
        let plan = plan("ci", &settings, &claims, &pods, &new_pods, now);
        prop_assert_eq!(plan.handovers.len() + plan.resumed.len(), new_pods.count);
        let mut names: Vec<&str> = claims_of(&plan);
        names.extend(plan.resumed.iter().map(|r| r.claim.as_str()));
        let handed = names.len();
        names.sort_unstable();
        names.dedup();
        prop_assert_eq!(names.len(), handed, "a claim handed to two pods");
        let passed_over = |c: &ObservedClaim| {
            c.skipped_at.is_some_and(|at| now - at < SKIP_FOR)
                || plan.skip.iter().any(|s| s.claim == c.name)
        };
        for choice in &plan.handovers {
            let observed = claims.iter().find(|c| Some(c.name.as_str()) == choice.claim());
            match choice {
                ClaimChoice::Reuse { .. } => {
                    let c = observed.expect("reused claims exist");
                    prop_assert!(!c.terminating && !in_use(c, &pods, now) && !passed_over(c));
                }
                ClaimChoice::Create { .. } => prop_assert!(observed.is_none()),
                ClaimChoice::Uncached => prop_assert!(claims.iter().any(passed_over)),
                ClaimChoice::Wait { claim } => {
                    let c = claims.iter().find(|c| &c.name == claim).expect("awaited claims exist");
                    prop_assert!(!c.terminating && in_use(c, &pods, now) && !passed_over(c));
                    prop_assert!(!plan.delete.contains(claim));
                }
            }
        }
        for resume in &plan.resumed {
            let c = claims.iter().find(|c| c.name == resume.claim).expect("resumed claims exist");
            prop_assert_eq!(&c.handed_to.as_ref().unwrap().pod, &resume.pod);
            prop_assert!(!c.terminating && !passed_over(c));
            prop_assert!(!pods.mounts.iter().any(|u| u.claim == c.name && u.live));
        }
        for name in &plan.delete {
            let c = claims.iter().find(|c| &c.name == name).expect("deleted claims exist");
            prop_assert!(!in_use(c, &pods, now));
            prop_assert!(!names.contains(&name.as_str()));
        }
    }
}
