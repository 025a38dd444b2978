use std::process::Command;
use std::time::Duration;

use fake_kube::ClusterConfig;

use crate::util::{bbrunner, kubectl, kubernetes_validate_strict, workspace_root};

#[test]
fn install_manifests_validate_strictly_for_one_and_several_replicas() {
    for (replicas, watched) in [("1", ""), ("3", "ci,team-b")] {
        let mut args = vec!["install", "--replicas", replicas, "--namespace", "ops"];
        if !watched.is_empty() {
            // With the admin policy too: its ValidatingAdmissionPolicy and binding.
            args.extend([
                "--watch-namespace",
                watched,
                "--allowed-image",
                "registry.internal/*",
                "--restrict-pod-fields",
            ]);
        }
        let out = bbrunner(&args, "").success().stdout;
        kubernetes_validate_strict(&out);
        assert_eq!(
            out.contains("kind: ValidatingAdmissionPolicyBinding"),
            !watched.is_empty()
        );
        // Never two operators acting: the Lease always, and a single replica replaced only
        // once the old pod is gone.
        assert!(out.contains("--leader-election"));
        let strategy = if replicas == "1" {
            "Recreate"
        } else {
            "RollingUpdate"
        };
        assert!(
            out.contains(&format!("type: {strategy}")),
            "{replicas} replica(s) without the {strategy} strategy"
        );
    }
}

#[test]
fn the_kustomize_base_is_what_install_prints() {
    let base = workspace_root().join("deploy/kustomize");
    let committed = std::fs::read_to_string(base.join("install.yaml")).unwrap();
    let generated = bbrunner(&["install"], "").success().stdout;
    assert!(
        committed == generated,
        "deploy/kustomize/install.yaml drifted; regenerate it with `bbrunner install > deploy/kustomize/install.yaml`"
    );
    let built = Command::new(testbed::cluster::kubectl_binary())
        .args(["kustomize", base.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl is not built ({e}); ./scripts/kube-build builds it (./scripts/test runs it)")
        });
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    kubernetes_validate_strict(&String::from_utf8(built.stdout).unwrap());
}

#[test]
fn rbac_is_exactly_what_the_operator_uses() {
    let out = bbrunner(&["install"], "").success().stdout;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).unwrap();
    let rules = |kind: &str| -> Vec<String> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .flat_map(|d| d["rules"].as_array().unwrap().clone())
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["apiGroups"][0].as_str().unwrap(),
                    r["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(","),
                    r["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect()
    };
    assert_eq!(
        rules("ClusterRole"),
        [
            "bbrunner.dev runnerpools get,list,watch,patch",
            "bbrunner.dev runnerpools/status patch",
            " pods get,list,watch,create,delete,patch",
            " secrets get,list,watch,create,delete,patch",
            " persistentvolumeclaims list,create,patch,delete",
            "events.k8s.io events create,patch",
            " namespaces get",
        ]
    );
    assert_eq!(
        rules("Role"),
        [
            "coordination.k8s.io leases create",
            "coordination.k8s.io leases get,patch",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn install_applied_with_kubectl_brings_the_operator_up() {
    let cluster = testbed::Cluster::fake(
        "install",
        ClusterConfig {
            pod_start_latency: Duration::from_millis(100),
            ..ClusterConfig::default()
        },
    )
    .await;
    let kubeconfig = cluster.kubeconfig().to_owned();
    let manifests = bbrunner(&["install", "--replicas", "2"], "")
        .success()
        .stdout;
    let out = kubectl(&kubeconfig, &["apply", "-f", "-"], &manifests);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    for object in [
        "namespace/bbrunner-system",
        "customresourcedefinition.apiextensions.k8s.io/runnerpools.bbrunner.dev",
        "deployment.apps/bbrunner-operator",
        "poddisruptionbudget.policy/bbrunner-operator",
    ] {
        assert!(applied.contains(object), "{object} not applied:\n{applied}");
    }
    let mut running = 0;
    for _ in 0..100 {
        let pods = kubectl(
            &kubeconfig,
            &[
                "-n",
                "bbrunner-system",
                "get",
                "pods",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ],
            "",
        );
        running = String::from_utf8_lossy(&pods.stdout)
            .matches("Running")
            .count();
        if running == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 2, "the operator's two replicas are not running");
}
