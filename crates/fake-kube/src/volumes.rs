//! PersistentVolumeClaims as a small cluster's volume controllers treat them: each new claim
//! bound at once to a volume of its own (a default StorageClass with immediate binding; a
//! claim naming another class only once that StorageClass exists, as no provisioner serves
//! a class that does not), kept by its protection finalizer while a pod uses it, its volume
//! deleted with it; and what the scheduler asks of a pod's claims (they exist, are bound, are
//! not being deleted, and a ReadWriteOncePod claim has no other pod).

use serde_json::{Value, json};

use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Store;
use crate::types::ResourceType;

/// What the API server's StorageObjectInUseProtection admission puts on every new claim.
pub const PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";

fn claims_of(pod: &Value) -> impl Iterator<Item = &str> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
}

/// A pod whose containers may still use its volumes.
fn holds_volumes(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

fn all(store: &Store, rt: &ResourceType) -> Vec<Value> {
    store.list(
        rt,
        None,
        &LabelSelector::default(),
        &FieldSelector::default(),
    )
}

/// Bind new claims, and let go of deleted ones no pod uses any more.
pub fn run(store: &Store) {
    let find = |store: &Store, plural: &str| store.find_type("", plural).expect("built in");
    let (claim_type, volume_type, pod_type) = (
        find(store, "persistentvolumeclaims"),
        find(store, "persistentvolumes"),
        find(store, "pods"),
    );
    let classes: Vec<String> = store
        .find_type("storage.k8s.io", "storageclasses")
        .map(|rt| all(store, &rt))
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let pods = all(store, &pod_type);
    for claim in all(store, &claim_type) {
        let namespace = claim["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = claim["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let volume = format!("pvc-{}", claim["metadata"]["uid"].as_str().unwrap_or(""));
        if !claim["metadata"]["deletionTimestamp"].is_null() {
            let used = pods.iter().any(|p| {
                p["metadata"]["namespace"] == claim["metadata"]["namespace"]
                    && holds_volumes(p)
                    && claims_of(p).any(|c| c == name)
            });
            let protected = claim["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == PROTECTION_FINALIZER));
            if protected && !used {
                let rest: Vec<Value> = claim["metadata"]["finalizers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| *f != PROTECTION_FINALIZER)
                    .cloned()
                    .collect();
                let _ = store.merge(
                    &claim_type,
                    &namespace,
                    &name,
                    json!({"metadata": {"finalizers": rest}}),
                );
                // The default class reclaims by deleting the volume.
                let _ = store.delete(&volume_type, "", &volume, None);
            }
            continue;
        }
        if claim["spec"]["volumeName"].is_string() {
            continue;
        }
        if let Some(class) = claim["spec"]["storageClassName"].as_str()
            && !class.is_empty()
            && !classes.iter().any(|c| c == class)
        {
            // Pending until its class exists.
            if claim["status"]["phase"] != "Pending" {
                let _ = store.replace(
                    &claim_type,
                    "v1",
                    &namespace,
                    &name,
                    json!({"status": {"phase": "Pending"}}),
                    true,
                );
            }
            continue;
        }
        let capacity = claim["spec"]["resources"]["requests"].clone();
        let modes = claim["spec"]["accessModes"].clone();
        let _ = store.create(
            &volume_type,
            "v1",
            "",
            json!({
                "metadata": {"name": volume},
                "spec": {
                    "capacity": capacity,
                    "accessModes": modes,
                    "persistentVolumeReclaimPolicy": "Delete",
                    "hostPath": {"path": format!("/var/lib/fake-kube/{volume}")},
                    "claimRef": {"kind": "PersistentVolumeClaim", "namespace": namespace,
                                 "name": name, "uid": claim["metadata"]["uid"]},
                },
            }),
        );
        let _ = store.merge(
            &claim_type,
            &namespace,
            &name,
            json!({"spec": {"volumeName": volume}}),
        );
        let _ = store.replace(
            &claim_type,
            "v1",
            &namespace,
            &name,
            json!({"status": {"phase": "Bound", "accessModes": modes, "capacity": capacity}}),
            true,
        );
    }
}

/// Why the scheduler cannot place `pod` on any of `nodes` nodes because of its claims, in its
/// words; `None` when they allow it. `pods` are every pod of the cluster.
pub fn unschedulable_for_claims(
    store: &Store,
    pod: &Value,
    pods: &[Value],
    nodes: usize,
) -> Option<String> {
    let claim_type = store.find_type("", "persistentvolumeclaims")?;
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
    for name in claims_of(pod) {
        let Ok(claim) = store.get(&claim_type, namespace, name) else {
            return Some(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if !claim["metadata"]["deletionTimestamp"].is_null() {
            return Some(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        if !claim["spec"]["volumeName"].is_string() {
            return Some("pod has unbound immediate PersistentVolumeClaims".to_owned());
        }
        let exclusive = claim["spec"]["accessModes"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m == "ReadWriteOncePod"));
        let taken = pods.iter().any(|other| {
            other["metadata"]["namespace"] == pod["metadata"]["namespace"]
                && other["metadata"]["name"] != pod["metadata"]["name"]
                && other["spec"]["nodeName"].is_string()
                && holds_volumes(other)
                && claims_of(other).any(|c| c == name)
        });
        if exclusive && taken {
            return Some(format!(
                "{nodes} node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
            ));
        }
    }
    None
}
