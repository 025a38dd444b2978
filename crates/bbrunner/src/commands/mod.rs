use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod import;
#[cfg(feature = "lint")]
mod lint;
mod operator;
mod render;
mod simulate;

/// The Kubernetes client of the current kubeconfig or the in-cluster configuration, with an
/// error that says what is wrong once (kube's own repeats itself through its cause chain).
pub async fn kube_client() -> Result<kube::Client> {
    if let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty())
        && std::env::split_paths(&path).all(|p| !p.exists())
    {
        anyhow::bail!(
            "KUBECONFIG names {}, which does not exist; point it at a kubeconfig file",
            std::path::PathBuf::from(&path).display()
        );
    }
    kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot configure the Kubernetes client: {e}"))
}

fn install(args: &crate::cli::InstallArgs) -> Result<ExitCode> {
    bbrunner_core::manifests::validate_dns_label("--namespace", &args.namespace)?;
    anyhow::ensure!(args.replicas >= 1, "--replicas must be 1 or more");
    for watched in &args.watch_namespace {
        bbrunner_core::manifests::validate_dns_label("--watch-namespace", watched)?;
    }
    let manifests = crate::install::manifests(&crate::install::InstallOptions {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        replicas: args.replicas,
        watch_namespaces: args.watch_namespace.clone(),
        policy: args.policy.policy().map_err(anyhow::Error::msg)?,
        webhook_secret: args.webhook_secret.clone(),
        metrics_from_namespace: (!args.no_network_policy)
            .then(|| args.metrics_from_namespace.clone()),
    });
    let yaml = crate::output::yaml_documents(&manifests)?;
    std::io::Write::write_all(&mut std::io::stdout(), yaml.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn migrate(args: &crate::cli::MigrateArgs) -> Result<ExitCode> {
    let config = crate::input::read_yaml(&args.from_atlassian)?;
    let template = args
        .job_template
        .as_deref()
        .map(crate::input::read_yaml)
        .transpose()?;
    let pools = bbrunner_core::migrate::migrate(&config, template.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.from_atlassian.display()))?;
    std::io::Write::write_all(&mut std::io::stdout(), pools.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn crd() -> Result<ExitCode> {
    let yaml = crate::output::yaml(&crate::operator::crd::crd())?;
    std::io::Write::write_all(&mut std::io::stdout(), yaml.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Import {
            file,
            format,
            reveal_secret,
        } => import::run(file.as_deref(), format, reveal_secret),
        Command::Render(args) => render::run(&args),
        Command::Simulate(args) => simulate::run(&args),
        Command::Crd => crd(),
        Command::Operator(args) => operator::run(&args),
        #[cfg(feature = "lint")]
        Command::Lint(args) => lint::run(&args),
        Command::Install(args) => install(&args),
        Command::Migrate(args) => migrate(&args),
        Command::Doctor(args) => tokio::runtime::Runtime::new()?.block_on(doctor::run(&args)),
        #[cfg(feature = "demo")]
        Command::Demo(args) => tokio::runtime::Runtime::new()?.block_on(demo::run(&args)),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "bbrunner", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
