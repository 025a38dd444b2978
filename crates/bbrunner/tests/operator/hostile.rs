//! Hostile pod templates: keys of the operator's own bookkeeping (a pod's pool, runner,
//! template revision, whether it ran a step) set by a pool's author.

use super::*;

/// Refused at admission by the CRD's rules, and by the operator for a pool stored before them
/// (Degraded naming the field and the key, no runner, no pod).
async fn reserved_keys_are_refused_at_admission_and_by_the_operator(world: &World) {
    let templates = [
        (
            "labels",
            json!({"labels": {"team": "web", "bbrunner.dev/pool": "someone-else"}}),
        ),
        (
            "annotations",
            json!({"annotations": {"ci.bbrunner.dev/ran-step": "true"}}),
        ),
    ];
    let pool = |name: &str, template: &Value| -> DynamicObject {
        let mut spec = managed(1, 1);
        spec["podTemplate"] = template.clone();
        serde_json::from_value(
            json!({"apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    };
    for (field, template) in &templates {
        let message = world
            .refused_at_admission(&pool(&format!("own-{field}"), template))
            .await;
        assert!(
            message.contains(&format!("spec.podTemplate.{field}"))
                && message.contains("bbrunner.dev/"),
            "{message}"
        );
    }
    // Keys of other domains pass.
    world
        .pools()
        .create(
            &PostParams::default(),
            &pool(
                "fine",
                &json!({"labels": {"bbrunner.dev.example.com/x": "1"}}),
            ),
        )
        .await
        .unwrap();
    world.delete_pool("fine").await;

    // Stored before the rules existed: the operator refuses them itself.
    let stored: Vec<(String, Value, String)> = templates
        .iter()
        .zip(["bbrunner.dev/pool", "ci.bbrunner.dev/ran-step"])
        .map(|((field, template), key)| {
            (
                format!("own-{field}"),
                pool(&format!("own-{field}"), template).data["spec"].clone(),
                format!("spec.podTemplate.{field} has \"{key}\""),
            )
        })
        .collect();
    the_operator_refuses_what_the_rules_would(
        world,
        |schema| {
            let template = &mut schema["properties"]["spec"]["properties"]["podTemplate"];
            for field in ["labels", "annotations"] {
                template["properties"][field]
                    .as_object_mut()
                    .unwrap()
                    .remove("x-kubernetes-validations");
            }
        },
        &stored,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_keys_in_the_pod_template_are_refused_on_fake_kube() {
    let world = World::start("reserved-keys").await;
    reserved_keys_are_refused_at_admission_and_by_the_operator(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_keys_in_the_pod_template_are_refused_on_a_real_control_plane() {
    let Some(world) = World::real("real-reserved-keys").await else {
        return;
    };
    reserved_keys_are_refused_at_admission_and_by_the_operator(&world).await;
}

/// Three static pools list one runner's registration: two in the same namespace on one
/// Secret, one on a copy in another namespace. One pod at a time runs the runner, from start
/// to end; the others are Degraded naming the pool that holds it, and one takes over when
/// that pool goes.
#[tokio::test(flavor = "multi_thread")]
async fn static_pools_sharing_a_registration_run_one_pod() {
    let world = World::start("shared-registration").await;
    let registration = world.runner_from_the_ui(&["self.hosted", "linux"]);
    world.secret("ui-runner", registration.clone()).await;
    let other = "team-b";
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": other}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(world.client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let copy: Secret = serde_json::from_value(
        json!({"metadata": {"name": "ui-runner"}, "stringData": registration}),
    )
    .unwrap();
    Api::<Secret>::namespaced(world.client.clone(), other)
        .create(&PostParams::default(), &copy)
        .await
        .unwrap();
    let spec = json!({"workspace": "acme", "mode": "static", "staticRunners": [{"secretRef": {"name": "ui-runner"}}]});
    let pool = |name: &str| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    };
    // All three exist before the operator starts: it meets them at once.
    world.pool("first", spec.clone()).await;
    world.pool("second", spec.clone()).await;
    let elsewhere: Api<DynamicObject> =
        Api::namespaced_with(world.client.clone(), other, &pools_resource());
    elsewhere
        .create(&PostParams::default(), &pool("third"))
        .await
        .unwrap();
    let _op = world.operator(&[]);
    let all_pods: Api<Pod> = Api::all(world.client.clone());
    // The runner's live pods, by pool (namespace/name).
    let live = || async {
        all_pods
            .list(&ListParams::default().labels("bbrunner.dev/pool"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.labels.unwrap_or_default()["bbrunner.dev/pool"]
                )
            })
            .collect::<Vec<String>>()
    };
    let mut holder = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && (holder.is_none() || online(&world.runners()) == 0) {
        let pods = live().await;
        assert!(pods.len() <= 1, "two pods for one runner: {pods:?}");
        holder = pods.into_iter().next();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let holder = holder.expect("no pool ran the runner");
    assert_eq!(online(&world.runners()), 1, "the runner never came online");
    let degraded = |namespace: &'static str, name: &'static str| {
        let api: Api<DynamicObject> =
            Api::namespaced_with(world.client.clone(), namespace, &pools_resource());
        let holder = holder.clone();
        async move {
            let pool = api.get(name).await.unwrap();
            let conditions = pool.data["status"]["conditions"].as_array().cloned();
            conditions.into_iter().flatten().any(|c| {
                c["type"] == "Degraded"
                    && c["status"] == "True"
                    && c["reason"] == "RegistrationInUse"
                    && c["message"].as_str().is_some_and(|m| {
                        m.contains(&format!("which pool {holder} already runs"))
                            && m.contains("spec.staticRunners[0]")
                    })
            })
        }
    };
    let others: Vec<(&'static str, &'static str)> =
        [(NS, "first"), (NS, "second"), (other, "third")]
            .into_iter()
            .filter(|(ns, name)| format!("{ns}/{name}") != holder)
            .collect();
    for (namespace, name) in &others {
        eventually(
            &format!("{namespace}/{name} Degraded naming {holder}"),
            20,
            || degraded(namespace, name),
        )
        .await;
    }
    assert_eq!(live().await.len(), 1);
    assert!(
        world.runners().iter().all(|r| r["dup"] == 0),
        "two agents polled as one runner"
    );
    // The holder goes: one of the others takes the runner over, still one pod at a time.
    let (holder_ns, holder_name) = holder.split_once('/').unwrap();
    Api::<DynamicObject>::namespaced_with(world.client.clone(), holder_ns, &pools_resource())
        .delete(holder_name, &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut successor = None;
    while Instant::now() < deadline {
        let pods = live().await;
        assert!(pods.len() <= 1, "two pods for one runner: {pods:?}");
        if let Some(pod) = pods.first().filter(|p| **p != holder) {
            successor = Some(pod.clone());
            if online(&world.runners()) == 1 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let successor = successor.expect("no other pool took the runner over");
    assert!(
        others
            .iter()
            .any(|(ns, name)| format!("{ns}/{name}") == successor),
        "{successor}"
    );
    assert!(
        world.runners().iter().all(|r| r["dup"] == 0),
        "two agents polled as one runner"
    );
}

/// 1,500 connections to the metrics port sending their headers slowly, as a slowloris
/// would: `/readyz` still answers (the kubelet would otherwise restart a healthy operator),
/// the operator stays small, and the server closes at least nine in ten of them within a
/// minute.
#[tokio::test(flavor = "multi_thread")]
async fn slow_connections_leave_readyz_answering_and_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let world = World::start("slowloris").await;
    let addr = free_local_addr();
    let op = world.operator(&["--metrics-addr", &addr]);
    eventually("the operator ready", 20, || async {
        reqwest::get(format!("http://{addr}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..1500 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // Headers started and never finished.
        let _ = stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await;
        slow.push(stream);
    }
    let ready = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::get(format!("http://{addr}/readyz")),
    )
    .await;
    assert!(
        matches!(&ready, Ok(Ok(r)) if r.status().is_success()),
        "/readyz did not answer under 1,500 slow connections: {ready:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", op.0.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kib <= 120 * 1024, "the operator holds {rss_kib} KiB");
    // Within a minute (the header deadline is 10 s), the server has closed them.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut closed = 0;
    for stream in &mut slow {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await {
            // End of stream, a reset, or an answer (a 408) before the close: the server's doing.
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => {
                if matches!(
                    tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                ) {
                    closed += 1;
                }
            }
            Err(_) => {}
        }
    }
    assert!(
        closed * 10 >= slow.len() * 9,
        "{closed} of {} closed",
        slow.len()
    );
}
