//! Members: the ready endpoints of the headless Service's EndpointSlices, each described by
//! the registration its pod wrote (see the module docs of [`super`]).

use super::client::{Event, Failure};
use super::K8sCoordination;
use crate::retry_loop::RetryLoop;
use crate::{keys, Result, ServiceInstance, ServiceWatch, WatchEvent};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;

/// The label the EndpointSlice controller puts on a Service's slices.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn selector(name: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={name}")
}

/// The EndpointSlices of Service `name`.
pub(super) async fn slices(me: &K8sCoordination, name: &str) -> Result<Vec<EndpointSlice>> {
    Ok(me
        .client()
        .list_slices(&selector(name))
        .await
        .map_err(|f| f.into_error("listing endpointslices"))?
        .0)
}

/// The value of `prefix…` among `tags`.
fn tag<'a>(tags: &'a [String], prefix: &str) -> Option<&'a str> {
    tags.iter().find_map(|t| t.strip_prefix(prefix))
}

/// The instance a registration is for: its `instance-name=` tag, else its ID without `-api`.
fn instance_of(registration: &ServiceInstance) -> &str {
    tag(&registration.tags, "instance-name=").unwrap_or_else(|| {
        registration
            .id
            .strip_suffix("-api")
            .unwrap_or(&registration.id)
    })
}

/// The members of service `name` carrying every tag in `tags`, sorted by ID.
///
/// With EndpointSlices: one member per ready endpoint address, described by the
/// registration of its pod (matched by instance name = pod name, else by address) with the
/// endpoint's address and port; without a registration, gnmic's ID `<pod>-api` and the
/// tags `cluster-name`, `instance-name`, `__protocol=http`. Without slices: the
/// registrations.
pub(super) fn members(
    name: &str,
    slices: &[EndpointSlice],
    registrations: Vec<ServiceInstance>,
    tags: &[String],
) -> Vec<ServiceInstance> {
    let mut list: Vec<ServiceInstance> = if slices.is_empty() {
        registrations
    } else {
        let cluster = name.strip_suffix("-gnmic-api");
        let mut by_id: BTreeMap<String, ServiceInstance> = BTreeMap::new();
        for slice in slices {
            let ports: Vec<u16> = slice
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
                .filter_map(|p| p.port.and_then(|port| u16::try_from(port).ok()))
                .filter(|port| *port > 0)
                .collect();
            let Some(first_port) = ports.first().copied() else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.clone().unwrap_or_default();
                if conditions.ready == Some(false)
                    || conditions.serving == Some(false)
                    || conditions.terminating == Some(true)
                {
                    continue;
                }
                for address in endpoint.addresses.iter().filter(|a| !a.is_empty()) {
                    let pod = endpoint
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .or_else(|| endpoint.hostname.clone())
                        .unwrap_or_else(|| address.clone());
                    let registered = registrations
                        .iter()
                        .find(|r| instance_of(r) == pod)
                        .or_else(|| registrations.iter().find(|r| &r.address == address));
                    let member = match registered {
                        Some(r) => ServiceInstance {
                            id: r.id.clone(),
                            name: r.name.clone(),
                            address: address.clone(),
                            port: if ports.contains(&r.port) {
                                r.port
                            } else {
                                first_port
                            },
                            tags: r.tags.clone(),
                        },
                        None => ServiceInstance {
                            id: keys::api_service_id(&pod),
                            name: name.to_string(),
                            address: address.clone(),
                            port: first_port,
                            tags: cluster
                                .map(|c| format!("cluster-name={c}"))
                                .into_iter()
                                .chain([
                                    format!("instance-name={pod}"),
                                    "__protocol=http".to_string(),
                                ])
                                .collect(),
                        },
                    };
                    // A pod in overlapping or dual-stack slices: one stable address.
                    match by_id.get(&member.id) {
                        Some(known) if known.address <= member.address => {}
                        _ => {
                            by_id.insert(member.id.clone(), member);
                        }
                    }
                }
            }
        }
        by_id.into_values().collect()
    };
    list.retain(|m| m.has_tags(tags));
    list.sort_by(|a, b| a.id.cmp(&b.id));
    list
}

