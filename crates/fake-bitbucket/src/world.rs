//! The fake's state and rules, synchronous and driven by an explicit clock reading `now`
//! (seconds on the fake's clock), so that the HTTP layer stays thin and the rules testable.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Durations on the fake's clock, as Bitbucket has them.
pub const OFFLINE_AFTER_S: f64 = 90.0;
pub const QUEUE_TIMEOUT_S: f64 = 2.5 * 3600.0;
pub const TOKEN_LIFETIME_S: f64 = 7200.0;
pub const RATE_WINDOW_S: f64 = 3600.0;
pub const RUNNER_POLL_S: f64 = 30.0;
pub const MAX_RUNNERS_PER_SCOPE: usize = 100;

pub const ALL_SCOPES: [&str; 3] = ["runner:write", "repository:read", "account:read"];

/// What happens to a step no connected runner could ever take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NoMatch {
    /// Fail it at once (Bitbucket's behaviour).
    #[default]
    Fail,
    /// Keep it queued (until the 2.5 h queue timeout).
    Queue,
}

/// Fault injection on the API and auth endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of requests answered with `status` instead of being served.
    pub error_rate: f64,
    /// Status of injected errors (default 500).
    pub status: Option<u16>,
    /// Added latency, in real milliseconds.
    pub latency_ms: u64,
    /// Share of requests handled and then cut before the response body arrives.
    pub reset_rate: f64,
    /// `Retry-After` (real seconds) on injected errors: a 429 storm as Bitbucket sends it.
    pub retry_after_s: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub slug: String,
    pub uuid: String,
}

