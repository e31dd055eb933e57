//! The compose stacks: Debian's docker-compose accepts every file, and Prometheus, Consul
//! and the gnomon configs agree on service names and ports.

use gnomon_config::{load_config, OutputConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose")
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(compose_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("docker-compose") && n.ends_with(".yml"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn docker_compose_accepts_every_compose_file() {
    let files = compose_files();
    assert!(
        files.len() >= 2,
        "expected the reference and the independent stack: {files:?}"
    );
    for file in files {
        let output = Command::new("docker-compose")
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"])
            .output()
            .expect("docker-compose is installed by scripts/setup");
        assert!(
            output.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn prometheus_and_gnomon_configs_name_the_same_services_and_ports() {
    let prometheus = yaml(&compose_dir().join("prometheus/prometheus.yml"));
    let mut sd_services = Vec::new();
    let mut sd_servers = Vec::new();
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        for sd in job["consul_sd_configs"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
        {
            sd_servers.push(sd["server"].as_str().unwrap().to_string());
            for service in sd["services"].as_sequence().unwrap() {
                sd_services.push(service.as_str().unwrap().to_string());
            }
        }
    }
    for file in [
        "gnomon.yaml",
        "exporter.yaml",
        "collector.yaml",
        "coordinator.yaml",
    ] {
        let config = load_config(Some(&compose_dir().join("gnomon").join(file)))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let clustering = config
            .clustering
            .as_ref()
            .unwrap_or_else(|| panic!("{file}: no clustering"));
        let locker_address = clustering.locker.address.as_deref().unwrap();
        assert!(
            sd_servers.iter().all(|s| s == locker_address),
            "{file}: Prometheus asks Consul at {sd_servers:?}, gnomon at {locker_address}"
        );
        let api_service = format!("{}-gnmic-api", clustering.cluster_name);
        assert!(
            sd_services.contains(&api_service),
            "{file}: Prometheus does not scrape {api_service}: {sd_services:?}"
        );
        assert_eq!(
            config.api.as_ref().map(|a| a.address.as_str()),
            Some(":7890"),
            "{file}"
        );
        for (name, output) in &config.outputs {
            if let OutputConfig::Prometheus(prom) = output {
                let registration = prom
                    .service_registration
                    .as_ref()
                    .unwrap_or_else(|| panic!("{file}: {name} is not registered"));
                assert!(
                    sd_services.contains(&registration.name),
                    "{file}: Prometheus does not discover {}",
                    registration.name
                );
                assert_eq!(
                    registration.address, locker_address,
                    "{file}: {name} registers in another Consul"
                );
                assert!(
                    prom.listen.ends_with(":9804"),
                    "{file}: {name} listens on {}",
                    prom.listen
                );
            }
        }
    }
    // The compose stack publishes the container ports the configs use.
    let stack = yaml(&compose_dir().join("docker-compose.yml"));
    let ports: Vec<String> = stack["services"]["gnomon1"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().rsplit(':').next().unwrap().to_string())
        .collect();
    assert!(
        ports.contains(&"7890".to_string()) && ports.contains(&"9804".to_string()),
        "{ports:?}"
    );
}

/// Issue 12: the image builds from sources alone — no protoc (every proto goes through
/// protox) — and the build context leaves out build output, the Python venv, run
/// directories and fuzz artifacts.
#[test]
fn the_image_needs_no_protoc_and_the_context_is_the_sources() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dockerfile = std::fs::read_to_string(root.join("compose/Dockerfile")).unwrap();
    for line in dockerfile.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("protobuf") && !line.contains("protoc"),
            "{line}"
        );
    }
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for excluded in [
        "target/",
        ".venv/",
        ".run/",
        "fuzz/artifacts/",
        "fuzz/target/",
    ] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore lacks {excluded}"
        );
    }
}
