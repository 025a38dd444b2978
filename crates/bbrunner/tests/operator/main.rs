//! The real operator binary against fake-kube and fake-bitbucket: scaling, repairs, deletion,
//! bad credentials, static pools and leader election.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_bitbucket::world::StepState;
use fake_bitbucket::{FakeBitbucket, FakeConfig, StepRequest};
use fake_kube::{ClusterConfig, FakeKube};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

mod budget;
mod cache;
mod chaos;
mod docker;
mod fleet;
mod forecast;
mod fuzz;
mod hostile;
mod image;
mod kubelet;
mod lookahead;
mod policy;
mod prometheus;
mod rbac;
mod real;

const NS: &str = "ci";

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One cluster (fake-kube, or a real control plane) with the CRD, namespace `ci` and the
/// pools' credentials installed.
struct Cluster {
    bed: testbed::Cluster,
    client: Client,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    /// fake-kube's controls, for the tests that inject faults into it.
    fn fake(&self) -> &FakeKube {
        self.bed.fake_kube().expect("a fake-kube cluster")
    }
}

/// fake-bitbucket and one cluster whose runner pods register with it.
struct World {
    bitbucket: FakeBitbucket,
    cluster: Cluster,
}

impl std::ops::Deref for World {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

fn pools_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("bbrunner.dev", "v1alpha1", "RunnerPool"),
        "runnerpools",
    )
}

impl World {
    /// A runner of workspace acme created "in the UI" with these labels: its registration, as
    /// `bbrunner import --format yaml --reveal-secret` writes it into a Secret.
    fn runner_from_the_ui(&self, labels: &[&str]) -> Value {
        let scope = self
            .bitbucket
            .with_world(|w, _| w.scope("acme", None).unwrap());
        let created = self.bitbucket.with_world(|w, now| {
            w.create_runner(scope, &json!({"name": "from-ui", "labels": labels}), now)
                .unwrap()
        });
        json!({
            "account_uuid": self.bitbucket.workspace_uuid("acme").unwrap(),
            "runner_uuid": created["uuid"],
            "oauth_client_id": created["oauth_client"]["id"],
            "oauth_client_secret": created["oauth_client"]["secret"],
        })
    }

    async fn start(name: &str) -> Self {
        Self::start_with(name, |_| {}).await
    }

    async fn start_with(name: &str, configure: impl FnOnce(&mut ClusterConfig)) -> Self {
        let testbed::Testbed { bitbucket, cluster } =
            testbed::Testbed::fake(&format!("op-{name}"), bitbucket_config(), |c| {
                c.pod_start_latency = Duration::from_millis(300);
                configure(c);
            })
            .await;
        Self {
            bitbucket,
            cluster: Cluster::prepare(cluster).await,
        }
    }

    /// fake-bitbucket beside a real control plane of the test's own (two nodes); `None` where
    /// its binaries are missing (the test then skips, never under CI).
    async fn real(name: &str) -> Option<Self> {
        let testbed::Testbed { bitbucket, cluster } =
            testbed::Testbed::real(&format!("op-{name}"), bitbucket_config(), |o| o.nodes = 2)
                .await?;
        Some(Self {
            bitbucket,
            cluster: Cluster::prepare(cluster).await,
        })
    }

    /// The operator binary, reaching the cluster through `kubeconfig`.
    fn operator_with(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
        level: &str,
        log: Stdio,
    ) -> Operator {
        operator_process(self.bitbucket.url(), kubeconfig, extra, &[], level, log)
    }

    fn operator(&self, extra: &[&str]) -> Operator {
        self.operator_logging(extra, "info", Stdio::null())
    }

    fn operator_logging(&self, extra: &[&str], level: &str, log: Stdio) -> Operator {
        self.operator_with(&self.kubeconfig, extra, level, log)
    }

    /// The operator on fake-bitbucket's clock (30 times real time), so that 15 minutes of the
    /// week pass in 30 s; it logs to `log`.
    fn scaled_operator(&self, log: &std::path::Path) -> Operator {
        let origin = self.bitbucket.with_world(|w, _| w.epoch).to_string();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        self.operator_logging(
            &["--time-scale", "30", "--clock-origin", &origin],
            "info",
            Stdio::from(log),
        )
    }

    fn runners(&self) -> Vec<Value> {
        self.bitbucket.with_world(|w, now| {
            w.runners
                .iter()
                .map(|r| json!({"uuid": r.uuid, "name": r.name, "labels": r.labels, "state": fake_bitbucket::world::runner_status(r, now), "step": r.step, "dup": r.duplicate_agent_polls}))
                .collect()
        })
    }

    fn steps(&self, state: StepState) -> usize {
        self.bitbucket
            .with_world(|w, _| w.steps.iter().filter(|s| s.state == state).count())
    }

    /// A Bitbucket client with the pools' OAuth consumer, as a person's script would use.
    fn bitbucket_client(&self) -> bitbucket::Client {
        bitbucket::Client::new(
            bitbucket::Config {
                api_url: self.bitbucket.url().parse().unwrap(),
                auth_url: self.bitbucket.url().parse().unwrap(),
                ..bitbucket::Config::default()
            },
            bitbucket::Credentials::OAuthConsumer {
                key: "key".into(),
                secret: "consumer-secret".into(),
            },
        )
        .unwrap()
    }

