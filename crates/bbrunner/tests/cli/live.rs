//! The whole simulated world: a runner created in fake-bitbucket, its UI command rendered by
//! `bbrunner render`, applied with the real `kubectl` to fake-kube, and the pod's runner
//! agent registering with fake-bitbucket. kubectl is part of the machine image; without it
//! this test fails saying so.

use std::time::Duration;

use bitbucket::{Client, Config, Credentials, RunnerScope, RunnerStatus};
use fake_bitbucket::FakeConfig;
use secrecy::{ExposeSecret, SecretString};

use crate::util::{bbrunner, kubectl};

/// fake-bitbucket, fake-kube whose runner pods register with it, and a runner created as a
/// user creates one in the UI.
struct Live {
    bed: testbed::Testbed,
    client: Client,
    scope: RunnerScope,
    created: bitbucket::CreatedRunner,
    account: String,
    kubeconfig: std::path::PathBuf,
}

impl Live {
    async fn start(name: &str) -> Self {
        let bed = testbed::Testbed::fake(
            &format!("live-{name}"),
            FakeConfig {
                time_scale: 60.0,
                workspaces: vec!["acme".into()],
                api_tokens: vec![("ops@acme.test".into(), "token".into())],
                ..FakeConfig::default()
            },
            |c| c.pod_start_latency = Duration::from_millis(200),
        )
        .await;
        let client = Client::new(
            Config {
                api_url: bed.bitbucket.url().parse().unwrap(),
                auth_url: bed.bitbucket.url().parse().unwrap(),
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
        Self {
            kubeconfig: bed.kubeconfig().to_owned(),
            bed,
            client,
            scope,
            created,
            account,
        }
    }

    async fn status(&self) -> RunnerStatus {
        self.client
            .get_runner(&self.scope, &self.created.runner.uuid)
            .await
            .unwrap()
            .state
            .status
    }

    async fn comes_online(&self) -> bool {
        for _ in 0..200 {
            if self.status().await == RunnerStatus::Online {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn agents_stop(&self) -> bool {
        for _ in 0..200 {
            if self.bed.runner_agents().is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_runner_applied_with_kubectl_comes_online() {
    let live = Live::start("render").await;
    let (kubeconfig, created, account) = (&live.kubeconfig, &live.created, &live.account);
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
    let applied = kubectl(kubeconfig, &["apply", "-f", "-"], &manifests);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    assert!(live.comes_online().await, "the runner never came online");
    let pods = kubectl(
        kubeconfig,
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
        kubeconfig,
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
    assert!(
        live.agents_stop().await,
        "the runner agent outlived its pod"
    );
}

/// Base64 as the classic recipe writes it (`echo -n VALUE | base64 -w0`).
fn b64(value: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(value)
}

/// The hand-written Secret and Job bbrunner replaces (`examples/manual-runner-job.yaml`),
/// filled in and applied with kubectl, bring the runner online: a batch/v1 Job controller
/// runs its pod, whose runner registers.
#[tokio::test(flavor = "multi_thread")]
async fn the_hand_written_secret_and_job_bring_the_runner_online() {
    let live = Live::start("manual-job").await;
    let uuid = &live.created.runner.uuid;
    let manifest = std::fs::read_to_string(crate::util::example("manual-runner-job.yaml"))
        .unwrap()
        .replace("${RUNNER_UUID_BARE}", uuid.bare())
        .replace("${ACCOUNT_UUID_B64}", &b64(&live.account))
        .replace("${RUNNER_UUID_B64}", &b64(uuid.braced()))
        .replace(
            "${OAUTH_CLIENT_ID_B64}",
            &b64(&live.created.oauth_client_id),
        )
        .replace(
            "${OAUTH_CLIENT_SECRET_B64}",
            &b64(live.created.oauth_client_secret.expose_secret()),
        );
    let kubectl_ok = |args: &[&str], stdin: &str| {
        let out = kubectl(&live.kubeconfig, args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    kubectl_ok(&["create", "namespace", "runners"], "");
    kubectl_ok(&["apply", "-n", "runners", "-f", "-"], &manifest);
    assert!(live.comes_online().await, "the runner never came online");
    let job: serde_json::Value = serde_json::from_str(&kubectl_ok(
        &[
            "get",
            "job",
            "-n",
            "runners",
            &format!("runner-{}", uuid.bare()),
            "-o",
            "json",
        ],
        "",
    ))
    .unwrap();
    assert_eq!(job["status"]["active"], 1, "{job}");
    assert_eq!(job["spec"]["backoffLimit"], 6);
    let pods: serde_json::Value = serde_json::from_str(&kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            "runners",
            "-l",
            &format!("job-name=runner-{}", uuid.bare()),
            "-o",
            "json",
        ],
        "",
    ))
    .unwrap();
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Running", "{pods}");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    // Deleting the Job (kubectl cascades in the background) stops the runner.
    kubectl_ok(
        &[
            "delete",
            "job",
            "-n",
            "runners",
            &format!("runner-{}", uuid.bare()),
        ],
        "",
    );
    assert!(
        live.agents_stop().await,
        "the runner agent outlived its Job"
    );
}

/// The official Python client, as Atlassian's runners-autoscaler uses it against a real
/// cluster: create a Secret and a Job per runner, watch its pod, list, delete. The Job's pod
/// runs a live runner. `./scripts/test` installs the client into target/pytools.
#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_client_runs_a_runner_job_as_atlassian_s_autoscaler_does() {
    let live = Live::start("python").await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/autoscaler_like.py");
    let python = |phase: &str| {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(phase)
            .env("KUBECONFIG", &live.kubeconfig)
            .env("NAMESPACE", "runners")
            .env("ACCOUNT_UUID", &live.account)
            .env("RUNNER_UUID", live.created.runner.uuid.braced())
            .env("OAUTH_CLIENT_ID", &live.created.oauth_client_id)
            .env(
                "OAUTH_CLIENT_SECRET",
                live.created.oauth_client_secret.expose_secret(),
            )
            .output()
            .expect("python3");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("No module named 'kubernetes'"),
            "the Python client is not installed; run the README's test command, which installs it into target/pytools"
        );
        assert!(out.status.success(), "{phase}: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(python("create").contains("RUNNING"));
    assert!(
        live.comes_online().await,
        "the Job's runner never came online"
    );
    assert!(python("delete").contains("DELETED"));
    assert!(
        live.agents_stop().await,
        "the runner agent outlived its Job"
    );
}
