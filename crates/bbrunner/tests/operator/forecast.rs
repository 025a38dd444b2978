//! The demand forecast in a running operator: learned into the pool's status, read back after
//! a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use super::*;

/// The profile in the status: one byte per 15 minutes of the week, in half-runners.
fn profile(status: &Value) -> Vec<u8> {
    let encoded = status["demandProfile"].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap()
}

/// Wait until `done` holds of the pool's status; on timeout, fail with the status and the
/// operators' log.
async fn until_status(world: &World, log: &Path, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let status = world.status("builds").await;
        if done(&status) {
            return;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let newest: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{what}: not within 45 s\nstatus: {status}\noperator log, newest first:\n{}",
                newest.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_learns_its_pools_demand_into_the_status_and_keeps_it_across_restarts() {
    let world = World::start("forecast").await;
    let log = world.dir.join("operator.log");
    let operator = world.scaled_operator(&log);
    // The default poll and delay: on a clock 30 times faster, the 1 s poll of the real-time
    // tests would be 30 list calls a second and meet Bitbucket's rate limit.
    let mut spec = managed(1, 4);
    spec["scaling"]["pollInterval"] = "15s".into();
    spec["scaling"]["scaleDownDelay"] = "90s".into();
    world.pool("builds", spec).await;
    eventually("a runner online", 20, || async {
        online(&world.runners()) >= 1
    })
    .await;
    // Three steps of 20 simulated minutes: three busy runners through a slot's end.
    world.submit(3, 1200.0);
    until_status(&world, &log, "the slot's peak seen", |status| {
        status["demandSlotPeak"].as_u64() >= Some(3)
    })
    .await;
    // The slot ends within 15 simulated minutes (30 s): its peak goes into the profile.
    until_status(&world, &log, "a slot learned 3 busy runners", |status| {
        profile(status).contains(&6)
    })
    .await;
    let learned = profile(&world.status("builds").await);
    assert_eq!(learned.len(), 672, "one byte per 15 minutes of a week");
    // A new operator reads the profile back: the next slot it folds in joins what was learned.
    drop(operator);
    let slot = world.status("builds").await["demandSlotTime"].clone();
    let _operator = world.scaled_operator(&log);
    until_status(
        &world,
        &log,
        "a slot observed by the new operator ends",
        |status| status["demandSlotTime"] != slot && !status["demandSlotTime"].is_null(),
    )
    .await;
    let after = profile(&world.status("builds").await);
    for (slot, &half_runners) in learned.iter().enumerate() {
        if half_runners != u8::MAX {
            assert_ne!(
                after[slot],
                u8::MAX,
                "slot {slot} forgotten across the restart"
            );
        }
    }
    let refused = world
        .bitbucket
        .with_world(|w, _| w.requests.iter().filter(|r| r.status == 429).count());
    assert_eq!(
        refused, 0,
        "the operators kept within Bitbucket's rate limit"
    );
    // On fake-bitbucket's scale and origin, the clocks agree: no warning of skew.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains("ahead of the operator's clock"),
        "a warning of skew between agreeing clocks"
    );
}
