//! The part of the kubelet's HTTPS API that `kubectl logs` reaches through a real API server:
//! `/containerLogs/{namespace}/{pod}/{container}`. The API server does not check the kubelet's
//! certificate unless told to, so the agent serves a self-signed one.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{Error, Shared};

/// Accepts TLS connections; a client that does not finish its handshake in time is dropped.
struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handshake = tokio::time::timeout(Duration::from_secs(5), self.tls.accept(stream));
            if let Ok(Ok(tls)) = handshake.await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn acceptor(address: &str) -> Result<TlsAcceptor, Error> {
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| tls(&e))?;
    let params = rcgen::CertificateParams::new(vec![address.to_owned(), "localhost".to_owned()])
        .map_err(|e| tls(&e))?;
    let cert = params.self_signed(&key).map_err(|e| tls(&e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .map_err(|e| tls(&e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

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
    let listener = TlsListener {
        tcp,
        tls: acceptor(address)?,
    };
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
