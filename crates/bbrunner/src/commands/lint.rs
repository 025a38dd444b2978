use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use bbrunner_core::labels::Labels;
use bbrunner_core::lint::{Diagnostic, LintPool, Severity, fix_docker_mtu, lint, nested_mtu};
use serde::Serialize;

use crate::cli::{LintArgs, TextFormat};
use crate::operator::crd::RunnerPool;

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
    })
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
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{} is not YAML", path.display()))?;
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

async fn pools_from_cluster() -> Result<Vec<LintPool>> {
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    let pools = kube::Api::<RunnerPool>::all(client)
        .list(&Default::default())
        .await
        .context("cannot list RunnerPools (is the CRD installed?)")?;
    pools.items.iter().map(lint_pool).collect()
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
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return unreadable(anyhow!("cannot read {}: {e}", args.file.display())),
    };
    let mut pools = match pools_from_files(&args.pools) {
        Ok(p) => p,
        Err(e) => return unreadable(e),
    };
    if args.from_cluster {
        let runtime = tokio::runtime::Runtime::new()?;
        match runtime.block_on(pools_from_cluster()) {
            Ok(p) => pools.extend(p),
            Err(e) => return unreadable(e),
        }
    }
    let mut diagnostics = match lint(&text, &pools) {
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
    if args.fix && diagnostics.iter().any(|d| d.code == "docker-mtu") {
        let mtu = nested_mtu(&pools);
        if let Some(fixed) = fix_docker_mtu(&text, mtu) {
            std::fs::write(&args.file, &fixed)
                .with_context(|| format!("cannot write {}", args.file.display()))?;
            eprintln!(
                "fixed: {} now passes --mtu={mtu} to its docker service",
                args.file.display()
            );
            diagnostics =
                lint(&fixed, &pools).map_err(|e| anyhow!("the fix broke the YAML at {e}"))?;
        } else {
            eprintln!(
                "not fixed: {} sets DOCKER_OPTS already or has a layout --fix does not edit; \
                 add `DOCKER_OPTS: \"--mtu={mtu}\"` under definitions.services.docker.variables \
                 by hand",
                args.file.display()
            );
        }
    }
    print(&args.file, &diagnostics, args.format)?;
    let errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    Ok(if errors {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
