//! The message bus between collectors and exporters: NATS in production, an in-process
//! bus for the single-process demo and tests. Both carry the same headers (target,
//! subscription, fencing token) so exporters can reject data from a stale owner; what the
//! two sides agree on (subjects, headers, target status) is the [`contract`].

pub mod contract;
mod envelope;
pub mod jetstream;
mod memory;
mod nats;
mod subject;

pub use contract::{
    MessageHeaders, HEADER_FENCING_TOKEN, HEADER_SUBSCRIPTION, HEADER_TARGET, HEADER_TRACEPARENT,
};
pub use envelope::Envelope;
pub use memory::MemoryBus;
pub use nats::{decode_headers, NatsBus, NatsOptions, NatsTls};
pub use subject::{subject_matches, validate_subject};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// One message on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusMessage {
    pub subject: String,
    pub headers: MessageHeaders,
    pub payload: Bytes,
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        subject: String,
        reason: &'static str,
    },
    #[error("cannot connect to NATS at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("publish to {subject:?} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("subscribe to {subject:?} failed: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("JetStream stream {stream:?}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("invalid NATS option {option}: {reason}")]
    Options {
        option: &'static str,
        reason: String,
    },
}

/// A publish/subscribe transport.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Publishes one message. Returns once the message is handed to the transport.
    async fn publish(&self, message: BusMessage) -> Result<(), BusError>;

    /// Flushes what was published so far (NATS: waits for the server's PONG).
    async fn flush(&self) -> Result<(), BusError>;

    /// Whether publishes reach the transport's server right now (NATS: the connection is
    /// up; false while the client reconnects). An in-process bus is always connected.
    /// Outputs report it as their health; see the collector's health-driven failover.
    fn is_connected(&self) -> bool {
        true
    }

    /// Subscribes to `subject` (NATS wildcards `*` and `>` allowed). Subscribers that
    /// share a `queue` name split the stream; without one every subscriber gets every message.
    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<BusSubscription, BusError>;
}

/// The publishing half of a transport: what an output needs. Core NATS and the in-process
/// bus hand a message over; JetStream ([`jetstream::JetStreamPublisher`]) also waits for
/// the server's ack within a bounded window.
#[async_trait]
pub trait Publish: Send + Sync {
    /// Publishes one message (an unacknowledged JetStream publish is retried, not returned).
    async fn send(&self, message: BusMessage) -> Result<(), BusError>;

    /// Publishes `payload` under `envelope`'s subject and headers: what [`Self::send`] of
    /// [`Envelope::message`] does, without writing the subject and headers out again where
    /// the transport keeps an encoded form (core NATS).
    async fn send_in(&self, envelope: &Envelope, payload: Bytes) -> Result<(), BusError> {
        self.send(envelope.message(payload)).await
    }

    /// Waits until what was sent is flushed (NATS) or acknowledged (JetStream).
    async fn settle(&self) -> Result<(), BusError>;

    /// Whether what is sent reaches the server right now (the output's health; see
    /// [`Bus::is_connected`]). JetStream: connected and nothing waiting for a retry.
    fn delivers(&self) -> bool;
}

#[async_trait]
impl Publish for std::sync::Arc<dyn Bus> {
    async fn send(&self, message: BusMessage) -> Result<(), BusError> {
        self.as_ref().publish(message).await
    }

    async fn settle(&self) -> Result<(), BusError> {
        self.as_ref().flush().await
    }

    fn delivers(&self) -> bool {
        self.as_ref().is_connected()
    }
}

/// A core bus publishes as its [`Bus`] does: send is publish, settle is flush. `send`
/// calls the bus's own `publish_message` (and `send_in` its `publish_in`), not the boxed
/// `Bus::publish` (`async_trait` boxes `send`'s future already: one allocation per message
/// less on the collector's hot path).
macro_rules! publish_through_bus {
    ($($bus:ty),+) => {$(
        #[async_trait]
        impl Publish for $bus {
            async fn send(&self, message: BusMessage) -> Result<(), BusError> {
                self.publish_message(message).await
            }

            async fn send_in(&self, envelope: &Envelope, payload: Bytes) -> Result<(), BusError> {
                self.publish_in(envelope, payload).await
            }

            async fn settle(&self) -> Result<(), BusError> {
                Bus::flush(self).await
            }

            fn delivers(&self) -> bool {
                Bus::is_connected(self)
            }
        }
    )+};
}

publish_through_bus!(NatsBus, MemoryBus);

/// A stream of messages from one subscription.
pub struct BusSubscription {
    inner: Pin<Box<dyn Stream<Item = BusMessage> + Send>>,
}

impl BusSubscription {
    pub(crate) fn new(stream: impl Stream<Item = BusMessage> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(stream),
        }
    }
}

impl Stream for BusSubscription {
    type Item = BusMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BusMessage>> {
        self.inner.as_mut().poll_next(cx)
    }
}
