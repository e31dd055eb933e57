//! Watches: one bidirectional stream carrying any number of watches.

use crate::client::{with_token, Client, DeniedMeans, Op};
use crate::error::{Error, ErrorKind, Result};
use crate::kv::{revision, KeyValue, RangeEnd};
use crate::lease::receiver_stream;
use crate::proto::etcdserverpb::{
    self as pb, watch_client::WatchClient, watch_request::RequestUnion,
};
use crate::proto::mvccpb;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Create / cancel requests queued before the stream pushes back.
const WATCH_QUEUE: usize = 16;

/// Options of [`Client::watch`] and [`WatchStream::watch`].
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    range_end: RangeEnd,
    start_revision: i64,
    prev_kv: bool,
    progress_notify: bool,
    watch_id: i64,
}

impl WatchOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Watch every key starting with the given key.
    pub fn with_prefix(mut self) -> Self {
        self.range_end = RangeEnd::Prefix;
        self
    }

    /// Watch every key from the given key on.
    pub fn with_from_key(mut self) -> Self {
        self.range_end = RangeEnd::FromKey;
        self
    }

    /// Watch the keys in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = RangeEnd::End(end.into());
        self
    }

    /// Replay history from this revision on (inclusive). When it was compacted, etcd cancels
    /// the watch with [`WatchResponse::compact_revision`] set.
    pub fn with_start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }

    /// Report each key-value as it was before the change ([`Event::prev_kv`]).
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Ask etcd for periodic empty answers carrying the current revision while idle.
    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }

    /// Choose the watch id instead of letting etcd pick one (must be unique on the stream).
    pub fn with_watch_id(mut self, id: i64) -> Self {
        self.watch_id = id;
        self
    }

    fn request(&self, key: Vec<u8>) -> pb::WatchRequest {
        let (key, range_end) = self.range_end.resolve(key);
        pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key,
                range_end,
                start_revision: self.start_revision,
                progress_notify: self.progress_notify,
                prev_kv: self.prev_kv,
                watch_id: self.watch_id,
                ..Default::default()
            })),
        }
    }
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub event_type: EventType,
    /// After a put: the new key-value. After a delete: the key, with `mod_revision` set to the
    /// revision of the deletion.
    pub kv: KeyValue,
    /// The key-value before the change, when the watch asked for it and the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl From<mvccpb::Event> for Event {
    fn from(event: mvccpb::Event) -> Self {
        let event_type = match mvccpb::event::EventType::try_from(event.r#type) {
            Ok(mvccpb::event::EventType::Delete) => EventType::Delete,
            _ => EventType::Put,
        };
        Event {
            event_type,
            kv: event.kv.map(KeyValue::from).unwrap_or_default(),
            prev_kv: event.prev_kv.map(KeyValue::from),
        }
    }
}

/// One answer on a watch stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    /// The watch this answer belongs to.
    pub watch_id: i64,
    /// The store revision when etcd sent the answer.
    pub revision: i64,
    /// The answer to a create request.
    pub created: bool,
    /// The watch has ended: cancelled on request, denied, or its history was compacted.
    pub canceled: bool,
    /// Why etcd cancelled the watch, when it says.
    pub cancel_reason: String,
    /// When not 0, the watch asked for compacted history; this is the oldest revision left.
    /// The watch is cancelled; re-read the keys and watch again from their revision + 1.
    pub compact_revision: i64,
    /// The changes, in revision order.
    pub events: Vec<Event>,
}

impl From<pb::WatchResponse> for WatchResponse {
    fn from(answer: pb::WatchResponse) -> Self {
        WatchResponse {
            watch_id: answer.watch_id,
            revision: revision(answer.header),
            created: answer.created,
            canceled: answer.canceled,
            cancel_reason: answer.cancel_reason,
            compact_revision: answer.compact_revision,
            events: answer.events.into_iter().map(Event::from).collect(),
        }
    }
}

impl WatchResponse {
    /// An answer without events that only reports the current revision.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty() && !self.created && !self.canceled && self.compact_revision == 0
    }
}

/// Sends create, cancel and progress requests on a watch stream; cloneable, so a task can
/// add watches while another reads the [`WatchStream`].
#[derive(Clone, Debug)]
pub struct Watcher {
    sender: mpsc::Sender<pb::WatchRequest>,
    endpoint: Arc<str>,
}

impl Watcher {
    async fn send(&self, what: &'static str, request: pb::WatchRequest) -> Result<()> {
        self.sender.send(request).await.map_err(|_| {
            Error::local(
                ErrorKind::Unavailable,
                what,
                &self.endpoint,
                "the watch stream is closed",
                None,
            )
        })
    }

    /// Adds a watch to the stream; etcd confirms it with a `created` answer carrying its id.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<WatchOptions>,
    ) -> Result<()> {
        let request = options.unwrap_or_default().request(key.into());
        self.send("watch", request).await
    }

    /// Ends a watch; etcd confirms with a `canceled` answer.
    pub async fn cancel(&self, watch_id: i64) -> Result<()> {
        let request = pb::WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
                watch_id,
            })),
        };
        self.send("watch cancel", request).await
    }

    /// Asks etcd for an answer carrying the current revision (see
    /// [`WatchResponse::is_progress_notify`]).
    pub async fn request_progress(&self) -> Result<()> {
        let request = pb::WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
        };
        self.send("watch progress", request).await
    }
}

/// A watch stream opened by [`Client::watch`]: answers for every watch on it, and a
/// [`Watcher`] to add or cancel watches. Dropping it ends every watch on the stream.
pub struct WatchStream {
    watcher: Watcher,
    inner: tonic::Streaming<pb::WatchResponse>,
    watch_id: i64,
    created_revision: i64,
    timeout: Duration,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("endpoint", &self.watcher.endpoint)
            .field("watch_id", &self.watch_id)
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    /// The id of the watch the stream was opened with.
    pub fn watch_id(&self) -> i64 {
        self.watch_id
    }

