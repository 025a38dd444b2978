//! One reconcile of one pool: observe (Kubernetes and Bitbucket) → plan (pure, in the core)
//! → execute → status. Every step is safe to interrupt: the next reconcile observes again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bbrunner_core::admin_policy::AdminPolicy;
use bbrunner_core::forecast::{self, DemandProfile};
use bbrunner_core::ids::{AccountUuid, RepositoryUuid, RunnerUuid};
use bbrunner_core::manifests::{LABEL_RUNNER_UUID, dind_networks_mtu_warning, secret_keys};
use bbrunner_core::ownership::{ClusterId, MAX_RUNNER_NAME, PoolIdentity};
use bbrunner_core::plan::{
    Action, Counts, Observation, ObservedPod, ObservedRunner, ObservedSecret, Plan, PodPhase,
    PoolSettings, RunnerStatus, plan, plan_static,
};
use bbrunner_core::pool::RUNNERS_PER_SCOPE;
use bbrunner_core::queue_wait::{QueueWaits, SeenStep};
use bbrunner_core::registration::RunnerRegistration;
use bbrunner_core::scaling::{PolicyMemory, reads_queue};
use bbrunner_core::schedule::overrides_at;
use bitbucket::{Client, Credentials, Error as BitbucketError, RunnerScope};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use secrecy::SecretString;
use serde_json::json;

use super::crd::{PoolMode, RunnerPool, RunnerPoolSpec, RunnerPoolStatus};
use super::hub::Hub;
use super::metrics::{ErrorLabels, Metrics, PoolLabels, RunnerStateLabels};
use super::pod_view::PodView;
use super::pool::{
    self, ANNOTATION_RAN_STEP, ANNOTATION_TEMPLATE, InvalidSpec, LABEL_POOL, ValidPool,
};

/// Operator-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A runner that stays UNREGISTERED or OFFLINE this long is replaced.
    pub registration_ttl: Duration,
    /// How long a deleted pool waits for busy runners.
    pub deletion_grace: Duration,
    /// What the cluster admin lets pools ask for.
    pub policy: AdminPolicy,
}

pub struct Context {
    pub client: kube::Client,
    /// The clock of every time-based rule.
    pub clock: super::clock::Clock,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub settings: Settings,
    /// This cluster's name in runner names.
    pub cluster: ClusterId,
    /// The queue-policy pools' pending steps, for the observed queue wait.
    pub queue_waits: Mutex<QueueWaits>,
}

/// Why a reconcile could not finish, with the condition reason it reports.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{message}")]
    Degraded {
        reason: &'static str,
        message: String,
        retry: Duration,
    },
}

impl ReconcileError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubernetesApi",
            Self::Degraded { reason, .. } => reason,
        }
    }

    pub fn retry(&self) -> Duration {
        match self {
            Self::Degraded { retry, .. } => *retry,
            _ => Duration::from_secs(5),
        }
    }
}

fn degraded(reason: &'static str, message: impl Into<String>, retry: Duration) -> ReconcileError {
    ReconcileError::Degraded {
        reason,
        message: message.into(),
        retry,
    }
}

/// Map a Bitbucket failure to the condition it shows.
fn from_bitbucket(e: BitbucketError) -> ReconcileError {
    let message = e.to_string();
    match e {
        BitbucketError::Unauthorized { .. } => {
            degraded("CredentialsInvalid", message, Duration::from_secs(60))
        }
        BitbucketError::Forbidden { .. } => {
            degraded("MissingScope", message, Duration::from_secs(60))
        }
        BitbucketError::RateLimited { retry_after }
        | BitbucketError::BudgetExhausted { retry_after } => {
            degraded("RateLimited", message, retry_after)
        }
        BitbucketError::QuotaExceeded { .. } => {
            degraded("QuotaExceeded", message, Duration::from_secs(60))
        }
        BitbucketError::NotFound { .. } => degraded("NotFound", message, Duration::from_secs(60)),
        BitbucketError::BadRequest { .. } | BitbucketError::Decode { .. } => {
            degraded("ApiRejected", message, Duration::from_secs(60))
        }
        BitbucketError::Server { .. } | BitbucketError::Transport { .. } => {
            degraded("ApiUnreachable", message, Duration::from_secs(10))
        }
    }
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|v| !v.is_empty())
}

/// The pool's credentials, and whether their Secret is being deleted. While the pool is not
/// being deleted, the Secret is held with [`pool::CREDENTIALS_FINALIZER`].
async fn credentials(
    ctx: &Context,
    pool: &RunnerPool,
) -> Result<(Credentials, bool), ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let Some(cred) = &pool.spec.credentials else {
        return Err(degraded(
            "CredentialsInvalid",
            "spec.credentials.secretRef is not set; a managed pool needs Bitbucket API credentials",
            Duration::from_secs(60),
        ));
    };
    let name = &cred.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(secret) = secrets.get_opt(name).await? else {
        return Err(degraded(
            "CredentialsInvalid",
            format!("Secret {ns}/{name} (spec.credentials.secretRef) does not exist"),
            Duration::from_secs(30),
        ));
    };
    let credentials = credentials_from_secret(&secret).ok_or_else(|| {
        degraded(
            "CredentialsInvalid",
            format!("Secret {ns}/{name} holds none of oauthClientId+oauthClientSecret, email+apiToken, username+appPassword, accessToken"),
            Duration::from_secs(60),
        )
    })?;
    let terminating = secret.metadata.deletion_timestamp.is_some();
    if !terminating
        && pool.metadata.deletion_timestamp.is_none()
        && !secret
            .finalizers()
            .iter()
            .any(|f| f == pool::CREDENTIALS_FINALIZER)
    {
        add_finalizer(
            &secrets,
            &secret.metadata,
            pool::CREDENTIALS_FINALIZER,
            Some((pool::LABEL_CREDENTIALS, "in-use")),
        )
        .await?;
        tracing::info!(namespace = %ns, pool = %pool.name_any(), secret = %name, "holding the credentials Secret until no pool uses it");
    }
    Ok((credentials, terminating))
}

