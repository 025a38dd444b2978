//! `POST /webhooks/bitbucket`: Bitbucket's deliveries, verified and read, waking the pools
//! whose repositories they concern. A webhook only makes a pool look early; polling stays the
//! safety net, so a lost or refused delivery costs latency, never correctness.
//!
//! Every delivery is hostile until proven signed, and costs bounded work whatever it is:
//! the source's rate is checked before anything is read, the body is read no further than
//! 1 MiB, and the signature is checked before the body is parsed.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use bbrunner_core::demand::Change;
use bbrunner_core::webhook::{self, PipelineEvent, WebhookError};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::demand::Demand;
use super::metrics::{DeliveryLabels, Metrics};
use super::serve::Peer;

/// The largest body read: far past any Bitbucket payload.
pub const MAX_BODY: usize = 1 << 20;
/// Deliveries a source may make per second, and at once.
const RATE_PER_SECOND: f64 = 20.0;
const BURST: f64 = 100.0;
/// Sources and delivery ids remembered at most (least recent forgotten first).
const MAX_SOURCES: usize = 4096;
const MAX_DELIVERIES: usize = 16_384;

pub struct Webhooks {
    secret: SecretString,
    demand: Arc<Demand>,
    metrics: Arc<Metrics>,
    /// Token buckets by source: tokens and when last filled (the operator's clock).
    buckets: Mutex<HashMap<IpAddr, (f64, f64)>>,
    /// Deliveries handled, by `X-Request-UUID`, with the attempt seen.
    seen: Mutex<(HashMap<String, u32>, VecDeque<String>)>,
}

impl Webhooks {
    pub fn new(secret: SecretString, demand: Arc<Demand>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            secret,
            demand,
            metrics,
            buckets: Mutex::new(HashMap::new()),
            seen: Mutex::new((HashMap::new(), VecDeque::new())),
        })
    }

    /// Take one token from `source`'s bucket; `false` when it is empty.
    fn admit(&self, source: IpAddr) -> bool {
        let now = self.demand.now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            // Full buckets are the ones nobody is spending: forget those.
            buckets.retain(|_, (tokens, at)| *tokens + (now - *at) * RATE_PER_SECOND < BURST);
            if buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (tokens, at) = buckets.entry(source).or_insert((BURST, now));
        *tokens = (*tokens + (now - *at).max(0.0) * RATE_PER_SECOND).min(BURST);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// Record delivery `id` at `attempt`: whether it is new, a retry of one handled (a higher
    /// attempt: answered as before), or a replay.
    fn first_time(&self, id: &str, attempt: u32) -> Seen {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (attempts, order) = &mut *seen;
        match attempts.get_mut(id) {
            Some(last) if attempt > *last => {
                *last = attempt;
                Seen::Retry
            }
            Some(_) => Seen::Replay,
            None => {
                if order.len() >= MAX_DELIVERIES
                    && let Some(oldest) = order.pop_front()
                {
                    attempts.remove(&oldest);
                }
                attempts.insert(id.to_owned(), attempt);
                order.push_back(id.to_owned());
                Seen::New
            }
        }
    }

    fn verified(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let given = headers
            .get("X-Hub-Signature")
            .and_then(|v| v.to_str().ok())
            .ok_or(Refusal::Unsigned)?;
        let tag = given
            .strip_prefix("sha256=")
            .and_then(hex)
            .ok_or(Refusal::BadSignature)?;
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            self.secret.expose_secret().as_bytes(),
        );
        // Constant time: how much of a forged signature matched is not told by the timing.
        aws_lc_rs::hmac::verify(&key, body, &tag).map_err(|_| Refusal::BadSignature)
    }
}

