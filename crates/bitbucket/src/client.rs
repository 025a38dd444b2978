use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bbrunner_core::ids::RunnerUuid;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::budget::{Budget, RequestBudget};
use crate::model::{CreatedRunner, Runner};
use crate::{Credentials, Error};

/// How idempotent calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Told of every request sent: its endpoint name, HTTP status (0 when no answer came) and the
/// time to the answer's headers.
#[derive(Clone)]
pub struct RequestObserver(pub Arc<dyn Fn(&'static str, u16, Duration) + Send + Sync>);

impl std::fmt::Debug for RequestObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestObserver")
    }
}

/// Where Bitbucket is and how to talk to it. Tests point the URLs at fake-bitbucket.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_url: Url,
    pub auth_url: Url,
    pub budget: RequestBudget,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub observer: Option<RequestObserver>,
    /// The key of [`Client::opaque_id`]: the operator keeps one in a Secret, so that ids stay
    /// the same across restarts; by default a process's own.
    pub identity_key: crate::IdentityKey,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_url: Url::parse("https://api.bitbucket.org").expect("valid URL"),
            auth_url: Url::parse("https://bitbucket.org").expect("valid URL"),
            budget: RequestBudget::default(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            observer: None,
            identity_key: crate::IdentityKey::random(),
        }
    }
}

/// Which runners a call is about: a workspace's or a repository's. Workspace and repository
/// are slugs or `{uuid}`s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunnerScope {
    Workspace(String),
    Repository {
        workspace: String,
        repository: String,
    },
}

impl std::fmt::Display for RunnerScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Workspace(ws) => write!(f, "workspace {ws}"),
            Self::Repository {
                workspace,
                repository,
            } => write!(f, "repository {workspace}/{repository}"),
        }
    }
}

struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
}

struct Inner {
    http: reqwest::Client,
    config: Config,
    credentials: Credentials,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    budget: Budget,
    uuids: Mutex<HashMap<String, String>>,
}

/// A Bitbucket client for one identity. Cheap to clone; clones share the token cache and the
/// request budget.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("api_url", &self.inner.config.api_url.as_str())
            .field("identity", &self.inner.credentials.identity())
            .finish_non_exhaustive()
    }
}

/// A response read in full, so that a connection cut mid-body fails the attempt (and is
/// retried) rather than surfacing later.
struct Response {
    body: bytes::Bytes,
}

struct Request {
    endpoint: &'static str,
    method: Method,
    url: Url,
    body: Option<Value>,
    what: String,
    /// The longest answer read; past it the call fails, read no further.
    max_body: usize,
}

/// The longest answer a call reads unless it says otherwise: far past any page of 100 runners.
const MAX_BODY: usize = 16 << 20;

