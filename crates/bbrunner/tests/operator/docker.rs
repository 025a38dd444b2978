//! The real-Docker tier: the dind commands `render` and the operator emit, and bbrunner's
//! docker-service entrypoint, run on Debian's real dockerd inside network namespaces this test
//! creates, each with an `eth0` of MTU 1450 as a pod network would give.
//!
//! Needs root and Debian's `docker.io`, `busybox-static` and `iproute2` (`./scripts/test`
//! installs them). Where they are missing it says so and skips, except under CI=true, where it
//! fails. dockerd never runs in the host's network namespace: its bridge would take a private
//! address range there. Every namespace, mount and process is removed, also on failure.

use std::path::{Path, PathBuf};

use testbed::scratch;

use super::*;

const POD_MTU: u32 = 1450;

/// Whether this machine can run the tier; if not, why.
fn missing_prerequisite() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in [
        "/usr/sbin/dockerd",
        "/usr/bin/docker",
        "/usr/bin/containerd",
        "/bin/busybox",
        "/usr/bin/nsenter",
        "/usr/bin/unshare",
        "/usr/sbin/ip",
        "/usr/bin/docker-registry",
        "/usr/bin/wget",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (apt-get install docker.io busybox-static docker-registry wget)"
            ));
        }
    }
    None
}

/// Skip loudly where the tier cannot run; never under CI.
fn runnable(test: &str) -> bool {
    tier_runs(
        "the real-Docker tier",
        "root and Debian's docker.io",
        test,
        missing_prerequisite(),
    )
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A network namespace whose `eth0` has the pod network's MTU. Dropped: every process in it
/// killed, then the namespace deleted.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("bbr-{tag}-{}", std::process::id());
        ok("ip", &["netns", "add", &name]);
        let netns = Self { name };
        let ip = |args: &[&str]| {
            let mut all = vec!["-n", netns.name.as_str()];
            all.extend(args);
            ok("ip", &all);
        };
        // Both ends inside: nothing of the test appears in the host's namespace.
        ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        ip(&["link", "set", "eth0", "mtu", &POD_MTU.to_string(), "up"]);
        ip(&["link", "set", "peer0", "mtu", &POD_MTU.to_string(), "up"]);
        ip(&["link", "set", "lo", "up"]);
        netns
    }

    fn pids(&self) -> Vec<String> {
        ok("ip", &["netns", "pids", &self.name])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = run("kill", &["-9", &pid]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A dind container's command as a pod would run it: in its own network and mount namespace,
/// with a fresh /sys (so `/sys/class/net/eth0` is the namespace's), the cgroups bound back, and
/// private tmpfs for /var/run and /var/lib/docker (the pod's emptyDirs).
struct Dind {
    /// Dropped after the daemon is stopped: kills what is left and deletes the namespace.
    netns: Netns,
    dir: PathBuf,
    /// `nsenter`, which becomes dockerd: its pid is dockerd's.
    daemon: std::process::Child,
    pid: u32,
    log: PathBuf,
    /// cgroup directories dockerd made, removed afterwards.
    cgroups_before: Vec<PathBuf>,
}

fn docker_cgroups() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("docker"))
        .filter(|p| p.exists())
        .collect()
}

/// Where dind keeps Docker's data, and what else its container gets.
#[derive(Default, Clone, Copy)]
struct DindOptions<'a> {
    /// A host directory bound at /var/lib/docker (a cache volume); `None`: a private tmpfs.
    store: Option<&'a Path>,
    env: &'a [(&'a str, &'a str)],
}

impl Dind {
    fn start(tag: &str, command: &[String]) -> Self {
        Self::start_with(tag, command, DindOptions::default())
    }

