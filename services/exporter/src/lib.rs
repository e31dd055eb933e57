//! gnomon exporter: reads the collectors' telemetry back from NATS (gnmic's `nats` input)
//! and serves it as Prometheus metrics (gnmic's `prometheus` output), optionally registered
//! for discovery with `use-lock` so exactly one exporter of a cluster is scraped.
//!
//! Modules: [`wire`] decodes payloads, [`naming`] applies gnmic's metric names and labels,
//! [`exposition`] keeps the exposition rendered, [`output`] ties them into one output,
//! [`input`] runs the NATS subscriptions (with fencing), [`http`] serves scrapes and the
//! http_sd endpoint `/sd`, [`registration`] registers the output, [`stats`] names the
//! exporter's own metrics, [`processing`] applies gnmic's event processors where gnmic does
//! (input after decoding, output before naming), [`gnmi_cache`] keeps the latest value of
//! every path for [`gnmi_server`], gnmic's `gnmi-server` on the cluster's data,
//! [`remote_write`] is gnmic's `prometheus_write` output (the same series, pushed),
//! [`shard`] splits the cluster's targets between exporters (`service-registration.shards`).

pub mod exposition;
pub mod fencing;
mod follow;
pub mod gnmi_cache;
pub mod gnmi_server;
pub mod gnmi_wire;
pub mod http;
pub mod input;
pub mod locks;
pub mod naming;
pub mod output;
pub mod processing;
pub mod registration;
pub mod remote_write;
mod series_index;
pub mod shape_cache;
pub mod shard;
pub mod stats;
pub mod wire;

pub use fencing::{Fencing, LockTable, Verdict};
pub use input::BusSource;
pub use output::{PrometheusOutput, TARGET_UP};
pub use stats::ExporterStats;

use anyhow::Context;
use gnomon_bus::Bus;
use gnomon_config::nats_input::NatsInputConfig;
use gnomon_config::prometheus_output::{PrometheusOutputConfig, ServiceRegistrationConfig};
use gnomon_config::prometheus_write_output::PrometheusWriteOutputConfig;
use gnomon_config::{GnmiServerConfig, GnomonConfig, OutputConfig};
use gnomon_coordination::{self as coordination, Coordination, LockerConfig, LockerType};
use gnomon_processors::Processors;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What the exporter runs: its NATS inputs and Prometheus outputs, by name.
#[derive(Clone, Debug, Default)]
pub struct ExporterSettings {
    /// gnmic's instance name (queue names, service IDs).
    pub instance_name: String,
    /// gnmic's cluster name (the `use-lock` key).
    pub cluster_name: String,
    pub inputs: BTreeMap<String, NatsInputConfig>,
    pub outputs: BTreeMap<String, PrometheusOutputConfig>,
    /// gnmic's `prometheus_write` outputs, fed by the inputs like the Prometheus outputs.
    pub remote_writes: BTreeMap<String, PrometheusWriteOutputConfig>,
    /// `clustering.locker`, used for service registration when present.
    pub locker: Option<LockerConfig>,
    /// The compiled `processors` section (the same definitions on every member: they come
    /// from the configuration file each member reads).
    pub processors: Arc<Processors>,
    /// gnmic's `gnmi-server`: serve the latest values over gNMI.
    pub gnmi_server: Option<GnmiServerConfig>,
}

