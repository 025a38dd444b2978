//! From a RunnerPool to what the planner and the executor need: validated settings (every
//! error names its field), runner names, and the Secret and Pod of one runner, built by the
//! same pod builder as `bbrunner render`.

use std::collections::BTreeMap;

use bbrunner_core::admin_policy::PoolRequest;
use bbrunner_core::ids::RunnerUuid;
use bbrunner_core::labels::Labels;
use bbrunner_core::manifests::{
    self, DindSpec, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_RUNNER_UUID, MANAGER,
    PodPlacement, RunnerPodConfig, RunnerSize,
};
use bbrunner_core::ownership::PoolIdentity;
use bbrunner_core::registration::RunnerRegistration;
use bbrunner_core::scaling::Scaling;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use super::crd::{PoolMode, RunnerPool};

pub const LABEL_POOL: &str = "bbrunner.dev/pool";
pub const ANNOTATION_RAN_STEP: &str = "bbrunner.dev/ran-step";
/// The revision of the pool's pod template a runner pod was made from.
pub const ANNOTATION_TEMPLATE: &str = "bbrunner.dev/template";
pub const FINALIZER: &str = "bbrunner.dev/cleanup";
/// Held on a managed pool's credentials Secret while a pool uses it, so that deleting both
/// together (one `kubectl delete -f`, a GitOps prune, the namespace) still lets the operator
/// delete the pool's runners in Bitbucket first.
pub const CREDENTIALS_FINALIZER: &str = "bbrunner.dev/credentials-in-use";
/// Marks the Secrets holding [`CREDENTIALS_FINALIZER`], so that leftovers can be found.
pub const LABEL_CREDENTIALS: &str = "bbrunner.dev/credentials";

/// A spec the operator cannot act on, naming the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// What the operator runs a pool with.
#[derive(Debug, Clone)]
pub struct ValidPool {
    pub labels: Labels,
    pub scaling: Scaling,
    pub size: RunnerSize,
    pub dind: DindSpec,
    pub runner_image: String,
    /// The warm cache, when the pool asks for one.
    pub cache: Option<ValidCache>,
}

/// A pool's warm cache, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCache {
    /// Each claim's size, as the spec writes it, and in bytes.
    pub size: String,
    pub bytes: u64,
    pub storage_class_name: Option<String>,
    /// Claims kept when the pool shrinks.
    pub retain: u32,
}

impl ValidPool {
    /// The cache decision's settings; with the cache off, every free claim goes.
    pub fn cache_settings(&self) -> bbrunner_core::cache::CacheSettings {
        bbrunner_core::cache::CacheSettings {
            enabled: self.cache.is_some(),
            retain: self.cache.as_ref().map_or(0, |c| c.retain),
            delete_after: self.scaling.scale_down_delay,
        }
    }
}

impl ValidPool {
    /// What a pool being deleted is cleaned up with when its spec no longer validates: the
    /// cleanup reads only the scope and credentials, never labels, sizes or images.
    pub fn for_cleanup() -> Self {
        Self {
            labels: Labels::new(std::iter::empty::<&str>()).expect("no custom labels is valid"),
            scaling: Scaling::default(),
            size: RunnerSize::default(),
            dind: DindSpec {
                image: manifests::DEFAULT_DIND_IMAGE.to_owned(),
                mtu: manifests::Mtu::Auto,
                registry_mirrors: Vec::new(),
                extra_args: Vec::new(),
                resources: None,
            },
            runner_image: manifests::DEFAULT_RUNNER_IMAGE.to_owned(),
            cache: None,
        }
    }
}

