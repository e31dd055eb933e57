//! The sockets of one target run's gNMI connections: counted, so that stopping (or
//! replacing) the run can wait until they are really closed before the target's lock is
//! given back (or the new run dials), and killable, so that closing one does not depend on
//! the peer.
//!
//! Why: ending a connection is asynchronous — hyper's connection task closes HTTP/2
//! gracefully (GOAWAY, a PING round trip to the peer) and drops the socket when it is done.
//! A member that released the lock in that moment let the new owner subscribe while the
//! device still saw the old stream — two subscribers on one device, which the cluster
//! promises never to cause. So a closed client kills its socket (the next read or write
//! fails, and the task driving it ends at once), and the stop waits for the count to fall.
//! It costs an atomic waker registration per read and a few milliseconds per stop.

use futures::task::AtomicWaker;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// How many sockets of one target are open.
#[derive(Debug, Default)]
pub struct OpenSockets {
    open: AtomicUsize,
    closed: Notify,
}

impl OpenSockets {
    /// Counts `io` until it is dropped; the returned switch kills it when dropped.
    pub fn track<T>(self: &Arc<Self>, io: T) -> (Counted<T>, KillOnDrop) {
        self.open.fetch_add(1, Ordering::AcqRel);
        let kill = Arc::new(Kill::default());
        let counted = Counted {
            inner: io,
            kill: kill.clone(),
            _count: Count(self.clone()),
        };
        (counted, KillOnDrop(kill))
    }

    /// Sockets open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until every socket is closed, at most `limit`; returns whether they are.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let all_closed = async {
            loop {
                let notified = self.closed.notified();
                if self.open() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, all_closed).await.is_ok()
    }
}

/// Ends a counted socket from outside: its reads and writes fail from then on, and the task
/// reading it is woken to find out.
#[derive(Debug, Default)]
struct Kill {
    killed: AtomicBool,
    reader: AtomicWaker,
}

impl Kill {
    fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    fn error() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the target's connection was closed by the collector",
        )
    }
}

/// Kills its socket when dropped: held by a target's client, whose last clone going away
/// means the connection is over.
#[derive(Debug)]
pub struct KillOnDrop(Arc<Kill>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.killed.store(true, Ordering::Release);
        self.0.reader.wake();
    }
}

/// A socket counted by [`OpenSockets`] while it lives.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    kill: Arc<Kill>,
    /// Declared after `inner`, so it is dropped after it: the count falls only once the
    /// socket itself is closed (a `Drop` on `Counted` would run before its fields drop, and
    /// a waiter on another thread could dial while the old socket is still open).
    _count: Count,
}

/// One counted socket; uncounts it when dropped.
#[derive(Debug)]
struct Count(Arc<OpenSockets>);

impl Drop for Count {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify_waiters();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.kill.reader.register(cx.waker());
        if self.kill.killed() {
            return Poll::Ready(Err(Kill::error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.killed() {
            return Poll::Ready(Err(Kill::error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.killed() {
            return Poll::Ready(Err(Kill::error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.kill.killed() {
            return Poll::Ready(Err(Kill::error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_sockets_until_dropped() {
        let sockets = Arc::new(OpenSockets::default());
        let (a, _b) = tokio::io::duplex(64);
        let (tracked, _kill) = sockets.track(a);
        assert_eq!(sockets.open(), 1);
        assert!(!sockets.wait_closed(Duration::from_millis(20)).await);
        let waiter = {
            let sockets = sockets.clone();
            tokio::spawn(async move { sockets.wait_closed(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        drop(tracked);
        assert!(waiter.await.unwrap());
        assert_eq!(sockets.open(), 0);
    }

    #[tokio::test]
    async fn a_killed_socket_fails_its_pending_read_and_its_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sockets = Arc::new(OpenSockets::default());
        let (a, _peer) = tokio::io::duplex(64);
        let (mut tracked, kill) = sockets.track(a);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let read = tracked.read(&mut buf).await;
            (read.map_err(|e| e.kind()), tracked)
        });
        tokio::task::yield_now().await;
        drop(kill);
        let (read, mut tracked) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the killed socket's pending read was woken")
            .unwrap();
        assert_eq!(read, Err(io::ErrorKind::ConnectionAborted));
        let write = tracked.write_all(b"x").await.map_err(|e| e.kind());
        assert_eq!(write, Err(io::ErrorKind::ConnectionAborted));
        drop(tracked);
        assert!(sockets.wait_closed(Duration::from_secs(1)).await);
    }
}
