//! The HTTP face of the fake: Bitbucket's API and auth paths, the runner agent protocol, and
//! the `/_fake/` control API, all on one address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Form, Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

mod pipelines;
mod webhooks;

pub use webhooks::signature;

use crate::world::{
    ALL_SCOPES, ApiError, Faults, Identity, NoMatch, PipelineRequest, Repository, RequestRecord,
    ScopeKey, StepRequest, WebhookTarget, Workspace, World, new_uuid,
};

/// How to seed and run the fake.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub listen: SocketAddr,
    /// Every internal duration is divided by this.
    pub time_scale: f64,
    pub workspaces: Vec<String>,
    /// `(workspace slug, repository slug)`.
    pub repositories: Vec<(String, String)>,
    /// `(key, secret)`.
    pub oauth_consumers: Vec<(String, String)>,
    /// `(email, token)`.
    pub api_tokens: Vec<(String, String)>,
    pub access_tokens: Vec<String>,
    /// Identity (consumer key, e-mail or access token) → its only scopes.
    pub limited_scopes: HashMap<String, Vec<String>>,
    pub rate_limit: u32,
    pub no_match: NoMatch,
    pub faults: Faults,
    /// Where webhooks go, signed with its secret, and their faults.
    pub webhook: WebhookTarget,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            time_scale: 1.0,
            workspaces: Vec::new(),
            repositories: Vec::new(),
            oauth_consumers: Vec::new(),
            api_tokens: Vec::new(),
            access_tokens: Vec::new(),
            limited_scopes: HashMap::new(),
            rate_limit: 1000,
            no_match: NoMatch::Fail,
            faults: Faults::default(),
            webhook: WebhookTarget::default(),
        }
    }
}

pub(crate) struct App {
    world: Mutex<World>,
    start: Instant,
    time_scale: f64,
}

