//! What a reconcile reads: the pool as stored, its credentials, its pods, Secrets and
//! runners, turned into what the planner observes (times on the operator's clock).

use std::time::Duration;

use bbrunner_core::forecast::DemandProfile;
use bbrunner_core::ids::RunnerUuid;
use bbrunner_core::manifests::LABEL_RUNNER_UUID;
use bbrunner_core::plan::{ObservedPod, ObservedRunner, PodPhase, RunnerStatus};
use bbrunner_core::queue_wait::SeenStep;
use bbrunner_core::scaling::reads_queue;
use bitbucket::{Client, Credentials, RunnerScope};
use k8s_openapi::api::core::v1::{PodCondition, Secret};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, PartialObjectMeta};
use secrecy::SecretString;
use serde_json::json;

use crate::operator::clock::Clock;
use crate::operator::crd::{RunnerPool, RunnerPoolSpec};
use crate::operator::demand::Asking;
use crate::operator::metrics::PoolLabels;
use crate::operator::pod_view::PodView;
use crate::operator::pool::{
    self, ANNOTATION_RAN_STEP, ANNOTATION_TEMPLATE, LABEL_POOL, PodTemplate, ValidPool,
};

use super::*;

pub(super) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|v| !v.is_empty())
}

/// The pool's credentials, and whether their Secret is being deleted. While the pool is not
/// being deleted, the Secret is held with [`pool::CREDENTIALS_FINALIZER`].
pub(super) async fn credentials(
    ctx: &Context,
    pool: &RunnerPool,
) -> Result<(Credentials, bool), ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let Some(cred) = &pool.spec.credentials else {
        return Err(degraded(
            Reason::CredentialsInvalid,
            "spec.credentials.secretRef is not set; a managed pool needs Bitbucket API credentials",
            Duration::from_secs(60),
        ));
    };
    let name = &cred.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(secret) = secrets.get_opt(name).await? else {
        return Err(degraded(
            Reason::CredentialsInvalid,
            format!("Secret {ns}/{name} (spec.credentials.secretRef) does not exist"),
            Duration::from_secs(30),
        ));
    };
    let credentials = credentials_from_secret(&secret).ok_or_else(|| {
        degraded(
            Reason::CredentialsInvalid,
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
        tracing::info!(secret = %name, "holding the credentials Secret until no pool uses it");
    }
    Ok((credentials, terminating))
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

pub(super) fn scope_of(pool: &RunnerPool) -> RunnerScope {
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
pub(super) fn demand_profile(encoded: Option<&str>) -> DemandProfile {
    let Some(encoded) = encoded else {
        return DemandProfile::default();
    };
    DemandProfile::decode(encoded).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        DemandProfile::default()
    })
}

/// A warning, at most every ten minutes, when Bitbucket's timestamps run ahead of the
/// operator's clock: its time-based rules (registration TTL, delays) then misjudge runners.
fn warn_of_clock_skew(now: f64, stamps: impl Iterator<Item = f64>) {
    static LAST_WARNED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let Some(ahead) = bbrunner_core::clock_skew::ahead(now, stamps) else {
        return;
    };
    let mut last = LAST_WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|at| at.elapsed() < Duration::from_secs(600)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    tracing::warn!(
        ahead_seconds = ahead.round(),
        "Bitbucket's runner timestamps are {:.0} s ahead of the operator's clock: runners will look younger than they are; fix the node's clock (NTP), or, against a fake-bitbucket with --time-scale, give the operator the same --time-scale and its --clock-origin (the fake's epoch, GET /_fake/clock)",
        ahead
    );
}

pub(super) fn parse_time(t: &str) -> Option<f64> {
    t.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond() as f64 / 1000.0)
}

pub(super) fn format_time(seconds: f64) -> Option<String> {
    jiff::Timestamp::from_millisecond((seconds * 1000.0) as i64)
        .ok()
        .map(|t| t.to_string())
}

/// The pod's PodScheduled condition while the scheduler finds no node for it.
pub(super) fn unschedulable_condition(pod: &PodView) -> Option<&PodCondition> {
    pod.status.as_ref()?.conditions.iter().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })
}

/// The scheduler's words in that condition.
pub(super) fn unschedulable_message(condition: &PodCondition) -> String {
    condition
        .message
        .clone()
        .unwrap_or_else(|| "no node fits the pod".into())
}

