use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use bbrunner_core::labels::Labels;
use bbrunner_core::lint::{
    Diagnostic, DockerServiceImages, LintPool, NotFixed, Severity, fix_docker_mtu, lint, nested_mtu,
};
use bbrunner_core::manifests::Mtu;
use serde::Serialize;

use crate::cli::{LintArgs, TextFormat};
use crate::operator::crd::RunnerPool;
use crate::operator::reconcile::{pools_resource, read_pool};

/// Exit code when the input cannot be read or parsed.
const UNREADABLE: u8 = 2;

fn lint_pool(pool: &RunnerPool) -> Result<LintPool> {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let labels = Labels::new(&pool.spec.labels)
        .with_context(|| format!("RunnerPool {name}: spec.labels"))?;
    let size = pool.spec.size();
    let mtu = pool
        .spec
        .mtu()
        .map_err(|e| anyhow!("RunnerPool {name}: {e}"))?;
    Ok(LintPool {
        name,
        labels,
        size,
        mtu,
        dind_image: pool.spec.dind_image(),
        shared_cache: pool
            .spec
            .cache
            .as_ref()
            .filter(|_| pool.spec.repository.is_none())
            .map(|_| pool.spec.workspace.clone()),
    })
}

/// The image the fixed file's docker service runs.
fn fixed_image(fixed: &str, images: &DockerServiceImages) -> String {
    bbrunner_core::yaml::load(fixed)
        .ok()
        .and_then(|d| {
            d.value["definitions"]["services"]["docker"]["image"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| images.preferred().to_owned())
}

fn pool_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// RunnerPools in manifest files: every document of kind RunnerPool, others skipped.
fn pools_from_files(paths: &[PathBuf]) -> Result<Vec<LintPool>> {
    let mut pools = Vec::new();
    for path in paths
        .iter()
        .map(|p| pool_files(p))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
    {
        let text = crate::input::read_yaml(&path)?;
        let docs = crate::input::yaml_documents(&text)
            .with_context(|| format!("{} is not YAML within budget", path.display()))?;
        for doc in docs.into_iter().filter(|d| d["kind"] == "RunnerPool") {
            let pool: RunnerPool = serde_json::from_value(doc).with_context(|| {
                format!(
                    "{}: a RunnerPool that does not match the CRD",
                    path.display()
                )
            })?;
            pools.push(lint_pool(&pool).with_context(|| format!("in {}", path.display()))?);
        }
    }
    Ok(pools)
}

/// The cluster's RunnerPools; one the operator could not run either is skipped, named.
async fn pools_from_cluster() -> Result<Vec<LintPool>> {
    use kube::ResourceExt;
    let client = super::kube_client().await?;
    let stored = kube::Api::<kube::api::DynamicObject>::all_with(client, &pools_resource())
        .list(&Default::default())
        .await
        .context("cannot list RunnerPools (is the CRD installed?)")?;
    let mut pools = Vec::new();
    for object in &stored.items {
        let id = format!(
            "{}/{}",
            object.namespace().unwrap_or_default(),
            object.name_any()
        );
        match read_pool(object)
            .map_err(|unreadable| anyhow!("{}", unreadable.field))
            .and_then(|pool| lint_pool(&pool))
        {
            Ok(pool) => pools.push(pool),
            Err(e) => eprintln!("warning: skipping RunnerPool {id}: {e:#}"),
        }
    }
    Ok(pools)
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    path: String,
    #[serde(flatten)]
    diagnostic: &'a Diagnostic,
}

fn print(path: &Path, diagnostics: &[Diagnostic], format: TextFormat) -> Result<()> {
    match format {
        TextFormat::Json => {
            let items: Vec<JsonDiagnostic> = diagnostics
                .iter()
                .map(|d| JsonDiagnostic {
                    path: path.display().to_string(),
                    diagnostic: d,
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "diagnostics": items }))?
            );
        }
        TextFormat::Text => {
            for d in diagnostics {
                let severity = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                println!(
                    "{}:{}:{}: {severity}[{}]: {}",
                    path.display(),
                    d.line,
                    d.column,
                    d.code,
                    d.message
                );
                if let Some(help) = &d.help {
                    let mut lines = help.lines();
                    if let Some(first) = lines.next() {
                        println!("  = help: {first}");
                    }
                    for line in lines {
                        println!("          {line}");
                    }
                }
            }
        }
    }
    Ok(())
}

