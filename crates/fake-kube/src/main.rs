#![forbid(unsafe_code)]
//! `fake-kube`: serve a small fake Kubernetes cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use fake_kube::{ClusterConfig, FakeKube, Faults};

#[derive(Debug, Parser)]
#[command(name = "fake-kube", version, about = "A Kubernetes API test double")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for this cluster here.
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
    /// fake-bitbucket's URL: runner pods then run live runner agents against it.
    #[arg(long, value_name = "URL")]
    bitbucket_url: Option<String>,
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Allocatable CPU per node.
    #[arg(long, default_value = "8")]
    node_cpu: String,
    /// Allocatable memory per node.
    #[arg(long, default_value = "32Gi")]
    node_memory: String,
    /// Time from scheduling to Running, e.g. 2s or 500ms.
    #[arg(long, default_value = "2s")]
    pod_start_latency: String,
    /// The container runtime nodes report.
    #[arg(long, default_value = "containerd://1.7.27")]
    container_runtime: String,
    /// The pod network MTU the MTU probe pod reports.
    #[arg(long, default_value_t = 1450)]
    pod_mtu: u16,
    /// Check ServiceAccount tokens against RBAC (tokens from POST /_fake/serviceaccounts/NS/NAME/token).
    #[arg(long)]
    rbac: bool,
    /// Fault injection as JSON, e.g. '{"error_rates": {"list": 0.1}, "latency_ms": 50}'.
    #[arg(long, value_name = "JSON")]
    faults: Option<String>,
}

fn duration(raw: &str) -> Result<Duration> {
    let parsed: jiff::SignedDuration = raw
        .parse()
        .with_context(|| format!("--pod-start-latency {raw:?} is not a duration such as 2s"))?;
    Duration::try_from(parsed).context("--pod-start-latency must not be negative")
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let faults: Faults = match &cli.faults {
        Some(json) => serde_json::from_str(json).context("--faults is not a faults object")?,
        None => Faults::default(),
    };
    let config = ClusterConfig {
        nodes: cli.nodes,
        node_cpu: cli.node_cpu,
        node_memory: cli.node_memory,
        pod_start_latency: duration(&cli.pod_start_latency)?,
        bitbucket_url: cli.bitbucket_url,
        container_runtime: cli.container_runtime,
        faults,
        pod_mtu: cli.pod_mtu,
        rbac: cli.rbac,
        ..ClusterConfig::default()
    };
    let fake = FakeKube::start(cli.listen, config)
        .await
        .context("cannot listen")?;
    let kubeconfig = match &cli.kubeconfig_out {
        Some(path) => Some(
            fake.write_kubeconfig(path)
                .context("cannot write the kubeconfig")?,
        ),
        None => None,
    };
    println!(
        "{}",
        serde_json::json!({"listen": fake.url(), "kubeconfig": kubeconfig})
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    fake.shutdown();
    Ok(())
}
