//! The cluster: the store plus what surrounds it in a real control plane (discovery, deletion
//! propagation, CRD registration, default service accounts) and the fault switches.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use node_agent::NodeAgent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::store::{PatchRequest, Store};
use crate::types::{ApiError, ResourceType};

/// Fault injection on the Kubernetes API (not on `/_fake/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of requests failing with 500, by verb: get, list, watch, create, update, patch,
    /// delete.
    pub error_rates: HashMap<String, f64>,
    /// Added latency, in milliseconds.
    pub latency_ms: u64,
    /// Close every watch stream after this many milliseconds (0: never).
    pub drop_watches_after_ms: u64,
}

/// How the fake cluster is shaped.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nodes: u32,
    /// Allocatable CPU per node, as a quantity (`8`, `3500m`).
    pub node_cpu: String,
    /// Allocatable memory per node, as a quantity (`32Gi`).
    pub node_memory: String,
    /// Time from scheduling to Running.
    pub pod_start_latency: Duration,
    /// Where runner pods' agents register; no agents without it.
    pub bitbucket_url: Option<String>,
    /// The container runtime nodes report (doctor compares it with dind images).
    pub container_runtime: String,
    pub faults: Faults,
    /// Watch events kept for resuming; a watch from an older resourceVersion gets 410 Gone.
    pub event_log_len: usize,
    /// The pod network's MTU, as a pod reading its `eth0` MTU sees it.
    pub pod_mtu: u16,
    /// Check ServiceAccount tokens against RBAC (the admin token stays a superuser).
    pub rbac: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            node_cpu: "8".into(),
            node_memory: "32Gi".into(),
            pod_start_latency: Duration::from_secs(2),
            bitbucket_url: None,
            container_runtime: "containerd://1.7.27".into(),
            faults: Faults::default(),
            event_log_len: 4096,
            pod_mtu: 1450,
            rbac: false,
        }
    }
}

pub struct Cluster {
    store: Store,
    pub config: ClusterConfig,
    faults: Mutex<Faults>,
    unavailable_until: Mutex<Option<Instant>>,
    drops: watch::Sender<u64>,
    /// Runs the nodes and their pods, as against a real API server; set once serving.
    agent: OnceLock<NodeAgent>,
    /// The store's resourceVersion the controllers last acted on.
    controllers_seen: Mutex<u64>,
    address: Mutex<String>,
    /// ServiceAccount tokens issued through the control API: token → (namespace, name).
    tokens: Mutex<HashMap<String, (String, String)>>,
}

