//! Server-side apply, as the API server does it: each field manager owns the fields it set,
//! recorded in `metadata.managedFields` (`FieldsV1`); an apply merges the configuration into
//! the object (maps and structs merge, `x-kubernetes-list-type: map` lists merge by their
//! keys, `set` lists are unions, others are atomic), removes the fields the manager applied
//! before and no longer does (unless another manager owns them), and answers 409 when it would
//! change a field another manager owns, unless forced. Updates (PUT, other patches) give the
//! fields they change to their manager. List types come from the CRD's schema, or for
//! built-in kinds from the vendored Kubernetes OpenAPI metadata.

use serde_json::{Map, Value, json};

/// What is known of a node's type.
#[derive(Clone, Copy)]
pub enum Shape<'a> {
    /// A built-in kind's OpenAPI definition (`None`: not in the vendored metadata).
    Builtin(Option<&'a str>),
    /// A node of a CRD's structural schema.
    Crd(&'a Value),
}

#[derive(Debug, Clone, PartialEq)]
enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

fn builtin_field(definition: Option<&str>, name: &str) -> &'static Value {
    static NULL: Value = Value::Null;
    match definition {
        Some(d) => {
            let meta = crate::strategic::metadata();
            meta["definitions"][d].get(name).unwrap_or(&NULL)
        }
        None => &NULL,
    }
}

impl<'a> Shape<'a> {
    /// The shape of a field, and how it merges if it is a list.
    fn field(self, name: &str) -> (Shape<'a>, ListKind) {
        // Every kind's metadata is ObjectMeta: finalizers a set, ownerReferences a map by uid.
        if name == "metadata" {
            let meta = Shape::Builtin(Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
            return (meta, ListKind::Atomic);
        }
        match self {
            Shape::Builtin(definition) => {
                let meta = builtin_field(definition, name);
                let kind = match (meta["listType"].as_str(), meta["mergeKey"].as_str()) {
                    (Some("map"), _) => ListKind::Map(
                        meta["mapKeys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect(),
                    ),
                    (Some("set"), _) => ListKind::Set,
                    (None, Some(key)) => ListKind::Map(vec![key.to_owned()]),
                    _ => ListKind::Atomic,
                };
                (Shape::Builtin(meta["ref"].as_str()), kind)
            }
            Shape::Crd(node) => {
                let child = node["properties"]
                    .get(name)
                    .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
                    .unwrap_or(&Value::Null);
                let kind = match child["x-kubernetes-list-type"].as_str() {
                    Some("map") => ListKind::Map(
                        child["x-kubernetes-list-map-keys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect(),
                    ),
                    Some("set") => ListKind::Set,
                    _ => ListKind::Atomic,
                };
                (Shape::Crd(child), kind)
            }
        }
    }

    /// The shape of a list's items.
    fn items(self) -> Shape<'a> {
        match self {
            Shape::Builtin(d) => Shape::Builtin(d),
            Shape::Crd(node) => Shape::Crd(node.get("items").unwrap_or(&Value::Null)),
        }
    }
}

/// The metadata fields a manager can own.
const OWNED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

fn item_key(item: &Value, keys: &[String]) -> String {
    let key: Map<String, Value> = keys
        .iter()
        .map(|k| (k.clone(), item.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    format!("k:{}", Value::Object(key))
}

/// The fields `value` sets, as `FieldsV1`.
fn fields_of(value: &Value, shape: Shape<'_>) -> Value {
    let mut out = Map::new();
    if let Some(map) = value.as_object() {
        for (key, child) in map {
            let (child_shape, list) = shape.field(key);
            out.insert(format!("f:{key}"), field_value(child, child_shape, &list));
        }
    }
    Value::Object(out)
}

fn field_value(value: &Value, shape: Shape<'_>, list: &ListKind) -> Value {
    match (value, list) {
        (Value::Object(_), _) => fields_of(value, shape),
        (Value::Array(items), ListKind::Map(keys)) => {
            let mut out = Map::new();
            for item in items {
                let mut entry = fields_of(item, shape.items());
                entry["."] = json!({});
                out.insert(item_key(item, keys), entry);
            }
            Value::Object(out)
        }
        (Value::Array(items), ListKind::Set) => Value::Object(
            items
                .iter()
                .map(|v| (format!("v:{v}"), json!({})))
                .collect(),
        ),
        _ => json!({}),
    }
}

/// The fields of an object a manager can own: not apiVersion, kind, or metadata the server
/// keeps (name, uid, resourceVersion, ...).
pub fn object_fields(object: &Value, shape: Shape<'_>) -> Value {
    let mut owned = object.clone();
    if let Some(map) = owned.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| OWNED_METADATA.contains(&k.as_str()));
            if meta.is_empty() {
                map.remove("metadata");
            }
        }
    }
    fields_of(&owned, shape)
}

/// Every leaf path of a field set.
fn leaves(fields: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    if map.is_empty() {
        out.push(prefix.clone());
        return;
    }
    for (key, child) in map {
        prefix.push(key.clone());
        leaves(child, prefix, out);
        prefix.pop();
    }
}

fn leaf_paths(fields: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    leaves(fields, &mut Vec::new(), &mut out);
    out
}

/// The value at a field path, if the object has it.
fn value_at<'v>(object: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut node = object;
    for step in path {
        node = if let Some(field) = step.strip_prefix("f:") {
            node.get(field)?
        } else if let Some(key) = step.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            node.as_array()?
                .iter()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else if let Some(value) = step.strip_prefix("v:") {
            let value: Value = serde_json::from_str(value).ok()?;
            node.as_array()?.iter().find(|v| **v == value)?
        } else {
            // ".": the list item itself.
            node
        };
    }
    Some(node)
}