impl ExporterSettings {
    /// The exporter's part of a gnmic-style configuration: every `type: nats` input and
    /// every `type: prometheus` and `type: prometheus_write` output.
    pub fn from_config(config: &GnomonConfig) -> anyhow::Result<Self> {
        let mut settings = ExporterSettings {
            instance_name: config.globals.instance_name.clone().unwrap_or_default(),
            cluster_name: config.globals.cluster_name.clone(),
            ..Default::default()
        };
        if let Some(clustering) = &config.clustering {
            if !clustering.instance_name.is_empty() {
                settings.instance_name = clustering.instance_name.clone();
            }
            if !clustering.cluster_name.is_empty() {
                settings.cluster_name = clustering.cluster_name.clone();
            }
            settings.locker = Some(clustering.locker.clone());
        }
        for (name, input) in &config.inputs {
            settings
                .inputs
                .insert(name.clone(), input.settings().clone());
        }
        for (name, output) in &config.outputs {
            match output {
                OutputConfig::Prometheus(parsed) => {
                    settings.outputs.insert(name.clone(), parsed.clone());
                }
                OutputConfig::PrometheusWrite(parsed) => {
                    settings.remote_writes.insert(name.clone(), parsed.clone());
                }
                OutputConfig::Nats(_) | OutputConfig::Jetstream(_) | OutputConfig::File(_) => {}
            }
        }
        settings.processors = Arc::new(compile_processors(config)?);
        settings.gnmi_server = config.gnmi_server.clone();
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every input and output, naming the key at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, input) in &self.inputs {
            input.validate(name).map_err(anyhow::Error::msg)?;
            for output in &input.outputs {
                if !self.outputs.contains_key(output) && !self.remote_writes.contains_key(output) {
                    tracing::warn!(input = %name, output = %output, "gnomon's inputs feed Prometheus outputs only; this output is not fed by the input");
                }
            }
        }
        for (name, output) in &self.outputs {
            output.validate(name).map_err(anyhow::Error::msg)?;
            self.processors
                .check_names(&format!("outputs.{name}"), &output.event_processors)
                .map_err(anyhow::Error::msg)?;
        }
        for (name, output) in &self.remote_writes {
            self.processors
                .check_names(&format!("outputs.{name}"), &output.event_processors)
                .map_err(anyhow::Error::msg)?;
        }
        for (name, input) in &self.inputs {
            self.processors
                .check_names(&format!("inputs.{name}"), &input.event_processors)
                .map_err(anyhow::Error::msg)?;
        }
        self.validate_sharding()
    }

    /// The sharded Prometheus output, if any (`service-registration.shards` > 1).
    pub fn sharded_output(&self) -> Option<(&String, u32)> {
        self.outputs.iter().find_map(|(name, output)| {
            let registration = output.service_registration.as_ref()?;
            registration
                .is_sharded()
                .then_some((name, registration.shards))
        })
    }

    /// A sharded output's inputs subscribe per target of the shard: they must read core
    /// NATS subjects of the `<prefix>.>` form and feed that output alone.
    fn validate_sharding(&self) -> anyhow::Result<()> {
        let Some((sharded, _)) = self.sharded_output() else {
            return Ok(());
        };
        let sharded_outputs: Vec<&String> = self
            .outputs
            .iter()
            .filter(|(_, o)| {
                o.service_registration
                    .as_ref()
                    .is_some_and(|r| r.is_sharded())
            })
            .map(|(name, _)| name)
            .collect();
        if sharded_outputs.len() > 1 {
            anyhow::bail!(
                "outputs.{}.service-registration.shards: only one Prometheus output per exporter may be sharded (also sharded: {})",
                sharded_outputs[1],
                sharded_outputs[0]
            );
        }
        if self.gnmi_server.is_some() {
            anyhow::bail!(
                "gnmi-server: not supported on an exporter whose output {sharded} is sharded (it would serve only the shard's targets)"
            );
        }
        for (name, input) in &self.inputs {
            if !input.feeds(sharded) {
                continue;
            }
            if input.jetstream.is_some() {
                anyhow::bail!(
                    "inputs.{name}.type: a jetstream input cannot feed the sharded output {sharded} (sharding subscribes per target on core NATS; use type nats)"
                );
            }
            shard::ShardSubjects::from_input_subject(&input.subject)
                .map_err(|why| anyhow::anyhow!("inputs.{name}.subject {why}"))?;
            let others: Vec<&String> = self
                .outputs
                .keys()
                .chain(self.remote_writes.keys())
                .filter(|o| *o != sharded && input.feeds(o))
                .collect();
            if !others.is_empty() {
                anyhow::bail!(
                    "inputs.{name}.outputs: an input feeding the sharded output {sharded} receives only the shard's targets, so it may feed no other output (also feeds: {others:?}); list outputs: [{sharded}]"
                );
            }
            if !input.queue.is_empty() {
                tracing::warn!(
                    key = %format!("inputs.{name}.queue"),
                    "not used: an input feeding a sharded output reads all of its shard's messages, in a queue group of its own instance"
                );
            }
        }
        Ok(())
    }

    /// Whether there is anything to run.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.remote_writes.is_empty() && self.gnmi_server.is_none()
    }
}