/// Follows the EndpointSlices of `name`: each change is a new full list.
fn follow_slices(
    me: K8sCoordination,
    name: String,
    first: Vec<EndpointSlice>,
    mut version: String,
) -> tokio::sync::watch::Receiver<Vec<EndpointSlice>> {
    let (tx, rx) = tokio::sync::watch::channel(first.clone());
    tokio::spawn(async move {
        let shutdown = me.inner.shutdown.clone();
        let labels = selector(&name);
        let mut retry = RetryLoop::new("kubernetes endpointslice watch", me.inner.retry);
        let key = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        let mut known: BTreeMap<String, EndpointSlice> =
            first.into_iter().map(|s| (key(&s), s)).collect();
        let mut relist = false;
        loop {
            if relist {
                let listed = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    listed = me.client().list_slices(&labels) => listed,
                };
                match listed {
                    Ok((items, listed_version)) => {
                        known = items.into_iter().map(|s| (key(&s), s)).collect();
                        version = listed_version;
                        relist = false;
                        let _ = tx.send(known.values().cloned().collect());
                    }
                    Err(failure) => {
                        let wait = retry.failed(&failure.into_error("listing endpointslices"));
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
                continue;
            }
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                opened = me.client().watch_slices(&labels, &version) => opened,
            };
            let mut events = match opened {
                Ok(events) => events,
                Err(Failure::Gone) => {
                    relist = true;
                    continue;
                }
                Err(failure) => {
                    let wait = retry.failed(&failure.into_error("watching endpointslices"));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    event = events.next() => event,
                };
                let changed = match event {
                    None => break,
                    Some(Ok(Event::Upsert(slice))) => {
                        retry.succeeded();
                        version = slice.metadata.resource_version.clone().unwrap_or(version);
                        known.insert(key(&slice), slice);
                        true
                    }
                    Some(Ok(Event::Remove(slice))) => {
                        version = slice.metadata.resource_version.clone().unwrap_or(version);
                        known.remove(&key(&slice));
                        true
                    }
                    Some(Ok(Event::Bookmark(bookmark))) => {
                        version = bookmark;
                        false
                    }
                    Some(Err(Failure::Gone)) => {
                        relist = true;
                        break;
                    }
                    Some(Err(failure)) => {
                        let wait = retry.failed(&failure.into_error("watching endpointslices"));
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        break;
                    }
                };
                if changed {
                    let _ = tx.send(known.values().cloned().collect());
                }
            }
        }
    });
    rx
}

/// The members of `name` as they change: the slices and the registrations, merged.
pub(super) async fn watch(
    me: K8sCoordination,
    name: String,
    tags: Vec<String>,
) -> Result<ServiceWatch> {
    let (first_slices, version) = me
        .client()
        .list_slices(&selector(&name))
        .await
        .map_err(|f| f.into_error("listing endpointslices"))?;
    let prefix = keys::services_prefix(&name);
    let mut records = crate::Coordination::get_prefix(&me, &prefix).await?;
    let mut registrations_events = super::watch::watch_prefix(me.clone(), prefix).await?;
    let mut slices = follow_slices(me, name.clone(), first_slices.clone(), version);
    let decode = |records: &BTreeMap<String, String>| crate::kv_services::healthy(records, &[]);
    let first = members(&name, &first_slices, decode(&records), &tags);
    let (tx, rx) = tokio::sync::watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                event = registrations_events.next() => match event {
                    Some(WatchEvent::Put { key, value }) => { records.insert(key, value); }
                    Some(WatchEvent::Delete { key }) => { records.remove(&key); }
                    None => return,
                },
                changed = slices.changed() => if changed.is_err() { return },
            }
            let list = members(&name, &slices.borrow(), decode(&records), &tags);
            tx.send_if_modified(|current| {
                let changed = *current != list;
                if changed {
                    *current = list;
                }
                changed
            });
        }
    });
    Ok(tokio_stream::wrappers::WatchStream::new(rx).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn endpoint(pod: &str, ip: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![EndpointPort {
                name: Some("api".into()),
                port: Some(7890),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn registration(instance: &str) -> ServiceInstance {
        ServiceInstance {
            id: format!("{instance}-api"),
            name: "lab-gnmic-api".into(),
            address: "127.0.0.1".into(),
            port: 7890,
            tags: vec![
                "cluster-name=lab".into(),
                format!("instance-name={instance}"),
                "__protocol=https".into(),
                "zone=a".into(),
            ],
        }
    }

    #[test]
    fn ready_endpoints_are_the_members_described_by_their_registrations() {
        let slices = vec![slice(vec![
            endpoint("gnomon-0", "10.1.0.5", Some(true), None),
            endpoint("gnomon-1", "10.1.0.6", None, None),
            endpoint("gnomon-2", "10.1.0.7", Some(false), None),
            endpoint("gnomon-3", "10.1.0.8", Some(true), Some(true)),
        ])];
        let list = members(
            "lab-gnmic-api",
            &slices,
            vec![registration("gnomon-0"), registration("gone")],
            &[],
        );
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].id, "gnomon-0-api");
        assert_eq!(list[0].address, "10.1.0.5", "the endpoint's address wins");
        assert_eq!(list[0].tags[2], "__protocol=https");
        assert_eq!(list[1].id, "gnomon-1-api", "unregistered: gnmic's ID");
        assert_eq!(
            list[1].tags,
            vec![
                "cluster-name=lab".to_string(),
                "instance-name=gnomon-1".to_string(),
                "__protocol=http".to_string()
            ]
        );
        let zoned = members(
            "lab-gnmic-api",
            &slices,
            vec![registration("gnomon-0")],
            &["zone=a".to_string()],
        );
        assert_eq!(zoned.len(), 1);
        // No slices at all: the registrations.
        let list = members("lab-gnmic-api", &[], vec![registration("g9")], &[]);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].address, "127.0.0.1");
    }
}
