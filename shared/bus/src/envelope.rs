//! A subject and headers prepared once for every message of one stream.
//!
//! Why: a collector publishes each notification of a subscription stream under the same
//! subject and the same headers (target, subscription, fencing token); only the payload
//! changes. Written out per message, that was the largest cost of the publishing side:
//! copying the subject and the header strings, formatting the token, and hashing three
//! names into async-nats' header map. An [`Envelope`] checks the subject and encodes the
//! headers once; a NATS publish then shares the subject and clones the encoded map
//! ([`crate::Publish::send_in`]).
//!
//! What it costs: the encoded form is kept beside the plain one for as long as the stream
//! lives (a few hundred bytes per stream and output). Buses without an encoded form
//! (in-process, JetStream) take the plain message, checked as any other.

use crate::nats::nats_form;
use crate::{BusMessage, MessageHeaders};
use bytes::Bytes;

/// A subject and headers for many messages.
#[derive(Clone, Debug)]
pub struct Envelope {
    subject: String,
    headers: MessageHeaders,
    /// The subject and headers as core NATS takes them; `None` when either is refused
    /// (a publish then goes the plain way and reports why).
    pub(crate) nats: Option<(async_nats::Subject, async_nats::HeaderMap)>,
}

impl Envelope {
    pub fn new(subject: String, headers: MessageHeaders) -> Self {
        let nats = nats_form(subject.clone(), headers.clone()).ok();
        Self {
            subject,
            headers,
            nats,
        }
    }

    /// One message of the envelope, as a bus without an encoded form takes it.
    pub fn message(&self, payload: Bytes) -> BusMessage {
        BusMessage {
            subject: self.subject.clone(),
            headers: self.headers.clone(),
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::encode_headers;

    fn headers(target: &str) -> MessageHeaders {
        MessageHeaders {
            target: Some(target.into()),
            subscription: Some("port-stats".into()),
            fencing_token: Some(7),
            traceparent: None,
        }
    }

    #[test]
    fn a_valid_envelope_is_encoded_once_as_the_plain_message_would_be() {
        let envelope = Envelope::new("telemetry.r1.port-stats".into(), headers("r1"));
        let (subject, map) = envelope.nats.clone().expect("valid subject and headers");
        assert_eq!(subject.as_str(), "telemetry.r1.port-stats");
        assert_eq!(map, encode_headers(headers("r1")).unwrap());
        let message = envelope.message(Bytes::from_static(b"x"));
        assert_eq!(message.subject, "telemetry.r1.port-stats");
        assert_eq!(message.headers, headers("r1"));
        assert_eq!(message.payload, Bytes::from_static(b"x"));
    }

    #[test]
    fn a_refused_subject_or_header_leaves_no_encoded_form() {
        assert!(Envelope::new("telemetry.r 1".into(), headers("r1"))
            .nats
            .is_none());
        assert!(Envelope::new("telemetry..x".into(), headers("r1"))
            .nats
            .is_none());
        assert!(Envelope::new("telemetry".into(), headers("r\n1"))
            .nats
            .is_none());
    }
}
