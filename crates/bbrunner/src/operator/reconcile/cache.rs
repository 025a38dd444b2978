//! The warm cache's side of a reconcile: the pool's claims observed, each new pod's claim
//! handed over (a new claim created, or a free one marked under optimistic concurrency, so
//! that two operators cannot both take it), and the claims past `retain` deleted. What to do
//! is the core's decision (`bbrunner_core::cache`); this is its IO.

use std::collections::{BTreeMap, VecDeque};

use bbrunner_core::cache::{
    CacheCounts, CachePlan, ClaimChoice, ClaimUser, Handover, NewPods, ObservedClaim, PoolPods,
    SKIP_FOR, Skip, Unschedulable,
};
use bbrunner_core::plan::{Observation, Plan};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::operator::clock::Clock;
use crate::operator::crd::RunnerPool;
use crate::operator::pod_view::PodView;
use crate::operator::pool::{self, LABEL_POOL, ValidCache, ValidPool};

use super::*;

/// The pod a claim was last handed to, and when: the claim's own record, read by every
/// operator, so that the decision never rests on one operator's memory.
pub(super) const ANNOTATION_HANDED_TO: &str = "bbrunner.dev/handed-to";
pub(super) const ANNOTATION_HANDED_AT: &str = "bbrunner.dev/handed-at";
/// When a pod could not be scheduled with the claim: new pods pass it over for a while.
pub(super) const ANNOTATION_SKIPPED_AT: &str = "bbrunner.dev/skipped-at";

/// Kubernetes itself refuses a second pod on the claim (the scheduler keeps it Pending).
const ACCESS_MODE: &str = "ReadWriteOncePod";

/// The pool's claims, where it may have any: a pool with `spec.cache`, one whose status still
/// counts claims or whose pods mount one (the cache was turned off and they await deletion).
/// Other pools cost no request, and an operator installed without the cache's RBAC still
/// runs them.
async fn list_claims(
    ctx: &Context,
    pool: &RunnerPool,
    pods: &PoolPods,
) -> Result<Vec<PersistentVolumeClaim>, ReconcileError> {
    let had_claims = pool
        .status
        .as_ref()
        .and_then(|s| s.cache.as_ref())
        .is_some_and(|c| c.volumes > 0);
    if pool.spec.cache.is_none() && !had_claims && pods.mounts.is_empty() {
        return Ok(Vec::new());
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let selector = format!("{LABEL_POOL}={}", pool.name_any());
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

fn observe_claims(claims: &[PersistentVolumeClaim], clock: &Clock) -> Vec<ObservedClaim> {
    claims
        .iter()
        .map(|claim| {
            let annotations = claim.annotations();
            let handed_to = annotations
                .get(ANNOTATION_HANDED_TO)
                .zip(
                    annotations
                        .get(ANNOTATION_HANDED_AT)
                        .and_then(|t| parse_time(t)),
                )
                .map(|(pod, at)| Handover {
                    pod: pod.clone(),
                    at,
                });
            ObservedClaim {
                name: claim.name_any(),
                created_at: claim
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(clock.now(), |t| clock.at_time(t)),
                terminating: claim.metadata.deletion_timestamp.is_some(),
                handed_to,
                skipped_at: annotations
                    .get(ANNOTATION_SKIPPED_AT)
                    .and_then(|t| parse_time(t)),
            }
        })
        .collect()
}

/// The pool's pods as the claims see them: the claims each mounts (its containers may run
/// until it has Succeeded or Failed, deleted or not), and the pods to come, whose runner's
/// registration Secret exists (a runner's pod is named like its Secret).
pub(super) fn pool_pods<'a>(
    pods: &[PodView],
    secrets: impl IntoIterator<Item = &'a str>,
    clock: &Clock,
) -> PoolPods {
    let mounts: Vec<ClaimUser> = pods
        .iter()
        .flat_map(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let live = !matches!(phase, Some("Succeeded" | "Failed"));
            let unschedulable = unschedulable(pod, clock);
            // A deleted pod's deletionTimestamp is when its grace period ends: it was asked
            // to go that grace earlier.
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0) as f64;
            let leaving_since = pod
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| clock.at_time(t) - grace * clock.per_wall_second());
            pod.claims().map(move |claim| ClaimUser {
                pod: pod.name_any(),
                claim: claim.to_owned(),
                live,
                unschedulable: unschedulable.clone(),
                leaving_since,
            })
        })
        .collect();
    let coming = secrets
        .into_iter()
        .filter(|secret| {
            !pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(*secret))
        })
        .map(str::to_owned)
        .collect();
    PoolPods { mounts, coming }
}

