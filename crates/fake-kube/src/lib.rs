#![forbid(unsafe_code)]
//! fake-kube: an in-memory Kubernetes API server and a handful of controllers, speaking the
//! real REST protocol so that the `kube` client, `kubectl` and the bbrunner operator run
//! against it unchanged. What it models and what it does not is in docs/architecture.md.

mod admission;
mod api;
mod apply;
mod cluster;
mod controllers;
mod events;
mod protobuf;
mod rbac;
mod selector;
mod store;
mod strategic;
mod structural;
mod types;
mod validate;
mod volumes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use node_agent::tls::{Tls, TlsListener};
use node_agent::{AgentConfig, NodeAgent, NodeConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use cluster::{Cluster, ClusterConfig, Faults};

/// The token the written kubeconfig carries.
pub const ADMIN_TOKEN: &str = "fake-kube-admin-token";
/// The node agent's token: a superuser whose requests no fault reaches, so that faults test
/// the operator rather than the emulated kubelet.
const NODE_AGENT_TOKEN: &str = "fake-kube-node-agent-token";

/// A running fake cluster. Dropping it stops the server and the controllers.
pub struct FakeKube {
    cluster: Arc<Cluster>,
    url: String,
    /// The CA of its serving certificate, when it serves HTTPS.
    ca_pem: Option<String>,
    stop: watch::Sender<bool>,
}

impl FakeKube {
    /// Serve on `listen`: plain HTTP, or HTTPS with a CA of its own when it enforces RBAC
    /// (kubectl sends bearer tokens only over TLS).
    pub async fn start(listen: SocketAddr, config: ClusterConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let tls = if config.rbac {
            let ip = address.ip().to_string();
            Some(
                Tls::new(&[ip.as_str(), "127.0.0.1", "localhost"])
                    .map_err(std::io::Error::other)?,
            )
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{address}");
        let cluster = Arc::new(Cluster::new(config));
        cluster.set_address(&address.to_string());
        let (stop, stopped) = watch::channel(false);
        let router = router(cluster.clone());
        let mut server_stop = stopped.clone();
        let shutdown = async move {
            let _ = server_stop.wait_for(|s| *s).await;
        };
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        tokio::spawn(async move {
            let served = match tls {
                Some(tls) => {
                    axum::serve(TlsListener::new(listener, &tls), router)
                        .with_graceful_shutdown(shutdown)
                        .await
                }
                None => {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(shutdown)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "fake-kube server stopped");
            }
        });
        let controllers = cluster.clone();
        let mut controller_stop = stopped;
        tokio::spawn(async move {
            tokio::select! {
                _ = controllers::run(controllers) => {},
                _ = controller_stop.wait_for(|s| *s) => {},
            }
        });
        let mut kube = Self {
            cluster,
            url,
            ca_pem,
            stop,
        };
        let agent = start_nodes(
            &kube.kubeconfig_with_token(NODE_AGENT_TOKEN),
            &kube.cluster.config,
        )
        .await;
        match agent {
            Ok(agent) => kube.cluster.set_agent(agent),
            Err(e) => {
                kube.shutdown();
                kube.url.clear();
                return Err(e);
            }
        }
        Ok(kube)
    }

    /// A kubeconfig for this cluster with the admin token.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_with_token(ADMIN_TOKEN)
    }

    /// A kubeconfig for this cluster with `token`.
    pub fn kubeconfig_with_token(&self, token: &str) -> String {
        let authority = match &self.ca_pem {
            Some(ca) => format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(ca)
            ),
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake-kube\n  cluster:\n    server: {}\n{authority}contexts:\n- name: fake-kube\n  context:\n    cluster: fake-kube\n    user: admin\n    namespace: default\ncurrent-context: fake-kube\nusers:\n- name: admin\n  user:\n    token: {token}\n",
            self.url
        )
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Kill a pod at once (eviction, crash): it is gone without grace.
    pub fn kill_pod(&self, namespace: &str, name: &str) -> bool {
        controllers::kill_pod(&self.cluster, namespace, name)
    }

    /// Remove a node: its pods fail.
    pub fn remove_node(&self, name: &str) -> bool {
        controllers::remove_node(&self.cluster, name)
    }

    /// Write the admin kubeconfig and return its path.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::write(path, self.kubeconfig())?;
        Ok(path.to_path_buf())
    }

    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        // Runner agents stop with their pods.
        self.cluster.stop_agent();
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The node agent running the cluster's nodes through its API, as against a real API server.
async fn start_nodes(kubeconfig: &str, config: &ClusterConfig) -> std::io::Result<NodeAgent> {
    let failed = |e: &dyn std::fmt::Display| std::io::Error::other(format!("node agent: {e}"));
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| failed(&e))?;
    let client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| failed(&e))?;
    let client = kube::Client::try_from(client_config).map_err(|e| failed(&e))?;
    let nodes = (1..=config.nodes)
        .map(|i| {
            let mut node = NodeConfig::new(&format!("node-{i}"));
            node.cpu = config.node_cpu.clone();
            node.memory = config.node_memory.clone();
            node.container_runtime = config.container_runtime.clone();
            node.address = format!("192.168.0.{}", 10 + i);
            (node, client.clone())
        })
        .collect();
    let agent_config = AgentConfig {
        bitbucket_url: config.bitbucket_url.clone(),
        pod_start_latency: config.pod_start_latency,
        pod_mtu: config.pod_mtu,
        serve_kubelet_api: false,
    };
    NodeAgent::start(agent_config, nodes)
        .await
        .map_err(|e| failed(&e))
}

