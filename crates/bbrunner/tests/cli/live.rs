//! The whole simulated world: a runner created in fake-bitbucket, its UI command rendered by
//! `bbrunner render`, applied with the real `kubectl` to fake-kube, and the pod's runner
//! agent registering with fake-bitbucket. kubectl is part of the machine image; without it
//! this test fails saying so.

use std::time::Duration;

use bitbucket::{Client, Config, Credentials, RunnerScope, RunnerStatus};
use fake_bitbucket::{FakeBitbucket, FakeConfig};
use fake_kube::{ClusterConfig, FakeKube};
use secrecy::{ExposeSecret, SecretString};

use crate::util::{bbrunner, kubectl};

#[tokio::test(flavor = "multi_thread")]
async fn rendered_runner_applied_with_kubectl_comes_online() {
    let bitbucket = FakeBitbucket::start(FakeConfig {
        time_scale: 60.0,
        workspaces: vec!["acme".into()],
        api_tokens: vec![("ops@acme.test".into(), "token".into())],
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let kube = FakeKube::start(
        "127.0.0.1:0".parse().unwrap(),
        ClusterConfig {
            bitbucket_url: Some(bitbucket.url().to_owned()),
            pod_start_latency: Duration::from_millis(200),
            ..ClusterConfig::default()
        },
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("bbrunner-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = kube.write_kubeconfig(&dir.join("kubeconfig")).unwrap();

    // A runner, as a user creates it in the UI.
    let client = Client::new(
        Config {
            api_url: bitbucket.url().parse().unwrap(),
            auth_url: bitbucket.url().parse().unwrap(),
            ..Config::default()
        },
        Credentials::ApiToken {
            email: "ops@acme.test".into(),
            token: SecretString::from("token"),
        },
    )
    .unwrap();
    let scope = RunnerScope::Workspace("acme".into());
    let created = client
        .create_runner(&scope, "ui-runner", &["self.hosted".into(), "linux".into()])
        .await
        .unwrap();
    let account = client.workspace_uuid("acme").await.unwrap();
    let command = format!(
        "docker container run -it -v /tmp:/tmp \\\n  -e ACCOUNT_UUID={account} \\\n  -e RUNNER_UUID={} \\\n  -e RUNTIME_PREREQUISITES_ENABLED=true \\\n  -e OAUTH_CLIENT_ID={} \\\n  -e OAUTH_CLIENT_SECRET={} \\\n  -e WORKING_DIRECTORY=/tmp \\\n  docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1\n",
        created.runner.uuid,
        created.oauth_client_id,
        created.oauth_client_secret.expose_secret()
    );

    let manifests = bbrunner(
        &["render", "--create-namespace", "--name", "ui-runner"],
        &command,
    )
    .success()
    .stdout;
    let applied = kubectl(&kubeconfig, &["apply", "-f", "-"], &manifests);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let mut online = false;
    for _ in 0..200 {
        let runner = client
            .get_runner(&scope, &created.runner.uuid)
            .await
            .unwrap();
        if runner.state.status == RunnerStatus::Online {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(online, "the runner never came online");
    let pods = kubectl(
        &kubeconfig,
        &[
            "-n",
            "bitbucket-runners",
            "get",
            "pods",
            "-o",
            "jsonpath={.items[0].status.phase}",
        ],
        "",
    );
    assert_eq!(String::from_utf8_lossy(&pods.stdout), "Running");

    // Deleting the Deployment stops the pod, and with it the runner's heartbeat.
    let deleted = kubectl(
        &kubeconfig,
        &[
            "-n",
            "bitbucket-runners",
            "delete",
            "deployment",
            "ui-runner",
        ],
        "",
    );
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let mut stopped = false;
    for _ in 0..200 {
        if kube.cluster().agents().is_empty() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(stopped, "the runner agent outlived its pod");
    std::fs::remove_dir_all(&dir).unwrap();
}
