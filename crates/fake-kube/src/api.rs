//! The REST face: Kubernetes paths and verbs over the store, discovery, watch streams, and
//! fault injection; plus the `/_fake/` control API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_stream::wrappers::BroadcastStream;

use crate::cluster::Cluster;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ApiError, FieldValidation, PatchKind, ResourceType, WatchEvent};

/// Fault injection on the Kubernetes API (not on `/_fake/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of requests failing with 500, by verb: get, list, watch, create, update, patch,
    /// delete.
    pub error_rates: HashMap<String, f64>,
    /// Added latency, in milliseconds.
    pub latency_ms: u64,
    /// Close every watch stream after this many milliseconds (0: never).
    pub drop_watches_after_ms: u64,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.status_body())).into_response()
    }
}

/// A parsed resource path.
struct Target {
    rt: ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(cluster: &Cluster, path: &str) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", version, rest),
        ["apis", group, version, rest @ ..] => (group, version, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let store = cluster.store();
    let lookup = |plural: &str| {
        store
            .find_type(group, plural)
            .filter(|t| t.versions.iter().any(|v| v == version))
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            })
    };
    let (rt, namespace, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let rt = lookup(plural)?;
            (rt, Some(ns.to_string()), tail.first(), tail.get(1))
        }
        [plural, tail @ ..] => (lookup(plural)?, None, tail.first(), tail.get(1)),
        [] => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    Ok(Target {
        version: version.to_owned(),
        namespace,
        name: name.map(|s| s.to_string()),
        subresource: sub.map(|s| s.to_string()),
        rt,
    })
}

