//! A node agent: what a kubelet does, reduced to what bbrunner's tests need, against any API
//! server (fake-kube or a real kube-apiserver). It registers Nodes and renews their Leases,
//! runs the pods bound to them without containers (their status as a kubelet reports it, after
//! a start latency), honours graceful deletion, and for a runner container starts a
//! fake-bitbucket runner agent with the container's own environment, so that runner pods come
//! ONLINE in fake-bitbucket and take steps.
//!
//! The decisions are in `pod` and `node` (pure); this module is the IO around them.

mod kubelet_api;
pub mod node;
pub mod pod;
pub mod tls;

#[cfg(test)]
mod test_support {
    /// The `status` of an object's condition of type `kind`.
    pub fn condition_status<'a>(
        status: &'a serde_json::Value,
        kind: &str,
    ) -> &'a serde_json::Value {
        status["conditions"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == kind))
            .map(|c| &c["status"])
            .unwrap_or_else(|| panic!("no {kind} condition"))
    }
}

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fake_bitbucket::{AgentConfig as RunnerConfig, RunnerAgent};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

pub use node::NodeConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("the kubelet API's TLS: {0}")]
    Tls(String),
}

/// How the agent's pods behave.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where runner containers' agents register; runner pods run no agent without it.
    pub bitbucket_url: Option<String>,
    /// Time from a pod being bound to its containers running.
    pub pod_start_latency: Duration,
    /// The pod network's MTU, as a container reading its `eth0` MTU sees it.
    pub pod_mtu: u16,
    /// Serve the kubelet API (container logs) for a real API server to reach.
    pub serve_kubelet_api: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            bitbucket_url: None,
            pod_start_latency: Duration::from_secs(2),
            pod_mtu: 1450,
            serve_kubelet_api: false,
        }
    }
}

type PodKey = (String, String);

/// What runs of one pod.
struct PodRun {
    uid: String,
    node: String,
    /// The runner agent of its runner container, with the runner's UUID.
    runner: Option<(String, RunnerAgent)>,
    /// What each emulated container printed.
    outputs: BTreeMap<String, String>,
    /// Starting (waiting out the latency, or for its Secrets), or deleting it.
    task: Option<JoinHandle<()>>,
    deleting: bool,
    /// Deleted, but held by its preStop hook until the deletion's deadline at most.
    draining: bool,
}

impl Drop for PodRun {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// State shared by the agent's tasks and its handle.
pub(crate) struct Shared {
    config: AgentConfig,
    pods: Mutex<HashMap<PodKey, PodRun>>,
    next_ip: AtomicU32,
}

impl Shared {
    fn pods(&self) -> MutexGuard<'_, HashMap<PodKey, PodRun>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        self.pods()
            .get(&(namespace.to_owned(), pod.to_owned()))
            .and_then(|run| run.outputs.get(container).cloned())
    }

    fn next_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        format!("10.244.{}.{}", (n / 250) % 256, n % 250 + 2)
    }
}

