//! The runner workload, built once here and used by `render` and the operator alike.
//!
//! What is fixed by construction (reference §2):
//! - dind runs as a native sidecar (an init container with `restartPolicy: Always`) with a
//!   startup probe that asks the daemon, so the runner container starts only once Docker answers;
//! - dind has a pinned image and memory requests = limits sized for the step, so the pod is
//!   never BestEffort (the `failed to adjust OOM score for shim` failure needs BestEffort);
//! - dind's bridge and every user-defined network get the pod's `eth0` MTU (or a given one);
//! - dind listens only on its unix socket, shared with the runner through an `emptyDir`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, Lifecycle, LifecycleHandler,
    LocalObjectReference, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Toleration,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use thiserror::Error;

mod images;
mod names;
mod render;
pub use images::*;
pub use names::*;
pub use render::*;

/// Pinned default. Not 29.x: dind 29 refuses Docker clients older than API 1.44, which
/// older runner images ship.
pub const DEFAULT_DIND_IMAGE: &str = "docker:28.5-dind";
pub const DEFAULT_RUNNER_IMAGE: &str =
    "docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1";
pub const RUNNER_CONTAINER: &str = "runner";
pub const DIND_CONTAINER: &str = "docker";
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_RUNNER_UUID: &str = "bbrunner.dev/runner-uuid";
pub const APP_NAME: &str = "bitbucket-pipelines-runner";
pub const MANAGER: &str = "bbrunner";

/// Keys of a registration Secret: the same names `bbrunner import` prints, so that an imported
/// registration can be pasted into `stringData` as is.
pub mod secret_keys {
    pub const ACCOUNT_UUID: &str = "account_uuid";
    pub const REPOSITORY_UUID: &str = "repository_uuid";
    pub const RUNNER_UUID: &str = "runner_uuid";
    pub const OAUTH_CLIENT_ID: &str = "oauth_client_id";
    pub const OAUTH_CLIENT_SECRET: &str = "oauth_client_secret";
    /// Extra variables of the UI command live under `env.NAME`.
    pub const ENV_PREFIX: &str = "env.";
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    #[error("{field} {value:?} is not a valid Kubernetes name: {reason}")]
    InvalidName {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("size {0:?} is not one of 1x, 2x, 4x, 8x (8x is the self-hosted maximum)")]
    InvalidSize(String),
    #[error(
        "mtu {0:?} is neither `auto` nor a number from 576 to 9216; use `auto` to follow the pod network"
    )]
    InvalidMtu(String),
    #[error("{field} is empty; give an image reference such as {example}")]
    EmptyImage {
        field: &'static str,
        example: &'static str,
    },
    #[error(
        "environment variable name {0:?} is not valid in Kubernetes; use letters, digits, '_', '-' and '.', not starting with a digit"
    )]
    InvalidEnvName(String),
    #[error("registry mirror {0:?} must be an http:// or https:// URL")]
    InvalidMirror(String),
    #[error(
        "dind.extraArgs[{index}] ({spelling}) opens the Docker API on TCP without TLS client verification: anyone who reaches the pod would own the node; remove it (the runner uses the unix socket) or end the arguments with --tlsverify and certificates"
    )]
    OpenDockerTcp { index: usize, spelling: String },
    #[error(
        "runner.env DOCKER_HOST sends the runner's Docker client to TCP, which would need dind's API open on TCP: remove it (the runner uses dind's unix socket), or give a literal unix:// value"
    )]
    DockerHostTcp,
    #[error("{field} {value:?} is not valid: {reason}")]
    InvalidLabel {
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "WORKING_DIRECTORY {path:?} cannot be the runner's working directory: {reason}; use a directory of its own such as /tmp"
    )]
    InvalidWorkingDirectory { path: String, reason: &'static str },
}

/// Step size: memory the runner gives a step (reference §4); 8x is the self-hosted maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RunnerSize {
    #[default]
    X1,
    X2,
    X4,
    X8,
}

impl RunnerSize {
    pub const ALL: [RunnerSize; 4] = [Self::X1, Self::X2, Self::X4, Self::X8];

    pub fn multiplier(self) -> u64 {
        match self {
            Self::X1 => 1,
            Self::X2 => 2,
            Self::X4 => 4,
            Self::X8 => 8,
        }
    }

    /// Memory a step of this size may use, in MiB (build container plus services).
    pub fn step_memory_mib(self) -> u64 {
        4096 * self.multiplier()
    }