/// Add a finalizer by JSON patch: appended to the list, so that one another controller adds
/// at the same moment is kept; a list that does not exist yet is created only if the object
/// is unchanged since it was read. A failed test fails the reconcile, which retries. `label`,
/// if given, is set in the same patch, so that the two never disagree.
async fn add_finalizer<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    finalizer: &str,
    label: Option<(&str, &str)>,
) -> Result<(), ReconcileError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut ops = match &meta.finalizers {
        Some(_) => vec![json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})],
        None => vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": meta.resource_version}),
            json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}),
        ],
    };
    if let Some((key, value)) = label {
        ops.push(match &meta.labels {
            Some(_) => {
                let path = format!("/metadata/labels/{}", key.replace('/', "~1"));
                json!({"op": "add", "path": path, "value": value})
            }
            None => json!({"op": "add", "path": "/metadata/labels", "value": {key: value}}),
        });
    }
    patch_json(api, meta, ops).await
}

/// Remove a finalizer by JSON patch at its index, tested to still be there: other
/// controllers' finalizers are never dropped, and nothing else of the object need be current.
async fn remove_finalizer_from<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    finalizer: &str,
) -> Result<(), ReconcileError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = meta
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == finalizer)
    else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let ops = vec![
        json!({"op": "test", "path": path, "value": finalizer}),
        json!({"op": "remove", "path": path}),
    ];
    patch_json(api, meta, ops).await
}

async fn patch_json<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    ops: Vec<serde_json::Value>,
) -> Result<(), ReconcileError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(json!(ops)).expect("well-formed JSON patch");
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to hold or release.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a pool, as stored, still needs the credentials Secret `secret`: it names it and
/// is not finished with cleanup.
fn uses_credentials(pool: &DynamicObject, secret: &str) -> bool {
    let spec = &pool.data["spec"];
    spec["mode"] != "static"
        && spec["credentials"]["secretRef"]["name"] == secret
        && (pool.metadata.deletion_timestamp.is_none()
            || pool.finalizers().iter().any(|f| f == pool::FINALIZER))
}

/// Release the credentials Secret `secret` of namespace `ns` unless a pool other than
/// `except` still uses it.
async fn release_credentials(
    ctx: &Context,
    ns: &str,
    secret: &str,
    except: Option<&str>,
) -> Result<(), ReconcileError> {
    let pools: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &pools_resource());
    let still_used = pools
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|p| Some(p.name_any().as_str()) != except && uses_credentials(p, secret));
    if still_used {
        return Ok(());
    }
    let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(held) = secrets.get_metadata_opt(secret).await?
        && held
            .finalizers()
            .iter()
            .any(|f| f == pool::CREDENTIALS_FINALIZER)
    {
        remove_finalizer_from(&secrets, &held.metadata, pool::CREDENTIALS_FINALIZER).await?;
        tracing::info!(namespace = %ns, secret = %secret, "released the credentials Secret: no pool uses it");
    }
    Ok(())
}

/// Release every credentials Secret no pool uses any more: those of pools deleted or
/// changed while no operator ran, or whose finalizer was removed by hand.
pub async fn release_unused_credentials(ctx: &Context, namespace: Option<&str>) {
    let secrets: Api<PartialObjectMeta<Secret>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let held = match secrets
        .list_metadata(&ListParams::default().labels(pool::LABEL_CREDENTIALS))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the credentials Secrets held by pools");
            return;
        }
    };
    for secret in held {
        let ns = secret.namespace().unwrap_or_default();
        if let Err(e) = release_credentials(ctx, &ns, &secret.name_any(), None).await {
            tracing::warn!(namespace = %ns, secret = %secret.name_any(), error = %e, "cannot release the credentials Secret");
        }
    }
}

pub fn pools_resource() -> ApiResource {
    ApiResource::erase::<RunnerPool>(&())
}

/// API credentials from a Secret's keys.
pub fn credentials_from_secret(secret: &Secret) -> Option<Credentials> {
    let get = |k| secret_value(secret, k);
    if let (Some(key), Some(s)) = (get("oauthClientId"), get("oauthClientSecret")) {
        Some(Credentials::OAuthConsumer {
            key,
            secret: SecretString::from(s),
        })
    } else if let (Some(email), Some(t)) = (get("email"), get("apiToken")) {
        Some(Credentials::ApiToken {
            email,
            token: SecretString::from(t),
        })
    } else if let (Some(username), Some(p)) = (get("username"), get("appPassword")) {
        Some(Credentials::AppPassword {
            username,
            password: SecretString::from(p),
        })
    } else {
        get("accessToken").map(|t| Credentials::AccessToken(SecretString::from(t)))
    }
}

fn scope_of(pool: &RunnerPool) -> RunnerScope {
    match &pool.spec.repository {
        Some(repository) => RunnerScope::Repository {
            workspace: pool.spec.workspace.clone(),
            repository: repository.clone(),
        },
        None => RunnerScope::Workspace(pool.spec.workspace.clone()),
    }
}

/// The demand profile in the pool's status; a damaged one is dropped with a warning (the pool
/// learns again; scaling goes on without the forecast meanwhile).
fn demand_profile(pool: &RunnerPool, encoded: Option<&str>) -> DemandProfile {
    let Some(encoded) = encoded else {
        return DemandProfile::default();
    };
    DemandProfile::decode(encoded).unwrap_or_else(|e| {
        tracing::warn!(namespace = %pool.namespace().unwrap_or_default(), pool = %pool.name_any(), "{e}");
        DemandProfile::default()
    })
}

/// Real time between a pool's polls: its interval on the operator's clock.
fn poll_period(ctx: &Context, scaling: &bbrunner_core::scaling::Scaling) -> Duration {
    ctx.clock
        .real(Duration::from_secs_f64(scaling.poll_interval.max(1.0)))
}

fn parse_time(t: &str) -> Option<f64> {
    t.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond() as f64 / 1000.0)
}

fn format_time(seconds: f64) -> Option<String> {
    jiff::Timestamp::from_millisecond((seconds * 1000.0) as i64)
        .ok()
        .map(|t| t.to_string())
}

/// A pod as the planner sees it, its times on the operator's clock.
fn observe_pod(pod: &PodView, clock: &super::clock::Clock) -> Option<ObservedPod> {
    let runner = RunnerUuid::parse(pod.labels().get(LABEL_RUNNER_UUID)?).ok()?;
    let status = pod.status.clone().unwrap_or_default();
    let phase = match status.phase.as_deref() {
        Some("Pending") | None => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some(_) => PodPhase::Unknown,
    };
    let conditions = status.conditions;
    let unschedulable = conditions.iter().find_map(|c| {
        (c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable"))
        .then(|| {
            c.message
                .clone()
                .unwrap_or_else(|| "no node fits the pod".into())
        })
    });
    let ready_since = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| clock.at_time(t));
    Some(ObservedPod {
        runner,
        phase,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        unschedulable,
        created_at: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| clock.at_time(t))
            .unwrap_or(0.0),
        ready_since,
        ran_step: pod
            .annotations()
            .get(ANNOTATION_RAN_STEP)
            .is_some_and(|v| v == "true"),
        template: pod.annotations().get(ANNOTATION_TEMPLATE).cloned(),
    })
}

