//! Strategic merge patch, as `kubectl apply` sends it for built-in kinds: maps merge, lists of
//! objects merge by their merge key (`name` for containers, volumes and env; `mountPath`,
//! `containerPort`, `uid`, `type` elsewhere), with the `$patch`, `$setElementOrder`,
//! `$retainKeys` and `$deleteFromPrimitiveList` directives. Lists without a merge key are
//! replaced, as Kubernetes does for atomic lists.

use serde_json::{Map, Value};

const MERGE_KEYS: [&str; 6] = ["name", "mountPath", "containerPort", "uid", "type", "ip"];

fn merge_key(items: &[Value]) -> Option<&'static str> {
    let first = items.iter().find(|i| i.is_object())?;
    MERGE_KEYS.into_iter().find(|k| first.get(*k).is_some())
}

pub fn apply(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch_map.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch_map {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(current)), Some(doomed)) =
                (target_map.get_mut(field), value.as_array())
            {
                current.retain(|v| !doomed.contains(v));
            }
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => apply(target_map.entry(key.clone()).or_insert(Value::Null), value),
            Value::Array(items) => {
                let merged = match (target_map.get(key), merge_key(items)) {
                    (Some(Value::Array(current)), Some(k)) => merge_list(current, items, k),
                    _ => items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .cloned()
                        .collect(),
                };
                target_map.insert(key.clone(), Value::Array(merged));
            }
            other => {
                target_map.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_list(current: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    let mut out: Vec<Value> = current.to_vec();
    for item in patch {
        let id = &item[key];
        let position = out.iter().position(|c| &c[key] == id);
        match (item.get("$patch").and_then(Value::as_str), position) {
            (Some("delete"), Some(i)) => {
                out.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => apply(&mut out[i], item),
            (_, None) => {
                let mut fresh = Value::Null;
                apply(&mut fresh, item);
                out.push(fresh);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_directives_apply() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "docker", "image": "docker:28.5-dind", "resources": {"limits": {"memory": "5Gi"}}}],
            "containers": [{"name": "runner", "image": "r:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}],
            "finalizers": ["a", "b"],
        }});
        let patch = json!({"spec": {
            "$setElementOrder/initContainers": [{"name": "docker"}],
            "initContainers": [{"name": "docker", "resources": {"limits": {"memory": "9Gi"}}}],
            "containers": [{"name": "runner", "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}]}],
            "$deleteFromPrimitiveList/finalizers": ["a"],
        }});
        apply(&mut pod, &patch);
        assert_eq!(
            pod["spec"]["initContainers"][0]["image"],
            "docker:28.5-dind"
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"]["limits"]["memory"],
            "9Gi"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(pod["spec"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn nulls_delete_and_replace_replaces() {
        let mut obj = json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        apply(&mut obj, &json!({"a": {"b": null}, "d": [3]}));
        assert_eq!(obj, json!({"a": {"c": 2}, "d": [3]}));
        apply(&mut obj, &json!({"a": {"$patch": "replace", "z": 9}}));
        assert_eq!(obj["a"], json!({"z": 9}));
    }
}
