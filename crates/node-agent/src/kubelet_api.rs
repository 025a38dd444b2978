//! The part of the kubelet's HTTPS API that `kubectl logs` reaches through a real API server:
//! `/containerLogs/{namespace}/{pod}/{container}`. The API server does not check the kubelet's
//! certificate unless told to, so the agent serves one from a CA of its own.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::tls::{Tls, TlsListener};
use crate::{Error, Shared};

async fn container_logs(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
) -> Result<String, StatusCode> {
    shared
        .log(&namespace, &pod, &container)
        .ok_or(StatusCode::NOT_FOUND)
}

/// Serve the kubelet API on `address` (port 0 picks one); returns the port and the server's
/// task.
pub(crate) async fn serve(
    address: &str,
    shared: Arc<Shared>,
) -> Result<(u16, tokio::task::JoinHandle<()>), Error> {
    let tcp = TcpListener::bind((address, 0))
        .await
        .map_err(|e| Error::Tls(format!("cannot listen on {address}: {e}")))?;
    let port = tcp
        .local_addr()
        .map_err(|e| Error::Tls(e.to_string()))?
        .port();
    let tls = Tls::new(&[address, "localhost"]).map_err(Error::Tls)?;
    let listener = TlsListener::new(tcp, &tls);
    let router = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(shared);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((port, task))
}
