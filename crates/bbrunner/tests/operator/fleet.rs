//! The operator as a platform team runs it: several clusters sharing a workspace, runners of
//! an earlier naming adopted, deletion in any order, and pools that cannot be read.

use std::collections::{BTreeMap, BTreeSet};

use bbrunner_core::ids::{AccountUuid, RunnerUuid};
use bbrunner_core::manifests::{self, LABEL_MANAGED_BY, LABEL_RUNNER_UUID};
use bbrunner_core::registration::RunnerRegistration;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;

use super::*;

/// The cluster id in a runner named `bbrunner.CLUSTER.NAMESPACE.POOL.SUFFIX`.
fn cluster_of(runner: &Value) -> String {
    let name = runner["name"].as_str().unwrap_or_default();
    name.split('.').nth(1).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_clusters_share_a_workspace_and_keep_their_own_runners() {
    let bitbucket = FakeBitbucket::start(bitbucket_config()).await.unwrap();
    let mut clusters = Vec::new();
    for name in ["fleet-a", "fleet-b", "fleet-c"] {
        clusters.push(Cluster::start(name, bitbucket.url(), |_| {}).await);
    }
    let _operators: Vec<Operator> = clusters
        .iter()
        .map(|c| {
            operator_process(
                bitbucket.url(),
                &c.kubeconfig,
                &[],
                &[],
                "info",
                Stdio::null(),
            )
        })
        .collect();
    for c in &clusters {
        // The same namespace and pool name in every cluster.
        c.pool("builds", managed(2, 3)).await;
    }
    let runners = || {
        bitbucket.with_world(|w, now| {
            w.runners
                .iter()
                .map(|r| json!({"uuid": r.uuid, "name": r.name, "state": fake_bitbucket::world::runner_status(r, now)}))
                .collect::<Vec<Value>>()
        })
    };
    let mut ever: BTreeSet<String> = BTreeSet::new();
    eventually("two runners online per cluster", 40, || {
        let now = runners();
        ever.extend(now.iter().map(|r| r["uuid"].as_str().unwrap().to_owned()));
        let mut per_cluster: BTreeMap<String, usize> = BTreeMap::new();
        for r in now.iter().filter(|r| r["state"] == "ONLINE") {
            *per_cluster.entry(cluster_of(r)).or_default() += 1;
        }
        async move { per_cluster.len() == 3 && per_cluster.values().all(|n| *n == 2) }
    })
    .await;
    // Steady: nobody deletes anybody's runners (before, the clusters deleted each other's
    // runners as "without a Secret" and created their own, over and over).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        ever.extend(
            runners()
                .iter()
                .map(|r| r["uuid"].as_str().unwrap().to_owned()),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        ever.len(),
        6,
        "runners were replaced while steady: {ever:?}"
    );

    // Steps run on every cluster's runners.
    for _ in 0..9 {
        bitbucket
            .submit_step(&StepRequest {
                workspace: "acme".into(),
                repository: None,
                labels: vec!["self.hosted".into(), "build".into()],
                duration_s: 90.0,
                size: None,
            })
            .unwrap();
    }
    let names: BTreeMap<String, String> = runners()
        .iter()
        .map(|r| (r["uuid"].as_str().unwrap().to_owned(), cluster_of(r)))
        .collect();
    let mut ran_on: BTreeMap<String, String> = BTreeMap::new();
    eventually("every step done", 60, || {
        let now = runners();
        let (done, failed, started) = bitbucket.with_world(|w, _| {
            (
                w.steps
                    .iter()
                    .filter(|s| s.state == StepState::Completed)
                    .count(),
                w.steps
                    .iter()
                    .filter(|s| s.state == StepState::Failed)
                    .count(),
                w.steps
                    .iter()
                    .filter_map(|s| s.runner_uuid.clone())
                    .collect::<Vec<_>>(),
            )
        });
        for uuid in started {
            let cluster = now
                .iter()
                .find(|r| r["uuid"] == uuid.as_str())
                .map(cluster_of)
                .or_else(|| names.get(&uuid).cloned())
                .unwrap_or_default();
            if !cluster.is_empty() {
                ran_on.insert(uuid, cluster);
            }
        }
        assert_eq!(failed, 0, "a step failed");
        async move { done == 9 }
    })
    .await;
    let clusters_used: BTreeSet<&String> = ran_on.values().collect();
    assert_eq!(
        clusters_used.len(),
        3,
        "steps ran only on {clusters_used:?}"
    );

    // Deleting the pool in one cluster removes that cluster's runners only.
    let index = 0;
    let kube_system = Api::<Namespace>::all(clusters[index].client.clone())
        .get("kube-system")
        .await
        .unwrap();
    let gone = bbrunner_core::ownership::ClusterId::from_namespace_uid(
        kube_system.metadata.uid.as_deref().unwrap(),
    )
    .unwrap()
    .to_string();
    assert!(
        clusters_used.contains(&gone),
        "{gone} is not among {clusters_used:?}"
    );
    clusters[index].delete_pool("builds").await;
    eventually(
        "the deleted pool's runners gone, the others kept",
        30,
        || {
            let now = runners();
            let mut per_cluster: BTreeMap<String, usize> = BTreeMap::new();
            for r in now.iter().filter(|r| r["state"] == "ONLINE") {
                *per_cluster.entry(cluster_of(r)).or_default() += 1;
            }
            let left_behind = now.iter().any(|r| cluster_of(r) == gone);
            async move {
                !left_behind && per_cluster.len() == 2 && per_cluster.values().all(|n| *n >= 2)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runners_of_the_earlier_naming_are_adopted_and_others_left_alone() {
    let world = World::start("adopt").await;
    // A runner the operator made before cluster identities: named bbrunner.NS.POOL.SUFFIX,
    // with its registration Secret in this cluster.
    let client = world.bitbucket_client();
    let scope = bitbucket::RunnerScope::Workspace("acme".into());
    let labels = ["self.hosted", "linux", "build"].map(String::from);
    let adopted = client
        .create_runner(&scope, "bbrunner.ci.builds.old001", &labels)
        .await
        .unwrap();
    // Another cluster's runner of the same naming: no Secret or pod here.
    let foreign = client
        .create_runner(&scope, "bbrunner.ci.builds.old002", &labels)
        .await
        .unwrap();
    let registration = RunnerRegistration {
        account_uuid: AccountUuid::parse(&world.bitbucket.workspace_uuid("acme").unwrap()).unwrap(),
        repository_uuid: None,
        runner_uuid: adopted.runner.uuid.clone(),
        oauth_client_id: adopted.oauth_client_id.clone(),
        oauth_client_secret: adopted.oauth_client_secret.clone(),
    };
    let uuid: &RunnerUuid = &registration.runner_uuid;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": format!("builds-{}", uuid.bare()),
            "labels": {LABEL_MANAGED_BY: manifests::MANAGER, "bbrunner.dev/pool": "builds", LABEL_RUNNER_UUID: uuid.bare()},
        },
        "stringData": manifests::registration_secret_data(&registration, &[]),
    }))
    .unwrap();
    Api::<Secret>::namespaced(world.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let _op = world.operator(&[]);
    world.pool("builds", managed(1, 2)).await;
    eventually("the old runner runs again", 30, || {
        let runners = world.runners();
        async move {
            runners.len() == 2
                && runners
                    .iter()
                    .any(|r| r["name"] == "bbrunner.ci.builds.old001" && r["state"] == "ONLINE")
        }
    })
    .await;
    // Held for a while: no new runner, the other cluster's runner untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: BTreeSet<String> = world
        .runners()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "bbrunner.ci.builds.old001".to_owned(),
            "bbrunner.ci.builds.old002".to_owned()
        ]),
        "the operator recreated or deleted a runner it should have adopted or left alone"
    );
    let status = world.status("builds").await;
    assert_eq!(status["online"], 1, "{status}");
    assert!(
        world
            .runners()
            .iter()
            .any(|r| r["uuid"] == foreign.runner.uuid.braced())
    );
}

