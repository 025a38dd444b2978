//! Conformance: the real `kube` client against fake-kube, for every semantic the operator
//! relies on.

use std::collections::BTreeMap;
use std::time::Duration;

use fake_kube::{ClusterConfig, FakeKube};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Config};
use serde_json::json;

async fn start(config: ClusterConfig) -> (FakeKube, Client) {
    let fake = FakeKube::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&fake.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    (fake, client)
}

async fn fast() -> (FakeKube, Client) {
    start(ClusterConfig {
        pod_start_latency: Duration::from_millis(100),
        ..ClusterConfig::default()
    })
    .await
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not reached within 5 s");
}

#[tokio::test]
async fn crud_conflicts_and_patches() {
    let (_fake, client) = fast().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    api.create(&PostParams::default(), &cm("b", &[("app", "y")]))
        .await
        .unwrap();
    let err = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    let listed = api
        .list(&ListParams::default().labels("app in (x,z)"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let listed = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("b"));

    // Optimistic concurrency: a stale resourceVersion conflicts.
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.data = Some(BTreeMap::from([("k".into(), "fresh".into())]));
    api.replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    stale.data = Some(BTreeMap::from([("k".into(), "stale".into())]));
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    let merged = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.unwrap()["m"], "1");
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "jp"}]))
            .unwrap();
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "jp");

    // Server-side apply creates, then merges, recording the field manager.
    let ssa = PatchParams::apply("bbrunner-test").force();
    let applied = api.patch("c", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}))).await.unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["a"], "1");
    let applied = api.patch("c", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"b": "2"}}))).await.unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["b"], "2");
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"bbrunner-test".to_string()));

    api.delete("c", &DeleteParams::default()).await.unwrap();
    let err = api.get("c").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"));
    let missing_ns: Api<ConfigMap> = Api::namespaced(client, "nope");
    let err = missing_ns
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404));
}

#[tokio::test]
async fn validation_errors_are_status_bodies_naming_the_field() {
    let (_fake, client) = fast().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let err = api
        .create(&PostParams::default(), &cm("Bad_Name", &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.reason == "Invalid" && s.message.contains("metadata.name")),
        "{err:?}"
    );
    let err = api
        .create(&PostParams::default(), &cm("ok", &[("k", "{braces}")]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("metadata.labels")),
        "{err:?}"
    );
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .unwrap();
    let err = pods.create(&PostParams::default(), &pod).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.message.contains("spec.containers[0].image")),
        "{err:?}"
    );
}

#[tokio::test]
async fn watches_resume_and_expire_with_410() {
    let (_fake, client) = start(ClusterConfig {
        event_log_len: 20,
        ..ClusterConfig::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = api
        .create(&PostParams::default(), &cm("w0", &[]))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &cm("w1", &[]))
        .await
        .unwrap();
    // Resume from `rv`: the watch replays w1's creation.
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("w1")),
        other => panic!("{other:?}"),
    }
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(o)) => assert_eq!(o.metadata.name.as_deref(), Some("w1")),
        other => panic!("{other:?}"),
    }
    // Push rv out of the event log.
    for i in 2..40 {
        api.create(&PostParams::default(), &cm(&format!("w{i}"), &[]))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("{other:?}"),
    }
    // timeoutSeconds ends a watch.
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    let started = std::time::Instant::now();
    while stream.try_next().await.unwrap().is_some() {}
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_reflector_follows_the_cluster_through_dropped_watches() {
    let (fake, client) = fast().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().labels("app=r")),
    )
    .applied_objects()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    api.create(&PostParams::default(), &cm("r1", &[("app", "r")]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("other", &[("app", "s")]))
        .await
        .unwrap();
    eventually("r1 in the store", || async {
        reader
            .state()
            .iter()
            .any(|o| o.metadata.name.as_deref() == Some("r1"))
    })
    .await;
    fake.cluster().drop_watches();
    api.create(&PostParams::default(), &cm("r2", &[("app", "r")]))
        .await
        .unwrap();
    api.delete("r1", &DeleteParams::default()).await.unwrap();
    eventually("the store follows after the drop", || async {
        let names: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        names == ["r2"]
    })
    .await;
}