    /// What dind gets: the step, plus 1 GiB for a step's own docker service and headroom.
    pub fn dind_memory_gib(self) -> u64 {
        4 * self.multiplier() + 1
    }

    /// The disk a step may fill by default: 20 GiB per size unit, for Docker's images, layers
    /// and volumes. A clone and the step's logs get a quarter of that each on top
    /// ([`DiskBudget`]).
    pub fn default_disk_gib(self) -> u32 {
        20 * self.multiplier() as u32
    }

    pub fn parse(raw: &str) -> Result<Self, ManifestError> {
        match raw.trim() {
            "1x" => Ok(Self::X1),
            "2x" => Ok(Self::X2),
            "4x" => Ok(Self::X4),
            "8x" => Ok(Self::X8),
            _ => Err(ManifestError::InvalidSize(raw.to_owned())),
        }
    }
}

impl fmt::Display for RunnerSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x", self.multiplier())
    }
}

/// The MTU dind gives its networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mtu {
    /// Read the pod's own `eth0` MTU when dind starts: right on any CNI without configuration.
    #[default]
    Auto,
    Fixed(u16),
}

impl Mtu {
    pub fn parse(raw: &str) -> Result<Self, ManifestError> {
        let raw = raw.trim();
        if raw == "auto" {
            return Ok(Self::Auto);
        }
        match raw.parse::<u16>() {
            Ok(n) if (576..=9216).contains(&n) => Ok(Self::Fixed(n)),
            _ => Err(ManifestError::InvalidMtu(raw.to_owned())),
        }
    }
}

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// The Docker daemon sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct DindSpec {
    pub image: String,
    pub mtu: Mtu,
    pub registry_mirrors: Vec<String>,
    pub extra_args: Vec<String>,
    /// Overrides the size-derived resources when set.
    pub resources: Option<ResourceRequirements>,
}

impl Default for DindSpec {
    fn default() -> Self {
        Self {
            image: DEFAULT_DIND_IMAGE.to_owned(),
            mtu: Mtu::Auto,
            registry_mirrors: Vec::new(),
            extra_args: Vec::new(),
            resources: None,
        }
    }
}

/// Scheduling and identity settings copied onto the pod as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodPlacement {
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    pub affinity: Option<Affinity>,
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    pub priority_class_name: Option<String>,
    pub runtime_class_name: Option<String>,
    pub service_account_name: Option<String>,
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
}

/// Everything the runner pod is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerPodConfig {
    /// The Secret holding the registration, under the keys of [`secret_keys`].
    pub secret_name: String,
    /// Repository runners also get REPOSITORY_UUID.
    pub repository_scoped: bool,
    pub runner_image: String,
    pub runner_resources: Option<ResourceRequirements>,
    pub working_directory: String,
    /// Plain variables for the runner container.
    pub runner_env: Vec<EnvVar>,
    /// Names of variables stored in the Secret under `env.NAME`.
    pub secret_env: Vec<String>,
    pub size: RunnerSize,
    /// Disk for Docker's data in GiB; `None`: the size's default.
    pub disk_gib: Option<u32>,
    pub dind: DindSpec,
    pub placement: PodPlacement,
    /// The PersistentVolumeClaim holding Docker's data across runner pods (the warm cache);
    /// `None`: an `emptyDir` that dies with the pod.
    pub cache_claim: Option<String>,
}

impl RunnerPodConfig {
    pub fn disk(&self) -> DiskBudget {
        DiskBudget {
            docker_gib: self
                .disk_gib
                .unwrap_or_else(|| self.size.default_disk_gib()),
        }
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_dns_subdomain("secret name", &self.secret_name)?;
        validate_working_directory(&self.working_directory)?;
        validate_placement(&self.placement)?;
        for (field, image, example) in [
            ("runner image", &self.runner_image, DEFAULT_RUNNER_IMAGE),
            ("dind image", &self.dind.image, DEFAULT_DIND_IMAGE),
        ] {
            if image.trim().is_empty() {
                return Err(ManifestError::EmptyImage { field, example });
            }
        }
        for name in self
            .runner_env
            .iter()
            .map(|e| &e.name)
            .chain(&self.secret_env)
        {
            validate_env_name(name)?;
        }
        for mirror in &self.dind.registry_mirrors {
            if !(mirror.starts_with("https://") || mirror.starts_with("http://")) {
                return Err(ManifestError::InvalidMirror(mirror.clone()));
            }
        }
        if let Some(listener) = crate::dockerd::unverified_tcp_listener(&self.dind.extra_args) {
            return Err(ManifestError::OpenDockerTcp {
                index: listener.index,
                spelling: listener.spelling,
            });
        }
        let docker_host_tcp = self.runner_env.iter().any(|e| {
            e.name == "DOCKER_HOST"
                && e.value
                    .as_deref()
                    .is_none_or(crate::dockerd::docker_host_is_tcp)
        });
        if docker_host_tcp {
            return Err(ManifestError::DockerHostTcp);
        }
        Ok(())
    }
}