fn observe_runner(r: &bitbucket::Runner) -> ObservedRunner {
    use bitbucket::RunnerStatus as S;
    ObservedRunner {
        uuid: r.uuid.clone(),
        status: match r.state.status {
            S::Unregistered => RunnerStatus::Unregistered,
            S::Online | S::Enabled => RunnerStatus::Online,
            S::Offline => RunnerStatus::Offline,
            S::Disabled => RunnerStatus::Disabled,
            S::Unknown => RunnerStatus::Other,
        },
        busy: r.is_busy(),
        status_since: r.state.updated_on.as_deref().and_then(parse_time),
        labels: Some(r.labels.clone()),
    }
}

async fn publish(
    ctx: &Context,
    pool: &RunnerPool,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(event_note(note)),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// The API server refuses an Event whose note is over 1 KiB: a longer one is cut at a
/// character boundary, with an ellipsis.
fn event_note(mut note: String) -> String {
    const LIMIT: usize = 1024;
    if note.len() <= LIMIT {
        return note;
    }
    let mut end = LIMIT - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

/// A RunnerPool as stored, read as the current type; or, when it cannot be, the field at
/// fault and a stand-in that keeps what can be read (metadata, status, and each spec field
/// that parses on its own), enough to report the problem and to clean up a deleted pool.
pub fn read_pool(object: &DynamicObject) -> Result<RunnerPool, Box<Unreadable>> {
    let value = serde_json::to_value(object).unwrap_or_default();
    serde_path_to_error::deserialize::<_, RunnerPool>(value.clone()).map_err(|e| {
        Box::new(Unreadable {
            field: format!("{}: {}", e.path(), e.inner()),
            stand_in: stand_in(object, &value),
        })
    })
}

/// A pool that cannot be read as the current type.
pub struct Unreadable {
    /// The field at fault and what is wrong with it.
    pub field: String,
    pub stand_in: RunnerPool,
}

fn stand_in(object: &DynamicObject, value: &serde_json::Value) -> RunnerPool {
    let spec_of = |fields: &serde_json::Map<String, serde_json::Value>| {
        let mut fields = fields.clone();
        fields.entry("workspace").or_insert_with(|| json!(""));
        serde_json::from_value::<RunnerPoolSpec>(serde_json::Value::Object(fields))
    };
    let mut kept = serde_json::Map::new();
    for (key, field) in value["spec"].as_object().into_iter().flatten() {
        let mut trial = kept.clone();
        trial.insert(key.clone(), field.clone());
        if spec_of(&trial).is_ok() {
            kept = trial;
        }
    }
    let mut pool = RunnerPool::new(&object.name_any(), spec_of(&kept).unwrap_or_default());
    pool.metadata = object.metadata.clone();
    pool.status = serde_json::from_value(value["status"].clone()).ok();
    pool
}

/// Entry point for both normal reconciles and finalizer cleanup.
pub async fn reconcile(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let started = std::time::Instant::now();
    let (pool, result) = match read_pool(&object) {
        Ok(pool) => {
            let result = reconcile_inner(&pool, &ctx).await;
            (pool, result)
        }
        Err(unreadable) => {
            let Unreadable { field, stand_in } = *unreadable;
            let result = reconcile_unreadable(&stand_in, &ctx, field).await;
            (stand_in, result)
        }
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        let (namespace, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
        tracing::warn!(%namespace, pool = %name, reason = e.reason(), error = %e, "reconcile failed");
        let pool_gone = matches!(e, ReconcileError::Kube(kube::Error::Api(s)) if s.code == 404);
        if !pool_gone {
            ctx.metrics.count_error(ErrorLabels {
                namespace,
                pool: name,
                reason: e.reason().to_owned(),
            });
            write_failure(&ctx, &pool, e).await;
        }
    }
    result
}

/// A pool that cannot be read as the current type stays local: it is reported Degraded,
/// naming the field, while every other pool goes on. Deleted, it is still cleaned up with
/// what can be read of it.
async fn reconcile_unreadable(
    stand_in: &RunnerPool,
    ctx: &Context,
    field: String,
) -> Result<Requeue, ReconcileError> {
    let deleting = stand_in.metadata.deletion_timestamp.is_some();
    let held = stand_in.finalizers().iter().any(|f| f == pool::FINALIZER);
    let can_clean_up = stand_in.spec.mode == PoolMode::Static
        || (stand_in.spec.credentials.is_some() && !stand_in.spec.workspace.trim().is_empty());
    if deleting && held && can_clean_up {
        return reconcile_inner(stand_in, ctx).await;
    }
    let message = if deleting && held {
        format!(
            "{field}; the pool cannot be cleaned up until it is fixed (or remove the finalizer {} to leave its runners in Bitbucket)",
            pool::FINALIZER
        )
    } else {
        format!("{field}; fix the field with kubectl edit")
    };
    Err(degraded("InvalidSpec", message, Duration::from_secs(300)))
}

async fn reconcile_inner(pool: &RunnerPool, ctx: &Context) -> Result<Requeue, ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let api: Api<RunnerPool> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = pool.metadata.deletion_timestamp.is_some();
    let has_finalizer = pool.finalizers().iter().any(|f| f == pool::FINALIZER);
    if deleting && !has_finalizer {
        return Ok(Requeue::await_change());
    }
    if !deleting && !has_finalizer {
        // The finalizer first, so that no runner exists that deletion could forget, and so
        // that the pool's metrics and credentials are released when it goes.
        add_finalizer(&api, &pool.metadata, pool::FINALIZER, None).await?;
    }
    let valid = match pool::validate(pool) {
        Ok(v) => v,
        Err(InvalidSpec(message)) if !deleting => {
            return Err(degraded("InvalidSpec", message, Duration::from_secs(300)));
        }
        // A deleted pool is cleaned up whatever its spec says of labels, sizes or images.
        Err(_) => ValidPool::for_cleanup(),
    };
    if !deleting
        && let Err(violation) = ctx
            .settings
            .policy
            .check(&pool::policy_request(pool, &valid))
    {
        // Nothing new is created; runners already serving are left to finish.
        return Err(degraded(
            "PolicyViolation",
            violation.to_string(),
            Duration::from_secs(300),
        ));
    }
    match pool.spec.mode {
        PoolMode::Static if deleting => finish_deletion(ctx, pool, &api).await,
        PoolMode::Static => reconcile_static(pool, ctx, &valid).await,
        PoolMode::Managed => reconcile_managed(pool, ctx, &valid, &api).await,
    }
}

/// The pool's runners are gone: forget its metrics, release its credentials, let it go.
async fn finish_deletion(
    ctx: &Context,
    pool: &RunnerPool,
    api: &Api<RunnerPool>,
) -> Result<Requeue, ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    // The pool's finalizer first: while it stays, the pool may need its credentials again.
    remove_finalizer_from(api, &pool.metadata, pool::FINALIZER).await?;
    let held = pool
        .status
        .as_ref()
        .and_then(|s| s.credentials_secret.clone());
    if let Some(secret) = held {
        // No reconcile of this pool follows: a failure here is retried at once, and what
        // still fails is released when the operator next starts leading.
        let mut attempts = 0;
        while let Err(e) = release_credentials(ctx, &ns, &secret, Some(&name)).await {
            attempts += 1;
            if attempts == 3 {
                tracing::warn!(namespace = %ns, secret = %secret, error = %e, "cannot release the credentials Secret");
                break;
            }
        }
    }
    ctx.metrics.forget_pool(&ns, &name);
    ctx.queue_waits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .forget(&format!("{ns}/{name}"));
    tracing::info!(namespace = %ns, pool = %name, "pool deleted: its runners are gone from Bitbucket");
    Ok(Requeue::await_change())
}

/// The pool's pods (their view) and Secrets (metadata only: their data never leaves the API
/// server on a list).
async fn pool_objects(
    ctx: &Context,
    pool: &RunnerPool,
) -> Result<(Vec<PodView>, Vec<PartialObjectMeta<Secret>>), ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let selector = ListParams::default().labels(&format!("{LABEL_POOL}={}", pool.name_any()));
    let pods = Api::<PodView>::namespaced(ctx.client.clone(), &ns)
        .list(&selector)
        .await?
        .items;
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .list_metadata(&selector)
        .await?
        .items;
    Ok((pods, secrets))
}

