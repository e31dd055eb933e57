//! Runtime configuration as cluster state: named JSON documents under one store prefix
//! (`gnmic/<cluster>/config/targets/<name>`, `…/config/subscriptions/<name>`), so whichever
//! instance leads, and every member, sees the same targets and subscriptions, and any
//! instance's API can change them. The kinds differ only in their prefix and how a name is
//! read from a document; [`JsonDirectory`] holds what they share.

use super::{Coordination, CoordinationError, WatchEvents};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a configuration document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDocumentError {
    #[error("config is not valid JSON: {0}")]
    Json(String),
    #[error("config has no name")]
    MissingName,
    #[error("name {name:?} {problem}")]
    InvalidName { name: String, problem: String },
    #[error(transparent)]
    Store(#[from] CoordinationError),
}

/// Named JSON objects under one prefix of the coordination store.
#[derive(Clone)]
pub struct JsonDirectory {
    coordination: Arc<dyn Coordination>,
    prefix: String,
    /// What the documents are, for logs ("target", "subscription").
    kind: &'static str,
}

impl JsonDirectory {
    pub fn new(coordination: Arc<dyn Coordination>, prefix: String, kind: &'static str) -> Self {
        Self {
            coordination,
            prefix,
            kind,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Stores `document` (a JSON object) as `name`, with `name` written into it; the name
    /// must follow the one name rule (it travels in URL path segments and store keys).
    pub async fn put(
        &self,
        name: &str,
        document: &serde_json::Value,
    ) -> Result<(), ConfigDocumentError> {
        let (key, text) = self.entry(name, document)?;
        self.coordination.put(&key, &text).await?;
        Ok(())
    }

    /// Stores every (name, document) whose name is not stored yet, as [`JsonDirectory::put`]
    /// does, in as few store requests as the store allows (see
    /// [`Coordination::create_many`]); nothing is written when one of them is refused.
    pub async fn create_many(
        &self,
        documents: &[(String, serde_json::Value)],
    ) -> Result<usize, ConfigDocumentError> {
        let entries = documents
            .iter()
            .map(|(name, document)| self.entry(name, document))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.coordination.create_many(&entries).await?)
    }

    /// The store key and text of `document` stored as `name`.
    fn entry(
        &self,
        name: &str,
        document: &serde_json::Value,
    ) -> Result<(String, String), ConfigDocumentError> {
        if !document.is_object() {
            return Err(ConfigDocumentError::Json("expected a JSON object".into()));
        }
        if let Some(problem) = gnomon_config::names::problem(name) {
            return Err(ConfigDocumentError::InvalidName {
                name: name.to_string(),
                problem,
            });
        }
        let mut document = document.clone();
        if let Some(object) = document.as_object_mut() {
            object.insert("name".into(), serde_json::Value::String(name.to_string()));
        }
        let text = serde_json::to_string(&document)
            .map_err(|e| ConfigDocumentError::Json(e.to_string()))?;
        Ok((format!("{}{name}", self.prefix), text))
    }

    /// Removes `name`; returns whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, CoordinationError> {
        let key = format!("{}{name}", self.prefix);
        let existed = self.coordination.get(&key).await?.is_some();
        self.coordination.delete(&key).await?;
        Ok(existed)
    }

    /// One stored document.
    pub async fn get(&self, name: &str) -> Result<Option<serde_json::Value>, CoordinationError> {
        let key = format!("{}{name}", self.prefix);
        Ok(self
            .coordination
            .get(&key)
            .await?
            .and_then(|text| self.decode(&key, &text))
            .map(|(_, document)| document))
    }

    /// Every stored document: name → JSON. Entries that are not JSON objects are skipped
    /// with a warning.
    pub async fn list(&self) -> Result<BTreeMap<String, serde_json::Value>, CoordinationError> {
        let raw = self.coordination.get_prefix(&self.prefix).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(key, text)| self.decode(&key, &text))
            .collect())
    }

    /// Watches the stored documents.
    pub async fn watch(&self) -> Result<WatchEvents, CoordinationError> {
        self.coordination.watch_prefix(&self.prefix).await
    }

    /// Decodes one stored entry into (name, document).
    pub fn decode(&self, key: &str, text: &str) -> Option<(String, serde_json::Value)> {
        let name = key.strip_prefix(&self.prefix)?.to_string();
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(document) if document.is_object() => Some((name, document)),
            Ok(_) | Err(_) => {
                tracing::warn!(kind = self.kind, name = %gnomon_common::log::Escaped(&name), "stored config is not a JSON object; ignored");
                None
            }
        }
    }

    /// The name of a watched key, if it is one of ours.
    pub fn name_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())
    }
}

/// Prefix of the stored subscriptions.
pub fn subscription_configs_prefix(cluster: &str) -> String {
    format!("gnmic/{cluster}/config/subscriptions/")
}

/// The cluster's subscriptions, by name: what every member subscribes its targets with.
#[derive(Clone)]
pub struct SubscriptionStore {
    directory: JsonDirectory,
}

impl SubscriptionStore {
    pub fn new(coordination: Arc<dyn Coordination>, cluster: &str) -> Self {
        Self {
            directory: JsonDirectory::new(
                coordination,
                subscription_configs_prefix(cluster),
                "subscription",
            ),
        }
    }

    /// Stores `config` (a subscription JSON object with its `name`) and returns the name.
    pub async fn put(&self, config: &serde_json::Value) -> Result<String, ConfigDocumentError> {
        let name = config
            .get("name")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(ConfigDocumentError::MissingName)?
            .to_string();
        self.directory.put(&name, config).await?;
        Ok(name)
    }

    /// Stores a parsed subscription (as the JSON gnomon serializes, which it reads back).
    pub async fn put_subscription(
        &self,
        subscription: &gnomon_config::SubscriptionConfig,
    ) -> Result<String, ConfigDocumentError> {
        let document = serde_json::to_value(subscription)
            .map_err(|e| ConfigDocumentError::Json(e.to_string()))?;
        self.put(&document).await
    }

    pub fn directory(&self) -> &JsonDirectory {
        &self.directory
    }
}

impl std::ops::Deref for SubscriptionStore {
    type Target = JsonDirectory;

    fn deref(&self) -> &JsonDirectory {
        &self.directory
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCoordination;
    use futures::StreamExt;

    #[tokio::test]
    async fn subscriptions_are_stored_listed_watched_and_deleted_by_name() {
        let coordination: Arc<dyn Coordination> = Arc::new(MemoryCoordination::new("i1"));
        let store = SubscriptionStore::new(coordination.clone(), "c1");
        let mut watch = store.watch().await.unwrap();
        let name = store
            .put(&serde_json::json!({"name": "s1", "paths": ["/a"]}))
            .await
            .unwrap();
        assert_eq!(name, "s1");
        let listed = store.list().await.unwrap();
        assert_eq!(listed["s1"]["paths"][0], "/a");
        let event = watch.next().await.unwrap();
        assert_eq!(store.name_of(event.key()), Some("s1"));
        assert!(store.delete("s1").await.unwrap());
        assert!(!store.delete("s1").await.unwrap());
        assert!(store.list().await.unwrap().is_empty());
        // No name, a name that cannot travel in a URL, not an object: refused.
        for bad in [
            serde_json::json!({"paths": ["/a"]}),
            serde_json::json!({"name": "a/b", "paths": ["/a"]}),
        ] {
            assert!(store.put(&bad).await.is_err(), "{bad}");
        }
        assert!(store
            .directory()
            .put("x", &serde_json::json!([1]))
            .await
            .is_err());
    }
}