/// One node's tasks: heartbeats, the pod watch, its kubelet API.
struct NodeTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for NodeTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A running agent. Dropping it stops its nodes and every runner agent, as if the machines
/// went away.
pub struct NodeAgent {
    shared: Arc<Shared>,
    nodes: Mutex<HashMap<String, NodeTasks>>,
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn now_micros() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

impl NodeAgent {
    /// Register `nodes` (each reached through its own client: a kubelet has its own
    /// identity) and start running their pods. Returns once every node is registered.
    pub async fn start(
        config: AgentConfig,
        nodes: Vec<(NodeConfig, Client)>,
    ) -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            config,
            pods: Mutex::new(HashMap::new()),
            next_ip: AtomicU32::new(0),
        });
        let agent = Self {
            shared,
            nodes: Mutex::new(HashMap::new()),
        };
        for (node, client) in nodes {
            agent.add_node(node, client).await?;
        }
        Ok(agent)
    }

    /// Register one more node and run its pods.
    pub async fn add_node(&self, node: NodeConfig, client: Client) -> Result<(), Error> {
        let mut tasks = Vec::new();
        let port = if self.shared.config.serve_kubelet_api {
            let (port, task) = kubelet_api::serve(&node.address, self.shared.clone()).await?;
            tasks.push(task);
            Some(port)
        } else {
            None
        };
        let uid = register(&client, &node, port).await?;
        tracing::info!(node = %node.name, "node registered");
        tasks.push(tokio::spawn(heartbeat(
            client.clone(),
            node.clone(),
            port,
            uid,
        )));
        tasks.push(tokio::spawn(watch_pods(
            client,
            node.name.clone(),
            self.shared.clone(),
        )));
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.name, NodeTasks { tasks });
        Ok(())
    }

    /// The node's machine is gone: its heartbeats stop and its containers die (the API
    /// server's objects are left as they are, for the control plane to notice).
    pub fn stop_node(&self, name: &str) -> bool {
        let stopped = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some();
        self.shared.pods().retain(|_, run| run.node != name);
        stopped
    }

    /// The pod's containers die at once (an eviction or a crash); returns whether it ran here.
    pub fn kill_pod(&self, namespace: &str, name: &str) -> bool {
        self.shared
            .pods()
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
    }

    /// Runner agents running now: `(namespace, pod) → runner UUID`.
    pub fn runner_agents(&self) -> BTreeMap<PodKey, String> {
        self.shared
            .pods()
            .iter()
            .filter_map(|(key, run)| Some((key.clone(), run.runner.as_ref()?.0.clone())))
            .collect()
    }

    /// What a container of a pod running here printed.
    pub fn log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        self.shared.log(namespace, pod, container)
    }

    /// Stop every node and container now.
    pub fn shutdown(&self) {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.shared.pods().clear();
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Create the Node, or take over an existing one as a restarted kubelet does. Returns its uid.
async fn register(client: &Client, node: &NodeConfig, port: Option<u16>) -> Result<String, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let err = |source| Error::Register {
        node: node.name.clone(),
        source,
    };
    let object: Node =
        serde_json::from_value(node::object(node, port, &now())).expect("a Node object");
    let mut attempt = 0;
    loop {
        let result = match api.create(&PostParams::default(), &object).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let labels = json!({"metadata": {"labels": object.metadata.labels}});
                match api
                    .patch(&node.name, &PatchParams::default(), &Patch::Merge(&labels))
                    .await
                {
                    Ok(_) => {
                        api.patch_status(
                            &node.name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": node::status(node, port, &now())})),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(created) => return Ok(created.uid().unwrap_or_default()),
            // The API server may still be settling its RBAC and admission at first start.
            Err(e) if attempt < 20 => {
                tracing::debug!(node = %node.name, error = %e, "node registration retried");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(err(e)),
        }
    }
}

/// Renew the node's Lease every 10 s and refresh its Ready condition every minute, as the
/// kubelet does; re-register a node someone deleted.
async fn heartbeat(client: Client, node: NodeConfig, port: Option<u16>, mut uid: String) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut beats: u64 = 0;
    loop {
        tick.tick().await;
        let lease: Lease = serde_json::from_value(node::lease(&node.name, &uid, &now_micros()))
            .expect("a Lease object");
        let renewed = match leases.get_opt(&node.name).await {
            Ok(Some(current)) => {
                let mut next = lease.clone();
                next.metadata.resource_version = current.metadata.resource_version;
                leases
                    .replace(&node.name, &PostParams::default(), &next)
                    .await
            }
            Ok(None) => leases.create(&PostParams::default(), &lease).await,
            Err(e) => Err(e),
        };
        if let Err(e) = renewed {
            tracing::warn!(node = %node.name, error = %e, "node lease not renewed");
        }
        beats += 1;
        if beats.is_multiple_of(6) {
            let status = json!({"status": node::status(&node, port, &now())});
            match nodes
                .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    if let Ok(new_uid) = register(&client, &node, port).await {
                        tracing::info!(node = %node.name, "node registered again after its deletion");
                        uid = new_uid;
                    }
                }
                Err(e) => tracing::warn!(node = %node.name, error = %e, "node status not updated"),
                Ok(_) => {}
            }
        }
    }
}

