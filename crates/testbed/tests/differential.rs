//! One suite, two API servers: every behaviour the operator relies on is checked against
//! fake-kube and against a real kube-apiserver (the shared control plane of this process, see
//! `testbed::cluster`). Each check asserts what Kubernetes does; where fake-kube differs on
//! purpose, the check asks `differs()`, and `DIFFERENCES` lists every such case once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, ServiceAccount,
};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use testbed::{Backend, Cluster};

/// Where fake-kube differs from a real API server on purpose, and why. Each is asserted by
/// the check that meets it: true on fake-kube, false on the real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Difference {
    /// A watch with `allowWatchBookmarks` gets a BOOKMARK every second, where a real server
    /// sends one about every minute: tests do not wait a minute.
    BookmarkEverySecond,
    /// A Deployment's pods are made directly, without a ReplicaSet between them.
    NoReplicaSets,
}

const DIFFERENCES: [Difference; 2] = [Difference::BookmarkEverySecond, Difference::NoReplicaSets];

fn differs(cluster: &Cluster, difference: Difference) -> bool {
    assert!(DIFFERENCES.contains(&difference));
    cluster.backend() == Backend::Fake
}

async fn fake(name: &str) -> Cluster {
    Cluster::fake(
        name,
        fake_kube::ClusterConfig {
            // Small, so that a test can make a watch's resourceVersion expire.
            event_log_len: 64,
            pod_start_latency: Duration::from_millis(200),
            rbac: true,
            nodes: 1,
            ..fake_kube::ClusterConfig::default()
        },
    )
    .await
}

/// A namespace of the test's own.
async fn namespace(cluster: &Cluster, test: &str) -> String {
    let name = format!("t-{}", test.replace('_', "-"))
        .chars()
        .take(50)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned();
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    // Pods need the namespace's default ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), &name);
    eventually("the default ServiceAccount", || async {
        accounts.get_opt("default").await.ok().flatten().is_some()
    })
    .await;
    name
}

async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether pod `name` is in `phase`.
async fn in_phase(pods: &Api<Pod>, name: &str, phase: &str) -> bool {
    pods.get(name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.phase)
        .as_deref()
        == Some(phase)
}

fn config_map(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

/// A ConfigMap `name` that a finalizer holds once deleted, until `release`.
async fn hold(api: &Api<ConfigMap>, name: &str) {
    let mut held = config_map(name, json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
}

async fn release(api: &Api<ConfigMap>, name: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

macro_rules! differential {
    ($($check:ident),* $(,)?) => {
        mod on_fake_kube {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let cluster = super::fake(stringify!($check)).await;
                    let ns = super::namespace(&cluster, stringify!($check)).await;
                    super::$check(&cluster, &ns).await;
                }
            )*
        }
        mod on_kube_apiserver {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(cluster) = testbed::Cluster::shared_real(stringify!($check)).await else {
                        return;
                    };
                    let ns = super::namespace(&cluster, stringify!($check)).await;
                    super::$check(&cluster, &ns).await;
                }
            )*
        }
    };
}

differential!(
    server_side_apply_tracks_owners_and_refuses_conflicts,
    a_stale_resource_version_is_a_conflict,
    watches_resume_stream_initial_events_and_expire,
    finalizers_hold_a_deleted_object,
    owner_references_collect_garbage_in_the_background_and_foreground,
    a_deleted_namespace_empties_and_refuses_new_content,
    custom_resources_are_pruned_defaulted_and_strictly_validated,
    the_status_subresource_splits_spec_and_status,
    leases_renew_with_optimistic_concurrency,
    events_are_served_by_both_apis_and_kubectl_prints_their_columns,
    rbac_refusals_name_the_user_verb_and_resource,
    tables_carry_printer_columns,
    a_validating_admission_policy_refuses_with_its_message,
    pods_are_scheduled_run_and_deleted_gracefully,
    deployments_run_their_pods,
    claims_bind_hold_their_pods_and_protect_themselves,
);

