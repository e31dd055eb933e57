//! gnmic's target loaders as a library: discover targets from a file, an HTTP endpoint,
//! Consul services or Docker containers, and report what changed.
//!
//! Why this shape: a [`Loader`] does one thing — one complete read of its source, returning
//! every target it finds (or an error saying what failed; never an empty set for a failed
//! read). Everything stateful lives once, in [`watch`]: the schedule (start-delay, interval,
//! Consul's blocking wait), the last good set, the diff, the on-add/on-delete
//! [`actions`], metrics, and the [`Sink`] the caller applies changes with. So each loader
//! stays a small translation from its source's format to `TargetConfig`s, testable with
//! one call, and the rules about failures are the same for all four types.
//!
//! Build a loader from the parsed `loader` section with [`build`], then [`watch::run`] it.

pub mod actions;
mod consul;
mod docker;
mod file;
mod http;
mod http_loader;
mod targets;
pub mod watch;

pub use actions::{ActionError, ActionRunner, HttpAction};
pub use consul::ConsulLoader;
pub use docker::DockerLoader;
pub use file::FileLoader;
pub use http_loader::HttpLoader;
pub use watch::{run, Diff, Sink, SinkError, WatchOptions};

use gnomon_config::loader::{LoaderConfig, LoaderKind};
use gnomon_config::{ConfigError, TargetConfig};
use std::collections::BTreeMap;
use std::time::Duration;

/// The largest document (file, HTTP body, Consul or Docker answer) a loader reads.
pub const MAX_DOCUMENT_SIZE: usize = 16 << 20;

/// Why one read of a loader's source failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A local file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// A remote call failed (connection, TLS, timeout).
    #[error("{method} {url}: {reason}")]
    Request {
        method: &'static str,
        url: String,
        reason: String,
    },
    /// A remote call answered with an unexpected status.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    /// The document is not valid YAML/JSON, or not the expected shape.
    #[error("cannot parse {source_name}: {reason}")]
    Parse { source_name: String, reason: String },
    /// A target in the document is invalid (the error names its key).
    #[error("{source_name}: {error}")]
    Target {
        source_name: String,
        error: ConfigError,
    },
    /// The loader cannot be set up (TLS files, client).
    #[error("setting up the {loader} loader: {reason}")]
    Setup {
        loader: &'static str,
        reason: String,
    },
}

/// One source of targets.
#[async_trait::async_trait]
pub trait Loader: Send {
    /// gnmic's loader type (`file`, `http`, `consul`, `docker`).
    fn type_name(&self) -> &'static str;

    /// Reads the source once and returns every target it defines now, by name, with the
    /// globals applied; or what failed.
    async fn load(&mut self) -> Result<BTreeMap<String, TargetConfig>, LoadError>;

    /// Returns when the source may have changed, after at most `max`. Polling loaders just
    /// wait `max`; Consul returns as soon as a blocking query sees a change.
    async fn wait_for_change(&mut self, max: Duration) {
        tokio::time::sleep(max).await;
    }
}

/// The loader the `loader` section describes.
pub fn build(config: &LoaderConfig) -> Result<Box<dyn Loader>, LoadError> {
    Ok(match &config.kind {
        LoaderKind::File(file) => Box::new(FileLoader::new(file, config)?),
        LoaderKind::Http(http) => Box::new(HttpLoader::new(http, config)?),
        LoaderKind::Consul(consul) => Box::new(ConsulLoader::new(consul, config)?),
        LoaderKind::Docker(docker) => Box::new(DockerLoader::new(docker, config)?),
    })
}