fn query_map(uri: &axum::http::Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn verb(method: &Method, target: &Target, query: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if target.name.is_none() => {
            if query.get("watch").is_some_and(|w| parse_bool(w)) {
                "watch"
            } else {
                "list"
            }
        }
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// A boolean query parameter as the API server reads it (Go's `strconv.ParseBool`): the Python
/// client sends `watch=True`.
fn parse_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Every Kubernetes API request comes through here.
pub async fn handle(State(cluster): State<Arc<Cluster>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    match path.as_str() {
        "/version" => return axum::Json(version()).into_response(),
        "/healthz" | "/readyz" | "/livez" => return "ok".into_response(),
        "/api" => return axum::Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": cluster.address()}]})).into_response(),
        "/apis" => return axum::Json(cluster.api_groups()).into_response(),
        _ => {}
    }
    if let Some(list) = cluster.resource_list(&path) {
        return axum::Json(list).into_response();
    }
    if path == "/openapi/v3" {
        return axum::Json(cluster.openapi_root()).into_response();
    }
    if path.starts_with("/openapi") {
        return match cluster.openapi_document(&path) {
            Some(doc) => axum::Json(doc).into_response(),
            None => ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .into_response(),
        };
    }
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let faults = if crate::is_node_agent(token) {
        Faults::default()
    } else {
        cluster.faults()
    };
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if let Some(until) = cluster.unavailable_until()
        && Instant::now() < until
        && !crate::is_node_agent(token)
    {
        return ApiError::new(
            503,
            "ServiceUnavailable",
            "the API server is unavailable (injected outage)",
        )
        .into_response();
    }
    let target = match parse_target(&cluster, &path) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let query = query_map(&parts.uri);
    let verb = verb(&parts.method, &target, &query);
    let subject = if crate::is_node_agent(token) {
        crate::rbac::Subject::Admin
    } else {
        match cluster.subject(token) {
            Some(subject) => subject,
            None => return ApiError::new(401, "Unauthorized", "Unauthorized").into_response(),
        }
    };
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.rt.plural),
        None => target.rt.plural.clone(),
    };
    let namespace = if target.rt.namespaced {
        target.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let attributes = crate::rbac::Attributes {
        verb,
        group: &target.rt.group,
        resource,
        namespace: &namespace,
        name: target.name.as_deref(),
    };
    if let Err(e) = crate::rbac::authorize(&cluster.store(), &subject, &attributes) {
        return e.into_response();
    }
    if let Some(rate) = faults.error_rates.get(verb)
        && fastrand::f64() < *rate
    {
        return ApiError::new(500, "InternalError", format!("injected fault on {verb}"))
            .into_response();
    }
    let body = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return ApiError::new(400, "BadRequest", "unreadable body").into_response(),
    };
    if verb == "watch" {
        return watch(cluster, target, query, wants_metadata(&parts.headers));
    }
    if verb == "get" && target.subresource.as_deref() == Some("log") && target.rt.kind == "Pod" {
        return pod_log(&cluster, &target, &query);
    }
    let mode = match FieldValidation::parse(query.get("fieldValidation").map(String::as_str)) {
        Ok(mode) => mode,
        Err(e) => return e.into_response(),
    };
    // The API server names an update's manager by `fieldManager`, else by the client's
    // User-Agent up to its first '/'.
    let manager = query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .or_else(|| {
            parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.split('/').next().unwrap_or(ua).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let force = query.get("force").is_some_and(|f| parse_bool(f));
    let request = crate::structural::Request::new(mode, manager, force);
    let (result, warnings) = crate::structural::with_request(request, || match verb {
        "list" => list(&cluster, &target, &query, &parts.headers),
        "get" => get(&cluster, &target, &parts.headers),
        "create" => create(&cluster, &target, &body, &parts.headers),
        "update" => update(&cluster, &target, &body, &parts.headers),
        "patch" => patch(&cluster, &target, &body, &parts.headers, &query),
        "delete" => delete(&cluster, &target, &body, &query),
        _ => Err(ApiError::new(405, "MethodNotAllowed", "method not allowed")),
    });
    if let Ok((_, written)) = &result
        && target.rt.kind == "Event"
        && matches!(verb, "create" | "update" | "patch" | "delete")
    {
        mirror_event(&cluster, &target, verb, written);
    }
    let mut response = match result {
        Ok((status, value)) => (status, axum::Json(value)).into_response(),
        Err(e) => e.into_response(),
    };
    for warning in warnings {
        // As the API server writes them: code 299, no agent.
        if let Ok(value) =
            header::HeaderValue::from_str(&format!("299 - \"{}\"", warning.replace('"', "\\\"")))
        {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Write an Event written through one API into the other's storage, converted, so that both
/// serve it (see `events.rs`).
fn mirror_event(cluster: &Cluster, target: &Target, verb: &str, written: &Value) {
    let (group, convert): (&str, fn(&Value) -> Value) = if target.rt.group.is_empty() {
        ("events.k8s.io", crate::events::to_events_v1)
    } else {
        ("", crate::events::to_core)
    };
    let mut store = cluster.store();
    let Some(other) = store.find_type(group, "events").cloned() else {
        return;
    };
    let namespace = namespace_of(target);
    let Some(name) = written["metadata"]["name"].as_str().map(str::to_owned) else {
        return;
    };
    if verb == "delete" {
        let _ = store.delete(&other, &namespace, &name, None);
        return;
    }
    let mut mirrored = convert(written);
    // The server sets these for each stored copy.
    if let Some(meta) = mirrored["metadata"].as_object_mut() {
        for server_set in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            meta.remove(server_set);
        }
    }
    let version = other.versions[0].clone();
    if store.get(&other, &namespace, &name).is_ok() {
        let _ = store.replace(&other, &version, &namespace, &name, mirrored, false);
    } else {
        let _ = store.create(&other, &version, &namespace, mirrored);
    }
}

/// What the pod's container printed, as the node agent running it emulates it (the
/// pod-network MTU probe prints the MTU; other containers print nothing).
fn pod_log(cluster: &Cluster, target: &Target, query: &HashMap<String, String>) -> Response {
    let name = target.name.as_deref().unwrap_or("");
    let namespace = namespace_of(target);
    match cluster.store().get(&target.rt, &namespace, name) {
        Err(e) => e.into_response(),
        Ok(pod) => {
            let container = query
                .get("container")
                .cloned()
                .or_else(|| {
                    pod["spec"]["containers"][0]["name"]
                        .as_str()
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            let text = cluster
                .pod_log(&namespace, name, &container)
                .unwrap_or_default();
            ([(header::CONTENT_TYPE, "text/plain")], text).into_response()
        }
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

type Reply = Result<(StatusCode, Value), ApiError>;

fn parse_body(body: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::new(400, "BadRequest", "body is not UTF-8"))?;
        serde_saphyr::from_str(text)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid YAML: {e}")))
    } else if media_type == "application/vnd.kubernetes.protobuf" {
        crate::protobuf::decode(body).map_err(|e| {
            let status = if e.contains("send JSON") { 415 } else { 400 };
            let reason = if status == 415 {
                "UnsupportedMediaType"
            } else {
                "BadRequest"
            };
            ApiError::new(status, reason, format!("protobuf body: {e}"))
        })
    } else if media_type.is_empty() || media_type.ends_with("json") {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid JSON: {e}")))
    } else {
        // CBOR and others: a real server that cannot decode a media type answers 415.
        Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json (got {media_type})"
            ),
        ))
    }
}

fn namespace_of(target: &Target) -> String {
    if target.rt.namespaced {
        target.namespace.clone().unwrap_or_else(|| "default".into())
    } else {
        String::new()
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// Metadata-only requests (`metadata_watcher`, `kubectl get -o name`): the objects reduced to
/// `PartialObjectMetadata`, as the API server answers them.
fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn partial(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

fn list(
    cluster: &Cluster,
    target: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Reply {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| {
            ApiError::new(
                400,
                "BadRequest",
                format!("unable to parse labelSelector: {e}"),
            )
        })?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| {
            ApiError::new(
                400,
                "BadRequest",
                format!("unable to parse fieldSelector: {e}"),
            )
        })?;
    let store = cluster.store();
    let namespace = if target.rt.namespaced {
        target.namespace.as_deref()
    } else {
        None
    };
    let mut items = store.list(&target.rt, namespace, &labels, &fields);
    let rv = store.resource_version();
    drop(store);
    // `continue` carries the offset into the sorted list.
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let total = items.len();
    items = items.into_iter().skip(offset).take(limit).collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if offset.saturating_add(limit) < total {
        metadata["continue"] = json!((offset + limit).to_string());
        metadata["remainingItemCount"] = json!(total - offset - limit);
    }
    if wants_table(headers) {
        return Ok((StatusCode::OK, table(&target.rt, &items, metadata)));
    }
    if wants_metadata(headers) {
        let items: Vec<Value> = items.iter().map(partial).collect();
        return Ok((
            StatusCode::OK,
            json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata,
                "items": items,
            }),
        ));
    }
    Ok((
        StatusCode::OK,
        json!({
            "kind": format!("{}List", target.rt.kind),
            "apiVersion": target.rt.api_version(&target.version),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// Events as the API server prints them for `kubectl get events`.
fn events_table(items: &[Value], metadata: Value) -> Value {
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
fn table(rt: &ResourceType, items: &[Value], metadata: Value) -> Value {
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
fn json_path<'a>(item: &'a Value, path: &str) -> &'a Value {
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

fn age(item: &Value) -> String {
    since(&item["metadata"]["creationTimestamp"])
}

/// How long ago a timestamp was, as kubectl prints it (`<unknown>` without one).
fn since(timestamp: &Value) -> String {
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

fn get(cluster: &Cluster, target: &Target, headers: &HeaderMap) -> Reply {
    let name = target.name.as_deref().unwrap_or("");
    let object = cluster
        .store()
        .get(&target.rt, &namespace_of(target), name)?;
    if wants_table(headers) {
        return Ok((StatusCode::OK, table(&target.rt, &[object], json!({}))));
    }
    Ok((StatusCode::OK, object))
}

fn create(cluster: &Cluster, target: &Target, body: &Bytes, headers: &HeaderMap) -> Reply {
    let value = parse_body(body, headers)?;
    let created = cluster.create(&target.rt, &target.version, &namespace_of(target), value)?;
    Ok((StatusCode::CREATED, created))
}

fn update(cluster: &Cluster, target: &Target, body: &Bytes, headers: &HeaderMap) -> Reply {
    let value = parse_body(body, headers)?;
    let name = target.name.as_deref().unwrap_or("");
    let status_only = target.subresource.as_deref() == Some("status");
    let updated = cluster.with_store(|s| {
        let updated = s.replace(
            &target.rt,
            &target.version,
            &namespace_of(target),
            name,
            value,
            status_only,
        )?;
        // A replaced CRD serves its new versions and schema, as a patched one does.
        if target.rt.kind == "CustomResourceDefinition" && !status_only {
            s.register_crd(&updated);
        }
        Ok::<_, ApiError>(updated)
    })?;
    Ok((StatusCode::OK, updated))
}

fn patch(
    cluster: &Cluster,
    target: &Target,
    body: &Bytes,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Reply {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = match content_type.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => PatchKind::Merge,
        "application/json-patch+json" => PatchKind::Json,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchKind::Apply,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                ),
            ));
        }
    };
    let value = if kind == PatchKind::Apply {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::new(400, "BadRequest", "body is not UTF-8"))?;
        serde_saphyr::from_str(text)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid apply body: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid patch: {e}")))?
    };
    if kind == PatchKind::Apply && query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "PATCH requests with apply content types must set fieldManager",
        ));
    }
    let name = target.name.as_deref().unwrap_or("");
    let status_only = target.subresource.as_deref() == Some("status");
    let patched = cluster.patch(
        &target.rt,
        &target.version,
        &namespace_of(target),
        name,
        kind,
        value,
        status_only,
        query.get("fieldManager").map(String::as_str),
    )?;
    Ok((StatusCode::OK, patched))
}

fn delete(
    cluster: &Cluster,
    target: &Target,
    body: &Bytes,
    query: &HashMap<String, String>,
) -> Reply {
    let options: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).unwrap_or(json!({}))
    };
    let propagation = options["propagationPolicy"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| query.get("propagationPolicy").cloned())
        .unwrap_or_else(|| "Background".into());
    let grace = options["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let Some(name) = target.name.as_deref() else {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "deletecollection is not supported by the fake",
        ));
    };
    let deleted = cluster.delete(&target.rt, &namespace_of(target), name, &propagation, grace)?;
    Ok((StatusCode::OK, deleted))
}

