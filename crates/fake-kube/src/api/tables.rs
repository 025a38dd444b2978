//! `kubectl get`'s server-side printing: Tables with a CRD's printer columns, and Events as the
//! API server prints them.

use crate::types::ResourceType;
use serde_json::{Value, json};

/// Events as the API server prints them for `kubectl get events`.
pub(crate) fn events_table(items: &[Value], metadata: Value) -> Value {
    let column = |name: &str, priority: u8| {
        json!({"name": name, "type": "string", "format": if name == "Name" { "name" } else { "" },
               "description": name, "priority": priority})
    };
    let columns = vec![
        column("Last Seen", 0),
        column("Type", 0),
        column("Reason", 0),
        column("Object", 0),
        column("Subobject", 1),
        column("Source", 1),
        column("Message", 0),
        column("First Seen", 1),
        column("Count", 1),
        column("Name", 1),
    ];
    let rows: Vec<Value> = items
        .iter()
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
            let last = [
                &e["series"]["lastObservedTime"],
                &e["lastTimestamp"],
                &e["eventTime"],
            ]
            .into_iter()
            .find(|t| !t.is_null())
            .unwrap_or(&Value::Null);
            let first = if e["firstTimestamp"].is_null() {
                &e["eventTime"]
            } else {
                &e["firstTimestamp"]
            };
            let involved = &e["involvedObject"];
            let object = format!(
                "{}/{}",
                text(&involved["kind"]).to_lowercase(),
                text(&involved["name"])
            );
            let source = match text(&e["source"]["component"]) {
                component if !component.is_empty() => {
                    let host = text(&e["source"]["host"]);
                    if host.is_empty() { component } else { format!("{component}, {host}") }
                }
                _ => {
                    let instance = text(&e["reportingInstance"]);
                    let controller = text(&e["reportingComponent"]);
                    if instance.is_empty() { controller } else { format!("{controller}, {instance}") }
                }
            };
            let count = e["series"]["count"]
                .as_i64()
                .or_else(|| e["count"].as_i64())
                .unwrap_or(1);
            let cells = json!([
                since(last),
                e["type"],
                e["reason"],
                object,
                involved["fieldPath"].as_str().unwrap_or(""),
                source,
                e["message"],
                since(first),
                count.to_string(),
                e["metadata"]["name"],
            ]);
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": e["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows})
}

/// `kubectl get`'s server-side printing: name, age and a CRD's printer columns.
pub(crate) fn table(rt: &ResourceType, items: &[Value], metadata: Value) -> Value {
    if rt.kind == "Event" && rt.group.is_empty() {
        return events_table(items, metadata);
    }
    let mut columns =
        vec![json!({"name": "Name", "type": "string", "format": "name", "description": "Name"})];
    for c in &rt.printer_columns {
        columns.push(json!({"name": c.name, "type": c.kind, "format": "", "description": c.name, "priority": c.priority}));
    }
    let pod = rt.kind == "Pod";
    if pod {
        columns.push(
            json!({"name": "Status", "type": "string", "format": "", "description": "phase"}),
        );
        columns
            .push(json!({"name": "Node", "type": "string", "format": "", "description": "node"}));
    }
    if !rt.printer_columns.iter().any(|c| c.name == "Age") {
        columns.push(json!({"name": "Age", "type": "string", "format": "", "description": "age"}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item["metadata"]["name"].clone()];
            for c in &rt.printer_columns {
                if c.name == "Age" {
                    cells.push(json!(age(item)));
                    continue;
                }
                let node = json_path(item, &c.json_path);
                cells.push(if node.is_null() { json!("") } else { node.clone() });
            }
            if pod {
                let phase = if item["metadata"]["deletionTimestamp"].is_null() {
                    item["status"]["phase"].clone()
                } else {
                    json!("Terminating")
                };
                cells.push(phase);
                cells.push(item["spec"]["nodeName"].clone());
            }
            if !rt.printer_columns.iter().any(|c| c.name == "Age") {
                cells.push(json!(age(item)));
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows})
}

/// The value a printer column's JSONPath names: fields, `[N]` and `[?(@.key=="value")]`.
pub(crate) fn json_path<'a>(item: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    // Split on the dots outside brackets.
    let mut segments = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let path = path.trim_start_matches('.');
    for (i, ch) in path.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => {
                segments.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(&path[start..]);
    let mut node = item;
    for segment in segments {
        let (field, filters) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        if !field.is_empty() {
            node = &node[field];
        }
        for filter in filters.split_inclusive(']').filter(|f| !f.is_empty()) {
            let inner = filter.trim_start_matches('[').trim_end_matches(']');
            node = if let Some(condition) =
                inner.strip_prefix("?(@.").and_then(|c| c.strip_suffix(')'))
            {
                let Some((key, value)) = condition.split_once("==") else {
                    return &NULL;
                };
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                node.as_array()
                    .and_then(|items| items.iter().find(|i| i[key.trim()] == value))
                    .unwrap_or(&NULL)
            } else if let Ok(index) = inner.parse::<usize>() {
                &node[index]
            } else {
                &NULL
            };
        }
    }
    node
}

pub(crate) fn age(item: &Value) -> String {
    since(&item["metadata"]["creationTimestamp"])
}

/// How long ago a timestamp was, as kubectl prints it (`<unknown>` without one).
pub(crate) fn since(timestamp: &Value) -> String {
    let at = timestamp
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match at {
        Some(t) => {
            let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
            if secs < 120 {
                format!("{secs}s")
            } else if secs < 7200 {
                format!("{}m", secs / 60)
            } else {
                format!("{}h", secs / 3600)
            }
        }
        None => "<unknown>".into(),
    }
}