/// Watch the pods bound to `node` and run them.
async fn watch_pods(client: Client, node: String, shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed: Vec<PodKey> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                listed.push(key(&pod));
                on_pod(&client, &node, &shared, pod);
            }
            Ok(Event::InitDone) => {
                // Pods deleted while the watch was down.
                shared
                    .pods()
                    .retain(|k, run| run.node != node || listed.contains(k));
            }
            Ok(Event::Apply(pod)) => on_pod(&client, &node, &shared, pod),
            Ok(Event::Delete(pod)) => {
                let k = key(&pod);
                let mut pods = shared.pods();
                if pods
                    .get(&k)
                    .is_some_and(|run| Some(run.uid.as_str()) == pod.metadata.uid.as_deref())
                {
                    pods.remove(&k);
                }
            }
            Err(e) => tracing::debug!(node, error = %e, "pod watch interrupted"),
        }
    }
}

fn key(pod: &Pod) -> PodKey {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

fn on_pod(client: &Client, node: &str, shared: &Arc<Shared>, pod: Pod) {
    let k = key(&pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let mut pods = shared.pods();
    // A pod of the same name is a new pod: the old one's containers are gone.
    if pods.get(&k).is_some_and(|run| run.uid != uid) {
        pods.remove(&k);
    }
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        let run = pods
            .entry(k.clone())
            .or_insert_with(|| PodRun::new(&uid, node));
        if run.deleting {
            return;
        }
        if drain_holds(&pod) {
            // The preStop hook holds the containers until the mark goes, or the grace ends.
            if !run.draining {
                run.draining = true;
                let deadline = deleted.0;
                let (client, shared, k, uid) = (client.clone(), shared.clone(), k.clone(), uid);
                tokio::spawn(async move {
                    let left = deadline.duration_since(jiff::Timestamp::now());
                    let left = std::time::Duration::try_from(left).unwrap_or_default();
                    tokio::time::sleep(left).await;
                    if let Some(run) = shared.pods().get_mut(&k).filter(|r| r.uid == uid) {
                        run.stop(&client, k, uid);
                    }
                });
            }
            return;
        }
        run.stop(client, k, uid);
        return;
    }
    match phase.as_str() {
        "Succeeded" | "Failed" => {
            if let Some(run) = pods.get_mut(&k) {
                run.runner = None;
            }
        }
        _ if !pods.contains_key(&k) => {
            let mut run = PodRun::new(&uid, node);
            run.task = Some(tokio::spawn(start(
                client.clone(),
                shared.clone(),
                k.clone(),
                uid,
            )));
            pods.insert(k, run);
        }
        _ => {}
    }
}

impl PodRun {
    fn new(uid: &str, node: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            node: node.to_owned(),
            runner: None,
            outputs: BTreeMap::new(),
            task: None,
            deleting: false,
            draining: false,
        }
    }

    /// Its containers stop (a runner agent exits on SIGTERM); then the pod goes.
    fn stop(&mut self, client: &Client, k: PodKey, uid: String) {
        if self.deleting {
            return;
        }
        self.deleting = true;
        self.runner = None;
        if let Some(starting) = self.task.take() {
            starting.abort();
        }
        self.task = Some(tokio::spawn(finish_deletion(client.clone(), k, uid)));
    }
}

/// Whether a deleted pod's preStop hook still holds its containers. The agent runs no shell:
/// it knows one hook, a wait while an annotation of the pod reads `"true"` (`while grep -q
/// '^KEY="true"$' <the downward API's annotations file>; do sleep N; done`), as bbrunner's
/// runner pods carry to let a busy runner's step end, and holds the pod while it would.
fn drain_holds(pod: &Pod) -> bool {
    let waits_on = pod.spec.iter().flat_map(|s| &s.containers).find_map(|c| {
        let command = c
            .lifecycle
            .as_ref()?
            .pre_stop
            .as_ref()?
            .exec
            .as_ref()?
            .command
            .as_ref()?;
        let script = command.last()?;
        let (_, rest) = script.split_once("grep -q '^")?;
        let (key, _) = rest.split_once("=\"true\"$'")?;
        Some(key.to_owned())
    });
    waits_on.is_some_and(|key| pod.annotations().get(&key).is_some_and(|v| v == "true"))
}

