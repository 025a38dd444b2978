//! Webhook deliveries as Bitbucket makes them: a signed POST per event to the configured URL,
//! retried on a server error or a lost connection, and the faults a network adds on the way
//! (drop, duplicate, delay, reorder), each delivery recorded.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::App;
use crate::world::{DeliveryRecord, WebhookEvent, WebhookFaults, WebhookTarget, request_uuid};

/// Attempts per delivery: Bitbucket retries a failed one a few times.
const ATTEMPTS: u32 = 3;
/// An event held back for reordering goes out after this even if nothing follows it.
const HOLD_AT_MOST: Duration = Duration::from_millis(500);
const HOOK_UUID: &str = "{6b3f0c16-5a0e-4d4c-9a7f-0f5e1c2d3b4a}";

/// `sha256=` and the hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

struct Delivery {
    event: WebhookEvent,
    request_uuid: String,
}

impl Delivery {
    async fn send(&self, app: &App, client: &reqwest::Client, target: &WebhookTarget) {
        let Some(url) = &target.url else {
            return;
        };
        let body = serde_json::to_vec(&self.event.body).expect("JSON values serialize");
        for attempt in 1..=ATTEMPTS {
            let mut request = client
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Event-Key", &self.event.key)
                .header("X-Hook-UUID", HOOK_UUID)
                .header("X-Request-UUID", &self.request_uuid)
                .header("X-Attempt-Number", attempt.to_string())
                .body(body.clone());
            if let Some(secret) = &target.secret {
                request = request.header("X-Hub-Signature", signature(secret, &body));
            }
            let status = request.send().await.ok().map(|r| r.status().as_u16());
            app.world().deliveries.push(DeliveryRecord {
                event: self.event.key.clone(),
                request_uuid: self.request_uuid.clone(),
                attempt,
                status,
                dropped: false,
            });
            // A client error is the receiver's verdict on the delivery: not retried.
            if status.is_some_and(|s| s < 500 && s != 429) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }
}

/// Hand each new event to the configured URL, with the configured faults, until stopped.
pub(super) async fn deliver(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let mut held: Option<(Delivery, tokio::time::Instant)> = None;
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (events, target) = {
            let mut world = app.world();
            (world.take_webhooks(), world.webhook.clone())
        };
        if target.url.is_none() {
            continue;
        }
        let faults = &target.faults;
        let mut ready = Vec::new();
        for event in events {
            let delivery = Delivery {
                event,
                request_uuid: request_uuid(),
            };
            if fastrand::f64() < faults.drop_rate {
                app.world().deliveries.push(DeliveryRecord {
                    event: delivery.event.key.clone(),
                    request_uuid: delivery.request_uuid.clone(),
                    attempt: 0,
                    status: None,
                    dropped: true,
                });
                continue;
            }
            if held.is_none() && fastrand::f64() < faults.reorder_rate {
                held = Some((delivery, tokio::time::Instant::now()));
                continue;
            }
            ready.push(delivery);
            // What was held back goes out after the event that overtook it.
            if let Some((overtaken, _)) = held.take() {
                ready.push(overtaken);
            }
        }
        if held
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= HOLD_AT_MOST)
        {
            ready.extend(held.take().map(|(d, _)| d));
        }
        for delivery in ready {
            let copies = if fastrand::f64() < faults.duplicate_rate {
                2
            } else {
                1
            };
            let delay = Duration::from_millis(faults.delay_ms);
            if delay.is_zero() {
                for _ in 0..copies {
                    delivery.send(&app, &client, &target).await;
                }
            } else {
                let (app, client, target) = (app.clone(), client.clone(), target.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    for _ in 0..copies {
                        delivery.send(&app, &client, &target).await;
                    }
                });
            }
        }
    }
}

#[derive(Serialize)]
struct ShownTarget<'a> {
    url: &'a Option<String>,
    signed: bool,
    faults: &'a WebhookFaults,
}

pub(super) async fn fake_webhooks(State(app): State<Arc<App>>) -> Json<Value> {
    let world = app.world();
    let target = &world.webhook;
    Json(json!({
        "target": ShownTarget {
            url: &target.url,
            signed: target.secret.is_some(),
            faults: &target.faults,
        },
        "deliveries": world.deliveries,
    }))
}

pub(super) async fn fake_set_webhooks(
    State(app): State<Arc<App>>,
    Json(target): Json<WebhookTarget>,
) -> Json<Value> {
    app.world().webhook = target;
    fake_webhooks(State(app)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