async fn server_side_apply_tracks_owners_and_refuses_conflicts(cluster: &Cluster, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns);
    let apply = |manager: &str, force: bool| {
        let mut p = PatchParams::apply(manager);
        p.force = force;
        p
    };
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": data});
    api.patch(
        "ssa",
        &apply("alice", false),
        &Patch::Apply(cm(json!({"a": "1", "b": "1"}))),
    )
    .await
    .unwrap();
    let refused = api_error(
        api.patch(
            "ssa",
            &apply("bob", false),
            &Patch::Apply(cm(json!({"a": "2"}))),
        )
        .await,
    );
    assert_eq!(refused.code, 409);
    assert_eq!(refused.reason, "Conflict");
    assert!(
        refused.message.contains("conflict with \"alice\"") && refused.message.contains(".data.a"),
        "{}",
        refused.message
    );
    let forced = api
        .patch(
            "ssa",
            &apply("bob", true),
            &Patch::Apply(cm(json!({"a": "2"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "2");
    let owners = |cm: &ConfigMap, field: &str| -> Vec<String> {
        cm.managed_fields()
            .iter()
            .filter(|m| {
                m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0["f:data"].get(format!("f:{field}")).is_some())
            })
            .filter_map(|m| m.manager.clone())
            .collect()
    };
    assert_eq!(owners(&forced, "a"), ["bob"]);
    assert_eq!(owners(&forced, "b"), ["alice"]);
    // Alice stops applying b: it goes, since she alone owned it; a stays, bob's.
    let after = api
        .patch("ssa", &apply("alice", false), &Patch::Apply(cm(json!({}))))
        .await
        .unwrap();
    let data = after.data.clone().unwrap_or_default();
    assert_eq!(data.get("a").map(String::as_str), Some("2"));
    assert!(!data.contains_key("b"), "{data:?}");
    let operations: Vec<_> = after
        .managed_fields()
        .iter()
        .map(|m| m.operation.clone().unwrap_or_default())
        .collect();
    assert!(operations.iter().all(|o| o == "Apply"), "{operations:?}");
}

async fn a_stale_resource_version_is_a_conflict(cluster: &Cluster, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns);
    let created = api
        .create(
            &PostParams::default(),
            &config_map("stale", json!({"a": "1"})),
        )
        .await
        .unwrap();
    let mut next = created.clone();
    next.data = Some([("a".to_owned(), "2".to_owned())].into());
    api.replace("stale", &PostParams::default(), &next)
        .await
        .unwrap();
    // Written again from the first copy: its resourceVersion is no longer current.
    let refused = api_error(api.replace("stale", &PostParams::default(), &next).await);
    assert_eq!(refused.code, 409);
    assert_eq!(refused.reason, "Conflict");
    assert_eq!(
        refused.message,
        "Operation cannot be fulfilled on configmaps \"stale\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let details = refused.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("stale", "configmaps")
    );
}

async fn watches_resume_stream_initial_events_and_expire(cluster: &Cluster, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns);
    let first = api
        .create(&PostParams::default(), &config_map("w0", json!({})))
        .await
        .unwrap();
    let from = first.resource_version().unwrap();
    // Resumed from a resourceVersion: what happened after it, in order.
    api.create(&PostParams::default(), &config_map("w1", json!({})))
        .await
        .unwrap();
    api.delete("w0", &DeleteParams::default()).await.unwrap();
    // (A real cluster also publishes its CA in every new namespace, at any moment.)
    let seen: Vec<String> = api
        .watch(
            &WatchParams::default().timeout(2).disable_bookmarks(),
            &from,
        )
        .await
        .unwrap()
        .map(|e| match e.unwrap() {
            WatchEvent::Added(cm) => format!("added {}", cm.name_any()),
            WatchEvent::Deleted(cm) => format!("deleted {}", cm.name_any()),
            other => format!("{other:?}"),
        })
        .filter(|e| std::future::ready(!e.ends_with("kube-root-ca.crt")))
        .take(2)
        .collect()
        .await;
    assert_eq!(seen, ["added w1", "deleted w0"]);

    // A streaming list: the current objects, then a bookmark marking their end.
    let params = WatchParams::streaming_lists().timeout(3);
    let mut stream = api.watch(&params, "0").await.unwrap().boxed();
    let mut added = Vec::new();
    loop {
        match stream
            .next()
            .await
            .expect("the initial events end")
            .unwrap()
        {
            WatchEvent::Added(cm) => added.push(cm.name_any()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // (A real cluster also publishes its CA in every namespace.)
    added.retain(|name| name != "kube-root-ca.crt");
    assert_eq!(added, ["w1"]);

    // Bookmarks on a plain watch.
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let bookmarked = api
        .watch(&WatchParams::default().timeout(3), &rv)
        .await
        .unwrap()
        .any(|e| async move { matches!(e, Ok(WatchEvent::Bookmark(_))) })
        .await;
    assert_eq!(
        bookmarked,
        differs(cluster, Difference::BookmarkEverySecond)
    );

    // A resourceVersion the server no longer has: 410 Expired, in the stream.
    let old = from.clone();
    for i in 0..80 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("churn-{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let started = Instant::now();
    let expired = loop {
        let first = api
            .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &old)
            .await
            .unwrap()
            .boxed()
            .next()
            .await;
        if let Some(Ok(WatchEvent::Error(e))) = first {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the watch never expired"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((expired.code, expired.reason.as_str()), (410, "Expired"));
    // A relist gives a resourceVersion to watch from again.
    let relisted = api.list(&ListParams::default()).await.unwrap();
    let rv = relisted.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &config_map("after", json!({})))
        .await
        .unwrap();
    let next = api
        .watch(&WatchParams::default().timeout(2).disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed()
        .next()
        .await;
    assert!(
        matches!(next, Some(Ok(WatchEvent::Added(ref cm))) if cm.name_any() == "after"),
        "{next:?}"
    );
}

async fn finalizers_hold_a_deleted_object(cluster: &Cluster, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns);
    hold(&api, "held").await;
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = api.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    // No new finalizer on an object being deleted.
    let refused = api_error(
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/late"}]))
                    .unwrap(),
            ),
        )
        .await,
    );
    assert_eq!(refused.code, 422, "{}", refused.message);
    assert!(
        refused
            .message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        refused.message
    );
    release(&api, "held").await;
    eventually("the released object goes", || async {
        api.get_opt("held").await.unwrap().is_none()
    })
    .await;
}

async fn owner_references_collect_garbage_in_the_background_and_foreground(
    cluster: &Cluster,
    ns: &str,
) {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns);
    let owned = |name: &str, owner: &ConfigMap| {
        let mut cm = config_map(name, json!({}));
        cm.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "name": owner.name_any(), "uid": owner.uid().unwrap(), "blockOwnerDeletion": true}))
            .unwrap(),
        ]);
        cm
    };
    for (policy, params) in [
        ("background", DeleteParams::background()),
        ("foreground", DeleteParams::foreground()),
        ("orphan", DeleteParams::orphan()),
    ] {
        let owner = api
            .create(
                &PostParams::default(),
                &config_map(&format!("{policy}-owner"), json!({})),
            )
            .await
            .unwrap();
        let dependent = format!("{policy}-dependent");
        api.create(&PostParams::default(), &owned(&dependent, &owner))
            .await
            .unwrap();
        let deleted = api.delete(&owner.name_any(), &params).await.unwrap().left();
        if policy == "foreground" {
            let marked = deleted.expect("kept while its dependents go");
            assert!(marked.metadata.deletion_timestamp.is_some());
            assert_eq!(
                marked.metadata.finalizers,
                Some(vec!["foregroundDeletion".to_owned()])
            );
        }
        eventually(&format!("{policy}: the owner goes"), || async {
            api.get_opt(&owner.name_any()).await.unwrap().is_none()
        })
        .await;
        if policy == "orphan" {
            eventually("orphan: the dependent loses its owner", || async {
                api.get(&dependent)
                    .await
                    .unwrap()
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .is_empty()
            })
            .await;
        } else {
            eventually(&format!("{policy}: the dependent goes"), || async {
                api.get_opt(&dependent).await.unwrap().is_none()
            })
            .await;
        }
    }
}