/// Since when, and why, the scheduler has found no node for `pod`.
fn unschedulable(pod: &PodView, clock: &Clock) -> Option<Unschedulable> {
    let condition = observe::unschedulable_condition(pod)?;
    Some(Unschedulable {
        since: condition
            .last_transition_time
            .as_ref()
            .map_or(clock.now(), |t| clock.at_time(t)),
        message: observe::unschedulable_message(condition),
    })
}

/// This reconcile's cache step, decided: the claims as observed, the pool's pods as the
/// claims see them, and what to do.
pub(super) struct CacheStep {
    claims: Vec<PersistentVolumeClaim>,
    observed: Vec<ObservedClaim>,
    pods: PoolPods,
    plan: CachePlan,
}

/// Observe the pool's claims and decide (in the core) which claim each pod `planned` creates
/// mounts, and which claims to skip and delete. Pods whose runners `planned` retires, or that
/// drained while idle, are on their way out: their claims are free within seconds.
pub(super) async fn decide(
    ctx: &Context,
    pool: &RunnerPool,
    valid: &ValidPool,
    planned: &Plan,
    observation: &Observation,
    mut pods: PoolPods,
) -> Result<CacheStep, ReconcileError> {
    let name = pool.name_any();
    let leaving: Vec<(String, f64)> = planned
        .leaving(observation)
        .into_iter()
        .map(|(runner, since)| (pool::object_name(&name, &runner), since))
        .collect();
    mark_leaving(&mut pods, &leaving);
    let claims = list_claims(ctx, pool, &pods).await?;
    let observed = observe_claims(&claims, &ctx.clock);
    let new_pods = NewPods {
        count: planned.pods_to_create(),
        recreated: planned
            .recreated()
            .map(|runner| pool::object_name(&name, runner))
            .collect(),
    };
    let plan = bbrunner_core::cache::plan(
        &name,
        &valid.cache_settings(),
        &observed,
        &pods,
        &new_pods,
        observation.now,
    );
    Ok(CacheStep {
        claims,
        observed,
        pods,
        plan,
    })
}

impl CacheStep {
    /// The claims for this reconcile's new pods, one as each pod is created.
    pub(super) fn handovers<'a>(
        &self,
        ctx: &'a Context,
        pool: &'a RunnerPool,
        cache: Option<&'a ValidCache>,
    ) -> Handovers<'a> {
        Handovers::new(ctx, pool, cache, &self.claims, &self.plan)
    }

    /// Once the pods are made: skip and delete the claims decided, and count the claims as
    /// they now are.
    pub(super) async fn finish(
        &self,
        ctx: &Context,
        pool: &RunnerPool,
        now: f64,
    ) -> Result<CacheCounts, ReconcileError> {
        skip_claims(ctx, pool, &self.plan.skip).await?;
        delete_claims(ctx, pool, &self.plan.delete).await?;
        let (claims, pods) = self.plan.applied(&self.observed, &self.pods, now);
        Ok(bbrunner_core::cache::counts(&claims, &pods, now))
    }
}

/// Mark the pods in `leaving` (their runners drained while idle, or retired by this
/// reconcile's plan) as on their way out since the time given, unless they already are.
fn mark_leaving(pods: &mut PoolPods, leaving: &[(String, f64)]) {
    for user in &mut pods.mounts {
        if let Some((_, since)) = leaving.iter().find(|(pod, _)| *pod == user.pod) {
            user.leaving_since.get_or_insert(*since);
        }
    }
}