/// A pool of `min` runners, online, in a fresh world with the operator running.
async fn pool_online(name: &str, min: u32) -> (World, Operator) {
    let world = World::start(name).await;
    let op = world.operator(&[]);
    world.pool("builds", managed(min, min + 1)).await;
    eventually("runners online", 30, || {
        let n = online(&world.runners());
        async move { n == min as usize }
    })
    .await;
    (world, op)
}

/// Delete pool `builds`: its runners, the pool and its credentials Secret all go.
async fn delete_pool_and_see_everything_go(world: &World) {
    world.delete_pool("builds").await;
    eventually("runners, pool and Secret all gone", 30, || async {
        world.runners().is_empty()
            && world.pool_gone("builds").await
            && credentials_secret(world).await.is_none()
    })
    .await;
}

async fn credentials_secret(world: &World) -> Option<Secret> {
    Api::<Secret>::namespaced(world.client.clone(), NS)
        .get_opt("bitbucket-credentials")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_deleted_together_with_its_credentials_removes_its_runners() {
    let (world, _op) = pool_online("delete-together", 2).await;
    let held = credentials_secret(&world).await.unwrap();
    assert!(
        held.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "bbrunner.dev/credentials-in-use"),
        "the credentials Secret is not held"
    );
    // As `kubectl delete -f` of one file holding both: the Secret first.
    Api::<Secret>::namespaced(world.client.clone(), NS)
        .delete("bitbucket-credentials", &DeleteParams::default())
        .await
        .unwrap();
    delete_pool_and_see_everything_go(&world).await;
}