/// A pod as the planner sees it, its times on the operator's clock.
pub(super) fn observe_pod(pod: &PodView, clock: &Clock) -> Option<ObservedPod> {
    let runner = RunnerUuid::parse(pod.labels().get(LABEL_RUNNER_UUID)?).ok()?;
    let status = pod.status.clone().unwrap_or_default();
    let phase = match status.phase.as_deref() {
        Some("Pending") | None => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some(_) => PodPhase::Unknown,
    };
    let unschedulable = unschedulable_condition(pod).map(unschedulable_message);
    let conditions = status.conditions;
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

pub(super) fn observe_runner(r: &bitbucket::Runner) -> ObservedRunner {
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

/// A RunnerPool as stored, read as the current type; or, when it cannot be, the field at
/// fault and a stand-in that keeps what can be read (metadata, status, and each spec field
/// that parses on its own), enough to report the problem and to clean up a deleted pool.
pub fn read_pool(object: &DynamicObject) -> Result<RunnerPool, Box<Unreadable>> {
    let value = serde_json::to_value(object).unwrap_or_default();
    serde_path_to_error::deserialize::<_, RunnerPool>(value.clone()).map_err(|e| {
        Box::new(Unreadable {
            field: format!("{}: {}", e.path(), without_values(&e.inner().to_string())),
            stand_in: stand_in(object, &value),
        })
    })
}

/// A serde error's message without the value it quotes (`invalid type: string "…"`), since
/// a spec's values may be secrets (an env value) and the message goes to logs, conditions and
/// Events. What is expected, and an unknown field's name, are kept: they come from the type
/// or are keys, not values.
fn without_values(message: &str) -> String {
    if message.starts_with("unknown field") {
        return message.to_owned();
    }
    let (found, expected) = match message.split_once(", expected") {
        Some((found, expected)) => (found, Some(expected)),
        None => (message, None),
    };
    let mut kept = String::new();
    let mut quote = None;
    for c in found.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => quote = Some(c),
            None => kept.push(c),
        }
    }
    let kept = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    match expected {
        Some(expected) => format!("{kept}, expected{expected}"),
        None => kept,
    }
}

/// A pool that cannot be read as the current type.
pub struct Unreadable {
    /// The field at fault and what is wrong with it.
    pub field: String,
    pub stand_in: RunnerPool,
}