    /// The store revision when etcd created the first watch: with no start revision, events
    /// after it are reported.
    pub fn created_revision(&self) -> i64 {
        self.created_revision
    }

    /// A handle to add or cancel watches from elsewhere.
    pub fn watcher(&self) -> Watcher {
        self.watcher.clone()
    }

    /// Adds a watch to this stream (see [`Watcher::watch`]).
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<WatchOptions>,
    ) -> Result<()> {
        self.watcher.watch(key, options).await
    }

    /// Ends a watch on this stream (see [`Watcher::cancel`]).
    pub async fn cancel(&self, watch_id: i64) -> Result<()> {
        self.watcher.cancel(watch_id).await
    }

    /// Asks for a progress answer (see [`Watcher::request_progress`]).
    pub async fn request_progress(&self) -> Result<()> {
        self.watcher.request_progress().await
    }

    /// The next answer; `None` when etcd closed the stream. Waits as long as it takes: a
    /// dead connection surfaces through the HTTP/2 keep-alive as an `Unavailable` error.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>> {
        match self.inner.message().await {
            Ok(answer) => Ok(answer.map(WatchResponse::from)),
            Err(status) => Err(self.error(status)),
        }
    }

    fn error(&self, status: tonic::Status) -> Error {
        Error::from_status("watch", &self.watcher.endpoint, status, self.timeout)
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(answer))) => Poll::Ready(Some(Ok(answer.into()))),
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(self.error(status)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The status etcd put into a watch's cancel reason, e.g. `rpc error: code =
/// Unauthenticated desc = etcdserver: invalid auth token` (grpc-go's text form).
fn cancel_status(reason: &str) -> tonic::Status {
    use tonic::Code;
    let parsed = reason
        .strip_prefix("rpc error: code = ")
        .and_then(|rest| rest.split_once(" desc = "));
    let Some((name, message)) = parsed else {
        return if reason.contains("permission denied") {
            tonic::Status::permission_denied(reason)
        } else {
            tonic::Status::failed_precondition(format!("watch cancelled: {reason}"))
        };
    };
    let code = match name {
        "Canceled" => Code::Cancelled,
        "InvalidArgument" => Code::InvalidArgument,
        "DeadlineExceeded" => Code::DeadlineExceeded,
        "NotFound" => Code::NotFound,
        "AlreadyExists" => Code::AlreadyExists,
        "PermissionDenied" => Code::PermissionDenied,
        "ResourceExhausted" => Code::ResourceExhausted,
        "FailedPrecondition" => Code::FailedPrecondition,
        "Aborted" => Code::Aborted,
        "OutOfRange" => Code::OutOfRange,
        "Unimplemented" => Code::Unimplemented,
        "Internal" => Code::Internal,
        "Unavailable" => Code::Unavailable,
        "DataLoss" => Code::DataLoss,
        "Unauthenticated" => Code::Unauthenticated,
        _ => Code::Unknown,
    };
    tonic::Status::new(code, message)
}

impl Client {
    /// Opens a watch stream with a first watch on `key` and waits (within the call timeout)
    /// until etcd confirms it. A denied watch fails here with `PermissionDenied`; history
    /// that is already compacted is reported on the stream (see
    /// [`WatchResponse::compact_revision`]). The confirmation itself is not on the stream.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<WatchOptions>,
    ) -> Result<WatchStream> {
        let create = options.unwrap_or_default().request(key.into());
        let key = match &create.request_union {
            Some(RequestUnion::CreateRequest(c)) => c.key.clone(),
            _ => Vec::new(),
        };
        let timeout = self.timeout();
        // Older etcd 3.4 releases deny a watch made with an expired token ("permission
        // denied") instead of rejecting the token.
        self.call(
            Op::key("watch", &key),
            DeniedMeans::MaybeStaleToken,
            |endpoint, token| {
                let create = create.clone();
                async move {
                    let (sender, receiver) = mpsc::channel(WATCH_QUEUE);
                    // Queued before opening: etcd sends the stream's headers with its first answer.
                    let _ = sender.try_send(create);
                    let request = with_token(receiver_stream(receiver), token);
                    let open = async {
                        let mut answers = WatchClient::new(endpoint.service)
                            .watch(request)
                            .await?
                            .into_inner();
                        let first = answers.message().await?;
                        Ok::<_, tonic::Status>((answers, first))
                    };
                    let (answers, first) = tokio::time::timeout(timeout, open)
                        .await
                        .map_err(|elapsed| tonic::Status::from_error(Box::new(elapsed)))??;
                    let first = match first {
                        Some(first) if first.canceled => {
                            return Err(cancel_status(&first.cancel_reason));
                        }
                        Some(first) => first,
                        None => {
                            return Err(tonic::Status::unavailable("etcd closed the watch stream"))
                        }
                    };
                    Ok(WatchStream {
                        watcher: Watcher {
                            sender,
                            endpoint: endpoint.uri,
                        },
                        inner: answers,
                        watch_id: first.watch_id,
                        created_revision: revision(first.header),
                        timeout,
                    })
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::cancel_status;
    use tonic::Code;

    #[test]
    fn cancel_reasons_become_statuses() {
        let status = cancel_status(
            "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
        );
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "etcdserver: invalid auth token");
        let status = cancel_status(
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
        );
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            cancel_status("etcdserver: permission denied").code(),
            Code::PermissionDenied
        );
        assert_eq!(
            cancel_status("something else").code(),
            Code::FailedPrecondition
        );
    }
}
