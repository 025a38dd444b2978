//! A cluster for a test, whichever its backend: fake-kube in process, a real control plane of
//! the test's own, or one real control plane shared by the tests of a process. Each gives an
//! admin client, an admin kubeconfig, kubectl, and ServiceAccount kubeconfigs; its folder goes
//! when it is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use fake_kube::{ClusterConfig, FakeKube};
use kube::Client;

use crate::control_plane::{self, ControlPlane, Options, client_from};

/// Which API server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fake,
    Real,
}

enum Server {
    Fake(FakeKube),
    Real(Box<ControlPlane>),
    /// The process's shared control plane: it lives on its own thread until the process ends.
    Shared,
}

pub struct Cluster {
    server: Server,
    client: Client,
    kubeconfig: PathBuf,
    /// Removed when the cluster is dropped, after its processes have stopped.
    dir: crate::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Server::Real(plane) = &mut self.server {
            plane.stop();
        }
    }
}

pub use crate::workspace::workspace;

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The real control plane's binaries, or `None` after saying loudly why the test skips. Under
/// CI=true a missing binary fails the test instead: that tier never skips there.
pub fn real_binaries(test: &str) -> Option<PathBuf> {
    match control_plane::binaries(&workspace()) {
        Ok(dir) => Some(dir),
        Err(e) if under_ci() => panic!("{test}: {e} (under CI=true this tier never skips)"),
        Err(e) => {
            eprintln!("SKIPPED {test}: the real control plane tier needs its binaries: {e}");
            None
        }
    }
}

/// kubectl: the one `./scripts/kube-build` makes, of the real control plane's version, or else
/// the machine's.
pub fn kubectl_binary() -> PathBuf {
    control_plane::binaries(&workspace())
        .map(|dir| dir.join("kubectl"))
        .unwrap_or_else(|_| PathBuf::from("kubectl"))
}

/// The shared control plane's files and address, started once per process.
struct Shared {
    kubeconfig: PathBuf,
    server: String,
    ca: PathBuf,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

fn shared(bin_dir: PathBuf) -> &'static Result<Shared, String> {
    SHARED.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bbrunner-shared-{}", std::process::id()));
        remove_stale_shared_dirs();
        let _ = std::fs::create_dir_all(&dir);
        let (sender, receiver) = std::sync::mpsc::channel();
        let plane_dir = dir.clone();
        // Its own thread and runtime: the control plane's processes die with this thread (their
        // parent-death signal), which lives until the process exits, and its node agent's tasks
        // outlive every test's runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let mut options = Options::new(&plane_dir, &bin_dir);
                // So that a test can make a watch's resourceVersion expire: ConfigMaps are
                // watched straight from etcd, which is compacted every few seconds.
                options.apiserver_args = vec![
                    "--watch-cache-sizes=configmaps#0".into(),
                    "--etcd-compaction-interval=5s".into(),
                ];
                match ControlPlane::start(options).await {
                    Ok(plane) => {
                        let _ = sender.send(Ok((
                            plane.kubeconfig().to_owned(),
                            plane.server().to_owned(),
                            plane.ca().to_owned(),
                        )));
                        // Held until the process ends.
                        std::future::pending::<()>().await;
                        drop(plane);
                    }
                    Err(e) => {
                        let _ = sender.send(Err(e.to_string()));
                    }
                }
            });
        });
        let (kubeconfig, server, ca) = receiver
            .recv()
            .map_err(|_| "the shared control plane's thread ended".to_owned())??;
        Ok(Shared {
            kubeconfig,
            server,
            ca,
        })
    })
}

