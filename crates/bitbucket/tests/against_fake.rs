//! The client against fake-bitbucket over real HTTP: every call and every error class.

use std::collections::HashMap;
use std::time::Duration;

use bbrunner_core::ids::RunnerUuid;
use bitbucket::{
    Client, Config, Credentials, Error, RequestBudget, RetryPolicy, RunnerScope, RunnerStatus,
};
use fake_bitbucket::{FakeBitbucket, FakeConfig, Faults, StepRequest};
use secrecy::{ExposeSecret, SecretString};

async fn fake(configure: impl FnOnce(&mut FakeConfig)) -> FakeBitbucket {
    let mut config = FakeConfig {
        workspaces: vec!["acme".into()],
        repositories: vec![("acme".into(), "app".into())],
        oauth_consumers: vec![("key".into(), "consumer-secret".into())],
        api_tokens: vec![("dev@acme.test".into(), "api-token-value".into())],
        access_tokens: vec!["access-token-value".into()],
        ..FakeConfig::default()
    };
    configure(&mut config);
    FakeBitbucket::start(config).await.unwrap()
}

fn config(fake: &FakeBitbucket) -> Config {
    Config {
        api_url: fake.url().parse().unwrap(),
        auth_url: fake.url().parse().unwrap(),
        retry: RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        ..Config::default()
    }
}

fn oauth(key: &str, secret: &str) -> Credentials {
    Credentials::OAuthConsumer {
        key: key.into(),
        secret: SecretString::from(secret),
    }
}

fn client(fake: &FakeBitbucket) -> Client {
    Client::new(config(fake), oauth("key", "consumer-secret")).unwrap()
}

fn ws() -> RunnerScope {
    RunnerScope::Workspace("acme".into())
}

/// The workspace by `{uuid}`: no lookup call, for tests that count calls.
fn ws_by_uuid(fake: &FakeBitbucket) -> RunnerScope {
    RunnerScope::Workspace(fake.workspace_uuid("acme").unwrap())
}

fn labels(custom: &[&str]) -> Vec<String> {
    ["self.hosted", "linux"]
        .iter()
        .chain(custom)
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test]
async fn runner_calls_round_trip_in_both_scopes() {
    let fake = fake(|_| {}).await;
    let client = client(&fake);
    let repo = RunnerScope::Repository {
        workspace: "acme".into(),
        repository: "app".into(),
    };
    for scope in [ws(), repo] {
        assert!(client.list_runners(&scope).await.unwrap().is_empty());
        let created = client
            .create_runner(&scope, "bbrunner-ns-pool-1", &labels(&["build"]))
            .await
            .unwrap();
        assert!(
            created
                .oauth_client_secret
                .expose_secret()
                .starts_with("ATOA")
        );
        assert!(!format!("{created:?}").contains(created.oauth_client_secret.expose_secret()));
        let uuid = created.runner.uuid.clone();
        assert_eq!(created.runner.state.status, RunnerStatus::Unregistered);
        assert_eq!(created.runner.labels, labels(&["build"]));

        let listed = client.list_runners(&scope).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uuid, uuid);
        assert!(!listed[0].is_busy());

        client
            .set_runner_enabled(&scope, &uuid, false)
            .await
            .unwrap();
        let got = client.get_runner(&scope, &uuid).await.unwrap();
        assert_eq!(got.state.status, RunnerStatus::Disabled);
        client
            .set_runner_enabled(&scope, &uuid, true)
            .await
            .unwrap();
        assert_eq!(
            client.get_runner(&scope, &uuid).await.unwrap().state.status,
            RunnerStatus::Unregistered
        );

        client.delete_runner(&scope, &uuid).await.unwrap();
        // Already gone counts as deleted.
        client.delete_runner(&scope, &uuid).await.unwrap();
        assert!(matches!(
            client.get_runner(&scope, &uuid).await.unwrap_err(),
            Error::NotFound { .. }
        ));
    }
}