    fn submit(&self, n: usize, duration_s: f64) {
        for _ in 0..n {
            self.bitbucket
                .submit_step(&StepRequest {
                    workspace: "acme".into(),
                    repository: None,
                    labels: vec!["self.hosted".into(), "build".into()],
                    duration_s,
                    size: None,
                })
                .unwrap();
        }
    }
}

/// The tests' Bitbucket: workspace `acme` with repository `app`, the pools' OAuth consumer,
/// its clock 30 times real time.
fn bitbucket_config() -> FakeConfig {
    FakeConfig {
        time_scale: 30.0,
        workspaces: vec!["acme".into()],
        repositories: vec![("acme".into(), "app".into())],
        oauth_consumers: vec![("key".into(), "consumer-secret".into())],
        ..FakeConfig::default()
    }
}

/// The operator binary against `bitbucket_url`, reaching its cluster through `kubeconfig`.
fn operator_process(
    bitbucket_url: &str,
    kubeconfig: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
    level: &str,
    log: Stdio,
) -> Operator {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bbrunner"));
    command
        .args([
            "operator",
            "--bitbucket-url",
            bitbucket_url,
            "--bitbucket-auth-url",
            bitbucket_url,
        ])
        .args(extra)
        .envs(env.iter().copied())
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(log);
    if level.is_empty() {
        // The operator's own default level.
        command.env_remove("RUST_LOG");
    }
    if !extra.contains(&"--time-scale") && !extra.contains(&"--budget") {
        // fake-bitbucket's clock runs 30 times faster than this operator's: its hourly limit
        // passes in two minutes. The operator's budget is the same hour's worth of requests
        // on the wall clock, so that its pools' fair share of it allows the tests' 1 s polls.
        command.args(["--budget", "27000"]);
    }
    Operator(command.spawn().unwrap())
}

impl Cluster {
    async fn start(
        name: &str,
        bitbucket_url: &str,
        configure: impl FnOnce(&mut ClusterConfig),
    ) -> Self {
        let mut cluster = ClusterConfig {
            bitbucket_url: Some(bitbucket_url.to_owned()),
            pod_start_latency: Duration::from_millis(300),
            ..ClusterConfig::default()
        };
        configure(&mut cluster);
        let bed = testbed::Cluster::fake(&format!("op-{name}"), cluster).await;
        Self::prepare(bed).await
    }

