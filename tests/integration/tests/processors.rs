//! Issue 15: gnmic's event processors where gnmic applies them.
//!
//! * Wiring (in process, the exporter's own start path over an in-process bus): the input's
//!   processors and the Prometheus output's change the served series; an output without
//!   processors serves what it served before.
//! * A bad `processors` section stops the start with one line naming the processor, the key,
//!   the value and the lists using it (unknown type, unknown name in a list, bad regex, bad
//!   jq, bad Starlark), in the library and from the real binary.
//! * End to end on real processes (acceptance): simulator → `gnomon collector` (nats output,
//!   event format, with processors) → nats-server → `gnomon exporter` (input and Prometheus
//!   output with processors) → `/metrics` scraped by a real Prometheus; the series carry
//!   exactly the metric names and labels gnmic produces for the same configuration (worked
//!   out by hand below), and promtool accepts the scrape.

use gnomon_bus::{Bus, BusMessage, MemoryBus, MessageHeaders};
use gnomon_config::{load_config_with_env, ConfigFormat, GnomonConfig};
use gnomon_exporter::{Exporter, ExporterDeps, ExporterSettings};
use gnomon_testkit::{
    free_port, gnomon_binary, spawn_gnomon, wait_for_tcp, ChildProcess, NatsServer,
};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn config(yaml: &str) -> GnomonConfig {
    load_config_with_env(yaml, ConfigFormat::Yaml, &[]).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The exporter's start error for `yaml` (settings first, then the start itself).
async fn start_error(yaml: &str) -> String {
    let settings = match ExporterSettings::from_config(&config(yaml)) {
        Ok(settings) => settings,
        Err(e) => return format!("{e:#}"),
    };
    match Exporter::start(settings, ExporterDeps::default(), CancellationToken::new()).await {
        Ok(exporter) => {
            exporter.stop().await;
            panic!("started with a bad processor configuration:\n{yaml}")
        }
        Err(e) => format!("{e:#}"),
    }
}

/// An event-format message as the collector publishes it.
fn message(payload: &str) -> BusMessage {
    BusMessage {
        subject: "telemetry.r1.port-stats".into(),
        headers: MessageHeaders {
            target: Some("r1".into()),
            subscription: Some("port-stats".into()),
            fencing_token: Some(1),
            traceparent: None,
        },
        payload: payload.as_bytes().to_vec().into(),
    }
}

const WIRING: &str = r#"
processors:
  short-names:
    event-strings:
      value-names: [".*"]
      transforms: [{path-base: {apply-on: name}}]
  site:
    event-add-tag: {value-names: [".*"], add: {site: lab}}
outputs:
  with-site: {type: prometheus, listen: "127.0.0.1:0", event-processors: [site]}
  plain: {type: prometheus, listen: "127.0.0.1:0"}
inputs:
  processed: {type: nats, subject: "telemetry.>", event-processors: [short-names], outputs: [with-site]}
  raw: {type: nats, subject: "telemetry.>", queue: raw, outputs: [plain]}
"#;

const PAYLOAD: &str = r#"[{"name":"port-stats","timestamp":1700000000000000000,"tags":{"interface_name":"ethernet-1/1","source":"r1","subscription-name":"port-stats"},"values":{"/interfaces/interface/state/counters/in-octets":"42"}}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_and_output_processors_change_the_served_series_and_others_are_unchanged() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let settings = ExporterSettings::from_config(&config(WIRING)).unwrap();
    let exporter = Exporter::start(
        settings,
        ExporterDeps {
            coordination: None,
            bus: Some(bus.clone()),
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    bus.publish(message(PAYLOAD)).await.unwrap();
    let processed = exporter.output("with-site").unwrap();
    let plain = exporter.output("plain").unwrap();
    let started = Instant::now();
    while processed.series_count() == 0 || plain.series_count() == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no series");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = |o: &gnomon_exporter::PrometheusOutput| String::from_utf8(o.render()).unwrap();
    // The input shortened the name (event-strings), the output added a label (add-tag).
    assert!(
        text(&processed).contains(
            "\nin_octets{interface_name=\"ethernet-1/1\",site=\"lab\",source=\"r1\",subscription_name=\"port-stats\"} 42\n"
        ),
        "{}",
        text(&processed)
    );
    // An input and output without processors serve exactly what they did before.
    assert_eq!(
        text(&plain),
        "# HELP interfaces_interface_state_counters_in_octets gNMIc generated metric\n\
         # TYPE interfaces_interface_state_counters_in_octets untyped\n\
         interfaces_interface_state_counters_in_octets{interface_name=\"ethernet-1/1\",source=\"r1\",subscription_name=\"port-stats\"} 42\n"
    );
    exporter.stop().await;
}

#[tokio::test]
async fn bad_processor_configurations_stop_the_start_naming_the_processor() {
    let prom =
        "outputs:\n  prom: {type: prometheus, listen: \"127.0.0.1:0\", event-processors: [p]}\n";
    for (processors, wanted) in [
        (
            "processors:\n  p: {event-frobnicate: {}}\n",
            &[
                "processors.p",
                "unknown processor type \"event-frobnicate\"",
                "outputs.prom.event-processors",
            ][..],
        ),
        (
            "processors:\n  q: {event-drop: {tags: [x]}}\n",
            &[
                "event processor \"p\" is not defined",
                "outputs.prom.event-processors",
            ],
        ),
        (
            "processors:\n  p: {event-drop: {value-names: [\"(unclosed\"]}}\n",
            &[
                "processors.p.event-drop.value-names[0]",
                "\"(unclosed\"",
                "outputs.prom.event-processors",
            ],
        ),
        (
            "processors:\n  p: {event-drop: {condition: '.tags[ == 1'}}\n",
            &[
                "processors.p.event-drop.condition",
                "\".tags[ == 1\"",
                "outputs.prom.event-processors",
            ],
        ),
        (
            "processors:\n  p: {event-starlark: {source: \"def apply(*events):\\n  return events +\\n\"}}\n",
            &[
                "processors.p.event-starlark.source",
                "def apply",
                "outputs.prom.event-processors",
            ],
        ),
        (
            "processors:\n  p: {event-plugin: {path: /x}}\n",
            &["processors.p", "event-plugin is not supported"],
        ),
    ] {
        let yaml = format!("{processors}{prom}");
        let error = start_error(&yaml).await;
        assert!(!error.contains('\n'), "one line: {error}");
        for part in wanted {
            assert!(error.contains(part), "{part:?} missing from: {error}");
        }
    }
    // An input's list is named too.
    let error = start_error(
        "processors:\n  p: {event-drop: {}}\noutputs:\n  prom: {type: prometheus, listen: \"127.0.0.1:0\"}\ninputs:\n  in: {type: nats, event-processors: [nope], outputs: [prom]}\n",
    )
    .await;
    assert!(
        error.contains("\"nope\"") && error.contains("inputs.in.event-processors"),
        "{error}"
    );
    // The collector's outputs refuse them too.
    let collector = config(
        "processors:\n  p: {event-drop: {}}\noutputs:\n  n: {type: nats, event-processors: [missing]}\n",
    );
    let error = gnomon_collector::outputs::Outputs::start_with_processors(
        &collector.outputs,
        &collector.processors,
        None,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        error.contains("\"missing\"") && error.contains("outputs.n.event-processors"),
        "{error}"
    );
}

#[test]
fn the_binary_stops_at_start_on_a_bad_processor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "processors:\n  p: {event-drop: {condition: '.tags[ == 1'}}\noutputs:\n  prom: {type: prometheus, listen: \"127.0.0.1:0\", event-processors: [p]}\ninputs:\n  in: {type: nats, address: \"127.0.0.1:1\", outputs: [prom]}\n",
    )
    .unwrap();
    let mut cmd = Command::new(gnomon_binary().unwrap());
    cmd.args(["exporter", "--config"]).arg(&path);
    let mut process = ChildProcess::spawn("bad-exporter", cmd, dir.path()).unwrap();
    let started = Instant::now();
    while process.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still running: {}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = process.log();
    let line = log
        .lines()
        .find(|l| l.contains("processors.p.event-drop.condition"))
        .unwrap_or_else(|| panic!("no error naming the processor: {log}"));
    assert!(
        line.contains(".tags[ == 1") && line.contains("outputs.prom.event-processors"),
        "{line}"
    );
}