/// A namespace deleted while a runner runs a step: Kubernetes deletes the runner's pod with
/// the rest, but the pod is marked busy, so its preStop hook holds it until the step ends;
/// then the runner goes from Bitbucket and the namespace with it. No step is interrupted.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_namespace_lets_a_busy_runner_finish_its_step() {
    let (world, _op) = pool_online("namespace-drain", 1).await;
    // Ten minutes on the fake's clock: twenty seconds here.
    world.submit(1, 600.0);
    eventually("the runner busy and its pod marked", 20, || async {
        world.pods().await.iter().any(|p| {
            p.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.get("bbrunner.dev/busy").is_some_and(|v| v == "true"))
        })
    })
    .await;
    Api::<Namespace>::all(world.client.clone())
        .delete(NS, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pod deleted but held", 10, || async {
        world
            .pods()
            .await
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    eventually("the step done", 40, || async {
        world.steps(StepState::Running) == 0
    })
    .await;
    assert_eq!(
        world.steps(StepState::Completed),
        1,
        "the step did not end well"
    );
    assert_eq!(world.steps(StepState::Interrupted), 0);
    runners_and_namespace_gone(&world).await;
}

/// The pool's runners gone from Bitbucket, and its namespace from the cluster.
async fn runners_and_namespace_gone(world: &World) {
    eventually("runners and namespace gone", 40, || async {
        world.runners().is_empty()
            && Api::<Namespace>::all(world.client.clone())
                .get_opt(NS)
                .await
                .unwrap()
                .is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_namespace_removes_its_pools_runners() {
    let (world, _op) = pool_online("delete-namespace", 2).await;
    Api::<Namespace>::all(world.client.clone())
        .delete(NS, &DeleteParams::default())
        .await
        .unwrap();
    runners_and_namespace_gone(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_deleted_first_is_kept_until_its_pool_goes_and_the_pool_says_why() {
    let (world, _op) = pool_online("delete-secret-first", 1).await;
    Api::<Secret>::namespaced(world.client.clone(), NS)
        .delete("bitbucket-credentials", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pool says why it is degraded", 20, || async {
        world
            .has_condition(
                "builds",
                "Degraded",
                "True",
                "CredentialsDeleting",
                "bitbucket-credentials",
            )
            .await
    })
    .await;
    // Still held, and the runner still serves steps.
    assert!(credentials_secret(&world).await.is_some());
    assert_eq!(online(&world.runners()), 1);
    delete_pool_and_see_everything_go(&world).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_that_cannot_be_read_is_degraded_alone() {
    let world = World::start("unreadable").await;
    // Values the typed pool cannot hold, stored under an older CRD that did not bound them;
    // the API server keeps such objects when the CRD is tightened.
    let current = world
        .loosen_crd(|schema| {
            let spec = &mut schema["properties"]["spec"]["properties"];
            spec["scaling"]["properties"]["schedules"]["items"]["properties"]["min"]
                .as_object_mut()
                .unwrap()
                .remove("maximum");
            spec["runner"]["properties"]["size"]
                .as_object_mut()
                .unwrap()
                .remove("enum");
        })
        .await;
    let mut too_big = managed(1, 2);
    too_big["scaling"]["schedules"] =
        json!([{"cron": "0 8 * * *", "duration": "1h", "min": 4_294_967_296_u64}]);
    world.pool("too-big", too_big).await;
    // A marker in the bad value and beside it, in an env value that could be a secret: no
    // log line, condition or Event may carry it.
    let marker = "hunter2-marker";
    let mut bad_size = managed(1, 2);
    bad_size["runner"] =
        json!({"size": format!("16x-{marker}"), "env": [{"name": "TOKEN", "value": marker}]});
    world.pool("bad-size", bad_size).await;
    world.restore_crd(&current).await;
    // The current CRD refuses such a pool at the door.
    let mut refused = managed(1, 2);
    refused["runner"] = json!({"size": "16x"});
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
        "metadata": {"name": "refused"}, "spec": refused,
    }))
    .unwrap();
    let err = world
        .pools()
        .create(&PostParams::default(), &object)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.runner.size")),
        "{err}"
    );
    world.pool("builds", managed(1, 2)).await;
    let log_path = world.dir.join("operator.log");
    let _op = world.operator_logging(
        &["--log-format", "json"],
        "debug",
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    eventually("the good pool reconciles", 30, || async {
        world.status("builds").await["online"] == 1
    })
    .await;
    for (pool, field) in [
        ("too-big", "spec.scaling.schedules[0].min"),
        ("bad-size", "spec.runner.size"),
    ] {
        eventually(&format!("{pool} degraded naming {field}"), 20, || async {
            world
                .has_condition(pool, "Degraded", "True", "InvalidSpec", field)
                .await
        })
        .await;
    }
    // doctor reads the other pools and fails the unreadable ones, naming the field.
    let (code, checks) = doctor(&world);
    assert_eq!(code, 1);
    for (pool, field) in [
        ("too-big", "spec.scaling.schedules[0].min"),
        ("bad-size", "spec.runner.size"),
    ] {
        let check = checks
            .iter()
            .find(|c| c["name"] == format!("spec/ci/{pool}"))
            .unwrap_or_else(|| panic!("no spec check for {pool}: {checks:#?}"));
        assert_eq!(check["verdict"], "fail");
        assert!(check["detail"].as_str().unwrap().contains(field), "{check}");
    }
    assert!(checks.iter().any(|c| c["name"] == "dind/ci/builds"));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.lines().count() > 10,
        "the operator logged too little to check"
    );
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(marker)).collect();
    assert!(leaks.is_empty(), "a spec value in the logs: {leaks:?}");
    let status = world.status("bad-size").await.to_string();
    assert!(!status.contains(marker), "a spec value in the status");
    let events = world.events().list(&ListParams::default()).await.unwrap();
    assert!(
        events
            .items
            .iter()
            .all(|e| !serde_json::to_string(e).unwrap().contains(marker)),
        "a spec value in an Event"
    );
    // Deleting an unreadable pool still works (it never got runners).
    world.delete_pool("bad-size").await;
    eventually("the unreadable pool is gone", 20, || async {
        world.pool_gone("bad-size").await
    })
    .await;
}

