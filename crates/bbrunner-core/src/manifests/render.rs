//! `bbrunner render`'s objects: the Namespace, the registration Secret and a Deployment of one
//! runner pod, from the UI command's registration.

use crate::import::{ExtraEnv, ImportedCommand};
use crate::registration::RunnerRegistration;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Namespace, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use secrecy::ExposeSecret;
use std::collections::BTreeMap;

use super::*;

/// The registration Secret's contents (plain strings: written as `stringData`, which avoids
/// the base64 and trailing-newline pitfalls of the manual recipe).
pub fn registration_secret_data(
    registration: &RunnerRegistration,
    extra_env: &[ExtraEnv],
) -> BTreeMap<String, String> {
    use secret_keys as k;
    let mut data = BTreeMap::from([
        (
            k::ACCOUNT_UUID.to_owned(),
            registration.account_uuid.braced().to_owned(),
        ),
        (
            k::RUNNER_UUID.to_owned(),
            registration.runner_uuid.braced().to_owned(),
        ),
        (
            k::OAUTH_CLIENT_ID.to_owned(),
            registration.oauth_client_id.clone(),
        ),
        (
            k::OAUTH_CLIENT_SECRET.to_owned(),
            registration.oauth_client_secret.expose_secret().to_owned(),
        ),
    ]);
    if let Some(repo) = &registration.repository_uuid {
        data.insert(k::REPOSITORY_UUID.to_owned(), repo.braced().to_owned());
    }
    for e in extra_env {
        data.insert(
            format!("{}{}", k::ENV_PREFIX, e.name),
            e.value.expose_secret().to_owned(),
        );
    }
    data
}

/// Options of `bbrunner render`.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    pub namespace: String,
    /// Defaults to `runner-<runner uuid>`, like the UI's `--name`.
    pub name: Option<String>,
    pub create_namespace: bool,
    pub size: RunnerSize,
    /// Disk for Docker's data in GiB; `None`: the size's default.
    pub disk_gib: Option<u32>,
    pub dind: DindSpec,
    /// Overrides the image of the pasted command.
    pub runner_image: Option<String>,
    /// Node selector, tolerations, image pull secrets: as a RunnerPool's `podTemplate`.
    pub placement: PodPlacement,
}

pub const DEFAULT_NAMESPACE: &str = "bitbucket-runners";

/// What `render` emits, in apply order.
#[derive(Debug, Clone)]
pub struct RenderedRunner {
    pub namespace: Option<Namespace>,
    pub secret: Secret,
    pub deployment: Deployment,
    /// Advice for the user that does not stop rendering (printed on stderr).
    pub warnings: Vec<String>,
}

/// Labels Pod Security Admission reads: dind must run privileged.
pub fn privileged_namespace_labels() -> BTreeMap<String, String> {
    ["enforce", "audit", "warn"]
        .into_iter()
        .map(|mode| {
            (
                format!("pod-security.kubernetes.io/{mode}"),
                "privileged".to_owned(),
            )
        })
        .collect()
}

/// Build the Secret and Deployment (and optionally the Namespace) for one imported runner.
pub fn render_runner(
    command: &ImportedCommand,
    options: &RenderOptions,
) -> Result<RenderedRunner, ManifestError> {
    let reg = &command.registration;
    validate_dns_label("namespace", &options.namespace)?;
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| format!("runner-{}", reg.runner_uuid.bare()));
    validate_dns_label("name", &name)?;
    let secret_name = format!("{name}-registration");

    let pod_config = RunnerPodConfig {
        secret_name: secret_name.clone(),
        repository_scoped: reg.repository_uuid.is_some(),
        runner_image: options
            .runner_image
            .clone()
            .unwrap_or_else(|| command.runner_image.clone()),
        runner_resources: None,
        working_directory: command.working_directory.clone(),
        runner_env: Vec::new(),
        secret_env: command.extra_env.iter().map(|e| e.name.clone()).collect(),
        size: options.size,
        disk_gib: options.disk_gib,
        dind: options.dind.clone(),
        placement: options.placement.clone(),
        cache_claim: None,
    };
    pod_config.validate()?;

    let mut warnings = Vec::new();
    if is_floating_dind_tag(&pod_config.dind.image) {
        warnings.push(format!(
            "dind image {:?} floats to new Docker majors (dind 29 rejects clients older than API 1.44); pin a tag such as {DEFAULT_DIND_IMAGE}",
            pod_config.dind.image
        ));
    }
    warnings.extend(dind_networks_mtu_warning(
        &pod_config.dind.image,
        pod_config.dind.mtu,
    ));
    warnings.extend(dind_client_api_warning(&pod_config.dind.image));
    if !options.create_namespace {
        warnings.push(format!(
            "namespace {:?} must allow privileged pods (Pod Security level `privileged`); pass --create-namespace or label it pod-security.kubernetes.io/enforce=privileged",
            options.namespace
        ));
    }

    let selector = BTreeMap::from([
        (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), name.clone()),
    ]);
    let mut labels = selector.clone();
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(
        LABEL_RUNNER_UUID.to_owned(),
        reg.runner_uuid.bare().to_owned(),
    );
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(options.namespace.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    };

    let namespace = options.create_namespace.then(|| Namespace {
        metadata: ObjectMeta {
            name: Some(options.namespace.clone()),
            labels: Some(privileged_namespace_labels()),
            ..Default::default()
        },
        ..Default::default()
    });

    let secret = Secret {
        metadata: meta(&secret_name),
        type_: Some("Opaque".to_owned()),
        string_data: Some(registration_secret_data(reg, &command.extra_env)),
        ..Default::default()
    };

    let deployment = Deployment {
        metadata: meta(&name),
        spec: Some(DeploymentSpec {
            // One runner UUID, one pod: a second would fight the first for the registration.
            replicas: Some(1),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                rolling_update: None,
            }),
            revision_history_limit: Some(2),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(runner_pod_annotations()),
                    ..Default::default()
                }),
                spec: Some(runner_pod_spec(&pod_config)),
            },
            ..Default::default()
        }),
        ..Default::default()
    };

    Ok(RenderedRunner {
        namespace,
        secret,
        deployment,
        warnings,
    })
}
