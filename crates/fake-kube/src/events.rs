//! One Event, served through both APIs as the API server does: `events.k8s.io/v1` (what
//! controllers such as kube-rs' Recorder write) and `core/v1` (what `kubectl get events` and
//! `kubectl describe` read). A write through either is mirrored into the other, field by field
//! as the API server converts them.

use serde_json::{Map, Value, json};

/// (events.k8s.io/v1 field, core/v1 field), for fields that only change name.
const RENAMED: [(&str, &str); 5] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];
/// Fields both versions share.
const SHARED: [&str; 8] = [
    "metadata",
    "reason",
    "type",
    "action",
    "eventTime",
    "series",
    "related",
    "reportingInstance",
];

fn copy(from: &Value, to: &mut Map<String, Value>, source: &str, target: &str) {
    if let Some(v) = from.get(source).filter(|v| !v.is_null()) {
        to.insert(target.to_owned(), v.clone());
    }
}

/// An events.k8s.io/v1 Event as core/v1 shows it.
pub fn to_core(event: &Value) -> Value {
    let mut core = Map::new();
    core.insert("apiVersion".into(), json!("v1"));
    core.insert("kind".into(), json!("Event"));
    for field in SHARED {
        copy(event, &mut core, field, field);
    }
    for (new, old) in RENAMED {
        copy(event, &mut core, new, old);
    }
    copy(
        event,
        &mut core,
        "reportingController",
        "reportingComponent",
    );
    let source = match event.get("deprecatedSource").filter(|s| !s.is_null()) {
        Some(source) => source.clone(),
        None => {
            json!({"component": event.get("reportingController").cloned().unwrap_or(Value::Null)})
        }
    };
    if source.get("component").is_some_and(|c| !c.is_null()) {
        core.insert("source".into(), source);
    }
    // kubectl shows when an Event was last seen from these; a new-style Event has eventTime.
    if !core.contains_key("lastTimestamp")
        && let Some(series_time) = event["series"].get("lastObservedTime")
    {
        core.insert("lastTimestamp".into(), series_time.clone());
    }
    Value::Object(core)
}

/// A core/v1 Event as events.k8s.io/v1 shows it.
pub fn to_events_v1(event: &Value) -> Value {
    let mut new = Map::new();
    new.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    new.insert("kind".into(), json!("Event"));
    for field in SHARED {
        copy(event, &mut new, field, field);
    }
    for (to, from) in RENAMED {
        copy(event, &mut new, from, to);
    }
    copy(event, &mut new, "source", "deprecatedSource");
    let controller = event
        .get("reportingComponent")
        .filter(|c| c.as_str().is_some_and(|c| !c.is_empty()))
        .or_else(|| event["source"].get("component"))
        .cloned();
    if let Some(controller) = controller {
        new.insert("reportingController".into(), controller);
    }
    Value::Object(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorder_event_reads_as_kubectl_expects_and_converts_back() {
        let recorded = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "builds.1", "namespace": "ci"},
            "eventTime": "2026-12-01T10:00:00.000000Z",
            "reason": "RunnerCreated", "note": "runner created", "type": "Normal", "action": "Create",
            "regarding": {"kind": "RunnerPool", "name": "builds", "namespace": "ci", "uid": "u1"},
            "reportingController": "bbrunner", "reportingInstance": "op-1",
            "series": {"count": 2, "lastObservedTime": "2026-12-01T10:05:00.000000Z"},
        });
        let core = to_core(&recorded);
        assert_eq!(core["involvedObject"]["uid"], "u1");
        assert_eq!(core["message"], "runner created");
        assert_eq!(core["source"]["component"], "bbrunner");
        assert_eq!(core["reportingComponent"], "bbrunner");
        assert_eq!(core["lastTimestamp"], "2026-12-01T10:05:00.000000Z");
        let back = to_events_v1(&core);
        for field in [
            "regarding",
            "note",
            "reason",
            "type",
            "action",
            "eventTime",
            "reportingController",
            "series",
        ] {
            assert_eq!(back[field], recorded[field], "{field}");
        }
    }
}
