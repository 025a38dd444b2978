//! The worlds bbrunner's tests run in: fake-bitbucket beside a cluster, either fake-kube or a
//! real control plane built from upstream's Go modules (`./scripts/kube-build`), with the node
//! agent running its pods. `kube-up` starts the real one by hand.

pub mod cluster;
pub mod control_plane;
mod error;
pub mod kubelet_node;
pub mod pki;
pub mod relay;
mod testbed;
mod workspace;

pub use cluster::{Backend, Cluster};
pub use tempfile::TempDir;
pub use testbed::Testbed;

/// A scratch folder for a test (`bbrunner-NAME-…` in the temporary directory), removed when
/// dropped, also when the test fails.
pub fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bbrunner-{name}-"))
        .tempdir()
        .expect("a scratch folder in the temporary directory")
}