/// One JSON log line per change and per failure at the default level, and a deleted pool's
/// metric series gone with it.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_logs_every_change_and_failure_and_forgets_deleted_pools() {
    let world = World::start("logs").await;
    // At the operator's default level.
    let (_op, log_path, addr) = logged_operator_with_a_broken_pool(&world, "", "nope").await;
    // A busy runner, so that the deletion below drains.
    world.submit(1, 150.0);
    eventually("the runner busy", 10, || async {
        world.runners().iter().any(|r| !r["step"].is_null())
    })
    .await;
    world.delete_pool("builds").await;
    eventually("the pool gone after its step", 30, || async {
        world.pool_gone("builds").await
    })
    .await;
    let metrics = scrape(&addr).await;
    assert!(
        !metrics.contains(r#"pool="builds""#),
        "the deleted pool's series remain:\n{metrics}"
    );
    assert!(metrics.contains(r#"pool="broken""#));
    assert!(
        !metrics.contains("Draining"),
        "draining counted as an error"
    );
    // The identity label is opaque: no consumer key, e-mail or username.
    assert!(!metrics.contains("OAuth consumer"), "{metrics}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a log file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // A field is the line's own or its pool span's (which names the namespace and pool).
    let field = |l: &Value, k: &str| -> Value {
        if l["fields"][k].is_null() {
            l["span"][k].clone()
        } else {
            l["fields"][k].clone()
        }
    };
    let has = |level: &str, message: &str, keys: &[&str]| {
        lines.iter().any(|l| {
            l["level"] == level
                && l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(message))
                && keys.iter().all(|k| !field(l, k).is_null())
        })
    };
    let change = ["namespace", "pool", "runner", "reason"];
    for message in [
        "created runner",
        "created its pod",
        "disabled the runner",
        "deleted the runner in Bitbucket",
    ] {
        assert!(
            has("INFO", message, &change),
            "no info line for {message:?}:\n{text}"
        );
    }
    assert!(
        has("INFO", "scaling", &["namespace", "pool", "reason"]),
        "{text}"
    );
    assert!(
        has("INFO", "pool deleted", &["namespace", "pool"]),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && field(l, "pool") == "broken"
            && l["fields"]["reason"] == "CredentialsInvalid"),
        "no warning for the failing pool:\n{text}"
    );
    // fake-bitbucket's clock runs 30 times faster than this operator's: it says so.
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("ahead of the operator's clock"))),
        "no warning of the clocks' disagreement:\n{text}"
    );
    assert!(!text.contains("consumer-secret"));
}

