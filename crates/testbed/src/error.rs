//! The test bed's one error type, shared by the control plane and the kubelet node.

use std::path::PathBuf;
use std::time::Duration;

use crate::pki::PkiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{0} is not built in {1}: run ./scripts/kube-build (it needs Go 1.26 and the Go module proxy)"
    )]
    NotBuilt(&'static str, PathBuf),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{process} exited before it was ready; the end of its log ({log}):\n{tail}")]
    Exited {
        process: &'static str,
        log: PathBuf,
        tail: String,
    },
    #[error("{0} was not ready within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the admin kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("the API server: {0}")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Agent(#[from] node_agent::Error),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
