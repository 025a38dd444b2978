//! HTTPS for the test servers: a CA made on the spot, a serving certificate it signs, and an
//! axum listener that speaks TLS. The agent's kubelet API serves with it, and so does fake-kube
//! when it checks bearer tokens (kubectl sends a token only over TLS).

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A serving identity: the CA clients should trust (PEM) and the acceptor that presents a
/// certificate it signed.
#[derive(Clone)]
pub struct Tls {
    pub ca_pem: String,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// A new CA and a serving certificate for `names` (DNS names or IP addresses).
    pub fn new(names: &[&str]) -> Result<Self, String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "bbrunner test server CA");
        let ca_key = KeyPair::generate().map_err(|e| err(&e))?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| err(&e))?;
        let issuer = Issuer::new(ca_params, ca_key);
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).map_err(|e| err(&e))?;
        let key = KeyPair::generate().map_err(|e| err(&e))?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| err(&e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&e))?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .map_err(|e| err(&e))?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Accepts TLS connections for `axum::serve`; a client that does not finish its handshake in
/// time is dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, tls: &Tls) -> Self {
        Self {
            tcp,
            acceptor: tls.acceptor.clone(),
        }
    }
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
            // Handshakes run one at a time here: a bound keeps a stalled client from blocking
            // the others for long.
            let handshake =
                tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(stream));
            if let Ok(Ok(tls)) = handshake.await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
