//! Starting and stopping the simulator: one tonic server per device, plus `/stats`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tracing::{info, info_span, warn, Instrument};

use crate::args::SimulatorArgs;
use crate::auth::Credentials;
use crate::context::{DeviceContext, LoadSettings};
use crate::model::{Clock, Device, LeafTable};
use crate::router::GnmiRouter;
use crate::service::DeviceService;
use crate::stats::{DeviceStats, StatsRegistry, StatsReport};
use crate::tls::TlsMaterial;

/// How long `stop` waits for streams and connections to wind down before aborting them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running simulator. Dropping it stops the servers (without waiting); `stop` waits.
pub struct Simulator {
    device_addresses: Vec<SocketAddr>,
    hostnames: Vec<String>,
    stats_address: Option<SocketAddr>,
    certificate_pem: Option<String>,
    registry: Arc<StatsRegistry>,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

/// The listen address of device `index`: consecutive ports, or port 0 for every device.
fn device_listen_address(first: SocketAddr, index: u32) -> anyhow::Result<SocketAddr> {
    if first.port() == 0 {
        return Ok(first);
    }
    let port = u32::from(first.port()) + index;
    let port = u16::try_from(port)
        .with_context(|| format!("device {index} would need port {port}, above 65535"))?;
    Ok(SocketAddr::new(first.ip(), port))
}

/// `--search-from`: the next port to try; ports are tried upward and taken ones skipped.
struct FreePorts {
    ip: std::net::IpAddr,
    next: u16,
}

impl FreePorts {
    async fn bind(&mut self, index: u32) -> anyhow::Result<TcpListener> {
        loop {
            let address = SocketAddr::new(self.ip, self.next);
            let Some(next) = self.next.checked_add(1) else {
                anyhow::bail!("no free port left above {address} for device {index}");
            };
            self.next = next;
            match TcpListener::bind(address).await {
                Ok(listener) => return Ok(listener),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("binding device {index} to {address}"))
                }
            }
        }
    }
}

impl Simulator {
    /// Binds every device (and `/stats`) and starts serving. Fails if any address is taken.
    pub async fn start(args: SimulatorArgs) -> anyhow::Result<Simulator> {
        let tls = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            Some(TlsMaterial::from_files(cert, key)?)
        } else if args.tls {
            Some(TlsMaterial::self_signed()?)
        } else {
            None
        };
        if tls.is_some() {
            gnomon_common::tls::ensure_crypto_provider();
        }
        if let (Some(path), Some(material)) = (&args.tls_export_cert, &tls) {
            std::fs::write(path, &material.certificate_pem)
                .with_context(|| format!("writing the TLS certificate to {}", path.display()))?;
        }
        let credentials = match (&args.username, &args.password) {
            (Some(username), Some(password)) => {
                Some(Credentials::new(username.clone(), password.clone()))
            }
            (None, None) => None,
            _ => anyhow::bail!("--username and --password must be given together"),
        };
        let clock = Clock {
            start: Instant::now(),
            update_period: args.update_rate,
            flap_period: (!args.flap_period.is_zero()).then_some(args.flap_period),
        };
        let load = args.load.then_some(LoadSettings {
            updates_per_notification: args.updates_per_notification as usize,
        });
        let table = Arc::new(LeafTable::new(args.interfaces));
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut registry = StatsRegistry::default();
        let mut device_addresses = Vec::new();
        let mut hostnames = Vec::new();

        let mut free_ports = match (args.search_from, args.listen.port()) {
            (None, _) => None,
            (Some(first), 0) => Some(FreePorts {
                ip: args.listen.ip(),
                next: first,
            }),
            (Some(_), port) => anyhow::bail!(
                "--search-from needs --listen with port 0 (given port {port}: the devices take that port and the ones after it)"
            ),
        };
        for index in 0..args.count {
            let listener = match &mut free_ports {
                Some(ports) => ports.bind(index).await?,
                None => {
                    let wanted = device_listen_address(args.listen, index)?;
                    TcpListener::bind(wanted)
                        .await
                        .with_context(|| format!("binding device {index} to {wanted}"))?
                }
            };
            let address = listener.local_addr()?;
            let hostname = format!("{}{index}", args.name_prefix);
            let stats = Arc::new(DeviceStats::default());
            registry.add(address, Arc::clone(&stats));
            let context = Arc::new(DeviceContext {
                device: Device::new(index, hostname.clone(), Arc::clone(&table), clock),
                stats,
                credentials: credentials.clone(),
                load,
                shutdown: shutdown.clone(),
            });
            let mut builder = Server::builder();
            if let Some(material) = &tls {
                builder = builder
                    .tls_config(material.server_config())
                    .context("configuring TLS")?;
            }
            let router = builder.add_service(GnmiRouter::new(DeviceService::new(context)));
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let stop = shutdown.clone();
            let span = info_span!("device", %hostname, %address);
            tasks.spawn(
                async move {
                    router
                        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                        .await
                        .with_context(|| format!("serving gNMI on {address}"))
                }
                .instrument(span),
            );
            device_addresses.push(address);
            hostnames.push(hostname);
        }