/// Shared control planes' folders of processes that are gone (they cannot remove their own).
fn remove_stale_shared_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("bbrunner-shared-"))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Cluster {
    /// fake-kube, in process.
    pub async fn fake(name: &str, config: ClusterConfig) -> Self {
        let kube = FakeKube::start("127.0.0.1:0".parse().expect("an address"), config)
            .await
            .expect("fake-kube starts");
        let dir = crate::scratch(name);
        let kubeconfig = kube
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("a kubeconfig");
        let client = client_from(&kubeconfig).await.expect("a client");
        Self {
            server: Server::Fake(kube),
            client,
            kubeconfig,
            dir,
        }
    }

    /// A real control plane of this test's own, or `None` where its binaries are missing
    /// (see [`real_binaries`]).
    pub async fn real(name: &str, configure: impl FnOnce(&mut Options)) -> Option<Self> {
        let bin_dir = real_binaries(name)?;
        let dir = crate::scratch(name);
        let mut options = Options::new(&dir.path().join("cluster"), &bin_dir);
        configure(&mut options);
        let plane = ControlPlane::start(options)
            .await
            .unwrap_or_else(|e| panic!("{name}: the control plane did not start: {e}"));
        Some(Self {
            client: plane.client(),
            kubeconfig: plane.kubeconfig().to_owned(),
            server: Server::Real(Box::new(plane)),
            dir,
        })
    }

    /// The process's shared real control plane (started by the first test that asks), or
    /// `None` where its binaries are missing. Tests sharing it keep to namespaces of their own.
    /// Its API server keeps no watch cache for ConfigMaps and compacts etcd every 5 s, so that a
    /// test can make a watch's resourceVersion expire.
    pub async fn shared_real(name: &str) -> Option<Self> {
        let bin_dir = real_binaries(name)?;
        let shared = match shared(bin_dir) {
            Ok(shared) => shared,
            Err(e) => panic!("{name}: the shared control plane did not start: {e}"),
        };
        let client = client_from(&shared.kubeconfig).await.expect("a client");
        Some(Self {
            server: Server::Shared,
            client,
            kubeconfig: shared.kubeconfig.clone(),
            dir: crate::scratch(name),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.server {
            Server::Fake(_) => Backend::Fake,
            Server::Real(_) | Server::Shared => Backend::Real,
        }
    }

    /// A client with the admin's identity.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The test's own folder (gone with the cluster).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// fake-kube, when that is the backend (its faults and controls).
    pub fn fake_kube(&self) -> Option<&FakeKube> {
        match &self.server {
            Server::Fake(kube) => Some(kube),
            _ => None,
        }
    }

    /// The control plane, when the test has one of its own.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        match &self.server {
            Server::Real(plane) => Some(plane),
            _ => None,
        }
    }

    /// `kubectl ARGS` against the cluster as admin, with `stdin`.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> Output {
        kubectl_with(&self.kubeconfig, args, stdin)
    }

    /// A kubeconfig acting as ServiceAccount `namespace/name`: a TokenRequest token on a real
    /// server, a token fake-kube issues (checked when it enforces RBAC) on the fake.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        match &self.server {
            Server::Fake(kube) => {
                let token = kube.cluster().issue_token(namespace, name);
                let path = self
                    .dir
                    .path()
                    .join(format!("sa-{namespace}-{name}.kubeconfig"));
                std::fs::write(&path, kube.kubeconfig_with_token(&token)).expect("a kubeconfig");
                path
            }
            Server::Real(plane) => plane
                .service_account_kubeconfig(namespace, name, 3600)
                .await
                .expect("a TokenRequest token"),
            Server::Shared => {
                let shared = SHARED.get().and_then(|s| s.as_ref().ok()).expect("started");
                let token = control_plane::request_token(&self.client, namespace, name, 3600)
                    .await
                    .expect("a TokenRequest token");
                let path = self
                    .dir
                    .path()
                    .join(format!("sa-{namespace}-{name}.kubeconfig"));
                let text = control_plane::token_kubeconfig(&shared.server, &shared.ca, &token);
                std::fs::write(&path, text).expect("a kubeconfig");
                path
            }
        }
    }

    /// Runner agents running in the cluster's pods: `(namespace, pod) → runner UUID`.
    pub fn runner_agents(&self) -> BTreeMap<(String, String), String> {
        match &self.server {
            Server::Fake(kube) => kube.cluster().agents().into_iter().collect(),
            Server::Real(plane) => plane.agent().runner_agents(),
            Server::Shared => BTreeMap::new(),
        }
    }
}

/// `kubectl ARGS` with `kubeconfig`, with a discovery cache of its own beside the kubeconfig:
/// kubectl keys its default cache by host and port only, and a cluster on a port an earlier one
/// used would be described by the earlier one's resources.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(kubectl_binary());
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", kubeconfig.with_extension("kubectl-cache"));
    run_with_stdin(
        command,
        stdin,
        "kubectl cannot start; ./scripts/kube-build builds it (./scripts/test runs it)",
    )
}

/// Run `command` with `stdin` as standard input and capture its output. `missing` says what
/// to do when the program cannot be started: a missing tool is a failure, not a skip.
pub fn run_with_stdin(mut command: Command, stdin: &str, missing: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{missing} ({e})"));
    // A program may refuse its input without reading it; its exit status then says why.
    match child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.expect("write stdin"),
    }
    child
        .wait_with_output()
        .expect("wait for the child process")
}