async fn a_deleted_namespace_empties_and_refuses_new_content(cluster: &Cluster, ns: &str) {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns);
    hold(&api, "held").await;
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    namespaces
        .delete(ns, &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get(ns).await.unwrap();
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let refused = api_error(
        api.create(&PostParams::default(), &config_map("late", json!({})))
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert!(
        refused.message.contains(&format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        )),
        "{}",
        refused.message
    );
    eventually("the held object is marked", || async {
        api.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    release(&api, "held").await;
    eventually("the namespace goes", || async {
        namespaces.get_opt(ns).await.unwrap().is_none()
    })
    .await;
}

fn widgets() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.bbrunner.dev", "v1", "Widget"),
        "widgets",
    )
}

/// A CRD of the suite's own, installed once per cluster.
async fn install_widgets(cluster: &Cluster) {
    let crds: Api<DynamicObject> = Api::all_with(
        cluster.client(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.bbrunner.dev"},
        "spec": {"group": "test.bbrunner.dev", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "default": 3, "maximum": 10},
                        "color": {"type": "string"},
                    }},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                }}}}]},
    });
    let applied = crds
        .patch(
            "widgets.test.bbrunner.dev",
            &PatchParams::apply("differential"),
            &Patch::Apply(crd),
        )
        .await;
    applied.unwrap();
    let api: Api<DynamicObject> = Api::all_with(cluster.client(), &widgets());
    eventually("the CRD is served", || async {
        api.list(&ListParams::default()).await.is_ok()
    })
    .await;
}

