//! A Node as a kubelet registers and keeps it: the object, its status and its Lease.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One node the agent runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    /// Allocatable CPU, as a quantity (`8`, `3500m`).
    pub cpu: String,
    /// Allocatable memory, as a quantity (`32Gi`).
    pub memory: String,
    /// Allocatable ephemeral storage: runner pods request it (`spec.runner.diskGiB`).
    pub ephemeral_storage: String,
    /// The container runtime the node reports (`bbrunner doctor` judges dind images by it).
    pub container_runtime: String,
    pub kubelet_version: String,
    /// The node's InternalIP: where the API server reaches its kubelet API.
    pub address: String,
    pub labels: BTreeMap<String, String>,
}

impl NodeConfig {
    /// A node named `name` with room for a handful of runner pods.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            ephemeral_storage: "1Ti".into(),
            container_runtime: "containerd://1.7.27".into(),
            kubelet_version: "v1.33.0".into(),
            address: "127.0.0.1".into(),
            labels: BTreeMap::new(),
        }
    }
}

/// The node's status: capacity, a Ready condition, addresses and where its kubelet API is.
pub fn status(config: &NodeConfig, kubelet_port: Option<u16>, now: &str) -> Value {
    let resources = json!({
        "cpu": config.cpu, "memory": config.memory,
        "ephemeral-storage": config.ephemeral_storage, "pods": "110",
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let mut status = json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.address},
            {"type": "Hostname", "address": config.name},
        ],
        "nodeInfo": {
            "containerRuntimeVersion": config.container_runtime,
            "kubeletVersion": config.kubelet_version,
            "kubeProxyVersion": "", "osImage": "bbrunner node agent", "kernelVersion": "6.1.0",
            "operatingSystem": "linux", "architecture": "amd64",
            "machineID": "", "systemUUID": "", "bootID": "",
        },
    });
    if let Some(port) = kubelet_port {
        status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
    }
    status
}

/// The Node object as a kubelet creates it, status included.
pub fn object(config: &NodeConfig, kubelet_port: Option<u16>, now: &str) -> Value {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", config.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    labels.extend(config.labels.clone());
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.name, "labels": labels},
        "spec": {},
        "status": status(config, kubelet_port, now),
    })
}

/// The node's heartbeat in `kube-node-lease`, owned by the Node so that it goes with it.
pub fn lease(name: &str, node_uid: &str, now_micros: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name, "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micros},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_ready_with_its_resources_labels_and_kubelet_port() {
        let mut config = NodeConfig::new("agent-1");
        config.labels.insert("pool".into(), "ci".into());
        let node = object(&config, Some(10250), "2026-01-01T00:00:00Z");
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/hostname"],
            "agent-1"
        );
        assert_eq!(node["metadata"]["labels"]["pool"], "ci");
        assert_eq!(node["status"]["allocatable"]["ephemeral-storage"], "1Ti");
        assert_eq!(
            crate::test_support::condition_status(&node["status"], "Ready"),
            "True"
        );
        assert_eq!(
            node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert!(
            status(&config, None, "t").get("daemonEndpoints").is_none(),
            "no kubelet API, no endpoint"
        );
    }

    #[test]
    fn the_lease_is_held_by_and_owned_by_its_node() {
        let l = lease("agent-1", "uid-1", "2026-01-01T00:00:00.000000Z");
        assert_eq!(l["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(l["spec"]["holderIdentity"], "agent-1");
        assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    }
}