/// The kubelet's last word on a deleted pod: its containers have stopped, so it goes now.
async fn finish_deletion(client: Client, (namespace, name): PodKey, uid: String) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    for attempt in 0..10 {
        match api.delete(&name, &params).await {
            Ok(_) => return,
            // Gone already, or replaced by a new pod of the same name.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
            Err(e) => {
                tracing::warn!(namespace, pod = name, error = %e, attempt, "terminated pod not removed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// What a pod's containers read from its namespace.
async fn read_references(client: &Client, pod: &Pod) -> Result<pod::Referenced, kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let (secret_names, config_map_names) = pod::references(pod);
    let mut found = pod::Referenced::default();
    for name in secret_names {
        let secret = secrets.get_opt(&name).await?;
        found.secrets.insert(name, secret);
    }
    for name in config_map_names {
        let config_map = config_maps.get_opt(&name).await?;
        found.config_maps.insert(name, config_map);
    }
    Ok(found)
}

/// Start a pod's containers after the start latency: resolve their environment (waiting,
/// as the kubelet does, for a missing Secret to appear), report it running, and start the
/// runner agent of a runner container.
async fn start(client: Client, shared: Arc<Shared>, (namespace, name): PodKey, uid: String) {
    tokio::time::sleep(shared.config.pod_start_latency).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut reported_error = None;
    let (pod, envs) = loop {
        let pod = match api.get_opt(&name).await {
            Ok(Some(pod)) => pod,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(namespace, pod = name, error = %e, "pod not read; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if pod.metadata.uid.as_deref() != Some(uid.as_str())
            || pod.metadata.deletion_timestamp.is_some()
        {
            return;
        }
        let resolved = match read_references(&client, &pod).await {
            Ok(found) => pod::long_running(&pod)
                .map(|c| pod::resolve_env(&pod, c, &found).map(|env| (c.name.clone(), env)))
                .collect::<Result<Vec<_>, _>>(),
            Err(e) => Err(format!("reading the pod's Secrets and ConfigMaps: {e}")),
        };
        match resolved {
            Ok(envs) => break (pod, envs),
            Err(message) => {
                if reported_error.as_ref() != Some(&message) {
                    let status = pod::config_error_status(&pod, &message, &now());
                    let _ = api
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": status})),
                        )
                        .await;
                    reported_error = Some(message);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let runner_env = envs
        .iter()
        .map(|(_, env)| env)
        .find(|env| env.contains_key("RUNNER_UUID"));
    let completed = pod::runs_to_completion(&pod) && runner_env.is_none();
    let placement = pod::Placement {
        pod_ip: shared.next_ip(),
        host_ip: pod
            .status
            .as_ref()
            .and_then(|s| s.host_ip.clone())
            .unwrap_or_else(|| "127.0.0.1".into()),
    };
    let status = pod::started_status(&pod, &placement, &now(), completed, &|container| {
        format!("{}-{container}", uid.replace('-', ""))
    });
    if let Err(e) = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        tracing::warn!(namespace, pod = name, error = %e, "pod status not written");
    }
    let outputs: BTreeMap<String, String> = pod::long_running(&pod)
        .map(|c| {
            (
                c.name.clone(),
                pod::emulated_output(c, shared.config.pod_mtu),
            )
        })
        .collect();
    let runner = match (&shared.config.bitbucket_url, runner_env) {
        (Some(url), Some(env)) => {
            let env: HashMap<String, String> = env.clone().into_iter().collect();
            RunnerConfig::from_env(url, &env)
                .ok()
                .map(|config| (config.runner_uuid.clone(), RunnerAgent::spawn(config)))
        }
        _ => None,
    };
    let mut pods = shared.pods();
    if let Some(run) = pods
        .get_mut(&(namespace, name))
        .filter(|run| run.uid == uid && !run.deleting)
    {
        run.outputs = outputs;
        run.runner = runner;
        // This task is the one finishing: nothing to abort.
        drop(run.task.take());
    }
}