/// The collector's processors (nats output, event format: one notification per batch).
const COLLECTOR_PROCESSORS: &str = r#"
processors:
  short-names:
    event-strings:
      value-names: [".*"]
      transforms: [{path-base: {apply-on: name}}]
  no-discards:
    event-delete: {value-names: ["-discards$"]}
  no-subscription-tag:
    event-delete: {tag-names: ["^subscription-name$"]}
  status-label:
    event-value-tag: {value-name: oper-status, consume: true}
  eth2-out-pkts:
    event-drop: {condition: '.tags.interface_name == "Ethernet2" and (.values | has("out-pkts"))'}
  physical-int:
    event-convert: {value-names: ["^physical$"], type: int}
  physical-label:
    event-to-tag: {value-names: ["^physical$"], keep: true}
  site:
    event-add-tag: {value-names: [".*"], add: {site: lab}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_to_prometheus_with_gnmic_processors_gives_gnmic_names_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start().unwrap();
    let http = gnomon_testkit::http_client_builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();

    let sim_port = free_port();
    let mut cmd = Command::new(gnomon_binary().unwrap());
    cmd.args(["simulator", "--listen"])
        .arg(format!("127.0.0.1:{sim_port}"))
        .args(["--count", "1", "--interfaces", "2", "--update-rate", "1s"])
        .args(["--flap-period", "0s"]);
    let _simulator = ChildProcess::spawn("simulator", cmd, dir.path()).unwrap();
    wait_for_tcp(&format!("127.0.0.1:{sim_port}"), Duration::from_secs(20)).unwrap();

    // Every member of a cluster reads the same file, so the same definitions apply
    // everywhere; here the collector and the exporter are separate processes.
    let collector = format!(
        "insecure: true\nencoding: proto\ntargets:\n  dev0: {{address: \"127.0.0.1:{sim_port}\"}}\n\
         subscriptions:\n  ifaces: {{paths: [/interfaces/interface/state], stream-mode: sample, sample-interval: 1s}}\n\
         \x20 memory: {{paths: [/system/memory/state], stream-mode: sample, sample-interval: 1s}}\n\
         outputs:\n  nats-out:\n    type: nats\n    address: \"{nats}\"\n    subject-prefix: telemetry\n    format: event\n\
         \x20   event-processors: [short-names, no-discards, no-subscription-tag, status-label]\n\
         {COLLECTOR_PROCESSORS}",
        nats = nats.address()
    );
    let _collector = spawn_gnomon(dir.path(), "collector", "collector", &collector).unwrap();

    let listen = format!("127.0.0.1:{}", free_port());
    let exporter = format!(
        "outputs:\n  prom:\n    type: prometheus\n    listen: \"{listen}\"\n    metric-prefix: gnmic\n    append-subscription-name: true\n\
         \x20   event-processors: [site]\n\
         inputs:\n  nats-in:\n    type: nats\n    address: \"{nats}\"\n    subject: \"telemetry.>\"\n    format: event\n    outputs: [prom]\n\
         \x20   event-processors: [eth2-out-pkts, physical-int, physical-label]\n\
         {COLLECTOR_PROCESSORS}",
        nats = nats.address()
    );
    let exporter_process = spawn_gnomon(dir.path(), "exporter", "exporter", &exporter).unwrap();
    wait_for_tcp(&listen, Duration::from_secs(20)).unwrap();

    let prometheus = gnomon_testkit::PrometheusServer::start(&format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: gnomon\n    static_configs: [{{targets: [\"{listen}\"]}}]\n"
    ))
    .unwrap();

    // What gnmic produces for this configuration, worked out by hand from its docs:
    // * names: `metric-prefix` + `_` + subscription + `_` + the value name, which
    //   event-strings path-base shortened to its last element (`/…/counters/in-octets` →
    //   `in-octets` → `in_octets`);
    // * event-delete removed the two `*-discards` values (no series) and the
    //   `subscription-name` tag (no `subscription_name` label);
    // * event-value-tag moved each interface's `oper-status` onto every event of that
    //   interface in the notification (label `oper_status`) and consumed the value;
    // * event-drop's jq condition dropped Ethernet2's `out-pkts` only;
    // * event-convert made `physical` (a float64 after gnmic's input decoded the JSON) an
    //   int again, so event-to-tag renders it `4294967296` (not Go's `4.294967296e+09`),
    //   and keeps the value;
    // * event-add-tag on the Prometheus output added `site="lab"` to every event;
    // * strings (`name`, `admin-status`) are not samples.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for interface in ["Ethernet1", "Ethernet2"] {
        for counter in [
            "in_octets",
            "out_octets",
            "in_pkts",
            "out_pkts",
            "in_errors",
            "out_errors",
        ] {
            if interface == "Ethernet2" && counter == "out_pkts" {
                continue;
            }
            expected.insert(format!(
                "gnmic_ifaces_{counter}{{interface_name=\"{interface}\",oper_status=\"UP\",site=\"lab\",source=\"dev0\"}}"
            ));
        }
    }
    expected.insert(
        "gnmic_memory_physical{physical=\"4294967296\",site=\"lab\",source=\"dev0\"}".into(),
    );
    expected.insert("gnmic_memory_used{site=\"lab\",source=\"dev0\"}".into());

    let series_of = |body: &str| -> BTreeSet<String> {
        body.lines()
            .filter(|l| l.starts_with("gnmic_"))
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
            .collect()
    };
    let started = Instant::now();
    let scrape = loop {
        let body = match http.get(format!("http://{listen}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // The collector's target status is gnomon's own, travels apart from the data and
        // passes the processors untouched: wait for it too, it may come after the data.
        let target_up = body.contains("gnomon_target_up{target=\"dev0\"} 1");
        if series_of(&body) == expected && target_up {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "served series differ from gnmic's (or no gnomon_target_up 1 for dev0):\n got: {:#?}\nwant: {expected:#?}\n{body}",
            series_of(&body)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        scrape.contains("\ngnmic_memory_physical{physical=\"4294967296\",site=\"lab\",source=\"dev0\"} 4294967296\n"),
        "{scrape}"
    );
    gnomon_testkit::promtool_check(&scrape).unwrap();

    // A real Prometheus scrapes the same series with the same labels.
    let started = Instant::now();
    loop {
        let url = format!(
            "{}/api/v1/series?match[]={{__name__=~\"gnmic_.%2B\"}}",
            prometheus.url()
        );
        let got: Option<BTreeSet<String>> = async {
            let body: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            Some(
                body["data"]
                    .as_array()?
                    .iter()
                    .filter_map(|s| {
                        let labels = s.as_object()?;
                        let name = labels.get("__name__")?.as_str()?;
                        let rest: Vec<String> = labels
                            .iter()
                            .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        Some(format!("{name}{{{}}}", rest.join(",")))
                    })
                    .collect(),
            )
        }
        .await;
        if got.as_ref() == Some(&expected) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Prometheus series differ:\n got: {got:#?}\nwant: {expected:#?}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // SIGHUP with an edited processor definition: the running exporter rebuilds its chains
    // (no restart) and the new label value appears on the next samples.
    let edited = exporter.replace("add: {site: lab}", "add: {site: lab2}");
    assert_ne!(edited, exporter);
    std::fs::write(dir.path().join("exporter.yaml"), edited).unwrap();
    exporter_process.signal(SIGHUP);
    let started = Instant::now();
    loop {
        let body = match http.get(format!("http://{listen}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains("site=\"lab2\",source=\"dev0\"") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no series with the reloaded processor:\n{body}\n{}",
            exporter_process.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const SIGHUP: i32 = 1;
