//! Strategic merge patch, as `kubectl apply` and `kubectl patch` send it for built-in kinds.
//! Each field merges as the Kubernetes OpenAPI says (`x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`, from `data/patch-metadata.json`, made by
//! `scripts/gen-patch-metadata`): maps merge, lists of objects with a merge key merge by it,
//! `merge` lists of scalars (such as `finalizers`) are unions, every other list is replaced.
//! The `$patch`, `$retainKeys`, `$setElementOrder` and `$deleteFromPrimitiveList` directives
//! apply. Custom resources take no strategic merge patch (the API server answers 415).

use std::sync::OnceLock;

use serde_json::{Map, Value};

pub(crate) fn metadata() -> &'static Value {
    static METADATA: OnceLock<Value> = OnceLock::new();
    METADATA.get_or_init(|| {
        serde_json::from_str(include_str!("../data/patch-metadata.json"))
            .expect("the vendored patch metadata is JSON")
    })
}

/// The OpenAPI definition of a built-in kind, if it is one this fake knows.
pub fn definition_of(kind: &str) -> Option<&'static str> {
    metadata()["kinds"][kind].as_str()
}

/// How one field of a definition merges.
fn field<'a>(definition: Option<&str>, name: &str) -> &'a Value {
    match definition {
        Some(d) => &metadata()["definitions"][d][name],
        None => &Value::Null,
    }
}

/// Apply `patch` to `target`, an object of OpenAPI `definition`.
pub fn apply(target: &mut Value, patch: &Value, definition: Option<&str>) {
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
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(current)), Some(doomed)) =
                (target_map.get_mut(list), value.as_array())
            {
                current.retain(|v| !doomed.contains(v));
            }
            continue;
        }
        let meta = field(definition, key);
        let child = meta["ref"].as_str();
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => apply(
                target_map.entry(key.clone()).or_insert(Value::Null),
                value,
                child,
            ),
            Value::Array(items) => {
                let merges = meta["strategy"]
                    .as_str()
                    .is_some_and(|s| s.split(',').any(|s| s == "merge"));
                let patched: Vec<Value> = items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect();
                let merged = match (target_map.get(key), merges, meta["mergeKey"].as_str()) {
                    (Some(Value::Array(current)), true, Some(k)) => {
                        merge_list(current, items, k, child)
                    }
                    (Some(Value::Array(current)), true, None) => {
                        let mut from_patch: Vec<Value> = Vec::new();
                        for v in patched {
                            if !from_patch.contains(&v) {
                                from_patch.push(v);
                            }
                        }
                        let server_only: Vec<Value> = current
                            .iter()
                            .filter(|v| !from_patch.contains(v))
                            .cloned()
                            .collect();
                        interleave(server_only, from_patch, current, |v| v.clone())
                    }
                    _ => patched,
                };
                target_map.insert(key.clone(), Value::Array(merged));
            }
            other => {
                target_map.insert(key.clone(), other.clone());
            }
        }
    }
    // `$retainKeys`: only the listed fields stay (a union's other members go).
    if let Some(retain) = patch_map.get("$retainKeys").and_then(Value::as_array) {
        target_map.retain(|k, _| retain.iter().any(|r| r == k));
    }
}

/// Merge `patch` into `current` by `key`.
fn merge_list(
    current: &[Value],
    patch: &[Value],
    key: &str,
    definition: Option<&str>,
) -> Vec<Value> {
    // As apimachinery does: delete directives act on the object first, so an item both deleted
    // and given by the patch starts afresh, and takes the place of an item the object lacked.
    let is_delete = |item: &Value| item.get("$patch").and_then(Value::as_str) == Some("delete");
    let current: Vec<Value> = current
        .iter()
        .filter(|c| !patch.iter().any(|p| is_delete(p) && p[key] == c[key]))
        .cloned()
        .collect();
    let mut from_patch = Vec::new();
    for item in patch.iter().filter(|item| !is_delete(item)) {
        let mut merged = current
            .iter()
            .find(|c| c[key] == item[key])
            .cloned()
            .unwrap_or(Value::Null);
        apply(&mut merged, item, definition);
        from_patch.push(merged);
    }
    let server_only: Vec<Value> = current
        .iter()
        .filter(|c| !patch.iter().any(|p| p[key] == c[key]))
        .cloned()
        .collect();
    interleave(server_only, from_patch, &current, |v| v[key].clone())
}