#[tokio::test]
async fn metadata_only_lists_and_watches_carry_no_data() {
    let (fake, client) = fast().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("m1", &[("app", "m")]))
        .await
        .unwrap();
    let listed = api
        .list_metadata(&ListParams::default().labels("app=m"))
        .await
        .unwrap();
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(names, ["m1"]);
    // The raw answer is PartialObjectMetadata: no data travels.
    let raw: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?labelSelector=app%3Dm",
            fake.url()
        ))
        .header(
            "Accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["kind"], "PartialObjectMetadataList");
    assert!(raw["items"][0].get("data").is_none(), "{raw}");

    let metadata: Api<PartialObjectMeta<ConfigMap>> =
        Api::namespaced(api.clone().into_client(), "default");
    let mut events = watcher(metadata, watcher::Config::default().labels("app=m"))
        .touched_objects()
        .boxed();
    let first = events.try_next().await.unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m1"));
    api.create(&PostParams::default(), &cm("m2", &[("app", "m")]))
        .await
        .unwrap();
    let next = events.try_next().await.unwrap().unwrap();
    assert_eq!(next.metadata.name.as_deref(), Some("m2"));
    assert_eq!(next.metadata.labels.unwrap()["app"], "m");
}

#[tokio::test]
async fn a_custom_resource_definition_serves_its_kind_until_deleted() {
    let (_fake, client) = fast().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.dev"},
        "spec": {
            "group": "example.dev", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = created.status.unwrap().conditions.unwrap();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let gvk = GroupVersionKind::gvk("example.dev", "v1", "Widget");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.dev/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 1}, "status": {"ignored": true},
    }))
    .unwrap();
    // How spec, status and generation split is in the differential suite, on this server too.
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    assert_eq!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    crds.delete("widgets.example.dev", &DeleteParams::default())
        .await
        .unwrap();
    assert!(widgets.list(&ListParams::default()).await.is_err());
}

#[tokio::test]
async fn pods_are_scheduled_by_requests_and_run() {
    let (_fake, client) = start(ClusterConfig {
        nodes: 2,
        node_memory: "8Gi".into(),
        pod_start_latency: Duration::from_millis(100),
        ..ClusterConfig::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, memory: &str| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"memory": memory}}}]}}),
        )
        .unwrap()
    };
    pods.create(&PostParams::default(), &pod("small", "1Gi"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("huge", "20Gi"))
        .await
        .unwrap();
    eventually("small runs", || async {
        let p = pods.get("small").await.unwrap();
        let status = p.status.unwrap_or_default();
        status.phase.as_deref() == Some("Running")
            && status.pod_ip.is_some()
            && status.qos_class.as_deref() == Some("Burstable")
    })
    .await;
    eventually("huge is unschedulable", || async {
        let p = pods.get("huge").await.unwrap();
        p.status.and_then(|s| s.conditions).is_some_and(|c| {
            c.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("Insufficient memory"))
            })
        })
    })
    .await;
    pods.delete("small", &DeleteParams::default())
        .await
        .unwrap();
    eventually("small is gone", || async {
        pods.get_opt("small").await.unwrap().is_none()
    })
    .await;

    // Deleting a namespace deletes what is in it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "temp"}})).unwrap(),
        )
        .await
        .unwrap();
    let in_temp: Api<Pod> = Api::namespaced(client, "temp");
    in_temp
        .create(&PostParams::default(), &pod("p", "1Gi"))
        .await
        .unwrap();
    namespaces
        .delete("temp", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace and its pod are gone", || async {
        namespaces.get_opt("temp").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn injected_faults_and_outages_answer_like_an_api_server() {
    let (fake, client) = fast().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    fake.cluster().set_faults(fake_kube::Faults {
        error_rates: [("list".to_string(), 1.0)].into(),
        ..Default::default()
    });
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500),
        "{err:?}"
    );
    api.create(&PostParams::default(), &cm("fine", &[]))
        .await
        .unwrap();
    fake.cluster().set_faults(Default::default());
    // An outage answers 503 (checked over plain HTTP: the kube client retries 503 itself,
    // and rides out this short outage).
    fake.cluster().outage(Duration::from_millis(500));
    let url = format!("{}/api/v1/namespaces/default/configmaps/fine", fake.url());
    let status = reqwest::get(&url).await.unwrap().status();
    assert_eq!(status.as_u16(), 503);
    api.get("fine").await.unwrap();
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 200);
}