/// What a new pod mounts.
pub(super) enum Mount {
    Claim(String),
    /// No claim: the pool has no cache, or the pod starts uncached after a skip.
    Nothing,
    /// Not created now: the claim it will take is being let go by a pod on its way out.
    Wait(String),
}

impl Mount {
    pub(super) fn claim(&self) -> Option<&str> {
        match self {
            Mount::Claim(claim) => Some(claim),
            Mount::Nothing | Mount::Wait(_) => None,
        }
    }
}

/// The claims for this reconcile's new pods, handed over one by one as each pod is created.
pub(super) struct Handovers<'a> {
    ctx: &'a Context,
    pool: &'a RunnerPool,
    cache: Option<&'a ValidCache>,
    /// Each observed claim's resourceVersion: a mark is written only onto the claim as seen.
    versions: BTreeMap<String, String>,
    /// Recreated pods' own claims, by pod.
    resumed: BTreeMap<String, String>,
    choices: VecDeque<ClaimChoice>,
}

impl<'a> Handovers<'a> {
    pub(super) fn new(
        ctx: &'a Context,
        pool: &'a RunnerPool,
        cache: Option<&'a ValidCache>,
        claims: &[PersistentVolumeClaim],
        plan: &CachePlan,
    ) -> Self {
        Self {
            ctx,
            pool,
            cache,
            versions: claims
                .iter()
                .filter_map(|c| Some((c.name_any(), c.resource_version()?)))
                .collect(),
            resumed: plan
                .resumed
                .iter()
                .map(|r| (r.pod.clone(), r.claim.clone()))
                .collect(),
            choices: plan.handovers.iter().cloned().collect(),
        }
    }

    /// Mark `claim` as handed to `pod` now, if it is still as observed.
    async fn mark(&self, claim: &str, pod: &str) -> Result<(), ReconcileError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pool.namespace().unwrap_or_default(),
        );
        let at = format_time(self.ctx.clock.now()).unwrap_or_default();
        let version = self.versions.get(claim).cloned().unwrap_or_default();
        let mark = json!({"metadata": {
            "resourceVersion": version,
            "annotations": {ANNOTATION_HANDED_TO: pod, ANNOTATION_HANDED_AT: at},
        }});
        api.patch(claim, &PatchParams::default(), &Patch::Merge(&mark))
            .await?;
        Ok(())
    }

    /// The claim pod `pod` is to mount, now marked as handed to it; nothing without a cache.
    /// Another operator that took the claim first makes this a conflict: the pod is not
    /// created, and the next reconcile decides again.
    pub(super) async fn take(&mut self, pod: &str) -> Result<Mount, ReconcileError> {
        let Some(cache) = self.cache else {
            return Ok(Mount::Nothing);
        };
        let ns = self.pool.namespace().unwrap_or_default();
        if let Some(claim) = self.resumed.get(pod).cloned() {
            self.mark(&claim, pod).await?;
            tracing::info!(claim, pod, "handed cache claim {claim} back to pod {pod}");
            return Ok(Mount::Claim(claim));
        }
        let Some(choice) = self.choices.pop_front() else {
            return Err(degraded(
                Reason::KubernetesApi,
                format!("no cache claim was planned for pod {pod}; the next reconcile plans again"),
                std::time::Duration::from_secs(5),
            ));
        };
        let (claim, temperature) = match &choice {
            ClaimChoice::Create { claim } => {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &ns);
                let at = format_time(self.ctx.clock.now()).unwrap_or_default();
                api.create(
                    &PostParams::default(),
                    &claim_object(self.pool, cache, claim, pod, &at),
                )
                .await?;
                tracing::info!(claim, pod, "created cache claim {claim} for pod {pod}");
                publish(
                    self.ctx,
                    self.pool,
                    EventType::Normal,
                    Reason::CacheVolumeCreated,
                    "Create",
                    format!("cache claim {claim} ({}) created for pod {pod}", cache.size),
                )
                .await;
                (claim, "new")
            }
            ClaimChoice::Reuse { claim, warm } => {
                self.mark(claim, pod).await?;
                let temperature = if *warm { "warm" } else { "cold" };
                tracing::info!(
                    claim,
                    pod,
                    "handed {temperature} cache claim {claim} to pod {pod}"
                );
                (claim, temperature)
            }
            ClaimChoice::Uncached => {
                tracing::info!(
                    pod,
                    "pod {pod} starts without a cache claim: one was skipped lately and none is free"
                );
                self.ctx
                    .metrics
                    .count_cache_start(&ns, &self.pool.name_any(), false);
                return Ok(Mount::Nothing);
            }
            ClaimChoice::Wait { claim } => {
                tracing::info!(
                    claim,
                    pod,
                    "pod {pod} waits for cache claim {claim}, which a pod on its way out lets go"
                );
                return Ok(Mount::Wait(claim.clone()));
            }
        };
        self.ctx
            .metrics
            .count_cache_start(&ns, &self.pool.name_any(), temperature == "warm");
        Ok(Mount::Claim(claim.clone()))
    }
}

