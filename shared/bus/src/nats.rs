//! The NATS transport (core NATS, as gnmic's nats output and input use it).

use super::{
    validate_subject, Bus, BusError, BusMessage, BusSubscription, Envelope, MessageHeaders,
    HEADER_FENCING_TOKEN, HEADER_SUBSCRIPTION, HEADER_TARGET, HEADER_TRACEPARENT,
};
use crate::contract::{format_fencing_token, parse_fencing_token};
use async_nats::{HeaderMap, HeaderName, ServerAddr, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// TLS settings for the NATS connection (gnmic's `tls` block).
#[derive(Clone, Debug, Default)]
pub struct NatsTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How to reach and authenticate to NATS.
#[derive(Clone, Default)]
pub struct NatsOptions {
    /// Comma-separated `host:port` or `nats://host:port` list.
    pub address: String,
    /// Client name shown by the server.
    pub name: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub credentials_file: Option<PathBuf>,
    pub tls: Option<NatsTls>,
    /// How long to wait for the first connection.
    pub connect_timeout: Duration,
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsOptions")
            .field("address", &self.address)
            .field("name", &self.name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("credentials_file", &self.credentials_file)
            .field("tls", &self.tls)
            .finish()
    }
}

impl NatsOptions {
    /// Options for `address` with defaults everywhere else.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            connect_timeout: Duration::from_secs(5),
            ..Default::default()
        }
    }

    fn server_addrs(&self) -> Result<Vec<ServerAddr>, BusError> {
        let addrs: Result<Vec<ServerAddr>, BusError> = self
            .address
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                let url = if a.contains("://") {
                    a.to_string()
                } else {
                    format!("nats://{a}")
                };
                url.parse::<ServerAddr>().map_err(|e| BusError::Options {
                    option: "address",
                    reason: format!("{a:?} is not a NATS address: {e}"),
                })
            })
            .collect();
        let addrs = addrs?;
        if addrs.is_empty() {
            return Err(BusError::Options {
                option: "address",
                reason: "no server address given".into(),
            });
        }
        Ok(addrs)
    }
}

/// A NATS connection used as the bus.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
}

