//! Target configurations as cluster state: kept in the coordination store under
//! `gnmic/<cluster>/config/targets/<name>` (JSON), so whichever instance leads knows every
//! target, and any instance's API can add or remove one.

use super::config_store::{ConfigDocumentError, JsonDirectory};
use super::{Coordination, CoordinationError};
use std::sync::Arc;

/// Prefix of the stored target configurations.
pub fn target_configs_prefix(cluster: &str) -> String {
    format!("gnmic/{cluster}/config/targets/")
}

/// Reads and writes the cluster's target configurations.
#[derive(Clone)]
pub struct TargetStore {
    directory: JsonDirectory,
}

/// Why a target configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetConfigError {
    #[error("target config is not valid JSON: {0}")]
    Json(String),
    #[error("target config has no name (set `name` or `address`)")]
    MissingName,
    #[error("target name {name:?} {problem}")]
    InvalidName { name: String, problem: String },
    #[error(transparent)]
    Store(#[from] CoordinationError),
}

impl From<ConfigDocumentError> for TargetConfigError {
    fn from(error: ConfigDocumentError) -> Self {
        match error {
            ConfigDocumentError::Json(e) => Self::Json(e),
            ConfigDocumentError::MissingName => Self::MissingName,
            ConfigDocumentError::InvalidName { name, problem } => {
                Self::InvalidName { name, problem }
            }
            ConfigDocumentError::Store(e) => Self::Store(e),
        }
    }
}

/// The name of a target config: `name`, else `address` (gnmic's default).
pub fn target_name(config: &serde_json::Value) -> Option<String> {
    ["name", "address"].iter().find_map(|k| {
        config
            .get(*k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
}

/// The placement tags of a target config (`tags`, in order).
pub fn target_tags(config: &serde_json::Value) -> Vec<String> {
    config
        .get("tags")
        .and_then(|t| t.as_array())
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl TargetStore {
    pub fn new(coordination: Arc<dyn Coordination>, cluster: &str) -> Self {
        Self {
            directory: JsonDirectory::new(coordination, target_configs_prefix(cluster), "target"),
        }
    }

    /// Stores `config` (a target config JSON object) and returns its name.
    pub async fn put(&self, config: &serde_json::Value) -> Result<String, TargetConfigError> {
        if !config.is_object() {
            return Err(TargetConfigError::Json("expected a JSON object".into()));
        }
        let name = target_name(config).ok_or(TargetConfigError::MissingName)?;
        self.directory.put(&name, config).await?;
        Ok(name)
    }

    /// Stores those of `configs` (target config JSON objects) whose name is not stored yet,
    /// in as few store requests as the store allows; nothing is written when one of them is
    /// refused. Returns how many were written.
    pub async fn create_many(
        &self,
        configs: &[serde_json::Value],
    ) -> Result<usize, TargetConfigError> {
        let documents = configs
            .iter()
            .map(|config| {
                if !config.is_object() {
                    return Err(TargetConfigError::Json("expected a JSON object".into()));
                }
                let name = target_name(config).ok_or(TargetConfigError::MissingName)?;
                Ok((name, config.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.directory.create_many(&documents).await?)
    }
}

impl std::ops::Deref for TargetStore {
    type Target = JsonDirectory;

    fn deref(&self) -> &JsonDirectory {
        &self.directory
    }
}