#[tokio::test]
async fn uuids_in_paths_are_url_encoded_and_lookups_are_cached() {
    let fake = fake(|_| {}).await;
    let client = client(&fake);
    let ws_uuid = client.workspace_uuid("acme").await.unwrap();
    assert_eq!(Some(ws_uuid.clone()), fake.workspace_uuid("acme"));
    assert_eq!(client.workspace_uuid("acme").await.unwrap(), ws_uuid);
    let repo_uuid = client.repository_uuid("acme", "app").await.unwrap();
    assert!(repo_uuid.starts_with('{'));
    // A uuid is its own answer.
    assert_eq!(client.workspace_uuid(&ws_uuid).await.unwrap(), ws_uuid);

    let by_uuid = RunnerScope::Workspace(ws_uuid.clone());
    let created = client
        .create_runner(&by_uuid, "r", &labels(&[]))
        .await
        .unwrap();
    client
        .get_runner(&by_uuid, &created.runner.uuid)
        .await
        .unwrap();

    let requests: Vec<(String, String)> = fake.with_world(|w, _| {
        w.requests
            .iter()
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect()
    });
    let lookups = requests
        .iter()
        .filter(|(_, p)| p == "/2.0/workspaces/acme")
        .count();
    assert_eq!(lookups, 1, "{requests:?}");
    let encoded = ws_uuid.replace('{', "%7B").replace('}', "%7D");
    assert!(
        requests
            .iter()
            .any(|(m, p)| m == "GET" && p.contains(&encoded) && p.contains("%7B")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn every_credential_kind_authenticates() {
    let fake = fake(|_| {}).await;
    for credentials in [
        oauth("key", "consumer-secret"),
        Credentials::ApiToken {
            email: "dev@acme.test".into(),
            token: SecretString::from("api-token-value"),
        },
        Credentials::AccessToken(SecretString::from("access-token-value")),
    ] {
        let client = Client::new(config(&fake), credentials).unwrap();
        client.list_runners(&ws()).await.unwrap();
    }
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_naming_the_credential_not_the_secret() {
    let fake = fake(|_| {}).await;
    let bad_oauth = Client::new(config(&fake), oauth("key", "wrong-secret-value")).unwrap();
    let err = bad_oauth.list_runners(&ws()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unauthorized {
                kind: "OAuth consumer",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("OAuth consumer key"));
    assert!(!err.to_string().contains("wrong-secret-value"));

    let bad_token = Client::new(
        config(&fake),
        Credentials::ApiToken {
            email: "dev@acme.test".into(),
            token: SecretString::from("nope-token-value"),
        },
    )
    .unwrap();
    let err = bad_token.list_runners(&ws()).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Unauthorized {
            kind: "API token",
            ..
        }
    ));
    assert!(!format!("{err:?}{err}").contains("nope-token-value"));
}

#[tokio::test]
async fn missing_scopes_are_named() {
    let fake = fake(|c| {
        c.limited_scopes = HashMap::from([("key".to_owned(), vec!["repository:read".to_owned()])]);
    })
    .await;
    let err = client(&fake)
        .list_runners(&ws_by_uuid(&fake))
        .await
        .unwrap_err();
    match &err {
        Error::Forbidden { missing_scopes, .. } => assert_eq!(missing_scopes, &["runner:write"]),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("lack the scopes runner:write"));
}

#[tokio::test]
async fn unknown_workspace_and_runner_are_not_found() {
    let fake = fake(|_| {}).await;
    let client = client(&fake);
    assert!(matches!(
        client.workspace_uuid("nope").await.unwrap_err(),
        Error::NotFound { .. }
    ));
    let missing = RunnerUuid::parse("00000000-0000-4000-8000-000000000000").unwrap();
    assert!(matches!(
        client.get_runner(&ws(), &missing).await.unwrap_err(),
        Error::NotFound { .. }
    ));
}

#[tokio::test]
async fn bitbucket_rate_limit_gives_retry_after() {
    let fake = fake(|c| c.rate_limit = 2).await;
    let mut cfg = config(&fake);
    cfg.retry.max_retries = 0;
    let client = Client::new(cfg, oauth("key", "consumer-secret")).unwrap();
    client.list_runners(&ws_by_uuid(&fake)).await.unwrap();
    client.list_runners(&ws_by_uuid(&fake)).await.unwrap();
    match client.list_runners(&ws_by_uuid(&fake)).await.unwrap_err() {
        Error::RateLimited { retry_after } => {
            assert!(retry_after > Duration::from_secs(3000), "{retry_after:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn own_budget_stops_before_bitbucket_does_and_reports_remaining() {
    let fake = fake(|_| {}).await;
    let mut cfg = config(&fake);
    cfg.budget = RequestBudget {
        requests: 3,
        period: Duration::from_secs(3600),
    };
    let client = Client::new(cfg, oauth("key", "consumer-secret")).unwrap();
    assert_eq!(client.remaining_budget(), 3);
    client.list_runners(&ws_by_uuid(&fake)).await.unwrap();
    assert_eq!(client.remaining_budget(), 2);
    client.list_runners(&ws_by_uuid(&fake)).await.unwrap();
    client.list_runners(&ws_by_uuid(&fake)).await.unwrap();
    assert_eq!(client.remaining_budget(), 0);
    let err = client.list_runners(&ws_by_uuid(&fake)).await.unwrap_err();
    assert!(matches!(err, Error::BudgetExhausted { .. }), "{err:?}");
    // Nothing was sent for the refused call.
    assert_eq!(
        fake.with_world(|w, _| w
            .requests
            .iter()
            .filter(|r| r.path.contains("runners"))
            .count()),
        3
    );
}

#[tokio::test]
async fn the_hundredth_runner_is_the_last() {
    let fake = fake(|_| {}).await;
    let client = client(&fake);
    for i in 0..100 {
        client
            .create_runner(&ws(), &format!("r{i}"), &labels(&[]))
            .await
            .unwrap();
    }
    let err = client
        .create_runner(&ws(), "r100", &labels(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err:?}");
    assert_eq!(client.list_runners(&ws()).await.unwrap().len(), 100);
}

#[tokio::test]
async fn server_errors_and_resets_are_retried_for_reads_but_never_for_create() {
    let fake = fake(|c| {
        c.faults = Faults {
            error_rate: 1.0,
            status: Some(503),
            ..Faults::default()
        }
    })
    .await;
    // Let the token through, then fail everything.
    let client = client(&fake);
    let err = client.list_runners(&ws()).await.unwrap_err();
    // The token request itself is faulted too: 503 from the auth endpoint.
    assert!(matches!(err, Error::Server { status: 503, .. }), "{err:?}");
    let sent = fake.with_world(|w, _| w.requests.len());
    assert_eq!(sent, 3, "one try and two retries");

    fake.with_world(|w, _| {
        w.faults = Faults::default();
        w.requests.clear();
    });
    client.list_runners(&ws()).await.unwrap(); // token cached from here
    fake.with_world(|w, _| {
        w.faults = Faults {
            error_rate: 1.0,
            status: Some(502),
            ..Faults::default()
        };
        w.requests.clear();
    });
    let err = client
        .create_runner(&ws(), "r", &labels(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Server { status: 502, .. }));
    assert_eq!(
        fake.with_world(|w, _| w.requests.len()),
        1,
        "create is never retried"
    );

    fake.with_world(|w, _| {
        w.faults = Faults {
            reset_rate: 1.0,
            ..Faults::default()
        };
        w.requests.clear();
    });
    let err = client.list_runners(&ws()).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(fake.with_world(|w, _| w.requests.len()), 3);
}

#[tokio::test]
async fn unreachable_bitbucket_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let cfg = Config {
        api_url: url.parse().unwrap(),
        auth_url: url.parse().unwrap(),
        retry: RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        },
        ..Config::default()
    };
    let client = Client::new(cfg, Credentials::AccessToken(SecretString::from("t"))).unwrap();
    let err = client.list_runners(&ws()).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn active_steps_carry_state_and_labels() {
    let fake = fake(|c| c.no_match = fake_bitbucket::NoMatch::Queue).await;
    let client = client(&fake);
    let id = fake
        .submit_step(&StepRequest {
            workspace: "acme".into(),
            repository: Some("app".into()),
            labels: labels(&["build"]),
            duration_s: 60.0,
            size: None,
        })
        .unwrap();
    let steps = client.active_steps("acme", "app").await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].uuid, id);
    assert_eq!(steps[0].state, "PENDING");
    assert_eq!(steps[0].labels, Some(labels(&["build"])));
}

#[tokio::test]
async fn a_commit_s_pipelines_file_is_read_and_a_finished_pipeline_s_steps_are_timed() {
    use fake_bitbucket::{PipelineRequest, PipelineStepRequest};
    let fake = fake(|_| {}).await;
    let client = client(&fake);
    let step = |name: &str| PipelineStepRequest {
        name: name.into(),
        duration: 30.0,
        labels: Vec::new(),
        size: None,
    };
    // No runner online: Bitbucket fails the build at once, and the pipeline ends.
    let created = fake
        .create_pipeline(&PipelineRequest {
            workspace: "acme".into(),
            repository: "app".into(),
            branch: "main".into(),
            pipeline: vec![vec![step("build")], vec![step("test")]],
            definition: None,
        })
        .unwrap();
    let commit = created["commit"].as_str().unwrap();
    let text = client
        .pipelines_file("acme", "app", commit)
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains("\"build\""), "{text}");
    assert_eq!(
        client
            .pipelines_file("acme", "app", "0000000000000000000000000000000000000000")
            .await
            .unwrap(),
        None
    );
    // The failed build never started: no duration to learn; found by build number or
    // by commit all the same.
    let by_number = client
        .finished_steps("acme", "app", Some(1), commit)
        .await
        .unwrap();
    assert!(by_number.is_empty(), "{by_number:?}");
    let err = client
        .finished_steps("acme", "app", Some(99), "abcdef1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}
