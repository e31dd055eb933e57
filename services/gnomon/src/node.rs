//! One gnomon process: any combination of collector, coordinator and exporter over one
//! configuration, one coordination session and one REST API.

use anyhow::Context;
use axum::Router;
use gnomon_bus::Bus;
use gnomon_collector::cluster_member::{ClusterMember, MemberAddress};
use gnomon_collector::{clustered_api_routes, CollectorHandle};
use gnomon_common::tls::ClientTlsOptions;
use gnomon_config::{ApiConfig, ClusteringConfig, GnomonConfig};
use gnomon_coordination::{self as coordination, Coordination, SubscriptionStore, TargetStore};
use gnomon_coordinator::api::{
    router as cluster_router, stats_client, target_config_router, ClusterApiState,
};
use gnomon_coordinator::discovery::Discovery;
use gnomon_coordinator::member_client::MemberClientOptions;
use gnomon_coordinator::CoordinatorSettings;
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Which services this process runs.
#[derive(Clone, Copy, Debug)]
pub struct Roles {
    pub collector: bool,
    pub coordinator: bool,
    pub exporter: bool,
}

/// Pieces a host may hand in instead of connecting them from the config (the demo).
#[derive(Clone, Default)]
pub struct NodeDeps {
    pub bus: Option<Arc<dyn Bus>>,
    pub coordination: Option<Arc<dyn Coordination>>,
    /// Reads the configuration file again; with it, SIGHUP applies the file's changes.
    pub reload: Option<crate::reload::ConfigSource>,
}

fn coordinator_settings(
    clustering: &ClusteringConfig,
    api: Option<&ApiConfig>,
) -> CoordinatorSettings {
    let mut settings =
        CoordinatorSettings::new(&clustering.cluster_name, &clustering.instance_name);
    settings.services_watch_timer = clustering.services_watch_timer;
    settings.targets_watch_timer = clustering.targets_watch_timer;
    settings.target_assignment_timeout = clustering.target_assignment_timeout;
    settings.leader_wait_timer = clustering.leader_wait_timer;
    settings.rebalance_threshold = match clustering.rebalance_threshold {
        0 => None,
        threshold => Some(threshold as usize),
    };
    // Members share this instance's API token; `clustering.tls` is the leader's client TLS.
    settings.member_client = MemberClientOptions {
        tls: clustering.tls.as_ref().map(|tls| ClientTlsOptions {
            ca_file: tls.ca_file.clone().map(Into::into),
            cert_file: tls.cert_file.clone().map(Into::into),
            key_file: tls.key_file.clone().map(Into::into),
            skip_verify: tls.skip_verify,
        }),
        token: api.and_then(|api| api.token.clone()),
        ..MemberClientOptions::default()
    };
    settings
}

/// Where members reach this instance's API: `service-address` if set, else the API's host
/// (an unspecified host registers as 127.0.0.1), and the API's port.
fn member_address(clustering: &ClusteringConfig, api: &ApiConfig) -> anyhow::Result<MemberAddress> {
    let bind = api.bind_address();
    let (host, port) = bind
        .rsplit_once(':')
        .with_context(|| format!("api address {:?} has no port", api.address))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("api address {:?}: bad port", api.address))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let address = match &clustering.service_address {
        Some(service) => service.clone(),
        None if host.is_empty() || host == "0.0.0.0" || host == "::" => "127.0.0.1".to_string(),
        None => host.to_string(),
    };
    Ok(MemberAddress {
        address,
        port,
        protocol: if api.tls.is_some() { "https" } else { "http" },
        tags: clustering.tags.clone(),
    })
}

/// Copies the file's targets and subscriptions into the cluster store where they are
/// missing (runtime changes made through the API are kept).
async fn seed_store(
    store: &TargetStore,
    subscriptions: &SubscriptionStore,
    config: &GnomonConfig,
) -> anyhow::Result<()> {
    let existing = store.list().await?;
    // One store request per many targets, each written only while absent: members started
    // together seed the same file, and each write is an event for every watcher.
    let missing: Vec<_> = config
        .targets
        .iter()
        .filter(|(name, _)| !existing.contains_key(*name))
        .map(|(_, target)| target.to_wire_json())
        .collect();
    let written = store
        .create_many(&missing)
        .await
        .with_context(|| format!("storing {} targets", missing.len()))?;
    if written > 0 {
        tracing::info!(
            targets = written,
            "stored the file's targets in the cluster"
        );
    }
    let existing = subscriptions.list().await?;
    for (name, subscription) in &config.subscriptions {
        if !existing.contains_key(name) {
            subscriptions
                .put_subscription(subscription)
                .await
                .with_context(|| format!("storing subscription {name}"))?;
        }
    }
    Ok(())
}