#[derive(Debug, Clone)]
pub struct Repository {
    pub workspace_uuid: String,
    pub slug: String,
    pub uuid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeKey {
    pub workspace_uuid: String,
    pub repository_uuid: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub secret: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RunnerRecord {
    pub uuid: String,
    pub name: String,
    pub labels: Vec<String>,
    pub scope: ScopeKey,
    pub created_at: f64,
    pub updated_at: f64,
    pub enabled: bool,
    pub last_heartbeat: Option<f64>,
    pub step: Option<String>,
    pub oauth_client_id: String,
    pub oauth_client_secret: String,
    /// The agent session that holds this runner, and when it was last heard.
    pub session: Option<(String, f64)>,
    /// Sessions a newer one took over from: a poll from one of them means two agents run.
    pub displaced: Vec<String>,
    /// Polls refused because another agent held the runner.
    pub duplicate_agent_polls: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Queued,
    Running,
    Completed,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub id: String,
    pub pipeline_uuid: String,
    pub workspace: String,
    pub repository: Option<String>,
    #[serde(skip)]
    pub scope: ScopeKey,
    pub labels: Vec<String>,
    pub size: String,
    pub duration_s: f64,
    pub state: StepState,
    pub queued_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub runner_uuid: Option<String>,
    pub failure_reason: Option<String>,
    /// Its name and stage, for a step of a pipeline made with `POST /_fake/pipelines`.
    pub name: Option<String>,
    pub stage: Option<usize>,
}

impl StepRecord {
    /// A step queued at `now`, in a pipeline of its own (as `POST /_fake/steps` makes them).
    pub fn queued(
        scope: ScopeKey,
        workspace: &str,
        repository: Option<&str>,
        labels: &[String],
        size: Option<&str>,
        duration_s: f64,
        now: f64,
    ) -> Self {
        let labels = if labels.is_empty() {
            vec!["self.hosted".into(), "linux".into()]
        } else {
            labels.to_vec()
        };
        Self {
            id: new_uuid(),
            pipeline_uuid: new_uuid(),
            workspace: workspace.to_owned(),
            repository: repository.map(str::to_owned),
            scope,
            labels,
            size: size.unwrap_or("1x").to_owned(),
            duration_s: duration_s.max(0.0),
            state: StepState::Queued,
            queued_at: now,
            started_at: None,
            finished_at: None,
            runner_uuid: None,
            failure_reason: None,
            name: None,
            stage: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub at: f64,
    pub method: String,
    pub path: String,
    pub identity: Option<String>,
    pub status: u16,
}

/// An API error as Bitbucket shapes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
    /// Seconds (real) for `Retry-After`, on 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"type": "error", "error": {"message": message.into()}}),
            retry_after: None,
        }
    }

    fn forbidden(required: &str, granted: &[String]) -> Self {
        Self {
            status: 403,
            body: json!({"type": "error", "error": {
                "message": "Your credentials lack one or more required privilege scopes.",
                "detail": {"required": [required], "granted": granted},
            }}),
            retry_after: None,
        }
    }
}

pub struct World {
    pub base_url: String,
    pub time_scale: f64,
    /// Wall-clock Unix seconds when the fake clock read 0: timestamps are this plus the fake
    /// clock, so the time scale stretches durations and the epoch stays the real one.
    pub epoch: f64,
    pub workspaces: Vec<Workspace>,
    pub repositories: Vec<Repository>,
    /// OAuth consumers by key.
    pub consumers: HashMap<String, Identity>,
    /// Basic-auth identities (API tokens by e-mail) by user name.
    pub basic: HashMap<String, Identity>,
    /// Issued and configured bearer tokens: token → (identity, expiry on the fake clock).
    pub bearer: HashMap<String, (Identity, f64)>,
    /// Tokens issued to runner agents: token → runner uuid.
    pub runner_tokens: HashMap<String, String>,
    pub runners: Vec<RunnerRecord>,
    pub steps: Vec<StepRecord>,
    pub requests: Vec<RequestRecord>,
    pub faults: Faults,
    pub rate_limit: u32,
    pub rate: HashMap<String, VecDeque<f64>>,
    pub no_match: NoMatch,
    /// Pipelines made with `POST /_fake/pipelines`, by build number.
    pub pipelines: Vec<PipelineRecord>,
    /// Webhooks made and not yet handed to the deliverer.
    pub outbox: Vec<WebhookEvent>,
    /// Where webhooks go, and what became of each delivery.
    pub webhook: WebhookTarget,
    pub deliveries: Vec<DeliveryRecord>,
}

pub fn new_uuid() -> String {
    format!("{{{}}}", uuid::Uuid::new_v4())
}

fn random_token(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

/// A runner's status at `now`, as the API reports it.
pub fn runner_status(r: &RunnerRecord, now: f64) -> &'static str {
    if !r.enabled {
        "DISABLED"
    } else if let Some(hb) = r.last_heartbeat {
        if now - hb <= OFFLINE_AFTER_S {
            "ONLINE"
        } else {
            "OFFLINE"
        }
    } else {
        "UNREGISTERED"
    }
}

fn connected(r: &RunnerRecord, now: f64) -> bool {
    r.last_heartbeat
        .is_some_and(|hb| now - hb <= OFFLINE_AFTER_S)
}

fn serves(runner: &RunnerRecord, step: &StepRecord) -> bool {
    runner.scope.workspace_uuid == step.scope.workspace_uuid
        && (runner.scope.repository_uuid.is_none()
            || runner.scope.repository_uuid == step.scope.repository_uuid)
        && step.labels.iter().all(|l| runner.labels.contains(l))
}

impl World {
    // ---- identities and auth -------------------------------------------------------------