/// A new claim of the pool's cache, already handed to `pod`. Owned by the pool, so that it
/// goes with it.
fn claim_object(
    pool: &RunnerPool,
    cache: &ValidCache,
    name: &str,
    pod: &str,
    at: &str,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: pool.namespace(),
            labels: Some(crate::operator::pool::pool_labels(pool)),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_HANDED_TO.to_owned(), pod.to_owned()),
                (ANNOTATION_HANDED_AT.to_owned(), at.to_owned()),
            ])),
            owner_references: pool.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![ACCESS_MODE.to_owned()]),
            storage_class_name: cache.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(cache.size.clone()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// Delete the claims the decision let go (past `retain`, or the cache turned off).
async fn delete_claims(
    ctx: &Context,
    pool: &RunnerPool,
    names: &[String],
) -> Result<(), ReconcileError> {
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        tracing::info!(claim = %name, "deleted cache claim {name}");
        publish(
            ctx,
            pool,
            EventType::Normal,
            Reason::CacheVolumeDeleted,
            "Delete",
            format!("cache claim {name} deleted: free past spec.cache.retain, or the cache is off"),
        )
        .await;
    }
    Ok(())
}

/// Pass over the claims the scheduler refused pods for: mark each, say why, and delete its
/// pod, which the next reconcile recreates on another claim (or none). The runner is kept:
/// it has not registered, and its Secret brings the pod back.
async fn skip_claims(
    ctx: &Context,
    pool: &RunnerPool,
    skips: &[Skip],
) -> Result<(), ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<PodView> = Api::namespaced(ctx.client.clone(), &ns);
    let at = format_time(ctx.clock.now()).unwrap_or_default();
    for skip in skips {
        let Skip {
            claim,
            pod,
            waited,
            message,
        } = skip;
        let mark = json!({"metadata": {"annotations": {ANNOTATION_SKIPPED_AT: at}}});
        claims
            .patch(claim, &PatchParams::default(), &Patch::Merge(&mark))
            .await?;
        let why = format!(
            "pod {pod} waited {waited:.0}s for a node with cache claim {claim}: {message}; the claim is passed over for {}m and the pod recreated",
            SKIP_FOR / 60.0
        );
        tracing::warn!(claim, pod, "{why}");
        publish(
            ctx,
            pool,
            EventType::Warning,
            Reason::CacheVolumeUnschedulable,
            "Skip",
            why,
        )
        .await;
        match pods.delete(pod, &DeleteParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            other => {
                other?;
            }
        }
        tracing::info!(pod, "deleted pod {pod} to recreate it on another claim");
    }
    Ok(())
}