        let registry = Arc::new(registry);
        let stats_address = match args.stats_listen {
            Some(wanted) => {
                let listener = gnomon_api_server::Listener::bind("stats", &wanted.to_string())
                    .await
                    .context("--stats-listen")?;
                let address = listener.local_addr();
                let serving =
                    crate::stats::serve(listener, Arc::clone(&registry), shutdown.clone());
                tasks.spawn(async move {
                    let _ = serving.await;
                    Ok(())
                });
                Some(address)
            }
            None => None,
        };
        info!(
            devices = device_addresses.len(),
            first = %device_addresses.first().map(ToString::to_string).unwrap_or_default(),
            tls = tls.is_some(),
            credentials = credentials.is_some(),
            load = args.load,
            "simulator started"
        );
        Ok(Simulator {
            device_addresses,
            hostnames,
            stats_address,
            certificate_pem: tls.map(|material| material.certificate_pem),
            registry,
            shutdown,
            tasks,
        })
    }

    /// Where each device listens, in device order.
    pub fn device_addresses(&self) -> &[SocketAddr] {
        &self.device_addresses
    }

    /// Each device's hostname (`/system/state/hostname`), in device order.
    pub fn hostnames(&self) -> &[String] {
        &self.hostnames
    }

    /// Where `GET /stats` is served, if `--stats-listen` was given.
    pub fn stats_address(&self) -> Option<SocketAddr> {
        self.stats_address
    }

    /// The certificate the devices present (PEM), when TLS is on; clients trust it as root.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// The same data `/stats` serves, without HTTP.
    pub fn stats(&self) -> StatsReport {
        self.registry.report()
    }

    /// Waits until a server fails (returns its error) or `shutdown` is cancelled.
    async fn serve_until(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                finished = self.tasks.join_next() => match finished {
                    Some(Ok(Ok(()))) => continue,
                    Some(Ok(Err(error))) => return Err(error),
                    Some(Err(join_error)) => return Err(anyhow::anyhow!("a server task failed: {join_error}")),
                    None => return Ok(()),
                },
            }
        }
    }

    /// Stops every server and stream, waiting up to a few seconds for them to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(STOP_GRACE, async {
            while let Some(finished) = self.tasks.join_next().await {
                if let Ok(Err(error)) = finished {
                    warn!("while stopping: {error:#}");
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!("servers did not stop within {STOP_GRACE:?}; aborting them");
            self.tasks.abort_all();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs the simulator until `shutdown` is cancelled (the `gnomon simulator` command).
pub async fn run(args: SimulatorArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut simulator = Simulator::start(args).await?;
    for (hostname, address) in simulator.hostnames.iter().zip(&simulator.device_addresses) {
        info!(%hostname, %address, "device listening");
    }
    if let Some(address) = simulator.stats_address {
        info!(%address, "stats endpoint listening on /stats");
    }
    let outcome = simulator.serve_until(&shutdown).await;
    simulator.stop().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_get_consecutive_ports_unless_port_zero() {
        let first: SocketAddr = "127.0.0.1:57400".parse().unwrap();
        assert_eq!(
            device_listen_address(first, 2).unwrap(),
            "127.0.0.1:57402".parse::<SocketAddr>().unwrap()
        );
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(device_listen_address(any, 5).unwrap(), any);
        let high: SocketAddr = "127.0.0.1:65535".parse().unwrap();
        assert!(device_listen_address(high, 1).is_err());
    }

    #[tokio::test]
    async fn a_port_search_skips_taken_ports_and_goes_upward() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let first = taken.local_addr().unwrap().port();
        let mut ports = FreePorts {
            ip: "127.0.0.1".parse().unwrap(),
            next: first,
        };
        let a = ports.bind(0).await.unwrap().local_addr().unwrap().port();
        let b = ports.bind(1).await.unwrap().local_addr().unwrap().port();
        assert!(first < a && a < b, "taken {first}, devices on {a} and {b}");
    }

    #[tokio::test]
    async fn a_port_search_with_a_fixed_first_port_is_refused_by_name() {
        let args = SimulatorArgs {
            search_from: Some(20_000),
            ..SimulatorArgs::default()
        };
        let error = Simulator::start(args).await.err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("--search-from")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_port_search_past_the_last_port_says_so() {
        let mut ports = FreePorts {
            ip: "127.0.0.1".parse().unwrap(),
            next: u16::MAX,
        };
        let error = ports.bind(7).await.err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("device 7")),
            "{error:?}"
        );
    }
}
