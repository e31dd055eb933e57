//! gnmic's http loader: `GET <url>` answering the targets map as JSON (status 200 only),
//! with a timeout, client TLS, and basic or token authentication.

use crate::http::HttpClient;
use crate::targets::{self, WarnOnce};
use crate::{LoadError, Loader};
use gnomon_common::tls::ClientTlsOptions;
use gnomon_config::loader::{HttpLoaderConfig, LoaderConfig};
use gnomon_config::{GlobalConfig, TargetConfig};
use std::collections::BTreeMap;

pub struct HttpLoader {
    config: HttpLoaderConfig,
    globals: GlobalConfig,
    expand_env: bool,
    client: HttpClient,
    warnings: WarnOnce,
}

impl HttpLoader {
    pub fn new(http: &HttpLoaderConfig, config: &LoaderConfig) -> Result<Self, LoadError> {
        let setup = |reason: String| LoadError::Setup {
            loader: "http",
            reason,
        };
        let tls_options = http
            .tls
            .as_ref()
            .map(|tls| ClientTlsOptions {
                ca_file: tls.ca_file.clone(),
                cert_file: tls.cert_file.clone(),
                key_file: tls.key_file.clone(),
                skip_verify: tls.skip_verify,
            })
            .unwrap_or_default();
        let tls = gnomon_common::tls::client_config(&tls_options, &[b"http/1.1"])
            .map_err(|e| setup(format!("loader.tls: {e}")))?;
        let client =
            HttpClient::with_tls(reqwest::Client::builder(), tls, config.timeout).map_err(setup)?;
        Ok(Self {
            config: http.clone(),
            globals: config.globals.clone(),
            expand_env: config.expand_env,
            client,
            warnings: WarnOnce::default(),
        })
    }
}

#[async_trait::async_trait]
impl Loader for HttpLoader {
    fn type_name(&self) -> &'static str {
        "http"
    }

    async fn load(&mut self) -> Result<BTreeMap<String, TargetConfig>, LoadError> {
        let url = &self.config.url;
        let mut request = self
            .client
            .request(reqwest::Method::GET, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
            request = request.basic_auth(user, Some(password.expose()));
        }
        if let Some(token) = &self.config.token {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!("{} {}", self.config.auth_scheme, token.expose()),
            );
        }
        let reply = self.client.get_ok(request, url).await?;
        let document = serde_json::from_slice(&reply.body).map_err(|e| LoadError::Parse {
            source_name: url.clone(),
            reason: e.to_string(),
        })?;
        let (targets, warnings) =
            targets::from_document(document, url, &self.globals, self.expand_env)?;
        for warning in warnings {
            self.warnings.log("http", format!("{url}: {warning}"));
        }
        Ok(targets)
    }
}
