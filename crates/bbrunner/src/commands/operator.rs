use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bbrunner_core::ownership::ClusterId;
use bbrunner_core::units::parse_duration;
use tokio_util::sync::CancellationToken;

use crate::cli::{LogFormat, OperatorArgs};
use crate::operator::{self, Options, Settings};

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    // Colour codes only for a person at a terminal, never in a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn seconds(field: &'static str, raw: &str) -> Result<Duration> {
    Ok(Duration::from_secs_f64(parse_duration(field, raw)?))
}

pub fn options(args: &OperatorArgs) -> Result<Options> {
    Ok(Options {
        bitbucket_url: args.bitbucket.bitbucket_url.clone(),
        bitbucket_auth_url: args.bitbucket.bitbucket_auth_url.clone(),
        metrics_addr: args.metrics_addr,
        leader_election: args.leader_election,
        namespace: args.namespace.clone(),
        lease_namespace: args
            .lease_namespace
            .clone()
            .or_else(|| args.namespace.first().cloned())
            .unwrap_or_else(|| "default".to_owned()),
        settings: Settings {
            registration_ttl: seconds("--registration-ttl", &args.registration_ttl)?,
            deletion_grace: seconds("--deletion-grace", &args.deletion_grace)?,
            policy: args.policy.policy().map_err(anyhow::Error::msg)?,
        },
        // Per hour of the operator's clock: a simulation's hour is shorter, as fake-bitbucket's
        // rate limit counts it.
        budget: bitbucket::RequestBudget {
            requests: args.budget,
            period: Duration::from_secs_f64(3600.0 / args.time_scale.unwrap_or(1.0)),
        },
        cluster_id: args
            .cluster_id
            .as_deref()
            .map(ClusterId::new)
            .transpose()
            .context("--cluster-id")?,
        clock: match args.time_scale {
            Some(scale) => operator::clock::Clock::scaled(
                // clap requires the origin with the scale.
                args.clock_origin
                    .context("--time-scale needs --clock-origin")?,
                scale,
            ),
            None => operator::clock::Clock::wall(),
        },
        webhooks: match (args.webhook_addr, &args.webhook_secret_file) {
            (Some(addr), Some(file)) => Some((addr, webhook_secret(file)?)),
            _ => None,
        },
    })
}

/// The webhook secret from its file (a mounted Secret key): trimmed, and refused when empty,
/// since every delivery would then be refused as unsigned.
fn webhook_secret(file: &std::path::Path) -> Result<secrecy::SecretString> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --webhook-secret-file {}", file.display()))?;
    let secret = text.trim();
    anyhow::ensure!(
        !secret.is_empty(),
        "--webhook-secret-file {} is empty; put the secret the Bitbucket webhook is given in it",
        file.display()
    );
    Ok(secrecy::SecretString::from(secret.to_owned()))
}

/// Cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    Ok(token)
}

pub fn run(args: &OperatorArgs) -> Result<ExitCode> {
    init_logging(args.log_format);
    let options = options(args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = super::kube_client().await?;
        let shutdown = shutdown_on_signals()?;
        operator::run(client, options, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
