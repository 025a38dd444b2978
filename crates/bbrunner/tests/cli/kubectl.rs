//! kubectl's imperative commands against fake-kube, as a newcomer types them. They send
//! protobuf; kubectl's own client-side rendering (`--dry-run=client -o json`) is the oracle
//! for what the server must have stored.

use fake_kube::ClusterConfig;
use serde_json::Value;

use crate::util::kubectl;

/// fake-kube, with the RunnerPool CRD applied through kubectl when `crd` says so.
async fn cluster(name: &str, crd: bool) -> testbed::Cluster {
    let cluster = testbed::Cluster::fake(name, ClusterConfig::default()).await;
    if crd {
        let crd = crate::util::bbrunner(&["crd"], "").success().stdout;
        assert!(
            kubectl(cluster.kubeconfig(), &["apply", "-f", "-"], &crd)
                .status
                .success()
        );
    }
    cluster
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_create_namespace_secret_configmap_and_serviceaccount_work() {
    let cluster = cluster("kubectl", false).await;
    let (dir, kubeconfig) = (cluster.dir(), cluster.kubeconfig());
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
            kubeconfig,
            &[command.as_slice(), &["--dry-run=client", "-o", "json"]].concat(),
            "",
        );
        assert!(rendered.status.success(), "{command:?}: {rendered:?}");
        let expected: Value = serde_json::from_slice(&rendered.stdout).unwrap();
        let created = kubectl(kubeconfig, command, "");
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
        let stored = kubectl(kubeconfig, &get, "");
        assert!(stored.status.success(), "{get:?}: {stored:?}");
        let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
        for field in ["data", "type", "spec"] {
            if !expected[field].is_null() {
                assert_eq!(stored[field], expected[field], "{kind} {name}: {field}");
            }
        }
    }
}

/// RunnerPools through kubectl against the CRD's structural schema, as a real API server
/// treats them: a typo is refused under kubectl's default strict validation, pruned with a
/// warning under `--validate=warn`; a value of the wrong type is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_crd_schema_is_enforced_as_a_real_api_server_does() {
    let cluster = cluster("kubectl-crd", true).await;
    let kubeconfig = cluster.kubeconfig();
    let pool = |scaling: &str| {
        format!(
            "apiVersion: bbrunner.dev/v1alpha1\nkind: RunnerPool\nmetadata: {{name: builds, namespace: default}}\nspec:\n  workspace: acme\n  credentials: {{secretRef: {{name: c}}}}\n  scaling: {scaling}\n"
        )
    };
    let typo = pool("{min: 1, minIdel: 2}");
    let strict = kubectl(kubeconfig, &["apply", "-f", "-"], &typo);
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success());
    assert!(
        stderr.contains("strict decoding error")
            && stderr.contains("unknown field \"spec.scaling.minIdel\""),
        "{stderr}"
    );
    let warned = kubectl(kubeconfig, &["apply", "--validate=warn", "-f", "-"], &typo);
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("unknown field \"spec.scaling.minIdel\""),
        "{stderr}"
    );
    let stored = kubectl(kubeconfig, &["get", "rp", "builds", "-o", "json"], "");
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(
        stored["spec"]["scaling"],
        serde_json::json!({"min": 1}),
        "{stored}"
    );
    // Defaults from the schema are stored, as the API server applies them.
    assert_eq!(stored["spec"]["mode"], "managed", "{stored}");
    let wrong_type = kubectl(
        kubeconfig,
        &["apply", "-f", "-"],
        &pool("{scaleDownDelay: 90}"),
    );
    let stderr = String::from_utf8_lossy(&wrong_type.stderr);
    assert!(!wrong_type.status.success());
    assert!(
        stderr.contains("spec.scaling.scaleDownDelay in body must be of type string"),
        "{stderr}"
    );
}

