//! `bbrunner lint`: a bitbucket-pipelines.yml against the official schema and against the
//! pools that will run it. Pure: text and pools in, diagnostics out.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::labels::{Labels, MAX_LABELS, validate_label};
use crate::manifests::{Mtu, RunnerSize, dind_networks_mtu_warning};
use crate::yaml::{self, Pos, escape};

mod fix;
mod schema;
pub use fix::*;
use schema::*;

/// Atlassian's schema, vendored (MIT; license beside it).
pub const SCHEMA: &str = include_str!("../schema/bitbucket-pipelines.schema.json");
/// Bitbucket's limit on a step's run time, on runners as in the cloud.
pub const MAX_TIME_MINUTES: i64 = 120;
/// MTU the fix suggests when the pool follows its pod network (unknown here): low enough for
/// VXLAN, IPIP, WireGuard and IPsec overlays under a nested daemon.
pub const SAFE_NESTED_MTU: u16 = 1300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    #[serde(skip)]
    pub help: Option<String>,
}

/// What lint needs of a RunnerPool.
#[derive(Debug, Clone, PartialEq)]
pub struct LintPool {
    pub name: String,
    pub labels: Labels,
    pub size: RunnerSize,
    pub mtu: Mtu,
    pub dind_image: String,
    /// Where the pool has a warm cache and is no repository's own: the workspace whose every
    /// repository's steps share its Docker stores.
    pub shared_cache: Option<String>,
}

/// bbrunner's image for a step's `docker` service: a dind whose entrypoint passes
/// `DOCKER_OPTS` to dockerd and, without `--mtu` there, uses its own `eth0` MTU
/// (`deploy/docker-service/`).
pub const DOCKER_SERVICE_IMAGE: &str = "ghcr.io/bbrunner/docker-service:28.5";

/// Public dind images whose entrypoint passes `DOCKER_OPTS` to dockerd, besides bbrunner's:
/// `rewardenv/docker`'s `*-dind` tags (its entrypoint appends `$DOCKER_OPTS`; the fix many
/// guides give for the runner's MTU hang). Stock `docker:*dind` and Bitbucket's default
/// docker service image do not read it.
const PUBLIC_DOCKER_OPTS_IMAGES: &[&str] = &["rewardenv/docker"];

/// Images known to read `DOCKER_OPTS` for a step's `docker` service: the ones the user
/// declares (`lint --docker-service-image`), then bbrunner's, then the public ones above.
/// `--fix` writes the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerServiceImages(Vec<String>);

impl Default for DockerServiceImages {
    fn default() -> Self {
        Self::with_declared(&[])
    }
}

/// An image reference without its tag or digest, Docker Hub's implied prefixes removed.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let image = match image.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    };
    let image = image
        .strip_prefix("docker.io/")
        .or_else(|| image.strip_prefix("index.docker.io/"))
        .unwrap_or(image);
    image.strip_prefix("library/").unwrap_or(image)
}

/// The MTU a `DOCKER_OPTS` value passes to dockerd (`--mtu=N` or `--mtu N`), if any.
fn opts_mtu(opts: &str) -> Option<u16> {
    let mut words = opts.split_whitespace();
    while let Some(word) = words.next() {
        if let Some(n) = word.strip_prefix("--mtu=") {
            return n.parse().ok();
        }
        if word == "--mtu" {
            return words.next()?.parse().ok();
        }
    }
    None
}

impl DockerServiceImages {
    pub fn with_declared(declared: &[String]) -> Self {
        let mut images = declared.to_vec();
        images.push(DOCKER_SERVICE_IMAGE.to_owned());
        images.extend(PUBLIC_DOCKER_OPTS_IMAGES.iter().map(|i| (*i).to_owned()));
        Self(images)
    }

    /// Whether `image` (any tag of a known repository) reads `DOCKER_OPTS`.
    pub fn read_docker_opts(&self, image: &str) -> bool {
        self.0
            .iter()
            .any(|known| repository(known) == repository(image))
    }

    /// The image `--fix` writes.
    pub fn preferred(&self) -> &str {
        &self.0[0]
    }
}

/// Why `--fix` left a file as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFixed {
    #[error("its docker service sets DOCKER_OPTS already")]
    DockerOptsSet,
    #[error(
        "its docker service image {0} is not known to read DOCKER_OPTS, so an --mtu there would be ignored"
    )]
    ImageIgnoresDockerOpts(String),
    #[error("its layout is one --fix does not edit")]
    Layout,
}