/// Remove the field at `path` (a list item when the path ends in "." or a set value).
fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if last == "." {
        remove_at(object, parent_path);
        return;
    }
    let mut node = object;
    for step in parent_path {
        let next = if let Some(field) = step.strip_prefix("f:") {
            node.get_mut(field)
        } else if let Some(key) = step.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) else {
                return;
            };
            node.as_array_mut().and_then(|items| {
                items
                    .iter_mut()
                    .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
            })
        } else {
            None
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = node.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(key) = last.strip_prefix("k:") {
        if let (Ok(key), Some(items)) = (
            serde_json::from_str::<Map<String, Value>>(key),
            node.as_array_mut(),
        ) {
            items.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
        }
    } else if let Some(value) = last.strip_prefix("v:")
        && let (Ok(value), Some(items)) =
            (serde_json::from_str::<Value>(value), node.as_array_mut())
    {
        items.retain(|v| *v != value);
    }
}

/// Merge an applied configuration into the object.
fn merge(live: &mut Value, config: &Value, shape: Shape<'_>) {
    let Some(config_map) = config.as_object() else {
        *live = config.clone();
        return;
    };
    if !live.is_object() {
        *live = json!({});
    }
    let live_map = live.as_object_mut().expect("made an object");
    for (key, value) in config_map {
        let (child_shape, list) = shape.field(key);
        match (value, &list, live_map.get_mut(key)) {
            (Value::Object(_), _, Some(current)) if current.is_object() => {
                merge(current, value, child_shape)
            }
            (Value::Array(items), ListKind::Map(keys), Some(Value::Array(current))) => {
                for item in items {
                    match current
                        .iter_mut()
                        .find(|c| keys.iter().all(|k| c.get(k) == item.get(k)))
                    {
                        Some(existing) => merge(existing, item, child_shape.items()),
                        None => current.push(item.clone()),
                    }
                }
            }
            (Value::Array(items), ListKind::Set, Some(Value::Array(current))) => {
                for item in items {
                    if !current.contains(item) {
                        current.push(item.clone());
                    }
                }
            }
            _ => {
                live_map.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Whether `path` is in a field set.
fn owns(fields: &Value, path: &[String]) -> bool {
    let mut node = fields;
    for step in path {
        match node.get(step) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// Remove `path` from a field set, and the levels it leaves empty.
fn disown(fields: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(map) = fields.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        map.remove(first);
        return;
    }
    if let Some(child) = map.get_mut(first) {
        disown(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            map.remove(first);
        }
    }
}

/// Drop from every manager's field set the fields the object no longer has (a field removed
/// by any write is owned by no one), and the entries left empty.
fn prune_to_object(managed: &mut Vec<Value>, object: &Value) {
    for entry in managed.iter_mut() {
        for path in leaf_paths(&entry["fieldsV1"]) {
            if value_at(object, &path).is_none() {
                disown(&mut entry["fieldsV1"], &path);
            }
        }
    }
    managed.retain(|e| e["fieldsV1"].as_object().is_some_and(|f| !f.is_empty()));
}

/// One entry of `managedFields`.
fn entries(object: &Value) -> Vec<Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn describe(path: &[String]) -> String {
    path.iter()
        .filter(|s| s.as_str() != ".")
        .map(|s| match s.strip_prefix("f:") {
            Some(f) => format!(".{f}"),
            None => format!(
                "[{}]",
                s.trim_start_matches(['k', 'v']).trim_start_matches(':')
            ),
        })
        .collect()
}

/// Server-side apply of `config` by `manager` to `live` (`None`: the object does not exist);
/// the merged object, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    shape: Shape<'_>,
    time: &str,
) -> Result<Value, String> {
    let mut object = live.cloned().unwrap_or_else(|| json!({}));
    let applied = object_fields(config, shape);
    // An empty map sets no value: it neither conflicts with nor takes the fields inside it.
    let applied_leaves: Vec<Vec<String>> = leaf_paths(&applied)
        .into_iter()
        .filter(|path| {
            !value_at(config, path).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
        })
        .collect();
    let mut managed = entries(&object);
    prune_to_object(&mut managed, &object);
    let same = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Apply"
            && e["subresource"].as_str() == subresource
    };
    // Conflicts: a field another manager owns, to which this apply gives another value.
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for entry in managed.iter().filter(|e| !same(e)) {
        for path in &applied_leaves {
            if owns(&entry["fieldsV1"], path) && value_at(&object, path) != value_at(config, path) {
                conflicts.push((
                    entry["manager"].as_str().unwrap_or("").to_owned(),
                    describe(path),
                ));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let list: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with {m:?}: {p}"))
            .collect();
        return Err(format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            list.join(", ")
        ));
    }
    // Forced: the fields change owner.
    for entry in managed.iter_mut().filter(|e| !same(e)) {
        for path in &applied_leaves {
            disown(&mut entry["fieldsV1"], path);
        }
    }
    // Fields this manager applied before and no longer does go, unless another owns them.
    if let Some(previous) = managed.iter().find(|e| same(e)) {
        for path in leaf_paths(&previous["fieldsV1"]) {
            let still_applied = owns(&applied, &path);
            let other_owner = managed
                .iter()
                .any(|e| !same(e) && owns(&e["fieldsV1"], &path));
            if !still_applied && !other_owner {
                remove_at(&mut object, &path);
            }
        }
    }
    let mut body = config.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("metadata");
    }
    merge(&mut object, &body, shape);
    for field in OWNED_METADATA {
        if let Some(value) = config["metadata"].get(field) {
            merge(
                &mut object["metadata"],
                &json!({ field: value.clone() }),
                shape.field("metadata").0,
            );
        }
    }
    managed.retain(|e| !same(e));
    managed.push(json!({
        "manager": manager, "operation": "Apply", "apiVersion": config["apiVersion"],
        "time": time, "fieldsType": "FieldsV1", "fieldsV1": applied,
    }));
    if let Some(sub) = subresource {
        let last = managed.len() - 1;
        managed[last]["subresource"] = json!(sub);
    }
    prune_to_object(&mut managed, &object);
    object["metadata"]["managedFields"] = json!(managed);
    Ok(object)
}

/// After an update (PUT or a non-apply patch) by `manager`: the fields it changed are its own.
pub fn record_update(
    before: Option<&Value>,
    after: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    shape: Shape<'_>,
    time: &str,
) {
    let fields = object_fields(after, shape);
    let changed: Vec<Vec<String>> = leaf_paths(&fields)
        .into_iter()
        .filter(|p| before.is_none_or(|b| value_at(b, p) != value_at(after, p)))
        .collect();
    let mut managed = before.map(entries).unwrap_or_default();
    prune_to_object(&mut managed, after);
    if changed.is_empty() {
        after["metadata"]["managedFields"] = json!(managed);
        return;
    }
    let same = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Update"
            && e["subresource"].as_str() == subresource
    };
    for entry in managed.iter_mut().filter(|e| !same(e)) {
        for path in &changed {
            disown(&mut entry["fieldsV1"], path);
        }
    }
    let mut mine = managed
        .iter()
        .find(|e| same(e))
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or_else(|| json!({}));
    for path in &changed {
        let mut node = &mut mine;
        for step in path {
            node = node
                .as_object_mut()
                .expect("field sets are objects")
                .entry(step.clone())
                .or_insert_with(|| json!({}));
        }
    }
    managed.retain(|e| !same(e));
    let mut entry = json!({
        "manager": manager, "operation": "Update", "apiVersion": after["apiVersion"],
        "time": time, "fieldsType": "FieldsV1", "fieldsV1": mine,
    });
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    managed.push(entry);
    prune_to_object(&mut managed, after);
    after["metadata"]["managedFields"] = json!(managed);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-12-01T00:00:00Z";

    fn deployment() -> Shape<'static> {
        Shape::Builtin(crate::strategic::definition_of("Deployment"))
    }

    #[test]
    fn apply_merges_list_maps_owns_fields_and_removes_what_it_stops_applying() {
        let first = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        let live = apply(None, &first, "ci", false, None, deployment(), T).unwrap();
        let entry = &live["metadata"]["managedFields"][0];
        assert_eq!(entry["manager"], "ci");
        assert!(entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"].is_object(), "{entry}");
        // Another manager adds a container; the first one drops replicas and its label.
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}}});
        let live = apply(Some(&live), &other, "mesh", false, None, deployment(), T).unwrap();
        let names: Vec<&Value> = live["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, ["c", "sidecar"]);
        let second = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}}});
        let live = apply(Some(&live), &second, "ci", false, None, deployment(), T).unwrap();
        assert!(live["spec"].get("replicas").is_none(), "{live}");
        assert!(live["metadata"]["labels"].get("a").is_none(), "{live}");
        assert_eq!(
            live["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_field_removed_by_an_update_is_owned_by_no_one() {
        // As a Lease is released: the holder sets its fields to null, and the next candidate's
        // apply must not conflict with the old holder.
        let lease = Shape::Builtin(crate::strategic::definition_of("Lease"));
        let lock = |who: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {"holderIdentity": who}});
        let held = apply(None, &lock("a"), "a", false, None, lease, T).unwrap();
        assert!(apply(Some(&held), &lock("b"), "b", false, None, lease, T).is_err());
        let mut released = held.clone();
        released["spec"]
            .as_object_mut()
            .unwrap()
            .remove("holderIdentity");
        record_update(Some(&held), &mut released, "a", None, lease, T);
        let taken = apply(Some(&released), &lock("b"), "b", false, None, lease, T).unwrap();
        assert_eq!(taken["spec"]["holderIdentity"], "b");
    }

    #[test]
    fn changing_a_field_another_manager_owns_conflicts_unless_forced() {
        let base = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2}});
        let live = apply(None, &base, "ci", false, None, deployment(), T).unwrap();
        let mut edited = live.clone();
        edited["spec"]["replicas"] = json!(5);
        record_update(
            Some(&live),
            &mut edited,
            "kubectl-edit",
            None,
            deployment(),
            T,
        );
        let err = apply(Some(&edited), &base, "ci", false, None, deployment(), T).unwrap_err();
        assert_eq!(
            err,
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\": .spec.replicas"
        );
        // The same value is no conflict; forcing takes the field.
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 5}});
        assert!(apply(Some(&edited), &same, "ci", false, None, deployment(), T).is_ok());
        let forced = apply(Some(&edited), &base, "ci", true, None, deployment(), T).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        let owners: Vec<&Value> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["manager"])
            .collect();
        assert_eq!(owners, ["ci"], "{forced}");
    }
}
