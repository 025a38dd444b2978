//! `bbrunner doctor`: what the cluster and Bitbucket look like, judged. The CLI gathers the
//! observations; every verdict is made here.

use serde::Serialize;

use crate::labels::Labels;
use crate::manifests::{
    Mtu, dind_client_api_warning, dind_networks_mtu_warning, is_floating_dind_tag,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do about it (empty on pass).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

fn check(
    name: impl Into<String>,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name: name.into(),
        verdict,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// One pool as the doctor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolFacts {
    pub namespace: String,
    pub name: String,
    pub scope: String,
    pub labels: Labels,
    pub dind_image: String,
    pub mtu: Mtu,
    /// Whether its runner pods would be BestEffort (no requests or limits anywhere).
    pub best_effort: bool,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub cache: Option<PoolCache>,
}

/// A pool's warm cache: what its spec asks and what its status counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolCache {
    pub size: String,
    pub storage_class: Option<String>,
    /// A workspace pool: every repository of the workspace shares the cache.
    pub workspace_wide: bool,
    /// From the status (absent until the operator has reconciled it).
    pub volumes: u32,
    pub in_use: u32,
    pub warm: u32,
    pub skipped: u32,
}

/// What the CLI observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// The API server's `gitVersion` (`v1.33.2`, `v1.29.4-gke.100`), if it answered.
    pub server_version: Option<String>,
    /// Served versions of runnerpools.bbrunner.dev, if installed.
    pub crd_versions: Option<Vec<String>>,
    /// Whether the installed CRD's schema equals this binary's.
    pub crd_current: bool,
    /// The leader Lease's holder and its age in seconds since renewal, if any.
    pub lease: Option<(String, f64)>,
    pub pools: Vec<PoolFacts>,
    /// Namespace → its `pod-security.kubernetes.io/enforce` label.
    pub namespace_psa: Vec<(String, Option<String>)>,
    /// Node → container runtime version (`containerd://1.7.27`).
    pub node_runtimes: Vec<(String, String)>,
    /// The pod network MTU a probe pod reported, if it ran.
    pub pod_mtu: Option<u16>,
    /// Scope → runners in it (all owners), from one list call per credential.
    /// (`None`: the list could not be had, so the headroom is unknown.)
    pub scope_runners: Vec<(String, Option<usize>)>,
    /// Pool → what its credentials call answered: `Ok(())` or the error.
    pub credentials: Vec<(String, CredentialsCheck)>,
    /// Runner pods that cannot be scheduled: (namespace/name, scheduler message).
    pub unschedulable: Vec<(String, String)>,
    /// Live pods labelled with a runner UUID (the operator's and `render`'s):
    /// (uuid, namespace/name).
    pub runner_pods: Vec<(String, String)>,
    /// Pools the operator cannot run as written: (namespace/name, the field and the fix).
    pub invalid_pools: Vec<(String, String)>,
    /// Bitbucket calls in the last hour per identity (opaque id), as this cluster's operator
    /// reports them in its pools' status, with the pools using the identity.
    pub api_calls: Vec<ApiCalls>,
    /// StorageClasses: (name, whether it is the default), if they could be listed.
    pub storage_classes: Option<Vec<(String, bool)>>,
}

/// One Bitbucket identity's calls from this cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCalls {
    pub identity: String,
    pub calls_last_hour: u32,
    pub pools: Vec<String>,
}

/// What a pool's credentials call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsCheck {
    Valid,
    /// Bitbucket, or the Secret, says no: the credentials are at fault.
    Rejected(String),
    /// No answer (network, proxy, DNS, Bitbucket down): the credentials were not tested.
    Unreachable(String),
}

/// Bitbucket's limit per identity and rolling hour, shared by everything that uses it.
pub const BITBUCKET_REQUESTS_PER_HOUR: u32 = 1000;