async fn queued_steps(
    ctx: &Context,
    pool: &RunnerPool,
    client: &Client,
    valid: &ValidPool,
) -> Option<u32> {
    let repository = pool.spec.repository.as_deref()?;
    // One call for the pipelines list; the per-pipeline steps calls come out of the reserve.
    if !reads_queue(valid.scaling.policy, client.remaining_budget(), 1) {
        return None;
    }
    let steps = client
        .active_steps(&pool.spec.workspace, repository)
        .await
        .ok()?;
    let (namespace, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
    let seen: Vec<SeenStep<'_>> = steps
        .iter()
        .map(|s| SeenStep {
            uuid: &s.uuid,
            pending: s.state == "PENDING",
        })
        .collect();
    let waits = ctx
        .queue_waits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .observe(&format!("{namespace}/{name}"), &seen, ctx.clock.now());
    // Created empty at the first read, not at the first wait: a series born with samples
    // already in it hides them from rate() and increase().
    let histogram = ctx.metrics.step_queue_wait.get_or_create(&PoolLabels {
        namespace,
        pool: name,
    });
    for wait in waits {
        histogram.observe(wait);
    }
    let waiting = steps
        .iter()
        .filter(|s| s.state == "PENDING")
        .filter(|s| s.labels.as_ref().is_none_or(|l| valid.labels.serves(l)))
        .count();
    Some(waiting as u32)
}

async fn reconcile_managed(
    pool: &RunnerPool,
    ctx: &Context,
    valid: &ValidPool,
    api: &Api<RunnerPool>,
) -> Result<Requeue, ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let identity = PoolIdentity {
        cluster: &ctx.cluster,
        namespace: &ns,
        pool: &name,
    };
    if identity.runner_name_len() > MAX_RUNNER_NAME {
        return Err(degraded(
            "InvalidSpec",
            format!(
                "metadata.namespace and metadata.name are too long together: runner names ({}...) would have {} characters, more than the {MAX_RUNNER_NAME} bbrunner allows (Bitbucket's own limit is unknown); shorten the pool's name",
                identity.prefix(),
                identity.runner_name_len()
            ),
            Duration::from_secs(300),
        ));
    }
    let deleting_since = pool
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| ctx.clock.at_time(t));
    let (credentials, credentials_deleted) = match credentials(ctx, pool).await {
        Ok(c) => c,
        Err(e)
            if deleting_since.is_some_and(|s| {
                ctx.clock.now() - s > ctx.settings.deletion_grace.as_secs_f64()
            }) =>
        {
            let note = format!(
                "cannot reach Bitbucket to delete this pool's runners ({e}); delete the runners named {}* in the UI",
                identity.prefix()
            );
            tracing::warn!(namespace = %ns, pool = %name, "{note}");
            publish(
                ctx,
                pool,
                EventType::Warning,
                "CleanupAbandoned",
                "Delete",
                note,
            )
            .await;
            return finish_deletion(ctx, pool, api).await;
        }
        Err(e) => return Err(e),
    };
    let credentials_secret = pool
        .spec
        .credentials
        .as_ref()
        .map(|c| c.secret_ref.name.clone());
    let status = pool.status.clone().unwrap_or_default();
    if let Some(previous) = &status.credentials_secret
        && Some(previous) != credentials_secret.as_ref()
    {
        // spec.credentials now names another Secret: let go of the one held before.
        release_credentials(ctx, &ns, previous, Some(&name)).await?;
    }
    let client = ctx.hub.client(credentials).map_err(from_bitbucket)?;
    let scope = scope_of(pool);
    let poll = poll_period(ctx, &valid.scaling);
    let listed = ctx
        .hub
        .runners(&client, &scope, poll / 2)
        .await
        .map_err(from_bitbucket)?;
    let (pods, secrets) = pool_objects(ctx, pool).await?;
    let observed_pods: Vec<ObservedPod> = pods
        .iter()
        .filter_map(|p| observe_pod(p, &ctx.clock))
        .collect();
    let observed_secrets: Vec<ObservedSecret> = secrets
        .iter()
        .filter_map(|s| {
            let runner = RunnerUuid::parse(s.labels().get(LABEL_RUNNER_UUID)?).ok()?;
            let created_at = ctx.clock.at_time(s.metadata.creation_timestamp.as_ref()?);
            Some(ObservedSecret { runner, created_at })
        })
        .collect();
    let held_here = |uuid: &RunnerUuid| {
        observed_pods.iter().any(|p| &p.runner == uuid)
            || observed_secrets.iter().any(|s| &s.runner == uuid)
    };
    // Only this pool's runners of this cluster: never another cluster's, another pool's, or
    // one bbrunner did not create.
    let mine: Vec<&bitbucket::Runner> = listed
        .runners
        .iter()
        .filter(|r| identity.owns(&r.name, held_here(&r.uuid)))
        .collect();
    let queued = queued_steps(ctx, pool, &client, valid).await;

    let observation = Observation {
        now: ctx.clock.now(),
        runners: mine.iter().map(|r| observe_runner(r)).collect(),
        runners_fetched_at: ctx.clock.at(listed.fetched_at),
        pods: observed_pods,
        secrets: observed_secrets,
        memory: PolicyMemory {
            surplus_since: status.surplus_since.as_deref().and_then(parse_time),
            occupancy: status.occupancy.unwrap_or_default(),
            occupancy_at: status.occupancy_time.as_deref().and_then(parse_time),
            occupied: status.occupied.unwrap_or_default(),
            profile: demand_profile(pool, status.demand_profile.as_deref()),
            slot: status
                .demand_slot_time
                .as_deref()
                .and_then(parse_time)
                .map(forecast::slot_number),
            slot_peak: status.demand_slot_peak.unwrap_or_default(),
        },
        queued,
        scope_room: RUNNERS_PER_SCOPE.saturating_sub(listed.runners.len() as u32),
    };
    let settings = PoolSettings {
        overrides: overrides_at(&valid.scaling.schedules, observation.now),
        scaling: valid.scaling.clone(),
        ephemeral: pool.spec.ephemeral,
        registration_ttl: ctx.settings.registration_ttl.as_secs_f64(),
        deleting_since,
        deletion_grace: ctx.settings.deletion_grace.as_secs_f64(),
        labels: valid.labels.as_slice().to_vec(),
        template: Some(pool::template_revision(
            pool,
            valid,
            pool.spec.repository.is_some(),
        )),
    };
    let planned = plan(&settings, &observation);
    let changed = execute(ctx, pool, valid, &client, &scope, &identity, &planned).await;
    if changed.as_ref().is_ok_and(|n| *n > 0) || changed.is_err() {
        ctx.hub.invalidate(&client, &scope);
    }
    if planned.actions.contains(&Action::RemoveFinalizer) {
        publish(
            ctx,
            pool,
            EventType::Normal,
            "PoolDeleted",
            "Delete",
            "every runner of the pool is deleted in Bitbucket".into(),
        )
        .await;
        return finish_deletion(ctx, pool, api).await;
    }
    changed?;
    record_metrics(ctx, pool, &planned.counts, planned.decision.desired);
    let mut report = StatusReport {
        counts: planned.counts,
        desired: planned.decision.desired,
        memory: planned.memory,
        scaled: None,
        problem: None,
        credentials_secret,
        api_calls: Some((client.opaque_id(), client.calls_last_hour())),
        step_network_mtu: dind_networks_mtu_warning(&valid.dind.image, valid.dind.mtu),
        rollout_surge: Some(settings.rollout_surge()),
    };
    if deleting_since.is_some() {
        // Busy runners are finishing their steps; the pool goes once they are done.
        write_status(ctx, pool, report).await?;
        return Ok(Requeue::requeue(poll));
    }
    let creates = planned
        .actions
        .iter()
        .filter(|a| matches!(a, Action::CreateRunner | Action::ReplaceRunner(_)))
        .count();
    let drains = planned
        .actions
        .iter()
        .filter(|a| matches!(a, Action::DisableRunner(_)))
        .count();
    report.scaled = (creates > 0 || drains > 0).then(|| {
        format!(
            "desired {} ({}): {creates} created, {drains} drained",
            planned.decision.desired, planned.decision.reason
        )
    });
    if let Some(reason) = &report.scaled {
        tracing::info!(namespace = %ns, pool = %name, desired = planned.decision.desired, creates, drains, reason = planned.decision.reason, "scaling");
        publish(
            ctx,
            pool,
            EventType::Normal,
            "Scaled",
            "Scale",
            reason.clone(),
        )
        .await;
    }
    let deleting_credentials =
        credentials_deleted.then(|| report.credentials_secret.clone().unwrap_or_default());
    report.problem = planned.problem(deleting_credentials.as_deref());
    write_status(ctx, pool, report).await?;
    Ok(Requeue::requeue(poll))
}

