//! Runner pods marked busy while their runner runs a step. The runner container's preStop
//! hook (`manifests::DRAIN_HOOK`) holds a deleted pod's termination while the mark is on, so
//! that a pod deleted by anyone (its namespace deleted, a node drained, `kubectl delete`)
//! lets its step end first, up to `manifests::DRAIN_SECONDS`.

use bbrunner_core::ids::RunnerUuid;
use bbrunner_core::manifests::{ANNOTATION_BUSY, LABEL_RUNNER_UUID};
use bbrunner_core::plan::{ObservedRunner, busy_marks_to_change};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Context;
use crate::operator::pod_view::PodView;

/// Each runner pod's name, runner and whether it carries the busy mark.
pub(super) type PodMark = (String, RunnerUuid, bool);

pub(super) fn pod_marks(pods: &[PodView]) -> Vec<PodMark> {
    pods.iter()
        .filter_map(|pod| {
            Some((
                pod.name_any(),
                RunnerUuid::parse(pod.labels().get(LABEL_RUNNER_UUID)?).ok()?,
                pod.annotations()
                    .get(ANNOTATION_BUSY)
                    .is_some_and(|v| v == "true"),
            ))
        })
        .collect()
}

/// Set or clear the busy marks that differ from what Bitbucket shows. A failure is warned
/// of and tried again at the next poll: the mark only matters when a pod is deleted.
pub(super) async fn mark_busy_pods(
    ctx: &Context,
    namespace: &str,
    pods: &[PodMark],
    runners: &[ObservedRunner],
) {
    let api: Api<PodView> = Api::namespaced(ctx.client.clone(), namespace);
    for (pod, busy) in busy_marks_to_change(pods, runners) {
        let value = if busy { json!("true") } else { json!(null) };
        let patch = json!({"metadata": {"annotations": {ANNOTATION_BUSY: value}}});
        match api
            .patch_metadata(&pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(
                pod,
                busy,
                "marked the runner pod {}: a deletion {} its step",
                if busy { "busy" } else { "idle" },
                if busy {
                    "waits for"
                } else {
                    "no longer waits for"
                }
            ),
            // Gone meanwhile: nothing to drain.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(pod, error = %e, "cannot mark the runner pod's step"),
        }
    }
}
