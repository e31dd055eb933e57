//! The certificate and key the devices present: generated at start (self-signed, for
//! 127.0.0.1 and localhost) or read from files.

use std::path::Path;

use anyhow::Context;
use tonic::transport::{Identity, ServerTlsConfig};

/// PEM certificate chain and private key.
#[derive(Clone)]
pub struct TlsMaterial {
    pub certificate_pem: String,
    private_key_pem: String,
}

impl TlsMaterial {
    /// A fresh self-signed certificate valid for `127.0.0.1`, `::1` and `localhost`.
    pub fn self_signed() -> anyhow::Result<TlsMaterial> {
        let names = vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ];
        let generated = rcgen::generate_simple_self_signed(names)
            .context("generating the self-signed TLS certificate")?;
        Ok(TlsMaterial {
            certificate_pem: generated.cert.pem(),
            private_key_pem: generated.signing_key.serialize_pem(),
        })
    }

    /// Reads a PEM certificate chain and key.
    pub fn from_files(certificate: &Path, key: &Path) -> anyhow::Result<TlsMaterial> {
        let certificate_pem = std::fs::read_to_string(certificate)
            .with_context(|| format!("reading TLS certificate {}", certificate.display()))?;
        let private_key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("reading TLS key {}", key.display()))?;
        if !certificate_pem.contains("-----BEGIN CERTIFICATE-----") {
            anyhow::bail!(
                "TLS certificate {} holds no PEM certificate",
                certificate.display()
            );
        }
        if !private_key_pem.contains("PRIVATE KEY-----") {
            anyhow::bail!("TLS key {} holds no PEM private key", key.display());
        }
        Ok(TlsMaterial {
            certificate_pem,
            private_key_pem,
        })
    }

    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(
            &self.certificate_pem,
            &self.private_key_pem,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_round_trips_through_files() {
        let material = TlsMaterial::self_signed().unwrap();
        assert!(material
            .certificate_pem
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &material.certificate_pem).unwrap();
        std::fs::write(&key, &material.private_key_pem).unwrap();
        let loaded = TlsMaterial::from_files(&cert, &key).unwrap();
        assert_eq!(loaded.certificate_pem, material.certificate_pem);
        let error = TlsMaterial::from_files(&key, &cert).err().unwrap();
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
    }
}