/// Whether a variable is a proxy setting, which dind needs too: it pulls the steps' images.
fn is_proxy_variable(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "HTTP_PROXY" | "HTTPS_PROXY" | "NO_PROXY"
    )
}

fn quantity(s: impl Into<String>) -> Quantity {
    Quantity(s.into())
}

fn resources(
    requests: &[(&str, String)],
    limits: &[(&str, String)],
) -> Option<ResourceRequirements> {
    let map = |items: &[(&str, String)]| {
        Some(
            items
                .iter()
                .map(|(k, v)| (k.to_string(), quantity(v.clone())))
                .collect(),
        )
    };
    Some(ResourceRequirements {
        requests: map(requests),
        limits: map(limits),
        ..Default::default()
    })
}

/// Memory requests equal limits so a step cannot be starved by its neighbours; no CPU limit
/// because throttled builds crawl rather than fail.
pub fn default_dind_resources(size: RunnerSize) -> Option<ResourceRequirements> {
    let memory = format!("{}Gi", size.dind_memory_gib());
    resources(
        &[("cpu", "1".into()), ("memory", memory.clone())],
        &[("memory", memory)],
    )
}

/// The runner needs at least 512 MB (reference §1).
pub fn default_runner_resources() -> Option<ResourceRequirements> {
    resources(
        &[("cpu", "100m".into()), ("memory", "512Mi".into())],
        &[("memory", "1Gi".into())],
    )
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn empty_dir(name: &str, size_limit: String) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(quantity(size_limit)),
            medium: None,
        }),
        ..Default::default()
    }
}

/// How a step's disk is bounded, so that one step cannot fill its node's disk: each volume
/// has a `sizeLimit`, and the containers' ephemeral-storage limits add up to all of them
/// (the kubelet evicts a pod past either). A limit set too low evicts a busy runner, which
/// is why the pool can raise it (`spec.runner.diskGiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskBudget {
    /// Docker's images, layers and volumes (`/var/lib/docker`).
    pub docker_gib: u32,
}

impl DiskBudget {
    /// The clone (the working directory), and separately the step containers' logs.
    fn quarter_gib(self) -> u32 {
        self.docker_gib.div_ceil(4)
    }

    /// dind's socket and pid files.
    const RUN: &str = "64Mi";

    fn volume_limit(self, volume: &str) -> String {
        match volume {
            VOLUME_DOCKER_DATA => format!("{}Gi", self.docker_gib),
            VOLUME_DOCKER_RUN => Self::RUN.to_owned(),
            _ => format!("{}Gi", self.quarter_gib()),
        }
    }

    /// dind writes Docker's data and the step's logs; it asks the scheduler for a quarter.
    fn dind(self) -> (String, String) {
        (
            format!("{}Gi", self.quarter_gib()),
            format!("{}Gi", self.docker_gib + self.quarter_gib()),
        )
    }

    /// The runner writes the clone, plus 1 GiB of its own (temporary files, its log).
    fn runner(self) -> (String, String) {
        ("1Gi".to_owned(), format!("{}Gi", self.quarter_gib() + 1))
    }
}

/// `resources` with ephemeral-storage added where the user's (or our) requests and limits do
/// not say it: an explicit value always wins.
fn with_ephemeral_storage(
    resources: Option<ResourceRequirements>,
    (request, limit): (String, String),
) -> Option<ResourceRequirements> {
    let mut resources = resources.unwrap_or_default();
    for (map, value) in [
        (&mut resources.requests, request),
        (&mut resources.limits, limit),
    ] {
        map.get_or_insert_with(BTreeMap::new)
            .entry(EPHEMERAL_STORAGE.to_owned())
            .or_insert_with(|| quantity(value));
    }
    Some(resources)
}