/// A watch: events after `resourceVersion` (or the current state as ADDED events), then live
/// ones, filtered like a list, ended by `timeoutSeconds` or an injected drop.
fn watch(
    cluster: Arc<Cluster>,
    target: Target,
    query: HashMap<String, String>,
    metadata_only: bool,
) -> Response {
    let shape = move |object: &Value| {
        if metadata_only {
            partial(object)
        } else {
            object.clone()
        }
    };
    let labels =
        match LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or("")) {
            Ok(l) => l,
            Err(e) => return ApiError::new(400, "BadRequest", e).into_response(),
        };
    let fields =
        match FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or("")) {
            Ok(f) => f,
            Err(e) => return ApiError::new(400, "BadRequest", e).into_response(),
        };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| parse_bool(b));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let namespace = if target.rt.namespaced {
        target.namespace.clone()
    } else {
        None
    };
    let type_key = target.rt.key();
    let api_version = target.rt.api_version(&target.version);
    let kind = target.rt.kind.clone();
    let requested: Option<u64> = query
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0);
    // A streaming list: the current objects, then a bookmark marking their end.
    let initial_events = query
        .get("sendInitialEvents")
        .is_some_and(|b| parse_bool(b));
    if initial_events {
        if query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
            return ApiError::new(
                422,
                "Invalid",
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )
            .into_response();
        }
        if !bookmarks {
            return ApiError::new(
                422,
                "Invalid",
                "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
            )
            .into_response();
        }
    }

    let store = cluster.store();
    let receiver = store.events.subscribe();
    let mut first: Vec<Value> = Vec::new();
    let mut last_rv = store.resource_version();
    match requested {
        Some(rv) if rv < store.oldest_resumable() => {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {rv} ({})", store.oldest_resumable()), "reason": "Expired", "code": 410}});
            drop(store);
            return stream_response(futures::stream::iter(vec![gone]).boxed());
        }
        Some(rv) if !initial_events => {
            for e in store.backlog(rv) {
                if matches(&e, &type_key, namespace.as_deref(), &labels, &fields) {
                    first.push(json!({"type": e.kind, "object": shape(&e.object)}));
                }
            }
        }
        _ => {
            for object in store.list(&target.rt, namespace.as_deref(), &labels, &fields) {
                first.push(json!({"type": "ADDED", "object": shape(&object)}));
            }
            if initial_events {
                first.push(
                    json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": last_rv.to_string(),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}}),
                );
            }
        }
    }
    if let Some(rv) = requested.filter(|_| !initial_events) {
        last_rv = last_rv.max(rv);
    }
    drop(store);

    let drop_after = cluster.faults().drop_watches_after_ms;
    let deadline = tokio::time::Instant::now()
        + if drop_after > 0 {
            timeout.min(Duration::from_millis(drop_after))
        } else {
            timeout
        };
    let mut dropped = cluster.watch_drops();
    let live = BroadcastStream::new(receiver)
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(move |event| {
            let out = event.ok().and_then(|e| {
                (e.rv > last_rv && matches(&e, &type_key, namespace.as_deref(), &labels, &fields))
                    .then(|| json!({"type": e.kind, "object": shape(&e.object)}))
            });
            futures::future::ready(out)
        });
    let bookmark_cluster = cluster.clone();
    let bookmark_stream = futures::stream::unfold((), move |()| {
        let cluster = bookmark_cluster.clone();
        let api_version = api_version.clone();
        let kind = kind.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rv = cluster.store().resource_version();
            Some((
                json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}}}),
                (),
            ))
        }
    });
    let events = if bookmarks {
        futures::stream::select(live, bookmark_stream).boxed()
    } else {
        live.boxed()
    };
    let ended = async move {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {},
            _ = dropped.changed() => {},
        }
    };
    let stream = futures::stream::iter(first)
        .chain(events)
        .take_until(Box::pin(ended))
        .boxed();
    stream_response(stream)
}

fn matches(
    e: &WatchEvent,
    type_key: &str,
    namespace: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> bool {
    e.type_key == type_key
        && namespace.is_none_or(|n| n == e.namespace)
        && labels.matches(&e.object)
        && fields.matches(&e.object)
}

fn stream_response(events: futures::stream::BoxStream<'static, Value>) -> Response {
    let body = events.map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