/// The cache's share of the status: `None` for a pool without cache and without claims.
pub(super) fn cache_status(cache: Option<&ValidCache>, counts: CacheCounts) -> Option<CacheCounts> {
    (cache.is_some() || counts.total() > 0).then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, annotations: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": annotations},
        }))
        .unwrap()
    }

    fn pod(name: &str, phase: &str, claims: &[&str]) -> PodView {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "runner"}], "volumes":
                claims.iter().map(|c| json!({"name": "docker-data", "persistentVolumeClaim": {"claimName": c}}))
                    .chain([json!({"name": "work", "emptyDir": {}})])
                    .collect::<Vec<_>>()},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn a_claims_marks_are_read_back_as_its_handover() {
        let clock = Clock::wall();
        let observed = observe_claims(
            &[
                claim(
                    "ci-cache-0",
                    json!({ANNOTATION_HANDED_TO: "ci-abc", ANNOTATION_HANDED_AT: "2026-01-01T00:05:00Z"}),
                ),
                // A mark without its time is no handover: the claim is cold.
                claim("ci-cache-1", json!({ANNOTATION_HANDED_TO: "ci-def"})),
            ],
            &clock,
        );
        let created = parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(observed[0].created_at, created);
        assert_eq!(
            observed[0].handed_to,
            Some(Handover {
                pod: "ci-abc".into(),
                at: created + 300.0
            })
        );
        assert_eq!(observed[1].handed_to, None);
        assert!(!observed[0].terminating);
    }

    #[test]
    fn pods_on_their_way_out_keep_the_earliest_time_they_were_seen_leaving() {
        let mut pods = pool_pods(
            &[
                pod("a", "Running", &["ci-cache-0"]),
                pod("b", "Running", &["ci-cache-1"]),
            ],
            [],
            &Clock::wall(),
        );
        mark_leaving(
            &mut pods,
            &[("a".into(), 100.0), ("a".into(), 200.0), ("c".into(), 50.0)],
        );
        let since: Vec<Option<f64>> = pods.mounts.iter().map(|u| u.leaving_since).collect();
        assert_eq!(since, [Some(100.0), None]);

        // A deleted pod has been leaving since its deletion was asked, its grace ago.
        let mut deleted = pod("d", "Running", &["ci-cache-2"]);
        deleted.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:01:00Z")).unwrap());
        deleted.metadata.deletion_grace_period_seconds = Some(30);
        let pods = pool_pods(&[deleted], [], &Clock::wall());
        let asked = parse_time("2026-01-01T00:00:30Z").unwrap();
        assert_eq!(pods.mounts[0].leaving_since, Some(asked));
    }

    #[test]
    fn pods_mount_claims_until_they_have_succeeded_or_failed_and_registered_ones_are_coming() {
        let pods = pool_pods(
            &[
                pod("a", "Running", &["ci-cache-0"]),
                pod("b", "Failed", &["ci-cache-1"]),
                pod("c", "Pending", &[]),
                pod("d", "Succeeded", &["ci-cache-2"]),
            ],
            ["a", "c", "e"],
            &Clock::wall(),
        );
        assert_eq!(
            pods.mounts
                .iter()
                .map(|u| (u.pod.as_str(), u.claim.as_str(), u.live))
                .collect::<Vec<_>>(),
            [
                ("a", "ci-cache-0", true),
                ("b", "ci-cache-1", false),
                ("d", "ci-cache-2", false)
            ]
        );
        assert_eq!(pods.coming, ["e"]);
    }

    #[test]
    fn a_new_claim_is_owned_by_its_pool_exclusive_and_marked() {
        let pool: RunnerPool = serde_json::from_value(json!({
            "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": "ci", "namespace": "builds", "uid": "u-1"},
            "spec": {"workspace": "acme"},
        }))
        .unwrap();
        let cache = ValidCache {
            size: "50Gi".into(),
            bytes: 50 << 30,
            storage_class_name: Some("fast".into()),
            retain: 3,
        };
        let claim = claim_object(
            &pool,
            &cache,
            "ci-cache-0",
            "ci-abc",
            "2026-01-01T00:00:00Z",
        );
        let value = serde_json::to_value(&claim).unwrap();
        assert_eq!(value["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(value["metadata"]["labels"][LABEL_POOL], "ci");
        assert_eq!(
            value["metadata"]["annotations"][ANNOTATION_HANDED_TO],
            "ci-abc"
        );
        assert_eq!(value["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
        assert_eq!(value["spec"]["resources"]["requests"]["storage"], "50Gi");
        assert_eq!(value["spec"]["storageClassName"], "fast");
    }
}
