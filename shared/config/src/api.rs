//! The REST API settings: `api: "<addr>"` or an `api-server` block.

use super::address::check_host_port;
use super::defaults;
use super::duration::serialize_ns;
use super::reader::Section;
use super::secret::Secret;
use super::ConfigError;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// gnmic's default API address.
pub const DEFAULT_API_ADDRESS: &str = defaults::API_ADDRESS;

/// Server TLS of the API.
#[derive(Clone, Debug, Serialize, PartialEq, Default)]
#[serde(rename_all = "kebab-case")]
pub struct ApiTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<String>,
}

impl ApiTls {
    /// Reads a server `tls` block (gnmic's keys for the API, the gNMI server and the
    /// Prometheus listener): a bad `client-auth`, or `cert-file` without `key-file`, names the
    /// key. `skip_verify_why` is the warning a `skip-verify: true` gets on this server.
    pub fn from_section(tls: &Section<'_>, skip_verify_why: &str) -> Result<Self, ConfigError> {
        let parsed = Self {
            ca_file: tls.path_if_set("ca-file")?,
            cert_file: tls.path_if_set("cert-file")?,
            key_file: tls.path_if_set("key-file")?,
            client_auth: tls.string_if_set("client-auth")?,
        };
        if let Some(mode) = &parsed.client_auth {
            if gnomon_common::tls::ClientAuth::parse(mode).is_none() {
                return Err(ConfigError::invalid(
                    tls.key_path("client-auth"),
                    &serde_json::Value::String(mode.clone()),
                    "is not a client-auth mode (expected request, require, verify-if-given or require-verify)",
                ));
            }
        }
        if parsed.cert_file.is_some() != parsed.key_file.is_some() {
            return Err(ConfigError::invalid(
                tls.key_path("cert-file"),
                &serde_json::Value::String(String::new()),
                "and key-file go together (set both, or neither for a self-signed certificate)",
            ));
        }
        tls.unsupported_unless(
            "skip-verify",
            &serde_json::Value::Bool(false),
            skip_verify_why,
        );
        tls.warn_unknown_keys();
        Ok(parsed)
    }

    /// The options the TLS server is built from.
    pub fn server_options(&self) -> gnomon_common::tls::ServerTlsOptions {
        gnomon_common::tls::ServerTlsOptions {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: self.ca_file.clone(),
            client_auth: self
                .client_auth
                .as_deref()
                .and_then(gnomon_common::tls::ClientAuth::parse),
        }
    }
}

/// The API server settings.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct ApiConfig {
    /// gnmic form (`:7890` listens on every interface).
    pub address: String,
    #[serde(serialize_with = "serialize_ns")]
    pub timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTls>,
    pub enable_metrics: bool,
    pub enable_profiling: bool,
    pub debug: bool,
    pub healthz_disable_logging: bool,
    /// Accepted for compatibility; gnomon never returns secrets whatever this says.
    pub expose_target_secrets: bool,
    /// gnomon: bearer token required on every request that changes something (anything but
    /// GET and HEAD). Cluster members share it: the leader sends it on its calls to members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

impl ApiConfig {
    /// Defaults at `address`.
    pub fn at(address: &str) -> Self {
        Self {
            address: address.to_string(),
            timeout: defaults::API_TIMEOUT,
            tls: None,
            enable_metrics: false,
            enable_profiling: false,
            debug: false,
            healthz_disable_logging: false,
            expose_target_secrets: false,
            token: None,
        }
    }

