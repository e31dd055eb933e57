//! Target discovery as cluster state: the leader, and only the leader, runs the `loader`
//! (file, http, consul, docker); what it finds goes into the cluster target store like a
//! POSTed target, so placement, failover, the API and the next leader all see it. A target
//! that leaves the source is deleted from the store (the leader then stops it and its lock
//! is freed). Which stored targets came from the loader is kept in the store too
//! (`gnmic/<cluster>/loader/targets`), so a new leader's loader continues from there: it
//! neither re-adds (nor re-runs on-add for) what is already placed, nor forgets to remove
//! what left the source while leadership changed hands. A failed read changes nothing
//! (the loader keeps its last good set); targets from the file or the API are never
//! removed by the loader unless it once provided them itself.

use async_trait::async_trait;
use futures::StreamExt;
use gnomon_config::loader::{LoaderActions, LoaderConfig};
use gnomon_config::{GnomonConfig, TargetConfig};
use gnomon_coordination::{Coordination, TargetStore};
use gnomon_loaders::{ActionRunner, Diff, Sink, SinkError, WatchOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the leader needs to run a loader.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub loader: LoaderConfig,
    pub actions: LoaderActions,
    /// The configuration discovered targets are checked against (subscription and output
    /// names, globals), as a POSTed target is.
    pub config: Arc<GnomonConfig>,
}

impl Discovery {
    /// The configured loader, if any; its setup (TLS files, vars-file, action templates)
    /// is checked here, at start, so a mistake stops the process instead of the first term.
    pub fn from_config(config: &GnomonConfig) -> anyhow::Result<Option<Self>> {
        let Some(loader) = config.loader.clone() else {
            return Ok(None);
        };
        let discovery = Self {
            loader,
            actions: config.loader_actions.clone(),
            config: Arc::new(config.clone()),
        };
        discovery.parts()?;
        Ok(Some(discovery))
    }
}

/// Store writes of one diff in flight at once.
const STORE_WRITES_IN_FLIGHT: usize = 64;

impl Discovery {
    /// A fresh loader and its actions (none when no action is configured).
    pub fn parts(&self) -> anyhow::Result<(Box<dyn gnomon_loaders::Loader>, Option<ActionRunner>)> {
        let loader = gnomon_loaders::build(&self.loader)?;
        let actions = ActionRunner::new(&self.actions, &self.loader)?;
        Ok((loader, (!actions.is_empty()).then_some(actions)))
    }
}

/// Key of the list of stored targets the loader provided.
pub fn loaded_targets_key(cluster: &str) -> String {
    format!("gnmic/{cluster}/loader/targets")
}

/// Runs the loader for one leadership term (until `cancel`).
pub async fn run(
    discovery: Discovery,
    coordination: Arc<dyn Coordination>,
    cluster: String,
    cancel: CancellationToken,
) {
    let (loader, actions) = match discovery.parts() {
        Ok(parts) => parts,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the target loader cannot start; no targets are discovered");
            return;
        }
    };
    let sink = Arc::new(StoreSink {
        store: TargetStore::new(coordination.clone(), &cluster),
        coordination,
        loaded_key: loaded_targets_key(&cluster),
        config: discovery.config.clone(),
    });
    tracing::info!(loader = discovery.loader.type_name(), interval = ?discovery.loader.interval, "leading: discovering targets");
    gnomon_loaders::run(
        loader,
        actions,
        sink,
        WatchOptions::from_config(&discovery.loader),
        cancel,
    )
    .await;
}

/// Writes the loader's changes into the cluster target store.
struct StoreSink {
    store: TargetStore,
    coordination: Arc<dyn Coordination>,
    loaded_key: String,
    config: Arc<GnomonConfig>,
}

impl StoreSink {
    async fn loaded(&self) -> Result<BTreeSet<String>, SinkError> {
        Ok(match self.coordination.get(&self.loaded_key).await? {
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
                tracing::warn!(key = %self.loaded_key, %error, "the list of loaded targets is not valid; starting from none");
                BTreeSet::new()
            }),
            None => BTreeSet::new(),
        })
    }
}

