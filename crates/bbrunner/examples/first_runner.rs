//! Benchmark (BENCHMARKS.md): time from a RunnerPool created to its first runner ONLINE in
//! fake-bitbucket, on fake-kube and on a real control plane (`./scripts/kube-build`), side by
//! side in one run, the same operator binary, node start latency and fake-bitbucket on both.
//!
//! ./scripts/kube-build && cargo build --release -p bbrunner --bins --examples \
//!   && target/release/examples/first_runner [ROUNDS]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_bitbucket::{FakeBitbucket, FakeConfig};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use testbed::{Backend, Testbed};

/// The same on both backends: what the node takes to start a pod's containers.
const POD_START_LATENCY: Duration = Duration::from_millis(500);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn operator_binary() -> PathBuf {
    let examples = std::env::current_exe().expect("the example's path");
    let dir = examples
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples");
    let binary = dir.join("bbrunner");
    assert!(
        binary.exists(),
        "build the operator first: cargo build --release -p bbrunner --bins --examples"
    );
    binary
}

fn apply(kubeconfig: &Path, yaml: &str) {
    let out =
        testbed::cluster::kubectl_with(kubeconfig, &["apply", "--server-side", "-f", "-"], yaml);
    assert!(out.status.success(), "kubectl apply: {out:?}");
}

fn online(bitbucket: &FakeBitbucket, pool: &str) -> bool {
    bitbucket.with_world(|w, now| {
        w.runners.iter().any(|r| {
            r.name.contains(&format!(".{pool}."))
                && fake_bitbucket::world::runner_status(r, now) == "ONLINE"
        })
    })
}

/// Seconds from each pool's creation to its first runner ONLINE, `rounds` pools in turn.
async fn measure(backend: Backend, rounds: usize) -> Vec<f64> {
    let config = FakeConfig {
        workspaces: vec!["acme".into()],
        oauth_consumers: vec![("key".into(), "consumer-secret".into())],
        ..FakeConfig::default()
    };
    let bed = match backend {
        Backend::Fake => {
            Testbed::fake("bench-first-runner", config, |c| {
                c.pod_start_latency = POD_START_LATENCY;
            })
            .await
        }
        Backend::Real => Testbed::real("bench-first-runner-real", config, |o| {
            o.pod_start_latency = POD_START_LATENCY;
            // As many nodes as fake-kube has, so that every pool's pod finds room.
            o.nodes = 3;
        })
        .await
        .expect("the real control plane's binaries: run ./scripts/kube-build"),
    };
    let (bitbucket, cluster) = (&bed.bitbucket, &bed.cluster);
    let kubeconfig = cluster.kubeconfig().to_owned();
    let crd = Command::new(operator_binary()).arg("crd").output().unwrap();
    apply(&kubeconfig, &String::from_utf8(crd.stdout).unwrap());
    apply(
        &kubeconfig,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ci\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bitbucket-credentials\n  namespace: ci\nstringData:\n  oauthClientId: key\n  oauthClientSecret: consumer-secret\n",
    );
    let _operator = Killed(
        Command::new(operator_binary())
            .args([
                "operator",
                "--bitbucket-url",
                bitbucket.url(),
                "--bitbucket-auth-url",
                bitbucket.url(),
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pools: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        "ci",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("bbrunner.dev", "v1alpha1", "RunnerPool"),
            "runnerpools",
        ),
    );
    // A first pool warms the operator's watches and caches; it is not measured.
    let mut seconds = Vec::new();
    for round in 0..=rounds {
        let name = format!("p{round}");
        let pool = json!({"apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name},
            "spec": {"workspace": "acme", "labels": [format!("l{round}")],
                "credentials": {"secretRef": {"name": "bitbucket-credentials"}},
                "scaling": {"min": 1, "max": 1}}});
        let started = Instant::now();
        pools
            .patch(&name, &PatchParams::apply("bench"), &Patch::Apply(pool))
            .await
            .unwrap();
        while !online(bitbucket, &name) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{name} never came online"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round > 0 {
            seconds.push(started.elapsed().as_secs_f64());
        }
    }
    seconds
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let mut fake = measure(Backend::Fake, rounds).await;
    let mut real = measure(Backend::Real, rounds).await;
    let (f, r) = (median(&mut fake), median(&mut real));
    println!(
        "pool created to first runner ONLINE, {rounds} pools each, node start latency {POD_START_LATENCY:?}:"
    );
    println!("fake-kube        median {f:.2} s  (each: {fake:.2?})");
    println!("kube-apiserver   median {r:.2} s  (each: {real:.2?})");
    println!("real / fake      {:.2}x", r / f);
}
