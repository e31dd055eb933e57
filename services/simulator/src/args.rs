//! Command-line options of `gnomon simulator`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options for one simulator process serving `--count` devices.
#[derive(clap::Args, Clone)]
pub struct SimulatorArgs {
    /// Address of the first device. Device i listens on this port + i. With port 0 every
    /// device gets its own free port (see `Simulator::device_addresses`).
    #[arg(long, default_value = "127.0.0.1:57400")]
    pub listen: SocketAddr,

    /// Number of simulated devices.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,

    /// Interfaces per device (Ethernet1 … EthernetN).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub interfaces: u32,

    /// How often the counters change: the period between two counter steps (e.g. `1s`, `100ms`).
    #[arg(long, alias = "update-interval", default_value = "1s", value_parser = parse_period)]
    pub update_rate: Duration,

    /// Ethernet1 of every device toggles its oper-status (UP/DOWN) once per this period.
    /// `0s` disables flapping.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub flap_period: Duration,

    /// Serve TLS with a self-signed certificate for 127.0.0.1 and localhost, generated at start.
    #[arg(long)]
    pub tls: bool,

    /// Serve TLS with this certificate chain (PEM) instead of a generated one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Write the certificate the devices present (PEM) to this file, so clients can trust it.
    #[arg(long)]
    pub tls_export_cert: Option<PathBuf>,

    /// Require this username (gRPC metadata `username`) on every RPC.
    #[arg(long, requires = "password")]
    pub username: Option<String>,

    /// Require this password (gRPC metadata `password`) on every RPC.
    #[arg(long, requires = "username")]
    pub password: Option<String>,

    /// Serve `GET /stats` (active subscriptions and peers per device) on this address.
    #[arg(long)]
    pub stats_listen: Option<SocketAddr>,

    /// Load mode: after the initial snapshot every STREAM subscription sends batches of fresh
    /// updates back to back, as fast as the client reads them (sample intervals are ignored).
    #[arg(long)]
    pub load: bool,

    /// Updates per notification in load mode.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub updates_per_notification: u32,

    /// Device hostnames are this prefix followed by the device index (0-based): `sim-0`, `sim-1`, ….
    #[arg(long, default_value = "sim-")]
    pub name_prefix: String,

    /// With `--listen` port 0 (refused with any other port): bind the devices to the free ports from this one upward,
    /// skipping taken ones, instead of to ports the kernel picks. Thousands of listeners
    /// on kernel-picked (ephemeral) ports make every bind and every outgoing connect on the
    /// host search longer for a free port; a range below the ephemeral one avoids both.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub search_from: Option<u16>,
}

/// Wrapper used to obtain the clap defaults without a command line.
#[derive(clap::Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    args: SimulatorArgs,
}

impl Default for SimulatorArgs {
    fn default() -> Self {
        use clap::Parser;
        DefaultsOnly::parse_from(["simulator"]).args
    }
}

impl SimulatorArgs {
    /// Defaults for in-process use: every device on its own free loopback port.
    pub fn on_free_ports(count: u32) -> Self {
        SimulatorArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            count,
            ..SimulatorArgs::default()
        }
    }

    /// Whether the devices serve TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls || self.tls_cert.is_some()
    }
}

// Hand-written so the password never reaches logs.
impl fmt::Debug for SimulatorArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorArgs")
            .field("listen", &self.listen)
            .field("count", &self.count)
            .field("interfaces", &self.interfaces)
            .field("update_rate", &self.update_rate)
            .field("flap_period", &self.flap_period)
            .field("tls", &self.tls)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_export_cert", &self.tls_export_cert)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("stats_listen", &self.stats_listen)
            .field("load", &self.load)
            .field("updates_per_notification", &self.updates_per_notification)
            .field("name_prefix", &self.name_prefix)
            .field("search_from", &self.search_from)
            .finish()
    }
}

/// A strictly positive duration such as `1s` or `250ms`.
fn parse_period(text: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if period.is_zero() {
        return Err(format!("{text:?}: the period must be greater than zero"));
    }
    Ok(period)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_documented_ones() {
        let args = SimulatorArgs::default();
        assert_eq!(args.listen, "127.0.0.1:57400".parse().unwrap());
        assert_eq!(args.count, 1);
        assert_eq!(args.interfaces, 8);
        assert_eq!(args.update_rate, Duration::from_secs(1));
        assert_eq!(args.updates_per_notification, 16);
        assert!(!args.tls_enabled());
    }

    #[test]
    fn parses_a_full_command_line() {
        let parsed = DefaultsOnly::try_parse_from([
            "simulator",
            "--listen",
            "127.0.0.1:6000",
            "--count",
            "3",
            "--update-rate",
            "250ms",
            "--tls",
            "--username",
            "admin",
            "--password",
            "secret",
            "--load",
            "--updates-per-notification",
            "12",
        ])
        .unwrap()
        .args;
        assert_eq!(parsed.count, 3);
        assert_eq!(parsed.update_rate, Duration::from_millis(250));
        assert!(parsed.tls_enabled() && parsed.load);
        assert_eq!(parsed.updates_per_notification, 12);
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("secret"), "password leaked: {shown}");
    }

    #[test]
    fn rejects_half_credentials_and_zero_rate() {
        assert!(DefaultsOnly::try_parse_from(["simulator", "--username", "admin"]).is_err());
        assert!(DefaultsOnly::try_parse_from(["simulator", "--update-rate", "0s"]).is_err());
        assert!(DefaultsOnly::try_parse_from(["simulator", "--tls-cert", "a.pem"]).is_err());
    }
}
