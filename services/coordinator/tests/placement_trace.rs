//! One placement is one trace: the leader's `placement` span, the collector's claim of the
//! target (lock acquire, target start, subscription), the first message it publishes on the
//! bus and the exporter's consumption of it all carry the same trace id, joined through the
//! W3C context of the assignment HTTP calls and the bus `traceparent` header. Everything
//! runs in this process: memory coordination, an in-process bus, a simulated device, a real
//! collector, an exporter and the leader, with spans recorded by the OpenTelemetry SDK's
//! in-memory exporter.

use futures::StreamExt;
use gnomon_bus::{Bus, MemoryBus};
use gnomon_collector::cluster_member::{ClusterMember, MemberAddress};
use gnomon_collector::{clustered_api_routes, CollectorDeps, CollectorHandle};
use gnomon_config::{load_config_with_env, ConfigFormat, GnomonConfig};
use gnomon_coordination::{Coordination, LockerConfig, MemoryCoordination, MemoryStore};
use gnomon_coordinator::{spawn, CoordinatorSettings, TargetStore};
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_simulator::{Simulator, SimulatorArgs};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const CLUSTER: &str = "c1";
const TARGET: &str = "dev1";

/// Records every INFO span of this process in memory and turns on W3C propagation.
fn record_spans() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("placement-trace-test")))
        .init();
    gnomon_telemetry::enable_trace_propagation();
    (provider, exporter)
}

fn memory_coordination(store: &MemoryStore, instance: &str) -> Arc<MemoryCoordination> {
    let cfg: LockerConfig = serde_json::from_value(serde_json::json!({
        "type": "memory", "session-ttl": "2s", "delay": "200ms", "retry-timer": "100ms"
    }))
    .unwrap();
    Arc::new(MemoryCoordination::with_store(
        store.clone(),
        &cfg,
        instance,
    ))
}

/// One gnmic-style config for both sides: the collector publishes on the bus (and skips
/// the Prometheus output), the exporter reads the bus into the Prometheus output.
fn config() -> GnomonConfig {
    load_config_with_env(
        r#"
insecure: true
subscriptions:
  counters:
    paths: ["/interfaces/interface/state/counters"]
    stream-mode: sample
    sample-interval: 200ms
outputs:
  bus:
    type: nats
    subject-prefix: telemetry
    format: proto
  prom:
    type: prometheus
    listen: 127.0.0.1:0
inputs:
  in:
    type: nats
    subject: telemetry.>
    format: proto
    outputs: [prom]
"#,
        ConfigFormat::Yaml,
        &[],
    )
    .unwrap()
}

/// A clustered collector serving its API on a random loopback port, registered as a member.
async fn start_collector(
    store: &MemoryStore,
    bus: Arc<MemoryBus>,
) -> (CollectorHandle, ClusterMember, tokio::task::JoinHandle<()>) {
    let config = config();
    let collector = CollectorHandle::with_deps(
        config,
        CollectorDeps {
            bus: Some(bus),
            ..Default::default()
        },
    )
    .unwrap();
    let coordination = memory_coordination(store, "collector-1");
    let member = ClusterMember::new(
        collector.clone(),
        coordination.clone(),
        CLUSTER,
        "collector-1",
    );
    let targets = TargetStore::new(coordination.clone(), CLUSTER);
    let subscriptions = gnomon_coordination::SubscriptionStore::new(coordination, CLUSTER);
    let router = clustered_api_routes(collector.clone(), member.clone(), targets, subscriptions)
        .fallback(gnomon_api_server::not_found);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    member
        .register(&MemberAddress {
            address: "127.0.0.1".into(),
            port,
            protocol: "http",
            tags: Vec::new(),
        })
        .await
        .unwrap();
    (collector, member, server)
}

fn settings() -> CoordinatorSettings {
    let mut s = CoordinatorSettings::new(CLUSTER, "coordinator-a");
    s.leader_wait_timer = Duration::from_millis(100);
    s.targets_watch_timer = Duration::from_secs(2);
    s.target_assignment_timeout = Duration::from_secs(5);
    s.member_client.timeout = Duration::from_secs(2);
    s
}

/// Whether `span` has attribute `key` = `value` (`target` also names the code module).
fn has_attribute(span: &SpanData, key: &str, value: &str) -> bool {
    span.attributes
        .iter()
        .any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
}

