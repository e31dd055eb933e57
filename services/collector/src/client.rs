//! The gNMI client side of one target: dialing (h2c, TLS, mTLS, skip-verify), credentials
//! as gRPC metadata, and the Subscribe call with the raw codec.

use crate::codec::{RawResponse, RawSubscribeCodec};
use gnomon_common::tls::{client_config, server_name, ClientTlsOptions};
use gnomon_config::TargetConfig;
use gnomon_gnmi::proto::gnmi::SubscribeRequest;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

/// Why a target could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("TLS settings: {0}")]
    Tls(String),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// A connection to a target plus what every call needs.
#[derive(Clone)]
pub struct TargetClient {
    channel: Channel,
    credentials: Option<(
        MetadataValue<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
}

pub use gnomon_common::error_text::error_chain;

fn uses_tls(target: &TargetConfig) -> bool {
    !target.insecure
}

/// Connects to the first reachable address of `target` within its `timeout`.
#[tracing::instrument(name = "gnmi.dial", skip(target), fields(target = %target.name))]
pub async fn dial(target: &TargetConfig) -> Result<TargetClient, DialError> {
    let tls = if uses_tls(target) {
        let options = ClientTlsOptions {
            ca_file: target.tls_ca.as_ref().map(Into::into),
            cert_file: target.tls_cert.as_ref().map(Into::into),
            key_file: target.tls_key.as_ref().map(Into::into),
            skip_verify: target.skip_verify,
        };
        let config =
            client_config(&options, &[b"h2"]).map_err(|e| DialError::Tls(e.to_string()))?;
        Some(Arc::new(config))
    } else {
        None
    };
    let mut last_error = None;
    for address in target.addresses() {
        match dial_address(address, target, tls.clone()).await {
            Ok(channel) => return TargetClient::new(channel, target),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| DialError::Address {
        address: target.address.clone(),
        reason: "no address".into(),
    }))
}

fn endpoint(address: &str, timeout: Duration) -> Result<Endpoint, DialError> {
    Endpoint::from_shared(format!("http://{address}"))
        .map(|e| {
            e.connect_timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
                .initial_stream_window_size(Some(4 * 1024 * 1024))
                .initial_connection_window_size(Some(8 * 1024 * 1024))
        })
        .map_err(|e| DialError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })
}

async fn dial_address(
    address: &str,
    target: &TargetConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Channel, DialError> {
    let endpoint = endpoint(address, target.timeout)?;
    let connect_error = |reason: String| DialError::Connect {
        address: address.to_string(),
        reason,
    };
    let connecting = async {
        match tls {
            None => endpoint
                .connect()
                .await
                .map_err(|e| connect_error(error_chain(&e))),
            Some(config) => {
                let name = server_name(address, target.tls_server_name.as_deref())
                    .map_err(|e| DialError::Tls(e.to_string()))?;
                let address = address.to_string();
                let connector = tower::service_fn(move |_uri| {
                    let config = config.clone();
                    let name = name.clone();
                    let address = address.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect(&address).await?;
                        tcp.set_nodelay(true)?;
                        let stream = tokio_rustls::TlsConnector::from(config)
                            .connect(name, tcp)
                            .await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                });
                endpoint
                    .connect_with_connector(connector)
                    .await
                    .map_err(|e| connect_error(error_chain(&e)))
            }
        }
    };
    tokio::time::timeout(target.timeout, connecting)
        .await
        .map_err(|_| connect_error(format!("no connection within {:?}", target.timeout)))?
}

fn metadata_value(
    text: &str,
    what: &str,
) -> Result<MetadataValue<tonic::metadata::Ascii>, DialError> {
    text.parse().map_err(|_| DialError::Address {
        address: String::new(),
        reason: format!("{what} is not valid gRPC metadata"),
    })
}

impl TargetClient {
    fn new(channel: Channel, target: &TargetConfig) -> Result<Self, DialError> {
        let credentials = match (&target.username, &target.password) {
            (Some(user), Some(pass)) => Some((
                metadata_value(user, "username")?,
                metadata_value(pass.expose(), "password")?,
            )),
            (Some(user), None) => Some((
                metadata_value(user, "username")?,
                metadata_value("", "password")?,
            )),
            _ => None,
        };
        let token = match &target.token {
            Some(token) => Some(metadata_value(
                &format!("Bearer {}", token.expose()),
                "token",
            )?),
            None => None,
        };
        Ok(Self {
            channel,
            credentials,
            token,
        })
    }

    fn authorize<T>(&self, request: &mut Request<T>) {
        let metadata = request.metadata_mut();
        if let Some((user, pass)) = &self.credentials {
            metadata.insert("username", user.clone());
            metadata.insert("password", pass.clone());
        }
        if let Some(token) = &self.token {
            metadata.insert("authorization", token.clone());
        }
    }

    /// Opens a Subscribe stream; `requests` is the client side (the subscription, then polls).
    pub async fn subscribe(
        &self,
        requests: impl Stream<Item = SubscribeRequest> + Send + 'static,
    ) -> Result<Streaming<RawResponse>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("target not ready: {e}")))?;
        let mut request = Request::new(requests);
        self.authorize(&mut request);
        let path = PathAndQuery::from_static("/gnmi.gNMI/Subscribe");
        grpc.streaming(request, path, RawSubscribeCodec)
            .await
            .map(|r| r.into_inner())
    }
}
