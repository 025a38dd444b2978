//! The REST face: Kubernetes paths and verbs over the store, discovery, watch streams, and
//! fault injection; plus the `/_fake/` control API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::cluster::{Cluster, Faults};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::PatchRequest;
use crate::types::{ApiError, FieldValidation, PatchKind, ResourceType};

mod tables;
mod watch;
use tables::*;
use watch::*;

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
    if let Err(e) = crate::rbac::authorize(cluster.store(), &subject, &attributes) {
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
    let store = cluster.store();
    let Some(other) = store.find_type(group, "events") else {
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
    let (mut items, rv) = store.list_at(&target.rt, namespace, &labels, &fields);
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
    let store = cluster.store();
    let updated = store.replace(
        &target.rt,
        &target.version,
        &namespace_of(target),
        name,
        value,
        status_only,
    )?;
    // A replaced CRD serves its new versions and schema, as a patched one does.
    if target.rt.kind == "CustomResourceDefinition" && !status_only {
        store.register_crd(&updated);
    }
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
    let patched = cluster.patch(PatchRequest {
        rt: &target.rt,
        version: &target.version,
        namespace: &namespace_of(target),
        name,
        kind,
        body: value,
        status_only,
        field_manager: query.get("fieldManager").map(String::as_str),
    })?;
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
