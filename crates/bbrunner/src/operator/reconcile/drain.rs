//! Runner pods marked busy while their runner runs a step. The runner container's preStop
//! hook (`manifests::DRAIN_HOOK`) holds a deleted pod's termination while the mark is on, so
//! that a pod deleted by anyone (its namespace deleted, a node drained, `kubectl delete`)
//! lets its step end first, up to `manifests::DRAIN_SECONDS`.

use std::collections::BTreeSet;

use bbrunner_core::ids::RunnerUuid;
use bbrunner_core::manifests::{ANNOTATION_BUSY, LABEL_RUNNER_UUID};
use bbrunner_core::plan::ObservedRunner;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Context;
use crate::operator::pod_view::PodView;

/// A runner pod and whether it carries the busy mark.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PodMark {
    pub name: String,
    pub runner: RunnerUuid,
    pub marked: bool,
}

pub(super) fn pod_marks(pods: &[PodView]) -> Vec<PodMark> {
    pods.iter()
        .filter_map(|pod| {
            Some(PodMark {
                name: pod.name_any(),
                runner: RunnerUuid::parse(pod.labels().get(LABEL_RUNNER_UUID)?).ok()?,
                marked: pod
                    .annotations()
                    .get(ANNOTATION_BUSY)
                    .is_some_and(|v| v == "true"),
            })
        })
        .collect()
}

/// The pods whose mark differs from their runner's state, and the mark each should carry.
pub(super) fn marks_to_change(pods: &[PodMark], runners: &[ObservedRunner]) -> Vec<(String, bool)> {
    let busy: BTreeSet<&RunnerUuid> = runners.iter().filter(|r| r.busy).map(|r| &r.uuid).collect();
    pods.iter()
        .filter(|pod| pod.marked != busy.contains(&pod.runner))
        .map(|pod| (pod.name.clone(), !pod.marked))
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
    for (pod, busy) in marks_to_change(pods, runners) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bbrunner_core::plan::RunnerStatus;

    fn uuid(n: u8) -> RunnerUuid {
        RunnerUuid::parse(&format!("{n:08}-0000-0000-0000-000000000000")).unwrap()
    }

    fn runner(n: u8, busy: bool) -> ObservedRunner {
        ObservedRunner {
            uuid: uuid(n),
            status: RunnerStatus::Online,
            busy,
            status_since: None,
            labels: None,
        }
    }

    fn pod(n: u8, marked: bool) -> PodMark {
        PodMark {
            name: format!("pod-{n}"),
            runner: uuid(n),
            marked,
        }
    }

    #[test]
    fn only_marks_that_differ_from_the_runner_s_state_change() {
        let pods = [pod(1, false), pod(2, true), pod(3, true), pod(4, false)];
        let runners = [
            runner(1, true),
            runner(2, true),
            runner(3, false),
            runner(4, false),
        ];
        assert_eq!(
            marks_to_change(&pods, &runners),
            [("pod-1".to_owned(), true), ("pod-3".to_owned(), false)]
        );
        // A pod whose runner is gone from Bitbucket has nothing to wait for.
        assert_eq!(
            marks_to_change(&[pod(5, true)], &[]),
            [("pod-5".to_owned(), false)]
        );
    }
}