/// Carry out planned actions in order, logging each change with its reason; returns how
/// many changed Bitbucket.
async fn execute(
    ctx: &Context,
    pool: &RunnerPool,
    valid: &ValidPool,
    client: &Client,
    scope: &RunnerScope,
    identity: &PoolIdentity<'_>,
    planned: &Plan,
) -> Result<usize, ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let done = |action: &Action, runner: &dyn std::fmt::Display, what: &str| {
        tracing::info!(namespace = %ns, pool = %name, runner = %runner, reason = planned.reason(action), "{what}");
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let repository_scoped = pool.spec.repository.is_some();
    let mut bitbucket_changes = 0;
    let ignore_missing = |r: Result<_, kube::Error>| match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    };
    for action in &planned.actions {
        match action {
            Action::CreateRunner | Action::ReplaceRunner(_) => {
                let runner_name = pool::runner_name(identity);
                let created = client
                    .create_runner(scope, &runner_name, valid.labels.as_slice())
                    .await
                    .map_err(from_bitbucket)?;
                bitbucket_changes += 1;
                let account = client
                    .workspace_uuid(&pool.spec.workspace)
                    .await
                    .map_err(from_bitbucket)?;
                let repository = match &pool.spec.repository {
                    Some(r) => Some(
                        client
                            .repository_uuid(&pool.spec.workspace, r)
                            .await
                            .map_err(from_bitbucket)?,
                    ),
                    None => None,
                };
                let bad_uuid = |e: bbrunner_core::ids::InvalidUuid| {
                    degraded(
                        "ApiRejected",
                        format!("Bitbucket returned a malformed id: {e}"),
                        Duration::from_secs(60),
                    )
                };
                let registration = RunnerRegistration {
                    account_uuid: AccountUuid::parse(&account).map_err(bad_uuid)?,
                    repository_uuid: repository
                        .as_deref()
                        .map(RepositoryUuid::parse)
                        .transpose()
                        .map_err(bad_uuid)?,
                    runner_uuid: created.runner.uuid.clone(),
                    oauth_client_id: created.oauth_client_id.clone(),
                    oauth_client_secret: created.oauth_client_secret.clone(),
                };
                done(
                    action,
                    &registration.runner_uuid,
                    &format!("created runner {runner_name} in Bitbucket"),
                );
                let secret = pool::secret(pool, &registration);
                let secret_name = secret.name_any();
                // Applied rather than created: a retry after a lost response converges instead
                // of failing on AlreadyExists, and the Secret's fields are the operator's.
                secrets
                    .patch(
                        &secret_name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&secret),
                    )
                    .await?;
                done(
                    action,
                    &registration.runner_uuid,
                    &format!("created its registration Secret {secret_name}"),
                );
                pods.create(
                    &PostParams::default(),
                    &pool::pod(
                        pool,
                        valid,
                        &registration.runner_uuid,
                        &secret_name,
                        repository_scoped,
                    ),
                )
                .await?;
                done(action, &registration.runner_uuid, "created its pod");
                publish(
                    ctx,
                    pool,
                    EventType::Normal,
                    "RunnerCreated",
                    "Create",
                    format!(
                        "runner {} ({runner_name}) created with its pod",
                        registration.runner_uuid
                    ),
                )
                .await;
            }
            Action::CreatePod(uuid) => {
                let secret_name = pool::object_name(&name, uuid);
                let pod = pool::pod(pool, valid, uuid, &secret_name, repository_scoped);
                match pods.create(&PostParams::default(), &pod).await {
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    other => {
                        other?;
                    }
                }
                done(action, uuid, "recreated its pod");
                publish(
                    ctx,
                    pool,
                    EventType::Normal,
                    "PodRecreated",
                    "Create",
                    format!(
                        "pod of runner {uuid} recreated ({})",
                        planned.reason(action)
                    ),
                )
                .await;
            }
            Action::DeletePod(uuid) => {
                ignore_missing(
                    pods.delete(&pool::object_name(&name, uuid), &DeleteParams::default())
                        .await
                        .map(drop),
                )?;
                done(action, uuid, "deleted its pod");
            }
            Action::DeleteSecret(uuid) => {
                ignore_missing(
                    secrets
                        .delete(&pool::object_name(&name, uuid), &DeleteParams::default())
                        .await
                        .map(drop),
                )?;
                done(action, uuid, "deleted its registration Secret");
            }
            Action::DisableRunner(uuid) => {
                client
                    .set_runner_enabled(scope, uuid, false)
                    .await
                    .map_err(from_bitbucket)?;
                bitbucket_changes += 1;
                done(action, uuid, "disabled the runner in Bitbucket");
                publish(
                    ctx,
                    pool,
                    EventType::Normal,
                    "RunnerDisabled",
                    "Disable",
                    format!(
                        "runner {uuid} disabled ({}): it takes no new step and is deleted once idle",
                        planned.reason(action)
                    ),
                )
                .await;
            }
            Action::EnableRunner(uuid) => {
                client
                    .set_runner_enabled(scope, uuid, true)
                    .await
                    .map_err(from_bitbucket)?;
                bitbucket_changes += 1;
                done(action, uuid, "enabled the runner again in Bitbucket");
                publish(
                    ctx,
                    pool,
                    EventType::Normal,
                    "RunnerEnabled",
                    "Enable",
                    format!("runner {uuid} enabled again ({})", planned.reason(action)),
                )
                .await;
            }
            Action::DeleteRunner(uuid) => {
                client
                    .delete_runner(scope, uuid)
                    .await
                    .map_err(from_bitbucket)?;
                bitbucket_changes += 1;
                done(action, uuid, "deleted the runner in Bitbucket");
                publish(
                    ctx,
                    pool,
                    EventType::Normal,
                    "RunnerDeleted",
                    "Delete",
                    format!(
                        "runner {uuid} deleted in Bitbucket ({})",
                        planned.reason(action)
                    ),
                )
                .await;
            }
            Action::MarkRanStep(uuid) => {
                let patch = json!({"metadata": {"annotations": {ANNOTATION_RAN_STEP: "true"}}});
                ignore_missing(
                    pods.patch(
                        &pool::object_name(&name, uuid),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                    .map(drop),
                )?;
                done(action, uuid, "marked its pod: the runner ran its step");
            }
            Action::RemoveFinalizer => {}
        }
    }
    Ok(bitbucket_changes)
}