/// Runs the services of `roles` until `shutdown`, then stops them in order: the member
/// releases its locks and deregisters first, so its targets move at once.
pub async fn run_node(
    config: GnomonConfig,
    roles: Roles,
    deps: NodeDeps,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let clustering = config.clustering.clone();
    if roles.coordinator && clustering.is_none() {
        // A single instance (gnmic's `subscribe` without a `clustering` block): the collector
        // subscribes to every configured target itself; nothing needs placing.
        if !roles.collector {
            anyhow::bail!("the coordinator needs a `clustering` block (with a `locker`)");
        }
        tracing::info!(
            "no `clustering` block: one instance collecting every target, no coordinator"
        );
    }
    let coordination: Option<Arc<dyn Coordination>> = match (&clustering, deps.coordination.clone())
    {
        (Some(_), Some(given)) => Some(given),
        (Some(clustering), None) => {
            let locker = &clustering.locker;
            Some(
                coordination::connect(locker, &clustering.instance_name)
                    .await
                    .with_context(|| {
                        format!("connecting the {:?} coordination store", locker.kind)
                    })?,
            )
        }
        (None, _) => None,
    };
    let api = match (&config.api, &clustering) {
        (Some(api), _) => Some(api.clone()),
        (None, Some(_)) => {
            anyhow::bail!("clustering needs the REST API: set `api` or `api-server`")
        }
        (None, None) => None,
    };

    let collector = if roles.collector {
        Some(
            CollectorHandle::with_deps(
                config.clone(),
                gnomon_collector::CollectorDeps {
                    bus: deps.bus.clone(),
                    ..Default::default()
                },
            )
            .context("starting outputs")?,
        )
    } else {
        None
    };
    let store = match (&clustering, &coordination) {
        (Some(c), Some(coord)) => Some(TargetStore::new(coord.clone(), &c.cluster_name)),
        _ => None,
    };
    let subscription_store = match (&clustering, &coordination) {
        (Some(c), Some(coord)) => Some(SubscriptionStore::new(coord.clone(), &c.cluster_name)),
        _ => None,
    };
    let member = match (&collector, &clustering, &coordination) {
        (Some(collector), Some(c), Some(coord)) => Some(ClusterMember::new(
            collector.clone(),
            coord.clone(),
            &c.cluster_name,
            &c.instance_name,
        )),
        _ => None,
    };

    let mut coordinator = None;
    if roles.coordinator {
        if let (Some(c), Some(coord), Some(store), Some(subscriptions)) =
            (&clustering, &coordination, &store, &subscription_store)
        {
            seed_store(store, subscriptions, &config).await?;
            let mut settings = coordinator_settings(c, api.as_ref());
            settings.discovery = Discovery::from_config(&config).context("the `loader` section")?;
            coordinator = Some(gnomon_coordinator::spawn(
                settings,
                coord.clone(),
                shutdown.clone(),
            )?);
        }
    }

    let exporter_settings = ExporterSettings::from_config(&config)?;
    let exporter = if roles.exporter && !exporter_settings.is_empty() {
        let deps = ExporterDeps {
            coordination: coordination.clone(),
            bus: deps.bus.clone(),
        };
        Some(
            Exporter::start(exporter_settings, deps, shutdown.clone())
                .await
                .context("starting the exporter")?,
        )
    } else {
        None
    };

    let mut server = None;
    if let Some(api) = &api {
        let mut router = Router::new();
        match (&collector, &member, &store, &subscription_store) {
            (Some(collector), Some(member), Some(store), Some(subscriptions)) => {
                router = router.merge(clustered_api_routes(
                    collector.clone(),
                    member.clone(),
                    store.clone(),
                    subscriptions.clone(),
                ));
            }
            (Some(collector), _, _, _) => {
                router = router.merge(gnomon_collector::api_routes(collector.clone()))
            }
            (None, _, Some(store), _) => {
                router = router
                    .merge(target_config_router(store.clone()))
                    .merge(gnomon_collector::base_routes());
            }
            (None, _, _, _) => router = router.merge(gnomon_collector::base_routes()),
        }
        if let (Some(c), Some(coord)) = (&clustering, &coordination) {
            let member_client = coordinator_settings(c, Some(api)).member_client;
            router = router.merge(cluster_router(ClusterApiState {
                cluster_name: c.cluster_name.clone(),
                coordination: coord.clone(),
                handle: coordinator.as_ref().map(|(handle, _)| handle.clone()),
                members: stats_client(&member_client)
                    .context("the member client for GET /api/v1/cluster")?,
            }));
        }
        let options = gnomon_collector::api_server_options(api);
        server = Some(
            gnomon_api_server::serve_api(&options, router, shutdown.clone())
                .await?
                .task,
        );
    }

    let mut followers = Vec::new();
    if let (Some(collector), Some(store), Some(subscriptions)) =
        (&collector, &store, &subscription_store)
    {
        followers.push(tokio::spawn(gnomon_collector::runtime_config::follow(
            collector.clone(),
            subscriptions.clone(),
            store.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(source) = deps.reload.clone() {
        followers.push(tokio::spawn(crate::reload::on_sighup(
            source,
            config.clone(),
            crate::reload::Appliers {
                destination: match (&store, &subscription_store, &collector) {
                    (Some(targets), Some(subscriptions), _) => {
                        crate::reload::Destination::Cluster {
                            targets: targets.clone(),
                            subscriptions: subscriptions.clone(),
                        }
                    }
                    (_, _, Some(collector)) => {
                        crate::reload::Destination::Collector(collector.clone())
                    }
                    _ => crate::reload::Destination::Nowhere,
                },
                processor_chains: collector
                    .as_ref()
                    .and_then(CollectorHandle::processor_chains)
                    .into_iter()
                    .chain(exporter.as_ref().map(Exporter::processor_chains))
                    .collect(),
            },
            shutdown.clone(),
        )));
    }
    if let (Some(member), Some(c), Some(api)) = (&member, &clustering, &api) {
        member
            .register(&member_address(c, api)?)
            .await
            .context("registering the API service")?;
        followers.push(tokio::spawn(gnomon_collector::output_failover::run(
            member.clone(),
            c.output_failure_timeout,
            shutdown.clone(),
        )));
    } else if let Some(collector) = &collector {
        for name in config.targets.keys() {
            collector
                .start_target(name, None)
                .with_context(|| format!("starting target {name}"))?;
        }
        // A single instance runs its loader itself, straight into the collector.
        if let Some(discovery) = Discovery::from_config(&config).context("the `loader` section")? {
            followers.push(tokio::spawn(crate::local_discovery::run(
                discovery,
                collector.clone(),
                shutdown.clone(),
            )));
        }
    }
    if config.loader.is_some() && clustering.is_some() && !roles.coordinator {
        tracing::info!(
            "the `loader` runs on the cluster's leader; this instance does not campaign"
        );
    }
    tracing::info!(
        collector = roles.collector,
        coordinator = roles.coordinator,
        exporter = exporter.is_some(),
        clustered = clustering.is_some(),
        "gnomon running"
    );

    shutdown.cancelled().await;
    for follower in followers {
        let _ = follower.await;
    }
    if let Some(member) = &member {
        member.shutdown().await;
    }
    if let Some(collector) = &collector {
        collector.shutdown().await;
    }
    if let Some(exporter) = exporter {
        exporter.stop().await;
    }
    if let Some((_, task)) = coordinator {
        let _ = task.await;
    }
    if let Some(server) = server {
        let _ = server.await;
    }
    if let Some(coordination) = coordination {
        coordination.shutdown().await;
    }
    Ok(())
}

/// `gnomon drain`: asks the leader to move this member's targets away and waits until the
/// store shows them moved (see [`gnomon_coordinator::drain`]).
pub async fn drain(config: &GnomonConfig, timeout: std::time::Duration) -> anyhow::Result<()> {
    let clustering = config.clustering.as_ref().context(
        "gnomon drain needs the member's `clustering` block (its instance-name and locker)",
    )?;
    let coordination = coordination::connect(&clustering.locker, &clustering.instance_name)
        .await
        .with_context(|| {
            format!(
                "connecting the {:?} coordination store",
                clustering.locker.kind
            )
        })?;
    let settings = coordinator_settings(clustering, config.api.as_ref());
    let client = gnomon_coordinator::member_client::MemberClient::new(&settings.member_client)?;
    let drained = gnomon_coordinator::drain_member(
        coordination.as_ref(),
        &client,
        &clustering.cluster_name,
        &clustering.instance_name,
        timeout,
    )
    .await
    .with_context(|| format!("draining {:?}", clustering.instance_name))?;
    tracing::info!(
        member = %clustering.instance_name,
        held_before = drained.held_before,
        moved = drained.moves,
        held_after = drained.held_after,
        "drained"
    );
    if drained.held_after > 0 {
        tracing::warn!(
            held = drained.held_after,
            "no other member could take some targets; they stop with this member"
        );
    }
    Ok(())
}