/// Group pools' reports by identity; every pool of an identity reports the same operator-wide
/// count, so the highest (the freshest) stands for it.
pub fn api_calls_by_identity(reports: &[(String, String, u32)]) -> Vec<ApiCalls> {
    let mut by: std::collections::BTreeMap<&str, ApiCalls> = std::collections::BTreeMap::new();
    for (pool, identity, calls) in reports {
        let entry = by.entry(identity).or_insert_with(|| ApiCalls {
            identity: identity.clone(),
            calls_last_hour: 0,
            pools: Vec::new(),
        });
        entry.calls_last_hour = entry.calls_last_hour.max(*calls);
        entry.pools.push(pool.clone());
    }
    by.into_values().collect()
}

/// `containerd://1.4.3` → (runtime, major, minor, patch).
fn runtime_version(raw: &str) -> Option<(&str, u32, u32, u32)> {
    let (runtime, version) = raw.split_once("://")?;
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().ok());
    Some((
        runtime,
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Runner pods run dind as a native sidecar (an init container with `restartPolicy: Always`).
pub const MIN_KUBERNETES: (u32, u32) = (1, 29);

/// `v1.29.4-gke.100` → (1, 29).
fn kubernetes_version(git_version: &str) -> Option<(u32, u32)> {
    let mut parts = git_version.trim_start_matches('v').split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn kubernetes_check(server_version: Option<&str>) -> Check {
    let (major, minor) = MIN_KUBERNETES;
    match server_version.map(|v| (v, kubernetes_version(v))) {
        Some((v, Some(version))) if version >= MIN_KUBERNETES => check(
            "kubernetes",
            Verdict::Pass,
            format!("API server {v}: native sidecars available"),
            "",
        ),
        Some((v, Some(_))) => check(
            "kubernetes",
            Verdict::Fail,
            format!(
                "API server {v}: runner pods need Kubernetes {major}.{minor} or later (dind runs as a native sidecar)"
            ),
            format!("upgrade the control plane and nodes to {major}.{minor} or later"),
        ),
        Some((v, None)) => check(
            "kubernetes",
            Verdict::Warn,
            format!("cannot read a version from the API server's {v:?}"),
            format!("make sure the cluster runs Kubernetes {major}.{minor} or later"),
        ),
        None => check(
            "kubernetes",
            Verdict::Warn,
            "the API server did not say its version",
            format!("make sure the cluster runs Kubernetes {major}.{minor} or later"),
        ),
    }
}

/// One registration run by several pods: both agents poll for it and take each other's steps.
fn duplicate_runner_checks(runner_pods: &[(String, String)]) -> Vec<Check> {
    let mut by_uuid: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (uuid, pod) in runner_pods {
        by_uuid.entry(uuid).or_default().push(pod);
    }
    let duplicates: Vec<Check> = by_uuid
        .into_iter()
        .filter(|(_, pods)| pods.len() > 1)
        .map(|(uuid, pods)| {
            check(
                format!("runner/{uuid}"),
                Verdict::Fail,
                format!(
                    "runner {uuid} is run by {} pods ({}): their agents take each other's steps and Bitbucket sees one runner flapping",
                    pods.len(),
                    pods.join(", ")
                ),
                format!(
                    "keep one: delete the others' Deployment or pool entry (e.g. kubectl delete pod -n {})",
                    pods[1].replacen('/', " ", 1)
                ),
            )
        })
        .collect();
    if duplicates.is_empty() && !runner_pods.is_empty() {
        return vec![check(
            "runners",
            Verdict::Pass,
            "every runner registration is run by one pod",
            "",
        )];
    }
    duplicates
}

/// Judge everything observed.
pub fn evaluate(o: &Observations) -> Vec<Check> {
    let mut checks = vec![kubernetes_check(o.server_version.as_deref())];
    checks.extend(duplicate_runner_checks(&o.runner_pods));
    match &o.crd_versions {
        None => checks.push(check(
            "crd",
            Verdict::Fail,
            "the RunnerPool CRD is not installed",
            "bbrunner crd | kubectl apply -f -",
        )),
        Some(v) if !v.iter().any(|v| v == "v1alpha1") => checks.push(check(
            "crd",
            Verdict::Fail,
            format!("the CRD serves {v:?}, not v1alpha1"),
            "bbrunner crd | kubectl apply -f -",
        )),
        Some(_) if !o.crd_current => checks.push(check(
            "crd",
            Verdict::Warn,
            "the installed CRD differs from this bbrunner's (another version installed it)",
            "bbrunner crd | kubectl apply -f -",
        )),
        Some(_) => checks.push(check(
            "crd",
            Verdict::Pass,
            "RunnerPool v1alpha1 installed and current",
            "",
        )),
    }

    let stale: Vec<&PoolFacts> = o
        .pools
        .iter()
        .filter(|p| p.observed_generation != p.generation)
        .collect();
    match &o.lease {
        Some((holder, age)) if *age < 30.0 => checks.push(check("operator", Verdict::Pass, format!("leader {holder} renewed {age:.0}s ago"), "")),
        Some((holder, age)) => checks.push(check(
            "operator",
            Verdict::Fail,
            format!("the leader lease of {holder} was last renewed {age:.0}s ago: no operator is acting"),
            "check the bbrunner operator Deployment's pods and logs",
        )),
        None if o.pools.is_empty() => checks.push(check("operator", Verdict::Warn, "no leader lease and no pool to show an operator at work", "install the operator (bbrunner install)")),
        None if stale.is_empty() => checks.push(check("operator", Verdict::Pass, "every pool's status is current (operator running without leader election)", "")),
        None => checks.push(check(
            "operator",
            Verdict::Fail,
            format!("{} pool(s) not reconciled since their last change, and no leader lease: is the operator running?", stale.len()),
            "install or restart the operator (bbrunner install)",
        )),
    }

    for (ns, level) in &o.namespace_psa {
        let name = format!("pod-security/{ns}");
        match level.as_deref() {
            Some("privileged") => checks.push(check(name, Verdict::Pass, "privileged pods allowed", "")),
            Some(other) => checks.push(check(
                name,
                Verdict::Fail,
                format!("Pod Security level {other:?} rejects the privileged dind sidecar"),
                format!("kubectl label namespace {ns} pod-security.kubernetes.io/enforce=privileged --overwrite"),
            )),
            None => checks.push(check(
                name,
                Verdict::Warn,
                "no Pod Security label: the cluster default applies, and may reject privileged pods",
                format!("kubectl label namespace {ns} pod-security.kubernetes.io/enforce=privileged"),
            )),
        }
    }

    for pool in &o.pools {
        let name = format!("dind/{}/{}", pool.namespace, pool.name);
        let mut problems = Vec::new();
        if is_floating_dind_tag(&pool.dind_image) {
            problems.push((
                Verdict::Warn,
                format!("{} floats to new Docker majors", pool.dind_image),
                "pin spec.dind.image, e.g. docker:28.5-dind".to_owned(),
            ));
        }
        if let Some(warning) = dind_networks_mtu_warning(&pool.dind_image, pool.mtu) {
            problems.push((
                Verdict::Warn,
                warning,
                "set spec.dind.image to a Docker 24 or later dind, e.g. docker:28.5-dind"
                    .to_owned(),
            ));
        }
        if let Some(warning) = dind_client_api_warning(&pool.dind_image) {
            problems.push((
                Verdict::Warn,
                warning,
                "use docker:28.5-dind until your runner image is current".to_owned(),
            ));
        }
        let oom_era: Vec<&String> = o
            .node_runtimes
            .iter()
            .filter(|(_, v)| {
                runtime_version(v).is_some_and(|(rt, ma, mi, pa)| match rt {
                    "containerd" => (ma, mi, pa) < (1, 4, 4),
                    "docker" => (ma, mi) == (20, 10),
                    _ => false,
                })
            })
            .map(|(n, _)| n)
            .collect();
        if pool.best_effort && !oom_era.is_empty() {
            problems.push((
                Verdict::Fail,
                format!("runner pods are BestEffort and nodes {oom_era:?} run a runtime whose shim fails with `failed to adjust OOM score for shim`"),
                "give the runner and dind containers memory requests (remove the empty resources overrides)".to_owned(),
            ));
        }
        match problems.iter().max_by_key(|p| p.0) {
            None => checks.push(check(
                name,
                Verdict::Pass,
                format!("{} pinned; pods not BestEffort", pool.dind_image),
                "",
            )),
            Some(_) => {
                let verdict = problems.iter().map(|p| p.0).max().unwrap_or(Verdict::Warn);
                let detail = problems
                    .iter()
                    .map(|p| p.1.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                let fix = problems
                    .iter()
                    .map(|p| p.2.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                checks.push(check(name, verdict, detail, fix));
            }
        }

        let name = format!("mtu/{}/{}", pool.namespace, pool.name);
        match (pool.mtu, o.pod_mtu) {
            (_, None) => checks.push(check(name, Verdict::Warn, "the pod network MTU could not be measured (the probe pod did not report)", "run the doctor with permission to create pods in the pool's namespace")),
            (Mtu::Auto, Some(net)) => checks.push(check(name, Verdict::Pass, format!("dind follows the pod network's MTU ({net})"), "")),
            (Mtu::Fixed(n), Some(net)) if n > net => checks.push(check(
                name,
                Verdict::Fail,
                format!("dind's MTU {n} exceeds the pod network's {net}: large packets from steps are dropped and builds hang"),
                format!("set spec.dind.mtu: auto (or {net})"),
            )),
            (Mtu::Fixed(n), Some(net)) => checks.push(check(name, Verdict::Pass, format!("dind's MTU {n} fits the pod network's {net}"), "")),
        }
    }

    for (i, a) in o.pools.iter().enumerate() {
        for b in &o.pools[i + 1..] {
            if a.scope != b.scope {
                continue;
            }
            let a_in_b = b.labels.serves(a.labels.as_slice());
            let b_in_a = a.labels.serves(b.labels.as_slice());
            if a_in_b || b_in_a {
                checks.push(check(
                    format!("labels/{}/{}+{}", a.namespace, a.name, b.name),
                    Verdict::Warn,
                    format!("pools {} [{}] and {} [{}] in {} overlap: a step with the smaller set can land on either", a.name, a.labels, b.name, b.labels, a.scope),
                    "give each pool a label the other lacks",
                ));
            }
        }
    }

    for (scope, count) in &o.scope_runners {
        let name = format!("quota/{scope}");
        let Some(count) = count else {
            checks.push(check(
                name,
                Verdict::Warn,
                "not known: the runner list could not be read (see the credentials check)",
                "fix what the credentials check says, then run doctor again",
            ));
            continue;
        };
        let verdict = match count {
            0..=79 => Verdict::Pass,
            80..=99 => Verdict::Warn,
            _ => Verdict::Fail,
        };
        let fix = if verdict == Verdict::Pass {
            String::new()
        } else {
            "delete unused runners in the UI, or lower pools' max".into()
        };
        checks.push(check(
            name,
            verdict,
            format!("{count} of Bitbucket's 100 runners used"),
            fix,
        ));
    }

    for (pool, result) in &o.credentials {
        let name = format!("credentials/{pool}");
        match result {
            CredentialsCheck::Valid => checks.push(check(name, Verdict::Pass, "valid, with runner:write", "")),
            CredentialsCheck::Rejected(e) => checks.push(check(name, Verdict::Fail, e.clone(), "fix the Secret in spec.credentials.secretRef (scopes: runner:write, repository:read, account:read)")),
            CredentialsCheck::Unreachable(e) => checks.push(check(
                name,
                Verdict::Fail,
                format!("Bitbucket could not be reached, so the credentials were not tested: {e}"),
                "check the network from here to Bitbucket (proxy, DNS, firewall) and --bitbucket-url; the operator needs the same path",
            )),
        }
    }

    for (pool, why) in &o.invalid_pools {
        checks.push(check(
            format!("spec/{pool}"),
            Verdict::Fail,
            format!("the operator cannot run this pool: {why}"),
            format!("kubectl edit runnerpool -n {}", pool.replace('/', " ")),
        ));
    }

    for calls in &o.api_calls {
        let name = format!("api-budget/{}", calls.identity);
        let share = f64::from(calls.calls_last_hour) / f64::from(BITBUCKET_REQUESTS_PER_HOUR);
        let detail = format!(
            "~{} Bitbucket calls in the last hour from this cluster ({:.0}% of the {BITBUCKET_REQUESTS_PER_HOUR}/hour per identity), pools {}; other clusters and tools using the same credentials count against the same limit",
            calls.calls_last_hour,
            share * 100.0,
            calls.pools.join(", ")
        );
        let fix = "give each cluster sharing these credentials `bbrunner operator --budget` of 900 / the number of clusters, raise pollInterval, or give clusters their own OAuth consumer";
        if share >= 0.7 {
            checks.push(check(name, Verdict::Warn, detail, fix));
        } else {
            checks.push(check(name, Verdict::Pass, detail, ""));
        }
    }

    checks.extend(o.pools.iter().filter_map(|pool| cache_check(pool, o)));

    if o.unschedulable.is_empty() {
        checks.push(check(
            "scheduling",
            Verdict::Pass,
            "no runner pod waiting for room",
            "",
        ));
    }
    for (pod, why) in &o.unschedulable {
        checks.push(check(
            format!("scheduling/{pod}"),
            Verdict::Fail,
            format!("cannot be scheduled: {why}"),
            "add nodes, lower spec.runner.size, or fix nodeSelector/tolerations",
        ));
    }
    checks
}

/// A cached pool's claims: a class that provisions them, how many are warm, and whom the
/// cache is shared with.
fn cache_check(pool: &PoolFacts, o: &Observations) -> Option<Check> {
    let cache = pool.cache.as_ref()?;
    let name = format!("cache/{}/{}", pool.namespace, pool.name);
    let class = match (&cache.storage_class, &o.storage_classes) {
        (Some(class), Some(classes)) if !classes.iter().any(|(c, _)| c == class) => {
            return Some(check(
                name,
                Verdict::Fail,
                format!(
                    "spec.cache.storageClassName {class} is no StorageClass of the cluster: its claims stay Pending and runner pods start without a cache after two minutes"
                ),
                "set spec.cache.storageClassName to one of `kubectl get storageclass`, or leave it out for the default class",
            ));
        }
        (None, Some(classes)) if !classes.iter().any(|(_, default)| *default) => {
            return Some(check(
                name,
                Verdict::Fail,
                "spec.cache names no storage class and the cluster has no default one: its claims stay Pending",
                "set spec.cache.storageClassName to one of `kubectl get storageclass`",
            ));
        }
        (Some(class), _) => class.clone(),
        (None, _) => "the default class".to_owned(),
    };
    let state = format!(
        "{} claims of {} on {class} ({} in use, {} warm)",
        cache.volumes, cache.size, cache.in_use, cache.warm
    );
    Some(if cache.skipped > 0 {
        check(
            name,
            Verdict::Warn,
            format!(
                "{state}; {} skipped: a runner pod could not be scheduled with them",
                cache.skipped
            ),
            format!(
                "kubectl -n {} get events --field-selector reason=CacheVolumeUnschedulable says why (a volume bound to a full or lost node or zone, a class that does not provision)",
                pool.namespace
            ),
        )
    } else if cache.workspace_wide {
        check(
            name,
            Verdict::Warn,
            format!(
                "{state}; shared by every repository of the workspace: a step of any of them can leave images or layers the next one runs"
            ),
            "give each repository that needs a cache a pool of its own (spec.repository), unless the workspace's repositories trust each other",
        )
    } else {
        check(name, Verdict::Pass, state, "")
    })
}

#[cfg(test)]
mod tests;
