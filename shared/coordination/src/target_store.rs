//! Target configurations as cluster state: kept in the coordination store under
//! `gnmic/<cluster>/config/targets/<name>` (JSON), so whichever instance leads knows every
//! target, and any instance's API can add or remove one.

use super::{Coordination, CoordinationError, WatchEvents};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Prefix of the stored target configurations.
pub fn target_configs_prefix(cluster: &str) -> String {
    format!("gnmic/{cluster}/config/targets/")
}

/// Reads and writes the cluster's target configurations.
#[derive(Clone)]
pub struct TargetStore {
    coordination: Arc<dyn Coordination>,
    prefix: String,
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
            coordination,
            prefix: target_configs_prefix(cluster),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Stores `config` (a target config JSON object) and returns its name.
    pub async fn put(&self, config: &serde_json::Value) -> Result<String, TargetConfigError> {
        if !config.is_object() {
            return Err(TargetConfigError::Json("expected a JSON object".into()));
        }
        let name = target_name(config).ok_or(TargetConfigError::MissingName)?;
        // The one name rule (config files, REST bodies, loaders): it must travel in a URL
        // path segment and a store key unchanged.
        if let Some(problem) = gnomon_config::names::problem(&name) {
            return Err(TargetConfigError::InvalidName { name, problem });
        }
        let mut config = config.clone();
        if let Some(object) = config.as_object_mut() {
            object.insert("name".into(), serde_json::Value::String(name.clone()));
        }
        let text =
            serde_json::to_string(&config).map_err(|e| TargetConfigError::Json(e.to_string()))?;
        self.coordination
            .put(&format!("{}{name}", self.prefix), &text)
            .await?;
        Ok(name)
    }

    /// Removes target `name`; returns whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, CoordinationError> {
        let key = format!("{}{name}", self.prefix);
        let existed = self.coordination.get(&key).await?.is_some();
        self.coordination.delete(&key).await?;
        Ok(existed)
    }

    /// Every stored target: name → config. Entries that are not valid JSON are skipped with a warning.
    pub async fn list(&self) -> Result<BTreeMap<String, serde_json::Value>, CoordinationError> {
        let raw = self.coordination.get_prefix(&self.prefix).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(key, text)| self.decode(&key, &text))
            .collect())
    }

    /// Watches the stored targets.
    pub async fn watch(&self) -> Result<WatchEvents, CoordinationError> {
        self.coordination.watch_prefix(&self.prefix).await
    }

    /// Decodes one stored entry into (name, config).
    pub fn decode(&self, key: &str, text: &str) -> Option<(String, serde_json::Value)> {
        let name = key.strip_prefix(&self.prefix)?.to_string();
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(config) if config.is_object() => Some((name, config)),
            Ok(_) | Err(_) => {
                tracing::warn!(target = %name, "stored target config is not a JSON object; ignored");
                None
            }
        }
    }

    /// Target name of a watched key, if it is one of ours.
    pub fn name_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())
    }
}