/// A kubelet for the operator's own pods: every Running operator pod of the install's
/// Deployment is a real operator process (named as the pod, as HOSTNAME is in a container);
/// a pod marked for deletion or gone gets SIGTERM, as a kubelet sends it, and its process
/// runs on until it has shut down.
struct OperatorKubelet {
    processes: BTreeMap<String, Operator>,
    stopping: Vec<Operator>,
    most_at_once: usize,
}

impl OperatorKubelet {
    async fn sync(&mut self, world: &World) {
        let pods = Api::<Pod>::namespaced(world.client.clone(), "bbrunner-system")
            .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
            .await
            .unwrap()
            .items;
        for pod in &pods {
            let name = pod.name_any();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if running
                && pod.metadata.deletion_timestamp.is_none()
                && !self.processes.contains_key(&name)
            {
                let container = &pod.spec.as_ref().unwrap().containers[0];
                // The pod's own arguments, but metrics on no port (several share loopback).
                let args: Vec<String> = container
                    .args
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| a != "operator" && !a.starts_with("--metrics-addr"))
                    .collect();
                assert!(args.iter().any(|a| a == "--leader-election"), "{args:?}");
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.processes.insert(
                    name.clone(),
                    operator_process(
                        world.bitbucket.url(),
                        &world.kubeconfig,
                        &args,
                        &[("HOSTNAME", &name), ("POD_NAMESPACE", "bbrunner-system")],
                        "info",
                        Stdio::null(),
                    ),
                );
            }
        }
        let stopped: Vec<String> = self
            .processes
            .keys()
            .filter(|name| {
                !pods
                    .iter()
                    .any(|p| p.name_any() == **name && p.metadata.deletion_timestamp.is_none())
            })
            .cloned()
            .collect();
        for name in stopped {
            let op = self.processes.remove(&name).unwrap();
            let _ = Command::new("kill")
                .args(["-TERM", &op.0.id().to_string()])
                .status();
            self.stopping.push(op);
        }
        self.stopping
            .retain_mut(|op| op.0.try_wait().ok().flatten().is_none());
        self.most_at_once = self
            .most_at_once
            .max(self.processes.len() + self.stopping.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_of_the_operator_neither_overshoots_nor_duplicates_runners() {
    let world = World::start("upgrade").await;
    let out = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args(["install", "--replicas", "2"])
        .output()
        .unwrap();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    for doc in &docs {
        super::rbac::apply(&world.client, doc).await;
    }
    let mut kubelet = OperatorKubelet {
        processes: BTreeMap::new(),
        stopping: Vec::new(),
        most_at_once: 0,
    };
    let mut spec = managed(3, 5);
    spec["scaling"]["minIdle"] = json!(0);
    world.pool("builds", spec).await;
    let mut ever: BTreeSet<String> = BTreeSet::new();
    let mut most = 0;
    let mut watch = |kubelet_runners: Vec<Value>| {
        most = most.max(kubelet_runners.len());
        ever.extend(
            kubelet_runners
                .iter()
                .map(|r| r["uuid"].as_str().unwrap().to_owned()),
        );
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while online(&world.runners()) < 3 {
        assert!(Instant::now() < deadline, "the pool never came up");
        kubelet.sync(&world).await;
        watch(world.runners());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The upgrade: a new pod template, as a new image would make.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(world.client.clone(), "bbrunner-system");
    deployments
        .patch(
            "bbrunner-operator",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"bbrunner.dev/upgraded": "v2"}}}}})),
        )
        .await
        .unwrap();
    // Through the rollout and until a new operator has taken over and held the pool.
    let old_pods: BTreeSet<String> = kubelet.processes.keys().cloned().collect();
    let until = Instant::now() + Duration::from_secs(30);
    let mut new_pods_ran = false;
    while Instant::now() < until {
        kubelet.sync(&world).await;
        watch(world.runners());
        new_pods_ran |=
            kubelet.processes.len() == 2 && kubelet.processes.keys().all(|p| !old_pods.contains(p));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        kubelet.most_at_once >= 3,
        "old and new operators never overlapped (at most {} at once)",
        kubelet.most_at_once
    );
    assert!(new_pods_ran, "the new operator pods never took over");
    // A new operator still acts: a runner deleted in Bitbucket is replaced.
    let first = world.runners()[0]["uuid"].as_str().unwrap().to_owned();
    world
        .bitbucket
        .with_world(|w, _| w.runners.retain(|r| r.uuid != first));
    eventually("the new leader repairs the pool", 30, || {
        let runners = world.runners();
        async move { online(&runners) == 3 }
    })
    .await;
    watch(world.runners());
    assert!(most <= 3, "{most} runners at once: max 3 overshot");
    // Three at the start, and one replacing the runner removed by hand: nothing duplicated.
    assert_eq!(ever.len(), 4, "runners created: {ever:?}");
}

