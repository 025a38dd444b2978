//! The operator image, built by `./scripts/image` and run with podman (runc, host network)
//! against fake-kube and fake-bitbucket on loopback: the release artifact itself, not the
//! test build of the binary.
//!
//! Needs root, Debian's podman, buildah and runc (`./scripts/test` installs them and builds
//! the image first, passing it in `BBRUNNER_IMAGE`). Where they are missing it says so and
//! skips, except under CI=true, where it fails. The container is removed, also on failure.

use std::path::Path;

use super::*;

/// Whether this machine can run podman; if not, why.
fn missing_prerequisite() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    ["/usr/bin/podman", "/usr/bin/buildah", "/usr/sbin/runc"]
        .into_iter()
        .find(|tool| !Path::new(tool).exists())
        .map(|tool| format!("{tool} is missing (apt-get install podman buildah runc)"))
}

fn runnable(test: &str) -> bool {
    tier_runs(
        "the image tier",
        "root and podman",
        test,
        missing_prerequisite(),
    )
}

/// The image `./scripts/test` built, or one built now.
fn image() -> String {
    if let Ok(image) = std::env::var("BBRUNNER_IMAGE") {
        return image;
    }
    let out = Command::new(workspace_file("scripts/image"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "./scripts/image failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().to_owned()
}

/// podman as the machines here need it: runc, cgroupfs, and no default ulimits (raising
/// them is not permitted in this sandbox), through a containers.conf of the test's own.
fn podman(conf: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(args)
        .output()
        .unwrap()
}

fn podman_ok(conf: &Path, args: &[&str]) -> String {
    let out = podman(conf, args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A running container, removed on drop.
struct Container<'a> {
    name: String,
    conf: &'a Path,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = podman(self.conf, &["rm", "--force", "--time", "2", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_image_runs_a_pool_as_non_root_on_a_read_only_root() {
    if !runnable("the_operator_image_runs_a_pool_as_non_root_on_a_read_only_root") {
        return;
    }
    let image = image();
    let world = World::start("image").await;
    let conf = world.dir.join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();

    // What the image is: its user and labels, as built.
    let config = podman_ok(
        &conf,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{index .Config.Labels \"org.opencontainers.image.version\"}} {{index .Config.Labels \"org.opencontainers.image.revision\"}}",
            &image,
        ],
    );
    let fields: Vec<&str> = config.split(' ').collect();
    assert_eq!(fields[0], "65532:65532", "{config}");
    assert_eq!(fields[1], env!("CARGO_PKG_VERSION"), "{config}");
    assert!(fields[2].len() >= 40, "no source revision label: {config}");

    let metrics = free_local_addr();
    let name = format!("bbrunner-image-test-{}", std::process::id());
    let container = Container {
        name: name.clone(),
        conf: &conf,
    };
    let kubeconfig = format!("{}:/etc/bbrunner/kubeconfig:ro", world.kubeconfig.display());
    podman_ok(
        &conf,
        &[
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            "host",
            "--read-only",
            "--volume",
            &kubeconfig,
            "--env",
            "KUBECONFIG=/etc/bbrunner/kubeconfig",
            &image,
            "operator",
            "--bitbucket-url",
            world.bitbucket.url(),
            "--bitbucket-auth-url",
            world.bitbucket.url(),
            "--metrics-addr",
            &metrics,
        ],
    );
    world.pool("builds", managed(2, 3)).await;
    let ready = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if world
                .has_condition("builds", "Ready", "True", "RunnersOnline", "")
                .await
                && online(&world.runners()) == 2
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
    .await;
    if !ready {
        let logs = podman(&conf, &["logs", &name]);
        panic!(
            "the pool did not become Ready with 2 runners online; status: {}\nruntime: {:?}\ncontainer log:\n{}",
            world.status("builds").await,
            world.runners(),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    let readyz = reqwest::get(format!("http://{metrics}/readyz"))
        .await
        .unwrap();
    assert_eq!(readyz.status().as_u16(), 200);

    // The running process, as the kernel sees it: its user and its root mount.
    let pid = podman_ok(&conf, &["inspect", "--format", "{{.State.Pid}}", &name]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(uids, ["65532"; 4], "{status}");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    let options = root.split_whitespace().nth(5).unwrap();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "the root filesystem is writable: {root}"
    );
    drop(container);
}