/// Shared pieces a host process may hand in (`gnomon all`, tests).
#[derive(Clone, Default)]
pub struct ExporterDeps {
    /// Coordination for service registration; otherwise one is connected from the locker
    /// settings, or from the registration block (Consul at `address`).
    pub coordination: Option<Arc<dyn Coordination>>,
    /// A bus to subscribe on instead of connecting to NATS per input settings.
    pub bus: Option<Arc<dyn Bus>>,
}

struct RunningOutput {
    output: Arc<PrometheusOutput>,
    listen: SocketAddr,
    registered: Arc<AtomicBool>,
    /// Set when the output is sharded.
    shard: Option<shard::ShardState>,
}

/// A running exporter.
pub struct Exporter {
    outputs: BTreeMap<String, RunningOutput>,
    /// The `prometheus_write` outputs (their writers run in `tasks`).
    remote_writes: BTreeMap<String, Arc<PrometheusOutput>>,
    /// The processor chains of the outputs and inputs, for a SIGHUP to rebuild.
    chains: gnomon_processors::ChainSet,
    stats: Arc<ExporterStats>,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
    owned_coordination: Vec<Arc<dyn Coordination>>,
    gnmi_server: Option<RunningGnmiServer>,
}

struct RunningGnmiServer {
    listen: SocketAddr,
    cache: Arc<gnmi_cache::GnmiCache>,
    /// True while its `service-registration` is registered.
    registered: Arc<AtomicBool>,
}

/// With a cluster store the registration goes there: the block's own Consul settings are not
/// used, and a start names the ones that were set rather than ignoring them quietly.
fn warn_unused_registry_settings(key: &str, registration: &ServiceRegistrationConfig) {
    let defaults = ServiceRegistrationConfig::default();
    let set = [
        ("address", registration.address != defaults.address),
        ("datacenter", !registration.datacenter.is_empty()),
        ("username", !registration.username.is_empty()),
        ("password", registration.password.is_some()),
        ("token", registration.token.is_some()),
    ];
    for (name, _) in set.iter().filter(|(_, is_set)| *is_set) {
        tracing::warn!(
            key = %format!("{key}.{name}"),
            "not used: the service is registered in the cluster's coordination store"
        );
    }
}

/// A registration-only Consul client for a `service-registration` block (no cluster store).
fn consul_locker_for(registration: &ServiceRegistrationConfig) -> LockerConfig {
    let mut locker = LockerConfig::new(LockerType::Consul);
    locker.address = Some(registration.address.clone());
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    locker.datacenter = non_empty(&registration.datacenter);
    let set =
        |secret: &Option<gnomon_config::Secret>| secret.clone().filter(|s| !s.expose().is_empty());
    locker.token = set(&registration.token);
    locker.username = non_empty(&registration.username);
    locker.password = set(&registration.password);
    // gnmic: session TTL = 2 × check-interval.
    locker.session_ttl = registration.effective_check_interval() * 2;
    locker
}

