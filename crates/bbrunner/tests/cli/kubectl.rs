//! kubectl's imperative commands against fake-kube, as a newcomer types them. They send
//! protobuf; kubectl's own client-side rendering (`--dry-run=client -o json`) is the oracle
//! for what the server must have stored.

use fake_kube::{ClusterConfig, FakeKube};
use serde_json::Value;

use crate::util::kubectl;

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_create_namespace_secret_configmap_and_serviceaccount_work() {
    let kube = FakeKube::start("127.0.0.1:0".parse().unwrap(), ClusterConfig::default())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("bbrunner-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = kube.write_kubeconfig(&dir.join("kubeconfig")).unwrap();
    // Bytes that are not UTF-8, and a secret with the punctuation Bitbucket's have.
    let binary = dir.join("key.bin");
    std::fs::write(&binary, [0u8, 159, 146, 150, 255]).unwrap();
    let binary_arg = format!("--from-file=key={}", binary.display());
    let commands: Vec<Vec<&str>> = vec![
        vec!["create", "namespace", "ci"],
        vec![
            "create",
            "secret",
            "generic",
            "bitbucket-credentials",
            "-n",
            "ci",
            "--from-literal=oauthClientId=AbCdEf0123",
            "--from-literal=oauthClientSecret=ATOA-secret_with.special-chars",
            &binary_arg,
        ],
        vec![
            "create",
            "configmap",
            "settings",
            "-n",
            "ci",
            "--from-literal=mtu=1450",
        ],
        vec!["create", "serviceaccount", "runner", "-n", "ci"],
    ];
    for command in &commands {
        let rendered = kubectl(
            &kubeconfig,
            &[command.as_slice(), &["--dry-run=client", "-o", "json"]].concat(),
            "",
        );
        assert!(rendered.status.success(), "{command:?}: {rendered:?}");
        let expected: Value = serde_json::from_slice(&rendered.stdout).unwrap();
        let created = kubectl(&kubeconfig, command, "");
        assert!(
            created.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let kind = expected["kind"].as_str().unwrap().to_lowercase();
        let name = expected["metadata"]["name"].as_str().unwrap();
        let mut get = vec!["get", kind.as_str(), name, "-o", "json"];
        if let Some(ns) = expected["metadata"]["namespace"].as_str() {
            get.extend(["-n", ns]);
        }
        let stored = kubectl(&kubeconfig, &get, "");
        assert!(stored.status.success(), "{get:?}: {stored:?}");
        let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
        for field in ["data", "type", "spec"] {
            if !expected[field].is_null() {
                assert_eq!(stored[field], expected[field], "{kind} {name}: {field}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// RunnerPools through kubectl against the CRD's structural schema, as a real API server
/// treats them: a typo is refused under kubectl's default strict validation, pruned with a
/// warning under `--validate=warn`; a value of the wrong type is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_crd_schema_is_enforced_as_a_real_api_server_does() {
    let kube = FakeKube::start("127.0.0.1:0".parse().unwrap(), ClusterConfig::default())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("bbrunner-kubectl-crd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = kube.write_kubeconfig(&dir.join("kubeconfig")).unwrap();
    let crd = crate::util::bbrunner(&["crd"], "").success().stdout;
    assert!(
        kubectl(&kubeconfig, &["apply", "-f", "-"], &crd)
            .status
            .success()
    );
    let pool = |scaling: &str| {
        format!(
            "apiVersion: bbrunner.dev/v1alpha1\nkind: RunnerPool\nmetadata: {{name: builds, namespace: default}}\nspec:\n  workspace: acme\n  credentials: {{secretRef: {{name: c}}}}\n  scaling: {scaling}\n"
        )
    };
    let typo = pool("{min: 1, minIdel: 2}");
    let strict = kubectl(&kubeconfig, &["apply", "-f", "-"], &typo);
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success());
    assert!(
        stderr.contains("strict decoding error")
            && stderr.contains("unknown field \"spec.scaling.minIdel\""),
        "{stderr}"
    );
    let warned = kubectl(&kubeconfig, &["apply", "--validate=warn", "-f", "-"], &typo);
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("unknown field \"spec.scaling.minIdel\""),
        "{stderr}"
    );
    let stored = kubectl(&kubeconfig, &["get", "rp", "builds", "-o", "json"], "");
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(
        stored["spec"]["scaling"],
        serde_json::json!({"min": 1}),
        "{stored}"
    );
    // Defaults from the schema are stored, as the API server applies them.
    assert_eq!(stored["spec"]["mode"], "managed", "{stored}");
    let wrong_type = kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        &pool("{scaleDownDelay: 90}"),
    );
    let stderr = String::from_utf8_lossy(&wrong_type.stderr);
    assert!(!wrong_type.status.success());
    assert!(
        stderr.contains("spec.scaling.scaleDownDelay in body must be of type string"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