fn builtin_types() -> Vec<ResourceType> {
    let mut types = vec![
        ResourceType::builtin("", "v1", "Namespace", "namespaces", false, true),
        ResourceType::builtin("", "v1", "Pod", "pods", true, true),
        ResourceType::builtin("", "v1", "Secret", "secrets", true, false),
        ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true, false),
        ResourceType::builtin("", "v1", "Event", "events", true, false),
        ResourceType::builtin("", "v1", "Node", "nodes", false, true),
        ResourceType::builtin("", "v1", "ServiceAccount", "serviceaccounts", true, false),
        ResourceType::builtin("", "v1", "Service", "services", true, true),
        ResourceType::builtin(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
            true,
        ),
        ResourceType::builtin(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            false,
            true,
        ),
        ResourceType::builtin(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            false,
            false,
        ),
        ResourceType::builtin("apps", "v1", "Deployment", "deployments", true, true),
        ResourceType::builtin("batch", "v1", "Job", "jobs", true, true),
        ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
        ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true, false),
        ResourceType::builtin(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            false,
            true,
        ),
        ResourceType::builtin(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            false,
            false,
        ),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            false,
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            false,
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            false,
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            false,
        ),
        ResourceType::builtin(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            true,
        ),
        ResourceType::builtin(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            false,
        ),
    ];
    for (plural, short) in [
        ("pods", "po"),
        ("namespaces", "ns"),
        ("deployments", "deploy"),
        ("nodes", "no"),
        ("serviceaccounts", "sa"),
        ("configmaps", "cm"),
        ("customresourcedefinitions", "crd"),
        ("services", "svc"),
        ("poddisruptionbudgets", "pdb"),
        ("networkpolicies", "netpol"),
    ] {
        if let Some(t) = types.iter_mut().find(|t| t.plural == plural) {
            t.short_names = vec![short.to_owned()];
        }
    }
    types
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Self {
        let store = Store::new(builtin_types(), config.event_log_len);
        let ns_type = store.find_type("", "namespaces").expect("built in");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(&ns_type, "v1", "", json!({"metadata": {"name": ns}}))
                .expect("fresh store");
        }
        let sa_type = store.find_type("", "serviceaccounts").expect("built in");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = store.create(&sa_type, "v1", ns, json!({"metadata": {"name": "default"}}));
        }
        let (drops, _) = watch::channel(0);
        Self {
            store,
            faults: Mutex::new(config.faults.clone()),
            config,
            unavailable_until: Mutex::new(None),
            drops,
            agent: OnceLock::new(),
            controllers_seen: Mutex::new(0),
            address: Mutex::new(String::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn set_address(&self, address: &str) {
        *self.address.lock().unwrap_or_else(|e| e.into_inner()) = address.to_owned();
    }

    pub fn address(&self) -> String {
        self.address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    // ---- identity ---------------------------------------------------------------------------

    pub fn issue_token(&self, namespace: &str, name: &str) -> String {
        let token = format!("sa-{}", uuid::Uuid::new_v4().simple());
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), (namespace.to_owned(), name.to_owned()));
        token
    }

    /// Who a bearer token is: `None` when RBAC is on and the token is unknown.
    pub fn subject(&self, token: Option<&str>) -> Option<crate::rbac::Subject> {
        if !self.config.rbac {
            return Some(crate::rbac::Subject::Admin);
        }
        match token {
            Some(crate::ADMIN_TOKEN) => Some(crate::rbac::Subject::Admin),
            Some(t) => self
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(t)
                .map(|(namespace, name)| crate::rbac::Subject::ServiceAccount {
                    namespace: namespace.clone(),
                    name: name.clone(),
                }),
            None => None,
        }
    }

    // ---- faults --------------------------------------------------------------------------

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub fn unavailable_until(&self) -> Option<Instant> {
        *self
            .unavailable_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Answer every API request with 503 for `duration`.
    pub fn outage(&self, duration: Duration) {
        *self
            .unavailable_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + duration);
    }

    /// End every open watch stream now.
    pub fn drop_watches(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    pub fn watch_drops(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }

    // ---- writes with control-plane side effects ----------------------------------------

    pub fn create(
        &self,
        rt: &ResourceType,
        version: &str,
        namespace: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let store = self.store();
        if rt.kind == "Pod" {
            let account = body["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default");
            let sa_type = store.find_type("", "serviceaccounts").expect("built in");
            if store.get(&sa_type, namespace, account).is_err() {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "pods is forbidden: error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
                    ),
                ));
            }
        }
        let mut body = body;
        if rt.kind == "PersistentVolumeClaim"
            && let Some(meta) = body["metadata"].as_object_mut()
        {
            // StorageObjectInUseProtection: a claim outlives its deletion while a pod uses it.
            let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = finalizers.as_array_mut()
                && !list
                    .iter()
                    .any(|f| f == crate::volumes::PROTECTION_FINALIZER)
            {
                list.push(json!(crate::volumes::PROTECTION_FINALIZER));
            }
        }
        let mut created = store.create(rt, version, namespace, body)?;
        match rt.kind.as_str() {
            "CustomResourceDefinition" => {
                store.register_crd(&created);
                let name = created["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                let status = json!({
                    "acceptedNames": created["spec"]["names"],
                    "storedVersions": created["spec"]["versions"].as_array().map(|v| v.iter().map(|x| x["name"].clone()).collect::<Vec<_>>()),
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
                    ],
                });
                created = store.replace(rt, version, "", &name, json!({"status": status}), true)?;
            }
            "Namespace" => {
                let sa_type = store.find_type("", "serviceaccounts").expect("built in");
                let name = created["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                let _ = store.create(
                    &sa_type,
                    "v1",
                    &name,
                    json!({"metadata": {"name": "default"}}),
                );
            }
            _ => {}
        }
        Ok(created)
    }

    pub fn patch(&self, request: PatchRequest<'_>) -> Result<Value, ApiError> {
        let (rt, name, status_only) = (request.rt, request.name, request.status_only);
        let store = self.store();
        let existed = store.get(rt, request.namespace, name).is_ok();
        let patched = store.patch(request)?;
        if rt.kind == "CustomResourceDefinition" && !status_only {
            store.register_crd(&patched);
        }
        if rt.kind == "Namespace" && !existed {
            let sa_type = store.find_type("", "serviceaccounts").expect("built in");
            let _ = store.create(
                &sa_type,
                "v1",
                name,
                json!({"metadata": {"name": "default"}}),
            );
        }
        Ok(patched)
    }

    /// Delete with Kubernetes' propagation policies; dependents are handled by the garbage
    /// collector in the controller loop.
    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        propagation: &str,
        grace: Option<i64>,
    ) -> Result<Value, ApiError> {
        let store = self.store();
        let current = store.get(rt, namespace, name)?;
        let uid = current["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        match propagation {
            "Orphan" => {
                let dependents: Vec<(ResourceType, Value)> = store
                    .all()
                    .into_iter()
                    .filter(|(_, v)| owned_by(v, &uid))
                    .collect();
                for (t, v) in dependents {
                    let refs: Vec<Value> = v["metadata"]["ownerReferences"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter(|o| o["uid"] != uid.as_str())
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    let ns = v["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
                    let dep_name = v["metadata"]["name"].as_str().unwrap_or("").to_owned();
                    let _ = store.merge(
                        &t,
                        &ns,
                        &dep_name,
                        json!({"metadata": {"ownerReferences": refs}}),
                    );
                }
            }
            // Always marked, as the API server does; the garbage collector drops the finalizer
            // once no dependent blocks it, at once when there is none.
            "Foreground" => {
                let mut finalizers: Vec<Value> = current["metadata"]["finalizers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !finalizers.iter().any(|f| f == "foregroundDeletion") {
                    finalizers.push(json!("foregroundDeletion"));
                }
                store.merge(
                    rt,
                    namespace,
                    name,
                    json!({"metadata": {"finalizers": finalizers}}),
                )?;
            }
            _ => {}
        }
        let result = store.delete(rt, namespace, name, grace)?;
        if rt.kind == "CustomResourceDefinition" && store.get(rt, namespace, name).is_err() {
            store.unregister_crd(&current);
        }
        Ok(result)
    }

    // ---- discovery -----------------------------------------------------------------------

    pub fn api_groups(&self) -> Value {
        let store = self.store();
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in store.types().iter().filter(|t| !t.group.is_empty()) {
            let versions = groups.entry(t.group.clone()).or_default();
            for v in &t.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(name, versions)| {
                let listed: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                    .collect();
                json!({"name": name, "versions": listed, "preferredVersion": listed[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/api/v1` and `/apis/GROUP/VERSION`: the resources of one group version.
    pub fn resource_list(&self, path: &str) -> Option<Value> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version) = match parts.as_slice() {
            ["api", v] => ("", *v),
            ["apis", g, v] => (*g, *v),
            _ => return None,
        };
        let types: Vec<ResourceType> = self
            .store()
            .types()
            .into_iter()
            .filter(|t| t.group == group && t.versions.iter().any(|x| x == version))
            .collect();
        if types.is_empty() {
            return None;
        }
        let verbs = json!([
            "create", "delete", "get", "list", "patch", "update", "watch"
        ]);
        let mut resources = Vec::new();
        for t in types {
            resources.push(json!({
                "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
                "kind": t.kind, "verbs": verbs, "shortNames": t.short_names, "categories": t.categories,
            }));
            if t.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": ["get", "patch", "update"],
                }));
            }
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }

    /// `/openapi/v3`: one document per group version. kubectl reads them only to learn that
    /// PATCH takes `fieldValidation`; the fake serves no schemas (it validates by itself).
    pub fn openapi_root(&self) -> Value {
        let store = self.store();
        let mut paths = serde_json::Map::new();
        for t in &store.types() {
            for v in &t.versions {
                let gv = if t.group.is_empty() {
                    format!("api/{v}")
                } else {
                    format!("apis/{}/{v}", t.group)
                };
                paths.insert(
                    gv.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash=fake")}),
                );
            }
        }
        json!({"paths": paths})
    }

    pub fn openapi_document(&self, path: &str) -> Option<Value> {
        let gv = path.strip_prefix("/openapi/v3/")?;
        let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
            ["api", v] => (String::new(), v.to_string()),
            ["apis", g, v] => (g.to_string(), v.to_string()),
            _ => return None,
        };
        let mut paths = serde_json::Map::new();
        for t in self
            .store()
            .types()
            .iter()
            .filter(|t| t.group == group && t.versions.contains(&version))
        {
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let item = if t.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
            } else {
                format!("{prefix}/{}/{{name}}", t.plural)
            };
            let gvk = json!({"group": group, "version": version, "kind": t.kind});
            let param =
                |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
            paths.insert(item, json!({"patch": {
                "x-kubernetes-group-version-kind": gvk,
                "x-kubernetes-action": "patch",
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
                "responses": {"200": {"description": "OK"}},
            }}));
        }
        if paths.is_empty() {
            return None;
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (fake-kube)", "version": "v1.33.0"},
            "paths": paths,
            "components": {"schemas": {}},
        }))
    }

    /// Runner agents running now, by pod: `(namespace, name) → runner uuid`.
    pub fn agents(&self) -> HashMap<(String, String), String> {
        self.agent
            .get()
            .map(|a| a.runner_agents().into_iter().collect())
            .unwrap_or_default()
    }

    pub(crate) fn set_agent(&self, agent: NodeAgent) {
        let _ = self.agent.set(agent);
    }

    pub(crate) fn agent(&self) -> &NodeAgent {
        self.agent
            .get()
            .expect("the node agent starts with the server")
    }

    /// What a container of a running pod printed.
    pub(crate) fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        self.agent.get()?.log(namespace, pod, container)
    }

    /// Whether the store changed since the controllers last acted on `rv`.
    pub(crate) fn controllers_behind(&self, rv: u64) -> bool {
        *self
            .controllers_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            != rv
    }

    pub(crate) fn controllers_caught_up(&self, rv: u64) {
        *self
            .controllers_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = rv;
    }

    pub(crate) fn stop_agent(&self) {
        if let Some(agent) = self.agent.get() {
            agent.shutdown();
        }
    }
}

pub fn owned_by(object: &Value, uid: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}