/// The smallest fixed MTU below 1500 among `pools`.
fn smallest_fixed_mtu<'a>(pools: impl IntoIterator<Item = &'a LintPool>) -> Option<u16> {
    pools
        .into_iter()
        .filter_map(|pool| match pool.mtu {
            Mtu::Fixed(n) if n < 1500 => Some(n),
            _ => None,
        })
        .min()
}

/// The MTU `--fix` gives nested Docker networks under `pools`: the smallest fixed pool MTU
/// below 1500, else one safe on common overlays for pools that follow their pod network.
pub fn nested_mtu(pools: &[LintPool]) -> u16 {
    smallest_fixed_mtu(pools).unwrap_or(SAFE_NESTED_MTU)
}

fn diag(
    pos: Pos,
    severity: Severity,
    code: &'static str,
    message: String,
    help: Option<String>,
) -> Diagnostic {
    Diagnostic {
        line: pos.line,
        column: pos.column,
        severity,
        code,
        message,
        help,
    }
}

/// A step found in the pipelines, with what rules need of it.
struct Step<'a> {
    pointer: String,
    value: &'a Value,
}

fn collect_steps<'a>(value: &'a Value, pointer: String, out: &mut Vec<Step<'a>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let child = format!("{pointer}/{}", escape(k));
                if k == "step" && v.is_object() {
                    out.push(Step {
                        pointer: child.clone(),
                        value: v,
                    });
                }
                collect_steps(v, child, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_steps(v, format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn size_of(raw: Option<&Value>) -> Option<u32> {
    raw.and_then(Value::as_str)
        .and_then(|s| s.strip_suffix('x'))
        .and_then(|n| n.parse().ok())
}

const PLATFORMS: [&str; 5] = ["linux", "linux.arm64", "linux.shell", "windows", "macos"];

/// Lint a pipelines file. `Err` is a YAML syntax error (exit 2 at the edge).
pub fn lint(
    text: &str,
    pools: &[LintPool],
    images: &DockerServiceImages,
) -> Result<Vec<Diagnostic>, yaml::YamlError> {
    let doc = yaml::load(text)?;
    let mut step_networks_warned: BTreeSet<&str> = BTreeSet::new();
    let mut shared_caches_warned: BTreeSet<&str> = BTreeSet::new();
    let mut out = schema_diagnostics(&doc);
    out.extend(typo_diagnostics(&doc));
    let root = &doc.value;
    let options = &root["options"];
    let definitions = &root["definitions"]["services"];

    let mut steps = Vec::new();
    collect_steps(&root["pipelines"], "/pipelines".into(), &mut steps);

    for step in &steps {
        let s = step.value;
        let p = &step.pointer;
        let (runs_on, runs_on_ptr) = if s.get("runs-on").is_some() {
            (&s["runs-on"], format!("{p}/runs-on"))
        } else {
            (&options["runs-on"], "/options/runs-on".to_owned())
        };
        let labels: Vec<(String, String)> = match runs_on {
            Value::String(l) => vec![(l.clone(), runs_on_ptr.clone())],
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    l.as_str()
                        .map(|l| (l.to_owned(), format!("{runs_on_ptr}/{i}")))
                })
                .collect(),
            _ => Vec::new(),
        };
        for (label, at) in &labels {
            if let Err(e) = validate_label(label) {
                out.push(diag(
                    doc.position(at),
                    Severity::Error,
                    "invalid-label",
                    e.to_string(),
                    None,
                ));
            }
        }
        if labels.is_empty() {
            continue;
        }
        let names: BTreeSet<&str> = labels.iter().map(|(l, _)| l.as_str()).collect();
        let self_hosted = names.contains("self.hosted");
        if !self_hosted {
            out.push(diag(
                doc.position(&runs_on_ptr),
                Severity::Warning,
                "missing-self-hosted",
                "runs-on without self.hosted: the step does not target your runners".into(),
                Some("add self.hosted to runs-on".into()),
            ));
            continue;
        }
        let platform = PLATFORMS
            .iter()
            .find(|p| names.contains(*p))
            .copied()
            .unwrap_or("linux");
        let mut all: BTreeSet<&str> = names.clone();
        all.insert("self.hosted");
        all.insert(platform);
        if all.len() > MAX_LABELS {
            out.push(diag(
                doc.position(&runs_on_ptr),
                Severity::Error,
                "too-many-labels",
                format!("{} labels with self.hosted and {platform}; Bitbucket allows at most {MAX_LABELS}", all.len()),
                None,
            ));
        }

        let size = size_of(s.get("size").or(options.get("size"))).unwrap_or(1);
        let size_at = if s.get("size").is_some() {
            format!("{p}/size")
        } else {
            "/options/size".into()
        };
        if size > 8 {
            out.push(diag(
                doc.position(&size_at),
                Severity::Error,
                "size-unsupported",
                format!("size {size}x is for Atlassian's cloud; 8x is the most a self-hosted step can ask"),
                Some("use size: 8x or less".into()),
            ));
        }

        // Which pools can take the step.
        let wanted: Vec<&str> = names.iter().copied().collect();
        let serving: Vec<&LintPool> = pools
            .iter()
            .filter(|pool| platform == "linux" && pool.labels.serves(&wanted))
            .collect();
        if !pools.is_empty() && serving.is_empty() {
            let closest = pools
                .iter()
                .map(|pool| {
                    (
                        pool,
                        wanted
                            .iter()
                            .filter(|w| !pool.labels.serves(&[**w]))
                            .copied()
                            .collect::<Vec<_>>(),
                    )
                })
                .min_by_key(|(_, missing)| missing.len());
            let detail = match closest {
                Some((pool, missing)) if platform == "linux" => {
                    format!("closest pool {} lacks {}", pool.name, missing.join(", "))
                }
                _ => format!("bbrunner pools run linux Docker runners, not {platform}"),
            };
            out.push(diag(
                doc.position(&runs_on_ptr),
                Severity::Error,
                "unserved-labels",
                format!(
                    "no pool carries all of [{}]: {detail}; Bitbucket fails the step at once",
                    wanted.join(", ")
                ),
                Some("add the labels to a RunnerPool's spec.labels, or change runs-on".into()),
            ));
        }
        if !serving.is_empty() {
            let largest = serving
                .iter()
                .map(|pool| pool.size.multiplier())
                .max()
                .unwrap_or(1);
            if u64::from(size) > largest && size <= 8 {
                let sizes: Vec<String> = serving
                    .iter()
                    .map(|pool| format!("{} ({})", pool.name, pool.size))
                    .collect();
                out.push(diag(
                    doc.position(&size_at),
                    Severity::Error,
                    "size-exceeds-pool",
                    format!(
                        "size {size}x needs {} MB, more than the serving pools' dind gets: {}",
                        4096 * size,
                        sizes.join(", ")
                    ),
                    Some(format!(
                        "set spec.runner.size: {size}x on a pool with these labels"
                    )),
                ));
            }
        }

        // Services: known, few enough, within the step's memory.
        let services: Vec<(String, String)> = s["services"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        v.as_str()
                            .map(|n| (n.to_owned(), format!("{p}/services/{i}")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if services.len() > 5 {
            out.push(diag(
                doc.position(&format!("{p}/services")),
                Severity::Error,
                "too-many-services",
                format!("{} services; a step may use at most 5", services.len()),
                None,
            ));
        }
        let mut service_memory = 0i64;
        for (name, at) in &services {
            let defined = &definitions[name.as_str()];
            if defined.is_null() && name != "docker" {
                out.push(diag(
                    doc.position(at),
                    Severity::Error,
                    "unknown-service",
                    format!("service {name:?} is not defined under definitions.services"),
                    None,
                ));
            }
            service_memory += defined["memory"].as_i64().unwrap_or(1024);
        }
        let total = 4096 * i64::from(size.min(8));
        if !services.is_empty() && service_memory > total - 1024 {
            out.push(diag(
                doc.position(&format!("{p}/services")),
                Severity::Error,
                "service-memory",
                format!("services need {service_memory} MB; a {size}x step has {total} MB and keeps 1024 for the build container, so services get at most {}", total - 1024),
                Some("lower definitions.services.*.memory, use fewer services, or raise the step's size".into()),
            ));
        }

        // A cache shared with other repositories' steps (one note a pool): one pool is one
        // trust boundary.
        for pool in &serving {
            if let Some(workspace) = &pool.shared_cache
                && shared_caches_warned.insert(&pool.name)
            {
                out.push(diag(
                    doc.position(&runs_on_ptr),
                    Severity::Warning,
                    "shared-cache",
                    format!(
                        "pool {} serves this step with a warm Docker cache that every repository of workspace {workspace} shares: a step of any of them can leave images or build layers that this one runs",
                        pool.name
                    ),
                    Some(format!(
                        "give this repository a cached pool of its own (spec.repository), or drop spec.cache from pool {} if its repositories do not trust each other",
                        pool.name
                    )),
                ));
            }
        }

        // The step's own network, on a dind that cannot give it the pod's MTU (one note a pool).
        for pool in &serving {
            if let Some(warning) = dind_networks_mtu_warning(&pool.dind_image, pool.mtu)
                && step_networks_warned.insert(&pool.name)
            {
                out.push(diag(
                    doc.position(p),
                    Severity::Warning,
                    "step-network-mtu",
                    format!("pool {} serves this step: {warning}", pool.name),
                    Some(format!(
                        "set spec.dind.image of pool {} to a Docker 24 or later dind",
                        pool.name
                    )),
                ));
            }
        }

        // Nested Docker networks must fit the pod network's MTU.
        if services.iter().any(|(n, _)| n == "docker") {
            let docker = &definitions["docker"];
            let opts = docker["variables"]["DOCKER_OPTS"].as_str().unwrap_or("");
            let image = docker["image"].as_str();
            let reads_opts = image.is_some_and(|i| images.read_docker_opts(i));
            let small = smallest_fixed_mtu(serving.iter().copied());
            // An MTU passed counts if it fits the pool's (an auto pool's cannot be seen here).
            let passes_mtu =
                reads_opts && opts_mtu(opts).is_some_and(|n| small.is_none_or(|pool| n <= pool));
            if !opts.is_empty() && !reads_opts {
                let (at, whose) = match image {
                    Some(i) => (
                        "/definitions/services/docker/image",
                        format!(
                            "the image {i} is not known to read DOCKER_OPTS (stock docker:dind does not)"
                        ),
                    ),
                    None => (
                        "/definitions/services/docker/variables/DOCKER_OPTS",
                        "Bitbucket's default docker service image is not known to read DOCKER_OPTS"
                            .to_owned(),
                    ),
                };
                out.push(diag(
                    doc.position(at),
                    Severity::Warning,
                    "docker-opts-ignored",
                    format!("{whose}, so what you pass there may be ignored"),
                    Some(format!("set definitions.services.docker.image to {} (an image whose entrypoint passes DOCKER_OPTS to dockerd), or declare yours with --docker-service-image", images.preferred())),
                ));
            }
            // The pool's MTU is known only from the pools given.
            let auto = serving.iter().any(|pool| pool.mtu == Mtu::Auto);
            if !passes_mtu && (small.is_some() || auto) {
                let mtu = small.unwrap_or(SAFE_NESTED_MTU);
                let why = match small {
                    Some(n) => format!("the serving pool's MTU is {n}"),
                    None => format!(
                        "the pool follows its pod network's MTU (auto), often below 1500; lint cannot see it, so it suggests {SAFE_NESTED_MTU}, which fits the common overlays (`bbrunner doctor` measures yours: give it with --pod-mtu)"
                    ),
                };
                out.push(diag(
                    doc.position(&format!("{p}/services")),
                    if small.is_some() { Severity::Error } else { Severity::Warning },
                    "docker-mtu",
                    format!("this step's docker service runs its own daemon with MTU 1500 while {why}: TLS and downloads in it can hang until the step times out"),
                    Some(format!("add to the file (bbrunner lint --fix does):\ndefinitions:\n  services:\n    docker:\n      type: docker\n      image: {}\n      variables:\n        DOCKER_OPTS: \"--mtu={mtu}\"", images.preferred())),
                ));
            }
        }

        let max_time = s.get("max-time").or(options.get("max-time"));
        let max_time_at = if s.get("max-time").is_some() {
            format!("{p}/max-time")
        } else {
            "/options/max-time".into()
        };
        if let Some(minutes) = max_time.and_then(Value::as_i64)
            && minutes > MAX_TIME_MINUTES
        {
            out.push(diag(
                doc.position(&max_time_at),
                Severity::Error,
                "max-time",
                format!("max-time {minutes} exceeds the {MAX_TIME_MINUTES} minutes a step may run, on runners as in the cloud"),
                Some(format!("lower max-time to {MAX_TIME_MINUTES} or split the step")),
            ));
        }
    }
    out.sort_by(|a, b| (a.line, a.column, a.code).cmp(&(b.line, b.column, b.code)));
    out.dedup_by(|a, b| {
        a.line == b.line && a.column == b.column && a.code == b.code && a.message == b.message
    });
    Ok(out)
}

#[cfg(test)]
mod tests;
