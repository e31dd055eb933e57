//! A clustered member follows the cluster's runtime configuration: the subscriptions in
//! the store (`gnmic/<cluster>/config/subscriptions/`) replace the file's, and a change to a
//! stored target config this member knows (PATCH of its subscriptions, a re-posted config)
//! is applied to it in place. Changes arrive through the store's watch, in store order,
//! on every member at once; a running target is touched only when what it collects with
//! changed (see [`crate::target::RunSpec`]).

use crate::collector::CollectorHandle;
use futures::StreamExt;
use gnomon_common::log::Escaped;
use gnomon_coordination::{SubscriptionStore, TargetStore, WatchEvent};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long to wait before listing the store again after a failed read.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the stored subscriptions and target configs until `cancel`.
pub async fn follow(
    collector: CollectorHandle,
    subscriptions: SubscriptionStore,
    targets: TargetStore,
    cancel: CancellationToken,
) {
    // The initial list decides what the store holds (the file's subscriptions that are not
    // in it go away); the watches then deliver every change, re-listing themselves after a
    // reconnect.
    let listed = loop {
        match subscriptions.list().await {
            Ok(listed) => break listed,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?RETRY, "cannot list the cluster's subscriptions");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    };
    let mut known = BTreeMap::new();
    for (name, document) in listed {
        if let Some(subscription) = parse_subscription(&collector, &name, &document) {
            known.insert(name, subscription);
        }
    }
    tracing::info!(
        subscriptions = ?known.keys().collect::<Vec<_>>(),
        "following the cluster's subscriptions"
    );
    collector.replace_subscriptions(known);
    let (mut subscription_watch, mut target_watch) = loop {
        match tokio::try_join!(subscriptions.watch(), targets.watch()) {
            Ok(watches) => break watches,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?RETRY, "cannot watch the cluster's configuration");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(event) = subscription_watch.next() => apply_subscription(&collector, &subscriptions, event),
            Some(event) = target_watch.next() => apply_target(&collector, &targets, event),
            else => return,
        }
    }
}

fn parse_subscription(
    collector: &CollectorHandle,
    name: &str,
    document: &serde_json::Value,
) -> Option<gnomon_config::SubscriptionConfig> {
    match collector.parse_subscription(document) {
        Ok(subscription) if subscription.name == name => Some(subscription),
        Ok(subscription) => {
            tracing::warn!(key = %Escaped(name), name = %Escaped(&subscription.name), "stored subscription's name differs from its key; ignored");
            None
        }
        Err(error) => {
            tracing::warn!(subscription = %Escaped(name), %error, "stored subscription is not valid; ignored");
            None
        }
    }
}

fn apply_subscription(collector: &CollectorHandle, store: &SubscriptionStore, event: WatchEvent) {
    match event {
        WatchEvent::Put { key, value } => {
            let Some((name, document)) = store.decode(&key, &value) else {
                return;
            };
            if let Some(subscription) = parse_subscription(collector, &name, &document) {
                if let Err(error) = collector.put_subscription(subscription) {
                    tracing::warn!(subscription = %Escaped(&name), %error, "stored subscription not applied");
                }
            }
        }
        WatchEvent::Delete { key } => {
            if let Some(name) = store.name_of(&key) {
                if collector.delete_subscription(name) {
                    tracing::info!(subscription = %Escaped(name), "subscription removed from the cluster");
                }
            }
        }
    }
}

fn apply_target(collector: &CollectorHandle, store: &TargetStore, event: WatchEvent) {
    // Deleted targets are stopped by the leader (it knows who holds them); new ones are
    // pushed with their assignment. Here: changes to targets this member knows.
    let WatchEvent::Put { key, value } = event else {
        return;
    };
    let Some((name, document)) = store.decode(&key, &value) else {
        return;
    };
    if collector.target_config(&name).is_none() {
        return;
    }
    match collector.parse_target(&document) {
        Ok(target) => match collector.update_target_config(target) {
            Ok(true) => {
                tracing::info!(target = %Escaped(&name), "target config changed in the cluster: applied")
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(target = %Escaped(&name), %error, "changed target config not applied")
            }
        },
        Err(error) => {
            tracing::warn!(target = %Escaped(&name), %error, "stored target config is not valid; ignored")
        }
    }
}
