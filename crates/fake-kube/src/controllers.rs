//! What runs beside a real API server, reduced to what our tests need: a scheduler that
//! fits pods onto nodes by requests, a Deployment controller (no ReplicaSets), a Job
//! controller, the garbage collector, the namespace controller, and the pod garbage collector's
//! care of pods whose node is gone. Nodes and their pods are run by the node agent
//! (`node-agent`), as against a real API server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{Cluster, owned_by};
use crate::selector::{FieldSelector, LabelSelector};
use crate::types::ResourceType;

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

/// One pass of every controller, when anything changed: the controllers react only to
/// changes, so an idle cluster costs nothing.
pub fn tick(cluster: &Cluster) {
    let rv = cluster.store().resource_version();
    if !cluster.controllers_behind(rv) {
        return;
    }
    garbage_collect(cluster);
    namespaces(cluster);
    deployments(cluster);
    jobs(cluster);
    crate::volumes::run(cluster.store());
    schedule(cluster);
    pods_of_missing_nodes(cluster);
    // The version seen before this pass: if the pass itself wrote, the next one runs too.
    cluster.controllers_caught_up(rv);
}

fn types(cluster: &Cluster, group: &str, plural: &str) -> ResourceType {
    cluster
        .store()
        .find_type(group, plural)
        .expect("built-in type")
}

fn garbage_collect(cluster: &Cluster) {
    let store = cluster.store();
    let objects = store.all();
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
        let _ = store.merge(
            &t,
            &ns,
            &name,
            json!({"metadata": {"finalizers": finalizers}}),
        );
    }
}

fn namespaces(cluster: &Cluster) {
    let ns_type = types(cluster, "", "namespaces");
    let store = cluster.store();
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
    if terminating.is_empty() {
        return;
    }
    let objects = store.all();
    for ns in terminating {
        let inside: Vec<(&ResourceType, String, bool)> = objects
            .iter()
            .filter(|(t, v)| t.namespaced && v["metadata"]["namespace"] == ns.as_str())
            .map(|(t, v)| (t, key(v).1, !v["metadata"]["deletionTimestamp"].is_null()))
            .collect();
        if inside.is_empty() {
            store.remove(&ns_type, "", &ns);
            continue;
        }
        for (t, name, marked) in inside {
            if !marked {
                let _ = store.delete(t, &ns, &name, None);
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
        let store = cluster.store();
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
                let sa_type = store.find_type("", "serviceaccounts").expect("built in");
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
    let store = cluster.store();
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

/// The pod's status once the scheduler says `message` of it, if that changes it. The
/// condition's transition stays when the pod first became unschedulable.
fn unschedulable_status(pod: &Value, message: &str) -> Option<Value> {
    let previous = &pod["status"]["conditions"][0];
    if previous["message"] == message {
        return None;
    }
    let since = if previous["type"] == "PodScheduled" && previous["status"] == "False" {
        previous["lastTransitionTime"].clone()
    } else {
        json!(now())
    };
    let mut status = pod["status"].clone();
    status["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": since}]);
    Some(status)
}

fn schedule(cluster: &Cluster) {
    let pod_type = types(cluster, "", "pods");
    let node_type = types(cluster, "", "nodes");
    let all = LabelSelector::default();
    let any = FieldSelector::default();
    let store = cluster.store();
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
    for pod in pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].is_null() && p["metadata"]["deletionTimestamp"].is_null())
    {
        let (ns, name) = key(pod);
        if let Some(reason) =
            crate::volumes::unschedulable_for_claims(store, pod, &pods, nodes.len())
        {
            let message = format!("0/{} nodes are available: {reason}.", nodes.len());
            if let Some(status) = unschedulable_status(pod, &message) {
                let _ = store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
            }
            continue;
        }
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
        match fit {
            Some(node) => {
                let node_name = node["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let entry = used.entry(node_name.clone()).or_default();
                entry.0 += cpu;
                entry.1 += mem;
                let _ = store.merge(
                    &pod_type,
                    &ns,
                    &name,
                    json!({"spec": {"nodeName": node_name}}),
                );
                let mut status = pod["status"].clone();
                status["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]);
                let _ = store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
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
                if let Some(status) = unschedulable_status(pod, &message) {
                    let _ =
                        store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
                }
            }
        }
    }
}

/// Pods bound to a node that no longer exists, as the pod garbage collector treats them: a
/// running one fails (`NodeLost`), a terminating one is removed (no kubelet will finish it).
fn pods_of_missing_nodes(cluster: &Cluster) {
    let pod_type = types(cluster, "", "pods");
    let node_type = types(cluster, "", "nodes");
    let all = LabelSelector::default();
    let any = FieldSelector::default();
    let store = cluster.store();
    let nodes: HashSet<String> = store
        .list(&node_type, None, &all, &any)
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for pod in store.list(&pod_type, None, &all, &any) {
        let Some(node) = pod["spec"]["nodeName"].as_str() else {
            continue;
        };
        if nodes.contains(node) {
            continue;
        }
        let (ns, name) = key(&pod);
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            store.remove(&pod_type, &ns, &name);
            continue;
        }
        if matches!(
            pod["status"]["phase"].as_str(),
            Some("Failed" | "Succeeded")
        ) {
            continue;
        }
        let mut status = pod["status"].clone();
        status["phase"] = json!("Failed");
        status["reason"] = json!("NodeLost");
        status["message"] = json!(format!(
            "Node {node} which was running pod {name} is unresponsive"
        ));
        status["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "NodeLost"}]);
        for list in ["containerStatuses", "initContainerStatuses"] {
            for c in status[list].as_array_mut().into_iter().flatten() {
                let started = c["state"]["running"]["startedAt"].clone();
                c["ready"] = json!(false);
                c["started"] = json!(false);
                c["state"] = json!({"terminated": {"exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": now()}});
            }
        }
        let _ = store.replace(&pod_type, "v1", &ns, &name, json!({"status": status}), true);
    }
}

/// Remove a node, as if its machine went away: its containers die, the node object goes, and
/// its pods fail.
pub fn remove_node(cluster: &Cluster, name: &str) -> bool {
    cluster.agent().stop_node(name);
    let node_type = types(cluster, "", "nodes");
    cluster.store().remove(&node_type, "", name).is_some()
}

/// Kill a pod at once, as an eviction or a crashed node would.
pub fn kill_pod(cluster: &Cluster, namespace: &str, name: &str) -> bool {
    let pod_type = types(cluster, "", "pods");
    cluster.agent().kill_pod(namespace, name);
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