/// Another controller's finalizer on a pool is never dropped: the operator appends its own and
/// removes only its own (JSON patches, not a merge of the whole list).
#[tokio::test(flavor = "multi_thread")]
async fn another_controller_s_finalizer_on_a_pool_is_kept() {
    let world = World::start("other-finalizer").await;
    let mut spec = managed(1, 2);
    spec["scaling"]["minIdle"] = json!(0);
    let pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
        "metadata": {"name": "builds", "finalizers": ["example.com/backup"]}, "spec": spec,
    }))
    .unwrap();
    world
        .pools()
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
    let _op = world.operator(&[]);
    let finalizers = || async {
        world
            .pools()
            .get_opt("builds")
            .await
            .unwrap()
            .map(|p| p.metadata.finalizers.unwrap_or_default())
    };
    eventually("both finalizers", 20, || async {
        finalizers().await
            == Some(vec![
                "example.com/backup".to_owned(),
                "bbrunner.dev/cleanup".to_owned(),
            ])
    })
    .await;
    eventually("a runner online", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
    world.delete_pool("builds").await;
    // The operator cleans up and lets go of its own; the other controller's stays.
    eventually(
        "the operator's finalizer gone, the other kept",
        30,
        || async {
            world.runners().is_empty()
                && finalizers().await == Some(vec!["example.com/backup".to_owned()])
        },
    )
    .await;
}