impl Exporter {
    /// Binds every output's listener, starts registrations and subscribes every input.
    /// Returns once messages published from now on will be received.
    pub async fn start(
        settings: ExporterSettings,
        deps: ExporterDeps,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let _ = gnomon_telemetry::metrics_handle();
        stats::describe_metrics();
        let shutdown = shutdown.child_token();
        let stats = Arc::new(ExporterStats::default());
        let mut tasks = JoinSet::new();
        let mut outputs = BTreeMap::new();
        let mut owned_coordination: Vec<Arc<dyn Coordination>> = Vec::new();
        let instance_name = if settings.instance_name.is_empty() {
            format!("gnomon-exporter-{}", uuid::Uuid::new_v4())
        } else {
            settings.instance_name.clone()
        };

        // The cluster's store (from `gnomon all`, or `clustering.locker`): registration and
        // the target locks that fencing follows. A registration-only Consul is not it.
        let cluster_coordination: Option<Arc<dyn Coordination>> =
            match (&deps.coordination, &settings.locker) {
                (Some(shared), _) => Some(shared.clone()),
                (None, Some(locker)) => {
                    let c = coordination::connect(locker, &instance_name)
                        .await
                        .context("clustering.locker")?;
                    owned_coordination.push(c.clone());
                    Some(c)
                }
                (None, None) => None,
            };
        // Sharding: the shard held, and the cluster's targets that the inputs subscribe by.
        let sharding = match (settings.sharded_output(), &cluster_coordination) {
            (None, _) => None,
            (Some((name, _)), None) => anyhow::bail!(
                "outputs.{name}.service-registration.shards: sharding needs the cluster's coordination store (clustering.locker) for the shard locks and the target list; a standalone exporter serves one shard"
            ),
            (Some((name, shards)), Some(cluster)) => {
                let (targets, follow) = watch::channel(Arc::new(BTreeSet::new()));
                tasks.spawn(shard::follow_targets(
                    coordination::TargetStore::new(cluster.clone(), &settings.cluster_name),
                    targets,
                    shutdown.clone(),
                ));
                Some((name.clone(), shard::ShardState::new(shards), follow))
            }
        };
        let chains = gnomon_processors::ChainSet::default();
        for (name, config) in &settings.outputs {
            let shard_state = sharding
                .as_ref()
                .filter(|(sharded, _, _)| sharded == name)
                .map(|(_, state, _)| state.clone());
            let chain = settings
                .processors
                .chain_for(&format!("outputs.{name}"), &config.event_processors)
                .map_err(anyhow::Error::msg)?;
            let output = Arc::new(PrometheusOutput::new(name, config.clone()).with_chain(chain));
            if let Some(chain) = output.live_chain() {
                chains.register(&format!("outputs.{name}"), &config.event_processors, chain);
            }
            let address = config.listen_socket_address();
            let listener = gnomon_api_server::Listener::bind("prometheus", &address)
                .await
                .with_context(|| format!("outputs.{name}.listen"))?;
            let bound = listener.local_addr();
            let registered = Arc::new(AtomicBool::new(false));

            let discovery = match &config.service_registration {
                None => http::Discovery::Itself {
                    target: bound.to_string(),
                },
                Some(registration_config) => {
                    let coordination = match &cluster_coordination {
                        Some(cluster) => {
                            warn_unused_registry_settings(
                                &format!("outputs.{name}.service-registration"),
                                registration_config,
                            );
                            cluster.clone()
                        }
                        None => {
                            let locker = consul_locker_for(registration_config);
                            let c = coordination::connect(&locker, &instance_name)
                                .await
                                .with_context(|| {
                                    format!("outputs.{name}.service-registration.address")
                                })?;
                            owned_coordination.push(c.clone());
                            c
                        }
                    };
                    let announced =
                        registration::announced_address(registration_config, &config.listen, bound);
                    let service = registration::service_registration(
                        registration_config,
                        registration_config.effective_name(name),
                        &settings.instance_name,
                        &settings.cluster_name,
                        announced,
                    );
                    match &shard_state {
                        Some(state) => {
                            let holder = shard::ShardHolder {
                                coordination: coordination.clone(),
                                cluster: settings.cluster_name.clone(),
                                service: service.clone(),
                                state: state.clone(),
                                registered: registered.clone(),
                                output: output.clone(),
                            };
                            tasks.spawn(holder.run(shutdown.clone()));
                        }
                        None => {
                            let registrar = registration::Registrar {
                                what: "Prometheus output",
                                coordination: coordination.clone(),
                                service: service.clone(),
                                use_lock: registration_config.use_lock,
                                lock_key: gnomon_coordination::keys::prometheus_output(
                                    &settings.cluster_name,
                                ),
                                registered: registered.clone(),
                            };
                            tasks.spawn(registrar.run(shutdown.clone()));
                        }
                    }
                    http::Discovery::Registered {
                        coordination,
                        service_name: service.name,
                    }
                }
            };

            let app = http::router(output.clone(), discovery);
            let tls = config
                .listener_tls(name)
                .map_err(anyhow::Error::msg)?
                .map(|tls| {
                    gnomon_api_server::tls_config("Prometheus output tls", &tls.server_options())
                })
                .transpose()
                .with_context(|| format!("outputs.{name}.tls"))?;
            let serving = listener.spawn(
                app,
                tls,
                gnomon_api_server::ListenerOptions::default(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                let _ = serving.await;
            });
            if let Some(expiration) = output.expiration() {
                let expiring = output.clone();
                let stop = shutdown.clone();
                tasks.spawn(async move {
                    let mut timer = tokio::time::interval(expiration);
                    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = timer.tick() => {
                                let dropped = expiring.expire();
                                let labels = [("output", expiring.name().to_string())];
                                metrics::counter!(stats::EXPIRED, &labels).increment(dropped as u64);
                                metrics::gauge!(stats::SERIES, &labels).set(expiring.series_count() as f64);
                            }
                        }
                    }
                });
            }
            tracing::info!(output = %name, listen = %bound, path = %config.normalized_path(), "Prometheus output listening");
            outputs.insert(
                name.clone(),
                RunningOutput {
                    output,
                    listen: bound,
                    registered,
                    shard: shard_state,
                },
            );
        }

        let mut remote_writes = BTreeMap::new();
        for (name, config) in &settings.remote_writes {
            let chain = settings
                .processors
                .chain_for(&format!("outputs.{name}"), &config.event_processors)
                .map_err(anyhow::Error::msg)?;
            let client = remote_write::RemoteWriteClient::new(name, config)?;
            let buffer = Arc::new(remote_write::WriteBuffer::new(name, config));
            let output = Arc::new(
                PrometheusOutput::remote_write(name, config, buffer.clone()).with_chain(chain),
            );
            if let Some(chain) = output.live_chain() {
                chains.register(&format!("outputs.{name}"), &config.event_processors, chain);
            }
            tasks.spawn(remote_write::run_writer(
                buffer,
                client,
                config.clone(),
                shutdown.clone(),
            ));
            tracing::info!(output = %name, url = %config.url, interval = ?config.interval, "Prometheus remote write output started");
            remote_writes.insert(name.clone(), output);
        }

        let mut gnmi = None;
        if let Some(config) = &settings.gnmi_server {
            let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
            let cache = Arc::new(gnmi_cache::GnmiCache::new(
                to_usize(config.max_cache_paths),
                to_usize(config.max_subscriber_lag).clamp(1, 1 << 20),
            ));
            let bound =
                gnmi_server::start(config.clone(), cache.clone(), &mut tasks, shutdown.clone())
                    .await?;
            let registered = Arc::new(AtomicBool::new(false));
            if let Some(registration_config) = &config.service_registration {
                let coordination = match &cluster_coordination {
                    Some(cluster) => {
                        warn_unused_registry_settings(
                            "gnmi-server.service-registration",
                            registration_config,
                        );
                        cluster.clone()
                    }
                    None => {
                        let c = coordination::connect(
                            &consul_locker_for(registration_config),
                            &instance_name,
                        )
                        .await
                        .context("gnmi-server.service-registration.address")?;
                        owned_coordination.push(c.clone());
                        c
                    }
                };
                let service = registration::service_registration(
                    registration_config,
                    registration_config.gnmi_server_name(&settings.cluster_name),
                    &settings.instance_name,
                    &settings.cluster_name,
                    registration::announced_address(registration_config, &config.address, bound),
                );
                tasks.spawn(
                    registration::Registrar {
                        what: "gNMI server",
                        coordination,
                        service,
                        use_lock: registration_config.use_lock,
                        lock_key: gnomon_coordination::keys::gnmi_server(&settings.cluster_name),
                        registered: registered.clone(),
                    }
                    .run(shutdown.clone()),
                );
            }
            gnmi = Some(RunningGnmiServer {
                listen: bound,
                cache,
                registered,
            });
        }
        let fencing = match &cluster_coordination {
            Some(cluster) => {
                let table = Arc::new(LockTable::default());
                tasks.spawn(locks::follow_locks(
                    cluster.clone(),
                    settings.cluster_name.clone(),
                    table.clone(),
                    shutdown.clone(),
                ));
                Arc::new(Fencing::following(table))
            }
            None => Arc::new(Fencing::highest_seen()),
        };
        for (name, config) in &settings.inputs {
            let fed: Vec<Arc<PrometheusOutput>> = outputs
                .iter()
                .filter(|(output_name, _)| config.feeds(output_name))
                .map(|(_, running)| running.output.clone())
                .chain(
                    remote_writes
                        .iter()
                        .filter(|(output_name, _)| config.feeds(output_name))
                        .map(|(_, output)| Arc::clone(output)),
                )
                .collect();
            let gnmi_cache = gnmi.as_ref().map(|g| g.cache.clone());
            if fed.is_empty() && gnmi_cache.is_none() {
                tracing::warn!(input = %name, outputs = ?config.outputs, "this NATS input feeds no Prometheus output; gnomon's inputs feed Prometheus outputs only, so it is not started");
                continue;
            }
            let chain = settings
                .processors
                .chain_for(&format!("inputs.{name}"), &config.event_processors)
                .map_err(anyhow::Error::msg)?;
            let shard = match &sharding {
                Some((sharded, state, targets)) if config.feeds(sharded) => {
                    Some(input::InputShard {
                        state: state.clone(),
                        subjects: shard::ShardSubjects::from_input_subject(&config.subject)
                            .map_err(|why| anyhow::anyhow!("inputs.{name}.subject {why}"))?,
                        targets: targets.clone(),
                    })
                }
                _ => None,
            };
            let input = Arc::new(input::NatsInput {
                chain: processing::SharedChain::new(chain).inspect(|chain| {
                    chains.register(
                        &format!("inputs.{name}"),
                        &config.event_processors,
                        chain.live(),
                    )
                }),
                name: name.clone(),
                // A JetStream input's group is its durable consumer; a sharded input's is its
                // own instance's (the shard's holder reads all of the shard's messages).
                queue: match (&config.jetstream, &shard) {
                    (Some(_), _) => config.durable_name(name, &settings.instance_name),
                    (None, Some(_)) => config.client_name(name, &instance_name),
                    (None, None) => config.effective_queue(name, &settings.instance_name),
                },
                client_name: config.client_name(name, &settings.instance_name),
                config: config.clone(),
                outputs: fed,
                fencing: fencing.clone(),
                stats: stats.clone(),
                gnmi_cache,
                shard,
            });
            let source = match &deps.bus {
                Some(bus) => BusSource::Shared(bus.clone()),
                None => BusSource::Nats,
            };
            if let Err(e) = input.start(source, &mut tasks, shutdown.clone()).await {
                shutdown.cancel();
                return Err(e);
            }
        }
        Ok(Self {
            outputs,
            remote_writes,
            chains,
            stats,
            tasks,
            shutdown,
            owned_coordination,
            gnmi_server: gnmi,
        })
    }

    /// The gNMI server's bound address, when `gnmi-server` is configured.
    pub fn gnmi_server_addr(&self) -> Option<SocketAddr> {
        self.gnmi_server.as_ref().map(|g| g.listen)
    }

    /// The gNMI server's cache, when `gnmi-server` is configured.
    pub fn gnmi_cache(&self) -> Option<Arc<gnmi_cache::GnmiCache>> {
        self.gnmi_server.as_ref().map(|g| g.cache.clone())
    }

    /// The bound address of output `name`'s listener.
    pub fn listen_addr(&self, output: &str) -> Option<SocketAddr> {
        self.outputs.get(output).map(|o| o.listen)
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<Arc<PrometheusOutput>> {
        self.outputs.get(name).map(|o| o.output.clone())
    }

    /// The `prometheus_write` output called `name`.
    pub fn remote_write(&self, name: &str) -> Option<Arc<PrometheusOutput>> {
        self.remote_writes.get(name).cloned()
    }

    /// Whether output `name` is currently registered for discovery.
    pub fn is_registered(&self, output: &str) -> bool {
        self.outputs
            .get(output)
            .is_some_and(|o| o.registered.load(Ordering::SeqCst))
    }

    /// The shard output `name` serves now (`None`: a spare, or not sharded).
    pub fn held_shard(&self, output: &str) -> Option<u32> {
        self.outputs
            .get(output)
            .and_then(|o| o.shard.as_ref())
            .and_then(shard::ShardState::held)
    }

    /// Whether the gNMI server is registered (its `service-registration`).
    pub fn is_gnmi_server_registered(&self) -> bool {
        self.gnmi_server
            .as_ref()
            .is_some_and(|g| g.registered.load(Ordering::SeqCst))
    }

    /// The processor chains of the outputs and inputs (a SIGHUP rebuilds them).
    pub fn processor_chains(&self) -> gnomon_processors::ChainSet {
        self.chains.clone()
    }

    /// The exporter's counters.
    pub fn stats(&self) -> Arc<ExporterStats> {
        self.stats.clone()
    }

    /// Stops everything (deregistering, releasing the lock) and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.join().await;
    }

    /// Waits until shut down from outside, then for every task.
    pub async fn wait(mut self) {
        self.shutdown.cancelled().await;
        self.join().await;
    }

    async fn join(&mut self) {
        while let Some(result) = self.tasks.join_next().await {
            if let Err(e) = result {
                if e.is_panic() {
                    tracing::error!(error = %e, "exporter task panicked");
                }
            }
        }
        for coordination in self.owned_coordination.drain(..) {
            coordination.shutdown().await;
        }
    }

    /// Simulates a crash for tests: tasks are aborted, nothing is deregistered or released
    /// gracefully (owned coordination sessions are left to expire).
    pub fn abort(mut self) {
        self.tasks.abort_all();
        self.owned_coordination.clear();
    }
}