pub fn run(args: &LintArgs) -> Result<ExitCode> {
    let unreadable = |e: anyhow::Error| {
        eprintln!("error: {e:#}");
        Ok(ExitCode::from(UNREADABLE))
    };
    // --fix rewrites the file in place: a pipe, device or directory would swallow the edit
    // (`--fix /dev/stdin` wrote into its own input) or hang.
    if args.fix && !std::fs::metadata(&args.file).is_ok_and(|m| m.is_file()) {
        return unreadable(anyhow!(
            "--fix edits a regular file in place, and {} is not one (a pipe, device, directory or missing); give the path of bitbucket-pipelines.yml",
            args.file.display()
        ));
    }
    let text = match crate::input::read_yaml(&args.file) {
        Ok(t) => t,
        Err(e) => return unreadable(e),
    };
    let mut pools = match pools_from_files(&args.pools) {
        Ok(p) => p,
        Err(e) => return unreadable(e),
    };
    if !args.pools.is_empty() && pools.is_empty() {
        // The pool-dependent rules would pass silently for want of pools.
        eprintln!(
            "warning: no RunnerPool in {}; the rules that need pools (unserved-labels, size-exceeds-pool, docker-mtu) do not run",
            args.pools
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if args.from_cluster {
        let runtime = tokio::runtime::Runtime::new()?;
        match runtime.block_on(pools_from_cluster()) {
            Ok(p) => pools.extend(p),
            Err(e) => return unreadable(e),
        }
    }
    // A pool on `auto` has the pod network's MTU, where it is known.
    if let Some(measured) = args.pod_mtu {
        for pool in &mut pools {
            if pool.mtu == Mtu::Auto {
                pool.mtu = Mtu::Fixed(measured);
            }
        }
    }
    let images = DockerServiceImages::with_declared(&args.docker_service_images);
    let mut diagnostics = match lint(&text, &pools, &images) {
        Ok(d) => d,
        Err(e) => {
            return unreadable(anyhow!(
                "{}:{}:{}: not YAML: {}",
                args.file.display(),
                e.line,
                e.column,
                e.message
            ));
        }
    };
    let mut refused = false;
    if args.fix && diagnostics.iter().any(|d| d.code == "docker-mtu") {
        let mtu = nested_mtu(&pools);
        match fix_docker_mtu(&text, mtu, &images) {
            Ok(fixed) => {
                let after = lint(&fixed, &pools, &images)
                    .map_err(|e| anyhow!("the fix broke the YAML at {e}"))?;
                // Only a fix that takes effect is written, and said to be made.
                if after.iter().any(|d| d.code == "docker-mtu") {
                    return Err(anyhow!(
                        "the fix would not clear docker-mtu; {} left as it was",
                        args.file.display()
                    ));
                }
                if args.diff {
                    let name = args.file.display().to_string();
                    let diff = similar::TextDiff::from_lines(&text, &fixed);
                    print!(
                        "{}",
                        diff.unified_diff()
                            .header(&format!("a/{name}"), &format!("b/{name}"))
                    );
                }
                if args.check || args.diff {
                    // Nothing written: the file keeps its findings (the diff alone on stdout,
                    // so that it can be applied).
                    if !args.diff {
                        print(&args.file, &diagnostics, args.format)?;
                    }
                    eprintln!(
                        "needs the fix: {} would run its docker service on {} with --mtu={mtu} (run --fix to write it)",
                        args.file.display(),
                        fixed_image(&fixed, &images)
                    );
                    return Ok(ExitCode::FAILURE);
                }
                if let Err(e) = std::fs::write(&args.file, &fixed) {
                    // Trouble, not findings: exit 2, and nothing claimed fixed.
                    return unreadable(anyhow!("cannot write {}: {e}", args.file.display()));
                }
                eprintln!(
                    "fixed: {} now runs its docker service on {} with --mtu={mtu}",
                    args.file.display(),
                    fixed_image(&fixed, &images)
                );
                diagnostics = after;
            }
            Err(why) => {
                refused = true;
                let what = match &why {
                    NotFixed::ImageIgnoresDockerOpts(_) => format!(
                        "set definitions.services.docker.image to {} (an image whose entrypoint passes DOCKER_OPTS to dockerd; see deploy/docker-service/) with `DOCKER_OPTS: \"--mtu={mtu}\"` under its variables, or, if your image does read DOCKER_OPTS, declare it with --docker-service-image",
                        images.preferred()
                    ),
                    _ => format!(
                        "under definitions.services.docker add `type: docker`, `image: {}` and, under variables, `DOCKER_OPTS: \"--mtu={mtu}\"`",
                        images.preferred()
                    ),
                };
                eprintln!(
                    "not fixed: {} was left as it was: {why}; {what}",
                    args.file.display()
                );
            }
        }
    }
    print(&args.file, &diagnostics, args.format)?;
    let errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    Ok(if errors || refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
