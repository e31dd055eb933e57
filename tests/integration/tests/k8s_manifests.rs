//! The Kubernetes manifests in `compose/k8s/`: every one validates against the Kubernetes
//! 1.30 schemas with `kubernetes-validate --strict` (from the `.venv` scripts/setup makes;
//! installed there when missing), the kustomization lists exactly the manifests, and the
//! gnmic-style configs in the ConfigMap load with the k8s locker.

use std::path::{Path, PathBuf};
use std::process::Command;

const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `.venv/bin/kubernetes-validate`, installed into the venv (created if needed) when missing.
fn validator() -> PathBuf {
    let venv = root().join(".venv");
    let tool = venv.join("bin/kubernetes-validate");
    if tool.is_file() {
        return tool;
    }
    eprintln!("installing {KUBERNETES_VALIDATE} into {}", venv.display());
    if !venv.join("bin/pip").is_file() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(
            status.success(),
            "python3 -m venv {} failed",
            venv.display()
        );
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", KUBERNETES_VALIDATE])
        .status()
        .expect("pip runs");
    assert!(status.success(), "pip install {KUBERNETES_VALIDATE} failed");
    assert!(
        tool.is_file(),
        "{} missing after the install",
        tool.display()
    );
    tool
}

fn manifests() -> Vec<PathBuf> {
    let dir = root().join("compose/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

fn validate(tool: &Path, file: &Path) -> (bool, String) {
    let output = Command::new(tool)
        .args(["-k", "1.30.0", "--strict"])
        .arg(file)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn every_manifest_validates_against_kubernetes_1_30() {
    let tool = validator();
    let files = manifests();
    assert!(files.len() >= 9, "{files:?}");
    for file in &files {
        let (ok, text) = validate(&tool, file);
        println!("{}", text.trim());
        assert!(ok, "{} does not validate:\n{text}", file.display());
        assert!(
            !text.contains("WARN") && !text.contains("ERROR"),
            "{}:\n{text}",
            file.display()
        );
        let documents = std::fs::read_to_string(file)
            .unwrap()
            .split("\n---")
            .filter(|d| d.contains("kind:"))
            .count();
        assert_eq!(
            text.matches(" passed for resource ").count(),
            documents,
            "every resource of {} is checked:\n{text}",
            file.display()
        );
    }
    // The validator does refuse what Kubernetes would (so a pass means something).
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: x\nspec:\n  holderIdentity: a\n  leaseDurationSecond: 10\n",
    )
    .unwrap();
    let (ok, text) = validate(&tool, &broken);
    assert!(!ok, "an unknown field must fail --strict:\n{text}");
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(root().join("compose/k8s/kustomization.yaml")).unwrap();
    let kustomization: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(kustomization["kind"].as_str(), Some("Kustomization"));
    assert_eq!(kustomization["namespace"].as_str(), Some("gnomon"));
    let mut listed: Vec<String> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut present: Vec<String> = manifests()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(listed, present);
}

#[test]
fn the_configmap_configs_load_with_the_k8s_locker() {
    let text = std::fs::read_to_string(root().join("compose/k8s/configmap.yaml")).unwrap();
    let configmap: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let env = [(
        "GNMIC_CLUSTERING_INSTANCE_NAME".to_string(),
        "gnomon-0".to_string(),
    )];
    for key in ["collector.yaml", "exporter.yaml"] {
        // The Secret's token, as the pod's environment provides it.
        let config = configmap["data"][key]
            .as_str()
            .unwrap()
            .replace("${GNOMON_API_TOKEN}", "a-token-from-the-secret");
        let loaded =
            gnomon_config::load_config_with_env(&config, gnomon_config::ConfigFormat::Yaml, &env)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        let clustering = loaded.clustering.expect("clustered");
        assert_eq!(clustering.cluster_name, "gnomon", "{key}");
        assert_eq!(clustering.instance_name, "gnomon-0", "{key}");
        assert_eq!(
            clustering.locker.kind,
            gnomon_config::locker::LockerType::K8s
        );
        assert_eq!(clustering.locker.namespace.as_deref(), Some("gnomon"));
    }
}

#[test]
fn a_rolling_restart_drains_each_member_first() {
    let text = std::fs::read_to_string(root().join("compose/k8s/statefulset.yaml")).unwrap();
    let statefulset: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let pod = &statefulset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let hook: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("a preStop exec hook")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(hook[..2], ["/usr/local/bin/gnomon", "drain"], "{hook:?}");
    // The hook drains the member the container runs, with the container's config.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let config_of = |words: &[&str]| {
        let at = words.iter().position(|w| *w == "--config").unwrap();
        words[at + 1].to_string()
    };
    assert_eq!(config_of(&hook), config_of(&args));
    // The grace period outlasts the drain's own bound, so the kubelet never cuts it short.
    let timeout = hook.iter().position(|w| *w == "--timeout").unwrap();
    let drain = humantime::parse_duration(hook[timeout + 1]).unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        drain.as_secs() + 10 <= grace,
        "drain {drain:?} vs grace {grace}s"
    );
}
