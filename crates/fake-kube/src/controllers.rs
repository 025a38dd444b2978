//! What runs beside a real API server, reduced to what our tests need: a scheduler that
//! fits pods onto nodes by requests, a kubelet that starts pods after a latency and runs a
//! fake-bitbucket runner agent for every runner container, a Deployment controller (no
//! ReplicaSets), the garbage collector, the namespace and service-account controllers, and
//! pod termination.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use fake_bitbucket::{AgentConfig, RunnerAgent};
use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterConfig, owned_by};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{PatchKind, ResourceType};

/// The kubelet's memory: when pods were scheduled and which agents run.
#[derive(Default)]
pub struct Kubelet {
    pub scheduled_at: HashMap<(String, String), Instant>,
    pub agents: HashMap<(String, String), (String, RunnerAgent)>,
    next_ip: u32,
    /// The store's resourceVersion at the last pass, and when a waiting pod is next due.
    last_rv: u64,
    next_due: Option<Instant>,
}

pub fn node_object(config: &ClusterConfig, i: u32) -> Value {
    let name = format!("node-{i}");
    json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        }},
        "spec": {},
        "status": {
            "capacity": {"cpu": config.node_cpu, "memory": config.node_memory, "pods": "110"},
            "allocatable": {"cpu": config.node_cpu, "memory": config.node_memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": format!("192.168.0.{}", 10 + i)}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "containerRuntimeVersion": config.container_runtime, "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "v1.33.0", "osImage": "fake-kube", "kernelVersion": "6.1.0",
                "operatingSystem": "linux", "architecture": "amd64", "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    })
}

/// A CPU quantity in millicores.
pub fn cpu_millis(q: &Value) -> i64 {
    let s = q
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| q.to_string());
    if let Some(m) = s.strip_suffix('m') {
        m.parse().unwrap_or(0)
    } else {
        (s.parse::<f64>().unwrap_or(0.0) * 1000.0) as i64
    }
}

/// A memory quantity in bytes.
pub fn memory_bytes(q: &Value) -> i64 {
    let s = q
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| q.to_string());
    let units: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
    ];
    for (suffix, factor) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            return (n.parse::<f64>().unwrap_or(0.0) * factor) as i64;
        }
    }
    s.parse::<f64>().unwrap_or(0.0) as i64
}

/// What a pod asks of a node: its containers and sidecars, or its largest plain init
/// container if that is more.
fn pod_requests(spec: &Value) -> (i64, i64) {
    let request = |c: &Value| {
        let r = &c["resources"]["requests"];
        let l = &c["resources"]["limits"];
        let cpu = if r["cpu"].is_null() {
            &l["cpu"]
        } else {
            &r["cpu"]
        };
        let mem = if r["memory"].is_null() {
            &l["memory"]
        } else {
            &r["memory"]
        };
        (cpu_millis(cpu), memory_bytes(mem))
    };
    let mut cpu = 0;
    let mut mem = 0;
    let mut init_cpu = 0;
    let mut init_mem = 0;
    for c in spec["containers"].as_array().into_iter().flatten() {
        let (c, m) = request(c);
        cpu += c;
        mem += m;
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let (rc, rm) = request(c);
        if c["restartPolicy"] == "Always" {
            cpu += rc;
            mem += rm;
        } else {
            init_cpu = init_cpu.max(rc);
            init_mem = init_mem.max(rm);
        }
    }
    (cpu.max(init_cpu), mem.max(init_mem))
}

fn key(object: &Value) -> (String, String) {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        object["metadata"]["name"].as_str().unwrap_or("").to_owned(),
    )
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn stable_hash(text: &str) -> String {
    // FNV-1a, printed in Kubernetes' safe alphabet: stable for the life of the fake.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| alphabet[((h >> (i * 6)) % alphabet.len() as u64) as usize] as char)
        .collect()
}

/// Run the controllers until the process ends.
pub async fn run(cluster: Arc<Cluster>) {
    let mut interval = tokio::time::interval(Duration::from_millis(50));
    loop {
        interval.tick().await;
        tick(&cluster);
    }
}