    /// Reads `api` and `api-server` from the root section; `None` when neither is set.
    pub fn from_root(root: &Section<'_>) -> Result<Option<Self>, ConfigError> {
        let flag = root.string("api")?.filter(|s| !s.trim().is_empty());
        if let Some(address) = &flag {
            check_host_port(&root.key_path("api"), address, true, true)?;
        }
        let Some(block) = root.section("api-server")? else {
            return Ok(flag.map(|address| Self::at(&address)));
        };
        let address = match block.string("address")?.filter(|s| !s.trim().is_empty()) {
            Some(address) => {
                check_host_port(&block.key_path("address"), &address, true, true)?;
                address
            }
            None => flag.unwrap_or_else(|| DEFAULT_API_ADDRESS.to_string()),
        };
        let mut config = Self::at(&address);
        if let Some(timeout) = block.duration("timeout")? {
            config.timeout = timeout;
        }
        if let Some(tls) = block.section("tls")? {
            config.tls = Some(ApiTls::from_section(
                &tls,
                "it has no meaning for the API's server certificate",
            )?);
        }
        // gnomon serves /metrics on the API whatever this says; it never logs /healthz
        // requests (gnmic's `healthz-disable-logging: true`).
        config.enable_metrics = block.bool("enable-metrics")?.unwrap_or(false);
        block.unsupported_unless(
            "enable-metrics",
            &serde_json::Value::Bool(true),
            "gnomon always serves /metrics on the API",
        );
        config.enable_profiling = block.bool("enable-profiling")?.unwrap_or(false);
        block.unsupported_unless(
            "enable-profiling",
            &serde_json::Value::Bool(false),
            "there are no profiling endpoints (/debug/pprof)",
        );
        config.debug = block.bool("debug")?.unwrap_or(false);
        block.unsupported_unless(
            "debug",
            &serde_json::Value::Bool(false),
            "API requests are not logged (use RUST_LOG=gnomon_api_server=debug for the listener)",
        );
        config.healthz_disable_logging = block.bool("healthz-disable-logging")?.unwrap_or(false);
        block.unsupported_unless(
            "healthz-disable-logging",
            &serde_json::Value::Bool(true),
            "/healthz requests are never logged",
        );
        config.expose_target_secrets = block.bool("expose-target-secrets")?.unwrap_or(false);
        block.unsupported_unless(
            "expose-target-secrets",
            &serde_json::Value::Bool(false),
            "passwords and tokens are always shown as ****",
        );
        // `$VAR` / `${VAR}` was expanded with the whole `api-server` block; a token that
        // was written but resolved to nothing stopped the load there (fail closed).
        config.token = block
            .string_if_set("token")?
            .filter(|token| !token.trim().is_empty())
            .map(Secret::new);
        block.warn_unknown_keys();
        Ok(Some(config))
    }

    /// The server TLS options, when TLS is configured.
    pub fn server_tls(&self) -> Option<gnomon_common::tls::ServerTlsOptions> {
        self.tls.as_ref().map(ApiTls::server_options)
    }

    /// The socket address to bind: gnmic's `:7890` means every interface.
    pub fn bind_address(&self) -> String {
        if self.address.starts_with(':') {
            format!("0.0.0.0{}", self.address)
        } else {
            self.address.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_config_with_env, ConfigFormat};

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn token_is_read_expanded_and_never_shown() {
        std::env::set_var("APITEST_TOKEN_VALUE_FOR_GNOMON", "tok-from-env-41");
        let config = load_config_with_env(
            "api-server:\n  address: 127.0.0.1:7890\n  token: ${APITEST_TOKEN_VALUE_FOR_GNOMON}\n",
            ConfigFormat::Yaml,
            &[],
        )
        .unwrap();
        let api = config.api.unwrap();
        let token = api.token.clone().unwrap();
        assert_eq!(token.expose(), "tok-from-env-41");
        let shown = format!("{api:?} {}", serde_json::to_string(&api).unwrap());
        assert!(!shown.contains("tok-from-env-41"), "{shown}");
        assert!(shown.contains("****"), "{shown}");
    }

    #[test]
    fn token_comes_from_the_environment_override() {
        let config = load_config_with_env(
            "api: 127.0.0.1:7890\n",
            ConfigFormat::Yaml,
            &env(&[("GNMIC_API_SERVER_TOKEN", "tok-override-7")]),
        )
        .unwrap();
        let api = config.api.unwrap();
        assert_eq!(api.address, "127.0.0.1:7890");
        assert_eq!(api.token.unwrap().expose(), "tok-override-7");
    }

    #[test]
    fn empty_token_means_no_token() {
        let config =
            load_config_with_env("api-server:\n  token: \"\"\n", ConfigFormat::Yaml, &[]).unwrap();
        assert_eq!(config.api.unwrap().token, None);
        let config = load_config_with_env("api: :7890\n", ConfigFormat::Yaml, &[]).unwrap();
        assert_eq!(config.api.unwrap().token, None);
    }
}
