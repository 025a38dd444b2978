//! The demand forecast in a running operator: learned into the pool's status, read back after
//! a restart.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use super::*;

/// The operator on fake-bitbucket's clock (30 times real time), so that 15 minutes of the week
/// pass in 30 s.
fn scaled_operator(world: &World) -> Operator {
    let origin = world.bitbucket.with_world(|w, _| w.epoch).to_string();
    world.operator(&["--time-scale", "30", "--clock-origin", &origin])
}

/// The profile in the status: one byte per 15 minutes of the week, in half-runners.
fn profile(status: &Value) -> Vec<u8> {
    let encoded = status["demandProfile"].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_learns_its_pools_demand_into_the_status_and_keeps_it_across_restarts() {
    let world = World::start("forecast").await;
    let operator = scaled_operator(&world);
    world.pool("builds", managed(1, 4)).await;
    eventually("a runner online", 20, || async {
        online(&world.runners()) >= 1
    })
    .await;
    // Three steps of 20 simulated minutes: three busy runners through a slot's end.
    world.submit(3, 1200.0);
    eventually("the slot's peak seen", 30, || async {
        world.status("builds").await["demandSlotPeak"].as_u64() >= Some(3)
    })
    .await;
    // The slot ends within 15 simulated minutes (30 s): its peak goes into the profile.
    let deadline = Instant::now() + Duration::from_secs(45);
    let learned = loop {
        let learned = profile(&world.status("builds").await);
        if learned.contains(&6) {
            break learned;
        }
        assert!(
            Instant::now() < deadline,
            "no slot learned 3 busy runners: {learned:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(learned.len(), 672, "one byte per 15 minutes of a week");
    // A new operator reads the profile back: the next slot it folds in joins what was learned.
    drop(operator);
    let slot = world.status("builds").await["demandSlotTime"].clone();
    let _operator = scaled_operator(&world);
    eventually("a slot observed by the new operator ends", 45, || async {
        let status = world.status("builds").await;
        status["demandSlotTime"] != slot && !status["demandSlotTime"].is_null()
    })
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
}