/// Whether following parent links from `span` reaches the span `ancestor`.
fn descends_from(span: &SpanData, ancestor: SpanId, by_id: &HashMap<SpanId, &SpanData>) -> bool {
    let mut parent = span.parent_span_id;
    for _ in 0..64 {
        if parent == ancestor {
            return true;
        }
        match by_id.get(&parent) {
            Some(next) => parent = next.parent_span_id,
            None => return false,
        }
    }
    false
}

/// The trace id in a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id_of(traceparent: &str) -> TraceId {
    let hex = traceparent.split('-').nth(1).unwrap_or_default();
    TraceId::from_hex(hex).unwrap_or(TraceId::INVALID)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_placement_is_one_trace_across_coordinator_and_collector() {
    let (provider, exporter) = record_spans();
    let sim = Simulator::start(SimulatorArgs::on_free_ports(1))
        .await
        .unwrap();
    let store = MemoryStore::new();
    let bus = Arc::new(MemoryBus::new());
    let mut published = bus.subscribe("telemetry.>", None).await.unwrap();
    let (collector, member, server) = start_collector(&store, bus.clone()).await;
    let exporter_stop = CancellationToken::new();
    let _exporter = Exporter::start(
        ExporterSettings::from_config(&config()).unwrap(),
        ExporterDeps {
            bus: Some(bus.clone()),
            coordination: None,
        },
        exporter_stop.clone(),
    )
    .await
    .unwrap();

    let coordination: Arc<dyn Coordination> = memory_coordination(&store, "coordinator-a");
    TargetStore::new(coordination.clone(), CLUSTER)
        .put(&serde_json::json!({ "name": TARGET, "address": sim.device_addresses()[0].to_string() }))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let (_handle, _task) = spawn(settings(), coordination, shutdown.clone()).unwrap();

    // The first message of the placed target's stream carries the trace context.
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let message = published.next().await.expect("bus subscription open");
            if message.headers.target.as_deref() == Some(TARGET)
                && message.headers.subscription.as_deref() == Some("counters")
            {
                return message;
            }
        }
    })
    .await
    .expect("the placed target publishes within 20 s");
    let traceparent = first
        .headers
        .traceparent
        .clone()
        .expect("the stream's first message carries a traceparent");

    // Closing the claim ends its spans (they are exported when they end).
    // The exporter consumes that first message in a span continuing the publisher's.
    let consumed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let done = exporter
                .get_finished_spans()
                .unwrap()
                .iter()
                .any(|s| s.name == "bus_consume");
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(consumed.is_ok(), "the exporter records a bus_consume span");

    shutdown.cancel();
    exporter_stop.cancel();
    member.shutdown().await;
    collector.shutdown().await;
    server.abort();
    sim.stop().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    let named =
        |name: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == name).collect() };

    let claim = *named("target_claim")
        .first()
        .unwrap_or_else(|| panic!("no target_claim span among {:?}", names(&spans)));
    let trace = claim.span_context.trace_id();
    let placement = named("placement")
        .into_iter()
        .find(|p| p.span_context.trace_id() == trace)
        .unwrap_or_else(|| {
            panic!(
                "no placement span shares the claim's trace: {:?}",
                names(&spans)
            )
        });
    assert!(has_attribute(placement, "target", TARGET), "{placement:?}");
    assert!(has_attribute(placement, "member", "collector-1"));
    assert!(
        descends_from(claim, placement.span_context.span_id(), &by_id),
        "target_claim's parents reach the placement span"
    );

    let acquire = named("acquire_blocking")
        .into_iter()
        .find(|s| descends_from(s, claim.span_context.span_id(), &by_id))
        .expect("the lock acquire is a child of the claim");
    assert_eq!(acquire.span_context.trace_id(), trace);

    let subscribe = named("subscribe")
        .into_iter()
        .find(|s| descends_from(s, claim.span_context.span_id(), &by_id))
        .expect("the subscription is part of the claim");
    assert_eq!(subscribe.span_context.trace_id(), trace);

    let publish = named("bus_publish")
        .into_iter()
        .find(|s| descends_from(s, subscribe.span_context.span_id(), &by_id))
        .expect("the first publish continues the subscription's trace");
    assert_eq!(publish.span_context.trace_id(), trace);
    assert_eq!(trace_id_of(&traceparent), trace);

    let consume = named("bus_consume")
        .into_iter()
        .find(|s| s.parent_span_id == publish.span_context.span_id())
        .expect("the exporter's consume span is a child of the publish span");
    assert_eq!(consume.span_context.trace_id(), trace);
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}