const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

const VOLUME_WORK: &str = "work";
/// The pod's own annotations, as the kubelet writes them (the downward API), for the drain.
const VOLUME_POD_INFO: &str = "pod-info";
const POD_INFO_DIRECTORY: &str = "/etc/bbrunner/pod";

/// The annotation the operator sets on a runner pod while its runner runs a step (`"true"`),
/// and removes once it is idle: while it is set, the runner container's preStop hook holds
/// the pod's termination, so that deleting the pod (its namespace deleted, a node drained, a
/// `kubectl delete`) lets the step end first.
pub const ANNOTATION_BUSY: &str = "bbrunner.dev/busy";

/// How long a busy runner's pod may drain when deleted: Bitbucket stops a step at two hours,
/// so no step outlasts it; a minute more for the runner to report the step's end. Past it,
/// the kubelet stops the pod and the step is interrupted.
pub const DRAIN_SECONDS: i64 = 2 * 3600 + 60;

/// The runner container's preStop hook: wait while the pod is marked busy.
pub const DRAIN_HOOK: &str = r#"while grep -q '^bbrunner.dev/busy="true"$' /etc/bbrunner/pod/annotations 2>/dev/null; do sleep 5; done"#;
/// Where dind's socket, its data and the steps' logs are mounted.
const DOCKER_SOCKET_DIRECTORY: &str = "/var/run";
const DOCKER_DATA_DIRECTORY: &str = "/var/lib/docker";
const DOCKER_CONTAINERS_DIRECTORY: &str = "/var/lib/docker/containers";
const VOLUME_DOCKER_RUN: &str = "docker-run";
const VOLUME_DOCKER_CONTAINERS: &str = "docker-containers";
const VOLUME_DOCKER_DATA: &str = "docker-data";

/// dind's start, for every Docker users pin (20.10 to 29). Its first argument is the MTU, or
/// `auto` for the pod's own `eth0` (whatever the CNI); the rest go to dockerd. The MTU is
/// passed with `--mtu` (docker0) and, where this dockerd takes it, with
/// `--default-network-opt` (the user-defined networks the runner puts each step on). The flag
/// is tested, not guessed from the tag: Docker 20.10 refuses it and would never start.
pub const DIND_START_SCRIPT: &str = r#"mtu="$1"; shift
if [ -n "$BBRUNNER_CACHE" ]; then
  command -v flock >/dev/null || { echo "bbrunner: this dind image has no flock, so it cannot lock its cache volume; refusing to open a store another daemon may use" >&2; exit 78; }
  exec 9>>/var/lib/docker/.bbrunner-lock
  flock -n 9; locked=$?
  [ "$locked" -ne 1 ] || { echo "bbrunner: another Docker daemon has this cache volume open; refusing to open its store" >&2; exit 75; }
  [ "$locked" -eq 0 ] || { echo "bbrunner: flock failed (exit $locked), so the cache volume cannot be locked; refusing to open a store another daemon may use" >&2; exit 78; }
  usage() { df -Pk /var/lib/docker | awk 'NR == 2 { print int($3 * 100 / $2) }'; }
  used="$(usage)"
  if [ "$used" -ge 90 ]; then
    echo "bbrunner: cache volume ${used}% full: emptied, so that steps do not run out of disk"
    find /var/lib/docker -mindepth 1 -maxdepth 1 ! -name .bbrunner-lock -exec rm -rf {} +
    used="$(usage)"
  fi
  echo "bbrunner: cache volume locked for this daemon, ${used}% used"
  keep="$(df -Pk /var/lib/docker | awk 'NR == 2 { print int($2 * 2 / 5) }')"
  printf '{"builder": {"gc": {"enabled": true, "defaultKeepStorage": "%sKB"}}}\n' "$keep" > /var/run/bbrunner-daemon.json
  set -- --config-file=/var/run/bbrunner-daemon.json "$@"
  (while sleep 300; do
    if [ "$(usage)" -ge 70 ]; then
      echo "bbrunner: cache volume $(usage)% full: pruning what no step used for a day"
      docker container prune -f >/dev/null
      docker image prune -af --filter until=24h >/dev/null
      docker builder prune -af --keep-storage "${keep}KB" >/dev/null
      echo "bbrunner: cache volume $(usage)% used after pruning"
    fi
  done) &