async fn custom_resources_are_pruned_defaulted_and_strictly_validated(cluster: &Cluster, ns: &str) {
    install_widgets(cluster).await;
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), ns, &widgets());
    let widget = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "test.bbrunner.dev/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    };
    // Unknown fields are dropped (with a warning) and defaults filled in.
    let created = api
        .create(
            &PostParams::default(),
            &widget("pruned", json!({"color": "red", "shape": "round"})),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"], json!({"color": "red", "size": 3}));
    // Strict validation (`kubectl create --validate=strict`) refuses them, naming the field.
    let request = http::Request::post(format!(
        "/apis/test.bbrunner.dev/v1/namespaces/{ns}/widgets?fieldValidation=Strict"
    ))
    .header("Content-Type", "application/json")
    .body(serde_json::to_vec(&widget("strict", json!({"shape": "round"}))).unwrap())
    .unwrap();
    let refused = api_error(cluster.client().request::<Value>(request).await);
    assert_eq!(refused.code, 400);
    assert!(
        refused.message.contains("unknown field \"spec.shape\""),
        "{}",
        refused.message
    );
    // Server-side apply is strict by nature: it refuses them.
    let applied = api_error(
        api.patch(
            "applied",
            &PatchParams::apply("differential"),
            &Patch::Apply(
                json!({"apiVersion": "test.bbrunner.dev/v1", "kind": "Widget",
                "metadata": {"name": "applied"}, "spec": {"shape": "round"}}),
            ),
        )
        .await,
    );
    assert!(
        applied
            .message
            .contains(".spec.shape: field not declared in schema"),
        "{}",
        applied.message
    );
    // Bounds are the schema's.
    let too_big = api_error(
        api.create(&PostParams::default(), &widget("big", json!({"size": 11})))
            .await,
    );
    assert_eq!((too_big.code, too_big.reason.as_str()), (422, "Invalid"));
    assert!(
        too_big.message.contains(
            "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"
        ),
        "{}",
        too_big.message
    );
}

async fn the_status_subresource_splits_spec_and_status(cluster: &Cluster, ns: &str) {
    install_widgets(cluster).await;
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), ns, &widgets());
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "test.bbrunner.dev/v1", "kind": "Widget",
                "metadata": {"name": "split"}, "spec": {"size": 1}, "status": {"phase": "Made"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status ignored on create"
    );
    assert_eq!(created.metadata.generation, Some(1));
    // Each write names both parts; only its own part lands, and only spec bumps the generation.
    let both = |phase: &str, size: u32| {
        Patch::Merge(json!({"status": {"phase": phase}, "spec": {"size": size}}))
    };
    let through_status = api
        .patch_status("split", &PatchParams::default(), &both("Ready", 9))
        .await
        .unwrap();
    let through_object = api
        .patch("split", &PatchParams::default(), &both("Gone", 2))
        .await
        .unwrap();
    let seen = |o: &DynamicObject| {
        (
            o.data["status"]["phase"].clone(),
            o.data["spec"]["size"].clone(),
            o.metadata.generation,
        )
    };
    assert_eq!(
        [seen(&through_status), seen(&through_object)],
        [
            (json!("Ready"), json!(1), Some(1)),
            (json!("Ready"), json!(2), Some(2)),
        ],
        "spec ignored through /status, status ignored on the object, a spec change bumps the generation"
    );
    let labelled = api
        .patch(
            "split",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "a metadata change does not bump the generation"
    );
}