/// One pass of every controller, when anything changed or a pod is due to start: the
/// controllers react only to changes, so an idle cluster costs nothing.
pub fn tick(cluster: &Cluster) {
    let rv = cluster.store().resource_version();
    {
        let mut kubelet = cluster.kubelet.lock().unwrap_or_else(|e| e.into_inner());
        let due = kubelet.next_due.is_some_and(|t| Instant::now() >= t);
        if rv == kubelet.last_rv && !due {
            return;
        }
        kubelet.next_due = None;
    }
    garbage_collect(cluster);
    namespaces(cluster);
    deployments(cluster);
    jobs(cluster);
    schedule(cluster);
    kubelet(cluster);
    // The version seen before this pass: if the pass itself wrote, the next one runs too.
    cluster
        .kubelet
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last_rv = rv;
}

fn types(cluster: &Cluster, group: &str, plural: &str) -> ResourceType {
    cluster
        .store()
        .find_type(group, plural)
        .cloned()
        .expect("built-in type")
}

fn garbage_collect(cluster: &Cluster) {
    let mut store = cluster.store();
    let objects: Vec<(ResourceType, Value)> =
        store.all().map(|(t, v)| (t.clone(), v.clone())).collect();
    let uids: HashMap<String, &Value> = objects
        .iter()
        .filter_map(|(_, v)| v["metadata"]["uid"].as_str().map(|u| (u.to_owned(), v)))
        .collect();
    let mut doomed = Vec::new();
    let mut unblocked = Vec::new();
    for (t, v) in &objects {
        if let Some(refs) = v["metadata"]["ownerReferences"].as_array()
            && !refs.is_empty()
        {
            let owners: Vec<Option<&&Value>> = refs
                .iter()
                .map(|r| uids.get(r["uid"].as_str().unwrap_or("")))
                .collect();
            let all_gone = owners.iter().all(Option::is_none);
            let foreground = owners.iter().flatten().any(|o| {
                !o["metadata"]["deletionTimestamp"].is_null()
                    && o["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
            });
            if (all_gone || foreground) && v["metadata"]["deletionTimestamp"].is_null() {
                doomed.push((t.clone(), key(v)));
            }
        }
        let waiting = !v["metadata"]["deletionTimestamp"].is_null()
            && v["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"));
        if waiting {
            let uid = v["metadata"]["uid"].as_str().unwrap_or("");
            if !objects.iter().any(|(_, d)| owned_by(d, uid)) {
                unblocked.push((t.clone(), v.clone()));
            }
        }
    }
    for (t, (ns, name)) in doomed {
        let _ = store.delete(&t, &ns, &name, None);
    }
    for (t, v) in unblocked {
        let finalizers: Vec<Value> = v["metadata"]["finalizers"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter(|x| *x != "foregroundDeletion")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let (ns, name) = key(&v);
        let version = t.versions[0].clone();
        let _ = store.patch(
            &t,
            &version,
            &ns,
            &name,
            PatchKind::Merge,
            json!({"metadata": {"finalizers": finalizers}}),
            false,
            None,
        );
    }
}

fn namespaces(cluster: &Cluster) {
    let ns_type = types(cluster, "", "namespaces");
    let mut store = cluster.store();
    let terminating: Vec<String> = store
        .list(
            &ns_type,
            None,
            &LabelSelector::default(),
            &FieldSelector::default(),
        )
        .into_iter()
        .filter(|n| !n["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for ns in terminating {
        let inside: Vec<(ResourceType, String, bool)> = store
            .all()
            .filter(|(t, v)| t.namespaced && v["metadata"]["namespace"] == ns.as_str())
            .map(|(t, v)| {
                (
                    t.clone(),
                    key(v).1,
                    !v["metadata"]["deletionTimestamp"].is_null(),
                )
            })
            .collect();
        if inside.is_empty() {
            store.remove(&ns_type, "", &ns);
            continue;
        }
        for (t, name, marked) in inside {
            if !marked {
                let _ = store.delete(&t, &ns, &name, None);
            }
        }
    }
}

fn deployments(cluster: &Cluster) {
    let deploy_type = types(cluster, "apps", "deployments");
    let pod_type = types(cluster, "", "pods");
    let all = LabelSelector::default();
    let any = FieldSelector::default();
    let list = cluster.store().list(&deploy_type, None, &all, &any);
    for deployment in list {
        if !deployment["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let (ns, name) = key(&deployment);
        let uid = deployment["metadata"]["uid"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let template = &deployment["spec"]["template"];
        let hash = stable_hash(&template.to_string());
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let recreate = deployment["spec"]["strategy"]["type"] == "Recreate";
        let mut store = cluster.store();
        let pods: Vec<Value> = store
            .list(&pod_type, Some(&ns), &all, &any)
            .into_iter()
            .filter(|p| owned_by(p, &uid))
            .collect();
        let live = |p: &&Value| {
            p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] != "Failed"
        };
        let current: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
            .filter(live)
            .collect();
        let old: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["pod-template-hash"] != hash.as_str())
            .collect();
        // Failed pods are replaced like a ReplicaSet would.
        for p in pods.iter().filter(|p| {
            p["status"]["phase"] == "Failed" && p["metadata"]["deletionTimestamp"].is_null()
        }) {
            let _ = store.delete(&pod_type, &ns, &key(p).1, Some(0));
        }
        // Recreate: old pods go first. RollingUpdate: they go once the new ones run, so that
        // old and new overlap as they do in a real rollout (the surge here is all replicas
        // at once, where the API server's default is 25%).
        let new_running = current
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        if recreate || new_running >= replicas {
            for p in &old {
                if p["metadata"]["deletionTimestamp"].is_null() {
                    let _ = store.delete(&pod_type, &ns, &key(p).1, None);
                }
            }
        }
        // Recreate: no new pod while an old one still exists.
        let may_create = !recreate || old.is_empty();
        if may_create && current.len() < replicas {
            for _ in current.len()..replicas {
                let mut pod = json!({
                    "metadata": {
                        "generateName": format!("{name}-{hash}-"),
                        "labels": template["metadata"]["labels"].clone(),
                        "annotations": template["metadata"]["annotations"].clone(),
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                    },
                    "spec": template["spec"].clone(),
                });
                pod["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                if pod["metadata"]["annotations"].is_null() {
                    pod["metadata"]
                        .as_object_mut()
                        .map(|m| m.remove("annotations"));
                }
                let account = pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned();
                let sa_type = store
                    .find_type("", "serviceaccounts")
                    .cloned()
                    .expect("built in");
                if store.get(&sa_type, &ns, &account).is_ok() {
                    let _ = store.create(&pod_type, "v1", &ns, pod);
                }
            }
        } else if current.len() > replicas {
            for p in current.iter().skip(replicas) {
                let _ = store.delete(&pod_type, &ns, &key(p).1, None);
            }
        }
        let ready = current
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        let status = json!({"status": {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": current.len() + old.len(),
            "updatedReplicas": current.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": replicas.saturating_sub(ready),
            "conditions": [{"type": "Available", "status": if ready >= replicas { "True" } else { "False" }, "reason": "MinimumReplicasAvailable"}],
        }});
        let _ = store.replace(&deploy_type, "v1", &ns, &name, status, true);
    }
}

/// The Job controller: pods from the template until `completions` succeed, at most
/// `parallelism` at a time, and no more once `backoffLimit` pods have failed.
fn jobs(cluster: &Cluster) {
    let job_type = types(cluster, "batch", "jobs");
    let pod_type = types(cluster, "", "pods");
    let all = LabelSelector::default();
    let any = FieldSelector::default();
    let mut store = cluster.store();
    for job in store.list(&job_type, None, &all, &any) {
        if !job["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let (ns, name) = key(&job);
        let uid = job["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        let spec = &job["spec"];
        let count = |field: &str, default: i64| spec[field].as_i64().unwrap_or(default).max(0);
        let (completions, parallelism, backoff_limit) = (
            count("completions", 1),
            count("parallelism", 1),
            count("backoffLimit", 6),
        );
        let pods: Vec<Value> = store
            .list(&pod_type, Some(&ns), &all, &any)
            .into_iter()
            .filter(|p| owned_by(p, &uid))
            .collect();
        let phase = |p: &Value| {
            p["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_owned()
        };
        let live = |p: &&Value| {
            p["metadata"]["deletionTimestamp"].is_null()
                && matches!(phase(p).as_str(), "Pending" | "Running")
        };
        let active = pods.iter().filter(live).count() as i64;
        let ready = pods
            .iter()
            .filter(live)
            .filter(|p| phase(p) == "Running")
            .count() as i64;
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let finished = job["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
        let mut conditions = job["status"]["conditions"].clone();
        let mut completion_time = job["status"]["completionTime"].clone();
        if !finished && succeeded >= completions {
            let at = now();
            conditions = json!([{"type": "Complete", "status": "True", "lastProbeTime": at, "lastTransitionTime": at}]);
            completion_time = json!(at);
        } else if !finished && failed > backoff_limit {
            let at = now();
            conditions = json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit", "lastProbeTime": at, "lastTransitionTime": at}]);
            for p in pods.iter().filter(live) {
                let _ = store.delete(&pod_type, &ns, &key(p).1, None);
            }
        } else if !finished && spec["suspend"] != true {
            let wanted = parallelism.min(completions - succeeded) - active;
            for _ in 0..wanted.max(0) {
                let template = &spec["template"];
                let mut pod = json!({
                    "metadata": {
                        "generateName": format!("{name}-"),
                        "labels": template["metadata"]["labels"].clone(),
                        "annotations": template["metadata"]["annotations"].clone(),
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                    },
                    "spec": template["spec"].clone(),
                });
                if pod["metadata"]["annotations"].is_null() {
                    pod["metadata"]
                        .as_object_mut()
                        .map(|m| m.remove("annotations"));
                }
                let _ = store.create(&pod_type, "v1", &ns, pod);
            }
        }
        let start_time = match &job["status"]["startTime"] {
            Value::Null => json!(now()),
            at => at.clone(),
        };
        let mut status = json!({"startTime": start_time, "active": active, "ready": ready,
            "succeeded": succeeded, "failed": failed, "terminating": 0,
            "uncountedTerminatedPods": {}});
        if !conditions.is_null() {
            status["conditions"] = conditions;
        }
        if !completion_time.is_null() {
            status["completionTime"] = completion_time;
        }
        let changed = [
            "active",
            "ready",
            "succeeded",
            "failed",
            "conditions",
            "completionTime",
        ]
        .iter()
        .any(|f| job["status"][*f] != status[*f]);
        if changed {
            let _ = store.replace(&job_type, "v1", &ns, &name, json!({"status": status}), true);
        }
    }
}

fn schedule(cluster: &Cluster) {
    let pod_type = types(cluster, "", "pods");
    let node_type = types(cluster, "", "nodes");
    let all = LabelSelector::default();
    let any = FieldSelector::default();
    let mut store = cluster.store();
    let nodes: Vec<Value> = store
        .list(&node_type, None, &all, &any)
        .into_iter()
        .filter(|n| {
            n["metadata"]["deletionTimestamp"].is_null() && n["spec"]["unschedulable"] != true
        })
        .collect();
    let pods = store.list(&pod_type, None, &all, &any);
    let mut used: HashMap<String, (i64, i64)> = HashMap::new();
    for p in &pods {
        if let Some(node) = p["spec"]["nodeName"].as_str()
            && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        {
            let (c, m) = pod_requests(&p["spec"]);
            let entry = used.entry(node.to_owned()).or_default();
            entry.0 += c;
            entry.1 += m;
        }
    }
    let mut kubelet = cluster.kubelet.lock().unwrap_or_else(|e| e.into_inner());
    for pod in pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].is_null() && p["metadata"]["deletionTimestamp"].is_null())
    {
        let (cpu, mem) = pod_requests(&pod["spec"]);
        let selector = pod["spec"]["nodeSelector"].as_object();
        let mut short_cpu = 0;
        let mut short_mem = 0;
        let mut mismatched = 0;
        let fit = nodes.iter().find(|n| {
            let node = n["metadata"]["name"].as_str().unwrap_or("");
            if let Some(sel) = selector
                && !sel.iter().all(|(k, v)| &n["metadata"]["labels"][k] == v)
            {
                mismatched += 1;
                return false;
            }
            let (uc, um) = used.get(node).copied().unwrap_or_default();
            let cpu_ok = uc + cpu <= cpu_millis(&n["status"]["allocatable"]["cpu"]);
            let mem_ok = um + mem <= memory_bytes(&n["status"]["allocatable"]["memory"]);
            short_cpu += i32::from(!cpu_ok);
            short_mem += i32::from(!mem_ok);
            cpu_ok && mem_ok
        });
        let (ns, name) = key(pod);
        match fit {
            Some(node) => {
                let node_name = node["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let entry = used.entry(node_name.clone()).or_default();
                entry.0 += cpu;
                entry.1 += mem;
                let _ = store.patch(
                    &pod_type,
                    "v1",
                    &ns,
                    &name,
                    PatchKind::Merge,
                    json!({"spec": {"nodeName": node_name}}),
                    false,
                    None,
                );
                let mut status = pod["status"].clone();
                status["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]);
                let _ = store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
                kubelet.scheduled_at.insert((ns, name), Instant::now());
            }
            None => {
                let mut reasons = Vec::new();
                if short_cpu > 0 {
                    reasons.push(format!("{short_cpu} Insufficient cpu"));
                }
                if short_mem > 0 {
                    reasons.push(format!("{short_mem} Insufficient memory"));
                }
                if mismatched > 0 {
                    reasons.push(format!(
                        "{mismatched} node(s) didn't match Pod's node affinity/selector"
                    ));
                }
                let message = format!(
                    "0/{} nodes are available: {}.",
                    nodes.len(),
                    reasons.join(", ")
                );
                let condition = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message});
                if pod["status"]["conditions"][0]["message"] != condition["message"] {
                    let mut status = pod["status"].clone();
                    status["conditions"] = json!([condition]);
                    let _ =
                        store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
                }
            }
        }
    }
}

/// Resolve a container's environment as the kubelet would, or say what is missing.
fn resolve_env(
    store: &crate::store::Store,
    ns: &str,
    container: &Value,
) -> Result<HashMap<String, String>, String> {
    let secret_type = store.find_type("", "secrets").cloned().expect("built in");
    let cm_type = store
        .find_type("", "configmaps")
        .cloned()
        .expect("built in");
    let mut env = HashMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or("").to_owned();
        if let Some(value) = var["value"].as_str() {
            env.insert(name, value.to_owned());
            continue;
        }
        let from = &var["valueFrom"];
        if let Some(sel) = from["secretKeyRef"].as_object() {
            let secret_name = sel.get("name").and_then(Value::as_str).unwrap_or("");
            let k = sel.get("key").and_then(Value::as_str).unwrap_or("");
            let optional = sel
                .get("optional")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match store.get(&secret_type, ns, secret_name) {
                Ok(secret) => match secret["data"][k].as_str() {
                    Some(encoded) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(encoded)
                            .unwrap_or_default();
                        env.insert(name, String::from_utf8_lossy(&bytes).into_owned());
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "couldn't find key {k} in Secret {ns}/{secret_name}"
                        ));
                    }
                },
                Err(_) if optional => {}
                Err(_) => return Err(format!("secret \"{secret_name}\" not found")),
            }
        } else if let Some(sel) = from["configMapKeyRef"].as_object() {
            let cm_name = sel.get("name").and_then(Value::as_str).unwrap_or("");
            let k = sel.get("key").and_then(Value::as_str).unwrap_or("");
            match store
                .get(&cm_type, ns, cm_name)
                .ok()
                .and_then(|cm| cm["data"][k].as_str().map(str::to_owned))
            {
                Some(v) => {
                    env.insert(name, v);
                }
                None => return Err(format!("configmap \"{cm_name}\" or its key {k} not found")),
            }
        }
    }
    Ok(env)
}

