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
use tokio::sync::broadcast;

use super::*;

/// A watch: events after `resourceVersion` (or the current state as ADDED events), then live
/// ones, filtered like a list, ended by `timeoutSeconds` or an injected drop.
pub(crate) fn watch(
    cluster: Arc<Cluster>,
    target: Target,
    query: HashMap<String, String>,
    metadata_only: bool,
) -> Response {
    let shape = |object: &Value| shaped(object, metadata_only);
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

    let filter = Arc::new(Filter {
        type_key: target.rt.key(),
        namespace,
        labels,
        fields,
    });
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
                    if filter.matches(&e) {
                        first.push(json!({"type": e.kind, "object": shape(&e.object)}));
                    }
                }
                (resumed.live, resumed.rv.max(rv))
            }
        },
        _ => {
            // Subscribed first: the list's version is where the live events take over.
            let receiver = store.subscribe();
            let (objects, rv) = store.list_at(
                &target.rt,
                filter.namespace.as_deref(),
                &filter.labels,
                &filter.fields,
            );
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
    let live = Live {
        receiver,
        seen: last_rv,
        bookmarks: bookmarks.then(|| {
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY)
        }),
        filter,
        bookmark_type: json!({"kind": kind, "apiVersion": api_version}),
        metadata_only,
    };
    let events = futures::stream::unfold(live, |mut live| async move {
        let next = live.next().await?;
        Some((next, live))
    })
    .boxed();
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

/// An object as the watch sends it: whole, or its metadata alone.
fn shaped(object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        partial(object)
    } else {
        object.clone()
    }
}

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

/// A watch's live part: the events it reads, in the store's order, and its bookmark timer.
struct Live {
    receiver: broadcast::Receiver<Arc<WatchEvent>>,
    /// The resourceVersion of the last event read, sent or filtered out.
    seen: u64,
    bookmarks: Option<tokio::time::Interval>,
    filter: Arc<Filter>,
    /// A bookmark's kind and apiVersion.
    bookmark_type: Value,
    metadata_only: bool,
}

impl Live {
    /// The next event to send, or `None` once the watch falls behind the log (the client
    /// resumes from what it has seen, or lists again once that has expired).
    async fn next(&mut self) -> Option<Value> {
        loop {
            tokio::select! {
                received = self.receiver.recv() => {
                    let event = received.ok()?;
                    if event.rv <= self.seen {
                        continue;
                    }
                    self.seen = event.rv;
                    if self.filter.matches(&event) {
                        let object = shaped(&event.object, self.metadata_only);
                        return Some(json!({"type": event.kind, "object": object}));
                    }
                }
                _ = tick(&mut self.bookmarks) => {
                    // The version this stream has read up to, not the store's: a client
                    // resuming from a bookmark must not skip an event still on its way.
                    let mut object = self.bookmark_type.clone();
                    object["metadata"] = json!({"resourceVersion": self.seen.to_string()});
                    return Some(json!({"type": "BOOKMARK", "object": object}));
                }
            }
        }
    }
}

/// The next bookmark's time; never, for a watch that did not ask for them.
async fn tick(bookmarks: &mut Option<tokio::time::Interval>) {
    match bookmarks {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Which events a watch sends: its type's, in its namespace, matching its selectors.
struct Filter {
    type_key: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, e: &WatchEvent) -> bool {
        e.type_key == self.type_key
            && self.namespace.as_deref().is_none_or(|n| n == e.namespace)
            && self.labels.matches(&e.object)
            && self.fields.matches(&e.object)
    }
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

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::cluster::ClusterConfig;

    /// A client reading too slowly loses events from the broadcast; its watch must then end
    /// (the client resumes from what it has seen) and never send a bookmark past an event it
    /// lost, or the client skips that event for good.
    #[tokio::test]
    async fn a_watch_that_falls_behind_ends_without_a_bookmark_past_what_it_lost() {
        let cluster = Arc::new(Cluster::new(ClusterConfig::default()));
        let target = parse_target(&cluster, "/api/v1/namespaces/default/configmaps").unwrap();
        let rt = target.rt.clone();
        let from = cluster.store().resource_version();
        let query: HashMap<String, String> = [
            ("watch", "true".to_owned()),
            ("allowWatchBookmarks", "true".to_owned()),
            ("resourceVersion", from.to_string()),
            ("timeoutSeconds", "60".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut body = watch(cluster.clone(), target, query, false)
            .into_body()
            .into_data_stream();
        // More writes than the broadcast holds, while the client reads nothing.
        let mut written = Vec::new();
        for i in 0..9000 {
            let created = cluster
                .store()
                .create(
                    &rt,
                    "v1",
                    "default",
                    json!({"metadata": {"name": format!("cm-{i}")}}),
                )
                .unwrap();
            written.push(
                created["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
        }

        let mut delivered: Vec<u64> = Vec::new();
        let mut pending = Vec::new();
        let read = async {
            while let Some(chunk) = body.next().await {
                pending.extend_from_slice(&chunk.unwrap());
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let event: Value = serde_json::from_slice(&line).unwrap();
                    let rv: u64 = event["object"]["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    if event["type"] == "BOOKMARK" {
                        let lost = written
                            .iter()
                            .filter(|w| **w <= rv && !delivered.contains(w))
                            .count();
                        assert_eq!(
                            lost, 0,
                            "a bookmark at {rv} passes {lost} events never sent"
                        );
                    } else {
                        delivered.push(rv);
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a watch that fell behind ends");
        assert!(
            delivered.len() < written.len(),
            "the watch did not fall behind: {} of {} events delivered",
            delivered.len(),
            written.len()
        );
    }
}
