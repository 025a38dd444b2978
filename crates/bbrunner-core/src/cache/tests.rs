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
    }
}

fn user(pod: &str, slot: u32, live: bool) -> ClaimUser {
    ClaimUser {
        pod: pod.to_owned(),
        claim: claim_name("ci", slot),
        live,
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

fn claims_of(plan: &CachePlan) -> Vec<&str> {
    plan.handovers.iter().map(ClaimChoice::claim).collect()
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
    let plan = plan("ci", &ON, &claims, &mounting(&users), 5, 1000.0);
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
    let plan = plan(
        "ci",
        &ON,
        &claims,
        &mounting(&[user("draining", 0, true)]),
        1,
        1000.0,
    );
    assert_eq!(claims_of(&plan), ["ci-cache-1"]);
    // Once its pod is over (Succeeded or Failed) or gone, it is free again.
    let plan_after = super::plan(
        "ci",
        &ON,
        &claims,
        &mounting(&[user("draining", 0, false)]),
        1,
        1000.0,
    );
    assert_eq!(claims_of(&plan_after), ["ci-cache-0"]);
    let plan_gone = super::plan("ci", &ON, &claims, &none(), 1, 1000.0);
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
    let plan = plan("ci", &ON, &claims, &coming, 1, 1000.0);
    assert_eq!(claims_of(&plan), ["ci-cache-1"]);
    // A handover whose pod never came frees the claim after the grace.
    let later = super::plan("ci", &ON, &claims, &coming, 1, 990.0 + HANDOVER_GRACE);
    assert_eq!(claims_of(&later), ["ci-cache-0"]);
    // A pod that came and went (its runner replaced after a step) frees it at once.
    let gone = super::plan("ci", &ON, &claims, &none(), 1, 1000.0);
    assert_eq!(claims_of(&gone), ["ci-cache-0"]);
}

#[test]
fn terminating_claims_are_neither_handed_on_nor_reused_as_slots() {
    let mut gone = claim(0, Some(("old", 10.0)));
    gone.terminating = true;
    let plan = plan("ci", &ON, &[gone], &none(), 1, 1000.0);
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
    let plan = plan("ci", &retain_two, &claims, &none(), 0, 1000.0);
    // Coldest first: the never-used one, then the oldest handover; `a` is inside the delay
    // but two are kept anyway.
    assert_eq!(plan.delete, ["ci-cache-2", "ci-cache-3"]);
    // Within the delay, nothing goes.
    let early = super::plan("ci", &retain_two, &claims, &none(), 0, 320.0);
    assert_eq!(early.delete, ["ci-cache-2"]);
}

#[test]
fn a_pool_whose_cache_is_off_mounts_none_and_lets_every_free_claim_go() {
    let off = CacheSettings {
        enabled: false,
        ..ON
    };
    let claims = [claim(0, Some(("a", 900.0))), claim(1, Some(("b", 100.0)))];
    let plan = plan(
        "ci",
        &off,
        &claims,
        &mounting(&[user("b", 1, true)]),
        3,
        1000.0,
    );
    assert!(plan.handovers.is_empty());
    // The claim in use stays until its pod is over; the other waits out the delay.
    assert!(plan.delete.is_empty());
    let later = super::plan(
        "ci",
        &off,
        &claims,
        &mounting(&[user("b", 1, false)]),
        3,
        1300.0,
    );
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
    let plan = plan("ci", &retain_two, &claims, &none(), 1, 1000.0);
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
            terminating: 1
        }
    );
    let grown = super::plan("ci", &ON, &claims, &none(), 5, 1000.0);
    let (claims_after, pods_after) = grown.applied(&claims, &none(), 1000.0);
    assert_eq!(counts(&claims_after, &pods_after, 1000.0).in_use, 5);
}

fn arbitrary_world() -> impl Strategy<Value = (Vec<ObservedClaim>, PoolPods, usize)> {
    let claim = (
        0u32..8,
        any::<bool>(),
        proptest::option::of((0u8..6, 0.0..2000.0f64)),
    );
    let user = (0u8..6, 0u32..8, any::<bool>());
    (
        proptest::collection::vec(claim, 0..8),
        proptest::collection::vec(user, 0..6),
        proptest::collection::vec(0u8..6, 0..4),
        0usize..6,
    )
        .prop_map(|(claims, users, coming, new_pods)| {
            let mut seen = Vec::new();
            let claims = claims
                .into_iter()
                .filter(|(slot, ..)| {
                    let fresh = !seen.contains(slot);
                    seen.push(*slot);
                    fresh
                })
                .map(|(slot, terminating, handed)| ObservedClaim {
                    name: claim_name("ci", slot),
                    created_at: 0.0,
                    terminating,
                    handed_to: handed.map(|(pod, at)| Handover {
                        pod: format!("pod-{pod}"),
                        at,
                    }),
                })
                .collect();
            let users = users
                .into_iter()
                .map(|(pod, slot, live)| ClaimUser {
                    pod: format!("pod-{pod}"),
                    claim: claim_name("ci", slot),
                    live,
                })
                .collect();
            let pods = PoolPods {
                mounts: users,
                coming: coming.into_iter().map(|pod| format!("pod-{pod}")).collect(),
            };
            (claims, pods, new_pods)
        })
}

proptest! {
    /// Whatever is observed: every new pod gets its own claim, none mounted by a live pod or
    /// awaiting its pod, and a deleted claim is neither in use nor handed over.
    #[test]
    fn handovers_are_exclusive((claims, pods, new_pods) in arbitrary_world(), retain in 0u32..8) {
        let settings = CacheSettings { retain, ..ON };
        let now = 2000.0;
        let plan = plan("ci", &settings, &claims, &pods, new_pods, now);
        prop_assert_eq!(plan.handovers.len(), new_pods);
        let mut names: Vec<&str> = claims_of(&plan);
        names.sort_unstable();
        names.dedup();
        prop_assert_eq!(names.len(), new_pods, "a claim handed to two pods");
        for choice in &plan.handovers {
            let observed = claims.iter().find(|c| c.name == choice.claim());
            match choice {
                ClaimChoice::Reuse { .. } => {
                    let c = observed.expect("reused claims exist");
                    prop_assert!(!c.terminating && !in_use(c, &pods, now));
                }
                ClaimChoice::Create { .. } => prop_assert!(observed.is_none()),
            }
        }
        for name in &plan.delete {
            let c = claims.iter().find(|c| &c.name == name).expect("deleted claims exist");
            prop_assert!(!in_use(c, &pods, now));
            prop_assert!(!names.contains(&name.as_str()));
        }
    }
}
