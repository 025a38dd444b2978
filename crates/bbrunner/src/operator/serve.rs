//! The operator's HTTP servers (metrics and health, webhooks) with the limits a port open to
//! a cluster needs: a cap on connections, a deadline for a request's headers, and a lifetime
//! for a connection, so that held or slow connections cannot exhaust memory or descriptors
//! (which would fail `/readyz` and get a healthy operator restarted).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How much a server takes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; one past it closes the oldest, so that a probe or a
    /// scrape always gets in however many connections others hold.
    pub connections: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A connection is closed (after its request in flight) this long after it opened, idle
    /// or not.
    pub lifetime: Duration,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        connections: 256,
        header_timeout: Duration::from_secs(10),
        lifetime: Duration::from_secs(60),
    };
}

/// How long a request in flight may take to finish once its connection is closing.
const DRAIN: Duration = Duration::from_secs(5);

/// The peer of a connection, for handlers that limit by source.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The connections open, oldest first, each with what closes it.
#[derive(Default)]
struct Open {
    next: u64,
    closers: BTreeMap<u64, CancellationToken>,
}

/// Serve `router` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, typically: back off rather than spin.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // At the cap, the oldest goes: a held or slow connection cannot keep a newer one (the
        // kubelet's probe) out for longer than it takes to arrive.
        let (id, closer) = {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            while open.closers.len() >= limits.connections.max(1) {
                if let Some((_, oldest)) = open.closers.pop_first() {
                    oldest.cancel();
                }
            }
            let id = open.next;
            open.next += 1;
            let closer = stop.child_token();
            open.closers.insert(id, closer.clone());
            (id, closer)
        };
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(Peer(peer))));
        let open = open.clone();
        let stopping = stop.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Its time is up: the request in flight may finish.
                _ = tokio::time::sleep(limits.lifetime) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
                // Made room for a newer one: closed at once, since a connection still sending
                // its headers would hold on until their deadline. When the server stops, the
                // request in flight may finish.
                _ = closer.cancelled() => {
                    if stopping.is_cancelled() {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(DRAIN, connection).await;
                    }
                }
            }
            open.lock()
                .unwrap_or_else(|e| e.into_inner())
                .closers
                .remove(&id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SMALL: Limits = Limits {
        connections: 8,
        header_timeout: Duration::from_millis(300),
        lifetime: Duration::from_millis(800),
    };

    async fn server() -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(serve(listener, router, SMALL, stop.clone()));
        (addr, stop)
    }

    async fn get_root(addr: SocketAddr) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        (!answer.is_empty()).then_some(answer)
    }

    /// Whether the server closes `stream` within `within`.
    async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(within, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    #[tokio::test]
    async fn slow_headers_and_idle_keep_alives_are_closed() {
        let (addr, stop) = server().await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
        // A kept-alive connection is served, then closed at the end of its lifetime.
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(closed_within(&mut kept, Duration::from_secs(5)).await);
        stop.cancel();
    }

    #[tokio::test]
    async fn past_the_cap_the_oldest_connection_makes_room_for_a_new_one() {
        let (addr, stop) = server().await;
        // Connections sending their headers slowly, three times the cap.
        let mut held = Vec::new();
        for _ in 0..3 * SMALL.connections {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            held.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A probe still gets in, at once.
        let answer = get_root(addr).await.expect("a new connection is served");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The older ones were closed to make room; at most the cap's worth stay open.
        let mut closed = 0;
        for stream in &mut held {
            if closed_within(stream, Duration::from_millis(20)).await {
                closed += 1;
            }
        }
        assert!(closed >= held.len() - SMALL.connections, "{closed} closed");
        stop.cancel();
    }
}