    pub fn issue_oauth_token(&mut self, key: &str, secret: &str, now: f64) -> Option<Value> {
        let identity = self
            .consumers
            .get(key)
            .filter(|i| i.secret == secret)?
            .clone();
        let token = random_token(40);
        let scopes = identity.scopes.join(" ");
        self.bearer
            .insert(token.clone(), (identity, now + TOKEN_LIFETIME_S));
        Some(json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": (TOKEN_LIFETIME_S / self.time_scale).ceil() as u64,
            "scopes": scopes,
            "state": "client_credentials",
        }))
    }

    pub fn identity_for_bearer(&self, token: &str, now: f64) -> Option<Identity> {
        self.bearer
            .get(token)
            .filter(|(_, expiry)| now < *expiry)
            .map(|(i, _)| i.clone())
    }

    pub fn identity_for_basic(&self, user: &str, password: &str) -> Option<Identity> {
        self.basic
            .get(user)
            .filter(|i| i.secret == password)
            .cloned()
    }

    pub fn require_scope(identity: &Identity, scope: &str) -> Result<(), ApiError> {
        if identity.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope, &identity.scopes))
        }
    }

    /// Count one request against the identity's rolling hour.
    pub fn spend_rate(&mut self, identity: &str, now: f64) -> Result<(), ApiError> {
        let window = self.rate.entry(identity.to_owned()).or_default();
        while window.front().is_some_and(|t| now - t >= RATE_WINDOW_S) {
            window.pop_front();
        }
        if window.len() >= self.rate_limit as usize {
            let oldest = *window.front().expect("non-empty when at the limit");
            let wait_fake = RATE_WINDOW_S - (now - oldest);
            let mut err = ApiError::new(429, "Rate limit for this resource has been exceeded");
            err.retry_after = Some(((wait_fake / self.time_scale).ceil() as u64).max(1));
            return Err(err);
        }
        window.push_back(now);
        Ok(())
    }

    // ---- lookups -------------------------------------------------------------------------

    pub fn workspace(&self, slug_or_uuid: &str) -> Option<&Workspace> {
        self.workspaces
            .iter()
            .find(|w| w.slug == slug_or_uuid || w.uuid.eq_ignore_ascii_case(slug_or_uuid))
    }

    pub fn repository(&self, workspace: &str, slug_or_uuid: &str) -> Option<&Repository> {
        let ws = self.workspace(workspace)?;
        self.repositories.iter().find(|r| {
            r.workspace_uuid == ws.uuid
                && (r.slug == slug_or_uuid || r.uuid.eq_ignore_ascii_case(slug_or_uuid))
        })
    }

    pub fn scope(&self, workspace: &str, repository: Option<&str>) -> Result<ScopeKey, ApiError> {
        let ws = self
            .workspace(workspace)
            .ok_or_else(|| ApiError::new(404, format!("Workspace {workspace} not found")))?;
        let repository_uuid = match repository {
            None => None,
            Some(repo) => Some(
                self.repository(workspace, repo)
                    .ok_or_else(|| ApiError::new(404, format!("Repository {repo} not found")))?
                    .uuid
                    .clone(),
            ),
        };
        Ok(ScopeKey {
            workspace_uuid: ws.uuid.clone(),
            repository_uuid,
        })
    }

    /// The scope of an internal runners path. Only the form a working client is known to use
    /// is accepted: `{uuid}`s (Atlassian's autoscaler resolves slugs first). Whether
    /// Bitbucket takes slugs there too is unknown, so a client relying on it fails here.
    pub fn runner_scope(
        &self,
        workspace: &str,
        repository: Option<&str>,
    ) -> Result<ScopeKey, ApiError> {
        let braced = |s: &str| s.starts_with('{') && s.ends_with('}');
        if let Some(slug) = std::iter::once(workspace)
            .chain(repository)
            .find(|s| !braced(s))
        {
            return Err(ApiError::new(
                404,
                format!(
                    "{slug} is not a {{uuid}}: the runners API is addressed by workspace and repository UUIDs"
                ),
            ));
        }
        self.scope(workspace, repository)
    }

    // ---- runners API ---------------------------------------------------------------------

    pub fn runner_json(&self, r: &RunnerRecord, now: f64, with_secret: bool) -> Value {
        let mut state = json!({
            "status": runner_status(r, now),
            "updated_on": self.timestamp(r.updated_at),
            "cordoned": false,
        });
        if r.last_heartbeat.is_some() {
            state["version"] = json!({"current": "5.6.0"});
        }
        if let Some(step) = &r.step {
            state["step"] = json!({"type": "PIPELINE_STEP", "uuid": step});
        }
        let mut oauth = json!({
            "id": r.oauth_client_id,
            "token_endpoint": format!("{}/oauth/token", self.base_url),
            "audience": "api.atlassian.com",
        });
        if with_secret {
            oauth["secret"] = json!(r.oauth_client_secret);
        }
        json!({
            "uuid": r.uuid,
            "name": r.name,
            "labels": r.labels,
            "state": state,
            "created_on": self.timestamp(r.created_at),
            "updated_on": self.timestamp(r.updated_at),
            "oauth_client": oauth,
        })
    }

    /// A reading of the fake clock as Bitbucket writes times: UTC with microseconds,
    /// `2021-09-29T23:28:04.683210Z`.
    pub fn timestamp(&self, at: f64) -> String {
        timestamp(self.epoch + at.max(0.0))
    }

    pub fn runners_of(&self, scope: &ScopeKey) -> impl Iterator<Item = &RunnerRecord> {
        self.runners.iter().filter(move |r| &r.scope == scope)
    }

    pub fn create_runner(
        &mut self,
        scope: ScopeKey,
        body: &Value,
        now: f64,
    ) -> Result<Value, ApiError> {
        let name = body["name"]
            .as_str()
            .filter(|n| !n.trim().is_empty() && n.len() <= 255)
            .ok_or_else(|| {
                ApiError::new(400, "name: a runner needs a name of 1 to 255 characters")
            })?
            .to_owned();
        let given: Vec<String> = match &body["labels"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ApiError::new(400, "labels: every label is a string"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(ApiError::new(400, "labels: expected a list of strings")),
        };
        let labels = bbrunner_core::labels::Labels::new(&given)
            .map_err(|e| ApiError::new(400, format!("labels: {e}")))?;
        if self.runners_of(&scope).count() >= MAX_RUNNERS_PER_SCOPE {
            let what = if scope.repository_uuid.is_some() {
                "a repository"
            } else {
                "a workspace"
            };
            return Err(ApiError::new(
                400,
                format!(
                    "Maximum number of runners reached: {what} can have at most {MAX_RUNNERS_PER_SCOPE} runners."
                ),
            ));
        }
        let record = RunnerRecord {
            uuid: new_uuid(),
            name,
            labels: labels.as_slice().to_vec(),
            scope,
            created_at: now,
            updated_at: now,
            enabled: true,
            last_heartbeat: None,
            step: None,
            oauth_client_id: random_token(32),
            oauth_client_secret: format!("ATOA{}", random_token(60)),
            session: None,
            displaced: Vec::new(),
            duplicate_agent_polls: 0,
        };
        let json = self.runner_json(&record, now, true);
        self.runners.push(record);
        Ok(json)
    }

    fn runner_index(&self, scope: &ScopeKey, uuid: &str) -> Result<usize, ApiError> {
        self.runners
            .iter()
            .position(|r| &r.scope == scope && r.uuid.eq_ignore_ascii_case(uuid))
            .ok_or_else(|| ApiError::new(404, format!("Runner {uuid} not found")))
    }

    pub fn get_runner(&self, scope: &ScopeKey, uuid: &str, now: f64) -> Result<Value, ApiError> {
        let i = self.runner_index(scope, uuid)?;
        Ok(self.runner_json(&self.runners[i], now, false))
    }

    pub fn set_runner_state(
        &mut self,
        scope: &ScopeKey,
        uuid: &str,
        body: &Value,
        now: f64,
    ) -> Result<Value, ApiError> {
        let i = self.runner_index(scope, uuid)?;
        let enabled = match body["status"].as_str() {
            Some("ENABLED") => true,
            Some("DISABLED") => false,
            _ => {
                return Err(ApiError::new(
                    400,
                    "status: expected \"ENABLED\" or \"DISABLED\"",
                ));
            }
        };
        let r = &mut self.runners[i];
        r.enabled = enabled;
        r.updated_at = now;
        Ok(self.runner_json(&self.runners[i], now, false))
    }

    /// Delete a runner; a step it was running is interrupted.
    pub fn delete_runner(
        &mut self,
        scope: &ScopeKey,
        uuid: &str,
        now: f64,
    ) -> Result<(), ApiError> {
        let i = self.runner_index(scope, uuid)?;
        let runner = self.runners.remove(i);
        self.runner_tokens.retain(|_, r| *r != runner.uuid);
        if let Some(step) = runner.step {
            self.finish_step(
                &step,
                StepState::Interrupted,
                Some("its runner was deleted"),
                now,
            );
        }
        Ok(())
    }

    // ---- steps ---------------------------------------------------------------------------

    pub fn submit_step(&mut self, request: &StepRequest, now: f64) -> Result<String, ApiError> {
        let scope = self.scope(&request.workspace, request.repository.as_deref())?;
        let step = StepRecord::queued(
            scope,
            &request.workspace,
            request.repository.as_deref(),
            &request.labels,
            request.size.as_deref(),
            request.duration_s,
            now,
        );
        Ok(self.queue(step, now))
    }

    /// Queue `step`; Bitbucket fails at once a step no connected runner could take.
    fn queue(&mut self, mut step: StepRecord, now: f64) -> String {
        if self.no_match == NoMatch::Fail
            && !self
                .runners
                .iter()
                .any(|r| connected(r, now) && serves(r, &step))
        {
            step.state = StepState::Failed;
            step.finished_at = Some(now);
            step.failure_reason = Some("no online runner has all of the step's labels".into());
        }
        let id = step.id.clone();
        self.steps.push(step);
        id
    }

    fn finish_step(&mut self, id: &str, state: StepState, reason: Option<&str>, now: f64) {
        let mut pipeline = None;
        if let Some(step) = self.steps.iter_mut().find(|s| s.id == id) {
            step.state = state;
            step.finished_at = Some(now);
            step.failure_reason = reason.map(str::to_owned);
            pipeline = Some(step.pipeline_uuid.clone());
        }
        for r in self
            .runners
            .iter_mut()
            .filter(|r| r.step.as_deref() == Some(id))
        {
            r.step = None;
            r.updated_at = now;
        }
        if let Some(pipeline) = pipeline {
            self.advance_pipeline(&pipeline, now);
        }
    }

    /// Time-driven rules: queue timeout; a runner silent past the offline threshold loses
    /// its step.
    pub fn tick(&mut self, now: f64) {
        let expired: Vec<String> = self
            .steps
            .iter()
            .filter(|s| s.state == StepState::Queued && now - s.queued_at > QUEUE_TIMEOUT_S)
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.finish_step(
                &id,
                StepState::Failed,
                Some("queued for more than 2.5 hours"),
                now,
            );
        }
        let lost: Vec<String> = self
            .runners
            .iter()
            .filter(|r| !connected(r, now))
            .filter_map(|r| r.step.clone())
            .collect();
        for id in lost {
            self.finish_step(
                &id,
                StepState::Interrupted,
                Some("its runner went offline"),
                now,
            );
        }
    }

    // ---- control views -------------------------------------------------------------------

    pub fn runners_view(&self, now: f64) -> Value {
        let runners: Vec<Value> = self
            .runners
            .iter()
            .map(|r| {
                json!({
                    "uuid": r.uuid,
                    "name": r.name,
                    "labels": r.labels,
                    "workspace_uuid": r.scope.workspace_uuid,
                    "repository_uuid": r.scope.repository_uuid,
                    "state": runner_status(r, now),
                    "enabled": r.enabled,
                    "step": r.step,
                    "created_at": r.created_at,
                    "last_heartbeat": r.last_heartbeat,
                    "duplicate_agent_polls": r.duplicate_agent_polls,
                })
            })
            .collect();
        json!(runners)
    }
}

/// Body of `POST /_fake/steps`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StepRequest {
    pub workspace: String,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub duration_s: f64,
    #[serde(default)]
    pub size: Option<String>,
}

mod agents;
mod pipelines;
pub use pipelines::{
    DeliveryRecord, PipelineRecord, PipelineRequest, PipelineState, PipelineStepRequest,
    WebhookEvent, WebhookFaults, WebhookTarget, request_uuid,
};

#[cfg(test)]
mod tests;

/// Unix seconds as Bitbucket writes times.
pub fn timestamp(unix_seconds: f64) -> String {
    let micros = (unix_seconds * 1e6).round() as i64;
    jiff::Timestamp::from_microsecond(micros)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}