pub fn validate(pool: &RunnerPool) -> Result<ValidPool, InvalidSpec> {
    let spec = &pool.spec;
    let labels = Labels::new(&spec.labels).map_err(|e| InvalidSpec(format!("spec.labels: {e}")))?;
    let scaling = spec
        .scaling
        .resolve()
        .map_err(|e| InvalidSpec(e.to_string()))?;
    let mtu = spec.mtu().map_err(InvalidSpec)?;
    let size = spec.size();
    let dind = DindSpec {
        image: spec.dind_image(),
        mtu,
        registry_mirrors: spec.dind.registry_mirrors.clone(),
        extra_args: spec.dind.extra_args.clone(),
        resources: spec.dind.resources.clone(),
    };
    let name = pool.metadata.name.as_deref().unwrap_or("");
    if name.len() > 40 || name.contains('.') {
        return Err(InvalidSpec(format!(
            "metadata.name {name:?}: a RunnerPool name is at most 40 characters, without dots"
        )));
    }
    if let Some(disk) = spec.runner.disk_gib
        && !(1..=4096).contains(&disk)
    {
        return Err(InvalidSpec(format!(
            "spec.runner.diskGiB is {disk}; give 1 to 4096 GiB (or leave it out for 20 per size unit)"
        )));
    }
    let template = &spec.pod_template;
    for (field, map) in [
        ("labels", &template.labels),
        ("annotations", &template.annotations),
    ] {
        if let Some(key) = map
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .find(|k| reserved_key(k))
        {
            return Err(InvalidSpec(format!(
                "spec.podTemplate.{field} has {key:?}: the bbrunner.dev/ prefix is the operator's own bookkeeping; rename the key"
            )));
        }
    }
    if spec.workspace.trim().is_empty() {
        return Err(InvalidSpec(
            "spec.workspace is empty; give the workspace slug or {uuid}".into(),
        ));
    }
    let cache = validate_cache(pool, &scaling)?;
    let valid = ValidPool {
        labels,
        scaling,
        size,
        dind,
        cache,
        runner_image: spec
            .runner
            .image
            .clone()
            .unwrap_or_else(|| manifests::DEFAULT_RUNNER_IMAGE.to_owned()),
    };
    // The pod builder's own checks (images, env names, mirrors).
    pod_config(pool, &valid, "check", false)
        .validate()
        .map_err(|e| InvalidSpec(format!("spec: {e}")))?;
    Ok(valid)
}

/// The smallest cache worth its volume: one build image and its layers.
const MIN_CACHE_BYTES: u64 = 1 << 30;

fn validate_cache(pool: &RunnerPool, scaling: &Scaling) -> Result<Option<ValidCache>, InvalidSpec> {
    let Some(cache) = &pool.spec.cache else {
        return Ok(None);
    };
    if pool.spec.mode == PoolMode::Static {
        return Err(InvalidSpec(
            "spec.cache is for managed pools: a static pool's runners keep their pods; remove spec.cache or make the pool managed".into(),
        ));
    }
    let bytes = bbrunner_core::units::parse_bytes("spec.cache.size", &cache.size)
        .map_err(|e| InvalidSpec(e.to_string()))?;
    if bytes < MIN_CACHE_BYTES {
        return Err(InvalidSpec(format!(
            "spec.cache.size is {}; a Docker cache needs at least 1Gi (images and layers of one build), such as 50Gi",
            cache.size
        )));
    }
    if let Some(class) = &cache.storage_class_name
        && let Err(e) = manifests::validate_dns_subdomain("spec.cache.storageClassName", class)
    {
        return Err(InvalidSpec(e.to_string()));
    }
    Ok(Some(ValidCache {
        size: cache.size.clone(),
        bytes,
        storage_class_name: cache.storage_class_name.clone(),
        retain: cache.retain.unwrap_or(scaling.max),
    }))
}

/// A label or annotation key of the bbrunner.dev domain or a subdomain of it.
fn reserved_key(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(prefix, _)| prefix == "bbrunner.dev" || prefix.ends_with(".bbrunner.dev"))
}

/// What the pool asks of the cluster admin's policy: its images (defaults included), and the
/// fields that reach beyond its own registration.
pub fn policy_request<'a>(pool: &'a RunnerPool, valid: &'a ValidPool) -> PoolRequest<'a> {
    let template = &pool.spec.pod_template;
    PoolRequest {
        images: vec![
            ("spec.runner.image", valid.runner_image.as_str()),
            ("spec.dind.image", valid.dind.image.as_str()),
        ],
        service_account_name: template.service_account_name.as_deref(),
        runtime_class_name: template.runtime_class_name.as_deref(),
        secret_env: pool
            .spec
            .runner
            .env
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.value_from
                    .as_ref()
                    .is_some_and(|from| from.secret_key_ref.is_some())
            })
            .map(|(index, _)| index)
            .collect(),
        cache_size: valid
            .cache
            .as_ref()
            .map(|cache| (cache.size.as_str(), cache.bytes)),
    }
}

/// A new runner's name for this pool of this cluster (see [`bbrunner_core::ownership`]).
pub fn runner_name(identity: &PoolIdentity<'_>) -> String {
    let suffix: String = std::iter::repeat_with(|| fastrand::alphanumeric().to_ascii_lowercase())
        .take(6)
        .collect();
    identity.runner_name(&suffix)
}

/// The pod and Secret name of one runner.
pub fn object_name(pool: &str, runner: &RunnerUuid) -> String {
    format!("{pool}-{}", runner.bare())
}

/// The labels of every object the operator makes for a pool (its pods, Secrets and claims).
pub fn pool_labels(pool: &RunnerPool) -> BTreeMap<String, String> {
    let name = pool.metadata.name.clone().unwrap_or_default();
    BTreeMap::from([
        (LABEL_NAME.to_owned(), manifests::APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), name.clone()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_POOL.to_owned(), name),
    ])
}

