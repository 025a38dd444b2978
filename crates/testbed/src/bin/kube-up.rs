//! `kube-up --dir DIR [--bitbucket-url URL] [--nodes N] [--node kubelet]`: a real Kubernetes
//! control plane on loopback (see `testbed::control_plane`), with agent nodes and, asked for, a
//! real kubelet node (see `testbed::kubelet_node`). Prints one JSON line once the API server is
//! healthy and the nodes are Ready, then runs until SIGTERM or Ctrl-C and stops every process
//! it started.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use testbed::control_plane::{ControlPlane, Options, binaries};

#[derive(Parser)]
#[command(
    about = "A real Kubernetes control plane on loopback, for trying bbrunner and for its tests"
)]
struct Cli {
    /// Where certificates, etcd's data, kubeconfigs and logs go (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// fake-bitbucket's URL: runner pods then run runner agents against it.
    #[arg(long)]
    bitbucket_url: Option<String>,
    /// Nodes run by the node agent.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=50))]
    nodes: u32,
    /// `kubelet`: also a real kubelet node, `kubelet-1`, with containerd, runc and a CNI
    /// bridge at MTU 1450 in network and mount namespaces of its own (root; the images of
    /// ./scripts/node-images).
    #[arg(long, value_parser = ["kubelet"])]
    node: Option<String>,
    /// Time from a pod being bound to a node to its containers running, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pod_start_latency_ms: u64,
    /// The binaries' folder (default: target/kube/bin of this workspace, or BBRUNNER_KUBE_BIN).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client::client::builder=off".into()),
        )
        .init();
    let cli = Cli::parse();
    let bin_dir = match cli.bin_dir {
        Some(dir) => dir,
        None => binaries(&testbed::cluster::workspace())?,
    };
    std::fs::create_dir_all(&cli.dir).with_context(|| format!("creating {}", cli.dir.display()))?;
    let dir = std::fs::canonicalize(&cli.dir)?;
    let mut options = Options::new(&dir, &bin_dir);
    options.nodes = cli.nodes;
    options.bitbucket_url = cli.bitbucket_url;
    options.pod_start_latency = Duration::from_millis(cli.pod_start_latency_ms);
    let mut ready = serde_json::Map::new();
    if cli.node.is_some() {
        let images = testbed::kubelet_node::images_dir();
        if let Some(missing) = testbed::kubelet_node::missing_prerequisite(&bin_dir, &images) {
            anyhow::bail!("--node kubelet: {missing}");
        }
        ready.insert(
            "images".into(),
            testbed::kubelet_node::built_images(&images)?,
        );
        if options.bitbucket_url.is_some() {
            ready.insert(
                "bitbucketUrlForPods".into(),
                testbed::kubelet_node::BITBUCKET_URL_FOR_PODS.into(),
            );
        }
        options.kubelet_node = Some(images);
    }
    let mut plane = ControlPlane::start(options).await?;
    ready.insert(
        "kubeconfig".into(),
        plane.kubeconfig().display().to_string().into(),
    );
    ready.insert("server".into(), plane.server().into());
    ready.insert(
        "kubectl".into(),
        plane.kubectl().display().to_string().into(),
    );
    println!("{}", serde_json::Value::Object(ready));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    plane.stop();
    Ok(())
}
