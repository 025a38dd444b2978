//! Carrying out a plan: each action's call in Bitbucket or the cluster, logged and recorded
//! as an Event with its reason.

use std::time::Duration;

use bbrunner_core::ids::{AccountUuid, RepositoryUuid};
use bbrunner_core::plan::{Action, Plan};
use bbrunner_core::registration::RunnerRegistration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::operator::crd::RunnerPool;
use crate::operator::pool::{self, ANNOTATION_RAN_STEP, PodTemplate, ValidPool};

use super::cache::Mount;

use super::*;

/// Carry out planned actions in order, logging each change with its reason; returns how
/// many changed Bitbucket.
pub(super) async fn execute(
    ctx: &Context,
    pool: &RunnerPool,
    valid: &ValidPool,
    bitbucket: &PoolBitbucket<'_>,
    planned: &Plan,
    handovers: &mut super::cache::Handovers<'_>,
) -> Result<usize, ReconcileError> {
    let PoolBitbucket {
        client,
        scope,
        identity,
    } = bitbucket;
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let done = |action: &Action, runner: &dyn std::fmt::Display, what: &str| {
        tracing::info!(runner = %runner, reason = planned.reason(action), "{what}");
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let template = PodTemplate {
        pool,
        valid,
        repository_scoped: pool.spec.repository.is_some(),
    };
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
                        Reason::ApiRejected,
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
                let with_pod = match handovers.take(&secret_name).await? {
                    // Its Secret brings the pod at a later reconcile, on the claim let go.
                    Mount::Wait(claim) => format!("; its pod waits for cache claim {claim}"),
                    mount => {
                        pods.create(
                            &PostParams::default(),
                            &template.pod(&registration.runner_uuid, &secret_name, mount.claim()),
                        )
                        .await?;
                        done(action, &registration.runner_uuid, "created its pod");
                        " with its pod".to_owned()
                    }
                };
                publish(
                    ctx,
                    pool,
                    EventType::Normal,
                    Reason::RunnerCreated,
                    "Create",
                    format!(
                        "runner {} ({runner_name}) created{with_pod}",
                        registration.runner_uuid
                    ),
                )
                .await;
            }
            Action::CreatePod(uuid) => {
                let secret_name = pool::object_name(&name, uuid);
                // The pod is named like its Secret.
                let mount = handovers.take(&secret_name).await?;
                if let Mount::Wait(_) = mount {
                    continue;
                }
                let pod = template.pod(uuid, &secret_name, mount.claim());
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
                    Reason::PodRecreated,
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
                    Reason::RunnerDisabled,
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
                    Reason::RunnerEnabled,
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
                    Reason::RunnerDeleted,
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

pub(super) async fn publish(
    ctx: &Context,
    pool: &RunnerPool,
    type_: EventType,
    reason: Reason,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.as_str().to_owned(),
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
pub(super) fn event_note(mut note: String) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;
    use bbrunner_core::ids::RunnerUuid;
    use bbrunner_core::plan::Counts;
    use bbrunner_core::scaling::{Decision, PolicyMemory};

    #[tokio::test]
    async fn a_runner_s_pod_and_secret_are_deleted_by_name_and_one_already_gone_is_fine() {
        let (kube, mut server) = fixture::client();
        let ctx = fixture::context(kube);
        let pool = fixture::pool(json!({"workspace": "acme"}));
        let valid = ValidPool::for_cleanup();
        let uuid = RunnerUuid::parse("00000000-0000-4000-8000-000000000001").unwrap();
        let planned = Plan {
            actions: vec![Action::DeletePod(uuid.clone()), Action::DeleteSecret(uuid)],
            decision: Decision {
                desired: 0,
                reason: "test",
            },
            counts: Counts::default(),
            memory: PolicyMemory::default(),
            unschedulable: None,
            blocked_by_quota: 0,
            why: Default::default(),
        };
        let client = bitbucket::Client::new(
            bitbucket::Config::default(),
            bitbucket::Credentials::AccessToken("unused".to_owned().into()),
        )
        .unwrap();
        let cluster = bbrunner_core::ownership::ClusterId::new("test").unwrap();
        let executed = tokio::spawn(async move {
            let identity = bbrunner_core::ownership::PoolIdentity {
                cluster: &cluster,
                namespace: "ci",
                pool: "builds",
            };
            let scope = bitbucket::RunnerScope::Workspace("acme".into());
            let bitbucket = PoolBitbucket {
                client: &client,
                scope: &scope,
                identity: &identity,
            };
            let mut handovers =
                super::super::cache::Handovers::new(&ctx, &pool, None, &[], &Default::default());
            execute(&ctx, &pool, &valid, &bitbucket, &planned, &mut handovers).await
        });
        let name = "builds-00000000-0000-4000-8000-000000000001";
        let pod = fixture::expect(
            &mut server,
            200,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}),
        )
        .await;
        assert_eq!(
            (pod.method.as_str(), pod.uri.as_str()),
            (
                "DELETE",
                format!("/api/v1/namespaces/ci/pods/{name}?").as_str()
            )
        );
        let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "gone"});
        let secret = fixture::expect(&mut server, 404, gone).await;
        assert_eq!(secret.uri, format!("/api/v1/namespaces/ci/secrets/{name}?"));
        // Nothing changed in Bitbucket.
        assert_eq!(executed.await.unwrap().unwrap(), 0);
    }

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
