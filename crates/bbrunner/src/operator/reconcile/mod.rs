//! One reconcile of one pool: observe (Kubernetes and Bitbucket) → plan (pure, in the core)
//! → execute → status. Every step is safe to interrupt: the next reconcile observes again.

mod cache;
mod drain;
mod error;
mod execute;
mod finalizers;
mod observe;
mod poll;
mod references;
mod registrations;
mod static_pool;
mod status;

pub use error::{ReconcileError, error_policy};
pub use finalizers::release_unused_credentials;
pub use observe::{credentials_from_secret, pools_resource, read_pool};

use error::*;
use execute::*;
use finalizers::*;
use observe::*;
use poll::*;
use static_pool::*;
use status::*;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bbrunner_core::admin_policy::AdminPolicy;
use bbrunner_core::forecast::{self};
use bbrunner_core::manifests::dind_networks_mtu_warning;
use bbrunner_core::ownership::{ClusterId, MAX_RUNNER_NAME, PoolIdentity};
use bbrunner_core::plan::{Action, Observation, ObservedSecret, PoolSettings, plan};
use bbrunner_core::queue_wait::QueueWaits;
use bbrunner_core::reason::Reason;
use bbrunner_core::scaling::PolicyMemory;
use bbrunner_core::schedule::overrides_at;
use bbrunner_core::units::RUNNERS_PER_SCOPE;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{EventType, Recorder};
use tracing::Instrument;

use crate::operator::crd::{PoolMode, RunnerPool};
use crate::operator::hub::Hub;
use crate::operator::metrics::{ErrorLabels, Metrics};
use crate::operator::pool::{self, InvalidSpec, ValidPool};

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

/// A managed pool's side of Bitbucket: the client of its identity, its scope, and how its
/// runners are named.
pub(super) struct PoolBitbucket<'a> {
    pub client: &'a bitbucket::Client,
    pub scope: &'a bitbucket::RunnerScope,
    pub identity: &'a PoolIdentity<'a>,
}

pub struct Context {
    pub client: kube::Client,
    /// The clock of every time-based rule.
    pub clock: crate::operator::clock::Clock,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub settings: Settings,
    /// This cluster's name in runner names.
    pub cluster: ClusterId,
    /// The queue-policy pools' pending steps, for the observed queue wait.
    pub queue_waits: Mutex<QueueWaits>,
    /// Pipelines heard of through webhooks, for the pools' lookahead.
    pub demand: Arc<crate::operator::demand::Demand>,
    /// Which static pool runs each imported runner.
    pub registrations: registrations::Registrations,
    /// Which pools read which Secrets: a change to one wakes them.
    pub secret_references: references::SecretReferences,
    /// Reconciles of each pool that failed in a row, for the backoff.
    pub failures: error::Failures,
}

pub use registrations::Registrations;

/// Entry point for both normal reconciles and finalizer cleanup.
pub async fn reconcile(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let started = std::time::Instant::now();
    // Every line logged while reconciling names the pool through this span.
    let span = tracing::info_span!(
        "pool",
        namespace = %object.namespace().unwrap_or_default(),
        pool = %object.name_any()
    );
    async {
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
        ctx.failures.record(
            &(pool.namespace().unwrap_or_default(), pool.name_any()),
            result.is_ok(),
        );
        if let Err(e) = &result {
            tracing::warn!(reason = %e.reason(), error = %e, "reconcile failed");
            let pool_gone = matches!(e, ReconcileError::Kube(kube::Error::Api(s)) if s.code == 404);
            if !pool_gone {
                ctx.metrics.count_error(ErrorLabels {
                    namespace: pool.namespace().unwrap_or_default(),
                    pool: pool.name_any(),
                    reason: e.reason().as_str().to_owned(),
                });
                write_failure(&ctx, &pool, e).await;
            }
        }
        result
    }
    .instrument(span)
    .await
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
    Err(degraded(
        Reason::InvalidSpec,
        message,
        Duration::from_secs(300),
    ))
}

/// Pools are written through the untyped API: the answer to a write is never read as a
/// RunnerPool, so a stored pool the type cannot hold cannot fail the write, nor have the
/// client log its whole body (values that may be secrets) on the failed read.
pub(super) fn pool_api(ctx: &Context, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), namespace, &pools_resource())
}

