//! The sockets of one target run's gNMI connections, counted, so that stopping (or
//! replacing) the run can wait until they are really closed before the target's lock is
//! given back (or the new run dials).
//!
//! Why: ending a connection is asynchronous — the task driving it drops the socket a moment
//! later. A member that released the lock in that moment let the new owner subscribe while
//! the device still saw the old stream — two subscribers on one device, which the cluster
//! promises never to cause. Waiting for the socket costs a few milliseconds per stop and
//! nothing on the data path.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Counts `io` until it is dropped.
    pub fn track<T>(self: &Arc<Self>, io: T) -> Counted<T> {
        self.open.fetch_add(1, Ordering::AcqRel);
        Counted {
            inner: io,
            _count: Count(self.clone()),
        }
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

/// A socket counted by [`OpenSockets`] while it lives.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
        let tracked = sockets.track(a);
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
}
