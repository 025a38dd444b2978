use super::*;
use crate::server::{FakeConfig, seed};

fn world() -> World {
    seed(
        &FakeConfig {
            workspaces: vec!["acme".into()],
            repositories: vec![("acme".into(), "app".into())],
            oauth_consumers: vec![("key".into(), "secret".into())],
            ..FakeConfig::default()
        },
        "http://fake",
    )
}

fn ws(w: &World) -> ScopeKey {
    w.scope("acme", None).unwrap()
}

fn create(w: &mut World, labels: &[&str], now: f64) -> (String, String, String) {
    let created = w
        .create_runner(ws(w), &json!({"name": "r", "labels": labels}), now)
        .unwrap();
    (
        created["uuid"].as_str().unwrap().to_owned(),
        created["oauth_client"]["id"].as_str().unwrap().to_owned(),
        created["oauth_client"]["secret"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

fn status(w: &World, uuid: &str, now: f64) -> String {
    w.get_runner(&ws(w), uuid, now).unwrap()["state"]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn step_state(w: &World, id: &str) -> StepState {
    w.steps.iter().find(|s| s.id == id).unwrap().state
}

/// The access token a runner's agent gets for its OAuth client.
fn runner_token(w: &mut World, id: &str, secret: &str) -> String {
    w.issue_runner_token(id, secret).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn step(labels: &[&str], duration_s: f64) -> StepRequest {
    StepRequest {
        workspace: "acme".into(),
        repository: Some("app".into()),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        duration_s,
        size: None,
    }
}

#[test]
fn runner_lifecycle_unregistered_online_busy_idle_disabled_deleted() {
    let mut w = world();
    let (uuid, id, secret) = create(&mut w, &["build"], 0.0);
    assert_eq!(status(&w, &uuid, 1.0), "UNREGISTERED");
    // The secret is only in the create response.
    assert!(w.get_runner(&ws(&w), &uuid, 1.0).unwrap()["oauth_client"]["secret"].is_null());

    let token = runner_token(&mut w, &id, &secret);
    assert!(w.poll(&token, &uuid, "s1", 2.0).unwrap()["step"].is_null());
    assert_eq!(status(&w, &uuid, 2.0), "ONLINE");

    let step_id = w
        .submit_step(&step(&["self.hosted", "build"], 60.0), 3.0)
        .unwrap();
    assert_eq!(step_state(&w, &step_id), StepState::Queued);
    let assigned = w.poll(&token, &uuid, "s1", 4.0).unwrap();
    assert_eq!(assigned["step"]["id"], step_id);
    assert_eq!(step_state(&w, &step_id), StepState::Running);
    let busy = w.get_runner(&ws(&w), &uuid, 5.0).unwrap();
    assert_eq!(busy["state"]["step"]["uuid"], step_id);

    w.complete(&token, &uuid, &step_id, StepState::Completed, 64.0)
        .unwrap();
    assert_eq!(step_state(&w, &step_id), StepState::Completed);
    assert!(w.get_runner(&ws(&w), &uuid, 65.0).unwrap()["state"]["step"].is_null());

    w.set_runner_state(&ws(&w), &uuid, &json!({"status": "DISABLED"}), 66.0)
        .unwrap();
    assert_eq!(status(&w, &uuid, 66.0), "DISABLED");
    // A disabled runner takes no new step.
    let queued = w.submit_step(&step(&["build"], 10.0), 67.0).unwrap();
    assert!(w.poll(&token, &uuid, "s1", 68.0).unwrap()["step"].is_null());
    assert_eq!(step_state(&w, &queued), StepState::Queued);

    w.delete_runner(&ws(&w), &uuid, 69.0).unwrap();
    assert_eq!(w.get_runner(&ws(&w), &uuid, 70.0).unwrap_err().status, 404);
    assert_eq!(w.poll(&token, &uuid, "s1", 71.0).unwrap_err().status, 401);
}

#[test]
fn silence_makes_a_runner_offline_and_interrupts_its_step() {
    let mut w = world();
    let (uuid, id, secret) = create(&mut w, &[], 0.0);
    let token = runner_token(&mut w, &id, &secret);
    w.poll(&token, &uuid, "s", 0.0).unwrap();
    let step_id = w.submit_step(&step(&[], 1000.0), 1.0).unwrap();
    w.poll(&token, &uuid, "s", 2.0).unwrap();
    assert_eq!(status(&w, &uuid, 2.0 + OFFLINE_AFTER_S), "ONLINE");
    assert_eq!(status(&w, &uuid, 2.1 + OFFLINE_AFTER_S), "OFFLINE");
    w.tick(2.1 + OFFLINE_AFTER_S);
    assert_eq!(step_state(&w, &step_id), StepState::Interrupted);
}

#[test]
fn deleting_a_busy_runner_interrupts_its_step_and_a_busy_disabled_runner_finishes() {
    let mut w = world();
    let (uuid, id, secret) = create(&mut w, &[], 0.0);
    let token = runner_token(&mut w, &id, &secret);
    w.poll(&token, &uuid, "s", 0.0).unwrap();
    let first = w.submit_step(&step(&[], 10.0), 0.0).unwrap();
    w.poll(&token, &uuid, "s", 1.0).unwrap();
    w.set_runner_state(&ws(&w), &uuid, &json!({"status": "DISABLED"}), 2.0)
        .unwrap();
    w.complete(&token, &uuid, &first, StepState::Completed, 11.0)
        .unwrap();
    assert_eq!(step_state(&w, &first), StepState::Completed);

    w.set_runner_state(&ws(&w), &uuid, &json!({"status": "ENABLED"}), 12.0)
        .unwrap();
    let second = w.submit_step(&step(&[], 10.0), 12.0).unwrap();
    w.poll(&token, &uuid, "s", 13.0).unwrap();
    w.delete_runner(&ws(&w), &uuid, 14.0).unwrap();
    let s = w.steps.iter().find(|s| s.id == second).unwrap();
    assert_eq!(s.state, StepState::Interrupted);
    assert_eq!(s.failure_reason.as_deref(), Some("its runner was deleted"));
}

#[test]
fn steps_go_fifo_to_runners_with_all_their_labels_and_scope() {
    let mut w = world();
    let (plain, id, secret) = create(&mut w, &[], 0.0);
    let token = runner_token(&mut w, &id, &secret);
    w.poll(&token, &plain, "s", 0.0).unwrap();
    w.no_match = NoMatch::Queue;
    let gpu = w.submit_step(&step(&["gpu"], 5.0), 1.0).unwrap();
    let a = w.submit_step(&step(&[], 5.0), 2.0).unwrap();
    let b = w.submit_step(&step(&[], 5.0), 3.0).unwrap();
    assert_eq!(w.poll(&token, &plain, "s", 4.0).unwrap()["step"]["id"], a);
    w.complete(&token, &plain, &a, StepState::Completed, 9.0)
        .unwrap();
    assert_eq!(w.poll(&token, &plain, "s", 10.0).unwrap()["step"]["id"], b);
    assert_eq!(step_state(&w, &gpu), StepState::Queued);
    w.tick(1.0 + QUEUE_TIMEOUT_S + 1.0);
    assert_eq!(step_state(&w, &gpu), StepState::Failed);
}

#[test]
fn a_step_no_online_runner_could_take_fails_at_once() {
    let mut w = world();
    create(&mut w, &["build"], 0.0); // never connects
    let id = w.submit_step(&step(&["build"], 5.0), 1.0).unwrap();
    let s = w.steps.iter().find(|s| s.id == id).unwrap();
    assert_eq!(s.state, StepState::Failed);
    assert!(
        s.failure_reason
            .as_deref()
            .unwrap()
            .contains("no online runner")
    );
}

#[test]
fn a_new_agent_takes_over_and_an_old_one_still_polling_is_a_duplicate() {
    let mut w = world();
    let (uuid, id, secret) = create(&mut w, &[], 0.0);
    let token = runner_token(&mut w, &id, &secret);
    w.poll(&token, &uuid, "first", 0.0).unwrap();
    let step_id = w.submit_step(&step(&[], 100.0), 0.5).unwrap();
    w.poll(&token, &uuid, "first", 1.0).unwrap();
    // A replacement process takes over at once; the step the old one held is interrupted.
    assert!(w.poll(&token, &uuid, "second", 2.0).is_ok());
    let s = w.steps.iter().find(|s| s.id == step_id).unwrap();
    assert_eq!(s.state, StepState::Interrupted);
    assert_eq!(
        s.failure_reason.as_deref(),
        Some("its runner process restarted")
    );
    assert_eq!(w.runners[0].duplicate_agent_polls, 0);
    // The old process polling again means two agents run one runner.
    assert_eq!(w.poll(&token, &uuid, "first", 3.0).unwrap_err().status, 409);
    assert_eq!(w.runners[0].duplicate_agent_polls, 1);
}

#[test]
fn hundred_runners_per_scope_then_bitbucket_refuses() {
    let mut w = world();
    for _ in 0..MAX_RUNNERS_PER_SCOPE {
        create(&mut w, &[], 0.0);
    }
    let err = w
        .create_runner(ws(&w), &json!({"name": "x", "labels": []}), 0.0)
        .unwrap_err();
    assert_eq!(err.status, 400);
    assert!(
        err.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Maximum number of runners")
    );
    // The repository scope has its own hundred.
    let repo = w.scope("acme", Some("app")).unwrap();
    assert!(w.create_runner(repo, &json!({"name": "x"}), 0.0).is_ok());
}

#[test]
fn invalid_labels_are_rejected_and_system_labels_added() {
    let mut w = world();
    let bad = w
        .create_runner(ws(&w), &json!({"name": "x", "labels": ["Bad"]}), 0.0)
        .unwrap_err();
    assert_eq!(bad.status, 400);
    let ok = w
        .create_runner(ws(&w), &json!({"name": "x", "labels": ["build"]}), 0.0)
        .unwrap();
    assert_eq!(ok["labels"], json!(["self.hosted", "linux", "build"]));
}

#[test]
fn rate_limit_rolls_over_the_hour_with_retry_after() {
    let mut w = world();
    w.rate_limit = 3;
    w.time_scale = 10.0;
    for t in [0.0, 100.0, 200.0] {
        w.spend_rate("id", t).unwrap();
    }
    let err = w.spend_rate("id", 300.0).unwrap_err();
    assert_eq!(err.status, 429);
    // 3300 fake seconds until the first request leaves the window, at scale 10.
    assert_eq!(err.retry_after, Some(330));
    assert!(w.spend_rate("other", 300.0).is_ok());
    assert!(w.spend_rate("id", RATE_WINDOW_S).is_ok());
}

#[test]
fn oauth_tokens_expire_and_wrong_secrets_get_none() {
    let mut w = world();
    assert!(w.issue_oauth_token("key", "wrong", 0.0).is_none());
    let token = w.issue_oauth_token("key", "secret", 0.0).unwrap();
    let token = token["access_token"].as_str().unwrap();
    assert!(
        w.identity_for_bearer(token, TOKEN_LIFETIME_S - 1.0)
            .is_some()
    );
    assert!(w.identity_for_bearer(token, TOKEN_LIFETIME_S).is_none());
}

#[test]
fn timestamps_are_wall_clock_utc_with_microseconds_and_durations_are_the_fake_clock_s() {
    let mut w = world();
    w.epoch = 1_632_958_084.683_21; // 2021-09-29T23:28:04.683210Z
    let (uuid, _, _) = create(&mut w, &["self.hosted", "linux"], 0.0);
    let created = w.get_runner(&ws(&w), &uuid, 0.0).unwrap();
    assert_eq!(created["created_on"], "2021-09-29T23:28:04.683210Z");
    // A fake minute later (however fast the fake runs), the runner comes online.
    let later = w.get_runner(&ws(&w), &uuid, 60.0).unwrap();
    assert_eq!(later["created_on"], created["created_on"]);
    // A fresh world's epoch is now.
    let fresh = world();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((fresh.epoch - now).abs() < 60.0, "{} vs {now}", fresh.epoch);
    assert_eq!(timestamp(0.5), "1970-01-01T00:00:00.500000Z");
    assert_eq!(timestamp(90.0), "1970-01-01T00:01:30.000000Z");
}

fn pipeline_request(stages: &[&[(&str, f64)]]) -> PipelineRequest {
    PipelineRequest {
        workspace: "acme".into(),
        repository: "app".into(),
        branch: "main".into(),
        pipeline: stages
            .iter()
            .map(|stage| {
                stage
                    .iter()
                    .map(|(name, duration)| PipelineStepRequest {
                        name: (*name).into(),
                        duration: *duration,
                        labels: vec!["self.hosted".into(), "build".into()],
                        size: None,
                    })
                    .collect()
            })
            .collect(),
        definition: None,
    }
}

/// Run every queued step this runner can take, completing each `took` seconds later.
fn run_all(w: &mut World, token: &str, uuid: &str, mut now: f64) -> f64 {
    loop {
        let assigned = w.poll(token, uuid, "s1", now).unwrap();
        let Some(id) = assigned["step"]["id"].as_str().map(str::to_owned) else {
            return now;
        };
        now += 10.0;
        w.complete(token, uuid, &id, StepState::Completed, now)
            .unwrap();
    }
}

#[test]
fn a_pipeline_runs_its_stages_in_order_and_says_so_in_webhooks() {
    let mut w = world();
    let (uuid, id, secret) = create(&mut w, &["build"], 0.0);
    let token = runner_token(&mut w, &id, &secret);
    w.poll(&token, &uuid, "s1", 1.0).unwrap();
    let created = w
        .create_pipeline(
            &pipeline_request(&[
                &[("build", 10.0)],
                &[("a", 10.0), ("b", 10.0)],
                &[("deploy", 5.0)],
            ]),
            2.0,
        )
        .unwrap();
    let commit = created["commit"].as_str().unwrap();
    // Only the first stage is queued.
    assert_eq!(w.steps.len(), 1);
    let keys: Vec<String> = w.take_webhooks().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["repo:push", "repo:commit_status_created"]);
    // Its definition is served at the commit, and says what the operator needs.
    let scope = w.scope("acme", Some("app")).unwrap();
    let text = w
        .source_file(&scope, commit, "bitbucket-pipelines.yml")
        .unwrap();
    let stages = bbrunner_core::lookahead::resolve(
        text,
        &bbrunner_core::lookahead::Trigger::Branch("main".into()),
    )
    .unwrap()
    .unwrap();
    let names: Vec<Vec<&str>> = stages
        .iter()
        .map(|s| s.iter().map(|p| p.name.as_str()).collect())
        .collect();
    assert_eq!(names, [vec!["build"], vec!["a", "b"], vec!["deploy"]]);
    assert_eq!(stages[1][0].labels, ["self.hosted", "build"]);
    assert!(w.source_file(&scope, commit, "README.md").is_none());

    let end = run_all(&mut w, &token, &uuid, 3.0);
    assert_eq!(w.steps.len(), 4);
    let record = &w.pipelines[0];
    assert_eq!(record.state, PipelineState::Successful);
    assert_eq!(record.completed_at, Some(end));
    // Each stage queued when the one before ended.
    let queued: Vec<(String, f64)> = w
        .steps
        .iter()
        .map(|s| (s.name.clone().unwrap(), s.queued_at))
        .collect();
    assert_eq!(queued[1].1, 13.0, "{queued:?}");
    assert_eq!(queued[3].1, 33.0, "{queued:?}");
    let done = w.take_webhooks();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].key, "repo:commit_status_updated");
    assert_eq!(done[0].body["commit_status"]["state"], "SUCCESSFUL");
    assert_eq!(done[0].body["commit_status"]["commit"]["hash"], commit);
}

#[test]
fn a_failed_step_ends_its_pipeline_and_skips_the_rest() {
    let mut w = world();
    let (uuid, id, secret) = create(&mut w, &["build"], 0.0);
    let token = runner_token(&mut w, &id, &secret);
    w.poll(&token, &uuid, "s1", 1.0).unwrap();
    w.create_pipeline(
        &pipeline_request(&[&[("build", 10.0)], &[("test", 10.0)]]),
        2.0,
    )
    .unwrap();
    w.take_webhooks();
    // The runner is deleted mid-build: the build is interrupted, the test never queued.
    w.poll(&token, &uuid, "s1", 3.0).unwrap();
    w.delete_runner(&ws(&w), &uuid, 4.0).unwrap();
    assert_eq!(w.steps.len(), 1);
    assert_eq!(w.pipelines[0].state, PipelineState::Failed);
    let done = w.take_webhooks();
    assert_eq!(done[0].body["commit_status"]["state"], "FAILED");

    // Bad requests are refused with the field named.
    let mut empty = pipeline_request(&[&[("x", 1.0)]]);
    empty.pipeline[0].clear();
    assert_eq!(w.create_pipeline(&empty, 5.0).unwrap_err().status, 400);
    let mut negative = pipeline_request(&[&[("x", 1.0)]]);
    negative.pipeline[0][0].duration = -1.0;
    let err = w.create_pipeline(&negative, 5.0).unwrap_err();
    let message = err.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("step \"x\" needs a duration"), "{message}");
}
