//! A loopback TCP proxy a test can cut and restore: what "this process can no longer reach
//! that server" looks like without touching the server (other clients keep it).
//!
//! Cut: every open connection is closed at once (both sides see the connection end) and
//! new connections are accepted and closed straight away, so clients notice immediately
//! and keep failing to reconnect. Restore: new connections reach the upstream again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Shared {
    upstream: String,
    cut: AtomicBool,
    /// Cancelled on a cut: ends every connection opened before it.
    connections: Mutex<CancellationToken>,
    /// Connections currently forwarded.
    open: AtomicUsize,
}

/// The proxy; stops (closing everything) when dropped.
pub struct TcpProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Listens on a free 127.0.0.1 port and forwards every connection to `upstream`
    /// (`host:port`). Needs a tokio runtime.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            cut: AtomicBool::new(false),
            connections: Mutex::new(CancellationToken::new()),
            open: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, shared.clone(), stop.clone()));
        Ok(Self {
            address,
            shared,
            stop,
        })
    }

    /// `127.0.0.1:<port>`: give this to the client instead of the upstream's address.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Closes every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let mut current = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        current.cancel();
        *current = CancellationToken::new();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Connections forwarded right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        if shared.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let closed = shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tokio::spawn(forward(client, shared.clone(), closed));
    }
}

async fn forward(mut client: TcpStream, shared: Arc<Shared>, closed: CancellationToken) {
    let Ok(mut upstream) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    // A cut between the accept and here: this connection belongs to the cut too.
    if closed.is_cancelled() || shared.cut.load(Ordering::SeqCst) {
        return;
    }
    shared.open.fetch_add(1, Ordering::SeqCst);
    tokio::select! {
        _ = closed.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
    }
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that echoes what it reads.
    async fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    async fn echo(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut buf = vec![0u8; text.len()];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn forwards_then_cuts_open_connections_and_refuses_new_ones_until_restored() {
        let proxy = TcpProxy::start(&echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(echo(&mut open, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.open_connections(), 1);

        proxy.cut();
        // The open connection ends: a read sees end-of-stream (or a reset).
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), open.read(&mut buf))
            .await
            .expect("the cut connection did not end");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // A new one is accepted and closed at once.
        let mut refused = TcpStream::connect(proxy.address()).await.unwrap();
        assert!(echo(&mut refused, b"x").await.is_err());

        proxy.restore();
        let mut again = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(echo(&mut again, b"back").await.unwrap(), b"back");
    }
}