/// Read a response's body, no more than `limit` bytes of it.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, Error> {
    let too_large = || Error::Decode {
        what: what.to_owned(),
        message: format!("the answer is larger than {limit} bytes; not read"),
    };
    if response.content_length().is_some_and(|l| l > limit as u64) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(what, &e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

const ALL_SCOPES: [&str; 3] = ["runner:write", "repository:read", "account:read"];

mod pipelines;

impl Client {
    pub fn new(config: Config, credentials: Credentials) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("bbrunner/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| Error::Transport {
                what: "building the HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                budget: Budget::new(config.budget),
                config,
                credentials,
                token: tokio::sync::Mutex::new(None),
                uuids: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Requests left in this identity's budget (for metrics).
    pub fn remaining_budget(&self) -> u32 {
        self.inner.budget.remaining()
    }

    pub fn identity(&self) -> String {
        self.inner.credentials.identity()
    }

    /// Requests this client may send per budget period (an hour on the operator's clock).
    pub fn budget_requests(&self) -> u32 {
        self.inner.budget.requests()
    }

    /// See [`Credentials::opaque_id`].
    pub fn opaque_id(&self) -> String {
        self.inner
            .credentials
            .opaque_id(&self.inner.config.identity_key)
    }

    /// Requests this client sent in the last hour, as Bitbucket counts them against the
    /// identity (only this process's share: other clusters or tools using it are not seen).
    pub fn calls_last_hour(&self) -> u32 {
        self.inner.budget.spent_last_hour()
    }

    // ---- runners -------------------------------------------------------------------------

    /// Every runner of a scope, following `next` pages.
    pub async fn list_runners(&self, scope: &RunnerScope) -> Result<Vec<Runner>, Error> {
        let mut url = self.api_url(&self.runners_path(scope).await?);
        url.query_pairs_mut().append_pair("pagelen", "100");
        self.list_all(
            "list_runners",
            url,
            &format!("listing the runners of {scope}"),
        )
        .await
    }

    pub async fn get_runner(
        &self,
        scope: &RunnerScope,
        runner: &RunnerUuid,
    ) -> Result<Runner, Error> {
        let what = format!("runner {runner} of {scope}");
        let response = self
            .call(
                self.runner_request(Method::GET, scope, runner, None, &what)
                    .await?,
                true,
            )
            .await?;
        decode(response, &what)
    }

    /// Create a runner. Never retried (see the crate docs); the secret is only in the result.
    pub async fn create_runner(
        &self,
        scope: &RunnerScope,
        name: &str,
        labels: &[String],
    ) -> Result<CreatedRunner, Error> {
        let what = format!("creating runner {name:?} in {scope}");
        let request = Request {
            endpoint: "create_runner",
            method: Method::POST,
            url: self.api_url(&self.runners_path(scope).await?),
            body: Some(json!({ "name": name, "labels": labels })),
            what: what.clone(),
            max_body: MAX_BODY,
        };
        let response = self.call(request, false).await.map_err(|e| match e {
            Error::BadRequest { message, .. } if is_quota_message(&message) => {
                Error::QuotaExceeded {
                    scope: scope.to_string(),
                }
            }
            other => other,
        })?;
        // Decoded without serde's messages: they can quote values, and this body holds a secret.
        let created: CreateResponse =
            serde_json::from_slice(&response.body).map_err(|e| Error::Decode {
                what: what.clone(),
                message: format!(
                    "the body does not have the runner shape (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            })?;
        Ok(CreatedRunner {
            runner: created.runner,
            oauth_client_id: created.oauth_client.id,
            oauth_client_secret: created.oauth_client.secret,
        })
    }

    /// Enable or disable a runner. A disabled runner takes no new step and finishes its own.
    pub async fn set_runner_enabled(
        &self,
        scope: &RunnerScope,
        runner: &RunnerUuid,
        enabled: bool,
    ) -> Result<(), Error> {
        let status = if enabled { "ENABLED" } else { "DISABLED" };
        let what = format!("setting runner {runner} of {scope} {status}");
        let mut request = self
            .runner_request(
                Method::PUT,
                scope,
                runner,
                Some(json!({ "status": status })),
                &what,
            )
            .await?;
        request
            .url
            .path_segments_mut()
            .expect("base URL")
            .push("state");
        self.call(request, true).await.map(drop)
    }

    /// Delete a runner; one already gone counts as deleted.
    pub async fn delete_runner(
        &self,
        scope: &RunnerScope,
        runner: &RunnerUuid,
    ) -> Result<(), Error> {
        let what = format!("deleting runner {runner} of {scope}");
        let request = self
            .runner_request(Method::DELETE, scope, runner, None, &what)
            .await?;
        match self.call(request, true).await {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ---- lookups -------------------------------------------------------------------------

    /// The `{uuid}` of a workspace given its slug (or its uuid, returned as is). Cached.
    pub async fn workspace_uuid(&self, workspace: &str) -> Result<String, Error> {
        if is_braced_uuid(workspace) {
            return Ok(workspace.to_owned());
        }
        self.lookup(
            &["2.0", "workspaces", workspace],
            &format!("workspace {workspace}"),
        )
        .await
    }

    /// The `{uuid}` of a repository. Cached.
    pub async fn repository_uuid(
        &self,
        workspace: &str,
        repository: &str,
    ) -> Result<String, Error> {
        if is_braced_uuid(repository) {
            return Ok(repository.to_owned());
        }
        self.lookup(
            &["2.0", "repositories", workspace, repository],
            &format!("repository {workspace}/{repository}"),
        )
        .await
    }

    async fn lookup(&self, segments: &[&str], what: &str) -> Result<String, Error> {
        let key = segments.join("/");
        if let Some(uuid) = self.inner.uuids.lock().expect("lock").get(&key) {
            return Ok(uuid.clone());
        }
        let request = Request {
            endpoint: "lookup",
            method: Method::GET,
            url: self.api_url(segments),
            body: None,
            what: what.to_owned(),
            max_body: MAX_BODY,
        };
        #[derive(Deserialize)]
        struct WithUuid {
            uuid: String,
        }
        let found: WithUuid = decode(self.call(request, true).await?, what)?;
        self.inner
            .uuids
            .lock()
            .expect("lock")
            .insert(key, found.uuid.clone());
        Ok(found.uuid)
    }

    // ---- plumbing ------------------------------------------------------------------------

    fn api_url(&self, segments: &[impl AsRef<str>]) -> Url {
        let mut url = self.inner.config.api_url.clone();
        url.path_segments_mut()
            .expect("API URL is a base URL")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The internal runners API of a scope, addressed by `{uuid}` (resolved from a slug once,
    /// then cached) as Atlassian's own autoscaler addresses it: the only form a working
    /// client is known to use on this undocumented API.
    async fn runners_path(&self, scope: &RunnerScope) -> Result<Vec<String>, Error> {
        let workspace = match scope {
            RunnerScope::Workspace(ws) | RunnerScope::Repository { workspace: ws, .. } => ws,
        };
        let workspace_uuid = self.workspace_uuid(workspace).await?;
        let mut path = match scope {
            RunnerScope::Workspace(_) => vec![
                "internal".to_owned(),
                "workspaces".to_owned(),
                workspace_uuid,
            ],
            RunnerScope::Repository { repository, .. } => {
                let repository_uuid = self.repository_uuid(workspace, repository).await?;
                vec![
                    "internal".to_owned(),
                    "repositories".to_owned(),
                    workspace_uuid,
                    repository_uuid,
                ]
            }
        };
        path.extend(["pipelines-config".to_owned(), "runners".to_owned()]);
        Ok(path)
    }

    async fn runner_request(
        &self,
        method: Method,
        scope: &RunnerScope,
        runner: &RunnerUuid,
        body: Option<Value>,
        what: &str,
    ) -> Result<Request, Error> {
        let mut segments = self.runners_path(scope).await?;
        segments.push(runner.braced().to_owned());
        Ok(Request {
            endpoint: match method {
                Method::GET => "get_runner",
                Method::PUT => "set_runner_state",
                _ => "delete_runner",
            },
            method,
            url: self.api_url(&segments),
            body,
            what: what.to_owned(),
            max_body: MAX_BODY,
        })
    }

    async fn list_all<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        first: Url,
        what: &str,
    ) -> Result<Vec<T>, Error> {
        #[derive(Deserialize)]
        struct Page<T> {
            values: Vec<T>,
            #[serde(default)]
            next: Option<String>,
        }
        let mut items = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let request = Request {
                endpoint,
                method: Method::GET,
                url,
                body: None,
                what: what.to_owned(),
                max_body: MAX_BODY,
            };
            let page: Page<T> = decode(self.call(request, true).await?, what)?;
            items.extend(page.values);
            if let Some(link) = page.next {
                let url = Url::parse(&link).map_err(|e| Error::Decode {
                    what: what.to_owned(),
                    message: format!("bad next link: {e}"),
                })?;
                // Never send credentials to another host than the configured API.
                if url.origin() != self.inner.config.api_url.origin() {
                    return Err(Error::Decode {
                        what: what.to_owned(),
                        message: format!(
                            "next page points to another host ({})",
                            url.origin().ascii_serialization()
                        ),
                    });
                }
                next = Some(url);
            }
        }
        Ok(items)
    }

    /// One call with retries when `idempotent`.
    async fn call(&self, request: Request, idempotent: bool) -> Result<Response, Error> {
        let policy = self.inner.config.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(if idempotent { policy.max_retries } else { 0 })
            .with_jitter();
        (|| self.attempt(&request))
            .retry(backoff)
            .when(|e: &Error| idempotent && e.is_retryable())
            .adjust(|e: &Error, delay| match (e, delay) {
                // Waiting longer than the policy's longest delay would stall the caller (an
                // operator's reconcile): give up and let it come back after Retry-After.
                (Error::RateLimited { retry_after }, _) if *retry_after > policy.max_delay => None,
                (Error::RateLimited { retry_after }, Some(d)) => Some(d.max(*retry_after)),
                (_, d) => d,
            })
            .notify(|e: &Error, delay| {
                tracing::debug!(error = %e, ?delay, "retrying Bitbucket call");
            })
            .await
    }

    /// One attempt: spend budget, authenticate, send, and on a 401 with an OAuth token,
    /// refresh the token once and send again.
    async fn attempt(&self, request: &Request) -> Result<Response, Error> {
        let mut refreshed = false;
        loop {
            self.inner.budget.spend()?;
            let mut builder = self
                .inner
                .http
                .request(request.method.clone(), request.url.clone());
            builder = self.authenticate(builder, refreshed).await?;
            if let Some(body) = &request.body {
                builder = builder.json(body);
            }
            let sent = std::time::Instant::now();
            let response = builder.send().await.map_err(|e| {
                self.observe(request.endpoint, 0, sent.elapsed());
                transport(&request.what, &e)
            })?;
            let status = response.status();
            self.observe(request.endpoint, status.as_u16(), sent.elapsed());
            let retry_after = retry_after(response.headers());
            let body = read_body(response, request.max_body, &request.what).await?;
            if status.is_success() {
                return Ok(Response { body });
            }
            if status == StatusCode::UNAUTHORIZED
                && !refreshed
                && matches!(self.inner.credentials, Credentials::OAuthConsumer { .. })
            {
                *self.inner.token.lock().await = None;
                refreshed = true;
                continue;
            }
            return Err(self.error_for(status, retry_after, &body, &request.what));
        }
    }

    fn observe(&self, endpoint: &'static str, status: u16, latency: Duration) {
        if let Some(observer) = &self.inner.config.observer {
            (observer.0)(endpoint, status, latency);
        }
    }

    async fn authenticate(
        &self,
        builder: reqwest::RequestBuilder,
        force_refresh: bool,
    ) -> Result<reqwest::RequestBuilder, Error> {
        Ok(match &self.inner.credentials {
            Credentials::OAuthConsumer { .. } => {
                let token = self.oauth_token(force_refresh).await?;
                builder.bearer_auth(token.expose_secret())
            }
            Credentials::ApiToken { email, token } => {
                builder.basic_auth(email, Some(token.expose_secret()))
            }
            Credentials::AppPassword { username, password } => {
                builder.basic_auth(username, Some(password.expose_secret()))
            }
            Credentials::AccessToken(token) => builder.bearer_auth(token.expose_secret()),
        })
    }

    async fn oauth_token(&self, force_refresh: bool) -> Result<SecretString, Error> {
        let Credentials::OAuthConsumer { key, secret } = &self.inner.credentials else {
            unreachable!("only called for OAuth consumers");
        };
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref()
            && !force_refresh
            && Instant::now() < token.refresh_at
        {
            return Ok(token.token.clone());
        }
        let what = "getting an OAuth access token".to_owned();
        let mut url = self.inner.config.auth_url.clone();
        url.path_segments_mut()
            .expect("auth URL is a base URL")
            .pop_if_empty()
            .extend(["site", "oauth2", "access_token"]);
        let response = self
            .inner
            .http
            .post(url)
            .basic_auth(key, Some(secret.expose_secret()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| transport(&what, &e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
            // Bitbucket answers a bad client secret with 400 invalid_client or 401.
            return Err(self.unauthorized());
        }
        let retry = retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| transport(&what, &e))?;
        if !status.is_success() {
            return Err(self.error_for(status, retry, &body, &what));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: SecretString,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Decode {
            what: what.clone(),
            message: format!(
                "not a token response (line {}, column {})",
                e.line(),
                e.column()
            ),
        })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
        // Refresh a minute early, or at 90% of a short lifetime.
        let refresh_in = lifetime
            .saturating_sub(Duration::from_secs(60))
            .max(lifetime * 9 / 10);
        *cached = Some(CachedToken {
            token: token.access_token.clone(),
            refresh_at: Instant::now() + refresh_in,
        });
        Ok(token.access_token)
    }

    fn unauthorized(&self) -> Error {
        Error::Unauthorized {
            kind: self.inner.credentials.kind(),
            identity: self.inner.credentials.identity(),
        }
    }

    fn error_for(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
        what: &str,
    ) -> Error {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        match status {
            StatusCode::UNAUTHORIZED => self.unauthorized(),
            StatusCode::FORBIDDEN => {
                let required: Vec<String> = body["error"]["detail"]["required"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Error::Forbidden {
                    what: what.to_owned(),
                    kind: self.inner.credentials.kind(),
                    missing_scopes: if required.is_empty() {
                        ALL_SCOPES.iter().map(|s| s.to_string()).collect()
                    } else {
                        required
                    },
                }
            }
            StatusCode::NOT_FOUND => Error::NotFound {
                what: what.to_owned(),
            },
            StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
                retry_after: retry_after.unwrap_or(Duration::from_secs(60)),
            },
            s if s.is_server_error() => Error::Server {
                what: what.to_owned(),
                status: s.as_u16(),
            },
            _ => Error::BadRequest {
                what: what.to_owned(),
                message,
            },
        }
    }
}

#[derive(Deserialize)]
struct CreateResponse {
    #[serde(flatten)]
    runner: Runner,
    oauth_client: OAuthClient,
}

#[derive(Deserialize)]
struct OAuthClient {
    id: String,
    secret: SecretString,
}

fn decode<T: DeserializeOwned>(response: Response, what: &str) -> Result<T, Error> {
    serde_json::from_slice(&response.body).map_err(|e| Error::Decode {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

fn transport(what: &str, e: &reqwest::Error) -> Error {
    // reqwest's message names the URL, which holds no secret; walk the sources for the cause.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Error::Transport {
        what: what.to_owned(),
        message,
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn is_quota_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("maximum number of runners") || m.contains("runner limit")
}

fn is_braced_uuid(s: &str) -> bool {
    s.starts_with('{') && s.ends_with('}')
}