async fn leases_renew_with_optimistic_concurrency(cluster: &Cluster, ns: &str) {
    let api: Api<Lease> = Api::namespaced(cluster.client(), ns);
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                 "renewTime": "2026-01-01T00:00:00.123456Z", "acquireTime": "2026-01-01T00:00:00.000000Z"}}))
    .unwrap();
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    let renew_time = created.spec.as_ref().unwrap().renew_time.clone().unwrap();
    assert_eq!(
        serde_json::to_value(&renew_time).unwrap(),
        "2026-01-01T00:00:00.123456Z",
        "microseconds kept"
    );
    let mut taken = created.clone();
    taken.spec.as_mut().unwrap().holder_identity = Some("b".into());
    api.replace("leader", &PostParams::default(), &taken)
        .await
        .unwrap();
    let lost = api_error(api.replace("leader", &PostParams::default(), &taken).await);
    assert_eq!(lost.code, 409);
    // The nodes' heartbeats.
    let node_leases: Api<Lease> = Api::namespaced(cluster.client(), "kube-node-lease");
    let heartbeats = node_leases.list(&ListParams::default()).await.unwrap();
    assert!(
        heartbeats
            .items
            .iter()
            .any(|l| l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("node-1")),
        "node-1 renews its Lease"
    );
}

async fn events_are_served_by_both_apis_and_kubectl_prints_their_columns(
    cluster: &Cluster,
    ns: &str,
) {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), ns);
    let subject = api
        .create(&PostParams::default(), &config_map("subject", json!({})))
        .await
        .unwrap();
    let recorder = kube::runtime::events::Recorder::new(
        cluster.client(),
        kube::runtime::events::Reporter {
            controller: "differential".into(),
            instance: None,
        },
    );
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Warning,
                reason: "Checked".into(),
                note: Some("written through events.k8s.io/v1".into()),
                action: "Check".into(),
                secondary: None,
            },
            &subject.object_ref(&()),
        )
        .await
        .unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(cluster.client(), ns);
    eventually("the Event through core/v1", || async {
        core.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Checked"))
    })
    .await;
    let event = core
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("Checked"))
        .unwrap();
    assert_eq!(
        event.message.as_deref(),
        Some("written through events.k8s.io/v1")
    );
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.name.as_deref(), Some("subject"));
    assert_eq!(event.reporting_component.as_deref(), Some("differential"));

    let out = cluster.kubectl(&["get", "events", "-n", ns], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{text}"
    );
    let row = text.lines().find(|l| l.contains("Checked")).expect(&text);
    assert!(
        row.contains("Warning")
            && row.contains("configmap/subject")
            && row.contains("written through events.k8s.io/v1"),
        "{row}"
    );
}

async fn rbac_refusals_name_the_user_verb_and_resource(cluster: &Cluster, ns: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), ns);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap(),
        )
        .await
        .unwrap();
    let kubeconfig = cluster.service_account_kubeconfig(ns, "nobody").await;
    let client = testbed::control_plane::client_from(&kubeconfig)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let refused = api_error(pods.list(&ListParams::default()).await);
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        refused.message,
        format!(
            "pods is forbidden: User \"system:serviceaccount:{ns}:nobody\" cannot list resource \"pods\" in API group \"\" in the namespace \"{ns}\""
        )
    );
    assert_eq!(refused.details.expect("details").kind, "pods");
}