/// Compiles the `processors` section once; an error names the processor, the key and the
/// value, and the outputs and inputs (of every type) that list it.
pub fn compile_processors(config: &GnomonConfig) -> anyhow::Result<Processors> {
    let mut users: Vec<(String, Vec<String>)> = Vec::new();
    for (name, output) in &config.outputs {
        let list = match output {
            OutputConfig::Nats(o) => &o.event_processors,
            OutputConfig::Jetstream(o) => &o.nats.event_processors,
            OutputConfig::File(o) => &o.event_processors,
            OutputConfig::Prometheus(o) => &o.event_processors,
            OutputConfig::PrometheusWrite(o) => &o.event_processors,
        };
        users.push((format!("outputs.{name}"), list.clone()));
    }
    for (name, input) in &config.inputs {
        let input = input.settings();
        users.push((format!("inputs.{name}"), input.event_processors.clone()));
    }
    Processors::from_config_for(&config.processors, &users).map_err(anyhow::Error::msg)
}

/// Runs the exporter described by `settings` until `shutdown`.
pub async fn run(settings: ExporterSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(settings, ExporterDeps::default(), shutdown).await
}

/// [`run`] with shared dependencies (the in-process bus / coordination of `gnomon all`).
pub async fn run_with(
    settings: ExporterSettings,
    deps: ExporterDeps,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if settings.is_empty() {
        anyhow::bail!(
            "neither an output of type prometheus or prometheus_write nor a gnmi-server is configured; the exporter has nothing to serve"
        );
    }
    let exporter = Exporter::start(settings, deps, shutdown).await?;
    exporter.wait().await;
    Ok(())
}
