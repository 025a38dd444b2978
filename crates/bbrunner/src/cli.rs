use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bbrunner",
    version,
    about = "Run Bitbucket Pipelines self-hosted runners on Kubernetes",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataFormat {
    Json,
    Yaml,
    /// A Secret manifest for a static RunnerPool's `staticRunners[].secretRef` (needs
    /// --reveal-secret: it holds the OAuth secret).
    Secret,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the `docker container run` command the Bitbucket UI shows and print the runner
    /// registration in it.
    Import {
        /// File holding the pasted command; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "json")]
        format: DataFormat,
        /// Print the OAuth client secret instead of `<redacted>`.
        #[arg(long)]
        reveal_secret: bool,
    },
    /// Turn the UI command into Kubernetes manifests (Secret, Deployment, optionally the
    /// Namespace) for `kubectl apply -f -`.
    Render(RenderArgs),
    /// Replay a workload against scaling policies, ours and Atlassian's, side by side.
    Simulate(SimulateArgs),
    /// Print the RunnerPool CustomResourceDefinition.
    Crd,
    /// Run the operator: reconcile RunnerPools in the cluster of the current kubeconfig (or
    /// in-cluster configuration).
    Operator(OperatorArgs),
    /// The whole product in one process against simulated Bitbucket and Kubernetes: the
    /// operator scaling a pool through a bursty workload, then a summary.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Check a bitbucket-pipelines.yml against the official schema and the pools that run it.
    #[cfg(feature = "lint")]
    Lint(LintArgs),
    /// Check the cluster and Bitbucket for what breaks runners: CRD, operator, Pod Security,
    /// dind vs nodes, MTU, overlapping pools, quota, credentials, scheduling.
    Doctor(DoctorArgs),
    /// Print the operator's install manifests for `kubectl apply -f -`.
    Install(InstallArgs),
    /// Turn an Atlassian runners-autoscaler config into RunnerPool manifests.
    Migrate(MigrateArgs),
    /// Print a shell completion script: `bbrunner completion bash > /etc/bash_completion.d/bbrunner`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The autoscaler's runner config (its ConfigMap's runners_config.yaml).
    #[arg(long = "from-atlassian", value_name = "FILE")]
    pub from_atlassian: PathBuf,
    /// The autoscaler's job template, for images and MTU.
    #[arg(long, value_name = "FILE")]
    pub job_template: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    #[arg(long, default_value = crate::install::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[arg(long, default_value = crate::install::DEFAULT_IMAGE)]
    pub image: String,
    /// Operator replicas; more than one turns leader election on.
    #[arg(long, default_value_t = 1)]
    pub replicas: i32,
    /// Let the operator act in these namespaces only, with Roles bound there instead of a
    /// cluster-wide role (repeated or comma-separated; default: all namespaces).
    #[arg(long, value_delimiter = ',', value_name = "NS")]
    pub watch_namespace: Vec<String>,
    /// The same policy is passed to the operator and shipped as a ValidatingAdmissionPolicy.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Receive Bitbucket's webhooks, signed with key `secret` of this Secret (in the
    /// operator's namespace), behind the Service bbrunner-operator-webhooks.
    #[arg(long, value_name = "SECRET")]
    pub webhook_secret: Option<String>,
    /// The namespace whose Prometheus may scrape the operator's metrics (the NetworkPolicy).
    #[arg(long, default_value = "monitoring", value_name = "NS")]
    pub metrics_from_namespace: String,
    /// Ship no NetworkPolicy (by default only scrapes from --metrics-from-namespace, and
    /// webhooks where received, reach the operator).
    #[arg(long)]
    pub no_network_policy: bool,
}

/// What the cluster admin lets RunnerPools ask for (a RunnerPool is a privileged pod).
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Runner and dind images must match one of these patterns (`*` for any characters;
    /// repeated or comma-separated), e.g. `docker:*-dind`. Default: any image.
    #[arg(long, value_delimiter = ',', value_name = "PATTERN")]
    pub allowed_image: Vec<String>,
    /// Refuse pools that set podTemplate.serviceAccountName or runtimeClassName, or read runner
    /// variables from Secrets.
    #[arg(long)]
    pub restrict_pod_fields: bool,
    /// Refuse pools whose spec.cache.size is above this quantity (each runner slot gets a
    /// claim of that size), e.g. 100Gi. Default: no bound.
    #[arg(long, value_name = "QUANTITY")]
    pub max_cache_size: Option<String>,
}