fi
if [ "$mtu" = auto ]; then
  mtu="$(cat /sys/class/net/eth0/mtu)" || exit 1
  echo "bbrunner: pod eth0 MTU is $mtu"
fi
if dockerd --help 2>&1 | grep -q -- --default-network-opt; then
  set -- --default-network-opt="bridge=com.docker.network.driver.mtu=$mtu" "$@"
  echo "bbrunner: Docker networks in this pod get MTU $mtu"
else
  echo "bbrunner: WARNING: this dockerd has no --default-network-opt (Docker before 24): docker0 gets MTU $mtu, but the user-defined networks the runner puts each step on keep 1500, so downloads and TLS in steps can hang; use a dind image of Docker 24 or later" >&2
fi
exec dockerd-entrypoint.sh dockerd --host=unix:///var/run/docker.sock --mtu="$mtu" "$@""#;

fn dind_container(config: &RunnerPodConfig) -> Container {
    let dind = &config.dind;
    let mut extra: Vec<String> = dind
        .registry_mirrors
        .iter()
        .map(|m| format!("--registry-mirror={m}"))
        .collect();
    extra.extend(dind.extra_args.iter().cloned());
    // Naming `dockerd` explicitly keeps the entrypoint from also listening on TCP 2375,
    // unauthenticated, on the pod IP.
    let command = Some(vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        DIND_START_SCRIPT.to_owned(),
        "dind".to_owned(),
    ]);
    let args: Vec<String> = std::iter::once(dind.mtu.to_string()).chain(extra).collect();
    let docker_answers = |period, failures| Probe {
        exec: Some(ExecAction {
            command: Some(vec!["docker".to_owned(), "version".to_owned()]),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    };
    Container {
        name: DIND_CONTAINER.to_owned(),
        image: Some(dind.image.clone()),
        command,
        args: (!args.is_empty()).then_some(args),
        // Native sidecar: started before, and kept running alongside, the runner.
        restart_policy: Some("Always".to_owned()),
        // TLS certificates only matter for TCP, which we do not open. The runner's proxies go to
        // dind as well, since dind pulls the steps' images.
        env: Some(
            std::iter::once(env("DOCKER_TLS_CERTDIR", ""))
                .chain(
                    config
                        .cache_claim
                        .is_some()
                        .then(|| env("BBRUNNER_CACHE", "1")),
                )
                .chain(
                    config
                        .secret_env
                        .iter()
                        .filter(|name| is_proxy_variable(name))
                        .map(|name| {
                            secret_env(
                                name,
                                &config.secret_name,
                                &format!("{}{name}", secret_keys::ENV_PREFIX),
                            )
                        }),
                )
                .chain(
                    config
                        .runner_env
                        .iter()
                        .filter(|e| is_proxy_variable(&e.name))
                        .cloned(),
                )
                .collect(),
        ),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
        resources: with_ephemeral_storage(
            dind.resources
                .clone()
                .or_else(|| default_dind_resources(config.size)),
            config.disk().dind(),
        ),
        startup_probe: Some(docker_answers(2, 90)),
        readiness_probe: Some(docker_answers(10, 3)),
        volume_mounts: Some(vec![
            mount(VOLUME_WORK, &config.working_directory, false),
            mount(VOLUME_DOCKER_RUN, DOCKER_SOCKET_DIRECTORY, false),
            mount(VOLUME_DOCKER_DATA, DOCKER_DATA_DIRECTORY, false),
            mount(VOLUME_DOCKER_CONTAINERS, DOCKER_CONTAINERS_DIRECTORY, false),
        ]),
        ..Default::default()
    }
}

fn runner_container(config: &RunnerPodConfig) -> Container {
    use secret_keys as k;
    let secret = config.secret_name.as_str();
    let mut vars = vec![secret_env("ACCOUNT_UUID", secret, k::ACCOUNT_UUID)];
    if config.repository_scoped {
        vars.push(secret_env("REPOSITORY_UUID", secret, k::REPOSITORY_UUID));
    }
    vars.extend([
        secret_env("RUNNER_UUID", secret, k::RUNNER_UUID),
        secret_env("OAUTH_CLIENT_ID", secret, k::OAUTH_CLIENT_ID),
        secret_env("OAUTH_CLIENT_SECRET", secret, k::OAUTH_CLIENT_SECRET),
        env("RUNTIME_PREREQUISITES_ENABLED", "true"),
        env("WORKING_DIRECTORY", &config.working_directory),
    ]);
    vars.extend(
        config
            .secret_env
            .iter()
            .map(|name| secret_env(name, secret, &format!("{}{name}", k::ENV_PREFIX))),
    );
    vars.extend(config.runner_env.iter().cloned());
    Container {
        name: RUNNER_CONTAINER.to_owned(),
        image: Some(config.runner_image.clone()),
        env: Some(vars),
        security_context: Some(runner_security_context()),
        resources: with_ephemeral_storage(
            config
                .runner_resources
                .clone()
                .or_else(default_runner_resources),
            config.disk().runner(),
        ),
        volume_mounts: Some(vec![
            mount(VOLUME_WORK, &config.working_directory, false),
            mount(VOLUME_DOCKER_RUN, DOCKER_SOCKET_DIRECTORY, false),
            // The runner reads step logs here; it must never write them.
            mount(VOLUME_DOCKER_CONTAINERS, DOCKER_CONTAINERS_DIRECTORY, true),
            mount(VOLUME_POD_INFO, POD_INFO_DIRECTORY, true),
        ]),
        // A deleted pod whose runner is busy waits for the step's end (up to
        // DRAIN_SECONDS): the container gets no SIGTERM before the hook returns.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["/bin/sh".into(), "-c".into(), DRAIN_HOOK.into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The runner only talks to Bitbucket and to dind's socket, so it needs no privilege. It runs as
/// root, and removes what step containers (any uid) leave in the shared working directory, so
/// it keeps the three file capabilities root needs for that; everything else is dropped.
fn runner_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: Some(
                RUNNER_CAPABILITIES
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
            ),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The capabilities the runner container keeps (see `runner_security_context`).
const RUNNER_CAPABILITIES: &[&str] = &["CHOWN", "DAC_OVERRIDE", "FOWNER"];

/// The one runner pod spec: runner container plus dind sidecar, volumes and placement.
pub fn runner_pod_spec(config: &RunnerPodConfig) -> PodSpec {
    let p = config.placement.clone();
    PodSpec {
        init_containers: Some(vec![dind_container(config)]),
        containers: vec![runner_container(config)],
        volumes: Some(
            [
                VOLUME_WORK,
                VOLUME_DOCKER_RUN,
                VOLUME_DOCKER_DATA,
                VOLUME_DOCKER_CONTAINERS,
            ]
            .into_iter()
            .map(|volume| match &config.cache_claim {
                Some(claim) if volume == VOLUME_DOCKER_DATA => Volume {
                    name: volume.to_owned(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.clone(),
                        read_only: None,
                    }),
                    ..Default::default()
                },
                _ => empty_dir(volume, config.disk().volume_limit(volume)),
            })
            .chain([Volume {
                name: VOLUME_POD_INFO.to_owned(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "annotations".to_owned(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.annotations".to_owned(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }]),
                    default_mode: None,
                }),
                ..Default::default()
            }])
            .collect(),
        ),
        termination_grace_period_seconds: Some(DRAIN_SECONDS),
        // The runner never talks to Kubernetes; a token beside a privileged daemon is a gift.
        automount_service_account_token: Some(false),
        node_selector: p.node_selector,
        tolerations: p.tolerations,
        affinity: p.affinity,
        topology_spread_constraints: p.topology_spread_constraints,
        priority_class_name: p.priority_class_name,
        runtime_class_name: p.runtime_class_name,
        service_account_name: p.service_account_name,
        image_pull_secrets: p.image_pull_secrets,
        ..Default::default()
    }
}

/// Annotations every runner pod carries.
pub fn runner_pod_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        // Evicting a runner mid-step kills the build.
        (
            "cluster-autoscaler.kubernetes.io/safe-to-evict".to_owned(),
            "false".to_owned(),
        ),
        (
            "kubectl.kubernetes.io/default-container".to_owned(),
            RUNNER_CONTAINER.to_owned(),
        ),
    ])
}

#[cfg(test)]
mod tests;

/// A short, stable name for what a pod is made from (its labels, annotations and spec, as
/// JSON): pods of equal revisions are interchangeable, so a changed revision means a rollout.
/// FNV-1a, printed in hex: stable across versions of this program and of Rust.
pub fn template_revision(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let shape = serde_json::json!({
        "labels": pod.metadata.labels,
        "annotations": pod.metadata.annotations,
        "spec": pod.spec,
    });
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in shape.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
