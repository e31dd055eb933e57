//! `simulator_updates_per_s`: how many updates per second the simulator's load mode
//! delivers to real gNMI clients (tonic, full protobuf decoding) in the same process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gnomon_gnmi::proto::gnmi::g_nmi_client::GNmiClient;
use gnomon_gnmi::proto::gnmi::{
    subscribe_request, subscribe_response, subscription_list, Encoding, Path, PathElem,
    SubscribeRequest, Subscription, SubscriptionList, SubscriptionMode,
};
use gnomon_simulator::{Simulator, SimulatorArgs};

const DEVICES: u32 = 4;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(6);

fn elem(name: &str) -> PathElem {
    PathElem {
        name: name.to_string(),
        key: Default::default(),
    }
}

/// STREAM/SAMPLE on every interface counter of one device, PROTO encoded.
fn counters_subscription() -> SubscribeRequest {
    let path = Path {
        elem: vec![elem("interface"), elem("state"), elem("counters")],
        ..Default::default()
    };
    SubscribeRequest {
        request: Some(subscribe_request::Request::Subscribe(SubscriptionList {
            prefix: Some(Path {
                elem: vec![elem("interfaces")],
                ..Default::default()
            }),
            subscription: vec![Subscription {
                path: Some(path),
                mode: SubscriptionMode::Sample as i32,
                sample_interval: 1_000_000_000,
                ..Default::default()
            }],
            mode: subscription_list::Mode::Stream as i32,
            encoding: Encoding::Proto as i32,
            ..Default::default()
        })),
        extension: Vec::new(),
    }
}

/// Subscribes to one device and adds every received update to `counted`.
async fn consume(address: String, counted: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut client = GNmiClient::connect(format!("http://{address}"))
        .await
        .with_context(|| format!("connecting to {address}"))?
        .max_decoding_message_size(64 << 20);
    let requests = futures::stream::iter([counters_subscription()]);
    let mut responses = client
        .subscribe(requests)
        .await
        .with_context(|| format!("subscribing to {address}"))?
        .into_inner();
    while let Some(response) = responses.message().await? {
        if let Some(subscribe_response::Response::Update(notification)) = response.response {
            counted.fetch_add(notification.update.len() as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

async fn measure() -> anyhow::Result<f64> {
    let args = SimulatorArgs {
        load: true,
        updates_per_notification: 16,
        interfaces: 32,
        ..SimulatorArgs::on_free_ports(DEVICES)
    };
    let simulator = Simulator::start(args).await?;
    let counted = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for address in simulator.device_addresses() {
        clients.push(tokio::spawn(consume(
            address.to_string(),
            Arc::clone(&counted),
        )));
    }
    tokio::time::sleep(WARM_UP).await;
    for client in &clients {
        if client.is_finished() {
            anyhow::bail!("a client stopped during warm-up; is the simulator serving?");
        }
    }
    let before = counted.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let received = counted.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed().as_secs_f64();
    for client in &clients {
        client.abort();
    }
    simulator.stop().await;
    Ok(received as f64 / elapsed)
}

/// Runs the load-mode simulator and tonic clients on one 2-thread runtime for ~7 s.
pub fn updates_per_s() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rate = runtime.block_on(measure())?;
    crate::report("simulator_updates_per_s", rate.round(), "updates/s");
    Ok(())
}