mod strategic_merge {
    //! fake-kube's strategic merge against kubectl's own (`kubectl patch --local`, the Go code
    //! the API server runs), on random Deployments and patches.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn container() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["a", "b", "c"]),
            prop::sample::subsequence(vec!["X", "Y", "Z"], 0..=3),
            prop::sample::subsequence(vec![80, 81], 0..=2),
            prop::sample::subsequence(vec!["/m", "/n"], 0..=2),
            prop::sample::select(vec!["img:1", "img:2"]),
        )
            .prop_map(|(name, env, ports, mounts, image)| {
                let mut c = json!({"name": name, "image": image});
                // Empty lists are left out, as people write manifests.
                if !env.is_empty() {
                    c["env"] = env
                        .iter()
                        .map(|e| json!({"name": e, "value": format!("{e}-{image}")}))
                        .collect();
                }
                if !ports.is_empty() {
                    c["ports"] = ports
                        .iter()
                        .map(|p| json!({"name": format!("p{p}"), "containerPort": p}))
                        .collect();
                }
                if !mounts.is_empty() {
                    c["volumeMounts"] = mounts
                        .iter()
                        .map(|m| json!({"name": "v", "mountPath": m}))
                        .collect();
                }
                c
            })
    }

    /// Containers with distinct names.
    fn containers() -> impl Strategy<Value = Vec<Value>> {
        prop::collection::vec(container(), 1..=3).prop_map(|mut cs| {
            let mut seen = Vec::new();
            cs.retain(|c| {
                let fresh = !seen.contains(&c["name"]);
                seen.push(c["name"].clone());
                fresh
            });
            cs
        })
    }

    fn deployment() -> impl Strategy<Value = Value> {
        (
            containers(),
            prop::sample::subsequence(vec!["f1", "f2", "f3"], 0..=3),
            prop::sample::subsequence(vec!["l1", "l2"], 0..=2),
        )
            .prop_map(|(containers, finalizers, labels)| {
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "d", "finalizers": finalizers,
                                 "labels": labels.iter().map(|l| (l.to_string(), json!("v"))).collect::<serde_json::Map<_, _>>()},
                    "spec": {"selector": {"matchLabels": {"app": "d"}},
                             "template": {"metadata": {"labels": {"app": "d"}},
                                          "spec": {"containers": containers, "volumes": [{"name": "v", "emptyDir": {}}],
                                                   "tolerations": [{"key": "t0", "operator": "Exists"}]}}}})
            })
    }

    fn patch() -> impl Strategy<Value = Value> {
        (
            prop::option::of(containers()),
            prop::option::of(prop::sample::subsequence(vec!["f1", "f4"], 0..=2)),
            prop::option::of(prop::sample::select(vec!["l1", "l3"])),
            any::<bool>(),
            prop::option::of(prop::sample::select(vec!["X", "Y"])),
        )
            .prop_map(|(containers, finalizers, label, tolerate, delete_env)| {
                let mut p = json!({"metadata": {}, "spec": {"template": {"spec": {}}}});
                if let Some(mut containers) = containers {
                    if let (Some(env), Some(first)) = (delete_env, containers.first_mut()) {
                        let mut list = first["env"].as_array().cloned().unwrap_or_default();
                        list.push(json!({"name": env, "$patch": "delete"}));
                        first["env"] = json!(list);
                    }
                    p["spec"]["template"]["spec"]["containers"] = json!(containers);
                }
                if let Some(f) = finalizers {
                    p["metadata"]["finalizers"] = json!(f);
                }
                if let Some(l) = label {
                    p["metadata"]["labels"] = json!({l: "patched", "l2": null});
                }
                if tolerate {
                    p["spec"]["template"]["spec"]["tolerations"] =
                        json!([{"key": "t1", "operator": "Exists"}]);
                }
                p
            })
    }

    #[test]
    fn fake_kube_merges_as_kubectl_does() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let cluster = runtime.block_on(testbed::Cluster::fake(
            "strategic",
            ClusterConfig::default(),
        ));
        let kubeconfig = cluster.kubeconfig().to_owned();
        let dir = cluster.dir().to_owned();
        let case = std::sync::atomic::AtomicUsize::new(0);
        let compare = [
            "/metadata/labels",
            "/metadata/finalizers",
            "/spec/template/spec/containers",
            "/spec/template/spec/tolerations",
        ];
        proptest!(ProptestConfig { cases: 24, ..ProptestConfig::default() }, |(original in deployment(), patch in patch())| {
            // A delete directive inside a container the object does not have is copied into the
            // result verbatim by apimachinery, an artifact no client relies on: not compared.
            let first = &patch["spec"]["template"]["spec"]["containers"][0];
            let deletes = first["env"].as_array().into_iter().flatten().any(|e| e.get("$patch").is_some());
            let known = original["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten().any(|c| c["name"] == first["name"]);
            prop_assume!(!deletes || known);
            let ns = format!("case{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let mut object = original.clone();
            object["metadata"]["namespace"] = json!(ns);
            let file = dir.join(format!("{ns}.json"));
            std::fs::write(&file, object.to_string()).unwrap();
            let patch_text = patch.to_string();
            let local = kubectl(&kubeconfig, &["patch", "--local", "-f", file.to_str().unwrap(), "--type", "strategic", "-p", &patch_text, "-o", "json"], "");
            prop_assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
            let expected: Value = serde_json::from_slice(&local.stdout).unwrap();
            prop_assert!(kubectl(&kubeconfig, &["create", "namespace", &ns], "").status.success());
            let created = kubectl(&kubeconfig, &["create", "-f", file.to_str().unwrap()], "");
            prop_assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
            let served = kubectl(&kubeconfig, &["patch", "deployment", "d", "-n", &ns, "--type", "strategic", "-p", &patch_text, "-o", "json"], "");
            prop_assert!(served.status.success(), "{}", String::from_utf8_lossy(&served.stderr));
            let served: Value = serde_json::from_slice(&served.stdout).unwrap();
            for pointer in compare {
                let absent_is_empty = |v: Option<&Value>| match v {
                    None | Some(Value::Null) => Value::Null,
                    Some(Value::Array(a)) if a.is_empty() => Value::Null,
                    Some(Value::Object(o)) if o.is_empty() => Value::Null,
                    Some(v) => v.clone(),
                };
                prop_assert_eq!(
                    absent_is_empty(served.pointer(pointer)),
                    absent_is_empty(expected.pointer(pointer)),
                    "{} after {}", pointer, patch_text
                );
            }
        });
        drop(cluster);
        runtime.shutdown_background();
    }
}