    fn start_with(tag: &str, command: &[String], options: DindOptions<'_>) -> Self {
        let dind = Self::spawn(tag, command, options);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dind.docker_raw(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                dind.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        dind
    }

    /// How the start script ended, if it did within `within`.
    fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.daemon.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn spawn(tag: &str, command: &[String], options: DindOptions<'_>) -> Self {
        let netns = Netns::new(tag);
        let dir =
            std::env::temp_dir().join(format!("bbrunner-docker-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("shim")).unwrap();
        std::fs::create_dir_all(dir.join("cgroup")).unwrap();
        // docker:*-dind's entrypoint prepares a nested daemon and runs its arguments; the
        // host's dockerd needs no preparing.
        let shim = dir.join("shim/dockerd-entrypoint.sh");
        std::fs::write(&shim, "#!/bin/sh\nexec \"$@\"\n").unwrap();
        ok("chmod", &["+x", shim.to_str().unwrap()]);
        std::fs::write(
            dir.join("command.json"),
            serde_json::to_string(command).unwrap(),
        )
        .unwrap();
        let inner = format!(
            "set -e
mount --rbind /sys/fs/cgroup {cg}
mount -t sysfs sysfs /sys
mount --rbind {cg} /sys/fs/cgroup
mkdir -p /var/lib/docker
mount -t tmpfs tmpfs /var/run
{store}
export PATH={shim}:$PATH
exec python3 -c 'import json, os; c = json.load(open(\"{dir}/command.json\")); os.execvp(c[0], c)'",
            cg = dir.join("cgroup").display(),
            shim = dir.join("shim").display(),
            dir = dir.display(),
            store = match options.store {
                Some(store) => format!("mount --bind {} /var/lib/docker", store.display()),
                None => "mount -t tmpfs tmpfs /var/lib/docker".to_owned(),
            },
        );
        let log = dir.join("dind.log");
        let cgroups_before = docker_cgroups();
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", netns.name))
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &inner,
            ])
            .envs(options.env.iter().copied())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            netns,
            dir,
            pid: child.id(),
            daemon: child,
            log,
            cgroups_before,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn docker_raw(&self, args: &[&str]) -> std::process::Output {
        let target = self.pid.to_string();
        let mut all = vec!["-t", target.as_str(), "-m", "-n", "/usr/bin/docker"];
        all.extend(args);
        run("nsenter", &all)
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = self.docker_raw(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\ndind log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The MTU of `eth0` in a busybox container on `network`.
    fn container_mtu(&self, network: &str) -> u32 {
        self.docker(&[
            "run",
            "--rm",
            "--network",
            network,
            "bb:1",
            "cat",
            "/sys/class/net/eth0/mtu",
        ])
        .parse()
        .unwrap()
    }

    fn import(&self, tar: &Path, name: &str, changes: &[&str]) {
        let mut args = vec!["import"];
        for change in changes {
            args.extend(["--change", change]);
        }
        let tar = tar.to_str().unwrap();
        args.extend([tar, name]);
        self.docker(&args);
    }
}

impl Drop for Dind {
    fn drop(&mut self) {
        // Containers first, so that nested daemons and their shims go with them.
        let ids = self.docker_raw(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker_raw(&["rm", "-f", id]);
        }
        let _ = run("kill", &["-TERM", &self.pid.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // The namespace's Drop kills what is left; the mount namespace goes with its last
        // process. Then the cgroups dockerd made.
        for made in docker_cgroups()
            .into_iter()
            .filter(|c| !self.cgroups_before.contains(c))
        {
            let _ = Command::new("find")
                .arg(&made)
                .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A busybox image, built from Debian's static busybox: nothing is pulled.
fn busybox_tar(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat", "ls", "sleep", "ip"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    tar_of(&root, &dir.join("busybox.tar"))
}

/// A tar of a root directory, for `docker import`.
fn tar_of(root: &Path, tar: &Path) -> PathBuf {
    ok(
        "tar",
        &[
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    tar.to_path_buf()
}

/// bbrunner's docker-service entrypoint on Debian's Docker binaries and busybox: the image of
/// `deploy/docker-service/Containerfile` as far as this machine can build it (that one starts
/// from docker:*-dind, which cannot be pulled here).
fn docker_service_tar(dir: &Path) -> PathBuf {
    let root = dir.join("service-root");
    for sub in [
        "bin",
        "usr/local/bin",
        "tmp",
        "var/run",
        "var/lib/docker",
        "etc",
        "proc",
        "sys",
        "dev",
    ] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let binaries = [
        "/usr/sbin/dockerd",
        "/usr/bin/containerd",
        "/usr/bin/containerd-shim-runc-v2",
        "/usr/sbin/runc",
        "/usr/bin/docker",
        "/usr/sbin/docker-proxy",
    ];
    for binary in binaries {
        let name = Path::new(binary).file_name().unwrap();
        std::fs::copy(binary, root.join("bin").join(name)).unwrap();
    }
    let ldd = ok("ldd", &binaries);
    let libraries: std::collections::BTreeSet<&str> = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/') && w.contains(".so"))
        .collect();
    for library in libraries {
        let target = root.join(library.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(library, &target).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat", "ls", "sleep", "mount", "grep", "sed", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    let entrypoint = workspace_file("deploy/docker-service/entrypoint.sh");
    std::fs::copy(
        entrypoint,
        root.join("usr/local/bin/bbrunner-docker-service"),
    )
    .unwrap();
    tar_of(&root, &dir.join("service.tar"))
}

/// The dind container's command and arguments in rendered YAML.
fn rendered_dind_command(args: &[&str]) -> Vec<String> {
    let mut all = vec!["render", "--docker-command", "-"];
    all.extend(args);
    let command = std::fs::read_to_string(workspace_file("examples/docker-command.txt")).unwrap();
    let mut render = Command::new(env!("CARGO_BIN_EXE_bbrunner"));
    render.args(&all);
    let out = testbed::cluster::run_with_stdin(render, &command, "bbrunner was not built");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    dind_command(&deployment["spec"]["template"]["spec"])
}

fn dind_command(pod_spec: &Value) -> Vec<String> {
    let dind = &pod_spec["initContainers"][0];
    dind["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(dind["args"].as_array().into_iter().flatten())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Whether privileged containers can start here: Docker grants every capability the kernel
/// knows, and some sandboxes withhold one (CAP_SYS_RESOURCE) from the bounding set.
fn full_capabilities() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(40);
    bounding.count_ones() == last + 1
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dind_commands_we_emit_give_containers_the_pod_mtu_on_a_real_dockerd() {
    if !runnable("the_dind_commands_we_emit_give_containers_the_pod_mtu_on_a_real_dockerd") {
        return;
    }
    // The operator's pod builder: the dind of a pool's runner pod, as fake-kube stores it.
    let world = World::start("docker-operator").await;
    let _op = world.operator(&[]);
    world.pool("builds", managed(1, 1)).await;
    let pod = {
        let mut found = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while found.is_none() {
            assert!(Instant::now() < deadline, "no runner pod");
            found = world.pods().await.into_iter().next();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        serde_json::to_value(found.unwrap().spec.unwrap()).unwrap()
    };
    let operator_auto = dind_command(&pod);

    // The seed's pin and a fixed MTU; the default auto; the operator's auto.
    let cases: Vec<(&str, Vec<String>, u32)> = vec![
        (
            "render-fixed",
            rendered_dind_command(&["--dind-image", "docker:20.10.7-dind", "--mtu", "1300"]),
            1300,
        ),
        (
            "render-auto",
            rendered_dind_command(&["--mtu", "auto"]),
            POD_MTU,
        ),
        ("operator-auto", operator_auto, POD_MTU),
    ];
    let dir = world.dir.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let busybox = busybox_tar(&dir);
    for (tag, command, mtu) in cases {
        let dind = Dind::start(tag, &command);
        dind.import(&busybox, "bb:1", &[]);
        assert_eq!(dind.container_mtu("bridge"), mtu, "{tag}: default network");
        // The network the runner puts each step on. Docker 20.10 (all Debian 12 ships)
        // cannot give it the MTU; the daemon must say so at start rather than refuse to run.
        dind.docker(&["network", "create", "step"]);
        let version = dind.docker(&["version", "--format", "{{.Server.Version}}"]);
        let log = dind.log_text();
        if version.starts_with("20.") || version.starts_with("23.") {
            assert_eq!(dind.container_mtu("step"), 1500, "{tag}: step network");
            assert!(
                log.contains("WARNING: this dockerd has no --default-network-opt"),
                "{tag}: no warning in the log:\n{log}"
            );
        } else {
            assert_eq!(dind.container_mtu("step"), mtu, "{tag}: step network");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_service_entrypoint_keeps_nested_containers_within_the_pod_mtu() {
    if !runnable("the_docker_service_entrypoint_keeps_nested_containers_within_the_pod_mtu") {
        return;
    }
    let scratch = scratch("l3-images");
    let dir = scratch.path();
    let busybox = busybox_tar(dir);
    let service = docker_service_tar(dir);
    let level2 = Dind::start("service", &rendered_dind_command(&["--mtu", "auto"]));
    level2.import(&busybox, "bb:1", &[]);
    level2.import(
        &service,
        "docker-service:1",
        &[
            "ENV PATH=/usr/local/bin:/bin",
            "VOLUME /var/lib/docker",
            "ENTRYPOINT [\"/usr/local/bin/bbrunner-docker-service\"]",
        ],
    );
    // The step's network with the pod's MTU, as a Docker 24+ dind gives it.
    level2.docker(&[
        "network",
        "create",
        "-o",
        &format!("com.docker.network.driver.mtu={POD_MTU}"),
        "step",
    ]);
    let images = dir.display().to_string();
    // As the runner starts the docker service: privileged, on the step's network. Where the
    // sandbox withholds a capability, every other one, unconfined, with the cgroups writable.
    let privileges: Vec<String> = if full_capabilities() {
        vec!["--privileged".into()]
    } else {
        eprintln!(
            "note: CAP_SYS_RESOURCE is withheld here; the docker service runs with every other capability instead of --privileged"
        );
        [
            "--cap-add=ALL",
            "--cap-drop=SYS_RESOURCE",
            "--security-opt=seccomp=unconfined",
            "--security-opt=apparmor=unconfined",
            "--security-opt=systempaths=unconfined",
            "--device-cgroup-rule=a *:* rwm",
            "--volume=/sys/fs/cgroup:/sys/fs/cgroup",
        ]
        .map(String::from)
        .to_vec()
    };
    for (name, opts, expected) in [
        // No --mtu: the service's own eth0, the step network's.
        ("auto", "--iptables=false", POD_MTU),
        // What `lint --fix` writes.
        ("fixed", "--mtu=1300 --iptables=false", 1300),
    ] {
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.into()];
        args.extend(privileges.iter().cloned());
        args.extend(
            [
                "--network",
                "step",
                "-v",
                &format!("{images}:/images:ro"),
                "-e",
                &format!("DOCKER_OPTS={opts}"),
                "docker-service:1",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        level2.docker(&args);
        let nested = |command: &[&str]| {
            let mut all = vec!["exec", name, "docker"];
            all.extend(command);
            level2.docker_raw(&all)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !nested(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the docker service did not start: {}",
                level2.docker(&["logs", name])
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let imported = nested(&["import", "/images/busybox.tar", "bb:1"]);
        assert!(imported.status.success(), "{imported:?}");
        let mtu = nested(&["run", "--rm", "bb:1", "cat", "/sys/class/net/eth0/mtu"]);
        let mtu: u32 = String::from_utf8_lossy(&mtu.stdout).trim().parse().unwrap();
        assert_eq!(
            mtu, expected,
            "{name}: a container of the step's docker service"
        );
        assert!(
            mtu <= POD_MTU,
            "{name}: {mtu} is larger than the pod's {POD_MTU}"
        );
        let logs = level2.docker_raw(&["logs", name]);
        assert!(
            String::from_utf8_lossy(&logs.stderr).contains(&format!("--mtu={expected}")),
            "{name}: {logs:?}"
        );
        level2.docker(&["rm", "-f", name]);
    }
}

/// The start script's other branch, on a dockerd that takes `--default-network-opt` (Docker
/// 24+; only 20.10 can be installed here): a stand-in dockerd that answers `--help` as Docker 24
/// does and records how it was started. No root needed.
#[test]
fn the_dind_start_script_passes_the_network_option_to_a_dockerd_that_takes_it() {
    let scratch = scratch("dind-script");
    let dir = scratch.path();
    let record = dir.join("started-with");
    let stub = |name: &str, body: String| {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        ok("chmod", &["+x", path.to_str().unwrap()]);
    };
    stub(
        "dockerd",
        format!(
            "#!/bin/sh\nif [ \"$1\" = --help ]; then echo '      --default-network-opt mapmap   Default network options'; exit 0; fi\necho \"$@\" > {}\n",
            record.display()
        ),
    );
    stub("dockerd-entrypoint.sh", "#!/bin/sh\nexec \"$@\"\n".into());
    let command = rendered_dind_command(&["--mtu", "1400"]);
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new(&command[0])
        .args(&command[1..])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let started = std::fs::read_to_string(&record).unwrap();
    assert!(
        started.contains("--mtu=1400")
            && started.contains("--default-network-opt=bridge=com.docker.network.driver.mtu=1400"),
        "{started}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("WARNING"));
    // And the docker service's entrypoint, likewise.
    let entrypoint = workspace_file("deploy/docker-service/entrypoint.sh");
    let out = Command::new("sh")
        .arg(&entrypoint)
        .env("PATH", &path)
        .env("DOCKER_OPTS", "--mtu=1300 --debug")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let started = std::fs::read_to_string(&record).unwrap();
    assert!(
        started.contains("--mtu=1300")
            && started.contains("--default-network-opt=bridge=com.docker.network.driver.mtu=1300")
            && started.contains("--debug")
            && started.contains("--host=tcp://127.0.0.1:2375"),
        "{started}"
    );
}

/// The test's directory, with the host directory standing in for a runner slot's cache
/// volume: removed however the test ends (dind's mounts in it die with their mount
/// namespaces first).
struct CacheStore(PathBuf);

impl CacheStore {
    fn new(test: &str) -> Self {
        let root = std::env::temp_dir().join(format!("bbrunner-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("store")).unwrap();
        Self(root)
    }

    fn store(&self) -> PathBuf {
        self.0.join("store")
    }
}

impl Drop for CacheStore {
    fn drop(&mut self) {
        // A test may have mounted a small filesystem there.
        let _ = run("umount", &[self.store().to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Debian's registry serving `storage` on 127.0.0.1:5000 inside `dind`'s network namespace, as
/// a registry a pod reaches: what one daemon pushed, the next one pulls. Killed when dropped
/// (and with the namespace).
struct Registry {
    process: std::process::Child,
}

impl Registry {
    fn start(dind: &Dind, storage: &Path) -> Self {
        let config = storage.with_extension("yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:5000\n",
                storage.display()
            ),
        )
        .unwrap();
        let net = format!("--net=/var/run/netns/{}", dind.netns.name);
        let process = Command::new("nsenter")
            .args([&net, "/usr/bin/docker-registry", "serve"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self { process };
        let deadline = Instant::now() + Duration::from_secs(30);
        let up = || {
            run(
                "nsenter",
                &[
                    &net,
                    "/usr/bin/wget",
                    "-q",
                    "-O",
                    "/dev/null",
                    "http://127.0.0.1:5000/v2/",
                ],
            )
            .status
            .success()
        };
        while !up() {
            assert!(Instant::now() < deadline, "the registry did not answer");
            std::thread::sleep(Duration::from_millis(200));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A build context whose Dockerfile adds three layers of 8 MiB of random bytes, one file
/// each, on `bb:1`, as a multi-stage toolchain image would have.
fn three_layer_context(dir: &Path, files: [&str; 3]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let layers: String = files
        .iter()
        .map(|f| format!("RUN busybox dd if=/dev/urandom of=/{f} bs=1M count=8\n"))
        .collect();
    std::fs::write(dir.join("Dockerfile"), format!("FROM bb:1\n{layers}")).unwrap();
    dir.to_path_buf()
}

/// The warm cache on a real dockerd: one store, daemons one after the other (runner pods on
/// one claim). The second daemon finds the first one's images and build layers, so its pull
/// and its build are warm; a daemon started while another has the store open refuses,
/// whatever the operator decided. Prints the cold and warm times (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread")]
async fn a_cache_volume_keeps_images_and_layers_across_daemons_and_admits_one_at_a_time() {
    if !runnable("a_cache_volume_keeps_images_and_layers_across_daemons_and_admits_one_at_a_time") {
        return;
    }
    let cleanup = CacheStore::new("cache");
    let (root, store) = (cleanup.0.clone(), cleanup.store());
    let context = three_layer_context(
        &root.join("context"),
        ["toolchain", "dependencies", "build"],
    );
    let busybox = busybox_tar(&root);
    let command = rendered_dind_command(&["--mtu", "auto"]);
    let cached = DindOptions {
        store: Some(&store),
        env: &[("BBRUNNER_CACHE", "1")],
    };
    let build = |dind: &Dind| {
        let started = Instant::now();
        let out = dind.docker(&["build", "-t", "built:1", context.to_str().unwrap()]);
        (started.elapsed(), out)
    };
    // A step's build image, three layers of 8 MiB, published by a daemon of its own (a
    // store the cache never sees).
    let registry_storage = root.join("registry");
    let published = "127.0.0.1:5000/toolchain:1";
    {
        let tool_context =
            three_layer_context(&root.join("tool-context"), ["compiler", "sdk", "tools"]);
        let publisher = Dind::start("cache-publish", &command);
        let _registry = Registry::start(&publisher, &registry_storage);
        publisher.import(&busybox, "bb:1", &[]);
        publisher.docker(&["build", "-t", published, tool_context.to_str().unwrap()]);
        publisher.docker(&["push", published]);
    }
    let pull = |dind: &Dind| {
        let _registry = Registry::start(dind, &registry_storage);
        let started = Instant::now();
        let out = dind.docker(&["pull", published]);
        (started.elapsed(), out)
    };

    let first = Dind::start_with("cache-1", &command, cached);
    assert!(
        first
            .log_text()
            .contains("cache volume locked for this daemon"),
        "{}",
        first.log_text()
    );
    first.import(&busybox, "bb:1", &[]);
    let (cold_pull, cold_pull_output) = pull(&first);
    assert!(
        cold_pull_output.contains("Downloaded newer image"),
        "{cold_pull_output}"
    );
    let (cold, cold_output) = build(&first);
    assert!(!cold_output.contains("Using cache"), "{cold_output}");

    let mut second = Dind::spawn("cache-2", &command, cached);
    let refused = second.exit_within(Duration::from_secs(30));
    assert_eq!(
        refused.and_then(|s| s.code()),
        Some(75),
        "a second daemon on an open store:\n{}",
        second.log_text()
    );
    assert!(
        second
            .log_text()
            .contains("another Docker daemon has this cache volume open"),
        "{}",
        second.log_text()
    );
    drop(second);
    drop(first);

    // The next pod on the claim: the lock of the stopped daemon went with it.
    let third = Dind::start_with("cache-3", &command, cached);
    assert!(
        third
            .docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .contains("built:1"),
        "the image built by the previous daemon is gone"
    );
    let (warm_pull, warm_pull_output) = pull(&third);
    assert!(
        warm_pull_output.contains("Image is up to date"),
        "{warm_pull_output}"
    );
    let (warm, warm_output) = build(&third);
    assert_eq!(
        warm_output.matches("Using cache").count(),
        3,
        "every layer from the store:\n{warm_output}"
    );
    eprintln!(
        "cache: pulling a three-layer 24 MiB image took {:.2} s cold and {:.2} s warm ({:.0}x); \
         a three-layer build took {:.2} s cold and {:.2} s warm ({:.0}x) on the next daemon",
        cold_pull.as_secs_f64(),
        warm_pull.as_secs_f64(),
        cold_pull.as_secs_f64() / warm_pull.as_secs_f64(),
        cold.as_secs_f64(),
        warm.as_secs_f64(),
        cold.as_secs_f64() / warm.as_secs_f64()
    );
}

/// A cache volume nearly full when its daemon starts is emptied first: a cold start costs
/// minutes, a full disk costs the step.
#[tokio::test(flavor = "multi_thread")]
async fn a_nearly_full_cache_volume_is_emptied_before_its_daemon_opens_it() {
    if !runnable("a_nearly_full_cache_volume_is_emptied_before_its_daemon_opens_it") {
        return;
    }
    let cleanup = CacheStore::new("cache-full");
    let store = cleanup.store();
    ok(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64m",
            "tmpfs",
            store.to_str().unwrap(),
        ],
    );
    let leftover = store.join("leftover-layers");
    ok(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", leftover.display()),
            "bs=1M",
            "count=60",
        ],
    );
    let command = rendered_dind_command(&["--mtu", "auto"]);
    let dind = Dind::start_with(
        "cache-full",
        &command,
        DindOptions {
            store: Some(&store),
            env: &[("BBRUNNER_CACHE", "1")],
        },
    );
    let log = dind.log_text();
    assert!(log.contains("% full: emptied"), "{log}");
    assert!(!leftover.exists(), "the leftover is still there");
    assert!(store.join(".bbrunner-lock").exists());
    dind.docker(&["info"]);
}
