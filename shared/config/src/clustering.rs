//! The `clustering` section, with gnmic's defaults. Unlike gnmic, timers are not raised to
//! floors: short timers are what make failover fast.

use super::address::check_host_optional_port;
use super::defaults;
use super::duration::serialize_ns;
use super::locker::LockerConfig;
use super::reader::Section;
use super::tls_files::TlsFiles;
use super::ConfigError;
use serde::Serialize;
use std::time::Duration;

/// gnmic's clustering settings (gnmic's defaults; any positive timer is allowed).
#[derive(Clone, Debug, Serialize, PartialEq)]
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
    /// gnomon: how long every output of a member must have been failing before it gives its
    /// targets up and registers as unhealthy (`output-failure-timeout`, default 10 s; 0 turns
    /// health-driven failover off). It takes targets again once its outputs have been healthy
    /// for as long. See docs/adr/0012-health-driven-failover.md.
    #[serde(serialize_with = "serialize_ns")]
    pub output_failure_timeout: Duration,
    /// The coordination store (its `type` picks the backend); secrets shown as `****`.
    pub locker: LockerConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// Default `output-failure-timeout`.
pub const DEFAULT_OUTPUT_FAILURE_TIMEOUT: Duration = defaults::OUTPUT_FAILURE_TIMEOUT;

/// Default `rebalance-threshold`: gnmic's rebalance stops below a spread of 2.
pub const DEFAULT_REBALANCE_THRESHOLD: u64 = defaults::REBALANCE_THRESHOLD;

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
        let locker = match section.section("locker")? {
            Some(locker) => LockerConfig::from_section(&locker)?,
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
        let service_address = section.string_if_set("service-address")?;
        if let Some(address) = &service_address {
            check_host_optional_port(&section.key_path("service-address"), address)?;
        }
        let config = Self {
            cluster_name: section
                .string_if_set("cluster-name")?
                .unwrap_or_else(|| global_cluster_name.to_string()),
            instance_name,
            service_address,
            services_watch_timer: or_default(
                section.duration("services-watch-timer")?,
                defaults::SERVICES_WATCH_TIMER,
            ),
            targets_watch_timer: or_default(
                section.duration("targets-watch-timer")?,
                defaults::TARGETS_WATCH_TIMER,
            ),
            target_assignment_timeout: or_default(
                section.duration("target-assignment-timeout")?,
                defaults::TARGET_ASSIGNMENT_TIMEOUT,
            ),
            leader_wait_timer: or_default(
                section.duration("leader-wait-timer")?,
                defaults::LEADER_WAIT_TIMER,
            ),
            tags: section.string_list("tags")?,
            rebalance_threshold: section
                .u64("rebalance-threshold")?
                .unwrap_or(DEFAULT_REBALANCE_THRESHOLD),
            // Unlike the other timers, 0 is meaningful here: failover off.
            output_failure_timeout: section
                .duration("output-failure-timeout")?
                .unwrap_or(DEFAULT_OUTPUT_FAILURE_TIMEOUT),
            locker,
            tls: TlsFiles::read(section, "tls")?,
        };
        section.warn_unknown_keys();
        Ok(config)
    }
}
