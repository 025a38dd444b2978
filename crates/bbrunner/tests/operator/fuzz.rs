//! Hostile RunnerPool specs, generated, written into fake-kube past the CRD's checks (as
//! under an older CRD or with validation bypassed), beside good pools: the operator must not
//! panic, must keep serving the good pools, and must mark every bad one Degraded naming its
//! field, creating nothing for it. `BBRUNNER_FUZZ_SEED` and `BBRUNNER_FUZZ_POOLS` vary it.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;

/// One way to break a spec: where, what, and what the operator's message must name.
fn mutation() -> impl Strategy<Value = (&'static str, Value, &'static str)> {
    let above_u32 = (1u64 << 32)..(1u64 << 52);
    prop_oneof![
        above_u32.prop_map(|n| ("/scaling/min", json!(n), "spec.scaling.min")),
        (-1_000_000i64..0).prop_map(|n| ("/scaling/max", json!(n), "spec.scaling.max")),
        "[a-z ]{1,12}".prop_map(|s| ("/scaling/minIdle", json!(s), "spec.scaling.minIdle")),
        Just(("/scaling/max", json!(0), "spec.scaling.max is 0")),
        (101u32..100_000).prop_map(|n| ("/scaling/max", json!(n), "spec.scaling.max")),
        prop_oneof![Just("0s"), Just("500ms"), Just("soon"), Just("-1s")].prop_map(|d| (
            "/scaling/pollInterval",
            json!(d),
            "spec.scaling.pollInterval"
        )),
        "[a-z0-9 ]{1,10}".prop_map(|s| (
            "/scaling/scaleDownDelay",
            json!(format!("x{s}")),
            "spec.scaling.scaleDownDelay"
        )),
        prop_oneof![Just("16x"), Just("3x"), Just(""), Just("1X")].prop_map(|s| (
            "/runner/size",
            json!(s),
            "spec.runner.size"
        )),
        prop_oneof![
            Just(json!(100)),
            Just(json!(65536)),
            Just(json!("huge")),
            Just(json!(-1))
        ]
        .prop_map(|m| ("/dind/mtu", m, "spec.dind.mtu")),
        "[A-Z ]{1,8}[a-z]{0,4}".prop_map(|l| ("/labels", json!([l]), "spec.labels")),
        (9usize..20).prop_map(|n| {
            let labels: Vec<String> = (0..n).map(|i| format!("l{i}")).collect();
            ("/labels", json!(labels), "spec.labels")
        }),
        Just((
            "/dind/extraArgs",
            json!(["-H", "tcp://0.0.0.0:2375"]),
            "dind.extraArgs"
        )),
        prop_oneof![Just(0u64), Just(5000), Just(1u64 << 33)].prop_map(|n| (
            "/runner/diskGiB",
            json!(n),
            "spec.runner.diskGiB"
        )),
        "[a-z]{1,6}".prop_map(|c| (
            "/scaling/schedules",
            json!([{"cron": c, "duration": "1h", "min": 2}]),
            "spec.scaling.schedules[0].cron"
        )),
        Just(("/workspace", json!(""), "spec.workspace")),
        "[a-z]{1,8}".prop_map(|m| ("/mode", json!(format!("x{m}")), "spec.mode")),
    ]
}

fn set(spec: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if spec.pointer(parent).is_none_or(Value::is_null) {
        let (grand, name) = parent.rsplit_once('/').unwrap();
        spec.pointer_mut(grand).unwrap()[name] = json!({});
    }
    spec.pointer_mut(parent).unwrap()[key] = value;
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_hostile_specs_degrade_alone_and_name_their_field() {
    let seed = std::env::var("BBRUNNER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(11);
    let count = std::env::var("BBRUNNER_FUZZ_POOLS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(14);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );

    let world = World::start("fuzz").await;
    // Stored under a CRD that checks nothing of the spec.
    world
        .loosen_crd(|schema| {
            schema["properties"]["spec"] =
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        })
        .await;
    let mut operator = world.operator(&[]);

    let mut bad = Vec::new();
    for i in 0..count {
        let (pointer, value, field) = mutation().new_tree(&mut runner).unwrap().current();
        let mut spec = managed(1, 1);
        set(&mut spec, pointer, value.clone());
        let name = format!("bad-{i}");
        world.pool(&name, spec).await;
        bad.push((name, pointer, value, field));
        if i == count / 2 {
            world.pool("good-a", managed(1, 2)).await;
        }
    }
    world.pool("good-b", managed(1, 2)).await;

    eventually("both good pools have a runner online", 40, || async {
        let runners = world.runners();
        ["good-a", "good-b"].iter().all(|pool| {
            runners.iter().any(|r| {
                r["state"] == "ONLINE" && r["name"].as_str().unwrap().contains(&format!(".{pool}."))
            })
        })
    })
    .await;
    for (name, pointer, value, field) in &bad {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if world
                .has_condition(name, "Degraded", "True", "InvalidSpec", field)
                .await
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} ({pointer} = {value}) is not Degraded/InvalidSpec naming {field:?}: {}",
                world.status(name).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        operator.0.try_wait().unwrap().is_none(),
        "the operator exited"
    );
    let runners = world.runners();
    for (name, ..) in &bad {
        assert!(
            !runners
                .iter()
                .any(|r| r["name"].as_str().unwrap().contains(&format!(".{name}."))),
            "a runner was created for {name}"
        );
    }
}