impl App {
    /// Seconds on the fake's clock.
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.time_scale
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakeBitbucket {
    app: Arc<App>,
    url: String,
    stop: watch::Sender<bool>,
}

impl FakeBitbucket {
    pub async fn start(config: FakeConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Arc::new(App {
            world: Mutex::new(seed(&config, &url)),
            start: Instant::now(),
            time_scale: config.time_scale.max(1e-6),
        });
        let (stop, mut stopped) = watch::channel(false);
        let router = router(app.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "fake-bitbucket server stopped");
            }
        });
        tokio::spawn(webhooks::deliver(app.clone(), stop.subscribe()));
        let ticker = app.clone();
        let mut stop_ticks = stop.subscribe();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        let now = ticker.now();
                        ticker.world().tick(now);
                    }
                    _ = stop_ticks.wait_for(|s| *s) => break,
                }
            }
        });
        Ok(Self { app, url, stop })
    }

    /// Base URL for both the API and auth, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Seconds on the fake's clock.
    pub fn now(&self) -> f64 {
        self.app.now()
    }

    /// Inspect or change the world in process (tests and the demo); the same data the
    /// `/_fake/` endpoints serve.
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World, f64) -> T) -> T {
        let now = self.app.now();
        f(&mut self.app.world(), now)
    }

    pub fn workspace_uuid(&self, slug: &str) -> Option<String> {
        self.with_world(|w, _| w.workspace(slug).map(|ws| ws.uuid.clone()))
    }

    pub fn submit_step(&self, request: &StepRequest) -> Result<String, ApiError> {
        self.with_world(|w, now| w.submit_step(request, now))
    }

    /// Push a commit whose pipeline runs `request`'s stages (`POST /_fake/pipelines`).
    pub fn create_pipeline(&self, request: &PipelineRequest) -> Result<Value, ApiError> {
        self.with_world(|w, now| w.create_pipeline(request, now))
    }

    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for FakeBitbucket {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn seed(config: &FakeConfig, url: &str) -> World {
    let scopes_for = |identity: &str| -> Vec<String> {
        config
            .limited_scopes
            .get(identity)
            .cloned()
            .unwrap_or_else(|| ALL_SCOPES.iter().map(|s| s.to_string()).collect())
    };
    let mut world = World {
        base_url: url.to_owned(),
        time_scale: config.time_scale.max(1e-6),
        epoch: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        workspaces: Vec::new(),
        repositories: Vec::new(),
        consumers: HashMap::new(),
        basic: HashMap::new(),
        bearer: HashMap::new(),
        runner_tokens: HashMap::new(),
        runners: Vec::new(),
        steps: Vec::new(),
        requests: Vec::new(),
        faults: config.faults.clone(),
        rate_limit: config.rate_limit,
        rate: HashMap::new(),
        no_match: config.no_match,
        pipelines: Vec::new(),
        outbox: Vec::new(),
        webhook: config.webhook.clone(),
        deliveries: Vec::new(),
    };
    let ensure_ws = |world: &mut World, slug: &str| -> String {
        if let Some(ws) = world.workspace(slug) {
            return ws.uuid.clone();
        }
        let uuid = new_uuid();
        world.workspaces.push(Workspace {
            slug: slug.to_owned(),
            uuid: uuid.clone(),
        });
        uuid
    };
    for ws in &config.workspaces {
        ensure_ws(&mut world, ws);
    }
    for (ws, repo) in &config.repositories {
        let workspace_uuid = ensure_ws(&mut world, ws);
        world.repositories.push(Repository {
            workspace_uuid,
            slug: repo.clone(),
            uuid: new_uuid(),
        });
    }
    for (key, secret) in &config.oauth_consumers {
        world.consumers.insert(
            key.clone(),
            Identity {
                name: format!("consumer:{key}"),
                secret: secret.clone(),
                scopes: scopes_for(key),
            },
        );
    }
    for (email, token) in &config.api_tokens {
        world.basic.insert(
            email.clone(),
            Identity {
                name: format!("user:{email}"),
                secret: token.clone(),
                scopes: scopes_for(email),
            },
        );
    }
    for token in &config.access_tokens {
        let identity = Identity {
            name: format!("access-token:{}", &token[..token.len().min(4)]),
            secret: String::new(),
            scopes: scopes_for(token),
        };
        world
            .bearer
            .insert(token.clone(), (identity, f64::INFINITY));
    }
    world
}

// ---------------------------------------------------------------------------------------------
// Routing

fn router(app: Arc<App>) -> Router {
    let runners = |prefix: &str| {
        Router::new()
            .route(
                &format!("{prefix}/pipelines-config/runners"),
                get(list_runners).post(create_runner),
            )
            .route(
                &format!("{prefix}/pipelines-config/runners/{{runner}}"),
                get(get_runner).delete(delete_runner),
            )
            .route(
                &format!("{prefix}/pipelines-config/runners/{{runner}}/state"),
                put(set_runner_state),
            )
    };
    let api = Router::new()
        .merge(runners("/internal/workspaces/{ws}"))
        .merge(runners("/internal/repositories/{ws}/{repo}"))
        .route("/2.0/workspaces/{ws}", get(get_workspace))
        .route("/2.0/repositories/{ws}/{repo}", get(get_repository))
        .merge(with_and_without_slash(
            "/2.0/repositories/{ws}/{repo}/pipelines",
            get(pipelines::list_pipelines),
        ))
        .merge(with_and_without_slash(
            "/2.0/repositories/{ws}/{repo}/pipelines/{pipeline}/steps",
            get(pipelines::list_steps),
        ))
        .route(
            "/2.0/repositories/{ws}/{repo}/src/{commit}/{*path}",
            get(pipelines::source_file),
        )
        .route("/site/oauth2/access_token", post(oauth_token))
        .layer(middleware::from_fn_with_state(app.clone(), inject_faults))
        .layer(middleware::from_fn_with_state(app.clone(), record_request));
    let agents = Router::new()
        .route("/oauth/token", post(runner_token))
        .route("/_runner/v1/runners/{runner}/poll", post(agent_poll))
        .route(
            "/_runner/v1/runners/{runner}/steps/{step}/complete",
            post(agent_complete),
        );
    let control = Router::new()
        .route("/_fake/steps", get(fake_steps).post(fake_submit_step))
        .route(
            "/_fake/pipelines",
            get(pipelines::fake_pipelines).post(pipelines::fake_create_pipeline),
        )
        .route("/_fake/runners", get(fake_runners))
        .route("/_fake/requests", get(fake_requests))
        .route("/_fake/faults", get(fake_faults).put(fake_set_faults))
        .route("/_fake/clock", get(fake_clock))
        .route(
            "/_fake/webhooks",
            get(webhooks::fake_webhooks).put(webhooks::fake_set_webhooks),
        );
    api.merge(agents).merge(control).with_state(app)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Which identity a request was served for, for the request log.
#[derive(Clone)]
struct ServedFor(String);

async fn record_request(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let identity = response
        .extensions()
        .get::<ServedFor>()
        .map(|s| s.0.clone());
    let now = app.now();
    app.world().requests.push(RequestRecord {
        at: now,
        method,
        path,
        identity,
        status: response.status().as_u16(),
    });
    response
}

async fn inject_faults(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let faults = app.world().faults.clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate {
        let mut error = ApiError::new(faults.status.unwrap_or(500), "Injected fault");
        error.retry_after = faults.retry_after_s;
        return error.into_response();
    }
    let response = next.run(request).await;
    if faults.reset_rate > 0.0 && fastrand::f64() < faults.reset_rate {
        // The request was handled, then the connection is cut before the body: the client
        // cannot know whether it took effect (the case that must not leak a runner).
        let status = response.status();
        let body = Body::from_stream(futures::stream::once(async {
            Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected connection reset",
            ))
        }));
        let mut cut = Response::builder()
            .status(status)
            .body(body)
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        if let Some(served) = response.extensions().get::<ServedFor>().cloned() {
            cut.extensions_mut().insert(served);
        }
        return cut;
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Auth

fn decode_basic(value: &str) -> Option<(String, String)> {
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Authenticate an API request, check its scope, and spend its rate budget.
pub(crate) fn authorize(app: &App, headers: &HeaderMap, scope: &str) -> Result<Identity, ApiError> {
    let now = app.now();
    let mut world = app.world();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let identity = if let Some(token) = auth.strip_prefix("Bearer ") {
        world.identity_for_bearer(token.trim(), now)
    } else if let Some((user, password)) = decode_basic(auth) {
        world.identity_for_basic(&user, &password)
    } else {
        None
    }
    .ok_or_else(|| ApiError::new(401, "Unauthorized"))?;
    world.spend_rate(&identity.name, now)?;
    World::require_scope(&identity, scope)?;
    Ok(identity)
}

pub(crate) fn served(identity: &Identity, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert("X-RateLimit-Limit", HeaderValue::from(1000u32));
    response
        .extensions_mut()
        .insert(ServedFor(identity.name.clone()));
    response
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn oauth_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    if form.grant_type.as_deref() != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type", "error_description": "Only client_credentials is supported here"})),
        )
            .into_response();
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(decode_basic);
    let (key, secret) = basic.unwrap_or((
        form.client_id.unwrap_or_default(),
        form.client_secret.unwrap_or_default(),
    ));
    let now = app.now();
    match app.world().issue_oauth_token(&key, &secret, now) {
        Some(token) => {
            let mut response = Json(token).into_response();
            response
                .extensions_mut()
                .insert(ServedFor(format!("consumer:{key}")));
            response
        }
        None => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_client", "error_description": "Invalid OAuth client credentials"})),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Runners API

#[derive(Deserialize)]
struct ScopePath {
    ws: String,
    repo: Option<String>,
    runner: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct PageQuery {
    page: Option<usize>,
    pagelen: Option<usize>,
}

pub(crate) fn paginate(items: Vec<Value>, query: &PageQuery, base_url: &str, uri: &Uri) -> Value {
    let pagelen = query.pagelen.unwrap_or(10).clamp(1, 100);
    let page = query.page.unwrap_or(1).max(1);
    let start = (page - 1) * pagelen;
    let size = items.len();
    let values: Vec<Value> = items.into_iter().skip(start).take(pagelen).collect();
    let mut body = json!({"page": page, "pagelen": pagelen, "size": size, "values": values});
    if start + pagelen < size {
        let kept: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("page=") && !p.starts_with("pagelen="))
            .map(str::to_owned)
            .collect();
        let mut query = kept;
        query.push(format!("pagelen={pagelen}"));
        query.push(format!("page={}", page + 1));
        body["next"] = json!(format!("{base_url}{}?{}", uri.path(), query.join("&")));
    }
    body
}

/// One runners route: authorized for runner:write, in the path's scope, under the world's lock.
fn on_runners<T: IntoResponse>(
    app: &App,
    headers: &HeaderMap,
    path: &ScopePath,
    act: impl FnOnce(&mut World, ScopeKey, &str, f64) -> Result<T, ApiError>,
) -> Result<Response, ApiError> {
    let identity = authorize(app, headers, "runner:write")?;
    let now = app.now();
    let mut world = app.world();
    let scope = world.runner_scope(&path.ws, path.repo.as_deref())?;
    let runner = path.runner.as_deref().unwrap_or("");
    let response = act(&mut world, scope, runner, now)?;
    Ok(served(&identity, response))
}

async fn list_runners(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(path): Path<ScopePath>,
    Query(query): Query<PageQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    on_runners(&app, &headers, &path, |world, scope, _, now| {
        let items: Vec<Value> = world
            .runners_of(&scope)
            .map(|r| world.runner_json(r, now, false))
            .collect();
        Ok(Json(paginate(items, &query, &world.base_url, &uri)))
    })
}

async fn create_runner(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(path): Path<ScopePath>,
    body: Option<Json<Value>>,
) -> Result<Response, ApiError> {
    on_runners(&app, &headers, &path, |world, scope, _, now| {
        let Some(Json(body)) = body else {
            return Err(ApiError::new(
                400,
                "Expected a JSON body with name and labels",
            ));
        };
        let created = world.create_runner(scope, &body, now)?;
        Ok((StatusCode::CREATED, Json(created)))
    })
}

async fn get_runner(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(path): Path<ScopePath>,
) -> Result<Response, ApiError> {
    on_runners(&app, &headers, &path, |world, scope, runner, now| {
        Ok(Json(world.get_runner(&scope, runner, now)?))
    })
}

async fn set_runner_state(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(path): Path<ScopePath>,
    body: Option<Json<Value>>,
) -> Result<Response, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    on_runners(&app, &headers, &path, |world, scope, runner, now| {
        Ok(Json(world.set_runner_state(&scope, runner, &body, now)?))
    })
}

async fn delete_runner(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(path): Path<ScopePath>,
) -> Result<Response, ApiError> {
    on_runners(&app, &headers, &path, |world, scope, runner, now| {
        world.delete_runner(&scope, runner, now)?;
        Ok(StatusCode::NO_CONTENT)
    })
}

// ---------------------------------------------------------------------------------------------
// Lookups and pipelines

async fn get_workspace(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Result<Response, ApiError> {
    let identity = authorize(&app, &headers, "account:read")?;
    let world = app.world();
    let found = world
        .workspace(&ws)
        .ok_or_else(|| ApiError::new(404, format!("Workspace {ws} not found")))?;
    Ok(served(
        &identity,
        Json(
            json!({"type": "workspace", "uuid": found.uuid, "slug": found.slug, "name": found.slug}),
        ),
    ))
}

async fn get_repository(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((ws, repo)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let identity = authorize(&app, &headers, "repository:read")?;
    let world = app.world();
    let found = world
        .repository(&ws, &repo)
        .ok_or_else(|| ApiError::new(404, format!("Repository {ws}/{repo} not found")))?;
    Ok(served(
        &identity,
        Json(
            json!({"type": "repository", "uuid": found.uuid, "slug": found.slug, "full_name": format!("{ws}/{}", found.slug)}),
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// Runner agent protocol (fake-only: the real runner's protocol is private)

async fn runner_token(State(app): State<Arc<App>>, Form(form): Form<TokenForm>) -> Response {
    let issued = app.world().issue_runner_token(
        form.client_id.as_deref().unwrap_or(""),
        form.client_secret.as_deref().unwrap_or(""),
    );
    match issued {
        Some(token) => Json(token).into_response(),
        None => ApiError::new(401, "access_denied").into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[derive(Deserialize)]
struct PollBody {
    session: String,
}

async fn agent_poll(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(runner): Path<String>,
    Json(body): Json<PollBody>,
) -> Result<Json<Value>, ApiError> {
    let now = app.now();
    let interval_ms = (crate::world::RUNNER_POLL_S / app.time_scale * 1000.0).round() as u64;
    let mut answer = app
        .world()
        .poll(&bearer(&headers), &runner, &body.session, now)?;
    answer["poll_interval_ms"] = json!(interval_ms.max(1));
    Ok(Json(answer))
}

async fn agent_complete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((runner, step)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let now = app.now();
    // `{"result": "FAILED"}` from an agent whose step's command failed; no body is success.
    let failed = serde_json::from_slice::<Value>(&body).is_ok_and(|b| b["result"] == "FAILED");
    let state = if failed {
        crate::world::StepState::Failed
    } else {
        crate::world::StepState::Completed
    };
    app.world()
        .complete(&bearer(&headers), &runner, &step, state, now)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Control API

async fn fake_submit_step(
    State(app): State<Arc<App>>,
    Json(request): Json<StepRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = app.now();
    let id = app.world().submit_step(&request, now)?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

async fn fake_steps(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!(app.world().steps))
}

async fn fake_runners(State(app): State<Arc<App>>) -> Json<Value> {
    let now = app.now();
    Json(app.world().runners_view(now))
}

async fn fake_requests(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!(app.world().requests))
}

async fn fake_faults(State(app): State<Arc<App>>) -> Json<Faults> {
    Json(app.world().faults.clone())
}

async fn fake_set_faults(State(app): State<Arc<App>>, Json(faults): Json<Faults>) -> Json<Faults> {
    app.world().faults = faults.clone();
    Json(faults)
}

/// A list route as Bitbucket serves it: with or without a trailing slash.
fn with_and_without_slash<S: Clone + Send + Sync + 'static>(
    path: &str,
    handler: axum::routing::MethodRouter<S>,
) -> Router<S> {
    Router::new()
        .route(path, handler.clone())
        .route(&format!("{path}/"), handler)
}

async fn fake_clock(State(app): State<Arc<App>>) -> Json<Value> {
    // The epoch is what an operator on the same scaled clock takes as --clock-origin.
    let epoch = app.world().epoch;
    Json(json!({"now": app.now(), "time_scale": app.time_scale, "epoch": epoch}))
}