async fn tables_carry_printer_columns(cluster: &Cluster, ns: &str) {
    install_widgets(cluster).await;
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), ns, &widgets());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"apiVersion": "test.bbrunner.dev/v1", "kind": "Widget",
            "metadata": {"name": "tabled"}, "spec": {"size": 4}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let table = table(
        &cluster.client(),
        &format!("/apis/test.bbrunner.dev/v1/namespaces/{ns}/widgets"),
    )
    .await;
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Size", "Phase", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "tabled");
    assert_eq!(table["rows"][0]["cells"][1], 4);
    let out = cluster.kubectl(&["get", "widgets", "-n", ns], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("NAME") && text.contains("SIZE") && text.contains("PHASE"),
        "{text}"
    );
}

/// A list as kubectl asks for it: a server-side Table.
async fn table(client: &Client, path: &str) -> Value {
    let request = http::Request::get(path)
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    client.request::<Value>(request).await.unwrap()
}

async fn a_validating_admission_policy_refuses_with_its_message(cluster: &Cluster, ns: &str) {
    let client = cluster.client();
    let gvk = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
            plural,
        )
    };
    let name = format!("{ns}-no-forbidden");
    let policies: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &gvk("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
    );
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "!has(object.data) || !('forbidden' in object.data)",
                "message": "data.forbidden is not allowed"}]}});
    policies
        .patch(
            &name,
            &PatchParams::apply("differential"),
            &Patch::Apply(policy),
        )
        .await
        .unwrap();
    let bindings: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &gvk(
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
        ),
    );
    let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}});
    bindings
        .patch(
            &name,
            &PatchParams::apply("differential"),
            &Patch::Apply(binding),
        )
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    // A real API server takes a moment to load a new policy.
    let started = Instant::now();
    let refused = loop {
        match api
            .create(
                &PostParams::default(),
                &config_map("bad", json!({"forbidden": "yes"})),
            )
            .await
        {
            Err(kube::Error::Api(status)) => break *status,
            Ok(_) => {
                api.delete("bad", &DeleteParams::default()).await.unwrap();
                assert!(started.elapsed() < Duration::from_secs(30), "never refused");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (422, "Invalid"),
        "{}",
        refused.message
    );
    assert_eq!(
        refused.message,
        format!(
            "configmaps \"bad\" is forbidden: ValidatingAdmissionPolicy '{name}' with binding '{name}' denied request: data.forbidden is not allowed"
        )
    );
    api.create(
        &PostParams::default(),
        &config_map("good", json!({"fine": "yes"})),
    )
    .await
    .unwrap();
}

async fn pods_are_scheduled_run_and_deleted_gracefully(cluster: &Cluster, ns: &str) {
    let api: Api<Pod> = Api::namespaced(cluster.client(), ns);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "probe"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "mtu", "image": "busybox",
            "command": ["cat", "/sys/class/net/eth0/mtu"]}]}}))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    eventually("the probe completes", || {
        in_phase(&api, "probe", "Succeeded")
    })
    .await;
    let out = cluster.kubectl(&["logs", "-n", ns, "probe"], "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1450\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let runner: Pod = serde_json::from_value(json!({"metadata": {"name": "runs"},
        "spec": {"containers": [{"name": "app", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}))
    .unwrap();
    api.create(&PostParams::default(), &runner).await.unwrap();
    eventually("the pod runs and is Ready", || async {
        let pod = api.get("runs").await.unwrap();
        let status = pod.status.unwrap_or_default();
        status.phase.as_deref() == Some("Running")
            && status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
    .await;
    let running = api.get("runs").await.unwrap();
    assert_eq!(running.spec.unwrap().node_name.as_deref(), Some("node-1"));
    assert_eq!(
        running.status.unwrap().qos_class.as_deref(),
        Some("Burstable")
    );
    // Deleted gracefully: marked first, then gone once its kubelet has stopped it.
    let deleted = api.delete("runs", &DeleteParams::default()).await.unwrap();
    let marked = deleted
        .left()
        .expect("a bound pod is marked, not removed at once");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    eventually("the pod goes", || async {
        api.get_opt("runs").await.unwrap().is_none()
    })
    .await;
    // A completed pod goes at once.
    let gone = api.delete("probe", &DeleteParams::default()).await.unwrap();
    assert!(gone.is_right() || api.get_opt("probe").await.unwrap().is_none());
}

async fn deployments_run_their_pods(cluster: &Cluster, ns: &str) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(cluster.client(), ns);
    let deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}))
    .unwrap();
    api.create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    eventually("both replicas are available", || async {
        api.get("web")
            .await
            .unwrap()
            .status
            .and_then(|s| s.available_replicas)
            == Some(2)
    })
    .await;
    let replica_sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(cluster.client(), ns);
    // fake-kube does not serve ReplicaSets at all.
    let sets = match replica_sets.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(sets.is_empty(), differs(cluster, Difference::NoReplicaSets));
}