/// The labels of one runner's objects.
fn runner_labels(pool: &RunnerPool, runner: &RunnerUuid) -> BTreeMap<String, String> {
    let mut labels = pool_labels(pool);
    labels.insert(LABEL_RUNNER_UUID.to_owned(), runner.bare().to_owned());
    labels
}

fn owner(pool: &RunnerPool) -> Option<OwnerReference> {
    pool.controller_owner_ref(&())
}

fn pod_config(
    pool: &RunnerPool,
    valid: &ValidPool,
    secret_name: &str,
    repository_scoped: bool,
) -> RunnerPodConfig {
    let t = &pool.spec.pod_template;
    RunnerPodConfig {
        secret_name: secret_name.to_owned(),
        repository_scoped,
        runner_image: valid.runner_image.clone(),
        runner_resources: pool.spec.runner.resources.clone(),
        working_directory: bbrunner_core::import::DEFAULT_WORKING_DIRECTORY.to_owned(),
        runner_env: pool.spec.runner.env.clone(),
        secret_env: Vec::new(),
        size: valid.size,
        disk_gib: pool.spec.runner.disk_gib,
        dind: valid.dind.clone(),
        placement: PodPlacement {
            node_selector: t.node_selector.clone(),
            tolerations: t.tolerations.clone(),
            affinity: t.affinity.clone(),
            topology_spread_constraints: t.topology_spread_constraints.clone(),
            priority_class_name: t.priority_class_name.clone(),
            runtime_class_name: t.runtime_class_name.clone(),
            service_account_name: t.service_account_name.clone(),
            image_pull_secrets: t.image_pull_secrets.clone(),
        },
        cache_claim: None,
    }
}

/// The Secret holding one runner's registration.
pub fn secret(pool: &RunnerPool, registration: &RunnerRegistration) -> Secret {
    let name = pool.metadata.name.as_deref().unwrap_or("");
    Secret {
        metadata: ObjectMeta {
            name: Some(object_name(name, &registration.runner_uuid)),
            namespace: pool.metadata.namespace.clone(),
            labels: Some(runner_labels(pool, &registration.runner_uuid)),
            owner_references: owner(pool).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        string_data: Some(manifests::registration_secret_data(registration, &[])),
        ..Default::default()
    }
}

/// What every runner pod of a pool is made from, the runner's own registration aside.
#[derive(Clone, Copy)]
pub struct PodTemplate<'a> {
    pub pool: &'a RunnerPool,
    pub valid: &'a ValidPool,
    pub repository_scoped: bool,
}

impl PodTemplate<'_> {
    /// The template's revision; a pod of another revision is from an earlier spec.
    pub fn revision(&self) -> String {
        let placeholder =
            RunnerUuid::parse("00000000-0000-0000-0000-000000000000").expect("a well-formed UUID");
        let name = self.pool.metadata.name.as_deref().unwrap_or("");
        // Which claim a pod mounts is the runner's own, like its registration; whether the
        // pool has a cache at all is the template's.
        let claim = self.valid.cache.as_ref().map(|_| "cache");
        manifests::template_revision(&self.unmarked_pod(
            &placeholder,
            &object_name(name, &placeholder),
            claim,
        ))
    }

    /// The pod of one runner, reading its registration from `secret_name` and keeping Docker's
    /// data on `claim` (the warm cache) if given, marked with the template revision it is made
    /// from.
    pub fn pod(&self, runner: &RunnerUuid, secret_name: &str, claim: Option<&str>) -> Pod {
        let mut pod = self.unmarked_pod(runner, secret_name, claim);
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_TEMPLATE.to_owned(), self.revision());
        pod
    }

    fn unmarked_pod(&self, runner: &RunnerUuid, secret_name: &str, claim: Option<&str>) -> Pod {
        let Self {
            pool,
            valid,
            repository_scoped,
        } = *self;
        let name = pool.metadata.name.as_deref().unwrap_or("");
        let mut labels = pool.spec.pod_template.labels.clone().unwrap_or_default();
        labels.extend(runner_labels(pool, runner));
        let mut annotations = pool
            .spec
            .pod_template
            .annotations
            .clone()
            .unwrap_or_default();
        annotations.extend(manifests::runner_pod_annotations());
        Pod {
            metadata: ObjectMeta {
                name: Some(object_name(name, runner)),
                namespace: pool.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: owner(pool).map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(manifests::runner_pod_spec(&RunnerPodConfig {
                cache_claim: claim.map(str::to_owned),
                ..pod_config(pool, valid, secret_name, repository_scoped)
            })),
            status: None,
        }
    }
}
