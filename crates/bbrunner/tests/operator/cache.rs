//! The warm cache on fake-kube: claims handed from pod to pod and never to two live pods at
//! once, through steps (an ephemeral pool replaces each runner after its step), a crash, a
//! forced deletion, an operator restart and a rollout; reused rather than recreated; turned
//! off and on; gone with their pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, Patch, PatchParams};

use super::*;

fn cached(min: u32, max: u32) -> Value {
    let mut spec = managed(min, max);
    spec["ephemeral"] = json!(true);
    // Spare claims for the pods of replaced runners that drain beside their successors:
    // what `retain` trades volumes for warm starts with.
    spec["cache"] = json!({"size": "10Gi", "retain": 5});
    spec
}

/// What the observer saw over the whole test.
#[derive(Default)]
struct Seen {
    /// A claim mounted by two pods that were not yet over, with the pods and when.
    shared: Vec<String>,
    /// Pods by uid.
    pods: BTreeSet<String>,
    /// Each claim (by uid: a name may come back as a new, cold claim) and the pods (by uid)
    /// that mounted it.
    claims: BTreeMap<String, BTreeSet<String>>,
}

impl Seen {
    /// Claims handed on from one pod to another.
    fn handed_on(&self) -> usize {
        self.claims.values().map(|pods| pods.len() - 1).sum()
    }
}

fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// Every 250 ms: which pods that are not over (not Succeeded or Failed, deleted or not) mount
/// each claim.
fn observe(client: kube::Client, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
        let started = Instant::now();
        loop {
            let uids: BTreeMap<String, String> = claims
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| Some((c.metadata.name?, c.metadata.uid?)))
                .collect();
            if let Ok(list) = pods.list(&ListParams::default()).await {
                let mut mounted: BTreeMap<String, Vec<String>> = BTreeMap::new();
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                for pod in &list.items {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    // A runner's pod recreated keeps its name.
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    seen.pods.insert(uid.clone());
                    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                    let over = matches!(phase, Some("Succeeded" | "Failed"));
                    for claim in claims_of(pod) {
                        if let Some(claim_uid) = uids.get(&claim) {
                            seen.claims
                                .entry(claim_uid.clone())
                                .or_default()
                                .insert(uid.clone());
                        }
                        if !over {
                            mounted.entry(claim).or_default().push(name.clone());
                        }
                    }
                }
                for (claim, holders) in mounted.into_iter().filter(|(_, h)| h.len() > 1) {
                    seen.shared.push(format!(
                        "{claim} mounted by {holders:?} at {:.1} s",
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

async fn claims(world: &World) -> Vec<PersistentVolumeClaim> {
    Api::<PersistentVolumeClaim>::namespaced(world.client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// Like `eventually`, but a timeout shows the pool's status, claims, pods and runners.
async fn until<F, Fut>(world: &World, what: &str, seconds: u64, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if reached(seconds, check).await {
        return;
    }
    let claims: Vec<String> = claims(world)
        .await
        .iter()
        .map(|c| {
            format!(
                "{} {:?} deleting={}",
                c.metadata.name.as_deref().unwrap_or(""),
                c.metadata.annotations,
                c.metadata.deletion_timestamp.is_some()
            )
        })
        .collect();
    let pods: Vec<String> = world
        .pods()
        .await
        .iter()
        .map(|p| {
            format!(
                "{} {:?} {:?} deleting={}",
                p.metadata.name.as_deref().unwrap_or(""),
                p.status.as_ref().and_then(|s| s.phase.clone()),
                claims_of(p),
                p.metadata.deletion_timestamp.is_some()
            )
        })
        .collect();
    let runners: Vec<String> = world
        .runners()
        .iter()
        .map(|r| format!("{} {}", r["uuid"], r["state"]))
        .collect();
    let pool = world.pools().get("builds").await.ok();
    panic!(
        "{what}: not reached within {seconds} s\nspec: {:?} generation {:?}\nstatus: {}\nclaims: {claims:#?}\npods: {pods:#?}\nrunners: {runners:#?}",
        pool.as_ref().map(|p| p.data["spec"].clone()),
        pool.as_ref().and_then(|p| p.metadata.generation),
        world.status("builds").await
    );
}

/// Merge `patch` into pool `builds`, as `kubectl patch --type merge` does.
async fn edit_spec(world: &World, patch: Value) {
    world
        .pools()
        .patch("builds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_go_from_pod_to_pod_never_to_two_and_leave_with_their_pool() {
    let world = World::start("cache").await;
    let mut operator = Some(world.operator(&[]));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let observer = observe(world.client.clone(), seen.clone());
    world.pool("builds", cached(2, 3)).await;
    until(&world, "two runners online on claims", 30, || async {
        online(&world.runners()) == 2 && claims(&world).await.len() == 2
    })
    .await;
    let first = claims(&world).await;
    assert!(first.iter().all(|c| {
        c.metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o[0].kind == "RunnerPool")
            && c.spec.as_ref().and_then(|s| s.access_modes.clone())
                == Some(vec!["ReadWriteOncePod".to_owned()])
    }));

    // Steps in waves: each runner is replaced after its step, its claim handed to a new pod.
    for wave in 1..=4 {
        world.submit(3, 30.0);
        until(
            &world,
            &format!("wave {wave} of steps done"),
            90,
            || async { world.steps(StepState::Completed) == 3 * wave },
        )
        .await;
    }
    // A crash, a forced deletion, an operator killed and started again.
    // Replaced runners' pods come and go meanwhile: each is tried until one is hit.
    let pods_api = Api::<Pod>::namespaced(world.client.clone(), NS);
    until(&world, "a pod crashed", 30, || async {
        let pods = world.pods().await;
        pods.iter().any(|p| {
            world
                .fake()
                .kill_pod(NS, p.metadata.name.as_deref().unwrap_or(""))
        })
    })
    .await;
    until(&world, "a pod deleted at once", 30, || async {
        let mut deleted = false;
        for pod in world.pods().await {
            let name = pod.metadata.name.unwrap_or_default();
            let forced = DeleteParams::default().grace_period(0);
            deleted |= pods_api.delete(&name, &forced).await.is_ok();
            if deleted {
                break;
            }
        }
        deleted
    })
    .await;
    drop(operator.take());
    operator = Some(world.operator(&[]));
    world.submit(3, 30.0);
    until(&world, "fifteen steps done", 90, || async {
        world.steps(StepState::Completed) == 15
    })
    .await;

    // A rollout: every runner replaced by one of the new spec, on the claims.
    edit_spec(&world, json!({"spec": {"dind": {"mtu": 1400}}})).await;
    until(&world, "rolled out, claims within retain", 60, || async {
        let status = world.status("builds").await;
        status["outdated"] == 0
            && online(&world.runners()) >= 2
            && claims(&world).await.len() <= 5
            && status["cache"]["volumes"].as_u64().is_some_and(|v| v <= 5)
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        assert!(seen.shared.is_empty(), "{:?}", seen.shared);
        eprintln!(
            "cache: {} claims served {} pods, handed on {} times",
            seen.claims.len(),
            seen.pods.len(),
            seen.handed_on()
        );
        // How many claims a churning pool makes depends on how long replaced pods drain
        // beside their successors; that claims are handed on does not.
        assert!(
            seen.handed_on() >= 3,
            "claims were recreated rather than reused: {} claims for {} pods",
            seen.claims.len(),
            seen.pods.len()
        );
    }
    let status = world.status("builds").await;
    assert!(status["cache"]["warm"].as_u64().is_some(), "{status}");

    // The cache turned off: pods without claims, then the claims go.
    edit_spec(&world, json!({"spec": {"cache": null}})).await;
    until(&world, "uncached pods, no claims left", 60, || async {
        let pods = world.pods().await;
        !pods.is_empty()
            && pods.iter().all(|p| claims_of(p).is_empty())
            && claims(&world).await.is_empty()
    })
    .await;

    // And on again; then the pool goes, and its claims with it.
    edit_spec(&world, json!({"spec": {"cache": {"size": "10Gi"}}})).await;
    until(&world, "cached pods again", 60, || async {
        let pods = world.pods().await;
        pods.len() >= 2 && pods.iter().all(|p| !claims_of(p).is_empty())
    })
    .await;
    world.delete_pool("builds").await;
    until(&world, "the pool's claims gone with it", 60, || async {
        claims(&world).await.is_empty()
    })
    .await;
    observer.abort();
    let seen = seen.lock().unwrap();
    assert!(seen.shared.is_empty(), "{:?}", seen.shared);
    drop(operator);
}

/// A claim its storage class never provisions keeps its pod Pending: after the scheduling
/// bound the claim is skipped with a Warning Event, the pod recreated without a claim (no new
/// claim follows that would fail alike), and the runner serves steps cold. On the operator's
/// clock at 30 times real time, the two-minute bound passes in four seconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_its_class_never_provisions_is_skipped_and_runners_serve_without_a_cache() {
    let world = World::start("cache-skip").await;
    let log = world.dir.join("operator.log");
    let _operator = world.scaled_operator(&log);
    let mut spec = managed(1, 2);
    spec["scaling"]["pollInterval"] = "15s".into();
    spec["scaling"]["scaleDownDelay"] = "90s".into();
    spec["cache"] = json!({"size": "10Gi", "storageClassName": "fast-ssd"});
    world.pool("builds", spec).await;
    until(
        &world,
        "the pod Pending on its unbound claim",
        20,
        || async {
            world.pods().await.iter().any(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.message.as_deref().is_some_and(|m| {
                                m.contains("unbound immediate PersistentVolumeClaims")
                            })
                        })
                    })
            })
        },
    )
    .await;
    until(&world, "a runner online without a claim", 40, || async {
        let pods = world.pods().await;
        online(&world.runners()) == 1
            && pods.len() == 1
            && pods.iter().all(|p| claims_of(p).is_empty())
    })
    .await;
    let events = world.events().list(&ListParams::default()).await.unwrap();
    let skipped: Vec<&DynamicObject> = events
        .items
        .iter()
        .filter(|e| e.data["reason"] == "CacheVolumeUnschedulable")
        .collect();
    assert!(!skipped.is_empty(), "no Event says why");
    assert_eq!(skipped[0].data["type"], "Warning");
    let note = skipped[0].data["note"]
        .as_str()
        .or(skipped[0].data["message"].as_str())
        .unwrap_or_default();
    assert!(
        note.contains("builds-cache-0")
            && note.contains("unbound immediate PersistentVolumeClaims"),
        "{note}"
    );
    let claims = claims(&world).await;
    assert_eq!(claims.len(), 1, "no second claim after the skip");
    assert!(
        claims[0]
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("bbrunner.dev/skipped-at"))
    );
    until(
        &world,
        "the status counts the skipped claim",
        10,
        || async { world.status("builds").await["cache"]["skipped"] == 1 },
    )
    .await;
    // No step is lost: the runner serves one without its cache.
    world.submit(1, 5.0);
    until(&world, "the step done", 30, || async {
        world.steps(StepState::Completed) == 1
    })
    .await;

    // doctor names the missing class; once it exists, the skipped claim.
    let cache_check = |checks: &[Value]| {
        checks
            .iter()
            .find(|c| c["name"] == "cache/ci/builds")
            .cloned()
            .unwrap_or_else(|| panic!("no cache check in {checks:#?}"))
    };
    let (_, checks) = doctor_against(&world, world.bitbucket.url());
    let missing = cache_check(&checks);
    assert_eq!(missing["verdict"], "fail", "{missing}");
    assert!(
        missing["detail"]
            .as_str()
            .unwrap()
            .contains("fast-ssd is no StorageClass"),
        "{missing}"
    );
    let classes = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("storage.k8s.io", "v1", "StorageClass"),
        "storageclasses",
    );
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "fast-ssd"}, "provisioner": "csi.example.com",
    }))
    .unwrap();
    Api::<DynamicObject>::all_with(world.client.clone(), &classes)
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let (_, checks) = doctor_against(&world, world.bitbucket.url());
    let skipped = cache_check(&checks);
    assert_eq!(skipped["verdict"], "warn", "{skipped}");
    assert!(
        skipped["detail"].as_str().unwrap().contains("1 skipped"),
        "{skipped}"
    );
}