/// Whether a request comes from the node agent.
pub(crate) fn is_node_agent(token: Option<&str>) -> bool {
    token == Some(NODE_AGENT_TOKEN)
}

fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/_fake/faults", get(get_faults).put(put_faults))
        .route("/_fake/outage", post(outage))
        .route("/_fake/watches/drop", post(drop_watches))
        .route("/_fake/pods/{namespace}/{name}/kill", post(kill_pod))
        .route("/_fake/nodes/{name}/remove", post(remove_node))
        .route("/_fake/agents", get(agents))
        .route(
            "/_fake/serviceaccounts/{namespace}/{name}/token",
            post(issue_token),
        )
        .fallback(api::handle)
        .with_state(cluster)
}

async fn get_faults(State(cluster): State<Arc<Cluster>>) -> Json<Faults> {
    Json(cluster.faults())
}

async fn put_faults(
    State(cluster): State<Arc<Cluster>>,
    Json(faults): Json<Faults>,
) -> Json<Faults> {
    cluster.set_faults(faults.clone());
    Json(faults)
}

async fn outage(State(cluster): State<Arc<Cluster>>, Json(body): Json<Value>) -> Json<Value> {
    let ms = body["ms"].as_u64().unwrap_or(5000);
    cluster.outage(Duration::from_millis(ms));
    Json(json!({"unavailable_ms": ms}))
}

async fn drop_watches(State(cluster): State<Arc<Cluster>>) -> Json<Value> {
    cluster.drop_watches();
    Json(json!({"dropped": true}))
}

async fn kill_pod(
    State(cluster): State<Arc<Cluster>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Json<Value> {
    Json(json!({"killed": controllers::kill_pod(&cluster, &namespace, &name)}))
}

async fn remove_node(
    State(cluster): State<Arc<Cluster>>,
    UrlPath(name): UrlPath<String>,
) -> Json<Value> {
    Json(json!({"removed": controllers::remove_node(&cluster, &name)}))
}

/// A bearer token for a ServiceAccount (what a projected token volume gives a pod).
async fn issue_token(
    State(cluster): State<Arc<Cluster>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Json<Value> {
    Json(json!({"token": cluster.issue_token(&namespace, &name)}))
}

async fn agents(State(cluster): State<Arc<Cluster>>) -> Json<Value> {
    let agents: Vec<Value> = cluster
        .agents()
        .into_iter()
        .map(|((namespace, pod), runner_uuid)| json!({"namespace": namespace, "pod": pod, "runner_uuid": runner_uuid}))
        .collect();
    Json(json!(agents))
}