pub(super) fn stand_in(object: &DynamicObject, value: &serde_json::Value) -> RunnerPool {
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

/// The pool's pods (their view) and Secrets (metadata only: their data never leaves the API
/// server on a list).
pub(super) async fn pool_objects(
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

pub(super) async fn queued_steps(
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

/// How long each pod took to become Ready, at the slowest its timestamps allow. Kubernetes
/// writes them in whole seconds, so a start may have lasted up to one wall second more than
/// they show: little against a real start, but on a fast clock (a simulation) a start read as
/// zero would ask for runners too late.
fn slowest_starts(pods: &[ObservedPod], clock: &Clock) -> Vec<f64> {
    pods.iter()
        .filter_map(|p| Some(p.ready_since? - p.created_at + clock.per_wall_second()))
        .collect()
}

/// Runners the pool should ready for the next stages of pipelines under way that the
/// webhooks told of (0 with its lookahead off, or when none did).
async fn runners_ahead(
    ctx: &Context,
    pool: &RunnerPool,
    valid: &ValidPool,
    client: &Client,
    pods: &[ObservedPod],
) -> u32 {
    if !valid.scaling.lookahead {
        return 0;
    }
    let recent_starts = slowest_starts(pods, &ctx.clock);
    let (namespace, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
    let serves = |labels: &[String]| valid.labels.serves(labels);
    let ahead = ctx
        .demand
        .runners_ahead(
            client,
            &ctx.metrics,
            &Asking {
                namespace: &namespace,
                name: &name,
                workspace: &pool.spec.workspace,
                repository: pool.spec.repository.as_deref(),
                serves: &serves,
                recent_starts: &recent_starts,
                poll: valid.scaling.poll_interval,
            },
        )
        .await;
    ctx.metrics
        .runners_ahead
        .get_or_create(&PoolLabels {
            namespace,
            pool: name,
        })
        .set(i64::from(ahead));
    ahead
}

/// What the planner observes of a managed pool: its runners in Bitbucket (only those this
/// cluster made for it), its pods and Secrets, its queue where read, and the policy's memory
/// kept in its status.
/// What a managed pool's reconcile observes: the planner's view, and the pods' marks and
/// cache claims read from the same list.
pub(super) struct ManagedObservation {
    pub observation: Observation,
    pub marks: Vec<super::drain::PodMark>,
    pub pool_pods: bbrunner_core::cache::PoolPods,
}

pub(super) async fn observe_managed(
    ctx: &Context,
    pool: &RunnerPool,
    valid: &ValidPool,
    bitbucket: &PoolBitbucket<'_>,
    polling: &Polling,
) -> Result<ManagedObservation, ReconcileError> {
    let PoolBitbucket {
        client,
        scope,
        identity,
    } = bitbucket;
    let listed = ctx
        .hub
        .runners(client, scope, polling.list_max_age(ctx))
        .await
        .map_err(from_bitbucket)?;
    let (pods, secrets) = pool_objects(ctx, pool).await?;
    let marks = super::drain::pod_marks(&pods);
    let pool_pods = super::cache::pool_pods(
        &pods,
        secrets.iter().filter_map(|s| s.metadata.name.as_deref()),
        &ctx.clock,
    );
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
    let runners: Vec<ObservedRunner> = listed
        .runners
        .iter()
        .filter(|r| identity.owns(&r.name, held_here(&r.uuid)))
        .map(observe_runner)
        .collect();
    warn_of_clock_skew(
        ctx.clock.now(),
        listed
            .runners
            .iter()
            .filter_map(|r| r.state.updated_on.as_deref().and_then(parse_time)),
    );
    let queued = queued_steps(ctx, pool, client, valid).await;
    let ahead = runners_ahead(ctx, pool, valid, client, &observed_pods).await;
    let status = pool.status.clone().unwrap_or_default();
    let observation = Observation {
        now: ctx.clock.now(),
        runners,
        runners_fetched_at: ctx.clock.at(listed.fetched_at),
        pods: observed_pods,
        secrets: observed_secrets,
        memory: PolicyMemory {
            surplus_since: status.surplus_since.as_deref().and_then(parse_time),
            occupancy: status.occupancy.unwrap_or_default(),
            occupancy_at: status.occupancy_time.as_deref().and_then(parse_time),
            occupied: status.occupied.unwrap_or_default(),
            profile: demand_profile(status.demand_profile.as_deref()),
            slot: status
                .demand_slot_time
                .as_deref()
                .and_then(parse_time)
                .map(forecast::slot_number),
            slot_peak: status.demand_slot_peak.unwrap_or_default(),
        },
        queued,
        ahead,
        scope_room: RUNNERS_PER_SCOPE.saturating_sub(listed.runners.len() as u32),
    };
    Ok(ManagedObservation {
        observation,
        marks,
        pool_pods,
    })
}

/// The pool as the planner needs it, at `now`.
pub(super) fn pool_settings(
    ctx: &Context,
    pool: &RunnerPool,
    valid: &ValidPool,
    now: f64,
    deleting_since: Option<f64>,
) -> PoolSettings {
    PoolSettings {
        overrides: overrides_at(&valid.scaling.schedules, now),
        scaling: valid.scaling.clone(),
        ephemeral: pool.spec.ephemeral,
        registration_ttl: ctx.settings.registration_ttl.as_secs_f64(),
        deleting_since,
        deletion_grace: ctx.settings.deletion_grace.as_secs_f64(),
        labels: valid.labels.as_slice().to_vec(),
        template: Some(
            PodTemplate {
                pool,
                valid,
                repository_scoped: pool.spec.repository.is_some(),
            }
            .revision(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> PodView {
        serde_json::from_value(value).unwrap()
    }

    const UUID: &str = "{00000000-0000-4000-8000-000000000001}";

    #[test]
    fn a_pod_is_observed_with_its_runner_phase_template_and_scheduling() {
        let clock = Clock::wall();
        let waiting = pod(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {LABEL_RUNNER_UUID: UUID},
                "annotations": {"bbrunner.dev/template": "abc", "bbrunner.dev/ran-step": "true"}},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available"}]},
        }));
        let seen = observe_pod(&waiting, &clock).unwrap();
        assert_eq!(seen.runner.to_string(), UUID);
        assert_eq!(seen.phase, PodPhase::Pending);
        assert_eq!(
            seen.unschedulable.as_deref(),
            Some("0/3 nodes are available")
        );
        assert_eq!(seen.template.as_deref(), Some("abc"));
        assert!(seen.ran_step);
        assert_eq!(seen.created_at, 1_767_225_600.0);
        let ready = pod(json!({
            "metadata": {"name": "p", "labels": {LABEL_RUNNER_UUID: UUID}, "deletionTimestamp": "2026-01-01T00:00:09Z"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:05Z"}]},
        }));
        let seen = observe_pod(&ready, &clock).unwrap();
        assert_eq!((seen.phase, seen.terminating), (PodPhase::Running, true));
        assert_eq!(seen.ready_since, Some(1_767_225_605.0));
        // Not a runner pod: not observed.
        assert!(observe_pod(&pod(json!({"metadata": {"name": "other"}})), &clock).is_none());
    }

    #[test]
    fn a_start_counts_the_wall_second_its_timestamps_may_hide() {
        let pod = |created: &str, ready: Option<&str>| {
            let mut conditions = vec![];
            if let Some(ready) = ready {
                conditions
                    .push(json!({"type": "Ready", "status": "True", "lastTransitionTime": ready}));
            }
            observe_pod(
                &pod(json!({
                    "metadata": {"name": "p", "creationTimestamp": created, "labels": {LABEL_RUNNER_UUID: UUID}},
                    "status": {"phase": "Running", "conditions": conditions},
                })),
                &Clock::wall(),
            )
            .unwrap()
        };
        let pods = [
            pod("2026-01-01T00:00:00Z", Some("2026-01-01T00:00:00Z")),
            pod("2026-01-01T00:00:00Z", Some("2026-01-01T00:00:20Z")),
            pod("2026-01-01T00:00:00Z", None),
        ];
        assert_eq!(slowest_starts(&pods, &Clock::wall()), vec![1.0, 21.0]);
        // Thirty times faster: the hidden wall second is thirty seconds of the clock.
        let fast = Clock::scaled(1_767_225_600.0, 30.0);
        let pods = [pod("2026-01-01T00:00:00Z", Some("2026-01-01T00:00:00Z"))];
        assert_eq!(slowest_starts(&pods, &fast), vec![30.0]);
    }

    #[test]
    fn a_runner_is_observed_with_its_status_step_and_labels() {
        let runner: bitbucket::Runner = serde_json::from_value(json!({
            "uuid": UUID, "name": "bbrunner.c.ci.builds.x", "labels": ["self.hosted", "linux", "build"],
            "state": {"status": "ONLINE", "updated_on": "2026-01-01T00:00:00Z",
                "step": {"type": "PIPELINE_STEP", "uuid": "{s}"}},
        }))
        .unwrap();
        let seen = observe_runner(&runner);
        assert_eq!((seen.status, seen.busy), (RunnerStatus::Online, true));
        assert_eq!(seen.status_since, Some(1_767_225_600.0));
        assert_eq!(seen.labels.unwrap(), ["self.hosted", "linux", "build"]);
    }

    #[test]
    fn credentials_are_read_from_the_first_complete_pair_of_keys() {
        let secret = |data: &[(&str, &str)]| Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| {
                        (
                            (*k).to_owned(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            ..Secret::default()
        };
        let kind = |s: &Secret| credentials_from_secret(s).map(|c| c.kind());
        assert_eq!(
            kind(&secret(&[
                ("oauthClientId", "k"),
                ("oauthClientSecret", "s")
            ])),
            Some("OAuth consumer")
        );
        assert_eq!(
            kind(&secret(&[("email", "e"), ("apiToken", "t")])),
            Some("API token")
        );
        assert_eq!(
            kind(&secret(&[("username", "u"), ("appPassword", "p")])),
            Some("app password")
        );
        assert_eq!(kind(&secret(&[("accessToken", "t")])), Some("access token"));
        // Half a pair, or an empty value, is no credential.
        assert_eq!(kind(&secret(&[("oauthClientId", "k")])), None);
        assert_eq!(kind(&secret(&[("accessToken", "")])), None);
    }

    #[test]
    fn an_unreadable_pool_names_its_field_and_keeps_what_can_be_read() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": "odd", "namespace": "ci"},
            "spec": {"workspace": "acme", "credentials": {"secretRef": {"name": "creds"}},
                "runner": {"size": "16x"}},
        }))
        .unwrap();
        let unreadable = read_pool(&object).unwrap_err();
        assert!(
            unreadable.field.starts_with("spec.runner.size"),
            "{}",
            unreadable.field
        );
        let kept = unreadable.stand_in;
        assert_eq!(kept.spec.workspace, "acme");
        assert_eq!(kept.spec.credentials.unwrap().secret_ref.name, "creds");
        assert_eq!(kept.metadata.namespace.as_deref(), Some("ci"));
    }

    #[test]
    fn an_unreadable_pool_s_message_quotes_no_value_from_the_spec() {
        let marker = "hunter2-marker";
        for spec in [
            json!({"workspace": "acme", "runner": {"size": marker}}),
            json!({"workspace": "acme", "runner": {"env": [{"name": "TOKEN", "value": 7}], "size": marker}}),
            json!({"workspace": "acme", "runner": {"env": marker}}),
            json!({"workspace": "acme", "scaling": {"max": marker}}),
            json!({"workspace": "acme", "mode": marker}),
            json!({"workspace": "acme", "labels": [marker, 7]}),
        ] {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
                "metadata": {"name": "odd"}, "spec": spec,
            }))
            .unwrap();
            let field = read_pool(&object).unwrap_err().field;
            assert!(
                field.starts_with("spec.") && !field.contains(marker),
                "{field}"
            );
            assert!(field.contains("expected"), "{field}");
        }
    }

    #[test]
    fn a_damaged_demand_profile_is_dropped() {
        assert_eq!(demand_profile(Some("not base64!")).seen(), 0);
        assert_eq!(demand_profile(None).seen(), 0);
    }
}