/// A credentials Secret fixed after Bitbucket refused it: the pool wakes on the Secret's
/// change, not at its next retry (a minute, for refused credentials), and a runner is ONLINE
/// within 20 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_credentials_secret_brings_a_runner_online_within_20_s() {
    let world = World::start("fixed-credentials").await;
    let _op = world.operator(&[]);
    let mut spec = managed(1, 2);
    world.use_wrong_credentials(&mut spec, "nope").await;
    world.pool("builds", spec).await;
    eventually("the pool Degraded on its credentials", 20, || async {
        world
            .has_condition("builds", "Degraded", "True", "CredentialsInvalid", "")
            .await
    })
    .await;
    // Past the first retries: the next one is tens of seconds away.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let secrets = Api::<Secret>::namespaced(world.client.clone(), NS);
    let good = secrets.get("bitbucket-credentials").await.unwrap();
    let mut fixed = secrets.get("wrong").await.unwrap();
    fixed.data = good.data;
    secrets
        .replace("wrong", &PostParams::default(), &fixed)
        .await
        .unwrap();
    let fixed_at = Instant::now();
    eventually("a runner ONLINE after the fix", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
    assert!(fixed_at.elapsed() < Duration::from_secs(20));
}

/// `status.apiIdentity` is keyed with a key of the cluster's own, kept in a Secret of the
/// operator's namespace: the same across operator restarts, and not recomputable from a
/// guessed token without that key.
#[tokio::test(flavor = "multi_thread")]
async fn api_identities_are_keyed_with_the_cluster_s_own_key_and_survive_restarts() {
    let (world, op) = pool_online("identity-key", 1).await;
    let identity = || async {
        world.status("builds").await["apiIdentity"]
            .as_str()
            .map(str::to_owned)
    };
    eventually("an API identity in the status", 20, || async {
        identity().await.is_some()
    })
    .await;
    let first = identity().await.unwrap();
    let secret = Api::<Secret>::namespaced(world.client.clone(), "default")
        .get("bbrunner-identity-key")
        .await
        .unwrap();
    let key = secret.data.unwrap()["key"].0.clone();
    assert_eq!(key.len(), 32, "32 random bytes");
    let consumer = bitbucket::Credentials::OAuthConsumer {
        key: "key".into(),
        secret: "consumer-secret".to_owned().into(),
    };
    assert_eq!(
        first,
        consumer.opaque_id(&bitbucket::IdentityKey::new(&key)),
        "the id is the HMAC of the principal with the Secret's key"
    );
    // Another key (a guesser's) gives another id.
    assert_ne!(first, consumer.opaque_id(&bitbucket::IdentityKey::random()));
    // A new operator reads the key back: the pool's identity does not change.
    drop(op);
    world
        .pools()
        .patch_status(
            "builds",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"apiIdentity": null}})),
        )
        .await
        .unwrap();
    let _op = world.operator(&[]);
    eventually("the identity written again", 20, || async {
        identity().await.is_some()
    })
    .await;
    assert_eq!(identity().await.unwrap(), first);
}
