//! Leases: grant, revoke, time-to-live, and the keep-alive stream.

use crate::client::{with_token, Client, DeniedMeans, Op};
use crate::error::{Error, ErrorKind, Result};
use crate::kv::revision;
use crate::proto::etcdserverpb::{self as pb, lease_client::LeaseClient};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Keep-alive requests queued before the stream pushes back.
const KEEP_ALIVE_QUEUE: usize = 16;

/// The answer to [`Client::lease_grant`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    pub id: i64,
    /// The granted time to live in seconds (etcd raises small TTLs to its minimum).
    pub ttl: i64,
    pub revision: i64,
}

/// The answer to [`Client::lease_time_to_live`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimeToLiveResponse {
    pub id: i64,
    /// Seconds left; -1 when the lease does not exist (any more).
    pub ttl: i64,
    /// The TTL the lease was granted with.
    pub granted_ttl: i64,
    /// The keys attached to the lease, when asked for.
    pub keys: Vec<Vec<u8>>,
    pub revision: i64,
}

/// One keep-alive answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseKeepAliveResponse {
    pub id: i64,
    /// The renewed time to live in seconds, counted from when etcd answered; 0 or less
    /// when the lease no longer exists.
    pub ttl: i64,
    pub revision: i64,
}

impl From<pb::LeaseKeepAliveResponse> for LeaseKeepAliveResponse {
    fn from(answer: pb::LeaseKeepAliveResponse) -> Self {
        LeaseKeepAliveResponse {
            id: answer.id,
            ttl: answer.ttl,
            revision: revision(answer.header),
        }
    }
}

/// Sends keep-alives on a stream opened by [`Client::lease_keep_alive`]; the answers arrive
/// on the paired [`LeaseKeepAliveStream`]. Cloning shares the stream.
#[derive(Clone, Debug)]
pub struct LeaseKeeper {
    id: i64,
    sender: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    endpoint: Arc<str>,
}

impl LeaseKeeper {
    /// The lease this keeper renews.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Asks etcd to renew the lease once; the answer (with the new TTL) comes on the stream.
    pub async fn keep_alive(&self) -> Result<()> {
        self.sender
            .send(pb::LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| {
                Error::local(
                    ErrorKind::Unavailable,
                    "lease keep-alive",
                    &self.endpoint,
                    "the keep-alive stream is closed",
                    None,
                )
            })
    }
}

/// Keep-alive answers, in the order of the requests.
pub struct LeaseKeepAliveStream {
    inner: tonic::Streaming<pb::LeaseKeepAliveResponse>,
    endpoint: Arc<str>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for LeaseKeepAliveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeepAliveStream")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl LeaseKeepAliveStream {
    /// The next answer; `None` when etcd closed the stream.
    pub async fn message(&mut self) -> Result<Option<LeaseKeepAliveResponse>> {
        match self.inner.message().await {
            Ok(answer) => Ok(answer.map(LeaseKeepAliveResponse::from)),
            Err(status) => Err(self.error(status)),
        }
    }

    fn error(&self, status: tonic::Status) -> Error {
        Error::from_status("lease keep-alive", &self.endpoint, status, self.timeout)
    }
}

impl Stream for LeaseKeepAliveStream {
    type Item = Result<LeaseKeepAliveResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(answer))) => Poll::Ready(Some(Ok(answer.into()))),
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(self.error(status)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A request stream fed by an mpsc receiver.
pub(crate) fn receiver_stream<T: Send + 'static>(
    receiver: mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

impl Client {
    /// Grants a lease of `ttl` seconds. `id` 0 lets etcd choose the id.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse> {
        let request = pb::LeaseGrantRequest { ttl, id };
        let answer = self
            .unary(Op::new("lease grant"), request, |service, request| async move {
                LeaseClient::new(service).lease_grant(request).await
            })
            .await?;
        Ok(LeaseGrantResponse {
            id: answer.id,
            ttl: answer.ttl,
            revision: revision(answer.header),
        })
    }

    /// Revokes a lease, deleting its keys. Fails with `LeaseNotFound` when it is already gone.
    /// Returns the revision of the deletion.
    pub async fn lease_revoke(&self, id: i64) -> Result<i64> {
        let request = pb::LeaseRevokeRequest { id };
        self.unary(
            Op::new("lease revoke"),
            request,
            |service, request| async move { LeaseClient::new(service).lease_revoke(request).await },
        )
        .await
        .map(|answer| revision(answer.header))
    }

    /// The remaining time to live of a lease (-1 when it does not exist), and its keys
    /// when `keys` is set.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        let request = pb::LeaseTimeToLiveRequest { id, keys };
        let answer = self
            .unary(
                Op::new("lease time-to-live"),
                request,
                |service, request| async move {
                    LeaseClient::new(service).lease_time_to_live(request).await
                },
            )
            .await?;
        Ok(LeaseTimeToLiveResponse {
            id: answer.id,
            ttl: answer.ttl,
            granted_ttl: answer.granted_ttl,
            keys: answer.keys,
            revision: revision(answer.header),
        })
    }

    /// Opens a keep-alive stream for lease `id`. Opening renews the lease once and waits for
    /// etcd's answer (within the call timeout), so a lease that no longer exists fails here
    /// with `LeaseNotFound`. Then each [`LeaseKeeper::keep_alive`] renews it again.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<(LeaseKeeper, LeaseKeepAliveStream)> {
        let timeout = self.timeout();
        let (keeper, stream) = self
            .call(
                Op::new("lease keep-alive"),
                DeniedMeans::Denied,
                |endpoint, token| async move {
                    let (sender, receiver) = mpsc::channel(KEEP_ALIVE_QUEUE);
                    // Queued before opening: etcd answers the stream's headers with the first
                    // answer, which the timeout layer waits for.
                    let _ = sender.try_send(pb::LeaseKeepAliveRequest { id });
                    let request = with_token(receiver_stream(receiver), token);
                    let open = async {
                        let mut answers = LeaseClient::new(endpoint.service)
                            .lease_keep_alive(request)
                            .await?
                            .into_inner();
                        let first = answers.message().await?;
                        Ok::<_, tonic::Status>((answers, first))
                    };
                    let (answers, first) = tokio::time::timeout(timeout, open)
                        .await
                        .map_err(|elapsed| tonic::Status::from_error(Box::new(elapsed)))??;
                    match first {
                        Some(answer) if answer.ttl > 0 => {}
                        Some(_) => {
                            return Err(tonic::Status::not_found(
                                "etcdserver: requested lease not found",
                            ))
                        }
                        None => {
                            return Err(tonic::Status::unavailable(
                                "etcd closed the keep-alive stream",
                            ))
                        }
                    }
                    let keeper = LeaseKeeper {
                        id,
                        sender,
                        endpoint: endpoint.uri.clone(),
                    };
                    let stream = LeaseKeepAliveStream {
                        inner: answers,
                        endpoint: endpoint.uri,
                        timeout,
                    };
                    Ok((keeper, stream))
                },
            )
            .await?;
        Ok((keeper, stream))
    }
}