fn container_statuses(containers: &Value, started: &str, running: bool) -> Vec<Value> {
    containers
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let state = if running {
                json!({"running": {"startedAt": started}})
            } else {
                json!({"terminated": {"exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": now()}})
            };
            json!({
                "name": c["name"], "image": c["image"], "imageID": "", "containerID": format!("containerd://{}", uuid::Uuid::new_v4().simple()),
                "ready": running, "started": running, "restartCount": 0, "state": state,
            })
        })
        .collect()
}

fn kubelet(cluster: &Cluster) {
    let pod_type = types(cluster, "", "pods");
    let node_type = types(cluster, "", "nodes");
    let all = LabelSelector::default();
    let any = FieldSelector::default();
    let mut store = cluster.store();
    let node_names: HashSet<String> = store
        .list(&node_type, None, &all, &any)
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let pods = store.list(&pod_type, None, &all, &any);
    let mut kubelet = cluster.kubelet.lock().unwrap_or_else(|e| e.into_inner());
    let mut present = HashSet::new();
    for pod in &pods {
        let (ns, name) = key(pod);
        present.insert((ns.clone(), name.clone()));
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        // Terminating: containers stop at once (the agent exits on SIGTERM), then it goes.
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            kubelet.agents.remove(&(ns.clone(), name.clone()));
            kubelet.scheduled_at.remove(&(ns.clone(), name.clone()));
            let finalized = pod["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
            if finalized {
                store.remove(&pod_type, &ns, &name);
            }
            continue;
        }
        // The node is gone: the pod fails.
        if let Some(node) = pod["spec"]["nodeName"].as_str()
            && !node_names.contains(node)
            && phase != "Failed"
        {
            kubelet.agents.remove(&(ns.clone(), name.clone()));
            let mut status = pod["status"].clone();
            status["phase"] = json!("Failed");
            status["reason"] = json!("NodeLost");
            status["message"] = json!(format!(
                "Node {node} which was running pod {name} is unresponsive"
            ));
            status["conditions"] =
                json!([{"type": "Ready", "status": "False", "reason": "NodeLost"}]);
            let started = pod["status"]["startTime"].as_str().unwrap_or("").to_owned();
            status["containerStatuses"] = json!(container_statuses(
                &pod["spec"]["containers"],
                &started,
                false
            ));
            let _ = store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
            continue;
        }
        if phase == "Pending" && !pod["spec"]["nodeName"].is_null() {
            let scheduled = kubelet
                .scheduled_at
                .get(&(ns.clone(), name.clone()))
                .copied();
            let due = scheduled.is_none_or(|t| t.elapsed() >= cluster.config.pod_start_latency);
            if !due {
                let at = scheduled.map(|t| t + cluster.config.pod_start_latency);
                kubelet.next_due = match (kubelet.next_due, at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                continue;
            }
            // Resolve every container's environment first, as the kubelet does.
            let mut envs = Vec::new();
            let mut failure = None;
            for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
                match resolve_env(&store, &ns, c) {
                    Ok(env) => envs.push(env),
                    Err(message) => failure = Some((c["name"].clone(), message)),
                }
            }
            if let Some((container, message)) = failure {
                // Retry soon: the Secret may appear without this pod changing.
                let soon = Instant::now() + Duration::from_millis(200);
                kubelet.next_due = Some(kubelet.next_due.map_or(soon, |t| t.min(soon)));
                if pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                    != message.as_str()
                {
                    let mut status = pod["status"].clone();
                    status["containerStatuses"] = json!([{"name": container, "ready": false, "restartCount": 0, "image": "", "imageID": "",
                        "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}}}]);
                    let _ =
                        store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
                }
                continue;
            }
            kubelet.next_ip += 1;
            let ip = format!(
                "10.244.{}.{}",
                kubelet.next_ip / 250,
                kubelet.next_ip % 250 + 2
            );
            let started = now();
            let mut status = pod["status"].clone();
            status["phase"] = json!("Running");
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
            status["hostIP"] = json!("192.168.0.11");
            status["startTime"] = json!(started);
            status["conditions"] = json!([
                {"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True", "lastTransitionTime": started},
            ]);
            status["containerStatuses"] = json!(container_statuses(
                &pod["spec"]["containers"],
                &started,
                true
            ));
            let sidecars: Vec<Value> = pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["restartPolicy"] == "Always")
                .cloned()
                .collect();
            if !sidecars.is_empty() {
                status["initContainerStatuses"] =
                    json!(container_statuses(&json!(sidecars), &started, true));
            }
            // No containers run here: a pod meant to run to completion (restartPolicy Never)
            // and carrying no runner finishes at once.
            let runs_runner = envs.iter().any(|e| e.contains_key("RUNNER_UUID"));
            let runs_to_completion = pod["spec"]["restartPolicy"] != "Always";
            if runs_to_completion && !runs_runner {
                status["phase"] = json!("Succeeded");
                status["conditions"][3]["status"] = json!("False");
                status["containerStatuses"] = json!(pod["spec"]["containers"].as_array().into_iter().flatten().map(|c| json!({
                    "name": c["name"], "image": c["image"], "imageID": "", "ready": false, "started": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}},
                })).collect::<Vec<_>>());
            }
            let _ = store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
            if let Some(url) = &cluster.config.bitbucket_url {
                for env in envs.iter().filter(|e| e.contains_key("RUNNER_UUID")) {
                    if let Ok(config) = AgentConfig::from_env(url, env) {
                        let uuid = config.runner_uuid.clone();
                        kubelet.agents.insert(
                            (ns.clone(), name.clone()),
                            (uuid, RunnerAgent::spawn(config)),
                        );
                    }
                }
            }
        }
        if phase == "Failed" {
            kubelet.agents.remove(&(ns.clone(), name.clone()));
        }
    }
    kubelet.agents.retain(|k, _| present.contains(k));
    kubelet.scheduled_at.retain(|k, _| present.contains(k));
}