impl PolicyArgs {
    pub fn policy(&self) -> Result<bbrunner_core::admin_policy::AdminPolicy, String> {
        let allowed_images = self
            .allowed_image
            .iter()
            .map(|p| bbrunner_core::admin_policy::ImagePattern::parse(p))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--allowed-image: {e}"))?;
        let max_cache_size = self
            .max_cache_size
            .as_deref()
            .map(bbrunner_core::admin_policy::CacheSizeCap::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(bbrunner_core::admin_policy::AdminPolicy {
            allowed_images,
            restrict_pod_fields: self.restrict_pod_fields,
            max_cache_size,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Only pools of this namespace (default: all).
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextFormat,
    #[command(flatten)]
    pub bitbucket: BitbucketArgs,
    /// Image of the short-lived pod that reports the pod network's MTU.
    #[arg(long, default_value = "busybox:1.36")]
    pub probe_image: String,
}

#[cfg(feature = "lint")]
#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// The pipelines file.
    #[arg(default_value = "bitbucket-pipelines.yml")]
    pub file: PathBuf,
    /// RunnerPool manifests (files, or directories of .yaml/.yml files).
    #[arg(long = "pools", value_name = "FILE|DIR")]
    pub pools: Vec<PathBuf>,
    /// Read the RunnerPools from the cluster of the current kubeconfig.
    #[arg(long)]
    pub from_cluster: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextFormat,
    /// Insert the docker service MTU fix into the file, keeping the rest as it is.
    #[arg(long)]
    pub fix: bool,
    /// The pod network's MTU, as `bbrunner doctor` measures it: pools with `mtu: auto` are
    /// judged with it (and --fix writes it) instead of a guess.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(576..=9216))]
    pub pod_mtu: Option<u16>,
    /// With --fix: write nothing; exit 1 if the file needs the fix (for CI).
    #[arg(long, requires = "fix")]
    pub check: bool,
    /// With --fix: write nothing; print the fix as a unified diff.
    #[arg(long, requires = "fix")]
    pub diff: bool,
    /// An image for a step's docker service whose entrypoint passes DOCKER_OPTS to dockerd
    /// (any tag of its repository counts); the first given is what --fix writes. bbrunner's
    /// own (deploy/docker-service/) is always known.
    #[arg(long = "docker-service-image", value_name = "IMAGE")]
    pub docker_service_images: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextFormat {
    Text,
    Json,
}

#[cfg(feature = "demo")]
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long the workload keeps arriving (real time).
    #[arg(long, default_value = "30s", value_name = "DUR")]
    pub duration: String,
    /// How much faster simulated time runs than real time.
    #[arg(long, default_value_t = 30.0)]
    pub time_scale: f64,
    /// `json` prints only the summary on stdout (the live view goes to stderr on a terminal).
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextFormat,
    /// After the workload, leave the fakes, the operator and the pool running, print how to
    /// reach them (kubectl, doctor, lint), and finish on Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where Bitbucket is: configuration, so that tests point it at fake-bitbucket.
#[derive(Debug, clap::Args)]
pub struct BitbucketArgs {
    #[arg(
        long,
        env = "BBRUNNER_BITBUCKET_URL",
        default_value = "https://api.bitbucket.org"
    )]
    pub bitbucket_url: String,
    #[arg(
        long,
        env = "BBRUNNER_BITBUCKET_AUTH_URL",
        default_value = "https://bitbucket.org"
    )]
    pub bitbucket_auth_url: String,
}

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub bitbucket: BitbucketArgs,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Receive Bitbucket's webhooks (repository push, build status, pull request) at
    /// POST /webhooks/bitbucket here: pools then ready runners as pipelines start, and for
    /// their next stages.
    #[arg(long, value_name = "ADDR", requires = "webhook_secret_file")]
    pub webhook_addr: Option<std::net::SocketAddr>,
    /// The webhook's secret, which every delivery must be signed with (X-Hub-Signature).
    #[arg(long, value_name = "FILE", requires = "webhook_addr")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Hold a Lease so that only one replica acts.
    #[arg(long)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (default: the first watched namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Watch RunnerPools in these namespaces only, repeated or comma-separated (default: all
    /// namespaces). With RBAC bound to these namespaces (`install --watch-namespace`).
    #[arg(long, value_delimiter = ',', value_name = "NS")]
    pub namespace: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Replace a runner that stays UNREGISTERED or OFFLINE this long.
    #[arg(long, default_value = "10m", value_name = "DUR")]
    pub registration_ttl: String,
    /// How long a deleted pool waits for busy runners before deleting them anyway.
    #[arg(long, default_value = "2h", value_name = "DUR")]
    pub deletion_grace: String,
    /// Bitbucket requests per hour per identity (Bitbucket allows 1,000). Clusters whose
    /// operators share an identity split it: 900 / the number of clusters each.
    #[arg(long, default_value_t = 900)]
    pub budget: u32,
    /// This cluster's name in the runners it creates (default: from the kube-system
    /// namespace's UID). Operators of different clusters never touch each other's runners.
    #[arg(long, env = "BBRUNNER_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Simulations only: run the operator's clock this many times faster than the wall
    /// clock (as fake-bitbucket's `--time-scale`), so that pool durations mean simulated time.
    /// Needs --clock-origin: two scaled clocks agree only from the same origin.
    #[arg(
        long,
        hide = true,
        value_name = "N",
        value_parser = time_scale,
        requires = "clock_origin"
    )]
    pub time_scale: Option<f64>,
    /// Simulations only: the Unix second from which the scaled clock runs: fake-bitbucket's
    /// `epoch` (GET /_fake/clock), so that both clocks agree.
    #[arg(
        long,
        hide = true,
        value_name = "UNIX_SECONDS",
        requires = "time_scale"
    )]
    pub clock_origin: Option<f64>,
}