#[tokio::test]
async fn paging_generate_name_node_loss_and_kills() {
    let (fake, client) = fast().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("page{i}"), &[]))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().unwrap();
    let rest = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 3);
    assert!(rest.metadata.continue_.is_none());

    let mut generated = cm("", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let made = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(made.metadata.name.unwrap().starts_with("gen-"));

    let pods: Api<Pod> = Api::namespaced(client, "default");
    for name in ["victim", "stranded"] {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "node-2"}, "containers": [{"name": "c", "image": "i"}]}})).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    eventually("both run on node-2", || async {
        let all = pods.list(&ListParams::default()).await.unwrap();
        all.items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count()
            == 2
    })
    .await;
    let killed = reqwest::Client::new()
        .post(format!("{}/_fake/pods/default/victim/kill", fake.url()))
        .send()
        .await
        .unwrap();
    assert!(killed.status().is_success());
    assert!(pods.get_opt("victim").await.unwrap().is_none());
    reqwest::Client::new()
        .post(format!("{}/_fake/nodes/node-2/remove", fake.url()))
        .send()
        .await
        .unwrap();
    eventually("a pod on a removed node fails", || async {
        let p = pods.get("stranded").await.unwrap();
        let s = p.status.unwrap_or_default();
        s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("NodeLost")
    })
    .await;
}

#[tokio::test]
async fn shapes_as_the_api_server_writes_them() {
    use k8s_openapi::api::core::v1::Secret;
    let (_fake, client) = fast().await;
    // No generation on kinds without a spec a controller acts on.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "shapes"}})).unwrap();
    let ns = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(ns.metadata.generation, None);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shapes");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))
            .unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, None);
    // A foreground delete marks the object and answers with it, then it goes.
    let deleted = secrets
        .delete("s", &DeleteParams::foreground())
        .await
        .unwrap();
    let marked = deleted.left().expect("the marked object, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_owned()][..])
    );
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    eventually("the Secret gone", || async {
        secrets.get_opt("s").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn server_side_apply_tracks_managers_conflicts_and_forces() {
    let (_fake, client) = fast().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config = |data: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": data});
    let ci = PatchParams::apply("ci");
    api.patch(
        "ssa",
        &ci,
        &Patch::Apply(config(json!({"a": "1", "b": "2"}))),
    )
    .await
    .unwrap();
    // Another client changes a field ci owns.
    api.patch(
        "ssa",
        &PatchParams {
            field_manager: Some("editor".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"data": {"a": "9"}})),
    )
    .await
    .unwrap();
    let err = api
        .patch(
            "ssa",
            &ci,
            &Patch::Apply(config(json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.message.contains("conflict with \"editor\"") && s.message.contains(".data.a")),
        "{err:?}"
    );
    // Forced, ci takes the field back; dropping b from its configuration removes it.
    let forced = api
        .patch(
            "ssa",
            &ci.clone().force(),
            &Patch::Apply(config(json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        forced.data.unwrap(),
        BTreeMap::from([("a".to_owned(), "1".to_owned())])
    );
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["ci"]);
}
