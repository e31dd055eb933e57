//! Service registration as KV records (etcd and memory backends): one key per instance under
//! `gnmic-services/<name>/<id>`, attached to the registering instance's session, holding JSON
//! `{"ID","Name","Address","Port","Tags","Status"}`. Liveness is key existence; "passing"
//! means `Status == "passing"`.

use super::{ServiceInstance, ServiceRegistration, ServiceWatch, WatchEvent, WatchEvents};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceRecord {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    address: String,
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
    status: String,
}

pub(crate) fn encode(registration: &ServiceRegistration) -> String {
    let record = ServiceRecord {
        id: registration.id.clone(),
        name: registration.name.clone(),
        address: registration.address.clone(),
        port: registration.port,
        tags: registration.tags.clone(),
        status: "passing".to_string(),
    };
    serde_json::to_string(&record).unwrap_or_default()
}

fn decode_healthy(value: &str) -> Option<ServiceInstance> {
    let record: ServiceRecord = serde_json::from_str(value).ok()?;
    (record.status == "passing").then_some(ServiceInstance {
        id: record.id,
        name: record.name,
        address: record.address,
        port: record.port,
        tags: record.tags,
    })
}

/// Healthy instances carrying all `tags`, ordered by ID.
pub(crate) fn healthy(records: &BTreeMap<String, String>, tags: &[String]) -> Vec<ServiceInstance> {
    let mut list: Vec<ServiceInstance> = records
        .values()
        .filter_map(|v| decode_healthy(v))
        .filter(|s| s.has_tags(tags))
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    list
}

/// Turns a prefix watch over the service records into a list watch seeded with `initial`.
pub(crate) fn watch_from_events(
    initial: BTreeMap<String, String>,
    mut events: WatchEvents,
    tags: Vec<String>,
) -> ServiceWatch {
    let (tx, rx) = tokio::sync::watch::channel(healthy(&initial, &tags));
    tokio::spawn(async move {
        let mut records = initial;
        loop {
            let event = tokio::select! {
                _ = tx.closed() => break,
                event = events.next() => event,
            };
            match event {
                Some(WatchEvent::Put { key, value }) => {
                    records.insert(key, value);
                }
                Some(WatchEvent::Delete { key }) => {
                    records.remove(&key);
                }
                None => break,
            }
            let list = healthy(&records, &tags);
            tx.send_if_modified(|current| {
                if *current != list {
                    *current = list;
                    true
                } else {
                    false
                }
            });
        }
    });
    tokio_stream::wrappers::WatchStream::new(rx).boxed()
}