/// examples/cached-pool.yaml as a user applies it (its poll made fast for the test): admitted
/// by the CRD, its runners online, each on a claim of the size it asks for.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_cached_pool_runs_its_runners_on_claims() {
    let world = World::start("cache-example").await;
    let _operator = world.operator(&[]);
    let text = std::fs::read_to_string(workspace_file("examples/cached-pool.yaml")).unwrap();
    let example: Value = serde_saphyr::from_str(&text).unwrap();
    let name = example["metadata"]["name"].as_str().unwrap();
    let mut spec = example["spec"].clone();
    spec["scaling"]["pollInterval"] = "1s".into();
    world.pool(name, spec).await;
    let sized = |c: &PersistentVolumeClaim| {
        c.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .is_some_and(|q| q.0 == "50Gi")
    };
    assert!(
        reached(30, || async {
            let pods = world.pods().await;
            let claims = claims(&world).await;
            // Its warm runners (minIdle's default), each on a claim of its own.
            let mounted: BTreeSet<Vec<String>> = pods.iter().map(claims_of).collect();
            online(&world.runners()) >= 1
                && !pods.is_empty()
                && mounted.len() == pods.len()
                && mounted
                    .iter()
                    .all(|c| c.len() == 1 && c[0].starts_with("app-builds-cache-"))
                && claims.len() == pods.len()
                && claims.iter().all(sized)
        })
        .await,
        "the example's runner is not online on its claim: pods {:?}, claims {}",
        world.pods().await.iter().map(claims_of).collect::<Vec<_>>(),
        claims(&world).await.len()
    );
}
