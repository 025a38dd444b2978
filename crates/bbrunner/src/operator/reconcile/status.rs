//! The pool's status, written by one writer (server-side apply under the operator's field
//! manager): counts, conditions, memory, and the metrics beside them.

use bbrunner_core::forecast;
use bbrunner_core::plan::{Action, Counts, Plan};
use bbrunner_core::scaling::PolicyMemory;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::operator::crd::{PoolMode, RunnerPool, RunnerPoolStatus};
use crate::operator::metrics::{PoolLabels, RunnerStateLabels};

use super::*;

pub(super) fn record_metrics(ctx: &Context, pool: &RunnerPool, counts: &Counts, desired: u32) {
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

pub(super) fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: Reason,
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
        reason: reason.as_str().to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// What one reconcile found, for the pool's status.
pub(super) struct StatusReport {
    pub(super) counts: Counts,
    pub(super) desired: u32,
    pub(super) memory: PolicyMemory,
    /// The scale decision taken, if any.
    pub(super) scaled: Option<String>,
    /// A Degraded reason and message.
    pub(super) problem: Option<(Reason, String)>,
    pub(super) credentials_secret: Option<String>,
    /// The Bitbucket identity and this operator's calls with it in the last hour.
    pub(super) api_calls: Option<(String, u32)>,
    /// The poll interval in effect, in the operator's seconds (none for a static pool).
    pub(super) poll_in_effect: Option<f64>,
    /// Why steps' networks cannot follow the pod's MTU with this dind image, if they cannot.
    pub(super) step_network_mtu: Option<String>,
    /// How many runners a rollout replaces at once (none for a static pool).
    pub(super) rollout_surge: Option<u32>,
    /// The warm cache's claims, for a pool that has any.
    pub(super) cache: Option<bbrunner_core::cache::CacheCounts>,
}

pub(super) async fn write_status(
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
        poll_in_effect,
        step_network_mtu,
        rollout_surge,
        cache,
    } = report;
    if let Some(counts) = cache {
        ctx.metrics.set_cache_volumes(
            &pool.namespace().unwrap_or_default(),
            &pool.name_any(),
            counts,
        );
    }
    if let Some(seconds) = poll_in_effect {
        ctx.metrics
            .poll_interval
            .get_or_create(&PoolLabels {
                namespace: pool.namespace().unwrap_or_default(),
                pool: pool.name_any(),
            })
            .set(seconds);
    }
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
            if ready {
                Reason::PodsRunning
            } else {
                Reason::PodsStarting
            },
            format!(
                "{} of {desired} runner pods running (a static pool has no API credentials: Bitbucket's runner list shows whether each is online)",
                counts.online
            ),
        )
    } else {
        (
            if ready {
                Reason::RunnersOnline
            } else {
                Reason::RunnersStarting
            },
            format!("{} of {desired} desired runners online", counts.online),
        )
    };
    let (degraded_reason, degraded_message) = match &problem {
        Some((reason, message)) => (*reason, message.clone()),
        None => (Reason::AsExpected, "no problem seen".to_owned()),
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
                PROGRESSING,
                rolling,
                progressing_reason,
                progressing_message.clone(),
                generation,
            ),
            condition(
                &previous.conditions,
                READY,
                ready,
                ready_reason,
                ready_message,
                generation,
            ),
            condition(
                &previous.conditions,
                SCALING,
                capacity != desired,
                if capacity != desired {
                    Reason::Converging
                } else {
                    Reason::Stable
                },
                format!("{capacity} runners toward {desired} desired"),
                generation,
            ),
            condition(
                &previous.conditions,
                DEGRADED,
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
                    Reason::DindBeforeDocker24
                } else {
                    Reason::FollowsPodNetwork
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
        poll_interval_in_effect: poll_in_effect.map(bbrunner_core::units::format_duration),
        cache: cache.map(|c| crate::operator::crd::CacheStatus {
            volumes: c.total(),
            in_use: c.in_use,
            warm: c.warm,
            skipped: c.skipped,
        }),
    };
    apply_status(ctx, pool, &status).await?;
    let was_rolling = previous.outdated > 0;
    if rolling != was_rolling {
        let reason = if rolling {
            Reason::RollingOut
        } else {
            Reason::RolledOut
        };
        tracing::info!(%reason, "{progressing_message}");
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
        .any(|c| c.type_ == STEP_NETWORK_MTU && c.reason == Reason::DindBeforeDocker24.as_str());
    if let Some(warning) = step_network_mtu
        && !warned_before
    {
        tracing::warn!("{warning}");
        publish(
            ctx,
            pool,
            EventType::Warning,
            Reason::DindBeforeDocker24,
            "Validate",
            warning,
        )
        .await;
    }
    Ok(())
}

