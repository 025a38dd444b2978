//! The fake as a separate process, driven over HTTP from outside as curl would: start it,
//! create a runner through the API, run `fake-bitbucket agent` with the runner's environment,
//! submit a step through the control API, and watch it run to completion.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_fake() -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-bitbucket"))
        .args([
            "--time-scale",
            "60",
            "--workspace",
            "acme",
            "--api-token",
            "dev@acme.test:tok",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fake-bitbucket");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(&line).expect("one JSON line when ready");
    let url = ready["listen"].as_str().unwrap().to_owned();
    (Killed(child), url)
}

async fn fetch_json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

async fn create_runner(http: &reqwest::Client, url: &str, workspace_uuid: &str) -> Value {
    http.post(format!(
        "{url}/internal/workspaces/{workspace_uuid}/pipelines-config/runners"
    ))
    .basic_auth("dev@acme.test", Some("tok"))
    .json(&json!({"name": "bbrunner-test", "labels": ["self.hosted", "linux", "build"]}))
    .send()
    .await
    .unwrap()
    .error_for_status()
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// `fake-bitbucket agent` with the runner's environment, as its container would have it.
async fn agent(http: &reqwest::Client, url: &str, runner: &Value, env: &[(&str, &str)]) -> Killed {
    let ws = fetch_json(
        http.get(format!("{url}/2.0/workspaces/acme"))
            .basic_auth("dev@acme.test", Some("tok")),
    )
    .await;
    Killed(
        Command::new(env!("CARGO_BIN_EXE_fake-bitbucket"))
            .args(["agent", "--url", url])
            .env("ACCOUNT_UUID", ws["uuid"].as_str().unwrap())
            .env("RUNNER_UUID", runner["uuid"].as_str().unwrap())
            .env(
                "OAUTH_CLIENT_ID",
                runner["oauth_client"]["id"].as_str().unwrap(),
            )
            .env(
                "OAUTH_CLIENT_SECRET",
                runner["oauth_client"]["secret"].as_str().unwrap(),
            )
            .env("WORKING_DIRECTORY", "/tmp")
            .envs(env.iter().copied())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_for(mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 20 s");
}

#[tokio::test]
async fn a_runner_agent_process_registers_and_runs_a_step() {
    let (_fake, url) = start_fake();
    let http = reqwest::Client::new();
    // The runners API takes the workspace's {uuid}, as Atlassian's client sends it; a slug is
    // refused.
    let workspace: Value = http
        .get(format!("{url}/2.0/workspaces/acme"))
        .basic_auth("dev@acme.test", Some("tok"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = workspace["uuid"]
        .as_str()
        .unwrap()
        .replace('{', "%7B")
        .replace('}', "%7D");
    let by_slug = http
        .get(format!(
            "{url}/internal/workspaces/acme/pipelines-config/runners"
        ))
        .basic_auth("dev@acme.test", Some("tok"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_slug.status(), 404);
    let created = create_runner(&http, &url, &uuid).await;
    assert_eq!(created["state"]["status"], "UNREGISTERED");
    let _agent = agent(&http, &url, &created, &[]).await;
    let runners = format!("{url}/_fake/runners");
    wait_for(async || {
        let all = fetch_json(http.get(&runners)).await;
        all[0]["state"] == "ONLINE"
    })
    .await;

    let step =
        fetch_json(http.post(format!("{url}/_fake/steps")).json(
            &json!({"workspace": "acme", "labels": ["self.hosted", "build"], "duration_s": 60}),
        ))
        .await;
    let id = step["id"].as_str().unwrap().to_owned();
    wait_for(async || {
        let steps = fetch_json(http.get(format!("{url}/_fake/steps"))).await;
        steps[0]["state"] == "completed"
    })
    .await;
    let steps = fetch_json(http.get(format!("{url}/_fake/steps"))).await;
    assert_eq!(steps[0]["id"], id);
    assert_eq!(steps[0]["runner_uuid"], created["uuid"]);
    let ran = steps[0]["finished_at"].as_f64().unwrap() - steps[0]["started_at"].as_f64().unwrap();
    assert!(
        ran >= 59.0,
        "the step ran its duration on the fake's clock: {ran}"
    );

    let requests = fetch_json(http.get(format!("{url}/_fake/requests"))).await;
    assert!(
        requests
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["identity"] == "user:dev@acme.test" && r["status"] == 201)
    );

    // Faults can be changed at run time.
    http.put(format!("{url}/_fake/faults"))
        .json(&json!({"error_rate": 1.0, "status": 503}))
        .send()
        .await
        .unwrap();
    let status = http
        .get(format!("{url}/2.0/workspaces/acme"))
        .basic_auth("dev@acme.test", Some("tok"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503);
}

#[tokio::test]
async fn an_agent_with_a_step_command_reports_its_exit_status_as_the_steps_result() {
    let (_fake, url) = start_fake();
    let http = reqwest::Client::new();
    let workspace = fetch_json(
        http.get(format!("{url}/2.0/workspaces/acme"))
            .basic_auth("dev@acme.test", Some("tok")),
    )
    .await;
    let uuid = workspace["uuid"]
        .as_str()
        .unwrap()
        .replace('{', "%7B")
        .replace('}', "%7D");
    let runner = create_runner(&http, &url, &uuid).await;
    // Removed when dropped, also when the test fails.
    let scratch = tempfile::Builder::new()
        .prefix("fake-bb-step-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let code = dir.join("code");
    std::fs::write(&code, "0").unwrap();
    let command = format!(
        "echo ran >> {0}/log; exit \"$(cat {0}/code)\"",
        dir.display()
    );
    let _agent = agent(&http, &url, &runner, &[("BBRUNNER_STEP_COMMAND", &command)]).await;
    wait_for(async || {
        fetch_json(http.get(format!("{url}/_fake/runners"))).await[0]["state"] == "ONLINE"
    })
    .await;
    let mut results = Vec::new();
    for exit in ["0", "3"] {
        std::fs::write(&code, exit).unwrap();
        let step = fetch_json(http.post(format!("{url}/_fake/steps")).json(
            &json!({"workspace": "acme", "labels": ["self.hosted", "build"], "duration_s": 30}),
        ))
        .await;
        let id = step["id"].clone();
        let mut state = Value::Null;
        wait_for(async || {
            let steps = fetch_json(http.get(format!("{url}/_fake/steps"))).await;
            state = steps
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == id)
                .map(|s| s["state"].clone())
                .unwrap_or_default();
            state == "completed" || state == "failed"
        })
        .await;
        results.push(state);
    }
    let steps = fetch_json(http.get(format!("{url}/_fake/steps"))).await;
    assert_eq!(results, [json!("completed"), json!("failed")], "{steps}");
    assert_eq!(
        std::fs::read_to_string(dir.join("log")).unwrap(),
        "ran\nran\n"
    );
}