async fn reconcile_inner(pool: &RunnerPool, ctx: &Context) -> Result<Requeue, ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let api = pool_api(ctx, &ns);
    let deleting = pool.metadata.deletion_timestamp.is_some();
    // Before anything can fail: a fix to one of these Secrets must wake the pool.
    let read: Vec<&str> = pool
        .spec
        .credentials
        .iter()
        .map(|c| c.secret_ref.name.as_str())
        .chain(
            pool.spec
                .static_runners
                .iter()
                .map(|r| r.secret_ref.name.as_str()),
        )
        .collect();
    ctx.secret_references.set(&ns, &pool.name_any(), &read);
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
            return Err(degraded(
                Reason::InvalidSpec,
                message,
                Duration::from_secs(300),
            ));
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
            Reason::PolicyViolation,
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

async fn reconcile_managed(
    pool: &RunnerPool,
    ctx: &Context,
    valid: &ValidPool,
    api: &Api<DynamicObject>,
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
            Reason::InvalidSpec,
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
            tracing::warn!("{note}");
            publish(
                ctx,
                pool,
                EventType::Warning,
                Reason::CleanupAbandoned,
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
    let scope = scope_of(pool);
    let client = ctx
        .hub
        .client(&(ns.clone(), name.clone()), credentials, &scope)
        .map_err(from_bitbucket)?;
    let polling = Polling::of(ctx, &valid.scaling, &client);
    let poll = polling.period(ctx);
    let bitbucket = PoolBitbucket {
        client: &client,
        scope: &scope,
        identity: &identity,
    };
    let ManagedObservation {
        observation,
        marks,
        pool_pods,
    } = observe_managed(ctx, pool, valid, &bitbucket, &polling).await?;
    drain::mark_busy_pods(ctx, &ns, &marks, &observation.runners).await;
    let settings = pool_settings(ctx, pool, valid, observation.now, deleting_since);
    let planned = plan(&settings, &observation);
    let cache_step = cache::decide(ctx, pool, valid, &planned, &observation, pool_pods).await?;
    let mut handovers = cache_step.handovers(ctx, pool, valid.cache.as_ref());
    let changed = execute(ctx, pool, valid, &bitbucket, &planned, &mut handovers).await;
    if changed.as_ref().is_ok_and(|n| *n > 0) || changed.is_err() {
        ctx.hub.invalidate(&client, &scope);
    }
    if planned.actions.contains(&Action::RemoveFinalizer) {
        publish(
            ctx,
            pool,
            EventType::Normal,
            Reason::PoolDeleted,
            "Delete",
            "every runner of the pool is deleted in Bitbucket".into(),
        )
        .await;
        return finish_deletion(ctx, pool, api).await;
    }
    changed?;
    let cache_counts = cache_step.finish(ctx, pool, observation.now).await?;
    record_metrics(ctx, pool, &planned.counts, planned.decision.desired);
    let mut report = StatusReport {
        counts: planned.counts,
        desired: planned.decision.desired,
        memory: planned.memory,
        scaled: None,
        problem: None,
        credentials_secret,
        api_calls: Some((client.opaque_id(), client.calls_last_hour())),
        poll_in_effect: Some(polling.every),
        step_network_mtu: dind_networks_mtu_warning(&valid.dind.image, valid.dind.mtu),
        rollout_surge: Some(settings.rollout_surge()),
        cache: cache::cache_status(valid.cache.as_ref(), cache_counts),
    };
    if deleting_since.is_some() {
        // Busy runners are finishing their steps; the pool goes once they are done.
        write_status(ctx, pool, report).await?;
        return Ok(Requeue::requeue(poll));
    }
    report.scaled = report_scaling(ctx, pool, &planned).await;
    let deleting_credentials =
        credentials_deleted.then(|| report.credentials_secret.clone().unwrap_or_default());
    report.problem = planned.problem(deleting_credentials.as_deref());
    write_status(ctx, pool, report).await?;
    Ok(Requeue::requeue(poll))
}

#[cfg(test)]
mod fixture;