/// The Progressing condition's reason and message: whether every runner runs the current
/// spec, and how the rest are replaced.
pub(super) fn rollout_condition(counts: &Counts, surge: Option<u32>) -> (Reason, String) {
    if counts.outdated == 0 {
        return (
            Reason::RolledOut,
            "every runner runs the current spec".to_owned(),
        );
    }
    let total = counts.updated + counts.outdated;
    let how = match surge {
        None => "bbrunner cannot see whether a static runner is busy, so it replaces none: delete each of their pods (label bbrunner.dev/pool) when its runner is idle, and the operator recreates it from the current spec".to_owned(),
        Some(surge) => format!(
            "idle ones are replaced, up to {surge} at a time while their replacements start; busy ones once their step is done"
        ),
    };
    (
        Reason::RollingOut,
        format!(
            "{} of {total} runners run an earlier spec (labels or pod template): {how}",
            counts.outdated
        ),
    )
}

/// The field manager of everything the operator applies.
pub(super) const FIELD_MANAGER: &str = "bbrunner";

/// The pool's condition types.
pub(super) const READY: &str = "Ready";
pub(super) const SCALING: &str = "Scaling";
pub(super) const PROGRESSING: &str = "Progressing";
pub(super) const DEGRADED: &str = "Degraded";
/// Whether steps' Docker networks follow the pod's MTU.
pub(super) const STEP_NETWORK_MTU: &str = "StepNetworkMTU";

/// Report a failed reconcile in the status: Degraded with the error's reason.
pub(super) async fn write_failure(ctx: &Context, pool: &RunnerPool, error: &ReconcileError) {
    let reason = error.reason();
    ctx.metrics.set_degraded(
        &pool.namespace().unwrap_or_default(),
        &pool.name_any(),
        Some(reason),
    );
    let previous = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let mut status = previous.clone();
    status.observed_generation = generation;
    status
        .conditions
        .retain(|c| c.type_ != DEGRADED && c.type_ != READY);
    for (type_, value) in [(READY, false), (DEGRADED, true)] {
        status.conditions.push(condition(
            &previous.conditions,
            type_,
            value,
            reason,
            error.to_string(),
            generation,
        ));
    }
    // The one writer of the status: the whole of it, applied under the operator's manager.
    if let Err(e) = apply_status(ctx, pool, &status).await {
        tracing::warn!(error = %e, "cannot write the failure to the pool's status");
    }
    if previous
        .conditions
        .iter()
        .find(|c| c.type_ == DEGRADED)
        .is_none_or(|c| c.reason != reason.as_str())
    {
        publish(
            ctx,
            pool,
            EventType::Warning,
            reason,
            "Reconcile",
            error.to_string(),
        )
        .await;
    }
}

/// Server-side apply of the whole status under the operator's own field manager: the status
/// is the operator's, and what it stops reporting goes (no need to send nulls to clear a
/// field).
async fn apply_status(
    ctx: &Context,
    pool: &RunnerPool,
    status: &RunnerPoolStatus,
) -> Result<(), kube::Error> {
    super::pool_api(ctx, &pool.namespace().unwrap_or_default())
        .patch_status(
            &pool.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": RunnerPool::api_version(&()),
                "kind": RunnerPool::kind(&()),
                "status": status,
            })),
        )
        .await
        .map(|_| ())
}

