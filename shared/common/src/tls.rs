//! Client TLS for gNMI targets and other peers: system roots or a CA file, mutual TLS,
//! and gnmic's `skip-verify` (accept any server certificate — for lab devices with
//! self-signed certificates; signatures are still checked so the handshake is real).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {reason}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("invalid TLS settings: {0}")]
    Config(String),
}

/// What a TLS client needs to know.
#[derive(Clone, Debug, Default)]
pub struct ClientTlsOptions {
    /// CA bundle (PEM) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate.
    pub skip_verify: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide rustls crypto provider, for libraries that build their own
/// rustls configs (async-nats, tonic's server TLS, reqwest built without a provider of its
/// own). ring is the only provider gnomon compiles in; rustls still wants it installed
/// before such a library asks for the default, which otherwise panics.
/// A no-op once the process has a provider.
pub fn ensure_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// Reads every certificate of a PEM file.
pub fn load_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn root_store(options: &ClientTlsOptions) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &options.ca_file {
        Some(ca) => {
            for cert in load_certificates(ca, "CA file")? {
                roots.add(cert).map_err(|e| TlsError::File {
                    what: "CA file",
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(%error, "skipping an unreadable system root certificate");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!(
                    "no system root certificates found; TLS targets need tls-ca or skip-verify"
                );
            }
        }
    }
    Ok(roots)
}

/// Which TLS versions and cipher suites a client offers (gnmic's `tls-min-version`,
/// `tls-max-version`, `tls-version` and `cipher-suites`); the default is rustls' safe set.
#[derive(Clone, Debug, Default)]
pub struct TlsNegotiation {
    /// Versions to offer; empty means TLS 1.2 and 1.3.
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// Cipher suites to offer, in order of preference; empty means the provider's defaults.
    pub cipher_suites: Vec<rustls::CipherSuite>,
}

/// A rustls client configuration for `options`, offering `alpn` protocols (e.g. `h2`).
pub fn client_config(options: &ClientTlsOptions, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    client_config_with(options, alpn, &TlsNegotiation::default())
}

/// [`client_config`] limited to the versions and cipher suites of `negotiation`.
pub fn client_config_with(
    options: &ClientTlsOptions,
    alpn: &[&[u8]],
    negotiation: &TlsNegotiation,
) -> Result<ClientConfig, TlsError> {
    let mut suites_provider = rustls::crypto::ring::default_provider();
    if !negotiation.cipher_suites.is_empty() {
        let available = std::mem::take(&mut suites_provider.cipher_suites);
        suites_provider.cipher_suites = negotiation
            .cipher_suites
            .iter()
            .filter_map(|wanted| available.iter().find(|s| s.suite() == *wanted).copied())
            .collect();
        if suites_provider.cipher_suites.is_empty() {
            return Err(TlsError::Config(
                "none of the configured cipher suites is available".into(),
            ));
        }
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = if negotiation.versions.is_empty()
    {
        rustls::DEFAULT_VERSIONS
    } else {
        &negotiation.versions
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(suites_provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if options.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate {
                provider: provider(),
            }))
    } else {
        builder.with_root_certificates(root_store(options)?)
    };
    let mut config = match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                load_certificates(cert, "client certificate")?,
                load_private_key(key)?,
            )
            .map_err(|e| TlsError::Config(format!("client certificate {}: {e}", cert.display())))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Config(
                "a client certificate needs both cert and key files".into(),
            ))
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The server name to verify: `override_name`, else the host part of `address`.
pub fn server_name(
    address: &str,
    override_name: Option<&str>,
) -> Result<ServerName<'static>, TlsError> {
    let host = match override_name {
        Some(name) => name.to_string(),
        None => host_of(address).to_string(),
    };
    ServerName::try_from(host.clone())
        .map_err(|e| TlsError::Config(format!("server name {host:?}: {e}")))
}

/// The host of `host:port` / `[v6]:port`.
pub fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => host,
        _ => address,
    }
}

/// `skip-verify`: any certificate is accepted; handshake signatures are still verified.
#[derive(Debug)]
struct AcceptAnyServerCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("10.0.0.1:57400"), "10.0.0.1");
        assert_eq!(host_of("[::1]:57400"), "::1");
        assert_eq!(host_of("router"), "router");
    }

    #[test]
    fn missing_ca_file_is_named() {
        let options = ClientTlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = client_config(&options, &[b"h2"]).unwrap_err().to_string();
        assert!(err.contains("CA file /nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn skip_verify_builds_without_roots() {
        let options = ClientTlsOptions {
            skip_verify: true,
            ..Default::default()
        };
        let config = client_config(&options, &[b"h2"]).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}

/// How a TLS server treats client certificates (gnmic's `client-auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate asked for.
    #[default]
    None,
    /// Ask for one; verify it against the CA when given (`request`, `verify-if-given`).
    VerifyIfGiven,
    /// Require one, verified against the CA (`require`, `require-verify`).
    RequireVerify,
}

impl ClientAuth {
    /// Parses gnmic's names; `None` for an unknown one.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" => Some(Self::None),
            "request" | "verify-if-given" => Some(Self::VerifyIfGiven),
            "require" | "require-verify" => Some(Self::RequireVerify),
            _ => None,
        }
    }
}

/// What a TLS server needs to know.
#[derive(Clone, Debug, Default)]
pub struct ServerTlsOptions {
    /// Certificate chain (PEM); a self-signed certificate is generated when absent.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// CA (PEM) for client certificates.
    pub ca_file: Option<PathBuf>,
    /// `None` means gnmic's default: require-verify when a CA is given, else no client auth.
    pub client_auth: Option<ClientAuth>,
}

/// A rustls server configuration for `options`, offering `alpn` protocols.
pub fn server_config(
    options: &ServerTlsOptions,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let (certs, key) = match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => (
            load_certificates(cert, "certificate")?,
            load_private_key(key)?,
        ),
        (None, None) => {
            let names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            let generated = rcgen::generate_simple_self_signed(names).map_err(|e| {
                TlsError::Config(format!("generating a self-signed certificate: {e}"))
            })?;
            let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
                .map_err(|e| TlsError::Config(format!("self-signed key: {e}")))?;
            (vec![generated.cert.der().clone()], key)
        }
        _ => {
            return Err(TlsError::Config(
                "cert-file and key-file go together".into(),
            ))
        }
    };
    let client_auth = options.client_auth.unwrap_or(if options.ca_file.is_some() {
        ClientAuth::RequireVerify
    } else {
        ClientAuth::None
    });
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (client_auth, &options.ca_file) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::Config(
                "client-auth needs ca-file to verify client certificates".into(),
            ))
        }
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certificates(ca, "CA file")? {
                roots.add(cert).map_err(|e| TlsError::File {
                    what: "CA file",
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            );
            let verifier = if mode == ClientAuth::VerifyIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("server certificate: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod server_tests {
    use super::*;

    #[test]
    fn self_signed_server_config_builds() {
        let config = server_config(&ServerTlsOptions::default(), &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(config.alpn_protocols.len(), 2);
        assert_eq!(
            ClientAuth::parse("require-verify"),
            Some(ClientAuth::RequireVerify)
        );
        assert_eq!(ClientAuth::parse("sometimes"), None);
        let needs_ca = ServerTlsOptions {
            client_auth: Some(ClientAuth::RequireVerify),
            ..Default::default()
        };
        assert!(server_config(&needs_ca, &[])
            .unwrap_err()
            .to_string()
            .contains("ca-file"));
    }
}
