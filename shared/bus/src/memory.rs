//! An in-process bus with NATS subject and queue-group semantics, for the single-process
//! demo and tests. Each subscriber has a bounded queue; a full queue drops and counts.

use super::{
    subject_matches, validate_subject, Bus, BusError, BusMessage, BusSubscription, Envelope,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Capacity of each subscriber's queue.
const SUBSCRIBER_QUEUE: usize = 65_536;

struct Subscriber {
    pattern: String,
    queue: Option<String>,
    sender: mpsc::Sender<BusMessage>,
}

#[derive(Default)]
struct Inner {
    subscribers: Mutex<Vec<Subscriber>>,
    round_robin: AtomicUsize,
    dropped: AtomicU64,
}

/// In-process bus; clones share the same subscribers.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl MemoryBus {
    pub fn new() -> Self {
        metrics::describe_counter!(
            "gnomon_bus_dropped_total",
            "Messages the in-process bus dropped because a subscriber's queue was full."
        );
        Self::default()
    }

    /// Messages dropped because a subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn deliver(&self, sender: &mpsc::Sender<BusMessage>, message: BusMessage) {
        if sender.try_send(message).is_err() {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("gnomon_bus_dropped_total", "bus" => "memory").increment(1);
        }
    }
}

impl MemoryBus {
    /// [`crate::Publish::send_in`]: the in-process bus hands on plain messages.
    pub(crate) async fn publish_in(
        &self,
        envelope: &Envelope,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.publish_message(envelope.message(payload)).await
    }

    /// [`Bus::publish`] without `async_trait`'s box (see `publish_through_bus!`).
    pub(crate) async fn publish_message(&self, message: BusMessage) -> Result<(), BusError> {
        validate_subject(&message.subject, false)?;
        let mut subscribers = match self.inner.subscribers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        subscribers.retain(|s| !s.sender.is_closed());
        let mut groups: HashMap<&str, Vec<&Subscriber>> = HashMap::new();
        for subscriber in subscribers
            .iter()
            .filter(|s| subject_matches(&s.pattern, &message.subject))
        {
            match &subscriber.queue {
                Some(queue) => groups.entry(queue.as_str()).or_default().push(subscriber),
                None => self.deliver(&subscriber.sender, message.clone()),
            }
        }
        for members in groups.values() {
            let pick = self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % members.len();
            self.deliver(&members[pick].sender, message.clone());
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        self.publish_message(message).await
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<BusSubscription, BusError> {
        validate_subject(subject, true)?;
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut subscribers = match self.inner.subscribers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        subscribers.push(Subscriber {
            pattern: subject.to_string(),
            queue: queue.map(str::to_string),
            sender,
        });
        Ok(BusSubscription::new(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageHeaders;
    use futures::StreamExt;

    fn message(subject: &str) -> BusMessage {
        BusMessage {
            subject: subject.to_string(),
            headers: MessageHeaders {
                target: Some("r1".into()),
                fencing_token: Some(7),
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"x"),
        }
    }

    #[tokio::test]
    async fn fan_out_without_queue_and_split_with_queue() {
        let bus = MemoryBus::new();
        let mut all_a = bus.subscribe("telemetry.>", None).await.unwrap();
        let mut all_b = bus.subscribe("telemetry.>", None).await.unwrap();
        let mut q1 = bus.subscribe("telemetry.>", Some("q")).await.unwrap();
        let mut q2 = bus.subscribe("telemetry.>", Some("q")).await.unwrap();
        for _ in 0..10 {
            bus.publish(message("telemetry.r1.s")).await.unwrap();
        }
        bus.publish(message("other.subject")).await.unwrap();
        drop(bus);
        let count = |s: &mut BusSubscription| {
            let mut n = 0;
            while let Some(Some(m)) = s.next().now_or_never() {
                assert_eq!(m.headers.fencing_token, Some(7));
                n += 1;
            }
            n
        };
        assert_eq!(count(&mut all_a), 10);
        assert_eq!(count(&mut all_b), 10);
        let (n1, n2) = (count(&mut q1), count(&mut q2));
        assert_eq!(n1 + n2, 10);
        assert!(n1 > 0 && n2 > 0, "queue group must split: {n1} / {n2}");
    }

    #[tokio::test]
    async fn publishing_to_a_wildcard_is_rejected() {
        let bus = MemoryBus::new();
        assert!(bus.publish(message("telemetry.*")).await.is_err());
    }

    use futures::FutureExt;
}
