//! The seed's pod as real containers: a RunnerPool on the images `./scripts/node-images`
//! builds, scheduled on the real kubelet node of `kube-up --node kubelet` (Debian's containerd
//! and runc, a CNI bridge at MTU 1450, in namespaces of its own). Its runner container is
//! fake-bitbucket's agent and registers as a real runner would; its dind is Debian's dockerd
//! behind bbrunner's start script; the step's work runs a nested container through that dind.
//!
//! Needs root, Debian's containerd, runc, containernetworking-plugins and socat, kube-build's
//! kubelet and the node's images (`./scripts/test` installs and builds them). Skips loudly
//! without them, never under CI=true.

use testbed::scratch;

use super::*;

/// What the step runs, as the runner runs a step's script in a container through dind: a
/// busybox container (imported: nothing can be pulled) that reports its own `eth0` MTU.
const STEP_COMMAND: &str = "docker image inspect bb:1 >/dev/null 2>&1 || docker import /opt/bbrunner/busybox.tar bb:1 >/dev/null; echo \"nested eth0 MTU $(docker run --rm bb:1 cat /sys/class/net/eth0/mtu)\"";

fn kubectl_text(world: &World, args: &[&str]) -> String {
    let out = world.bed.kubectl(args, "");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Prints an interface's MTU and the largest ICMP payload that reaches the node (10.88.0.1)
/// with Don't Fragment set: a binary search with iputils' `ping -M do` (by its path: busybox's
/// shell would run its own ping applet, which cannot set Don't Fragment).
const LARGEST_DF_PAYLOAD: &str = "lo=1200; hi=1473; while [ $((hi - lo)) -gt 1 ]; do mid=$(((lo + hi) / 2)); if /bin/ping -M do -c 1 -W 1 -s $mid 10.88.0.1 >/dev/null 2>&1; then lo=$mid; else hi=$mid; fi; done; echo \"$(cat /sys/class/net/eth0/mtu) $lo\"";

/// One hop of the MTU table: its interface MTU and the largest payload that passed.
fn hop(measured: &str) -> (u32, u32) {
    let mut words = measured
        .split_whitespace()
        .map(|w| w.parse::<u32>().unwrap());
    (words.next().unwrap(), words.next().unwrap())
}

/// Whether the pod's runner container and its dind sidecar are both Ready.
fn both_ready(pod: &Pod) -> bool {
    let status = pod.status.clone().unwrap_or_default();
    let ready = |statuses: Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>, name: &str| {
        statuses
            .unwrap_or_default()
            .iter()
            .any(|c| c.name == name && c.ready)
    };
    ready(status.container_statuses, "runner") && ready(status.init_container_statuses, "docker")
}

/// One kubelet node at a time: two in one process take each other's containerd down (they
/// share the node's cgroup). Each test holds this for its whole run.
static ONE_NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `what` went wrong, with what shows why: the namespace's pods, claims, volumes and events,
/// dind's log (from its last run if it crashed), and the operator's newest log lines.
fn explain_node(world: &World, log: &std::path::Path, pool: &str, what: &str) -> String {
    let get = |args: &[&str]| {
        let out = world.bed.kubectl(args, "");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let selector = format!("bbrunner.dev/pool={pool}");
    let dind = |previous: &[&str]| {
        let mut args = vec![
            "logs", "-n", NS, "-l", &selector, "-c", "docker", "--tail", "20",
        ];
        args.extend(previous);
        get(&args)
    };
    let last_run = match dind(&["--previous"]) {
        crashed if !crashed.is_empty() => crashed,
        _ => dind(&[]),
    };
    let operator = std::fs::read_to_string(log).unwrap_or_default();
    let newest: Vec<&str> = operator.lines().rev().take(20).collect();
    format!(
        "{what}\n{}\n{}\n{}\ndind:\n{last_run}\noperator log, newest first:\n{}",
        get(&["get", "pods", "-n", NS, "-o", "wide"]),
        get(&["get", "pvc,pv", "-n", NS]),
        get(&["get", "events", "-n", NS]),
        newest.join("\n")
    )
}

/// The real control plane with its kubelet node, the operator against it (logging to
/// `operator.log` in the test's folder), and the node's images by name; `None` where the tier
/// cannot run (skipped loudly, never under CI).
async fn node_world(test: &str, name: &str) -> Option<(World, Value, PathBuf, Operator)> {
    let kube_bin = testbed::cluster::real_binaries(test)?;
    let images = testbed::kubelet_node::images_dir();
    if !tier_runs(
        "the kubelet node tier",
        "root, Debian's containerd, runc, CNI plugins and socat, and ./scripts/node-images",
        test,
        testbed::kubelet_node::missing_prerequisite(&kube_bin, &images),
    ) {
        return None;
    }
    let built = testbed::kubelet_node::built_images(&images).unwrap();
    let bed = testbed::Testbed::real(name, bitbucket_config(), |o| {
        o.nodes = 1;
        o.kubelet_node = Some(images.clone());
    })
    .await
    .expect("the binaries are there");
    let world = World {
        bitbucket: bed.bitbucket,
        cluster: Cluster::prepare(bed.cluster).await,
    };
    let log = world.dir.join("operator.log");
    let operator = world.operator_logging(
        &[],
        "info",
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    Some((world, built, log, operator))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_pod_runs_as_real_containers_on_a_kubelet_node() {
    let test = "the_seeds_pod_runs_as_real_containers_on_a_kubelet_node";
    let _node = ONE_NODE.lock().await;
    let Some((world, built, log, _operator)) = node_world(test, "op-kubelet").await else {
        return;
    };
    let image = |name: &str| built[name].as_str().unwrap().to_owned();
    let mut spec = managed(1, 1);
    spec["runner"] = json!({
        "image": image("runner"),
        "env": [{"name": "BBRUNNER_STEP_COMMAND", "value": STEP_COMMAND}],
    });
    spec["dind"] = json!({"image": image("dind"), "mtu": "auto"});
    spec["podTemplate"] =
        json!({"nodeSelector": {"kubernetes.io/hostname": testbed::kubelet_node::NODE_NAME}});
    world.pool("seed", spec).await;

    let explain = |what: &str| explain_node(&world, &log, "seed", what);
    let deadline = Instant::now() + Duration::from_secs(180);
    let pod = loop {
        let ready = world.pods().await.into_iter().find(both_ready);
        if let Some(pod) = ready {
            break pod;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            explain("no pod with both containers Ready within 180 s")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let name = pod.metadata.name.clone().unwrap();
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(testbed::kubelet_node::NODE_NAME)
    );
    let exec = |container: &str, command: &[&str]| {
        let mut args = vec!["exec", "-n", NS, name.as_str(), "-c", container, "--"];
        args.extend(command);
        kubectl_text(&world, &args)
    };
    // The pod network's MTU, as the CNI bridge gave it, and dind's, derived by the start script.
    assert_eq!(exec("docker", &["cat", "/sys/class/net/eth0/mtu"]), "1450");
    let dind_log = kubectl_text(&world, &["logs", "-n", NS, &name, "-c", "docker"]);
    assert!(
        dind_log.contains("bbrunner: pod eth0 MTU is 1450"),
        "{dind_log}"
    );
    // (docker0 itself reads 1500 until a container joins it: the nested container's own eth0,
    // below, is what counts.)
    let version = exec(
        "docker",
        &["docker", "info", "--format", "{{.ServerVersion}}"],
    );
    assert!(!version.is_empty(), "docker info answered nothing");

    let deadline = Instant::now() + Duration::from_secs(60);
    while online(&world.runners()) < 1 {
        if Instant::now() > deadline {
            let runner_log = world
                .bed
                .kubectl(&["logs", "-n", NS, &name, "-c", "runner"], "");
            panic!(
                "{}\nthe runner container's log:\n{}{}",
                explain("the runner was not ONLINE in fake-bitbucket within 60 s"),
                String::from_utf8_lossy(&runner_log.stdout),
                String::from_utf8_lossy(&runner_log.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    world.submit(1, 30.0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while world.steps(StepState::Completed) < 1 {
        assert_eq!(
            world.steps(StepState::Failed),
            0,
            "{}",
            explain("the step failed")
        );
        assert!(
            Instant::now() < deadline,
            "{}",
            explain("the step did not complete within 120 s")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let runner_log = kubectl_text(&world, &["logs", "-n", NS, &name, "-c", "runner"]);
    assert!(
        runner_log.contains("nested eth0 MTU 1450"),
        "the nested container's network: {runner_log}"
    );

    // Measured by packets, each hop against the node: the pod's eth0 (from dind), a nested
    // container on dind's default bridge (docker0, bbrunner's --mtu), and on user-defined
    // networks, where the runner puts each step: at Docker's default 1500 and at the pod's MTU
    // (what --default-network-opt gives from Docker 24 on; Debian's 20.10 here lacks it).
    let nested = |network: &[&str]| {
        let mut command = vec!["docker", "run", "--rm"];
        command.extend(network);
        command.extend(["bb:1", "sh", "-c", LARGEST_DF_PAYLOAD]);
        hop(&exec("docker", &command))
    };
    exec("docker", &["docker", "network", "create", "step-default"]);
    exec(
        "docker",
        &[
            "docker",
            "network",
            "create",
            "-o",
            "com.docker.network.driver.mtu=1450",
            "step-1450",
        ],
    );
    let table = [
        (
            "pod eth0",
            hop(&exec("docker", &["sh", "-c", LARGEST_DF_PAYLOAD])),
        ),
        ("dind's docker0 (bbrunner's --mtu)", nested(&[])),
        (
            "step network at Docker's default",
            nested(&["--network", "step-default"]),
        ),
        (
            "step network at the pod's MTU",
            nested(&["--network", "step-1450"]),
        ),
    ];
    eprintln!(
        "hop | interface MTU | largest DF payload that passes | largest that fits the interface"
    );
    for (name, (mtu, passed)) in &table {
        eprintln!("{name} | {mtu} | {passed} | {}", mtu - 28);
    }
    // Where the interface's MTU is the pod's, all it allows passes; at Docker's default, the
    // container believes 1472 bytes fit, and 50 of them never arrive.
    for (name, (mtu, passed)) in &table {
        assert_eq!(*passed, 1422, "{name}: {table:?}");
        let expected_mtu = if name.contains("default") { 1500 } else { 1450 };
        assert_eq!(*mtu, expected_mtu, "{name}: {table:?}");
    }

    // The seed's hang, by a transfer: 8 MiB from a server beyond a 1500-byte link whose
    // "fragmentation needed" is dropped (testbed's far host). On a step network at Docker's
    // default the server's full-size segments never cross the pod's eth0 and the download
    // stalls; at the pod's MTU, TCP's MSS keeps them small enough and it completes.
    let url = format!("http://{}/big", testbed::kubelet_node::FAR_HOST);
    // Debian's wget (by path), one try, giving up after 10 s without a byte.
    let fetch = format!("/bin/wget -T 10 -t 1 -q -O /tmp/big {url}; wc -c < /tmp/big");
    let download = |network: &str| {
        let started = Instant::now();
        let out = world.bed.kubectl(
            &[
                "exec",
                "-n",
                NS,
                &name,
                "-c",
                "docker",
                "--",
                "docker",
                "run",
                "--rm",
                "--network",
                network,
                "bb:1",
                "sh",
                "-c",
                &fetch,
            ],
            "",
        );
        let bytes: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (bytes, started.elapsed().as_secs_f64())
    };
    let (stalled, stalled_s) = download("step-default");
    let (completed, completed_s) = download("step-1450");
    eprintln!(
        "8 MiB download through a path-MTU black hole: step network at Docker's default: {stalled} bytes in {stalled_s:.1} s; at the pod's MTU: {completed} bytes in {completed_s:.1} s"
    );
    assert_eq!(
        completed,
        testbed::kubelet_node::FAR_FILE_BYTES,
        "at the pod's MTU"
    );
    assert!(
        stalled < testbed::kubelet_node::FAR_FILE_BYTES,
        "at Docker's default the download should stall, but {stalled} bytes arrived"
    );
}

/// What a cached pool's step runs: a three-layer build through dind, reporting how many of its
/// layers came from the store and how long it took (from /proc/uptime, in hundredths).
const CACHED_STEP_COMMAND: &str = "set -e
docker image inspect bb:1 >/dev/null 2>&1 || docker import /opt/bbrunner/busybox.tar bb:1 >/dev/null
mkdir -p /tmp/context
printf 'FROM bb:1\\nRUN busybox dd if=/dev/urandom of=/toolchain bs=1M count=8\\nRUN busybox dd if=/dev/urandom of=/dependencies bs=1M count=8\\nRUN busybox dd if=/dev/urandom of=/build bs=1M count=8\\n' > /tmp/context/Dockerfile
read started _ < /proc/uptime
out=$(docker build -t built:1 /tmp/context 2>&1)
read ended _ < /proc/uptime
echo \"cached build: $(echo \"$out\" | grep -cE 'Using cache|CACHED') layers from the store, $started to $ended\"";

/// The warm cache end to end on the real node: an ephemeral cached pool's first runner pod
/// builds cold on its claim (a hostPath volume the control plane's PV controller binds); the
/// runner is replaced after its step, and the next pod, handed the same claim, finds the
/// image and every layer.
#[tokio::test(flavor = "multi_thread")]
async fn a_cached_pools_next_runner_pod_builds_warm_on_the_kubelet_node() {
    let test = "a_cached_pools_next_runner_pod_builds_warm_on_the_kubelet_node";
    let _node = ONE_NODE.lock().await;
    // Declared first, so removed last: after the node and its containers are gone.
    let volume = scratch("node-cache");
    let Some((world, built, log, _operator)) = node_world(test, "op-kubelet-cache").await else {
        return;
    };
    let image = |name: &str| built[name].as_str().unwrap().to_owned();
    // A class with no provisioner and one volume of it, as a local-volume set-up has.
    let volume_dir = volume.path();
    let storage = format!(
        "apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: bbrunner-node}}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: bbrunner-node-cache}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOncePod]
  storageClassName: bbrunner-node
  persistentVolumeReclaimPolicy: Retain
  hostPath: {{path: {}, type: DirectoryOrCreate}}
",
        volume_dir.display()
    );
    let applied = world.bed.kubectl(&["apply", "-f", "-"], &storage);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let mut spec = managed(1, 1);
    spec["ephemeral"] = json!(true);
    spec["runner"] = json!({
        "image": image("runner"),
        "env": [{"name": "BBRUNNER_STEP_COMMAND", "value": CACHED_STEP_COMMAND}],
    });
    spec["dind"] = json!({"image": image("dind"), "mtu": "auto"});
    spec["podTemplate"] =
        json!({"nodeSelector": {"kubernetes.io/hostname": testbed::kubelet_node::NODE_NAME}});
    spec["cache"] = json!({"size": "1Gi", "storageClassName": "bbrunner-node"});
    world.pool("cached", spec).await;

    let explain = |what: &str| explain_node(&world, &log, "cached", what);
    // Each step: wait for an online runner, run one step, read what its build said from the
    // runner container of the pod that ran it.
    let mut reports = Vec::new();
    for step in 1..=2 {
        let deadline = Instant::now() + Duration::from_secs(240);
        let pod = loop {
            let ready = world.pods().await.into_iter().find(|p| {
                // The previous step's pod is drained and replaced: wait for its successor.
                both_ready(p)
                    && p.metadata.deletion_timestamp.is_none()
                    && !reports
                        .iter()
                        .any(|(ran, _): &(String, String)| p.metadata.name.as_ref() == Some(ran))
            });
            if let Some(pod) = ready
                && online(&world.runners()) == 1
            {
                break pod;
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                explain(&format!("step {step}: no runner online within 240 s"))
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let name = pod.metadata.name.clone().unwrap();
        let claims: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
            .collect();
        assert_eq!(claims, ["cached-cache-0"], "step {step}'s pod {name}");
        world.submit(1, 1.0);
        let deadline = Instant::now() + Duration::from_secs(180);
        while world.steps(StepState::Completed) < step {
            assert_eq!(
                world.steps(StepState::Failed),
                0,
                "{}",
                explain("a step failed")
            );
            assert!(
                Instant::now() < deadline,
                "{}",
                explain(&format!("step {step} did not complete within 180 s"))
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let runner_log = kubectl_text(&world, &["logs", "-n", NS, &name, "-c", "runner"]);
        let report = runner_log
            .lines()
            .find(|l| l.contains("cached build:"))
            .unwrap_or_else(|| panic!("step {step}: no build report in {runner_log}"))
            .to_owned();
        reports.push((name, report));
    }
    let (first_pod, cold) = &reports[0];
    let (second_pod, warm) = &reports[1];
    assert_ne!(
        first_pod, second_pod,
        "the ephemeral runner was not replaced"
    );
    assert!(cold.contains("0 layers from the store"), "{cold}");
    assert!(warm.contains("3 layers from the store"), "{warm}");
    let seconds = |report: &str| {
        let times: Vec<f64> = report
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        times[times.len() - 1] - times[times.len() - 2]
    };
    eprintln!(
        "cache on the kubelet node: the first pod's build took {:.2} s cold, the next pod's on the same claim {:.2} s warm",
        seconds(cold),
        seconds(warm)
    );
}
