#![forbid(unsafe_code)]
//! `fake-bitbucket`: serve the Bitbucket test double, or run one runner agent.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use fake_bitbucket::{
    AgentConfig, FakeBitbucket, FakeConfig, Faults, NoMatch, RunnerAgent, WebhookTarget,
};

#[derive(Debug, Parser)]
#[command(
    name = "fake-bitbucket",
    version,
    about = "A Bitbucket Cloud test double",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one runner agent configured from the runner's environment variables.
    Agent {
        /// Base URL of fake-bitbucket.
        #[arg(long)]
        url: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where to serve the API (and /_fake/...: steps, runners, faults); port 0 picks one,
    /// printed at start.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Divide every internal duration (heartbeat timeout, runner poll, queue timeout, token
    /// lifetime, rate-limit window) by this.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// A workspace to serve (repeat for more).
    #[arg(long = "workspace", value_name = "SLUG")]
    workspaces: Vec<String>,
    /// A repository of a served workspace (repeat for more).
    #[arg(long = "repository", value_name = "WS/SLUG")]
    repositories: Vec<String>,
    /// An OAuth consumer the token endpoint accepts (client credentials grant).
    #[arg(long = "oauth-consumer", value_name = "KEY:SECRET")]
    oauth_consumers: Vec<String>,
    /// An Atlassian API token, for basic auth as EMAIL with TOKEN.
    #[arg(long = "api-token", value_name = "EMAIL:TOKEN")]
    api_tokens: Vec<String>,
    /// A workspace or repository access token, for bearer auth.
    #[arg(long = "access-token", value_name = "TOKEN")]
    access_tokens: Vec<String>,
    /// Give an identity (consumer key, e-mail or access token) only these scopes.
    #[arg(long = "limited-scopes", value_name = "IDENTITY=SCOPE,SCOPE")]
    limited_scopes: Vec<String>,
    /// Requests per rolling hour per identity before 429.
    #[arg(long, default_value_t = 1000)]
    rate_limit: u32,
    /// What happens to a step no online runner's labels match: Bitbucket fails it at once.
    #[arg(long, value_enum, default_value = "fail")]
    no_match: NoMatch,
    /// Share of API requests answered with an injected error.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// The HTTP status of injected errors (default 500).
    #[arg(long)]
    fault_status: Option<u16>,
    /// Added to every API request's answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of API requests whose connection is cut.
    #[arg(long, default_value_t = 0.0)]
    reset_rate: f64,
    /// Retry-After, in seconds, on injected errors (with `--fault-status 429`: a 429 storm).
    #[arg(long)]
    fault_retry_after: Option<u64>,
    /// Deliver webhooks (repo:push, commit statuses) to this URL.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// Sign webhook deliveries with the secret in this file (X-Hub-Signature: sha256=…).
    #[arg(long, value_name = "FILE", requires = "webhook_url")]
    webhook_secret_file: Option<std::path::PathBuf>,
}

fn pair(raw: &str, flag: &str, sep: char) -> Result<(String, String)> {
    match raw.split_once(sep) {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => bail!("{flag} expects A{sep}B, got a value without {sep:?}"),
    }
}

fn config(args: ServeArgs) -> Result<FakeConfig> {
    if args.time_scale.is_nan() || args.time_scale <= 0.0 {
        bail!("--time-scale must be a positive number");
    }
    Ok(FakeConfig {
        listen: args.listen,
        time_scale: args.time_scale,
        workspaces: args.workspaces,
        repositories: args
            .repositories
            .iter()
            .map(|r| pair(r, "--repository", '/'))
            .collect::<Result<_>>()?,
        oauth_consumers: args
            .oauth_consumers
            .iter()
            .map(|c| pair(c, "--oauth-consumer", ':'))
            .collect::<Result<_>>()?,
        api_tokens: args
            .api_tokens
            .iter()
            .map(|c| pair(c, "--api-token", ':'))
            .collect::<Result<_>>()?,
        access_tokens: args.access_tokens,
        limited_scopes: args
            .limited_scopes
            .iter()
            .map(|s| {
                let (id, scopes) = pair(s, "--limited-scopes", '=')?;
                Ok((id, scopes.split(',').map(str::to_owned).collect()))
            })
            .collect::<Result<HashMap<_, _>>>()?,
        rate_limit: args.rate_limit,
        no_match: args.no_match,
        faults: Faults {
            error_rate: args.error_rate,
            status: args.fault_status,
            latency_ms: args.latency_ms,
            reset_rate: args.reset_rate,
            retry_after_s: args.fault_retry_after,
        },
        webhook: WebhookTarget {
            url: args.webhook_url,
            secret: args
                .webhook_secret_file
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .map(|s| s.trim().to_owned())
                        .map_err(|e| {
                            anyhow::anyhow!("--webhook-secret-file {}: {e}", path.display())
                        })
                })
                .transpose()?,
            faults: Default::default(),
        },
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Agent { url }) => {
            let env: HashMap<String, String> = std::env::vars().collect();
            let agent = RunnerAgent::spawn(AgentConfig::from_env(&url, &env)?);
            shutdown_signal().await;
            agent.stop().await;
        }
        None => {
            let fake = FakeBitbucket::start(config(cli.serve)?)
                .await
                .context("cannot listen")?;
            println!("{}", serde_json::json!({"listen": fake.url()}));
            shutdown_signal().await;
            fake.shutdown();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn every_option_says_what_it_does() {
        let command = Cli::command();
        let undocumented: Vec<String> = command
            .get_arguments()
            .filter(|a| a.get_long().is_some() && a.get_help().is_none())
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(
            undocumented.is_empty(),
            "options without help: {undocumented:?}"
        );
    }
}