/// The CRD's CEL rules are evaluated at the door, as a real API server does: min above max
/// and a poll interval under a second are refused with the rule's message.
#[tokio::test(flavor = "multi_thread")]
async fn the_crd_s_cel_rules_refuse_what_the_operator_cannot_hold() {
    let cluster = cluster("kubectl-cel", true).await;
    let kubeconfig = cluster.kubeconfig();
    let pool = |name: &str, scaling: &str| {
        format!(
            "apiVersion: bbrunner.dev/v1alpha1\nkind: RunnerPool\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  workspace: acme\n  credentials: {{secretRef: {{name: c}}}}\n  dind: {{mtu: auto}}\n  scaling: {scaling}\n"
        )
    };
    for (scaling, message) in [
        (
            "{min: 5, max: 2}",
            "spec.scaling.min must not exceed spec.scaling.max",
        ),
        ("{pollInterval: 0s}", "pollInterval is at least 1s"),
    ] {
        let refused = kubectl(kubeconfig, &["apply", "-f", "-"], &pool("bad", scaling));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{scaling} accepted");
        assert!(stderr.contains(message), "{scaling}: {stderr}");
    }
    let bad_mtu = pool("bad", "{}").replace("mtu: auto", "mtu: 100");
    let refused = kubectl(kubeconfig, &["apply", "-f", "-"], &bad_mtu);
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("mtu is auto or a number from 576 to 9216")
    );
    let accepted = kubectl(
        kubeconfig,
        &["apply", "-f", "-"],
        &pool("good", "{min: 1, max: 3, pollInterval: 15s}"),
    );
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}
