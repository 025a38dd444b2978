//! Everything as separate processes, as a user runs it: fake-bitbucket and fake-kube binaries,
//! the CRD and a RunnerPool applied with kubectl, and `bbrunner operator`. The fake binaries
//! are built beside bbrunner by the workspace test command.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use testbed::scratch;

use crate::util::{Killed, bbrunner, kubectl, sibling};

/// Start a fake and read its ready line.
fn start(name: &str, args: &[&str]) -> (Killed, Value) {
    let mut child = Command::new(sibling(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Killed(child), serde_json::from_str(&line).unwrap())
}

fn kubectl_ok(kubeconfig: &str, args: &[&str], stdin: &str) -> String {
    let out = kubectl(std::path::Path::new(kubeconfig), args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const POOL: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: ci
  labels:
    pod-security.kubernetes.io/enforce: privileged
---
apiVersion: v1
kind: Secret
metadata:
  name: bitbucket-credentials
  namespace: ci
stringData:
  oauthClientId: key
  oauthClientSecret: consumer-secret
---
apiVersion: bbrunner.dev/v1alpha1
kind: RunnerPool
metadata:
  name: builds
  namespace: ci
spec:
  workspace: acme
  labels: [build]
  credentials:
    secretRef:
      name: bitbucket-credentials
  scaling:
    min: 2
    max: 4
    minIdle: 1
    pollInterval: 1s
";

#[tokio::test(flavor = "multi_thread")]
async fn operator_fakes_and_kubectl_as_separate_processes() {
    let scratch = scratch("procs");
    let dir = scratch.path();
    let kubeconfig = dir.join("kubeconfig");
    let (_bitbucket, ready) = start(
        "fake-bitbucket",
        &[
            "--time-scale",
            "30",
            "--workspace",
            "acme",
            "--oauth-consumer",
            "key:consumer-secret",
        ],
    );
    let bitbucket_url = ready["listen"].as_str().unwrap().to_owned();
    let (_kube, ready) = start(
        "fake-kube",
        &[
            "--kubeconfig-out",
            kubeconfig.to_str().unwrap(),
            "--bitbucket-url",
            &bitbucket_url,
            "--pod-start-latency",
            "300ms",
        ],
    );
    assert_eq!(ready["kubeconfig"], kubeconfig.to_str().unwrap());
    let kubeconfig = kubeconfig.to_str().unwrap();

    kubectl_ok(
        kubeconfig,
        &["apply", "-f", "-"],
        &bbrunner(&["crd"], "").success().stdout,
    );
    kubectl_ok(kubeconfig, &["apply", "-f", "-"], POOL);
    let _operator = Killed(
        Command::new(env!("CARGO_BIN_EXE_bbrunner"))
            .args([
                "operator",
                "--bitbucket-url",
                &bitbucket_url,
                "--bitbucket-auth-url",
                &bitbucket_url,
            ])
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut columns = String::new();
    while Instant::now() < deadline {
        columns = kubectl_ok(
            kubeconfig,
            &["-n", "ci", "get", "rp", "builds", "--no-headers"],
            "",
        );
        let fields: Vec<&str> = columns.split_whitespace().collect();
        // NAME READY MIN MAX DESIRED ONLINE BUSY DRAINING AGE
        if fields.get(5) == Some(&"2") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let fields: Vec<&str> = columns.split_whitespace().collect();
    assert_eq!(
        &fields[..6],
        ["builds", "True", "2", "4", "2", "2"],
        "kubectl get rp: {columns}"
    );
    // The policy shows with -o wide (priority 1), and the category lists pools.
    let wide = kubectl_ok(
        kubeconfig,
        &["-n", "ci", "get", "rp", "builds", "-o", "wide"],
        "",
    );
    assert!(wide.contains("POLICY"), "{wide}");
    let headers = kubectl_ok(kubeconfig, &["-n", "ci", "get", "rp"], "");
    assert!(
        headers
            .lines()
            .next()
            .is_some_and(|h| h.contains("BUSY") && h.contains("DRAINING")),
        "{headers}"
    );
    let by_category = kubectl_ok(kubeconfig, &["-n", "ci", "get", "bbrunner"], "");
    assert!(by_category.contains("builds"), "{by_category}");
    let runners: Value = reqwest::get(format!("{bitbucket_url}/_fake/runners"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runners.as_array().unwrap().len(), 2);
    // bbrunner.CLUSTER.ci.builds.SUFFIX, CLUSTER from the kube-system namespace's UID.
    assert!(runners.as_array().unwrap().iter().all(|r| {
        let parts: Vec<&str> = r["name"].as_str().unwrap().split('.').collect();
        parts.len() == 5
            && parts[0] == "bbrunner"
            && parts[1].len() == 8
            && parts[1].chars().all(|c| c.is_ascii_hexdigit())
            && parts[2..4] == ["ci", "builds"]
    }));
}

/// A scaled clock without its origin would disagree with fake-bitbucket's and churn runners:
/// the operator refuses to start, naming the flag.
#[test]
fn a_scaled_clock_without_its_origin_is_refused() {
    for args in [
        &["operator", "--time-scale", "30"][..],
        &["operator", "--clock-origin", "1700000000"][..],
    ] {
        let run = bbrunner(args, "").failure();
        assert!(
            run.stderr.contains("--clock-origin") && run.stderr.contains("--time-scale"),
            "{}",
            run.stderr
        );
    }
}