/// Create `pod` and wait until the scheduler refuses it in words that contain `words`.
async fn refused_by_scheduler(pods: &Api<Pod>, pod: &Pod, words: &str) {
    pods.create(&PostParams::default(), pod).await.unwrap();
    let name = pod.name_any();
    eventually(
        &format!("the scheduler refuses {name}: {words}"),
        || async {
            pods.get(&name)
                .await
                .unwrap()
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                        && c.message.as_deref().is_some_and(|m| m.contains(words))
                })
        },
    )
    .await;
}

/// The warm cache's claims: the protection finalizer, Pending while their class is missing
/// (and their pod unschedulable, in words that blame its volumes), bound once the class and a
/// volume exist, one pod at a time on a ReadWriteOncePod claim, and a deleted claim kept until
/// its pod is gone.
async fn claims_bind_hold_their_pods_and_protect_themselves(cluster: &Cluster, ns: &str) {
    let client = cluster.client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // Cluster-wide names, the test's own: the real server is shared by every check.
    let class = format!("{ns}-class");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "cache-0"},
        "spec": {"accessModes": ["ReadWriteOncePod"], "storageClassName": class,
                 "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    let created = claims.create(&PostParams::default(), &claim).await.unwrap();
    assert!(
        created
            .finalizers()
            .contains(&"kubernetes.io/pvc-protection".to_owned()),
        "{:?}",
        created.finalizers()
    );
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "busybox",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "cache-0"}}]}}))
        .unwrap()
    };
    refused_by_scheduler(
        &pods,
        &pod("first"),
        "unbound immediate PersistentVolumeClaims",
    )
    .await;
    let bound = || async {
        let claim = claims.get("cache-0").await.unwrap();
        claim.status.and_then(|s| s.phase).as_deref() == Some("Bound")
    };
    assert!(!bound().await);

    // The class, without a provisioner, and a volume of it, as a local-volume set-up has.
    let classes = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("storage.k8s.io", "v1", "StorageClass"),
        "storageclasses",
    );
    let storage_class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": class},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}))
    .unwrap();
    Api::<DynamicObject>::all_with(client.clone(), &classes)
        .create(&PostParams::default(), &storage_class)
        .await
        .unwrap();
    let volumes = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("", "v1", "PersistentVolume"),
        "persistentvolumes",
    );
    let volume: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("{ns}-volume")},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOncePod"],
                 "storageClassName": class, "persistentVolumeReclaimPolicy": "Delete",
                 "hostPath": {"path": "/tmp/bbrunner-differential"}}}))
    .unwrap();
    Api::<DynamicObject>::all_with(client.clone(), &volumes)
        .create(&PostParams::default(), &volume)
        .await
        .unwrap();
    eventually("the claim is bound", bound).await;
    eventually("the pod runs on its claim", || {
        in_phase(&pods, "first", "Running")
    })
    .await;

    // A second pod on the ReadWriteOncePod claim waits while the first runs.
    refused_by_scheduler(&pods, &pod("second"), "ReadWriteOncePod").await;

    // Deleted while mounted: kept by its protection until the pods are gone.
    claims
        .delete("cache-0", &DeleteParams::default())
        .await
        .unwrap();
    let held = claims.get("cache-0").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    pods.delete("second", &DeleteParams::default())
        .await
        .unwrap();
    pods.delete("first", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the claim goes with its last pod", || async {
        claims.get_opt("cache-0").await.unwrap().is_none()
    })
    .await;
    let _ = Api::<DynamicObject>::all_with(client.clone(), &classes)
        .delete(&class, &DeleteParams::default())
        .await;
    let _ = Api::<DynamicObject>::all_with(client, &volumes)
        .delete(&format!("{ns}-volume"), &DeleteParams::default())
        .await;
}
