//! A static pool: one pod per imported registration, nothing created or deleted in
//! Bitbucket.

use std::time::Duration;

use bbrunner_core::ids::RunnerUuid;
use bbrunner_core::manifests::{dind_networks_mtu_warning, secret_keys};
use bbrunner_core::plan::{Action, Counts, ObservedPod, PodPhase, plan_static};
use bbrunner_core::scaling::PolicyMemory;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action as Requeue;

use crate::operator::crd::RunnerPool;
use crate::operator::pod_view::PodView;
use crate::operator::pool::{self, LABEL_POOL, PodTemplate, ValidPool};

use super::*;

pub(super) async fn reconcile_static(
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
                Reason::CredentialsInvalid,
                format!("{field}: Secret {ns}/{} does not exist", r.secret_ref.name),
                Duration::from_secs(30),
            ));
        };
        let uuid = secret_value(&secret, secret_keys::RUNNER_UUID)
            .and_then(|u| RunnerUuid::parse(&u).ok())
            .ok_or_else(|| degraded(Reason::CredentialsInvalid, format!("{field}: Secret {} has no valid runner_uuid (write it with `bbrunner import --format yaml --reveal-secret`)", r.secret_ref.name), Duration::from_secs(60)))?;
        for key in [
            secret_keys::ACCOUNT_UUID,
            secret_keys::OAUTH_CLIENT_ID,
            secret_keys::OAUTH_CLIENT_SECRET,
        ] {
            if secret_value(&secret, key).is_none() {
                return Err(degraded(
                    Reason::CredentialsInvalid,
                    format!("{field}: Secret {} has no {key}", r.secret_ref.name),
                    Duration::from_secs(60),
                ));
            }
        }
        let repository_scoped = secret_value(&secret, secret_keys::REPOSITORY_UUID).is_some();
        wanted.push((uuid, r.secret_ref.name.clone(), repository_scoped));
    }
    // Decided and created under one lock: two pools reconciled at once cannot both start a
    // runner. A runner another pool holds is left to it (a pod of ours for it is deleted).
    let _deciding = ctx.registrations.deciding.lock().await;
    let me = (ns.clone(), name.clone());
    let runners: Vec<RunnerUuid> = wanted.iter().map(|(u, _, _)| u.clone()).collect();
    let holders = ctx.registrations.claim(&ctx.client, &me, &runners).await?;
    // Every runner another pool holds is left to it; the first is named in the condition.
    let taken = wanted
        .iter()
        .zip(&holders)
        .enumerate()
        .find(|(_, (_, holder))| **holder != me)
        .map(|(index, ((uuid, secret_name, _), holder))| {
            (index, uuid.clone(), secret_name.clone(), holder.clone())
        });
    let mut holders = holders.iter();
    wanted.retain(|_| holders.next() == Some(&me));
    let uuids: Vec<RunnerUuid> = wanted.iter().map(|(u, _, _)| u.clone()).collect();
    ctx.registrations.keep_only(&me, &uuids);
    let selector = ListParams::default().labels(&format!("{LABEL_POOL}={name}"));
    let observed: Vec<ObservedPod> = Api::<PodView>::namespaced(ctx.client.clone(), &ns)
        .list(&selector)
        .await?
        .items
        .iter()
        .filter_map(|p| observe_pod(p, &ctx.clock))
        .collect();
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
                        &PodTemplate {
                            pool,
                            valid,
                            repository_scoped: *repository_scoped,
                        }
                        .pod(&uuid, secret_name, None),
                    )
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    other => {
                        other?;
                    }
                }
                tracing::info!(runner = %uuid, "created the pod of an imported runner");
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
                tracing::info!(runner = %uuid, "deleted the pod of an imported runner: it ended, or its runner left spec.staticRunners");
            }
            _ => {}
        }
    }
    if let Some((index, uuid, secret_name, (holder_ns, holder))) = taken {
        return Err(degraded(
            Reason::RegistrationInUse,
            format!(
                "spec.staticRunners[{index}].secretRef: Secret {secret_name} registers runner {uuid}, which pool {holder_ns}/{holder} already runs; one registration runs in one pod (two agents on one runner take each other's steps), so this pool leaves it: remove it from one of the pools"
            ),
            Duration::from_secs(30),
        ));
    }
    let revision = PodTemplate {
        pool,
        valid,
        repository_scoped: false,
    }
    .revision();
    let counts = static_counts(wanted.len(), &observed, &revision);
    record_metrics(ctx, pool, &counts, wanted.len() as u32);
    let report = StatusReport {
        counts,
        desired: wanted.len() as u32,
        memory: PolicyMemory::default(),
        scaled: None,
        problem: None,
        credentials_secret: None,
        api_calls: None,
        poll_in_effect: None,
        step_network_mtu: dind_networks_mtu_warning(&valid.dind.image, valid.dind.mtu),
        rollout_surge: None,
        cache: None,
    };
    write_status(ctx, pool, report).await?;
    Ok(Requeue::requeue(poll_period(ctx, &valid.scaling)))
}

/// A static pool's counts, from its pods alone: running ones are counted online (whether
/// their runner is busy cannot be seen without API credentials), and pods of another template
/// revision outdated: bbrunner replaces none, the status says how many (Progressing tells the
/// user what to do).
pub(super) fn static_counts(wanted: usize, observed: &[ObservedPod], revision: &str) -> Counts {
    let running = observed
        .iter()
        .filter(|p| p.phase == PodPhase::Running && !p.terminating)
        .count() as u32;
    let live: Vec<&ObservedPod> = observed.iter().filter(|p| !p.terminating).collect();
    let outdated = live
        .iter()
        .filter(|p| p.template.as_deref() != Some(revision))
        .count() as u32;
    Counts {
        online: running,
        idle: running,
        starting: (wanted as u32).saturating_sub(running),
        outdated,
        updated: (live.len() as u32).saturating_sub(outdated),
        ..Counts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(i: u32, phase: PodPhase, template: &str, terminating: bool) -> ObservedPod {
        ObservedPod {
            runner: RunnerUuid::parse(&format!("00000000-0000-4000-8000-{i:012}")).unwrap(),
            phase,
            terminating,
            unschedulable: None,
            created_at: 0.0,
            ready_since: None,
            ran_step: false,
            template: Some(template.into()),
        }
    }

    #[test]
    fn a_static_pool_counts_its_running_pods_and_those_of_an_earlier_template() {
        let pods = [
            pod(1, PodPhase::Running, "new", false),
            pod(2, PodPhase::Running, "old", false),
            pod(3, PodPhase::Pending, "new", false),
            pod(4, PodPhase::Running, "old", true),
        ];
        let counts = static_counts(3, &pods, "new");
        assert_eq!((counts.online, counts.starting), (2, 1));
        assert_eq!((counts.updated, counts.outdated), (2, 1));
    }
}
