//! A gnmic lab-style file (nats output + nats input + prometheus output with use-lock in one
//! file) gives the exporter its settings; bad values are reported by key.

use gnomon_config::nats_input::NatsInputFormat;
use gnomon_config::{load_config_from_str, ConfigFormat};
use gnomon_coordination::LockerType;
use gnomon_exporter::ExporterSettings;
use std::time::Duration;

const LAB: &str = r#"
username: admin
password: admin
insecure: true
clustering:
  cluster-name: cluster1
  instance-name: gnmic1
  locker:
    type: consul
    address: consul-agent:8500
outputs:
  nats-output:
    type: nats
    address: nats:4222
    subject: telemetry
  prom-output:
    type: prometheus
    listen: ":9804"
    metric-prefix: gnmic
    expiration: -1s
    service-registration:
      address: consul-agent:8500
      use-lock: true
      password: registration-secret
inputs:
  nats-input:
    type: nats
    address: nats:4222
    subject: telemetry
    format: event
    outputs:
      - prom-output
"#;

#[test]
fn lab_file_configures_the_exporter() {
    let config = load_config_from_str(LAB, ConfigFormat::Yaml).unwrap();
    let settings = ExporterSettings::from_config(&config).unwrap();
    assert_eq!(settings.instance_name, "gnmic1");
    assert_eq!(settings.cluster_name, "cluster1");
    assert_eq!(settings.outputs.keys().collect::<Vec<_>>(), ["prom-output"]);
    let output = &settings.outputs["prom-output"];
    assert_eq!(output.listen_socket_address(), "0.0.0.0:9804");
    assert_eq!(output.effective_expiration(), None);
    assert_eq!(output.metric_prefix, "gnmic");
    let registration = output.service_registration.as_ref().unwrap();
    assert!(registration.use_lock);
    assert_eq!(
        registration.effective_name("prom-output"),
        "prometheus-prom-output"
    );
    let input = &settings.inputs["nats-input"];
    assert_eq!(input.format, NatsInputFormat::Event);
    assert!(input.feeds("prom-output") && !input.feeds("nats-output"));
    // Default queue is per instance: every exporter of the cluster gets every message.
    assert_eq!(
        input.effective_queue("nats-input", &settings.instance_name),
        "gnmic1-nats-input-nats-sub"
    );
    assert_eq!(
        settings.locker.as_ref().map(|l| l.kind),
        Some(LockerType::Consul)
    );
    assert_eq!(
        registration.effective_check_interval(),
        Duration::from_secs(5)
    );
    // Secrets stay out of debug output.
    assert!(!format!("{settings:?}").contains("registration-secret"));
}

#[test]
fn invalid_values_name_their_key() {
    let bad_listen = LAB.replace("listen: \":9804\"", "listen: \"nowhere\"");
    let error = match load_config_from_str(&bad_listen, ConfigFormat::Yaml) {
        Ok(config) => ExporterSettings::from_config(&config)
            .unwrap_err()
            .to_string(),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("listen"), "{error}");
    let bad_format = LAB.replace("format: event", "format: protojson");
    let error = match load_config_from_str(&bad_format, ConfigFormat::Yaml) {
        Ok(config) => ExporterSettings::from_config(&config)
            .unwrap_err()
            .to_string(),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("format"), "{error}");
}