fn time_scale(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(scale) if scale.is_finite() && (1.0..=1000.0).contains(&scale) => Ok(scale),
        _ => Err(format!("{raw:?} is not a time scale from 1 to 1000")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("workload").required(true).args(["trace", "scenario"])))]
pub struct SimulateArgs {
    /// JSON Lines trace: one step {"at", "duration", "labels", "size"} or one pipeline
    /// {"at", "repository", "pipeline": [[{"name", "duration", "labels", "size"}, ...], ...]}
    /// per line (stages in order, the steps of a stage in parallel).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// A built-in workload.
    #[arg(long, value_name = "workday|burst|nightly|steady|pipelines")]
    pub scenario: Option<String>,
    /// A policy to run, optionally with its poll interval (`atlassian-ratio:120s`), and for
    /// bbrunner's policies `,webhooks` (Bitbucket's webhooks reach the operator: it plans at
    /// each push) or `,no-lookahead` (it does not read pipelines' later stages ahead); repeat
    /// to compare. Default: idle-buffer, queue and atlassian-ratio.
    #[arg(long = "policy", value_name = "NAME[:POLL][,webhooks][,no-lookahead]")]
    pub policies: Vec<String>,
    /// A RunnerPool manifest whose spec.labels and spec.scaling to use.
    #[arg(long, value_name = "FILE")]
    pub pool: Option<PathBuf>,
    /// Mean runner start latency (pod start and registration); spread is a third of it.
    #[arg(long, default_value = "45s", value_name = "DUR")]
    pub start_latency: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What a step loses on a runner whose Docker store is empty (its pulls and a build from
    /// no layers), e.g. 90s; the first step of each new runner pays it, unless the pool's warm
    /// cache gives the runner a used volume. Default 0s: not modelled.
    #[arg(long, default_value = "0s", value_name = "DUR")]
    pub cold_start: String,
    /// Give bbrunner's policies a warm cache keeping N volumes when the pool shrinks (as
    /// spec.cache.retain; overrides the --pool's spec.cache). Atlassian's autoscaler has none.
    #[arg(long, value_name = "N")]
    pub cache_retain: Option<u32>,
    /// Weeks the pool served before the measured ones, for its demand forecast to learn from:
    /// for a scenario, other seeds of it on the same day of the week (default 4); for a trace,
    /// its first N weeks, the rest measured (default 0: all of it measured).
    #[arg(long, value_name = "N")]
    pub history_weeks: Option<u32>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
    /// Write an SVG of queued steps and runners over time, one panel per policy.
    #[cfg(feature = "plot")]
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// File holding the pasted command; `-` or nothing reads standard input.
    #[arg(long, value_name = "FILE|-")]
    pub docker_command: Option<PathBuf>,
    #[arg(long, default_value = bbrunner_core::manifests::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Name of the Deployment (and prefix of the Secret); default `runner-<runner uuid>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Also emit the Namespace, labelled so Pod Security Admission allows privileged dind.
    #[arg(long)]
    pub create_namespace: bool,
    /// MTU for dind's networks: `auto` reads the pod's eth0 MTU at start, or a number.
    #[arg(long, default_value = "auto", value_name = "auto|N")]
    pub mtu: String,
    #[arg(long, default_value = bbrunner_core::manifests::DEFAULT_DIND_IMAGE)]
    pub dind_image: String,
    /// Overrides the runner image of the pasted command.
    #[arg(long)]
    pub runner_image: Option<String>,
    /// Largest step size this runner serves: sizes dind's memory and disk.
    #[arg(long, default_value = "1x", value_name = "1x|2x|4x|8x")]
    pub size: String,
    /// Disk for Docker's images and layers, in GiB (default 20 per size unit); the clone and
    /// the step's logs get a quarter of it each. Past these the kubelet evicts the runner.
    #[arg(long, value_name = "GIB", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub disk_gib: Option<u32>,
    /// Schedule only on nodes with this label (repeatable).
    #[arg(long = "node-selector", value_name = "KEY=VALUE")]
    pub node_selectors: Vec<String>,
    /// Tolerate this taint (repeatable): `KEY[=VALUE]:EFFECT`, or `KEY` for any effect.
    #[arg(long = "toleration", value_name = "KEY[=VALUE][:EFFECT]")]
    pub tolerations: Vec<String>,
    /// A Secret to pull the runner and dind images with (repeatable).
    #[arg(long = "image-pull-secret", value_name = "NAME")]
    pub image_pull_secrets: Vec<String>,
    /// A registry mirror for dind's pulls of step images (repeatable).
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
}
