//! The exporter's JetStream input against a real nats-server with JetStream: the fencing
//! check is the core-NATS one (same headers, same judge), and messages are acknowledged
//! once processed (the durable consumer has nothing pending afterwards).

use gnomon_bus::jetstream::{
    JetStreamPublisher, PublisherOptions, StreamRetention, StreamSetup, StreamSpec, StreamStorage,
};
use gnomon_bus::{BusMessage, MessageHeaders, NatsBus, NatsOptions, Publish};
use gnomon_config::jetstream::{DeliverPolicy, InputSubjectFormat, JetStreamConsume};
use gnomon_config::nats_input::NatsInputConfig;
use gnomon_config::prometheus_output::PrometheusOutputConfig;
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_testkit::{eventually, NatsServer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn event_json(source: &str, interface: &str, octets: u64) -> String {
    format!(
        r#"[{{"name":"port-stats","timestamp":1700000000000000000,"tags":{{"interface_name":"{interface}","source":"{source}","subscription-name":"port-stats"}},"values":{{"/interfaces/interface/state/counters/in-octets":"{octets}"}}}}]"#
    )
}

async fn scrape(addr: SocketAddr) -> String {
    gnomon_testkit::http_get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fencing_tokens_are_refused_on_the_jetstream_path_too() {
    let nats = NatsServer::start_jetstream().unwrap();
    let bus = NatsBus::connect(&NatsOptions::new(nats.address()))
        .await
        .unwrap();
    let publisher = JetStreamPublisher::new(
        &bus,
        PublisherOptions {
            stream: "telemetry".into(),
            setup: StreamSetup::Create(StreamSpec {
                description: String::new(),
                subjects: vec!["telemetry.>".into()],
                storage: StreamStorage::Memory,
                retention: StreamRetention::Limits,
                max_msgs: 0,
                max_bytes: 0,
                max_age: Duration::ZERO,
                max_msg_size: 0,
            }),
            window: 16,
            retry_capacity: 100,
            ack_timeout: Duration::from_secs(5),
            retry_wait: Duration::from_millis(100),
            id_prefix: "fencing".into(),
        },
        metrics::Counter::noop(),
    )
    .await
    .unwrap();
    let send = |token: u64, payload: String| {
        let publisher = &publisher;
        async move {
            publisher
                .send(BusMessage {
                    subject: "telemetry.r1.port-stats".into(),
                    headers: MessageHeaders {
                        target: Some("r1".into()),
                        subscription: Some("port-stats".into()),
                        fencing_token: Some(token),
                        traceparent: None,
                    },
                    payload: payload.into(),
                })
                .await
                .unwrap();
        }
    };
    send(5, event_json("r1", "e1", 10)).await;
    // A collector that lost r1 (older token) must not overwrite the new owner's data.
    send(4, event_json("r1", "e1", 999)).await;
    send(4, event_json("r1", "e2", 999)).await;
    send(6, event_json("r1", "e1", 11)).await;
    publisher.settle().await.unwrap();

    let mut input = NatsInputConfig {
        address: nats.address(),
        ..Default::default()
    };
    input.jetstream = Some(JetStreamConsume {
        stream: "telemetry".into(),
        subjects: vec!["telemetry.>".into()],
        deliver_policy: DeliverPolicy::All,
        subject_format: InputSubjectFormat::Static,
        fetch_batch_size: 2,
        max_ack_pending: 1000,
    });
    let mut settings = ExporterSettings {
        instance_name: "e1".into(),
        ..Default::default()
    };
    settings.inputs.insert("in".into(), input);
    settings.outputs.insert(
        "prom".into(),
        serde_yaml::from_str::<PrometheusOutputConfig>("listen: 127.0.0.1:0").unwrap(),
    );
    let exporter = Exporter::start(settings, ExporterDeps::default(), CancellationToken::new())
        .await
        .unwrap();
    let addr = exporter.listen_addr("prom").unwrap();
    let stats = exporter.stats();
    let text = eventually(
        "the owner's update",
        Duration::from_secs(20),
        || async move {
            let text = scrape(addr).await;
            text.contains("} 11\n").then_some(text)
        },
    )
    .await
    .unwrap();
    assert!(!text.contains("999"), "{text}");
    assert!(!text.contains("interface_name=\"e2\""), "{text}");
    assert_eq!(stats.stale_dropped_total(), 2);

    // Every message was acknowledged once processed: the durable consumer has nothing
    // pending (its name is the input's default durable name, `<instance>-<input>`).
    let context = async_nats::jetstream::new(bus.client().clone());
    let stream = context.get_stream("telemetry").await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("e1-in").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.unwrap().clone();
        if info.num_ack_pending == 0 && info.num_pending == 0 && info.delivered.stream_sequence == 4
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "messages left unacknowledged: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exporter.stop().await;
}