async fn reconcile_static(
    pool: &RunnerPool,
    ctx: &Context,
    valid: &ValidPool,
) -> Result<Requeue, ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    if let Some(held) = pool
        .status
        .as_ref()
        .and_then(|s| s.credentials_secret.as_deref())
    {
        // Managed before: its API credentials are no longer needed.
        release_credentials(ctx, &ns, held, Some(&name)).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut wanted: Vec<(RunnerUuid, String, bool)> = Vec::new();
    for (i, r) in pool.spec.static_runners.iter().enumerate() {
        let field = format!("spec.staticRunners[{i}].secretRef");
        let Some(secret) = secrets.get_opt(&r.secret_ref.name).await? else {
            return Err(degraded(
                "CredentialsInvalid",
                format!("{field}: Secret {ns}/{} does not exist", r.secret_ref.name),
                Duration::from_secs(30),
            ));
        };
        let uuid = secret_value(&secret, secret_keys::RUNNER_UUID)
            .and_then(|u| RunnerUuid::parse(&u).ok())
            .ok_or_else(|| degraded("CredentialsInvalid", format!("{field}: Secret {} has no valid runner_uuid (write it with `bbrunner import --format yaml --reveal-secret`)", r.secret_ref.name), Duration::from_secs(60)))?;
        for key in [
            secret_keys::ACCOUNT_UUID,
            secret_keys::OAUTH_CLIENT_ID,
            secret_keys::OAUTH_CLIENT_SECRET,
        ] {
            if secret_value(&secret, key).is_none() {
                return Err(degraded(
                    "CredentialsInvalid",
                    format!("{field}: Secret {} has no {key}", r.secret_ref.name),
                    Duration::from_secs(60),
                ));
            }
        }
        let repository_scoped = secret_value(&secret, secret_keys::REPOSITORY_UUID).is_some();
        wanted.push((uuid, r.secret_ref.name.clone(), repository_scoped));
    }
    let selector = ListParams::default().labels(&format!("{LABEL_POOL}={name}"));
    let observed: Vec<ObservedPod> = Api::<PodView>::namespaced(ctx.client.clone(), &ns)
        .list(&selector)
        .await?
        .items
        .iter()
        .filter_map(|p| observe_pod(p, &ctx.clock))
        .collect();
    let uuids: Vec<RunnerUuid> = wanted.iter().map(|(u, _, _)| u.clone()).collect();
    for action in plan_static(&uuids, &observed) {
        match action {
            Action::CreatePod(uuid) => {
                let (_, secret_name, repository_scoped) = wanted
                    .iter()
                    .find(|(u, _, _)| *u == uuid)
                    .expect("planned from wanted");
                match pods
                    .create(
                        &PostParams::default(),
                        &pool::pod(pool, valid, &uuid, secret_name, *repository_scoped),
                    )
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    other => {
                        other?;
                    }
                }
                tracing::info!(namespace = %ns, pool = %name, runner = %uuid, "created the pod of an imported runner");
            }
            Action::DeletePod(uuid) => {
                match pods
                    .delete(&pool::object_name(&name, &uuid), &DeleteParams::default())
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    other => {
                        other?;
                    }
                }
                tracing::info!(namespace = %ns, pool = %name, runner = %uuid, "deleted the pod of an imported runner: it ended, or its runner left spec.staticRunners");
            }
            _ => {}
        }
    }
    let running = observed
        .iter()
        .filter(|p| p.phase == PodPhase::Running && !p.terminating)
        .count() as u32;
    // bbrunner cannot see whether a static runner is busy, so it replaces no pod of an
    // earlier spec: the status says how many there are (Progressing tells the user).
    let revision = pool::template_revision(pool, valid, false);
    let outdated = observed
        .iter()
        .filter(|p| !p.terminating && p.template.as_deref() != Some(revision.as_str()))
        .count() as u32;
    let counts = Counts {
        online: running,
        idle: running,
        starting: (wanted.len() as u32).saturating_sub(running),
        outdated,
        updated: (observed.len() as u32).saturating_sub(outdated),
        ..Counts::default()
    };
    record_metrics(ctx, pool, &counts, wanted.len() as u32);
    let report = StatusReport {
        counts,
        desired: wanted.len() as u32,
        memory: PolicyMemory::default(),
        scaled: None,
        problem: None,
        credentials_secret: None,
        api_calls: None,
        step_network_mtu: dind_networks_mtu_warning(&valid.dind.image, valid.dind.mtu),
        rollout_surge: None,
    };
    write_status(ctx, pool, report).await?;
    Ok(Requeue::requeue(poll_period(ctx, &valid.scaling)))
}