/// The scale decision a plan carries out, if it creates or drains: logged, recorded as an
/// Event, and returned for the status.
pub(super) async fn report_scaling(
    ctx: &Context,
    pool: &RunnerPool,
    planned: &Plan,
) -> Option<String> {
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
    if creates == 0 && drains == 0 {
        return None;
    }
    let message = format!(
        "desired {} ({}): {creates} created, {drains} drained",
        planned.decision.desired, planned.decision.reason
    );
    tracing::info!(
        desired = planned.decision.desired,
        creates,
        drains,
        reason = planned.decision.reason,
        "scaling"
    );
    publish(
        ctx,
        pool,
        EventType::Normal,
        Reason::Scaled,
        "Scale",
        message.clone(),
    )
    .await;
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let first = condition(
            &[],
            READY,
            true,
            Reason::RunnersOnline,
            "1 of 1".into(),
            Some(1),
        );
        let mut earlier = first.clone();
        earlier.last_transition_time = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let same = condition(
            std::slice::from_ref(&earlier),
            READY,
            true,
            Reason::RunnersOnline,
            "2 of 2".into(),
            Some(2),
        );
        assert_eq!(same.last_transition_time, earlier.last_transition_time);
        assert_eq!(
            (same.message.as_str(), same.observed_generation),
            ("2 of 2", Some(2))
        );
        let flipped = condition(
            &[earlier.clone()],
            READY,
            false,
            Reason::RunnersStarting,
            "0 of 1".into(),
            Some(2),
        );
        assert_ne!(flipped.last_transition_time, earlier.last_transition_time);
        assert_eq!(
            (flipped.status.as_str(), flipped.reason.as_str()),
            ("False", "RunnersStarting")
        );
    }

    #[test]
    fn the_rollout_condition_says_how_the_rest_are_replaced() {
        let counts = |updated, outdated| Counts {
            updated,
            outdated,
            ..Counts::default()
        };
        let (reason, message) = rollout_condition(&counts(3, 0), Some(1));
        assert_eq!(
            (reason, message.as_str()),
            (Reason::RolledOut, "every runner runs the current spec")
        );
        let (reason, message) = rollout_condition(&counts(1, 2), Some(2));
        assert_eq!(reason, Reason::RollingOut);
        assert!(
            message.starts_with("2 of 3 runners run an earlier spec")
                && message.contains("up to 2 at a time"),
            "{message}"
        );
        let (_, message) = rollout_condition(&counts(0, 1), None);
        assert!(
            message.contains("cannot see whether a static runner is busy"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_failure_is_applied_as_the_whole_status_under_the_operator_s_manager() {
        let (client, mut server) = fixture::client();
        let ctx = fixture::context(client);
        let mut pool = fixture::pool(json!({"workspace": "acme"}));
        pool.status = Some(RunnerPoolStatus {
            desired: 2,
            online: 2,
            demand_profile: Some("kept".into()),
            ..RunnerPoolStatus::default()
        });
        let error = degraded(
            Reason::RateLimited,
            "slow down",
            std::time::Duration::from_secs(9),
        );
        let written = tokio::spawn(async move { write_failure(&ctx, &pool, &error).await });
        let answer = json!({"apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": "builds", "namespace": "ci"}, "spec": {"workspace": "acme"}});
        let sent = fixture::expect(&mut server, 200, answer).await;
        assert_eq!(sent.method, "PATCH");
        assert!(
            sent.uri.starts_with(
                "/apis/bbrunner.dev/v1alpha1/namespaces/ci/runnerpools/builds/status?"
            ) && sent.uri.contains("fieldManager=bbrunner")
                && sent.uri.contains("force=true"),
            "{}",
            sent.uri
        );
        assert_eq!(sent.content_type, "application/apply-patch+yaml");
        let status = &sent.body["status"];
        assert_eq!(status["observedGeneration"], 3);
        // What the pool reported before stays: the status has one writer, who sends it whole.
        assert_eq!(
            (status["desired"].clone(), status["demandProfile"].clone()),
            (json!(2), json!("kept"))
        );
        let degraded = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Degraded")
            .unwrap();
        assert_eq!(
            (degraded["status"].as_str(), degraded["reason"].as_str()),
            (Some("True"), Some("RateLimited"))
        );
        // Then the Warning Event, since the pool was not Degraded for this reason before.
        let event = fixture::expect(&mut server, 201, json!({})).await;
        assert_eq!(event.method, "POST");
        assert!(
            event
                .uri
                .contains("/apis/events.k8s.io/v1/namespaces/ci/events"),
            "{}",
            event.uri
        );
        assert_eq!(event.body["reason"], "RateLimited");
        assert_eq!(event.body["type"], "Warning");
        written.await.unwrap();
    }
}
