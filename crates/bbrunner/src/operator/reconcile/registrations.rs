//! One pod at most per imported registration. Two static pools listing the same runner's
//! registration (the same Secret, or copies of it in other namespaces) would run two agents
//! on one runner, which Bitbucket does not expect; the pool that holds the runner keeps it,
//! and the other is Degraded naming it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bbrunner_core::ids::RunnerUuid;
use bbrunner_core::manifests::LABEL_RUNNER_UUID;
use bbrunner_core::registration::{PoolKey, holder};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;

use crate::operator::pool::LABEL_POOL;

/// Which pool holds each imported runner, and the lock under which a static pool decides and
/// creates its pods, so that two pools reconciled at once cannot both start one runner.
#[derive(Default)]
pub struct Registrations {
    /// Watched namespaces (none: all), where other pools' pods are looked for.
    namespaces: Vec<String>,
    pub(super) deciding: tokio::sync::Mutex<()>,
    /// The holder of each runner seen: kept while its pod is away (deleted to be recreated),
    /// so that another pool does not take the runner meanwhile; forgotten when the holder no
    /// longer lists it or is deleted. The pods are the truth across restarts.
    held: Mutex<BTreeMap<RunnerUuid, PoolKey>>,
}

impl Registrations {
    pub fn new(namespaces: Vec<String>) -> Self {
        Self {
            namespaces,
            ..Self::default()
        }
    }

    /// Who holds each of `runners`, as `asking` sees it now: from the live pods of every pool
    /// (one list, of every runner at once), and the holder remembered. Remembered as the
    /// holders from then on.
    pub(super) async fn claim(
        &self,
        client: &kube::Client,
        asking: &PoolKey,
        runners: &[RunnerUuid],
    ) -> Result<Vec<PoolKey>, kube::Error> {
        if runners.is_empty() {
            return Ok(Vec::new());
        }
        let uuids: Vec<&str> = runners.iter().map(RunnerUuid::bare).collect();
        let selector = ListParams::default().labels(&format!(
            "{LABEL_RUNNER_UUID} in ({}),{LABEL_POOL}",
            uuids.join(",")
        ));
        let apis: Vec<Api<PartialObjectMeta<Pod>>> = if self.namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        };
        // Each live pod's runner, pool and creation time.
        let mut pods: Vec<(String, PoolKey, Option<f64>)> = Vec::new();
        for api in apis {
            for pod in api.list_metadata(&selector).await?.items {
                let meta = pod.metadata;
                if meta.deletion_timestamp.is_some() {
                    continue;
                }
                let labels = meta.labels.unwrap_or_default();
                let (Some(namespace), Some(pool), Some(runner)) = (
                    meta.namespace,
                    labels.get(LABEL_POOL).cloned(),
                    labels.get(LABEL_RUNNER_UUID).cloned(),
                ) else {
                    continue;
                };
                let created = meta
                    .creation_timestamp
                    .map(|t| t.0.as_millisecond() as f64 / 1000.0);
                pods.push((runner, (namespace, pool), created));
            }
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        Ok(runners
            .iter()
            .map(|runner| {
                let running: Vec<(PoolKey, Option<f64>)> = pods
                    .iter()
                    .filter(|(r, _, _)| r.eq_ignore_ascii_case(runner.bare()))
                    .map(|(_, pool, created)| (pool.clone(), *created))
                    .collect();
                let holder = holder(asking, &running, held.get(runner));
                held.insert(runner.clone(), holder.clone());
                holder
            })
            .collect())
    }

    /// `pool` now lists only `runners`: the others it held are free.
    pub(super) fn keep_only(&self, pool: &PoolKey, runners: &[RunnerUuid]) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|runner, holder| holder != pool || runners.contains(runner));
    }

    /// `pool` is gone: every runner it held is free.
    pub(super) fn forget(&self, pool: &PoolKey) {
        self.keep_only(pool, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> PoolKey {
        (ns.to_owned(), name.to_owned())
    }

    #[test]
    fn a_holder_that_lets_go_frees_only_what_it_no_longer_lists() {
        let registrations = Registrations::default();
        let (one, two) = (
            RunnerUuid::parse("11111111-1111-1111-1111-111111111111").unwrap(),
            RunnerUuid::parse("22222222-2222-2222-2222-222222222222").unwrap(),
        );
        let pool = key("a", "first");
        {
            let mut held = registrations.held.lock().unwrap();
            held.insert(one.clone(), pool.clone());
            held.insert(two.clone(), pool.clone());
        }
        registrations.keep_only(&pool, std::slice::from_ref(&two));
        let held = registrations.held.lock().unwrap().clone();
        assert_eq!(held.keys().collect::<Vec<_>>(), vec![&two]);
        drop(held);
        registrations.forget(&pool);
        assert!(registrations.held.lock().unwrap().is_empty());
    }
}
