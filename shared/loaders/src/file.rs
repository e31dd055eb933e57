//! gnmic's file loader: a YAML or JSON targets map in a local file or at an http(s) URL,
//! read whole at every interval. A read gives up after half the interval, as gnmic's.

use crate::http::HttpClient;
use crate::targets::{self, WarnOnce};
use crate::{LoadError, Loader, MAX_DOCUMENT_SIZE};
use gnomon_config::loader::{FileLoaderConfig, FileSource, LoaderConfig};
use gnomon_config::{GlobalConfig, TargetConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub struct FileLoader {
    source: FileSource,
    globals: GlobalConfig,
    expand_env: bool,
    timeout: Duration,
    http: Option<HttpClient>,
    warnings: WarnOnce,
}

impl FileLoader {
    pub fn new(file: &FileLoaderConfig, config: &LoaderConfig) -> Result<Self, LoadError> {
        let http = match &file.source {
            FileSource::Url(_) => Some(
                HttpClient::new(reqwest::Client::builder(), config.timeout).map_err(|reason| {
                    LoadError::Setup {
                        loader: "file",
                        reason,
                    }
                })?,
            ),
            FileSource::Local(_) => None,
        };
        Ok(Self {
            source: file.source.clone(),
            globals: config.globals.clone(),
            expand_env: config.expand_env,
            timeout: config.timeout,
            http,
            warnings: WarnOnce::default(),
        })
    }

    async fn read_local(&self, path: &Path) -> Result<String, LoadError> {
        let read_error = |reason: String| LoadError::Read {
            path: path.display().to_string(),
            reason,
        };
        let read = async {
            let file = tokio::fs::File::open(path).await?;
            let mut text = String::new();
            file.take(MAX_DOCUMENT_SIZE as u64 + 1)
                .read_to_string(&mut text)
                .await?;
            Ok::<_, std::io::Error>(text)
        };
        let text = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| read_error(format!("not read within {:?}", self.timeout)))?
            .map_err(|e| read_error(e.to_string()))?;
        if text.len() > MAX_DOCUMENT_SIZE {
            return Err(read_error(format!(
                "larger than the {} MiB a targets file may have",
                MAX_DOCUMENT_SIZE >> 20
            )));
        }
        Ok(text)
    }

    async fn read_remote(&self, url: &str) -> Result<String, LoadError> {
        let Some(http) = &self.http else {
            return Err(LoadError::Setup {
                loader: "file",
                reason: "no HTTP client".into(),
            });
        };
        let reply = http
            .get_ok(http.request(reqwest::Method::GET, url), url)
            .await?;
        String::from_utf8(reply.body.to_vec()).map_err(|e| LoadError::Parse {
            source_name: url.to_string(),
            reason: e.to_string(),
        })
    }
}

/// Parses a targets document: JSON when the name ends in `.json`, YAML otherwise (YAML also
/// reads JSON). Errors carry the position the parser reports.
pub(crate) fn parse_document(text: &str, source_name: &str) -> Result<Value, LoadError> {
    let parse_error = |reason: String| LoadError::Parse {
        source_name: source_name.to_string(),
        reason: reason.replace('\n', " "),
    };
    let is_json = Path::new(source_name.split('?').next().unwrap_or(source_name))
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))
    } else if text.trim().is_empty() {
        Ok(Value::Null)
    } else {
        gnomon_config::yaml::parse(text).map_err(parse_error)
    }
}

#[async_trait::async_trait]
impl Loader for FileLoader {
    fn type_name(&self) -> &'static str {
        "file"
    }

    async fn load(&mut self) -> Result<BTreeMap<String, TargetConfig>, LoadError> {
        let (text, source_name) = match &self.source {
            FileSource::Local(path) => (self.read_local(path).await?, path.display().to_string()),
            FileSource::Url(url) => (self.read_remote(url).await?, url.clone()),
        };
        let document = parse_document(&text, &source_name)?;
        let (targets, warnings) =
            targets::from_document(document, &source_name, &self.globals, self.expand_env)?;
        for warning in warnings {
            self.warnings
                .log("file", format!("{source_name}: {warning}"));
        }
        Ok(targets)
    }
}
