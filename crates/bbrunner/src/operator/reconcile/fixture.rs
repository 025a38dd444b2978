//! An API server that answers what a test scripts, for the step modules' unit tests: the
//! requests a step sends are checked one by one, in the style of kube-rs' controller-rs.

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{self, Handle};

/// A client whose requests go to the returned handle.
pub(super) fn client() -> (kube::Client, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// One request as received: method, path with query, and its body as JSON (null if none).
pub(super) struct Received {
    pub method: String,
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

/// Wait for the next request and answer it with `status` and `answer`.
pub(super) async fn expect(
    handle: &mut Handle<Request<Body>, Response<Body>>,
    status: u16,
    answer: Value,
) -> Received {
    let (request, respond) = handle.next_request().await.expect("a request");
    let received = Received {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        content_type: request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: {
            let bytes = request.into_body().collect_bytes().await.expect("a body");
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        },
    };
    respond.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
            .expect("a response"),
    );
    received
}

/// A reconcile context around `client`, with default settings.
pub(super) fn context(client: kube::Client) -> super::Context {
    let metrics = crate::operator::metrics::Metrics::new();
    super::Context {
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "bbrunner".into(),
                instance: None,
            },
        ),
        client,
        clock: crate::operator::clock::Clock::wall(),
        hub: crate::operator::hub::Hub::new(bitbucket::Config::default(), metrics.clone()),
        metrics,
        settings: super::Settings {
            registration_ttl: std::time::Duration::from_secs(600),
            deletion_grace: std::time::Duration::from_secs(7200),
            policy: Default::default(),
        },
        cluster: bbrunner_core::ownership::ClusterId::new("test").expect("a cluster id"),
        queue_waits: Default::default(),
        registrations: Default::default(),
        secret_references: Default::default(),
        failures: Default::default(),
        demand: std::sync::Arc::new(crate::operator::demand::Demand::new(
            crate::operator::clock::Clock::wall(),
        )),
    }
}

/// A pool named `builds` in namespace `ci`, of generation 3, with `spec`.
pub(super) fn pool(spec: Value) -> crate::operator::crd::RunnerPool {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
        "metadata": {"name": "builds", "namespace": "ci", "generation": 3},
        "spec": spec,
    }))
    .expect("a pool")
}