/// The order the API server gives a merged list (apimachinery's `mergeSortedSlice`): the
/// patch's items keep their order, the items only the object had keep theirs, and one of the
/// latter goes first when the object had it before the patch item it is compared with.
fn interleave(
    server_only: Vec<Value>,
    from_patch: Vec<Value>,
    server_order: &[Value],
    id: impl Fn(&Value) -> Value,
) -> Vec<Value> {
    let position = |v: &Value| server_order.iter().position(|s| id(s) == id(v));
    let mut out = Vec::with_capacity(server_only.len() + from_patch.len());
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        from_patch.into_iter().peekable(),
    );
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                matches!((position(l), position(r)), (Some(li), Some(ri)) if li < ri)
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_directives_apply() {
        let mut pod = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {
            "initContainers": [{"name": "docker", "image": "docker:28.5-dind", "resources": {"limits": {"memory": "5Gi"}}}],
            "containers": [{"name": "runner", "image": "r:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"name": "x", "containerPort": 80}], "volumeMounts": [{"name": "v", "mountPath": "/a"}]}],
        }});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}, "spec": {
            "$setElementOrder/initContainers": [{"name": "docker"}],
            "initContainers": [{"name": "docker", "resources": {"limits": {"memory": "9Gi"}}}],
            "containers": [{"name": "runner", "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                            // Merge keys from the OpenAPI: containerPort and mountPath, not name.
                            "ports": [{"name": "y", "containerPort": 80}], "volumeMounts": [{"name": "v", "mountPath": "/b"}]}],
        }});
        apply(&mut pod, &patch, definition_of("Pod"));
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
            json!([{"name": "C", "value": "3"}, {"name": "A", "value": "1"}])
        );
        // finalizers merge as a set: another controller's entry is never dropped.
        assert_eq!(pod["metadata"]["finalizers"], json!(["c", "b"]));
        assert_eq!(
            pod["spec"]["containers"][0]["ports"],
            json!([{"name": "y", "containerPort": 80}])
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": "v", "mountPath": "/b"}, {"name": "v", "mountPath": "/a"}])
        );
    }

    #[test]
    fn an_item_deleted_and_given_in_one_patch_starts_afresh_in_front() {
        // Found by the kubectl-oracle property test in `bbrunner`'s CLI tests.
        let mut pod = json!({"spec": {"containers": [{"name": "c", "env": [
            {"name": "X", "value": "x"}, {"name": "Y", "value": "old"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "env": [
            {"name": "Y"}, {"name": "Y", "$patch": "delete"}]}]}});
        apply(&mut pod, &patch, definition_of("Pod"));
        assert_eq!(
            pod["spec"]["containers"][0]["env"],
            json!([{"name": "Y"}, {"name": "X", "value": "x"}])
        );
    }

    #[test]
    fn nulls_delete_and_replace_replaces() {
        let mut obj = json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        apply(&mut obj, &json!({"a": {"b": null}, "d": [3]}), None);
        assert_eq!(obj, json!({"a": {"c": 2}, "d": [3]}));
        apply(&mut obj, &json!({"a": {"$patch": "replace", "z": 9}}), None);
        assert_eq!(obj["a"], json!({"z": 9}));
        // Tolerations are atomic: replaced, not merged.
        let mut pod = json!({"spec": {"tolerations": [{"key": "a"}]}});
        apply(
            &mut pod,
            &json!({"spec": {"tolerations": [{"key": "b"}]}}),
            definition_of("Pod"),
        );
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "b"}]));
    }
}
