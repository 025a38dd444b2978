//! What a kubelet would make of one pod, as pure functions: its containers' environment
//! resolved from Secrets and ConfigMaps, the status it reports, and the output of the
//! containers this agent emulates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use serde_json::{Value, json};

/// The Secrets and ConfigMaps of a pod's namespace that its containers refer to, as read:
/// `None` where the object does not exist.
#[derive(Debug, Default)]
pub struct Referenced {
    pub secrets: BTreeMap<String, Option<Secret>>,
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
}

/// The containers a pod runs for its whole life: its containers and its native sidecars.
pub fn long_running(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let sidecars = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(sidecars)
}

/// The names of the Secrets and ConfigMaps the pod's containers read their environment from.
pub fn references(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut config_maps = Vec::new();
    for container in long_running(pod) {
        for var in container.env.as_deref().unwrap_or_default() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(s) = &from.secret_key_ref {
                secrets.push(s.name.clone());
            }
            if let Some(c) = &from.config_map_key_ref {
                config_maps.push(c.name.clone());
            }
        }
        for source in container.env_from.as_deref().unwrap_or_default() {
            if let Some(s) = &source.secret_ref {
                secrets.push(s.name.clone());
            }
            if let Some(c) = &source.config_map_ref {
                config_maps.push(c.name.clone());
            }
        }
    }
    for list in [&mut secrets, &mut config_maps] {
        list.sort();
        list.dedup();
    }
    (secrets, config_maps)
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(value) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(value.clone());
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
}

