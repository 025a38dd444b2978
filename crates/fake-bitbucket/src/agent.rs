//! A runner agent: what the real runner container does, reduced to what Bitbucket sees.
//! Configured from the same environment variables as the runner image; authenticates with
//! its runner's OAuth client, polls for work every 30 s (scaled by the fake), runs assigned
//! steps by sleeping their duration, and reports them done. In a real container beside dind,
//! `BBRUNNER_STEP_COMMAND` makes it also run each step's work as a shell command (the real
//! runner runs the step's script in a container through dind), and report the step failed
//! when the command fails.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentConfigError {
    #[error("{0} is not set; the runner needs it (copy it from the UI command)")]
    Missing(&'static str),
}

/// The runner's configuration, as its container environment carries it.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of fake-bitbucket.
    pub url: String,
    pub account_uuid: String,
    pub repository_uuid: Option<String>,
    pub runner_uuid: String,
    pub oauth_client_id: String,
    pub oauth_client_secret: SecretString,
    pub working_directory: String,
    /// A shell command run for every step (`BBRUNNER_STEP_COMMAND`); its exit status is the
    /// step's result.
    pub step_command: Option<String>,
}

impl AgentConfig {
    /// Read the runner's variables (ACCOUNT_UUID, RUNNER_UUID, REPOSITORY_UUID,
    /// OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, WORKING_DIRECTORY) from `env`.
    pub fn from_env(url: &str, env: &HashMap<String, String>) -> Result<Self, AgentConfigError> {
        let get = |name: &'static str| {
            env.get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or(AgentConfigError::Missing(name))
        };
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            account_uuid: get("ACCOUNT_UUID")?,
            repository_uuid: get("REPOSITORY_UUID").ok(),
            runner_uuid: get("RUNNER_UUID")?,
            oauth_client_id: get("OAUTH_CLIENT_ID")?,
            oauth_client_secret: SecretString::from(get("OAUTH_CLIENT_SECRET")?),
            working_directory: get("WORKING_DIRECTORY").unwrap_or_else(|_| "/tmp".into()),
            step_command: get("BBRUNNER_STEP_COMMAND").ok(),
        })
    }
}

/// A running agent; dropping the handle stops it (like killing the container).
pub struct RunnerAgent {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

#[derive(Deserialize)]
struct Assigned {
    id: String,
    duration_ms: u64,
}

#[derive(Deserialize)]
struct PollAnswer {
    step: Option<Assigned>,
    poll_interval_ms: u64,
}

impl RunnerAgent {
    pub fn spawn(config: AgentConfig) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(config, stopped));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stop at once; a step in progress is abandoned, as when a pod dies.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunnerAgent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn sleep_or_stop(duration: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stopped.wait_for(|s| *s) => true,
    }
}

async fn run(config: AgentConfig, mut stopped: watch::Receiver<bool>) {
    let http = reqwest::Client::new();
    let session = uuid::Uuid::new_v4().to_string();
    let retry = Duration::from_millis(500);
    let mut token: Option<String> = None;
    loop {
        if *stopped.borrow() {
            return;
        }
        let Some(current) = token.clone() else {
            let answer = http
                .post(format!("{}/oauth/token", config.url))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", config.oauth_client_id.as_str()),
                    ("client_secret", config.oauth_client_secret.expose_secret()),
                ])
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    token = r.json::<Token>().await.ok().map(|t| t.access_token);
                }
                // The real runner exits and its container restarts; we wait and try again.
                _ => {
                    if sleep_or_stop(retry * 4, &mut stopped).await {
                        return;
                    }
                }
            }
            continue;
        };
        let poll_url = format!(
            "{}/_runner/v1/runners/{}/poll",
            config.url, config.runner_uuid
        );
        let answer = http
            .post(&poll_url)
            .bearer_auth(&current)
            .json(&json!({"session": session}))
            .send()
            .await;
        let answer = match answer {
            Ok(r) if r.status().is_success() => r.json::<PollAnswer>().await.ok(),
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                token = None;
                None
            }
            _ => None,
        };
        let Some(answer) = answer else {
            if sleep_or_stop(retry, &mut stopped).await {
                return;
            }
            continue;
        };
        let interval = Duration::from_millis(answer.poll_interval_ms);
        let Some(step) = answer.step else {
            if sleep_or_stop(interval, &mut stopped).await {
                return;
            }
            continue;
        };
        // Run the step, still heartbeating every poll interval, as the real runner keeps its
        // session while a step's script runs.
        let heartbeat = || {
            http.post(&poll_url)
                .bearer_auth(&current)
                .json(&json!({"session": session}))
                .send()
        };
        let mut left = Duration::from_millis(step.duration_ms);
        while !left.is_zero() {
            let slice = left.min(interval);
            if sleep_or_stop(slice, &mut stopped).await {
                return;
            }
            left -= slice;
            if !left.is_zero() {
                let _ = heartbeat().await;
            }
        }
        let result = match &config.step_command {
            Some(command) => {
                let work = run_step_command(command, &config.working_directory);
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        result = &mut work => break result,
                        stop = sleep_or_stop(interval, &mut stopped) => {
                            if stop {
                                return;
                            }
                            let _ = heartbeat().await;
                        }
                    }
                }
            }
            None => "SUCCESSFUL",
        };
        let _ = http
            .post(format!(
                "{}/_runner/v1/runners/{}/steps/{}/complete",
                config.url, config.runner_uuid, step.id
            ))
            .bearer_auth(&current)
            .json(&json!({"result": result}))
            .send()
            .await;
    }
}

/// The step's work as a shell command: its output goes to the agent's, as a step's log would,
/// and its exit status says whether the step succeeded.
async fn run_step_command(command: &str, working_directory: &str) -> &'static str {
    let status = tokio::process::Command::new("/bin/sh")
        .args(["-c", command])
        .current_dir(working_directory)
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(status) if status.success() => "SUCCESSFUL",
        Ok(status) => {
            tracing::warn!(%status, "the step's command failed");
            "FAILED"
        }
        Err(error) => {
            tracing::warn!(%error, "the step's command did not start");
            "FAILED"
        }
    }
}