#[async_trait]
impl Sink for StoreSink {
    async fn apply(&self, diff: Diff) -> Result<(), SinkError> {
        let mut loaded = self.loaded().await?;
        // Many writes in flight at once (a file of 1 000 new targets is one diff); the
        // leader's watch places each target as its write lands.
        let writes: Vec<(String, serde_json::Value)> = diff
            .added
            .iter()
            .chain(&diff.changed)
            .map(|(name, target)| (name.clone(), target.to_wire_json()))
            .collect();
        let store = self.store.clone();
        let puts = futures::stream::iter(writes)
            .map(move |(name, document)| {
                let store = store.clone();
                async move {
                    store
                        .put(&document)
                        .await
                        .map(|_| name.clone())
                        .map_err(|e| format!("storing discovered target {name:?}: {e}"))
                }
            })
            .buffer_unordered(STORE_WRITES_IN_FLIGHT);
        let store = self.store.clone();
        let deletes = futures::stream::iter(diff.removed.clone())
            .map(move |name| {
                let store = store.clone();
                async move {
                    store
                        .delete(&name)
                        .await
                        .map(|_| name.clone())
                        .map_err(|e| format!("removing target {name:?}: {e}"))
                }
            })
            .buffer_unordered(STORE_WRITES_IN_FLIGHT);
        let (stored, removed): (Vec<_>, Vec<_>) =
            futures::join!(puts.collect::<Vec<_>>(), deletes.collect::<Vec<_>>());
        // What did land is recorded even when something failed, so the list stays true.
        let mut first_error = None;
        for result in stored {
            match result {
                Ok(name) => {
                    loaded.insert(name);
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        for result in removed {
            match result {
                Ok(name) => {
                    loaded.remove(&name);
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        let text = serde_json::to_string(&loaded)?;
        self.coordination.put(&self.loaded_key, &text).await?;
        match first_error {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    async fn applied_before(&self) -> BTreeMap<String, TargetConfig> {
        let (loaded, stored) = match tokio::try_join!(
            async { self.loaded().await.map_err(|e| e.to_string()) },
            async { self.store.list().await.map_err(|e| e.to_string()) }
        ) {
            Ok(read) => read,
            Err(error) => {
                // Starting from none only re-adds (idempotent puts); nothing is deleted.
                tracing::warn!(%error, "cannot read which targets the loader provided before");
                return BTreeMap::new();
            }
        };
        stored
            .into_iter()
            .filter(|(name, _)| loaded.contains(name))
            .filter_map(
                |(name, document)| match self.config.target_from_json(&document) {
                    Ok(target) => Some((name, target)),
                    Err(_) => None,
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_config::{load_config_with_env, ConfigFormat};
    use gnomon_coordination::MemoryCoordination;

    fn config() -> GnomonConfig {
        load_config_with_env(
            "insecure: true\nsubscriptions:\n  s: {paths: [/a]}\n",
            ConfigFormat::Yaml,
            &[],
        )
        .unwrap()
    }

    fn target(config: &GnomonConfig, name: &str, address: &str) -> TargetConfig {
        config
            .target_from_json(&serde_json::json!({"name": name, "address": address}))
            .unwrap()
    }

    #[tokio::test]
    async fn the_store_holds_what_the_loader_found_and_a_new_leader_continues_from_it() {
        let coordination: Arc<dyn Coordination> = Arc::new(MemoryCoordination::new("g1"));
        let config = Arc::new(config());
        let sink = StoreSink {
            store: TargetStore::new(coordination.clone(), "c"),
            coordination: coordination.clone(),
            loaded_key: loaded_targets_key("c"),
            config: config.clone(),
        };
        // A target from the API, which the loader must never remove.
        sink.store
            .put(&serde_json::json!({"name": "api", "address": "10.0.0.9:57400"}))
            .await
            .unwrap();
        let first: BTreeMap<String, TargetConfig> = [
            ("a".to_string(), target(&config, "a", "10.0.0.1:57400")),
            ("b".to_string(), target(&config, "b", "10.0.0.2:57400")),
        ]
        .into();
        sink.apply(Diff::between(&BTreeMap::new(), &first))
            .await
            .unwrap();
        let stored = sink.store.list().await.unwrap();
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["a", "api", "b"]);

        // A new leader's sink sees exactly what the loader provided, equal to what it reads.
        let again = sink.applied_before().await;
        assert_eq!(again, first);

        // `b` left the source: only `b` goes.
        let second: BTreeMap<String, TargetConfig> =
            [("a".to_string(), target(&config, "a", "10.0.0.1:57400"))].into();
        sink.apply(Diff::between(&again, &second)).await.unwrap();
        let stored = sink.store.list().await.unwrap();
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["a", "api"]);
        assert_eq!(sink.applied_before().await, second);
    }
}