fn record_metrics(ctx: &Context, pool: &RunnerPool, counts: &Counts, desired: u32) {
    let namespace = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    for (state, n) in counts.disjoint() {
        ctx.metrics
            .runners
            .get_or_create(&RunnerStateLabels {
                namespace: namespace.clone(),
                pool: name.clone(),
                state: state.to_owned(),
            })
            .set(i64::from(n));
    }
    let labels = PoolLabels {
        namespace,
        pool: name,
    };
    ctx.metrics
        .outdated
        .get_or_create(&labels)
        .set(i64::from(counts.outdated));
    ctx.metrics
        .desired
        .get_or_create(&labels)
        .set(i64::from(desired));
}

fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    // Keep the transition time while the status does not change.
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// What one reconcile found, for the pool's status.
struct StatusReport {
    counts: Counts,
    desired: u32,
    memory: PolicyMemory,
    /// The scale decision taken, if any.
    scaled: Option<String>,
    /// A Degraded reason and message.
    problem: Option<(&'static str, String)>,
    credentials_secret: Option<String>,
    /// The Bitbucket identity and this operator's calls with it in the last hour.
    api_calls: Option<(String, u32)>,
    /// Why steps' networks cannot follow the pod's MTU with this dind image, if they cannot.
    step_network_mtu: Option<String>,
    /// How many runners a rollout replaces at once (none for a static pool).
    rollout_surge: Option<u32>,
}

async fn write_status(
    ctx: &Context,
    pool: &RunnerPool,
    report: StatusReport,
) -> Result<(), ReconcileError> {
    let StatusReport {
        counts,
        desired,
        memory,
        scaled,
        problem,
        credentials_secret,
        api_calls,
        step_network_mtu,
        rollout_surge,
    } = report;
    ctx.metrics.set_degraded(
        &pool.namespace().unwrap_or_default(),
        &pool.name_any(),
        problem.as_ref().map(|(reason, _)| *reason),
    );
    let previous = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let capacity = counts.capacity();
    let ready = problem.is_none() && (desired == 0 || counts.online > 0);
    // A static pool has no API credentials: it sees its pods, not the runners.
    let (ready_reason, ready_message) = if pool.spec.mode == PoolMode::Static {
        (
            if ready { "PodsRunning" } else { "PodsStarting" },
            format!(
                "{} of {desired} runner pods running (a static pool has no API credentials: Bitbucket's runner list shows whether each is online)",
                counts.online
            ),
        )
    } else {
        (
            if ready {
                "RunnersOnline"
            } else {
                "RunnersStarting"
            },
            format!("{} of {desired} desired runners online", counts.online),
        )
    };
    let (degraded_reason, degraded_message) = match &problem {
        Some((reason, message)) => (*reason, message.clone()),
        None => ("AsExpected", "no problem seen".to_owned()),
    };
    let rolling = counts.outdated > 0;
    let (progressing_reason, progressing_message) = rollout_condition(&counts, rollout_surge);
    let status = RunnerPoolStatus {
        observed_generation: generation,
        desired,
        starting: counts.starting,
        online: counts.online,
        busy: counts.busy,
        idle: counts.idle,
        disabled: counts.disabled,
        offline: counts.offline,
        updated: counts.updated,
        outdated: counts.outdated,
        rolled_out_generation: if rolling {
            previous.rolled_out_generation
        } else {
            generation
        },
        conditions: vec![
            condition(
                &previous.conditions,
                "Progressing",
                rolling,
                progressing_reason,
                progressing_message.clone(),
                generation,
            ),
            condition(
                &previous.conditions,
                "Ready",
                ready,
                ready_reason,
                ready_message,
                generation,
            ),
            condition(
                &previous.conditions,
                "Scaling",
                capacity != desired,
                if capacity != desired {
                    "Converging"
                } else {
                    "Stable"
                },
                format!("{capacity} runners toward {desired} desired"),
                generation,
            ),
            condition(
                &previous.conditions,
                "Degraded",
                problem.is_some(),
                degraded_reason,
                degraded_message,
                generation,
            ),
            condition(
                &previous.conditions,
                STEP_NETWORK_MTU,
                step_network_mtu.is_none(),
                if step_network_mtu.is_some() {
                    DIND_BEFORE_24
                } else {
                    "FollowsPodNetwork"
                },
                step_network_mtu.clone().unwrap_or_else(|| {
                    "the Docker networks steps run on follow the pod's MTU".to_owned()
                }),
                generation,
            ),
        ],
        last_scale_time: if scaled.is_some() {
            Some(jiff::Timestamp::now().to_string())
        } else {
            previous.last_scale_time.clone()
        },
        last_scale_reason: scaled.or(previous.last_scale_reason.clone()),
        surplus_since: memory.surplus_since.and_then(format_time),
        occupancy: memory.occupancy_at.map(|_| memory.occupancy),
        occupancy_time: memory.occupancy_at.and_then(format_time),
        occupied: memory.occupancy_at.map(|_| memory.occupied),
        demand_profile: (memory.profile.seen() > 0).then(|| memory.profile.encode()),
        demand_slot_time: memory
            .slot
            .and_then(|slot| format_time(slot as f64 * forecast::SLOT)),
        demand_slot_peak: memory.slot.map(|_| memory.slot_peak),
        credentials_secret,
        api_identity: api_calls.as_ref().map(|(id, _)| id.clone()),
        // To the nearest 10 below, so that the status (which wakes the pool) rarely changes.
        api_calls_last_hour: api_calls.map(|(_, calls)| calls / 10 * 10),
    };
    let api: Api<RunnerPool> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    // Server-side apply under the operator's own field manager: the status is the operator's,
    // and what it stops reporting goes (no need to send nulls to clear a field).
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": RunnerPool::api_version(&()),
            "kind": RunnerPool::kind(&()),
            "status": status,
        })),
    )
    .await?;
    let was_rolling = previous.outdated > 0;
    if rolling != was_rolling {
        let reason = if rolling { "RollingOut" } else { "RolledOut" };
        tracing::info!(namespace = %pool.namespace().unwrap_or_default(), pool = %pool.name_any(), reason, "{progressing_message}");
        publish(
            ctx,
            pool,
            EventType::Normal,
            reason,
            "Rollout",
            progressing_message,
        )
        .await;
    }
    let warned_before = previous
        .conditions
        .iter()
        .any(|c| c.type_ == STEP_NETWORK_MTU && c.reason == DIND_BEFORE_24);
    if let Some(warning) = step_network_mtu
        && !warned_before
    {
        tracing::warn!(namespace = %pool.namespace().unwrap_or_default(), pool = %pool.name_any(), "{warning}");
        publish(
            ctx,
            pool,
            EventType::Warning,
            DIND_BEFORE_24,
            "Validate",
            warning,
        )
        .await;
    }
    Ok(())
}

