use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::*;

fn types() -> Vec<ResourceType> {
    vec![
        ResourceType::builtin("", "v1", "Namespace", "namespaces", false, true),
        ResourceType::builtin("", "v1", "Pod", "pods", true, true),
        ResourceType::builtin("", "v1", "Secret", "secrets", true, false),
        ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true, false),
    ]
}

fn store() -> (Arc<Store>, [ResourceType; 3]) {
    let store = Store::new(types(), 100_000);
    let ns = store.find_type("", "namespaces").unwrap();
    store
        .create(&ns, "v1", "", json!({"metadata": {"name": "default"}}))
        .unwrap();
    let [pods, secrets, configmaps] =
        ["pods", "secrets", "configmaps"].map(|plural| store.find_type("", plural).unwrap());
    (Arc::new(store), [pods, secrets, configmaps])
}

fn named(name: &str) -> Value {
    json!({"metadata": {"name": name}})
}

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

fn everything() -> (LabelSelector, FieldSelector) {
    (LabelSelector::default(), FieldSelector::default())
}

#[test]
fn a_type_being_written_holds_up_its_own_type_only() {
    let (store, [pods, secrets, configmaps]) = store();
    let held = store.table(&pods);
    let guard = write(&held);

    let (done, finished) = mpsc::channel();
    let other = store.clone();
    let (secret_type, configmap_type) = (secrets.clone(), configmaps.clone());
    thread::spawn(move || {
        other
            .create(&secret_type, "v1", "default", named("s"))
            .unwrap();
        let listed = other.list(&configmap_type, None, &everything().0, &everything().1);
        done.send(listed.len()).unwrap();
    });
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(10)),
        Ok(0),
        "a secret write and a configmap list waited for the pods' lock"
    );

    let (done, finished) = mpsc::channel();
    let other = store.clone();
    let pod_type = pods.clone();
    thread::spawn(move || {
        let created = other.create(&pod_type, "v1", "default", pod("p"));
        done.send(created.is_ok()).unwrap();
    });
    assert!(
        finished.recv_timeout(Duration::from_millis(300)).is_err(),
        "a pod was written while the pods' table was locked"
    );
    drop(guard);
    assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(true));
}

#[test]
fn concurrent_writers_lose_no_update_and_log_every_version_once_in_order() {
    let (store, [_, secrets, configmaps]) = store();
    store
        .create(&configmaps, "v1", "default", named("shared"))
        .unwrap();
    let start = store.resource_version();
    let (writers, rounds) = (4, 40);
    let handles: Vec<_> = (0..writers)
        .map(|writer| {
            let (store, secrets, configmaps) = (store.clone(), secrets.clone(), configmaps.clone());
            thread::spawn(move || {
                for round in 0..rounds {
                    let label = format!("w{writer}-{round}");
                    store
                        .create(&secrets, "v1", "default", named(&label))
                        .unwrap();
                    // A merge patch carries no resourceVersion: the store must serialize it.
                    store
                        .merge(
                            &configmaps,
                            "default",
                            "shared",
                            json!({"metadata": {"labels": {label: "set"}}}),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }

    let shared = store.get(&configmaps, "default", "shared").unwrap();
    let labels = shared["metadata"]["labels"].as_object().unwrap();
    assert_eq!(labels.len(), writers * rounds, "a merge patch was lost");

    let events = store.resume(start).unwrap().backlog;
    assert_eq!(events.len(), 2 * writers * rounds);
    let versions: Vec<u64> = events.iter().map(|e| e.rv).collect();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "the log skips or reorders versions: {versions:?}"
    );
    assert_eq!(*versions.last().unwrap(), store.resource_version());
    let last_of_shared = events
        .iter()
        .rfind(|e| e.object["metadata"]["name"] == "shared")
        .unwrap();
    assert_eq!(
        shared["metadata"]["resourceVersion"],
        json!(last_of_shared.rv.to_string())
    );
}

#[test]
fn a_list_reflects_every_event_of_its_type_up_to_the_version_it_reports() {
    let (store, [pods, secrets, _]) = store();
    let start = store.resource_version();
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let (store, pods, secrets) = (store.clone(), pods.clone(), secrets.clone());
            thread::spawn(move || {
                for i in 0..150 {
                    let name = format!("w{writer}-{i}");
                    store.create(&pods, "v1", "default", pod(&name)).unwrap();
                    store
                        .create(&secrets, "v1", "default", named(&name))
                        .unwrap();
                }
            })
        })
        .collect();
    let mut lists = 0;
    while lists < 200 || !writers.iter().all(|w| w.is_finished()) {
        let (items, rv) = store.list_at(&pods, None, &everything().0, &everything().1);
        let added_by_then = store
            .resume(start)
            .unwrap()
            .backlog
            .iter()
            .filter(|e| e.type_key == pods.key() && e.rv <= rv)
            .count();
        assert_eq!(
            items.len(),
            added_by_then,
            "a list at {rv} misses or anticipates a pod"
        );
        lists += 1;
    }
    for writer in writers {
        writer.join().unwrap();
    }
}

#[test]
fn a_watch_resumed_from_too_old_a_version_is_told_the_oldest_it_may_use() {
    let store = Store::new(types(), 3);
    let ns = store.find_type("", "namespaces").unwrap();
    for name in ["a", "b", "c", "d", "e"] {
        store.create(&ns, "v1", "", named(name)).unwrap();
    }
    let now = store.resource_version();
    assert_eq!(store.resume(now - 5).err(), Some(now - 3));
    let resumed = store.resume(now - 3).unwrap();
    assert_eq!(resumed.backlog.len(), 3);
    assert_eq!(resumed.rv, now);
}
