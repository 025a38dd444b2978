//! Webhooks and the lookahead in a running operator: fake-bitbucket pushes pipelines (a build,
//! then four tests) and delivers signed webhooks to the operator, which reads each pushed
//! commit's bitbucket-pipelines.yml, learns the steps' durations once a pipeline ends, and
//! readies the test stage's runners while the build still runs. With the webhooks cut, the
//! pool still serves every step by polling.

use std::path::Path;
use std::time::{Duration, Instant};

use fake_bitbucket::world::{PipelineState, StepState};
use fake_bitbucket::{PipelineRequest, PipelineStepRequest, WebhookFaults, WebhookTarget};

use super::*;

const SECRET: &str = "the-webhook-secret";

/// A build of `build_s` simulated seconds, then four tests of a minute.
fn build_then_tests(build_s: f64) -> PipelineRequest {
    let step = |name: &str, duration: f64| PipelineStepRequest {
        name: name.into(),
        duration,
        labels: vec!["self.hosted".into(), "build".into()],
        size: None,
    };
    PipelineRequest {
        workspace: "acme".into(),
        repository: "app".into(),
        branch: "main".into(),
        pipeline: vec![
            vec![step("build", build_s)],
            (0..4).map(|i| step(&format!("test-{i}"), 60.0)).collect(),
        ],
        definition: None,
    }
}

fn pipeline_state(world: &World, build_number: u64) -> PipelineState {
    world.bitbucket.with_world(|w, _| {
        w.pipelines
            .iter()
            .find(|p| p.build_number == build_number)
            .map(|p| p.state)
            .expect("the pipeline")
    })
}

/// Whether the test stage of pipeline `uuid` has queued.
fn tests_queued(world: &World, uuid: &str) -> bool {
    world.bitbucket.with_world(|w, _| {
        w.steps
            .iter()
            .any(|s| s.pipeline_uuid == uuid && s.stage == Some(1))
    })
}

fn idle_online(world: &World) -> usize {
    world
        .runners()
        .iter()
        .filter(|r| r["state"] == "ONLINE" && r["step"].is_null())
        .count()
}

/// The operator log's last 40 lines, newest first, for a failure's message.
fn newest_lines(log: &Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let newest: Vec<&str> = log.lines().rev().take(40).collect();
    newest.join("\n")
}

async fn until(world: &World, log: &Path, what: &str, seconds: u64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        if Instant::now() > deadline {
            let deliveries = world.bitbucket.with_world(|w, _| w.deliveries.len());
            panic!(
                "{what}: not within {seconds} s ({deliveries} webhook deliveries)\noperator log, newest first:\n{}",
                newest_lines(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_ready_the_test_stage_before_it_queues_and_polling_covers_their_loss() {
    let world = World::start("lookahead").await;
    let log = world.dir.join("operator.log");
    let secret_file = world.dir.join("webhook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let webhook_addr = free_local_addr();
    let origin = world.bitbucket.with_world(|w, _| w.epoch).to_string();
    let _operator = world.operator_logging(
        &[
            "--time-scale",
            "30",
            "--clock-origin",
            &origin,
            "--webhook-addr",
            &webhook_addr,
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
        ],
        "info,bbrunner=debug",
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    world.bitbucket.with_world(|w, _| {
        w.webhook = WebhookTarget {
            url: Some(format!("http://{webhook_addr}/webhooks/bitbucket")),
            secret: Some(SECRET.into()),
            faults: WebhookFaults::default(),
        }
    });
    // One warm runner: without the lookahead, three of the four tests would wait for a start.
    let mut spec = managed(1, 8);
    spec["scaling"]["pollInterval"] = "15s".into();
    spec["scaling"]["scaleDownDelay"] = "90s".into();
    world.pool("builds", spec).await;
    until(&world, &log, "a runner online", 30, || {
        idle_online(&world) >= 1
    })
    .await;

    // The first pipeline teaches the build's duration.
    let first = world
        .bitbucket
        .create_pipeline(&build_then_tests(300.0))
        .unwrap();
    let first_number = first["build_number"].as_u64().unwrap();
    until(&world, &log, "the first pipeline ends", 90, || {
        pipeline_state(&world, first_number) != PipelineState::InProgress
    })
    .await;
    assert_eq!(
        pipeline_state(&world, first_number),
        PipelineState::Successful
    );
    // Back to the one warm runner before the second push.
    until(&world, &log, "the pool back to its floor", 60, || {
        world.runners().len() <= 2
    })
    .await;

    let second = world
        .bitbucket
        .create_pipeline(&build_then_tests(300.0))
        .unwrap();
    let uuid = second["uuid"].as_str().unwrap().to_owned();
    let mut most_ready = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tests_queued(&world, &uuid) {
        assert!(Instant::now() < deadline, "the build did not end");
        most_ready = most_ready.max(idle_online(&world));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most_ready >= 3,
        "only {most_ready} idle runners were ready as the four tests queued (one frees up from the build)\noperator log, newest first:\n{}",
        newest_lines(&log)
    );
    let accepted = world.bitbucket.with_world(|w, _| {
        w.deliveries
            .iter()
            .filter(|d| d.status == Some(202))
            .count()
    });
    assert!(accepted >= 4, "{accepted} deliveries accepted");
    until(&world, &log, "the second pipeline ends", 90, || {
        pipeline_state(&world, second["build_number"].as_u64().unwrap())
            != PipelineState::InProgress
    })
    .await;

    // Webhooks cut: every delivery dropped. Polling alone serves the pipeline.
    world.bitbucket.with_world(|w, _| {
        w.webhook.faults = WebhookFaults {
            drop_rate: 1.0,
            ..WebhookFaults::default()
        }
    });
    let third = world
        .bitbucket
        .create_pipeline(&build_then_tests(60.0))
        .unwrap();
    let third_number = third["build_number"].as_u64().unwrap();
    until(
        &world,
        &log,
        "the third pipeline ends by polling",
        120,
        || pipeline_state(&world, third_number) != PipelineState::InProgress,
    )
    .await;
    assert_eq!(
        pipeline_state(&world, third_number),
        PipelineState::Successful
    );
    let dropped = world
        .bitbucket
        .with_world(|w, _| w.deliveries.iter().filter(|d| d.dropped).count());
    assert!(dropped >= 2, "{dropped} deliveries dropped");
    assert_eq!(world.steps(StepState::Failed), 0);
    assert_eq!(world.steps(StepState::Interrupted), 0);
}
