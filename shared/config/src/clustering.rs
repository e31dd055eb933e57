//! The `clustering` section, with gnmic's defaults. Unlike gnmic, timers are not raised to
//! floors: short timers are what make failover fast.

use super::duration::serialize_ns;
use super::output::TlsFiles;
use super::reader::Section;
use super::ConfigError;
use serde::Serialize;
use std::time::Duration;

/// gnmic's clustering settings (gnmic's defaults; any positive timer is allowed).
#[derive(Clone, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct ClusteringConfig {
    pub cluster_name: String,
    pub instance_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_address: Option<String>,
    #[serde(serialize_with = "serialize_ns")]
    pub services_watch_timer: Duration,
    #[serde(serialize_with = "serialize_ns")]
    pub targets_watch_timer: Duration,
    #[serde(serialize_with = "serialize_ns")]
    pub target_assignment_timeout: Duration,
    #[serde(serialize_with = "serialize_ns")]
    pub leader_wait_timer: Duration,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// gnomon: when a member joins and the most and least loaded members differ by at least
    /// this many targets, the leader rebalances (`rebalance-threshold`, default 2; 0 disables).
    pub rebalance_threshold: u64,
    /// The `locker` map, env-expanded (its `type` picks the coordination backend). Shown
    /// with its password and token redacted.
    #[serde(serialize_with = "super::secret::serialize_redacted")]
    pub locker: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// Every field, with the locker's secrets redacted.
impl std::fmt::Debug for ClusteringConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusteringConfig")
            .field("cluster_name", &self.cluster_name)
            .field("instance_name", &self.instance_name)
            .field("service_address", &self.service_address)
            .field("services_watch_timer", &self.services_watch_timer)
            .field("targets_watch_timer", &self.targets_watch_timer)
            .field("target_assignment_timeout", &self.target_assignment_timeout)
            .field("leader_wait_timer", &self.leader_wait_timer)
            .field("tags", &self.tags)
            .field("rebalance_threshold", &self.rebalance_threshold)
            .field("locker", &super::secret::redact_json(&self.locker))
            .field("tls", &self.tls)
            .finish()
    }
}

/// Default `rebalance-threshold`: gnmic's rebalance stops below a spread of 2.
pub const DEFAULT_REBALANCE_THRESHOLD: u64 = 2;

fn or_default(value: Option<Duration>, default: Duration) -> Duration {
    value.filter(|d| !d.is_zero()).unwrap_or(default)
}

impl ClusteringConfig {
    /// Reads the section; `global_cluster_name` / `global_instance_name` fill blanks.
    pub fn from_section(
        section: &Section<'_>,
        global_cluster_name: &str,
        global_instance_name: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let locker = match section.expanded_value("locker") {
            Some(value @ serde_json::Value::Object(_)) => {
                match value.get("type") {
                    Some(serde_json::Value::String(t)) if !t.is_empty() => {}
                    other => {
                        return Err(ConfigError::invalid(
                            section.key_path("locker.type"),
                            other.unwrap_or(&serde_json::Value::Null),
                            "is not a locker type (expected e.g. consul or etcd)",
                        ))
                    }
                }
                // Validate with the coordination module's model so a bad locker fails at load.
                let parsed: crate::locker::LockerConfig = serde_json::from_value(value.clone())
                    .map_err(|e| {
                        ConfigError::Message(format!("{}: {e}", section.key_path("locker")))
                    })?;
                parsed.validate().map_err(|e| {
                    ConfigError::Message(format!("{}: {e}", section.key_path("locker")))
                })?;
                value
            }
            Some(other) => {
                return Err(ConfigError::invalid(
                    section.key_path("locker"),
                    &other,
                    "is not a map of locker settings",
                ))
            }
            None => {
                return Err(ConfigError::Missing {
                    key: section.key_path("locker"),
                    expected: "clustering needs a locker, e.g. {type: consul, address: ...}".into(),
                })
            }
        };
        let instance_name = section
            .string_if_set("instance-name")?
            .or_else(|| global_instance_name.map(str::to_string))
            .unwrap_or_else(|| format!("gnomon-{}", uuid::Uuid::new_v4()));
        let config = Self {
            cluster_name: section
                .string_if_set("cluster-name")?
                .unwrap_or_else(|| global_cluster_name.to_string()),
            instance_name,
            service_address: section.string_if_set("service-address")?,
            services_watch_timer: or_default(
                section.duration("services-watch-timer")?,
                Duration::from_secs(60),
            ),
            targets_watch_timer: or_default(
                section.duration("targets-watch-timer")?,
                Duration::from_secs(20),
            ),
            target_assignment_timeout: or_default(
                section.duration("target-assignment-timeout")?,
                Duration::from_secs(10),
            ),
            leader_wait_timer: or_default(
                section.duration("leader-wait-timer")?,
                Duration::from_secs(5),
            ),
            tags: section.string_list("tags")?,
            rebalance_threshold: section
                .u64("rebalance-threshold")?
                .unwrap_or(DEFAULT_REBALANCE_THRESHOLD),
            locker,
            tls: TlsFiles::read(section, "tls")?,
        };
        section.warn_unknown_keys();
        Ok(config)
    }
}
