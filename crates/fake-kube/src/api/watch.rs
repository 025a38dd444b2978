//! Watches as the API server streams them: resume from a resourceVersion, streaming lists, 410
//! Expired beyond the event log, bookmarks, timeouts and injected drops.

use crate::cluster::Cluster;
use crate::selector::{FieldSelector, LabelSelector};
use crate::types::{ApiError, WatchEvent};
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;

use super::*;

/// A watch: events after `resourceVersion` (or the current state as ADDED events), then live
/// ones, filtered like a list, ended by `timeoutSeconds` or an injected drop.
pub(crate) fn watch(
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
    let mut first: Vec<Value> = Vec::new();
    let (receiver, last_rv) = match requested {
        Some(rv) if !initial_events => match store.resume(rv) {
            Err(oldest) => {
                let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {rv} ({oldest})"), "reason": "Expired", "code": 410}});
                return stream_response(futures::stream::iter(vec![gone]).boxed());
            }
            Ok(resumed) => {
                for e in resumed.backlog {
                    if matches(&e, &type_key, namespace.as_deref(), &labels, &fields) {
                        first.push(json!({"type": e.kind, "object": shape(&e.object)}));
                    }
                }
                (resumed.live, resumed.rv.max(rv))
            }
        },
        _ => {
            // Subscribed first: the list's version is where the live events take over.
            let receiver = store.subscribe();
            let (objects, rv) = store.list_at(&target.rt, namespace.as_deref(), &labels, &fields);
            for object in objects {
                first.push(json!({"type": "ADDED", "object": shape(&object)}));
            }
            if initial_events {
                first.push(
                    json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": rv.to_string(),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}}),
                );
            }
            (receiver, rv)
        }
    };

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

pub(crate) fn matches(
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

pub(crate) fn stream_response(events: futures::stream::BoxStream<'static, Value>) -> Response {
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
