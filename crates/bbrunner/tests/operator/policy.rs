//! The cluster admin's policy for RunnerPools (a RunnerPool is a privileged pod): `install
//! --allowed-image ... --restrict-pod-fields` ships a ValidatingAdmissionPolicy, which
//! fake-kube enforces with the same CEL engine as the API server's rules, and passes the
//! same policy to the operator, which refuses what got in before the policy existed.

use super::*;

const ALLOWED: &str = "docker-public.packages.atlassian.com/sox/atlassian/*,docker:*-dind";

fn install_with_policy() -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args([
            "install",
            "--allowed-image",
            ALLOWED,
            "--restrict-pod-fields",
            "--max-cache-size",
            "100Gi",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

async fn apply_admission_policy(client: &Client, docs: &[Value]) {
    for (kind, plural) in [
        ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
        (
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
        ),
    ] {
        let doc = docs.iter().find(|d| d["kind"] == kind).unwrap();
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
            plural,
        );
        Api::<DynamicObject>::all_with(client.clone(), &resource)
            .create(
                &PostParams::default(),
                &serde_json::from_value(doc.clone()).unwrap(),
            )
            .await
            .unwrap();
    }
}

/// The operator arguments of the install's Deployment that carry the policy.
fn policy_args(docs: &[Value]) -> Vec<String> {
    super::rbac::deployment_args(docs, |a| {
        a.starts_with("--allowed-image")
            || a == "--restrict-pod-fields"
            || a.starts_with("--max-cache-size")
    })
}

async fn refused(world: &World, name: &str, spec: Value) -> String {
    let pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    match world.pools().create(&PostParams::default(), &pool).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            status.message
        }
        other => panic!("pool {name} was admitted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_policy_refuses_pools_at_admission_and_in_the_operator() {
    let world = World::start("policy").await;
    let docs = install_with_policy();
    let args = policy_args(&docs);
    assert_eq!(args.len(), 4, "{args:?}");

    // Created before the policy existed: the operator must refuse it itself.
    let mut early = managed(1, 2);
    early["dind"] = json!({"image": "evil.example.com/dind:latest"});
    world.pool("early", early).await;
    let mut early_cache = managed(1, 2);
    early_cache["cache"] = json!({"size": "1Ti"});
    world.pool("early-cache", early_cache).await;

    apply_admission_policy(&world.client, &docs).await;
    let mut bad_image = managed(1, 1);
    bad_image["runner"] = json!({"image": "evil.example.com/runner:1"});
    let message = refused(&world, "bad-image", bad_image).await;
    assert!(
        message.contains("spec.runner.image is not allowed") && message.contains("docker:*-dind"),
        "{message}"
    );
    let mut account = managed(1, 1);
    account["podTemplate"] = json!({"serviceAccountName": "admin"});
    let message = refused(&world, "account", account).await;
    assert!(
        message.contains("spec.podTemplate.serviceAccountName"),
        "{message}"
    );
    let mut secret_env = managed(1, 1);
    secret_env["runner"] = json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "other", "key": "token"}}}]});
    let message = refused(&world, "secret-env", secret_env).await;
    assert!(message.contains("secretKeyRef"), "{message}");
    // Quantities compare by value, not by text: 200G is more than 100Gi, 100Gi is not.
    let mut big_cache = managed(1, 1);
    big_cache["cache"] = json!({"size": "200G"});
    let message = refused(&world, "big-cache", big_cache).await;
    assert!(
        message.contains("spec.cache.size is more than") && message.contains("at most 100Gi"),
        "{message}"
    );
    let mut bounded = managed(1, 1);
    bounded["cache"] = json!({"size": "100Gi"});
    world.pool("bounded-cache", bounded).await;

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _op = world.operator(&args);
    world.pool("builds", managed(1, 2)).await;
    eventually("the allowed pool's runner online", 30, || async {
        world
            .runners()
            .iter()
            .any(|r| r["state"] == "ONLINE" && r["name"].as_str().unwrap().contains(".builds."))
    })
    .await;
    eventually("the early pool Degraded naming its field", 20, || async {
        world
            .has_condition(
                "early",
                "Degraded",
                "True",
                "PolicyViolation",
                "spec.dind.image",
            )
            .await
    })
    .await;
    eventually(
        "the early cached pool Degraded naming its field",
        20,
        || async {
            world
                .has_condition(
                    "early-cache",
                    "Degraded",
                    "True",
                    "PolicyViolation",
                    "spec.cache.size",
                )
                .await
        },
    )
    .await;
    assert!(
        !world
            .runners()
            .iter()
            .any(|r| r["name"].as_str().unwrap().contains(".early.")),
        "the operator created a runner for a pool the policy refuses"
    );
    // Its finalizer comes off through the admission policy: only spec changes are judged.
    world.delete_pool("early").await;
    eventually("the refused pool deleted", 20, || async {
        world.pool_gone("early").await
    })
    .await;
}