/// A container's environment as the kubelet resolves it, or the message of the
/// `CreateContainerConfigError` it reports instead.
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    found: &Referenced,
) -> Result<BTreeMap<String, String>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = BTreeMap::new();
    for source in container.env_from.as_deref().unwrap_or_default() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        if let Some(r) = &source.secret_ref {
            match found.secrets.get(&r.name).and_then(Option::as_ref) {
                Some(secret) => {
                    for key in secret.data.iter().flat_map(|d| d.keys()) {
                        if let Some(v) = secret_value(secret, key) {
                            env.insert(format!("{prefix}{key}"), v);
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &source.config_map_ref {
            match found.config_maps.get(&r.name).and_then(Option::as_ref) {
                Some(cm) => {
                    for (key, v) in cm.data.iter().flatten() {
                        env.insert(format!("{prefix}{key}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
    }
    for var in container.env.as_deref().unwrap_or_default() {
        if let Some(value) = &var.value {
            env.insert(var.name.clone(), value.clone());
            continue;
        }
        let Some(from) = &var.value_from else {
            env.insert(var.name.clone(), String::new());
            continue;
        };
        if let Some(sel) = &from.secret_key_ref {
            let optional = sel.optional == Some(true);
            match found.secrets.get(&sel.name).and_then(Option::as_ref) {
                Some(secret) => match secret_value(secret, &sel.key) {
                    Some(v) => {
                        env.insert(var.name.clone(), v);
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            sel.key, sel.name
                        ));
                    }
                },
                None if optional => {}
                None => return Err(format!("secret \"{}\" not found", sel.name)),
            }
        } else if let Some(sel) = &from.config_map_key_ref {
            let optional = sel.optional == Some(true);
            let value = found
                .config_maps
                .get(&sel.name)
                .and_then(Option::as_ref)
                .and_then(|cm| cm.data.as_ref()?.get(&sel.key).cloned());
            match value {
                Some(v) => {
                    env.insert(var.name.clone(), v);
                }
                None if optional => {}
                None => {
                    return Err(format!(
                        "couldn't find key {} in ConfigMap {namespace}/{}",
                        sel.key, sel.name
                    ));
                }
            }
        } else if let Some(field) = &from.field_ref {
            let value = match field.field_path.as_str() {
                "metadata.name" => pod.metadata.name.clone(),
                "metadata.namespace" => Some(namespace.to_owned()),
                "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                "spec.serviceAccountName" => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone()),
                _ => None,
            };
            env.insert(var.name.clone(), value.unwrap_or_default());
        }
    }
    Ok(env)
}

/// Whether the pod's containers are meant to end (a Job's, a probe's) rather than to run.
pub fn runs_to_completion(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .is_some_and(|p| p != "Always")
}

/// What an emulated container prints: the pod network's MTU for a container that reads its
/// `eth0` MTU (`bbrunner doctor`'s probe), nothing for any other.
pub fn emulated_output(container: &Container, pod_mtu: u16) -> String {
    let words = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten());
    let reads_mtu = words
        .into_iter()
        .any(|w| w.contains("/sys/class/net/eth0/mtu"));
    if reads_mtu {
        format!("{pod_mtu}\n")
    } else {
        String::new()
    }
}

fn container_status(container: &Container, state: Value, ready: bool, id: &str) -> Value {
    json!({
        "name": container.name,
        "image": container.image.as_deref().unwrap_or(""),
        "imageID": "",
        "containerID": format!("containerd://{id}"),
        "ready": ready,
        "started": state.get("running").is_some(),
        "restartCount": 0,
        "state": state,
    })
}

fn statuses(pod: &Pod, state: &Value, ready: bool, id_of: &dyn Fn(&str) -> String) -> Value {
    let spec = pod.spec.as_ref();
    let main: Vec<Value> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| container_status(c, state.clone(), ready, &id_of(&c.name)))
        .collect();
    let init: Vec<Value> = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            if c.restart_policy.as_deref() == Some("Always") {
                container_status(c, state.clone(), ready, &id_of(&c.name))
            } else {
                // Plain init containers ran to completion before the others started.
                let done = json!({"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": state_time(state), "finishedAt": state_time(state)}});
                container_status(c, done, false, &id_of(&c.name))
            }
        })
        .collect();
    json!({"containerStatuses": main, "initContainerStatuses": init})
}

fn state_time(state: &Value) -> Value {
    state
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|s| s.get("startedAt"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn condition(kind: &str, status: bool, at: &str) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "lastTransitionTime": at,
           "lastProbeTime": null})
}

/// Where a started pod lives on the network.
#[derive(Debug, Clone)]
pub struct Placement {
    pub pod_ip: String,
    pub host_ip: String,
}

/// The status of a pod whose containers have started; `completed` when they ran to the end at
/// once (a pod that runs to completion and carries no runner).
pub fn started_status(
    pod: &Pod,
    placement: &Placement,
    at: &str,
    completed: bool,
    id_of: &dyn Fn(&str) -> String,
) -> Value {
    let (phase, state, ready) = if completed {
        let done = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": at, "finishedAt": at}});
        ("Succeeded", done, false)
    } else {
        ("Running", json!({"running": {"startedAt": at}}), true)
    };
    let mut status = statuses(pod, &state, ready, id_of);
    let init_count = status["initContainerStatuses"]
        .as_array()
        .map_or(0, Vec::len);
    if init_count == 0 {
        status
            .as_object_mut()
            .expect("object")
            .remove("initContainerStatuses");
    }
    status["phase"] = json!(phase);
    status["podIP"] = json!(placement.pod_ip);
    status["podIPs"] = json!([{"ip": placement.pod_ip}]);
    status["hostIP"] = json!(placement.host_ip);
    status["hostIPs"] = json!([{"ip": placement.host_ip}]);
    status["startTime"] = json!(at);
    status["conditions"] = json!([
        condition("PodReadyToStartContainers", !completed, at),
        condition("Initialized", true, at),
        condition("Ready", ready, at),
        condition("ContainersReady", ready, at),
        condition("PodScheduled", true, at),
    ]);
    status
}

/// The status of a pod whose containers cannot start because their configuration cannot be
/// resolved (a missing Secret or key).
pub fn config_error_status(pod: &Pod, message: &str, at: &str) -> Value {
    let waiting = json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}});
    let mut status = statuses(pod, &waiting, false, &|_| String::new());
    for list in ["containerStatuses", "initContainerStatuses"] {
        for s in status[list].as_array_mut().into_iter().flatten() {
            s.as_object_mut().expect("object").remove("containerID");
        }
    }
    if status["initContainerStatuses"]
        .as_array()
        .is_some_and(Vec::is_empty)
    {
        status
            .as_object_mut()
            .expect("object")
            .remove("initContainerStatuses");
    }
    status["phase"] = json!("Pending");
    status["conditions"] = json!([
        condition("PodReadyToStartContainers", false, at),
        condition("Initialized", true, at),
        condition("Ready", false, at),
        condition("ContainersReady", false, at),
        condition("PodScheduled", true, at),
    ]);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).expect("a pod")
    }

    fn runner_pod() -> Pod {
        pod(json!({
            "metadata": {"name": "p", "namespace": "ci"},
            "spec": {
                "restartPolicy": "Always",
                "containers": [{"name": "runner", "image": "runner:1", "env": [
                    {"name": "RUNNER_UUID", "valueFrom": {"secretKeyRef": {"name": "reg", "key": "runner_uuid"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                    {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "PLAIN", "value": "x"},
                ]}],
                "initContainers": [
                    {"name": "docker", "image": "docker:28.5-dind", "restartPolicy": "Always"},
                    {"name": "setup", "image": "busybox"},
                ],
            },
        }))
    }

    fn found(secret: Option<(&str, &str)>, config: Option<(&str, &str)>) -> Referenced {
        let mut r = Referenced::default();
        let secret = secret.map(|(k, v)| Secret {
            data: Some([(k.to_owned(), ByteString(v.as_bytes().to_vec()))].into()),
            ..Secret::default()
        });
        r.secrets.insert("reg".into(), secret);
        r.secrets.insert("gone".into(), None);
        let config = config.map(|(k, v)| ConfigMap {
            data: Some([(k.to_owned(), v.to_owned())].into()),
            ..ConfigMap::default()
        });
        r.config_maps.insert("cfg".into(), config);
        r
    }

    #[test]
    fn references_cover_env_and_env_from_of_containers_and_sidecars_once() {
        let mut p = runner_pod();
        let spec = p.spec.as_mut().unwrap();
        spec.init_containers.as_mut().unwrap()[0].env_from = Some(vec![
            serde_json::from_value(json!({"secretRef": {"name": "reg"}})).unwrap(),
        ]);
        let (secrets, config_maps) = references(&p);
        assert_eq!(secrets, ["gone", "reg"]);
        assert_eq!(config_maps, ["cfg"]);
    }

    #[test]
    fn env_resolves_from_secrets_config_maps_fields_and_values() {
        let p = runner_pod();
        let container = &p.spec.as_ref().unwrap().containers[0];
        let env = resolve_env(
            &p,
            container,
            &found(Some(("runner_uuid", "{u}")), Some(("mode", "fast"))),
        )
        .unwrap();
        assert_eq!(env["RUNNER_UUID"], "{u}");
        assert_eq!(env["MODE"], "fast");
        assert_eq!(env["POD"], "p");
        assert_eq!(env["PLAIN"], "x");
        assert!(
            !env.contains_key("OPTIONAL"),
            "an optional missing Secret is skipped"
        );
    }

    #[test]
    fn a_missing_secret_or_key_is_the_kubelet_s_config_error() {
        let p = runner_pod();
        let container = &p.spec.as_ref().unwrap().containers[0];
        let mut missing = found(None, Some(("mode", "fast")));
        missing.secrets.insert("reg".into(), None);
        assert_eq!(
            resolve_env(&p, container, &missing).unwrap_err(),
            "secret \"reg\" not found"
        );
        let wrong_key = found(Some(("other", "v")), Some(("mode", "fast")));
        assert_eq!(
            resolve_env(&p, container, &wrong_key).unwrap_err(),
            "couldn't find key runner_uuid in Secret ci/reg"
        );
        let no_config = found(Some(("runner_uuid", "{u}")), None);
        assert!(
            resolve_env(&p, container, &no_config)
                .unwrap_err()
                .contains("ConfigMap ci/cfg")
        );
    }

    #[test]
    fn a_running_pod_reports_every_container_and_sidecar_ready_and_plain_init_done() {
        let p = runner_pod();
        let placement = Placement {
            pod_ip: "10.244.1.2".into(),
            host_ip: "127.0.0.1".into(),
        };
        let s = started_status(&p, &placement, "2026-01-01T00:00:00Z", false, &|n| {
            format!("id-{n}")
        });
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        assert_eq!(
            s["containerStatuses"][0]["containerID"],
            "containerd://id-runner"
        );
        assert_eq!(s["initContainerStatuses"][0]["name"], "docker");
        assert_eq!(s["initContainerStatuses"][0]["ready"], true);
        assert_eq!(
            s["initContainerStatuses"][1]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(crate::test_support::condition_status(&s, "Ready"), "True");
        assert_eq!(s["podIPs"][0]["ip"], "10.244.1.2");
    }

    #[test]
    fn a_pod_that_runs_to_completion_succeeds_and_is_not_ready() {
        let p = pod(
            json!({"metadata": {"name": "probe"}, "spec": {"restartPolicy": "Never",
            "containers": [{"name": "mtu", "image": "busybox", "command": ["cat", "/sys/class/net/eth0/mtu"]}]}}),
        );
        assert!(runs_to_completion(&p));
        let placement = Placement {
            pod_ip: "10.244.1.3".into(),
            host_ip: "127.0.0.1".into(),
        };
        let s = started_status(&p, &placement, "2026-01-01T00:00:00Z", true, &|_| {
            "x".into()
        });
        assert_eq!(s["phase"], "Succeeded");
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        assert!(s.get("initContainerStatuses").is_none());
        assert_eq!(
            emulated_output(&p.spec.as_ref().unwrap().containers[0], 1450),
            "1450\n"
        );
    }

    #[test]
    fn a_config_error_waits_with_the_message() {
        let p = runner_pod();
        let s = config_error_status(&p, "secret \"reg\" not found", "2026-01-01T00:00:00Z");
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CreateContainerConfigError"
        );
        assert!(s["containerStatuses"][0].get("containerID").is_none());
    }
}