/// The Progressing condition's reason and message: whether every runner runs the current
/// spec, and how the rest are replaced.
fn rollout_condition(counts: &Counts, surge: Option<u32>) -> (&'static str, String) {
    if counts.outdated == 0 {
        return ("RolledOut", "every runner runs the current spec".to_owned());
    }
    let total = counts.updated + counts.outdated;
    let how = match surge {
        None => "bbrunner cannot see whether a static runner is busy, so it replaces none: delete each of their pods (label bbrunner.dev/pool) when its runner is idle, and the operator recreates it from the current spec".to_owned(),
        Some(surge) => format!(
            "idle ones are replaced, up to {surge} at a time while their replacements start; busy ones once their step is done"
        ),
    };
    (
        "RollingOut",
        format!(
            "{} of {total} runners run an earlier spec (labels or pod template): {how}",
            counts.outdated
        ),
    )
}

/// The field manager of everything the operator applies.
const FIELD_MANAGER: &str = "bbrunner";

/// The condition saying whether steps' Docker networks follow the pod's MTU.
const STEP_NETWORK_MTU: &str = "StepNetworkMTU";
const DIND_BEFORE_24: &str = "DindBeforeDocker24";

/// Report a failed reconcile in the status: Degraded with the error's reason.
async fn write_failure(ctx: &Context, pool: &RunnerPool, error: &ReconcileError) {
    ctx.metrics.set_degraded(
        &pool.namespace().unwrap_or_default(),
        &pool.name_any(),
        Some(error.reason()),
    );
    let previous = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != "Degraded" && c.type_ != "Ready")
        .cloned()
        .collect();
    conditions.push(condition(
        &previous.conditions,
        "Ready",
        false,
        error.reason(),
        error.to_string(),
        generation,
    ));
    conditions.push(condition(
        &previous.conditions,
        "Degraded",
        true,
        error.reason(),
        error.to_string(),
        generation,
    ));
    let api: Api<RunnerPool> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let patch = json!({"status": {"observedGeneration": generation, "conditions": conditions}});
    if let Err(e) = api
        .patch_status(
            &pool.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot write the failure to the pool's status");
    }
    if previous
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .is_none_or(|c| c.reason != error.reason())
    {
        publish(
            ctx,
            pool,
            EventType::Warning,
            error.reason(),
            "Reconcile",
            error.to_string(),
        )
        .await;
    }
}

/// Requeue policy on errors: as the error says, but never later than the pool's next poll
/// for transient failures, so that a pool recovers within a poll once the fault is gone.
pub fn error_policy(
    object: Arc<DynamicObject>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Requeue {
    let pool = read_pool(&object).unwrap_or_else(|unreadable| unreadable.stand_in);
    let poll = pool
        .spec
        .scaling
        .resolve()
        .map(|s| poll_period(&ctx, &s))
        .unwrap_or(Duration::from_secs(15));
    let retry = match error {
        ReconcileError::Kube(_) => error.retry().min(poll),
        ReconcileError::Degraded {
            reason: "ApiUnreachable",
            ..
        } => error.retry().min(poll),
        _ => error.retry(),
    };
    Requeue::requeue(retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_event_note_is_cut_at_a_character_boundary_within_the_api_limit() {
        assert_eq!(event_note("short".into()), "short");
        let long = "é".repeat(700);
        let cut = event_note(long);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
    }
}
