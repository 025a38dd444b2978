//! The validation and defaulting a real API server applies that our code could get wrong:
//! object names, label keys and values, required fields of the kinds we use, Secret
//! `stringData`, and pod status and QoS defaults.

use base64::Engine;
use serde_json::{Value, json};

use crate::types::ResourceType;

type Causes = Vec<(String, String)>;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A qualified name: `[prefix/]name`, name up to 63 of alphanumerics, '-', '_', '.'.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn metadata(rt: &ResourceType, object: &Value, causes: &mut Causes) {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    let name_ok = match rt.kind.as_str() {
        "Namespace" | "Service" => is_dns_label(name),
        _ => is_dns_subdomain(name),
    };
    if !name_ok {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (key, value) in labels {
            if !is_qualified_name(key) {
                causes.push(("metadata.labels".to_string(), format!("Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.'")));
            }
            match value.as_str() {
                Some(v) if is_label_value(v) => {}
                _ => causes.push((
                    "metadata.labels".to_string(),
                    format!("Invalid value: {value}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                )),
            }
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        for (key, value) in annotations {
            if !is_qualified_name(key) {
                causes.push((
                    "metadata.annotations".into(),
                    format!("Invalid value: {key:?}: not a qualified name"),
                ));
            }
            if !value.is_string() {
                causes.push((
                    "metadata.annotations".into(),
                    format!("Invalid value: {value}: annotation values must be strings"),
                ));
            }
        }
    }
}

fn containers(path: &str, list: &Value, required: bool, causes: &mut Causes) {
    let Some(items) = list.as_array() else {
        if required {
            causes.push((path.into(), "Required value".into()));
        }
        return;
    };
    if required && items.is_empty() {
        causes.push((path.into(), "Required value".into()));
    }
    for (i, c) in items.iter().enumerate() {
        if !c["name"].as_str().is_some_and(is_dns_label) {
            causes.push((
                format!("{path}[{i}].name"),
                "Invalid value: must be a DNS-1123 label".into(),
            ));
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push((format!("{path}[{i}].image"), "Required value".into()));
        }
        if let Some(env) = c["env"].as_array() {
            for (j, e) in env.iter().enumerate() {
                if e["name"].as_str().is_none_or(str::is_empty) {
                    causes.push((
                        format!("{path}[{i}].env[{j}].name"),
                        "Required value".into(),
                    ));
                }
            }
        }
    }
}

fn pod_spec(path: &str, spec: &Value, causes: &mut Causes) {
    if !spec.is_object() {
        causes.push((path.into(), "Required value".into()));
        return;
    }
    containers(
        &format!("{path}.containers"),
        &spec["containers"],
        true,
        causes,
    );
    containers(
        &format!("{path}.initContainers"),
        &spec["initContainers"],
        false,
        causes,
    );
}

/// Whether every container requests or limits something: otherwise the pod is BestEffort.
pub fn qos_class(spec: &Value) -> &'static str {
    let all: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect();
    let any_resources = all.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            c["resources"][*k]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        })
    });
    if !any_resources {
        return "BestEffort";
    }
    let guaranteed = all.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][*r];
            let request = &c["resources"]["requests"][*r];
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Validate and default an object about to be written; `Err` lists the causes.
pub fn object(rt: &ResourceType, object: &mut Value) -> Result<(), Causes> {
    let mut causes = Vec::new();
    metadata(rt, object, &mut causes);
    match rt.kind.as_str() {
        "Pod" => pod_spec("spec", &object["spec"], &mut causes),
        "Deployment" => {
            let spec = &object["spec"];
            if !spec["selector"].is_object() {
                causes.push(("spec.selector".into(), "Required value".into()));
            }
            pod_spec("spec.template.spec", &spec["template"]["spec"], &mut causes);
            let selector = spec["selector"]["matchLabels"].as_object();
            let labels = &spec["template"]["metadata"]["labels"];
            if let Some(selector) = selector
                && !selector.iter().all(|(k, v)| &labels[k] == v)
            {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    "Invalid value: `selector` does not match template `labels`".into(),
                ));
            }
        }
        "Job" => {
            let template = &object["spec"]["template"];
            pod_spec("spec.template.spec", &template["spec"], &mut causes);
            let restart = template["spec"]["restartPolicy"].as_str().unwrap_or("");
            if !matches!(restart, "OnFailure" | "Never") {
                causes.push((
                    "spec.template.spec.restartPolicy".into(),
                    format!("Unsupported value: \"{restart}\": supported values: \"OnFailure\", \"Never\""),
                ));
            }
            if object["spec"]["manualSelector"] == true {
                causes.push((
                    "spec.manualSelector".into(),
                    "Unsupported value: true: this server selects a Job's pods itself".into(),
                ));
            }
        }
        "Secret" => {
            // stringData is write-only: merged into data, base64-encoded.
            if let Some(string_data) = object.as_object_mut().and_then(|m| m.remove("stringData")) {
                let engine = base64::engine::general_purpose::STANDARD;
                if let Some(map) = string_data.as_object() {
                    for (k, v) in map {
                        let text = v.as_str().unwrap_or_default();
                        object["data"][k] = json!(engine.encode(text));
                    }
                }
            }
            if let Some(data) = object["data"].as_object() {
                for (k, v) in data {
                    let valid_key = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                    if !valid_key {
                        causes.push((format!("data[{k}]"), "Invalid value: a valid config key must consist of alphanumeric characters, '-', '_' or '.'".into()));
                    }
                    if v.as_str().is_none_or(|s| {
                        base64::engine::general_purpose::STANDARD.decode(s).is_err()
                    }) {
                        causes.push((format!("data[{k}]"), "Invalid value: not base64".into()));
                    }
                }
            }
        }
        "CustomResourceDefinition" => {
            let spec = &object["spec"];
            for field in ["group", "names", "versions", "scope"] {
                if spec[field].is_null() {
                    causes.push((format!("spec.{field}"), "Required value".into()));
                }
            }
            let expected = format!(
                "{}.{}",
                spec["names"]["plural"].as_str().unwrap_or(""),
                spec["group"].as_str().unwrap_or("")
            );
            if object["metadata"]["name"].as_str() != Some(expected.as_str()) {
                causes.push((
                    "metadata.name".into(),
                    format!(
                        "Invalid value: must be spec.names.plural+\".\"+spec.group ({expected})"
                    ),
                ));
            }
        }
        "Lease" => {}
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// Defaults the server sets on creation.
pub fn on_create(rt: &ResourceType, object: &mut Value) {
    match rt.kind.as_str() {
        "Pod" => {
            let qos = qos_class(&object["spec"]);
            object["status"] = json!({"phase": "Pending", "qosClass": qos});
            if object["spec"]["restartPolicy"].is_null() {
                object["spec"]["restartPolicy"] = json!("Always");
            }
            if object["spec"]["terminationGracePeriodSeconds"].is_null() {
                object["spec"]["terminationGracePeriodSeconds"] = json!(30);
            }
        }
        "Namespace" => object["status"] = json!({"phase": "Active"}),
        "Secret" if object["type"].is_null() => object["type"] = json!("Opaque"),
        "Job" => {
            // The API server's defaults, and the selector it generates from the Job's uid.
            let uid = object["metadata"]["uid"].clone();
            let name = object["metadata"]["name"].clone();
            let spec = &mut object["spec"];
            for (field, default) in [
                ("completions", json!(1)),
                ("parallelism", json!(1)),
                ("backoffLimit", json!(6)),
                ("completionMode", json!("NonIndexed")),
                ("suspend", json!(false)),
                ("manualSelector", json!(false)),
                ("podReplacementPolicy", json!("TerminatingOrFailed")),
            ] {
                if spec[field].is_null() {
                    spec[field] = default;
                }
            }
            let generated = json!({
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            });
            spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            let labels = &mut spec["template"]["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            for (k, v) in generated.as_object().expect("an object") {
                labels[k] = v.clone();
            }
        }
        "Deployment" => {
            if object["spec"]["replicas"].is_null() {
                object["spec"]["replicas"] = json!(1);
            }
            if object["spec"]["strategy"]["type"].is_null() {
                object["spec"]["strategy"] = json!({"type": "RollingUpdate"});
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_follow_kubernetes_rules() {
        assert!(is_dns_label("bitbucket-runners"));
        assert!(!is_dns_label("Bad"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("runner-abc.registration"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("bad key"));
        assert!(is_label_value(""));
        assert!(is_label_value("5c1d2e3f-4a5b"));
        assert!(!is_label_value("{5c1d2e3f}"));
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"memory": "1Gi"}}}]})),
            "Burstable"
        );
        assert_eq!(
            qos_class(
                &json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
    }
}