/// Pods of a node, for removing the node.
pub fn remove_node(cluster: &Cluster, name: &str) -> bool {
    let node_type = types(cluster, "", "nodes");
    cluster.store().remove(&node_type, "", name).is_some()
}

/// Kill a pod at once, as an eviction or a crashed node would.
pub fn kill_pod(cluster: &Cluster, namespace: &str, name: &str) -> bool {
    let pod_type = types(cluster, "", "pods");
    cluster.stop_agent(namespace, name);
    cluster.store().remove(&pod_type, namespace, name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis(&json!("100m")), 100);
        assert_eq!(cpu_millis(&json!("2")), 2000);
        assert_eq!(cpu_millis(&json!(1.5)), 1500);
        assert_eq!(memory_bytes(&json!("512Mi")), 512 * 1024 * 1024);
        assert_eq!(memory_bytes(&json!("5Gi")), 5 * 1024 * 1024 * 1024);
        assert_eq!(memory_bytes(&json!("1G")), 1_000_000_000);
    }

    #[test]
    fn sidecars_add_to_requests_and_plain_init_containers_overlap() {
        let spec = json!({
            "containers": [{"resources": {"requests": {"cpu": "100m", "memory": "512Mi"}}}],
            "initContainers": [
                {"restartPolicy": "Always", "resources": {"requests": {"cpu": "1", "memory": "5Gi"}}},
                {"resources": {"requests": {"cpu": "4", "memory": "1Gi"}}},
            ],
        });
        let (cpu, mem) = pod_requests(&spec);
        assert_eq!(cpu, 4000);
        assert_eq!(mem, (5 * 1024 + 512) * 1024 * 1024);
    }
}
