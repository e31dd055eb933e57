//! The JetStream part of a `type: jetstream` input: what the exporter needs to bind its
//! durable consumer (read by [`crate::jetstream`], carried in
//! [`crate::nats_input::NatsInputConfig`]).

use serde::Serialize;

/// gnmic's default per-worker buffer of the JetStream input.
pub const DEFAULT_INPUT_BUFFER_SIZE: usize = 500;
/// gnmic's default `fetch-batch-size`.
pub const DEFAULT_FETCH_BATCH_SIZE: usize = 500;
/// gnmic's default `max-ack-pending`.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 1000;

/// gnmic's `deliver-policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliverPolicy {
    #[default]
    All,
    Last,
    New,
    LastPerSubject,
}

/// How the JetStream input reads source and subscription from a subject when a message has
/// no gnomon headers (proto format only; gnmic's input `subject-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum InputSubjectFormat {
    /// Nothing is read from the subject.
    #[default]
    #[serde(rename = "static")]
    Static,
    #[serde(rename = "subscription.target")]
    SubscriptionTarget,
    #[serde(rename = "target.subscription")]
    TargetSubscription,
}

/// The JetStream part of a `type: jetstream` input.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JetStreamConsume {
    pub stream: String,
    /// Subject filters of the consumer (empty: the whole stream).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    pub deliver_policy: DeliverPolicy,
    pub subject_format: InputSubjectFormat,
    pub fetch_batch_size: usize,
    pub max_ack_pending: i64,
}