    /// Install the CRD, namespace `ci` and the credentials.
    async fn prepare(bed: testbed::Cluster) -> Self {
        let client = bed.client();
        let crd = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
            .arg("crd")
            .output()
            .unwrap();
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&String::from_utf8(crd.stdout).unwrap()).unwrap();
        Api::<CustomResourceDefinition>::all(client.clone())
            .patch(
                "runnerpools.bbrunner.dev",
                &kube::api::PatchParams::apply("bbrunner-tests").force(),
                &kube::api::Patch::Apply(&crd),
            )
            .await
            .unwrap();
        // A real server serves a new CRD's resource a moment later.
        let pools: Api<DynamicObject> = Api::all_with(client.clone(), &pools_resource());
        eventually("the RunnerPool resource is served", 30, || async {
            pools.list(&ListParams::default()).await.is_ok()
        })
        .await;
        let cluster = Self {
            kubeconfig: bed.kubeconfig().to_owned(),
            dir: bed.dir().to_owned(),
            client,
            bed,
        };
        cluster.apply_ns().await;
        cluster
    }

    async fn apply_ns(&self) {
        // dind is privileged: the namespace allows it, as the docs tell users to.
        let ns = serde_json::from_value(json!({"metadata": {"name": NS, "labels": {
            "pod-security.kubernetes.io/enforce": "privileged"}}}))
        .unwrap();
        Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        self.secret(
            "bitbucket-credentials",
            json!({"oauthClientId": "key", "oauthClientSecret": "consumer-secret"}),
        )
        .await;
    }

    async fn secret(&self, name: &str, data: Value) {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        Api::<Secret>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    /// Replace the installed CRD's schema as `edit` changes it (an older CRD that did not
    /// check what the current one does); returns the CRD as it was, for `restore_crd`.
    async fn loosen_crd(&self, edit: impl FnOnce(&mut Value)) -> CustomResourceDefinition {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let current = crds.get("runnerpools.bbrunner.dev").await.unwrap();
        let mut older = serde_json::to_value(&current).unwrap();
        edit(&mut older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]);
        crds.replace(
            "runnerpools.bbrunner.dev",
            &PostParams::default(),
            &serde_json::from_value(older).unwrap(),
        )
        .await
        .unwrap();
        current
    }

    /// Put back a CRD `loosen_crd` replaced; the API server keeps the objects stored meanwhile.
    async fn restore_crd(&self, previous: &CustomResourceDefinition) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut now = crds.get("runnerpools.bbrunner.dev").await.unwrap();
        now.spec = previous.spec.clone();
        crds.replace("runnerpools.bbrunner.dev", &PostParams::default(), &now)
            .await
            .unwrap();
    }

    fn pools(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), NS, &pools_resource())
    }

    async fn pool(&self, name: &str, spec: Value) {
        let pool: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.pools()
            .create(&PostParams::default(), &pool)
            .await
            .unwrap();
    }

    /// The message of the 422 with which admission refuses to create `pool`.
    async fn refused_at_admission(&self, pool: &DynamicObject) -> String {
        let refused = self
            .pools()
            .create(&PostParams::default(), pool)
            .await
            .expect_err("refused at admission");
        let kube::Error::Api(status) = refused else {
            panic!("{refused}")
        };
        assert_eq!(status.code, 422, "{}", status.message);
        status.message
    }

    /// The namespace's events.k8s.io/v1 Events (what the operator records).
    fn events(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            NS,
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
                "events",
            ),
        )
    }

    async fn delete_pool(&self, name: &str) {
        self.pools()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    async fn pool_gone(&self, name: &str) -> bool {
        self.pools().get_opt(name).await.unwrap().is_none()
    }

    /// Whether pool `name` has condition `kind` with this status and reason, its message
    /// containing `part`.
    async fn has_condition(
        &self,
        name: &str,
        kind: &str,
        status: &str,
        reason: &str,
        part: &str,
    ) -> bool {
        self.status(name).await["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == kind
                    && c["status"] == status
                    && c["reason"] == reason
                    && c["message"].as_str().is_some_and(|m| m.contains(part))
            })
    }

    async fn status(&self, name: &str) -> Value {
        self.pools()
            .get(name)
            .await
            .map(|p| p.data["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// Store an OAuth consumer secret Bitbucket rejects as the Secret `wrong`, and point `spec`
    /// at it.
    async fn use_wrong_credentials(&self, spec: &mut Value, oauth_secret: &str) {
        self.secret(
            "wrong",
            json!({"oauthClientId": "key", "oauthClientSecret": oauth_secret}),
        )
        .await;
        spec["credentials"]["secretRef"]["name"] = json!("wrong");
    }

    async fn pods(&self) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }
}

/// The operator logging JSON at `level` (empty: its default) to a file and serving metrics;
/// pool `builds`, and pool `broken` whose OAuth secret Bitbucket rejects. Returns once a
/// runner is online, with the log's path and the metrics address.
async fn logged_operator_with_a_broken_pool(
    world: &World,
    level: &str,
    oauth_secret: &str,
) -> (Operator, PathBuf, String) {
    let log_path = world.dir.join("operator.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let addr = free_local_addr();
    let op = world.operator_logging(
        &["--metrics-addr", &addr, "--log-format", "json"],
        level,
        Stdio::from(log),
    );
    world.pool("builds", managed(1, 3)).await;
    let mut broken = managed(1, 1);
    world.use_wrong_credentials(&mut broken, oauth_secret).await;
    world.pool("broken", broken).await;
    eventually("a runner online", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
    (op, log_path, addr)
}

async fn eventually<F, Fut>(what: &str, seconds: u64, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !reached(seconds, check).await {
        panic!("{what}: not reached within {seconds} s");
    }
}

/// Whether `check` holds within `seconds`, tried every 100 ms.
async fn reached<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The operator's metrics, as a scraper reads them.
async fn scrape(addr: &str) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An address for the operator's metrics server, on a port the OS just had free.
fn free_local_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// Whether a tier needing what a machine may lack (root, Debian's packages) runs here. Where
/// `missing` says what is not there, it skips loudly, except under CI=true, where it fails.
fn tier_runs(tier: &str, needs: &str, test: &str, missing: Option<String>) -> bool {
    match missing {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{tier} cannot run under CI: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {tier} needs {needs}: {why}");
            false
        }
    }
}

/// A file of the repository, by its path from the root.
fn workspace_file(path: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn managed(min: u32, max: u32) -> Value {
    json!({
        "workspace": "acme",
        "labels": ["build"],
        "credentials": {"secretRef": {"name": "bitbucket-credentials"}},
        "scaling": {"min": min, "max": max, "minIdle": 1, "pollInterval": "1s", "scaleDownDelay": "3s"},
    })
}

fn online(runners: &[Value]) -> usize {
    runners.iter().filter(|r| r["state"] == "ONLINE").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_scales_to_max_and_back_without_interrupting_a_step() {
    let world = World::start("burst").await;
    let _op = world.operator(&[]);
    world.pool("builds", managed(1, 4)).await;
    eventually("min runner online", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
    world.submit(8, 120.0);
    let mut peak = 0;
    eventually("max reached", 30, || {
        let n = world.runners().len();
        peak = peak.max(n);
        async move { n == 4 }
    })
    .await;
    eventually("all steps done", 60, || async {
        world.steps(StepState::Completed) == 8
    })
    .await;
    eventually("back to min", 30, || async { world.runners().len() == 1 }).await;
    assert_eq!(world.steps(StepState::Interrupted), 0);
    assert_eq!(world.steps(StepState::Failed), 0);
    assert!(peak <= 4, "max overshot: {peak}");
    assert!(
        world.runners().iter().all(|r| r["dup"] == 0),
        "two agents for one runner"
    );
    let status = world.status("builds").await;
    assert_eq!(status["desired"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn repairs_deleting_a_pool_and_a_runner_deleted_in_bitbucket() {
    let world = World::start("repairs").await;
    let _op = world.operator(&[]);
    world.pool("builds", managed(2, 4)).await;
    eventually("two runners online", 20, || async {
        online(&world.runners()) == 2
    })
    .await;

    // A deleted pod comes back, for the same runner.
    let pod = world.pods().await.remove(0);
    let runner_uuid = pod.metadata.labels.as_ref().unwrap()["bbrunner.dev/runner-uuid"].clone();
    Api::<Pod>::namespaced(world.client.clone(), NS)
        .delete(
            pod.metadata.name.as_deref().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    eventually("the pod is back and its runner online", 20, || async {
        let back = world.pods().await.iter().any(|p| {
            p.metadata.labels.as_ref().unwrap()["bbrunner.dev/runner-uuid"] == runner_uuid
                && p.metadata.uid != pod.metadata.uid
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        });
        back && online(&world.runners()) == 2
    })
    .await;

    // A runner deleted in Bitbucket takes its pod with it, and is replaced.
    let victim = world.runners()[0]["uuid"].as_str().unwrap().to_owned();
    let scope = world
        .bitbucket
        .with_world(|w, _| w.scope("acme", None).unwrap());
    world
        .bitbucket
        .with_world(|w, now| w.delete_runner(&scope, &victim, now).unwrap());
    let bare = victim.trim_matches(|c| c == '{' || c == '}').to_owned();
    eventually(
        "its pod and Secret go, and a new runner replaces it",
        20,
        || async {
            let pods = world.pods().await;
            let gone = !pods
                .iter()
                .any(|p| p.metadata.labels.as_ref().unwrap()["bbrunner.dev/runner-uuid"] == bare);
            gone && online(&world.runners()) == 2
        },
    )
    .await;

    // Deleting the pool deletes every runner in Bitbucket, then the pool.
    world.delete_pool("builds").await;
    eventually("no runner left and the pool gone", 20, || async {
        world.runners().is_empty() && world.pool_gone("builds").await
    })
    .await;
    eventually("pods and Secrets cascade", 10, || async {
        let secrets = Api::<Secret>::namespaced(world.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap();
        world.pods().await.is_empty() && secrets.items.len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_credentials_degrade_the_pool_and_create_nothing() {
    let world = World::start("creds").await;
    let _op = world.operator(&[]);
    let mut spec = managed(1, 3);
    world
        .use_wrong_credentials(&mut spec, "not-the-secret")
        .await;
    world.pool("builds", spec).await;
    eventually("Degraded/CredentialsInvalid", 20, || async {
        world
            .has_condition("builds", "Degraded", "True", "CredentialsInvalid", "")
            .await
    })
    .await;
    assert!(world.runners().is_empty());
    assert!(world.pods().await.is_empty());
    let status = world.status("builds").await;
    assert!(
        !status.to_string().contains("not-the-secret"),
        "the secret leaked into the status"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn static_pools_run_imported_runners() {
    let world = World::start("static").await;
    let _op = world.operator(&[]);
    // A runner created "in the UI", imported into a Secret.
    let registration = world.runner_from_the_ui(&["self.hosted", "linux", "build"]);
    world.secret("ui-runner", registration).await;
    world
        .pool("imported", json!({"workspace": "acme", "mode": "static", "staticRunners": [{"secretRef": {"name": "ui-runner"}}]}))
        .await;
    eventually("the imported runner comes online", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
    world.submit(1, 30.0);
    eventually("it runs a step", 20, || async {
        world.steps(StepState::Completed) == 1
    })
    .await;
    assert_eq!(world.runners().len(), 1, "static pools create no runner");
    // Without API credentials the pool sees its pods, and says so.
    eventually("the status speaks of pods", 10, || async {
        world
            .has_condition(
                "imported",
                "Ready",
                "True",
                "PodsRunning",
                "1 of 1 runner pods running",
            )
            .await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_leader_election_only_one_of_two_operators_acts() {
    let world = World::start("leader").await;
    let _a = world.operator(&["--leader-election", "--lease-namespace", NS]);
    let _b = world.operator(&["--leader-election", "--lease-namespace", NS]);
    world.pool("builds", managed(2, 4)).await;
    eventually("two runners online", 30, || async {
        online(&world.runners()) == 2
    })
    .await;
    // Let both run for a while: a second acting operator would create more runners.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(world.runners().len(), 2, "{:?}", world.runners());
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(world.client.clone(), NS)
            .get("bbrunner-operator")
            .await
            .unwrap();
    assert!(leases.spec.unwrap().holder_identity.is_some());
    let pods = world.pods().await;
    assert_eq!(pods.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_are_served() {
    let world = World::start("metrics").await;
    let addr = free_local_addr();
    let _op = world.operator(&["--metrics-addr", &addr]);
    // Cached, so that the cache's series are exported too.
    let mut builds = managed(1, 2);
    builds["cache"] = json!({"size": "1Gi"});
    world.pool("builds", builds).await;
    // A pool that fails, so that reconcile errors are counted too.
    let mut broken = managed(1, 1);
    world.use_wrong_credentials(&mut broken, "nope").await;
    world.pool("broken", broken).await;
    eventually("a runner online", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
    // As Prometheus asks: OpenMetrics (the classic text is for other scrapers).
    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        async move {
            reqwest::Client::new()
                .get(url)
                .header("accept", "application/openmetrics-text;version=1.0.0")
                .send()
                .await
                .ok()
        }
    };
    eventually("metrics show the pool", 10, || async {
        match get("/metrics").await {
            Some(r) => r
                .text()
                .await
                .unwrap_or_default()
                .contains(r#"bbrunner_runners{namespace="ci",pool="builds",state="idle"} 1"#),
            None => false,
        }
    })
    .await;
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for metric in [
        "bbrunner_desired_runners",
        "bbrunner_reconcile_duration_seconds",
        "bbrunner_bitbucket_requests_total{endpoint=\"create_runner\",status=\"201\"}",
        "bbrunner_bitbucket_budget_remaining_requests{identity=",
        "# UNIT bbrunner_bitbucket_budget_remaining_requests requests",
        "bbrunner_bitbucket_request_duration_seconds_count{endpoint=\"create_runner\"}",
        "bbrunner_build_info{version=\"0.1.0\",revision=",
        "bbrunner_leader 1",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
    assert!(!text.contains("consumer-secret"));
    // Every metric the Grafana dashboard queries is one the operator exports.
    let dashboard =
        std::fs::read_to_string(workspace_file("deploy/grafana/bbrunner.json")).unwrap();
    let mut queried: Vec<String> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("bbrunner_"))
        .map(|w| {
            ["_bucket", "_total", "_count", "_sum"]
                .iter()
                .fold(w.to_owned(), |name, suffix| {
                    name.strip_suffix(suffix).map(str::to_owned).unwrap_or(name)
                })
        })
        .collect();
    queried.sort();
    queried.dedup();
    assert!(queried.len() >= 7, "{queried:?}");
    eventually("reconcile errors counted", 10, || async {
        get("/metrics")
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("bbrunner_reconcile_errors_total{")
    })
    .await;
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    // The queue-wait histogram has samples only for queue-policy repository pools: the
    // queue-policy test asserts it.
    for metric in queried
        .iter()
        .filter(|m| *m != "bbrunner_step_queue_wait_seconds")
    {
        assert!(
            text.contains(&format!("# TYPE {metric} ")),
            "the dashboard queries {metric}, which is not exported:\n{text}"
        );
    }
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/readyz").await.unwrap().status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_pool_on_the_queue_policy_scales_to_its_queue_at_once() {
    let world = World::start("queue").await;
    let addr = free_local_addr();
    let _op = world.operator(&["--metrics-addr", &addr]);
    let mut spec = managed(1, 6);
    spec["repository"] = json!("app");
    spec["scaling"]["policy"] = json!("queue");
    world.pool("app-builds", spec).await;
    eventually("the first runner online", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
    for _ in 0..4 {
        world
            .bitbucket
            .submit_step(&StepRequest {
                workspace: "acme".into(),
                repository: Some("app".into()),
                labels: vec!["self.hosted".into(), "build".into()],
                duration_s: 120.0,
                size: None,
            })
            .unwrap();
    }
    // busy + queued + minIdle within a couple of polls, not one start latency at a time.
    eventually("five runners exist", 8, || async {
        world.runners().len() >= 5
    })
    .await;
    eventually("all four steps done", 30, || async {
        world.steps(StepState::Completed) == 4
    })
    .await;
    let text = scrape(&addr).await;
    let count = text
        .lines()
        .find(|l| l.starts_with("bbrunner_step_queue_wait_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(count >= 1, "no queue wait observed:\n{text}");
}

fn doctor(world: &World) -> (i32, Vec<Value>) {
    doctor_against(world, world.bitbucket.url())
}

/// doctor's JSON report with Bitbucket at `bitbucket_url`.
fn doctor_against(world: &World, bitbucket_url: &str) -> (i32, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args([
            "doctor",
            "--format",
            "json",
            "--bitbucket-url",
            bitbucket_url,
            "--bitbucket-auth-url",
            bitbucket_url,
        ])
        .env("KUBECONFIG", &world.kubeconfig)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.code().unwrap(),
        report["checks"].as_array().unwrap().clone(),
    )
}

fn verdict(checks: &[Value], name: &str) -> String {
    checks
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))["verdict"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn label_namespace(world: &World, level: &str) {
    Api::<k8s_openapi::api::core::v1::Namespace>::all(world.client.clone())
        .patch(
            NS,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": level}}}),
            ),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_a_healthy_setup() {
    let world = World::start("doctor-ok").await;
    label_namespace(&world, "privileged").await;
    let _op = world.operator(&["--leader-election", "--lease-namespace", NS]);
    world.pool("builds", managed(1, 3)).await;
    eventually("a runner online", 30, || async {
        online(&world.runners()) == 1
    })
    .await;
    let (code, checks) = doctor(&world);
    let bad: Vec<&Value> = checks.iter().filter(|c| c["verdict"] != "pass").collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(code, 0);
    assert!(checks.iter().any(|c| c["name"] == "mtu/ci/builds" && c["detail"].as_str().unwrap().contains("1450")));
    // The operator's Bitbucket calls per identity, as its pools' status reports them.
    assert!(
        checks.iter().any(|c| c["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("api-budget/"))
            && c["detail"]
                .as_str()
                .is_some_and(|d| d.contains("calls in the last hour") && d.contains("ci/builds"))),
        "{checks:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_each_broken_setup() {
    let world = World::start_with("doctor-broken", |c| {
        c.container_runtime = "containerd://1.4.3".into();
        c.node_memory = "16Gi".into();
    })
    .await;
    label_namespace(&world, "baseline").await;
    let _op = world.operator(&[]);
    // A big pool that cannot fit a node, with a fixed MTU above the pod network's 1450.
    let mut big = managed(1, 2);
    big["labels"] = json!(["build", "big"]);
    big["runner"] = json!({"size": "8x"});
    big["dind"] = json!({"mtu": 1500});
    world.pool("big", big).await;
    // Overlaps with big, BestEffort on OOM-score-era nodes, floating dind tag, bad credentials.
    let mut small = managed(1, 2);
    world.use_wrong_credentials(&mut small, "nope").await;
    small["runner"] = json!({"resources": {}});
    small["dind"] = json!({"image": "docker:dind", "resources": {}});
    world.pool("small", small).await;
    eventually("the big pool's pod is unschedulable", 30, || async {
        world.pods().await.iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.reason.as_deref() == Some("Unschedulable"))
                })
        })
    })
    .await;
    // The same registration also run by hand (as `render` would have it): two agents.
    let uuid = world
        .pods()
        .await
        .iter()
        .find_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get("bbrunner.dev/runner-uuid")
                .cloned()
        })
        .unwrap();
    let by_hand: Pod = serde_json::from_value(json!({
        "metadata": {"name": "runner-by-hand", "labels": {"bbrunner.dev/runner-uuid": uuid}},
        "spec": {"containers": [{"name": "runner", "image": "runner:1",
            "resources": {"requests": {"memory": "64Mi"}}}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(world.client.clone(), NS)
        .create(&PostParams::default(), &by_hand)
        .await
        .unwrap();
    let (code, checks) = doctor(&world);
    assert_eq!(code, 1);
    assert_eq!(
        verdict(&checks, &format!("runner/{uuid}")),
        "fail",
        "{checks:#?}"
    );
    for (name, expected) in [
        ("crd", "pass"),
        ("pod-security/ci", "fail"),
        ("mtu/ci/big", "fail"),
        ("dind/ci/small", "fail"),
        ("labels/ci/big+small", "warn"),
        ("credentials/ci/small", "fail"),
        ("credentials/ci/big", "pass"),
        ("quota/acme", "pass"),
        ("scheduling/ci/big-", "fail"),
    ] {
        assert_eq!(verdict(&checks, name), expected, "{name}: {checks:#?}");
    }
    let text = serde_json::to_string(&checks).unwrap();
    assert!(
        !text.contains("consumer-secret") && !text.contains("\"nope\""),
        "a secret leaked: {text}"
    );
}

/// Bitbucket out of reach is not the credentials' fault: its own fix line, and the quota line
/// stays, unknown.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_tells_an_unreachable_bitbucket_from_bad_credentials() {
    let world = World::start("doctor-offline").await;
    world.pool("builds", managed(1, 2)).await;
    let closed = free_local_addr();
    let (code, checks) = doctor_against(&world, &format!("http://{closed}"));
    assert_eq!(code, 1);
    let credentials = checks
        .iter()
        .find(|c| c["name"] == "credentials/ci/builds")
        .unwrap_or_else(|| panic!("{checks:#?}"));
    assert_eq!(credentials["verdict"], "fail");
    let fix = credentials["fix"].as_str().unwrap();
    assert!(
        fix.contains("network") && !fix.contains("Secret"),
        "{credentials}"
    );
    assert_eq!(verdict(&checks, "quota/acme"), "warn", "{checks:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lint_reads_pools_from_the_cluster() {
    let world = World::start("lint-cluster").await;
    let mut spec = managed(1, 2);
    spec["dind"] = json!({"mtu": 1400});
    world.pool("builds", spec).await;
    let file = world.dir.join("bitbucket-pipelines.yml");
    std::fs::write(&file, "pipelines:\n  default:\n    - step:\n        runs-on: [self.hosted, build]\n        services: [docker]\n        script: [make]\n    - step:\n        runs-on: [self.hosted, gpu]\n        script: [make]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args(["lint", file.to_str().unwrap(), "--from-cluster"])
        .env("KUBECONFIG", &world.kubeconfig)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(":5:19: error[docker-mtu]"), "{text}");
    assert!(text.contains("--mtu=1400"), "{text}");
    assert!(text.contains(":8:18: error[unserved-labels]"), "{text}");

    // A pool the cluster holds that no longer reads (stored under an older, looser CRD) is
    // skipped, named with its namespace, and --format json still prints JSON.
    world
        .loosen_crd(|schema| {
            schema["properties"]["spec"] =
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        })
        .await;
    let mut odd = managed(1, 2);
    odd["runner"] = json!({"size": "16x"});
    world.pool("odd", odd).await;
    let out = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args([
            "lint",
            file.to_str().unwrap(),
            "--from-cluster",
            "--format",
            "json",
        ])
        .env("KUBECONFIG", &world.kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipping RunnerPool ci/odd") && stderr.contains("spec.runner.size"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["diagnostics"].as_array().unwrap().len() >= 2,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_logs_events_status_or_metrics_even_at_trace_level() {
    let world = World::start("secrets").await;
    let (op, log_path, addr) =
        logged_operator_with_a_broken_pool(&world, "trace", "wrong-secret-value-7f3a").await;
    world.submit(3, 60.0);
    eventually("scaled up", 20, || async { world.runners().len() >= 2 }).await;
    let metrics = scrape(&addr).await;
    drop(op);

    let mut secrets: Vec<String> = world.bitbucket.with_world(|w, _| {
        w.runners
            .iter()
            .map(|r| r.oauth_client_secret.clone())
            .collect()
    });
    secrets.push("consumer-secret".into());
    secrets.push("wrong-secret-value-7f3a".into());
    // Access tokens the fake issued to the operator's consumer.
    secrets.extend(
        world
            .bitbucket
            .with_world(|w, _| w.bearer.keys().cloned().collect::<Vec<_>>()),
    );
    assert!(secrets.len() >= 5);

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.len() > 10_000,
        "trace logging produced little: {} bytes",
        logs.len()
    );
    let events = world.events().list(&ListParams::default()).await.unwrap();
    let events = serde_json::to_string(&events.items).unwrap();
    assert!(events.contains("RunnerCreated"), "{events}");
    let statuses = serde_json::to_string(&vec![
        world.status("builds").await,
        world.status("broken").await,
    ])
    .unwrap();
    assert!(statuses.contains("CredentialsInvalid"), "{statuses}");
    for secret in &secrets {
        for (place, text) in [
            ("logs", &logs),
            ("events", &events),
            ("status", &statuses),
            ("metrics", &metrics),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({}...) appears in the operator's {place}",
                &secret[..4]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_specs_past_crd_validation_degrade_the_pool_naming_the_field() {
    let world = World::start("malformed").await;
    let _op = world.operator(&[]);
    // Stored under a CRD that checked nothing of the spec, as where validation was bypassed.
    let current = world
        .loosen_crd(|schema| {
            schema["properties"]["spec"] =
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        })
        .await;
    for (name, patch, field) in [
        (
            "bad-labels",
            json!({"labels": ["Not Valid"]}),
            "spec.labels",
        ),
        (
            "bad-range",
            json!({"scaling": {"min": 5, "max": 2}}),
            "spec.scaling: min (5) is greater than max (2)",
        ),
        ("bad-mtu", json!({"dind": {"mtu": "huge"}}), "spec.dind.mtu"),
        (
            "bad-delay",
            json!({"scaling": {"scaleDownDelay": "later"}}),
            "spec.scaling.scaleDownDelay",
        ),
    ] {
        let mut spec = managed(1, 2);
        for (k, v) in patch.as_object().unwrap() {
            spec[k] = v.clone();
        }
        world.pool(name, spec).await;
        eventually(&format!("{name} is Degraded/InvalidSpec"), 20, || async {
            world
                .has_condition(name, "Degraded", "True", "InvalidSpec", field)
                .await
        })
        .await;
    }
    // Nothing was created for them, and the operator is still serving a good pool.
    assert!(world.runners().is_empty());
    world.restore_crd(&current).await;
    world.pool("good", managed(1, 2)).await;
    eventually("the good pool works", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dind_before_docker_24_is_shown_in_status_and_events() {
    let world = World::start("dind-20").await;
    let _op = world.operator(&[]);
    let mut spec = managed(1, 2);
    spec["dind"] = json!({"image": "docker:20.10.7-dind", "mtu": 1400});
    world.pool("builds", spec).await;
    eventually("the condition and the event", 20, || async {
        let condition = world
            .has_condition(
                "builds",
                "StepNetworkMTU",
                "False",
                "DindBeforeDocker24",
                "keeps 1500",
            )
            .await;
        let event = world
            .events()
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items.iter().any(|e| {
                    e.data["reason"] == "DindBeforeDocker24" && e.data["type"] == "Warning"
                })
            })
            .unwrap_or(false);
        condition && event
    })
    .await;
    // The pool still runs: the warning is advice, the daemon decides at start.
    eventually("a runner online", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
}

/// The operator records events.k8s.io/v1 Events; users read them with `kubectl get events`
/// and `kubectl describe`, which go through core/v1. Both must show them.
#[tokio::test(flavor = "multi_thread")]
async fn operator_events_show_in_kubectl_get_events_and_describe() {
    let world = World::start("kubectl-events").await;
    let _op = world.operator(&[]);
    world.pool("builds", managed(1, 2)).await;
    eventually("a runner created", 20, || async {
        online(&world.runners()) == 1
    })
    .await;
    let kubectl = |args: &[&str]| {
        let out = Command::new(testbed::cluster::kubectl_binary())
            .args(args)
            .env("KUBECONFIG", &world.kubeconfig)
            // Its own discovery cache: kubectl's default one keys clusters by port only.
            .env("KUBECACHEDIR", world.dir.join("kubectl-cache"))
            .output()
            .expect("kubectl is built by ./scripts/kube-build");
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let mut listed = Value::Null;
    eventually("kubectl get events shows the operator's", 10, || {
        listed =
            serde_json::from_str(&kubectl(&["get", "events", "-n", NS, "-o", "json"])).unwrap();
        let found = listed["items"].as_array().into_iter().flatten().any(|e| {
            e["reason"] == "RunnerCreated"
                && e["involvedObject"]["kind"] == "RunnerPool"
                && e["involvedObject"]["name"] == "builds"
                && e["source"]["component"] == "bbrunner"
        });
        async move { found }
    })
    .await;
    let described = kubectl(&["describe", "runnerpool", "builds", "-n", NS]);
    assert!(described.contains("RunnerCreated"), "{described}");
    assert!(described.contains("Scaled"), "{described}");
}

/// dind's Docker API open on TCP without TLS client verification, spelled as dockerd reads
/// it: refused at admission by the CRD's rules, and by the operator for a pool stored before
/// them (Degraded naming the argument, no runner, no pod).
async fn dind_tcp_spellings_are_refused_at_admission_and_by_the_operator(world: &World) {
    let spellings = [
        json!(["-H", ":2375"]),
        json!(["--host=0.0.0.0:2375"]),
        json!([
            "--host=tcp://0.0.0.0:2376",
            "--tlsverify",
            "--tlsverify=false"
        ]),
    ];
    let pool = |name: &str, spec: Value| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    };
    for (i, args) in spellings.iter().enumerate() {
        let mut spec = managed(1, 1);
        spec["dind"] = json!({"extraArgs": args});
        let message = world
            .refused_at_admission(&pool(&format!("open-{i}"), spec))
            .await;
        assert!(
            message.contains("spec.dind.extraArgs") && message.contains("--tlsverify"),
            "{message}"
        );
    }
    let mut spec = managed(1, 1);
    spec["runner"] = json!({"env": [{"name": "DOCKER_HOST", "value": "tcp://localhost:2375"}]});
    assert!(
        world
            .pools()
            .create(&PostParams::default(), &pool("docker-host", spec))
            .await
            .is_err()
    );

    // Stored before the rules existed: the operator refuses them itself.
    let stored: Vec<(String, Value, String)> = spellings
        .iter()
        .zip([
            "-H :2375",
            "--host=0.0.0.0:2375",
            "--host=tcp://0.0.0.0:2376",
        ])
        .enumerate()
        .map(|(i, (args, written))| {
            let mut spec = managed(1, 1);
            spec["dind"] = json!({"extraArgs": args});
            (
                format!("open-{i}"),
                spec,
                format!("dind.extraArgs[0] ({written})"),
            )
        })
        .collect();
    the_operator_refuses_what_the_rules_would(
        world,
        |schema| {
            let spec = &mut schema["properties"]["spec"]["properties"];
            spec["dind"]["properties"]["extraArgs"]
                .as_object_mut()
                .unwrap()
                .remove("x-kubernetes-validations");
        },
        &stored,
    )
    .await;
}

/// Pools stored while the CRD's rules did not hold them (`loosen` takes the rules away, as an
/// older CRD lacked them): the operator refuses each itself, Degraded (`InvalidSpec`) with a
/// message naming what it expects, and runs no pod and creates no runner.
async fn the_operator_refuses_what_the_rules_would(
    world: &World,
    loosen: impl FnOnce(&mut Value),
    pools: &[(String, Value, String)],
) {
    world.loosen_crd(loosen).await;
    for (name, spec, _) in pools {
        let pool: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        // A real API server takes a moment to judge by the loosened schema.
        eventually(&format!("the loosened CRD admits {name}"), 20, || async {
            match world.pools().create(&PostParams::default(), &pool).await {
                Ok(_) => true,
                Err(kube::Error::Api(s)) if s.code == 409 => true,
                Err(_) => false,
            }
        })
        .await;
    }
    let _op = world.operator(&[]);
    for (name, _, expected) in pools {
        eventually(
            &format!("{name} Degraded naming {expected}"),
            30,
            || async {
                world
                    .has_condition(name, "Degraded", "True", "InvalidSpec", expected)
                    .await
            },
        )
        .await;
    }
    assert!(world.pods().await.is_empty(), "no pod runs");
    assert!(world.runners().is_empty(), "no runner is created");
}

#[tokio::test(flavor = "multi_thread")]
async fn dind_tcp_spellings_are_refused_on_fake_kube() {
    let world = World::start("dind-tcp").await;
    dind_tcp_spellings_are_refused_at_admission_and_by_the_operator(&world).await;
}

/// A change of labels and of the pod template reaches every runner: idle ones are replaced at
/// once, a few at a time, the busy one after its step; no step is interrupted and the pool
/// never holds more pods than max and the rollout's surge.
async fn a_spec_change_rolls_out_to_every_runner(world: &World) {
    let _op = world.operator(&[]);
    world.pool("builds", managed(2, 2)).await;
    eventually("two runners online", 60, || async {
        online(&world.runners()) == 2
    })
    .await;
    world.submit(1, 600.0);
    eventually("a runner busy", 30, || async {
        world.runners().iter().any(|r| !r["step"].is_null())
    })
    .await;
    world
        .pools()
        .patch(
            "builds",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"labels": ["build", "big"], "dind": {"mtu": 1400}}}),
            ),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (mut most_pods, mut saw_progressing) = (0, false);
    loop {
        let pods = world.pods().await;
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        most_pods = most_pods.max(live.len());
        let status = world.status("builds").await;
        saw_progressing |= world
            .has_condition(
                "builds",
                "Progressing",
                "True",
                "RollingOut",
                "of 2 runners run an earlier spec",
            )
            .await;
        let runners = world.runners();
        let labelled = runners.len() == 2
            && runners.iter().all(|r| {
                r["labels"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l == "big"))
                    && r["state"] == "ONLINE"
            });
        let mtu = !live.is_empty()
            && live.iter().all(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.init_containers.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.args
                                .as_ref()
                                .is_some_and(|a| a.first().is_some_and(|m| m == "1400"))
                        })
                    })
            });
        let generation = world
            .pools()
            .get("builds")
            .await
            .unwrap()
            .metadata
            .generation;
        if labelled
            && mtu
            && live.len() == 2
            && status["outdated"] == 0
            && status["rolledOutGeneration"].as_i64() == generation
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not rolled out within two minutes: {status:#}\n{runners:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(saw_progressing, "the rollout showed in Progressing");
    assert!(
        most_pods <= 3,
        "max 2 and a surge of 1, but {most_pods} pods at once"
    );
    assert!(
        world
            .has_condition(
                "builds",
                "Progressing",
                "False",
                "RolledOut",
                "current spec"
            )
            .await
    );
    eventually("the long step done", 60, || async {
        world.steps(StepState::Completed) == 1
    })
    .await;
    assert_eq!(
        world.steps(StepState::Interrupted),
        0,
        "no step interrupted"
    );
    let reasons: Vec<String> = world
        .events()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|e| e.data["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons.iter().any(|r| r == "RollingOut") && reasons.iter().any(|r| r == "RolledOut"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_change_rolls_out_on_fake_kube() {
    let world = World::start("rollout").await;
    a_spec_change_rolls_out_to_every_runner(&world).await;
}