enum Seen {
    New,
    Retry,
    Replay,
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Why a delivery was refused: each a 4xx that says what to fix.
enum Refusal {
    RateLimited,
    TooLarge,
    Unsigned,
    BadSignature,
    Malformed(WebhookError),
    Replayed,
    Stale,
}

impl Refusal {
    fn outcome(&self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Malformed(WebhookError::UnknownEvent(_)) => "unknown_event",
            Self::Malformed(_) => "malformed",
            Self::Replayed => "replayed",
            Self::Stale => "stale",
        }
    }

    fn response(&self) -> Response {
        let (status, message) = match self {
            Self::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many deliveries from this source; slow down".to_owned(),
            ),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes; no Bitbucket payload is"),
            ),
            Self::Unsigned => (
                StatusCode::UNAUTHORIZED,
                "no X-Hub-Signature: give the webhook the secret bbrunner was given (--webhook-secret-file)".to_owned(),
            ),
            Self::BadSignature => (
                StatusCode::UNAUTHORIZED,
                "X-Hub-Signature does not match the body: the webhook's secret differs from bbrunner's".to_owned(),
            ),
            Self::Malformed(error) => (StatusCode::BAD_REQUEST, error.to_string()),
            Self::Replayed => (
                StatusCode::CONFLICT,
                "this delivery (X-Request-UUID) was handled already".to_owned(),
            ),
            Self::Stale => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "the status is over an hour old; an old delivery changes nothing".to_owned(),
            ),
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if matches!(self, Self::RateLimited) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub fn router(webhooks: Arc<Webhooks>) -> Router {
    Router::new()
        .route("/webhooks/bitbucket", post(receive))
        .with_state(webhooks)
}

/// The event label of a delivery: one of those read, or `other` (bounded series).
fn event_label(headers: &HeaderMap) -> (String, String) {
    let event = headers
        .get("X-Event-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let label = if webhook::EVENTS.contains(&event.as_str()) {
        event.clone()
    } else {
        "other".to_owned()
    };
    (event, label)
}

