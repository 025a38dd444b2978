//! Protocol details checked against scripted responses: Retry-After, token refresh on 401,
//! create never retried, pagination, and where credentials may go.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bitbucket::{Client, Config, Credentials, Error, RetryPolicy, RunnerScope};
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn config(server: &MockServer) -> Config {
    Config {
        api_url: server.uri().parse().unwrap(),
        auth_url: server.uri().parse().unwrap(),
        retry: RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        ..Config::default()
    }
}

fn bearer_client(server: &MockServer) -> Client {
    Client::new(
        config(server),
        Credentials::AccessToken(SecretString::from("tok")),
    )
    .unwrap()
}

fn oauth_client(server: &MockServer) -> Client {
    Client::new(
        config(server),
        Credentials::OAuthConsumer {
            key: "key".into(),
            secret: SecretString::from("secret"),
        },
    )
    .unwrap()
}

fn runner(i: usize) -> Value {
    json!({
        "uuid": format!("{{00000000-0000-4000-8000-{i:012}}}"),
        "name": format!("r{i}"),
        "labels": ["self.hosted", "linux"],
        "state": {"status": "ONLINE"},
    })
}

const WORKSPACE_UUID: &str = "{0b4a1c2e-8f3d-4e5a-9b6c-7d8e9f0a1b2c}";
/// The runners API addressed by `{uuid}`, braces URL-encoded.
const RUNNERS: &str =
    "/internal/workspaces/%7B0b4a1c2e-8f3d-4e5a-9b6c-7d8e9f0a1b2c%7D/pipelines-config/runners";

fn ws() -> RunnerScope {
    RunnerScope::Workspace(WORKSPACE_UUID.into())
}

#[tokio::test]
async fn a_workspace_slug_is_resolved_to_its_uuid_once_and_the_runners_api_addressed_by_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/2.0/workspaces/acme"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"uuid": WORKSPACE_UUID, "slug": "acme"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"values": [runner(1)]})))
        .expect(2)
        .mount(&server)
        .await;
    let client = bearer_client(&server);
    let slug = RunnerScope::Workspace("acme".into());
    for _ in 0..2 {
        assert_eq!(client.list_runners(&slug).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn retry_after_is_honoured_and_the_call_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"values": [runner(1)]})))
        .mount(&server)
        .await;
    let started = Instant::now();
    let mut cfg = config(&server);
    cfg.retry.max_delay = Duration::from_secs(5);
    let client = Client::new(cfg, Credentials::AccessToken(SecretString::from("tok"))).unwrap();
    let runners = client.list_runners(&ws()).await.unwrap();
    assert_eq!(runners.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_longest_delay_is_returned_not_slept_through() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let err = bearer_client(&server)
        .list_runners(&ws())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::RateLimited {
            retry_after: Duration::from_secs(3600)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_expired_oauth_token_is_refreshed_once_on_401() {
    let server = MockServer::start().await;
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    Mock::given(method("POST"))
        .and(path("/site/oauth2/access_token"))
        .and(header("authorization", "Basic a2V5OnNlY3JldA==")) // key:secret
        .respond_with(move |_: &Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": format!("token-{n}"), "expires_in": 7200}))
        })
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .and(header("authorization", "Bearer token-0"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .and(header("authorization", "Bearer token-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"values": []})))
        .mount(&server)
        .await;
    let client = oauth_client(&server);
    client.list_runners(&ws()).await.unwrap();
    // The refreshed token is cached: no third token request.
    client.list_runners(&ws()).await.unwrap();
}

#[tokio::test]
async fn a_second_401_after_refresh_is_unauthorized() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/site/oauth2/access_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "t", "expires_in": 60})),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let client = oauth_client(&server);
    let err = client.list_runners(&ws()).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn create_is_sent_once_even_when_it_fails_retryably() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    let err = bearer_client(&server)
        .create_runner(&ws(), "r", &["self.hosted".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Server { status: 503, .. }));
}

#[tokio::test]
async fn reads_are_retried_through_server_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"values": []})))
        .expect(1)
        .mount(&server)
        .await;
    bearer_client(&server).list_runners(&ws()).await.unwrap();
}

#[tokio::test]
async fn requests_carry_the_user_agent_and_encoded_braces() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/internal/workspaces/%7Bws%7D/pipelines-config/runners/%7B00000000-0000-4000-8000-000000000001%7D$"))
        .and(header("user-agent", concat!("bbrunner/", env!("CARGO_PKG_VERSION"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(runner(1)))
        .expect(1)
        .mount(&server)
        .await;
    let uuid =
        bbrunner_core::ids::RunnerUuid::parse("00000000-0000-4000-8000-000000000001").unwrap();
    bearer_client(&server)
        .get_runner(&RunnerScope::Workspace("{ws}".into()), &uuid)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "values": [runner(1)],
            "next": "https://evil.example/steal?page=2",
        })))
        .mount(&server)
        .await;
    let err = bearer_client(&server)
        .list_runners(&ws())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another host"), "{err}");
}

#[tokio::test]
async fn a_create_response_of_the_wrong_shape_does_not_echo_the_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "uuid": "{00000000-0000-4000-8000-000000000001}",
            "name": "r",
            "state": {"status": "UNREGISTERED"},
            "oauth_client": {"id": "c", "secret": 12345678},
        })))
        .mount(&server)
        .await;
    let err = bearer_client(&server)
        .create_runner(&ws(), "r", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }));
    assert!(!err.to_string().contains("12345678"), "{err}");
}

/// Serves `total` runners in pages of at most `page_size` (whatever pagelen asks), linking
/// each page to the next by absolute URL.
struct Pages {
    total: usize,
    page_size: usize,
    base: String,
}

impl Respond for Pages {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let page: usize = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        let start = (page - 1) * self.page_size;
        let values: Vec<Value> = (start..(start + self.page_size).min(self.total))
            .map(runner)
            .collect();
        let mut body =
            json!({"page": page, "pagelen": self.page_size, "size": self.total, "values": values});
        if start + self.page_size < self.total {
            body["next"] = json!(format!(
                "{}{RUNNERS}?pagelen=100&page={}",
                self.base,
                page + 1
            ));
        }
        ResponseTemplate::new(200).set_body_json(body)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn pagination_lists_every_runner_exactly_once(total in 0usize..250, page_size in 1usize..=100) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let uuids = runtime.block_on(async {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path(RUNNERS))
                .respond_with(Pages { total, page_size, base: server.uri() })
                .mount(&server)
                .await;
            let client = Client::new(
                Config { budget: bitbucket::RequestBudget { requests: 10_000, period: Duration::from_secs(3600) }, ..config(&server) },
                Credentials::AccessToken(SecretString::from("tok")),
            ).unwrap();
            client.list_runners(&ws()).await.unwrap()
        });
        prop_assert_eq!(uuids.len(), total);
        let mut seen = std::collections::HashSet::new();
        for r in &uuids {
            prop_assert!(seen.insert(r.uuid.clone()), "listed twice: {}", r.uuid);
        }
    }
}

#[tokio::test]
async fn an_answer_past_the_limit_is_not_read() {
    let server = MockServer::start().await;
    let huge = "x".repeat(bbrunner_core::yaml::MAX_INPUT_BYTES + 1);
    Mock::given(method("GET"))
        .and(path_regex(r"/src/"))
        .respond_with(ResponseTemplate::new(200).set_body_string(huge))
        .mount(&server)
        .await;
    let err = bearer_client(&server)
        .pipelines_file("acme", "app", "abcdef1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Decode { message, .. } if message.contains("larger than")),
        "{err}"
    );
}
