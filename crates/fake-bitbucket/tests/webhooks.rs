//! The fake's webhook deliveries, received by a small server of the test's own: signed as
//! Bitbucket signs them, retried after a server error, and each fault mode (drop, duplicate,
//! delay, reorder) doing what it says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use fake_bitbucket::{
    FakeBitbucket, FakeConfig, PipelineRequest, PipelineStepRequest, WebhookFaults, WebhookTarget,
    signature,
};

#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    key: String,
    request_uuid: String,
    attempt: String,
    signature: Option<String>,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<Received>>,
    /// Answer this many deliveries with 500 first.
    failures_left: AtomicUsize,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    receiver.received.lock().unwrap().push(Received {
        at: Instant::now(),
        key: header("X-Event-Key").unwrap_or_default(),
        request_uuid: header("X-Request-UUID").unwrap_or_default(),
        attempt: header("X-Attempt-Number").unwrap_or_default(),
        signature: header("X-Hub-Signature"),
        body,
    });
    let failing = receiver
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

struct Setup {
    fake: FakeBitbucket,
    receiver: Arc<Receiver>,
}

const SECRET: &str = "shared-secret";

async fn setup(faults: WebhookFaults) -> Setup {
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let fake = FakeBitbucket::start(FakeConfig {
        workspaces: vec!["acme".into()],
        repositories: vec![("acme".into(), "app".into())],
        webhook: WebhookTarget {
            url: Some(url),
            secret: Some(SECRET.into()),
            faults,
        },
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    Setup { fake, receiver }
}

/// Push a one-step pipeline (nothing runs it: Bitbucket fails it at once, so it also ends):
/// repo:push, commit_status_created, commit_status_updated.
fn push(fake: &FakeBitbucket) {
    fake.create_pipeline(&PipelineRequest {
        workspace: "acme".into(),
        repository: "app".into(),
        branch: "main".into(),
        pipeline: vec![vec![PipelineStepRequest {
            name: "build".into(),
            duration: 1.0,
            labels: Vec::new(),
            size: None,
        }]],
        definition: None,
    })
    .unwrap();
}

async fn received(receiver: &Receiver, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = receiver.received.lock().unwrap().clone();
        if got.len() >= count || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn keys(got: &[Received]) -> Vec<&str> {
    got.iter().map(|r| r.key.as_str()).collect()
}

#[tokio::test]
async fn deliveries_are_signed_and_a_server_error_is_retried_with_the_same_id() {
    let Setup { fake, receiver } = setup(WebhookFaults::default()).await;
    receiver.failures_left.store(1, Ordering::SeqCst);
    push(&fake);
    let got = received(&receiver, 4).await;
    assert_eq!(
        keys(&got),
        [
            "repo:push",
            "repo:push",
            "repo:commit_status_created",
            "repo:commit_status_updated"
        ]
    );
    for r in &got {
        assert_eq!(
            r.signature.as_deref(),
            Some(signature(SECRET, &r.body).as_str())
        );
    }
    // The retry is the same delivery, attempted again.
    assert_eq!(got[0].request_uuid, got[1].request_uuid);
    assert_eq!(
        (got[0].attempt.as_str(), got[1].attempt.as_str()),
        ("1", "2")
    );
    assert_ne!(got[1].request_uuid, got[2].request_uuid);
    let push: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(push["push"]["changes"][0]["new"]["name"], "main");
    assert_eq!(push["repository"]["full_name"], "acme/app");
}

#[tokio::test]
async fn dropped_deliveries_never_arrive_and_are_recorded() {
    let Setup { fake, receiver } = setup(WebhookFaults {
        drop_rate: 1.0,
        ..WebhookFaults::default()
    })
    .await;
    push(&fake);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received.lock().unwrap().is_empty());
    let dropped = fake.with_world(|w, _| w.deliveries.iter().filter(|d| d.dropped).count());
    assert_eq!(dropped, 3);
}

#[tokio::test]
async fn duplicated_deliveries_arrive_twice_with_one_id() {
    let Setup { fake, receiver } = setup(WebhookFaults {
        duplicate_rate: 1.0,
        ..WebhookFaults::default()
    })
    .await;
    push(&fake);
    let got = received(&receiver, 6).await;
    assert_eq!(got.len(), 6);
    for pair in got.chunks(2) {
        assert_eq!(pair[0].request_uuid, pair[1].request_uuid);
        assert_eq!(pair[0].body, pair[1].body);
    }
}

#[tokio::test]
async fn delayed_deliveries_arrive_late() {
    let Setup { fake, receiver } = setup(WebhookFaults {
        delay_ms: 400,
        ..WebhookFaults::default()
    })
    .await;
    let pushed = Instant::now();
    push(&fake);
    let got = received(&receiver, 3).await;
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|r| r.at - pushed >= Duration::from_millis(400))
    );
}

#[tokio::test]
async fn reordered_deliveries_arrive_after_the_one_that_followed_them() {
    let Setup { fake, receiver } = setup(WebhookFaults {
        reorder_rate: 1.0,
        ..WebhookFaults::default()
    })
    .await;
    push(&fake);
    let got = received(&receiver, 3).await;
    // The push is held back and overtaken; what is held goes out after the next event.
    let arrived = keys(&got);
    assert_eq!(arrived.len(), 3, "{arrived:?}");
    assert_ne!(arrived[0], "repo:push", "{arrived:?}");
    let mut sorted = arrived.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "repo:commit_status_created",
            "repo:commit_status_updated",
            "repo:push"
        ]
    );
}
