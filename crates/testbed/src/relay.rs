//! The host's side of the relays between the host and a kubelet node's network namespace
//! (the namespace's side is socat, started inside it). Unix sockets are files, not network
//! addresses, so they cross the namespace boundary while every TCP listener stays on loopback
//! or inside the namespace: the node's kubelet reaches the API server, its pods reach
//! fake-bitbucket, and the API server reaches the kubelet (logs, exec), without any server
//! listening on a host address.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// Splice two streams until either side closes.
async fn splice<A, B>(mut a: A, mut b: B)
where
    A: tokio::io::AsyncRead + AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Every connection to the Unix socket `path` is relayed to TCP `target`.
pub fn unix_to_tcp(path: &Path, target: String) -> std::io::Result<JoinHandle<()>> {
    let listener = bind_unix(path)?;
    Ok(tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(outbound) = TcpStream::connect(&target).await {
                    splice(inbound, outbound).await;
                }
            });
        }
    }))
}

/// The API server's egress proxy (HTTP CONNECT on a Unix socket, as its
/// EgressSelectorConfiguration names it): a target on `node_ip` goes to the Unix socket
/// `kubelet`, which reaches the kubelet's port inside the node's namespace; any other target
/// (the node agent's kubelets on loopback) is dialled directly.
pub fn connect_proxy(
    path: &Path,
    node_ip: String,
    kubelet: PathBuf,
) -> std::io::Result<JoinHandle<()>> {
    let listener = bind_unix(path)?;
    Ok(tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let (node_ip, kubelet) = (node_ip.clone(), kubelet.clone());
            tokio::spawn(async move {
                let _ = proxy_one(inbound, &node_ip, &kubelet).await;
            });
        }
    }))
}

async fn proxy_one(inbound: UnixStream, node_ip: &str, kubelet: &Path) -> std::io::Result<()> {
    let mut inbound = BufReader::new(inbound);
    let mut request = String::new();
    inbound.read_line(&mut request).await?;
    // The rest of the request's head, up to its blank line; the client sends nothing more
    // before the answer.
    loop {
        let mut line = String::new();
        if inbound.read_line(&mut line).await? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let target = match request.split_whitespace().collect::<Vec<_>>()[..] {
        ["CONNECT", target, _] => target.to_owned(),
        _ => {
            inbound
                .get_mut()
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    if host == node_ip {
        let outbound = UnixStream::connect(kubelet).await?;
        inbound.get_mut().write_all(established).await?;
        splice(inbound, outbound).await;
    } else {
        let outbound = TcpStream::connect(&target).await?;
        inbound.get_mut().write_all(established).await?;
        splice(inbound, outbound).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_connect_request_reaches_the_node_through_its_socket_and_others_directly() {
        let dir = std::env::temp_dir().join(format!("relay-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let echo = |tag: &'static [u8]| async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.unwrap();
                    s.write_all(tag).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                }
            });
            port
        };
        let (kubelet_port, other_port) = (echo(b"node:").await, echo(b"host:").await);
        // The node's kubelet socket, as socat serves it inside the namespace.
        let _kubelet = unix_to_tcp(
            &dir.join("kubelet.sock"),
            format!("127.0.0.1:{kubelet_port}"),
        )
        .unwrap();
        let _proxy = connect_proxy(
            &dir.join("egress.sock"),
            "10.88.0.1".into(),
            dir.join("kubelet.sock"),
        )
        .unwrap();
        for (target, expected) in [
            ("10.88.0.1:10250".to_owned(), b"node:hello"),
            (format!("127.0.0.1:{other_port}"), b"host:hello"),
        ] {
            let mut client = UnixStream::connect(dir.join("egress.sock")).await.unwrap();
            client
                .write_all(
                    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
            let mut answer = vec![0u8; 39];
            client.read_exact(&mut answer).await.unwrap();
            assert_eq!(answer, b"HTTP/1.1 200 Connection established\r\n\r\n");
            client.write_all(b"hello").await.unwrap();
            let mut echoed = [0u8; 10];
            client.read_exact(&mut echoed).await.unwrap();
            assert_eq!(&echoed, expected, "{target}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