async fn receive(
    State(webhooks): State<Arc<Webhooks>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (event, label) = event_label(&headers);
    let count = |outcome: &str| {
        webhooks
            .metrics
            .webhook_deliveries
            .get_or_create(&DeliveryLabels {
                event: label.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
    };
    match handle(&webhooks, peer.ip(), &event, &headers, body).await {
        Ok((outcome, response)) => {
            count(outcome);
            response
        }
        Err(refusal) => {
            count(refusal.outcome());
            // A forged or broken delivery is worth a warning; a flood of them is rate-limited
            // before it gets here, and a rate-limited one is only counted.
            if !matches!(refusal, Refusal::RateLimited | Refusal::Replayed) {
                tracing::warn!(source = %peer.ip(), event = %label, outcome = refusal.outcome(), "webhook delivery refused");
            }
            refusal.response()
        }
    }
}

async fn handle(
    webhooks: &Webhooks,
    source: IpAddr,
    event: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(&'static str, Response), Refusal> {
    if !webhooks.admit(source) {
        return Err(Refusal::RateLimited);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(Refusal::TooLarge);
    }
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| Refusal::TooLarge)?;
    webhooks.verified(headers, &body)?;
    let events = webhook::parse(event, &body).map_err(Refusal::Malformed)?;
    let request = headers
        .get("X-Request-UUID")
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128);
    let attempt = headers
        .get("X-Attempt-Number")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if let Some(id) = request {
        match webhooks.first_time(id, attempt) {
            Seen::New => {}
            // Bitbucket trying again after an answer it did not get: answered as before.
            Seen::Retry => {
                return Ok((
                    "duplicate",
                    (StatusCode::OK, Json(json!({"duplicate": true}))).into_response(),
                ));
            }
            Seen::Replay => return Err(Refusal::Replayed),
        }
    }
    let now = webhooks.demand.now();
    let mut news = Vec::new();
    let mut stale = false;
    {
        let mut tracker = webhooks.demand.tracker();
        for event in &events {
            match tracker.apply(event, now) {
                Change::New => news.push(event),
                Change::Known => {}
                Change::Stale => stale = true,
            }
        }
    }
    if stale && news.is_empty() {
        return Err(Refusal::Stale);
    }
    let mut woken = 0;
    for news in &news {
        let repository = match news {
            PipelineEvent::Pushed { repository, .. } | PipelineEvent::Status { repository, .. } => {
                repository
            }
        };
        woken += webhooks.demand.wake_for(repository);
    }
    if news.is_empty() {
        return Ok((
            "known",
            (StatusCode::OK, Json(json!({"known": true}))).into_response(),
        ));
    }
    tracing::debug!(%event, pools = woken, "webhook: pipelines ahead");
    Ok((
        "accepted",
        (StatusCode::ACCEPTED, Json(json!({"pools_woken": woken}))).into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use futures::StreamExt;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::operator::clock::Clock;
    use crate::operator::serve::{Limits, serve};

    const SECRET: &str = "webhook-secret";
    const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

    struct Receiver {
        url: String,
        addr: SocketAddr,
        webhooks: Arc<Webhooks>,
        http: reqwest::Client,
        _stop: tokio_util::sync::DropGuard,
    }

    async fn receiver() -> Receiver {
        let demand = Arc::new(Demand::new(Clock::wall()));
        let webhooks = Webhooks::new(SECRET.into(), demand, Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            router(webhooks.clone()),
            Limits::DEFAULT,
            stop.clone(),
        ));
        Receiver {
            url: format!("http://{addr}/webhooks/bitbucket"),
            addr,
            webhooks,
            http: reqwest::Client::new(),
            _stop: stop.drop_guard(),
        }
    }

    fn sign(body: &[u8]) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    fn push_body(commit: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "repository": {"full_name": "acme/app"},
            "push": {"changes": [{"new": {"type": "branch", "name": "main", "target": {"hash": commit}}}]},
        }))
        .unwrap()
    }

    impl Receiver {
        async fn deliver(
            &self,
            event: &str,
            body: Vec<u8>,
            signature: Option<String>,
            request: &str,
            attempt: u32,
        ) -> (u16, Value) {
            let mut post = self
                .http
                .post(&self.url)
                .header("X-Event-Key", event)
                .header("X-Request-UUID", request)
                .header("X-Attempt-Number", attempt.to_string())
                .body(body);
            if let Some(signature) = signature {
                post = post.header("X-Hub-Signature", signature);
            }
            let response = post.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }

        async fn signed(&self, event: &str, body: Vec<u8>, request: &str) -> (u16, Value) {
            let signature = sign(&body);
            self.deliver(event, body, Some(signature), request, 1).await
        }

        fn counted(&self, outcome: &str) -> bool {
            self.webhooks.metrics.encode().lines().any(|l| {
                l.contains("webhook_deliveries")
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && !l.ends_with(" 0")
            })
        }
    }

    #[tokio::test]
    async fn a_signed_push_is_accepted_once_and_wakes_the_pools_of_its_repository() {
        let r = receiver().await;
        r.webhooks.demand.watch("ci", "builds", "acme", None);
        r.webhooks
            .demand
            .watch("ci", "other", "acme", Some("elsewhere"));
        let resource = kube::api::ApiResource::erase::<crate::operator::crd::RunnerPool>(&());
        let mut wakes = Box::pin(r.webhooks.demand.wakes(Some("ci".into()), resource));
        let (status, body) = r.signed("repo:push", push_body(HASH), "d1").await;
        assert_eq!((status, body["pools_woken"].as_u64()), (202, Some(1)));
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), wakes.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(woken.name, "builds");
        assert_eq!(r.webhooks.demand.tracker().unread("acme", None).len(), 1);
        // Bitbucket's retry of the same delivery: answered as before, changing nothing.
        let retry = r
            .deliver(
                "repo:push",
                push_body(HASH),
                Some(sign(&push_body(HASH))),
                "d1",
                2,
            )
            .await;
        assert_eq!(retry.0, 200);
        // The same delivery again at the same attempt: a replay.
        assert_eq!(r.signed("repo:push", push_body(HASH), "d1").await.0, 409);
        // Another delivery of the same push: known, nothing changes.
        let (status, body) = r.signed("repo:push", push_body(HASH), "d2").await;
        assert_eq!((status, body["known"].as_bool()), (200, Some(true)));
        assert_eq!(r.webhooks.demand.tracker().len(), 1);
        for outcome in ["accepted", "duplicate", "replayed", "known"] {
            assert!(r.counted(outcome), "{outcome} not counted");
        }
    }

    #[tokio::test]
    async fn unsigned_forged_and_malformed_deliveries_are_refused_with_what_to_fix() {
        let r = receiver().await;
        let (status, body) = r.deliver("repo:push", push_body(HASH), None, "u1", 1).await;
        assert_eq!(status, 401);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("--webhook-secret-file")
        );
        let forged = r
            .deliver(
                "repo:push",
                push_body(HASH),
                Some(sign(b"other body")),
                "u2",
                1,
            )
            .await;
        assert_eq!(forged.0, 401);
        let garbled = r
            .deliver(
                "repo:push",
                push_body(HASH),
                Some("sha256=zz".into()),
                "u3",
                1,
            )
            .await;
        assert_eq!(garbled.0, 401);
        let (status, body) = r.signed("repo:push", b"{not json".to_vec(), "m1").await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("not JSON"));
        let (status, body) = r.signed("issue:created", b"{}".to_vec(), "m2").await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("repository push"));
        let missing =
            serde_json::to_vec(&json!({"repository": {"full_name": "acme/app"}})).unwrap();
        let (status, body) = r.signed("repo:push", missing, "m3").await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().starts_with("push.changes"));
        let old = serde_json::to_vec(&json!({"repository": {"full_name": "acme/app"},
            "commit_status": {"state": "SUCCESSFUL", "commit": {"hash": HASH},
                "updated_on": "2020-01-01T00:00:00Z"}}))
        .unwrap();
        assert_eq!(
            r.signed("repo:commit_status_updated", old, "s1").await.0,
            422
        );
        assert!(
            r.webhooks.demand.tracker().is_empty(),
            "nothing refused was kept"
        );
        for outcome in [
            "unsigned",
            "bad_signature",
            "malformed",
            "unknown_event",
            "stale",
        ] {
            assert!(r.counted(outcome), "{outcome} not counted");
        }
    }

    #[tokio::test]
    async fn bodies_over_a_mebibyte_are_refused_unread_declared_or_not() {
        let r = receiver().await;
        let huge = vec![b' '; MAX_BODY + 1];
        let declared = r.deliver("repo:push", huge, None, "big", 1).await;
        assert_eq!(declared.0, 413);
        // Chunked, with no length to judge by: read up to the limit, then refused.
        let mut stream = tokio::net::TcpStream::connect(r.addr).await.unwrap();
        let head = "POST /webhooks/bitbucket HTTP/1.1\r\nHost: x\r\nX-Event-Key: repo:push\r\nTransfer-Encoding: chunked\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut answer = String::new();
        for _ in 0..(MAX_BODY / chunk.len() + 2) {
            let frame = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            if stream.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = stream.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.80}");
    }

    #[tokio::test]
    async fn a_source_past_its_rate_is_told_to_slow_down() {
        let r = receiver().await;
        let mut limited = None;
        for i in 0..(BURST as usize + 20) {
            let (status, _) = r
                .deliver("repo:push", b"{}".to_vec(), None, &format!("r{i}"), 1)
                .await;
            if status == 429 {
                limited = Some(i);
                break;
            }
        }
        let at = limited.expect("never rate-limited");
        assert!(at >= BURST as usize - 1, "limited after {at}");
        assert!(r.counted("rate_limited"));
    }
}
