//! The one client-TLS-files type every section with a `tls` block uses (NATS output and
//! input, `clustering.tls`, the locker, `prometheus_write`), in a module of its own so the
//! sections that use it do not depend on each other.

use super::reader::Section;
use super::ConfigError;
use serde::Serialize;

/// Client TLS files: gnmic's `tls` block of the NATS output and input, `clustering.tls`
/// and the locker's `tls` (etcd, Consul) — one type for all of them. Paths are kept as
/// written.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case", default)]
pub struct TlsFiles {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    pub skip_verify: bool,
}

impl TlsFiles {
    /// Reads an optional `tls` block from `section`.
    pub fn read(section: &Section<'_>, key: &str) -> Result<Option<Self>, ConfigError> {
        Self::read_with(section, key, None)
    }

    /// Like [`Self::read`]; `skip_verify_unsupported` says why `skip-verify: true` is not
    /// applied where it is not (a warning naming the key).
    pub fn read_with(
        section: &Section<'_>,
        key: &str,
        skip_verify_unsupported: Option<&str>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(tls) = section.section(key)? else {
            return Ok(None);
        };
        let files = Self {
            ca_file: tls.string_if_set("ca-file")?,
            cert_file: tls.string_if_set("cert-file")?,
            key_file: tls.string_if_set("key-file")?,
            skip_verify: tls.bool("skip-verify")?.unwrap_or(false),
        };
        if files.cert_file.is_some() != files.key_file.is_some() {
            let missing = if files.cert_file.is_some() {
                "key-file"
            } else {
                "cert-file"
            };
            return Err(ConfigError::Missing {
                key: tls.key_path(missing),
                expected: "cert-file and key-file go together".into(),
            });
        }
        if let Some(why) = skip_verify_unsupported {
            tls.unsupported_unless("skip-verify", &serde_json::Value::Bool(false), why);
        }
        tls.warn_unknown_keys();
        Ok(Some(files))
    }
}