impl NatsBus {
    /// Connects (with a bounded wait for the first connection); later disconnects are
    /// retried in the background by the client.
    #[tracing::instrument(name = "nats.connect", skip(options), fields(address = %options.address))]
    pub async fn connect(options: &NatsOptions) -> Result<Self, BusError> {
        let addrs = options.server_addrs()?;
        // async-nats builds its rustls config from the process-wide crypto provider.
        gnomon_common::tls::ensure_crypto_provider();
        let mut connect = async_nats::ConnectOptions::new()
            .connection_timeout(options.connect_timeout)
            .request_timeout(Some(Duration::from_secs(5)))
            .client_capacity(65_536)
            .subscription_capacity(65_536);
        if let Some(name) = &options.name {
            connect = connect.name(name);
        }
        if let (Some(user), Some(pass)) = (&options.username, &options.password) {
            connect = connect.user_and_password(user.clone(), pass.clone());
        }
        if let Some(token) = &options.token {
            connect = connect.token(token.clone());
        }
        if let Some(path) = &options.credentials_file {
            connect = connect
                .credentials_file(path)
                .await
                .map_err(|e| BusError::Options {
                    option: "credentials-file",
                    reason: format!("{}: {e}", path.display()),
                })?;
        }
        if let Some(tls) = &options.tls {
            connect = connect.require_tls(true);
            if let Some(ca) = &tls.ca_file {
                connect = connect.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                connect = connect.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let connecting = connect.connect(addrs);
        let client = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| BusError::Connect {
                address: options.address.clone(),
                reason: format!("no connection within {:?}", options.connect_timeout),
            })?
            .map_err(|e| BusError::Connect {
                address: options.address.clone(),
                reason: connect_failure(&e, options.tls.is_some()),
            })?;
        Ok(Self { client })
    }

    /// The underlying client, for callers that need NATS specifics.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// The reason of a failed connection. With TLS on, handshake failures get a hint: a server
/// refusing the client certificate shows only as an alert (`BadCertificate`) or a closed
/// connection. Never contains the credentials (async-nats does not echo them).
fn connect_failure(error: &async_nats::ConnectError, tls: bool) -> String {
    use async_nats::ConnectErrorKind as Kind;
    let text = error.to_string();
    // A server requiring TLS is talked to over TLS even without a `tls` block.
    let handshake = text.contains("certificate") || text.contains("alert");
    match error.kind() {
        Kind::Tls | Kind::Io if tls || handshake => format!(
            "{text} (TLS: check tls.ca-file, the CA that signed the server's certificate, \
             and tls.cert-file / tls.key-file when the server verifies client certificates)"
        ),
        Kind::AuthorizationViolation => {
            format!("{text} (check username / password, token or credentials-file)")
        }
        _ => text,
    }
}

// Our header names, built once: a name made from a `&str` is a heap copy per message.
const TARGET: HeaderName = HeaderName::from_static(HEADER_TARGET);
const SUBSCRIPTION: HeaderName = HeaderName::from_static(HEADER_SUBSCRIPTION);
const FENCING_TOKEN: HeaderName = HeaderName::from_static(HEADER_FENCING_TOKEN);
const TRACEPARENT: HeaderName = HeaderName::from_static(HEADER_TRACEPARENT);

/// Our headers as NATS headers, the values moved in (no copy per message). A value NATS
/// cannot carry (a CR or LF would end the header block) is refused by name: async-nats
/// would panic on it.
pub(crate) fn encode_headers(headers: MessageHeaders) -> Result<HeaderMap, String> {
    let MessageHeaders {
        target,
        subscription,
        fencing_token,
        traceparent,
    } = headers;
    let mut map = HeaderMap::new();
    let values = [
        (TARGET, target),
        (SUBSCRIPTION, subscription),
        (FENCING_TOKEN, fencing_token.map(format_fencing_token)),
        (TRACEPARENT, traceparent),
    ];
    for (name, value) in values {
        let Some(value) = value else { continue };
        if value.contains(['\r', '\n']) {
            return Err(format!("header {name} carries a line break"));
        }
        map.insert(name, value);
    }
    Ok(map)
}

/// Reads our headers from a NATS message; a missing or malformed fencing token reads as
/// `None`.
pub fn decode_headers(map: Option<&HeaderMap>) -> MessageHeaders {
    let Some(map) = map else {
        return MessageHeaders::default();
    };
    let text = |name: &str| map.get(name).map(|v| v.as_str().to_string());
    MessageHeaders {
        target: text(HEADER_TARGET),
        subscription: text(HEADER_SUBSCRIPTION),
        fencing_token: text(HEADER_FENCING_TOKEN).and_then(|t| parse_fencing_token(&t)),
        traceparent: text(HEADER_TRACEPARENT),
    }
}

/// A subject and headers as core NATS takes them: the subject checked, the headers
/// encoded ([`encode_headers`]); refused by name otherwise. The subject takes the string's
/// buffer and async-nats keeps a shared handle to it.
pub(crate) fn nats_form(
    subject: String,
    headers: MessageHeaders,
) -> Result<(Subject, HeaderMap), BusError> {
    validate_subject(&subject, false)?;
    match encode_headers(headers) {
        Ok(map) => Ok((Subject::from(subject), map)),
        Err(reason) => Err(BusError::Publish { subject, reason }),
    }
}

impl NatsBus {
    /// [`Bus::publish`] without `async_trait`'s box (see `publish_through_bus!`).
    pub(crate) async fn publish_message(&self, message: BusMessage) -> Result<(), BusError> {
        let (subject, headers) = nats_form(message.subject, message.headers)?;
        self.publish_encoded(subject, headers, message.payload)
            .await
    }

    /// [`crate::Publish::send_in`]: the envelope's subject shared, its encoded headers
    /// cloned; one it could not encode goes the plain way and fails there by name.
    pub(crate) async fn publish_in(
        &self,
        envelope: &Envelope,
        payload: Bytes,
    ) -> Result<(), BusError> {
        match &envelope.nats {
            Some((subject, headers)) => {
                self.publish_encoded(subject.clone(), headers.clone(), payload)
                    .await
            }
            None => self.publish_message(envelope.message(payload)).await,
        }
    }

    async fn publish_encoded(
        &self,
        subject: Subject,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.client
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.to_string(),
                reason: e.to_string(),
            })
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        self.publish_message(message).await
    }

    async fn flush(&self) -> Result<(), BusError> {
        tokio::time::timeout(Duration::from_secs(10), self.client.flush())
            .await
            .map_err(|_| BusError::Publish {
                subject: String::new(),
                reason: "flush timed out".into(),
            })?
            .map_err(|e| BusError::Publish {
                subject: String::new(),
                reason: e.to_string(),
            })
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<BusSubscription, BusError> {
        validate_subject(subject, true)?;
        let subscribe_error = |e: async_nats::SubscribeError| BusError::Subscribe {
            subject: subject.to_string(),
            reason: e.to_string(),
        };
        let subscriber = match queue {
            Some(queue) => self
                .client
                .queue_subscribe(subject.to_string(), queue.to_string())
                .await
                .map_err(subscribe_error)?,
            None => self
                .client
                .subscribe(subject.to_string())
                .await
                .map_err(subscribe_error)?,
        };
        Ok(BusSubscription::new(subscriber.map(|m| BusMessage {
            subject: m.subject.to_string(),
            headers: decode_headers(m.headers.as_ref()),
            payload: m.payload,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_a_line_break_is_refused_by_name() {
        let headers = MessageHeaders {
            target: Some("router-1".into()),
            subscription: Some("port-stats".into()),
            fencing_token: Some(42),
            traceparent: None,
        };
        let map = encode_headers(headers.clone()).expect("plain values encode");
        assert_eq!(decode_headers(Some(&map)), headers);
        for bad in ["router\n1", "router\r1"] {
            let refused = encode_headers(MessageHeaders {
                target: Some(bad.into()),
                ..headers.clone()
            })
            .expect_err("a line break cannot travel in a header");
            assert_eq!(refused, "header Gnomon-Target carries a line break");
        }
    }
}
