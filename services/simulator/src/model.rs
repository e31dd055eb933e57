//! The simulated device: an OpenConfig-shaped set of leaves whose values are pure functions
//! of (device, leaf, moment). Nothing is stored per device, so thousands of devices cost
//! almost nothing and every stream computes exactly the values a Get would see.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gnomon_gnmi::proto::gnmi::{Path, PathElem};

/// Number of CPUs every simulated device reports.
pub const CPUS_PER_DEVICE: u32 = 2;

/// The interface whose oper-status flaps.
pub const FLAPPING_INTERFACE: u32 = 0;

/// The eight interface counters, in the order they appear in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    InOctets,
    OutOctets,
    InPkts,
    OutPkts,
    InErrors,
    OutErrors,
    InDiscards,
    OutDiscards,
}

impl Counter {
    const ALL: [Counter; 8] = [
        Counter::InOctets,
        Counter::OutOctets,
        Counter::InPkts,
        Counter::OutPkts,
        Counter::InErrors,
        Counter::OutErrors,
        Counter::InDiscards,
        Counter::OutDiscards,
    ];

    fn leaf_name(self) -> &'static str {
        match self {
            Counter::InOctets => "in-octets",
            Counter::OutOctets => "out-octets",
            Counter::InPkts => "in-pkts",
            Counter::OutPkts => "out-pkts",
            Counter::InErrors => "in-errors",
            Counter::OutErrors => "out-errors",
            Counter::InDiscards => "in-discards",
            Counter::OutDiscards => "out-discards",
        }
    }

    /// Largest step per tick: traffic counters move a lot, error counters rarely.
    fn max_step(self) -> u64 {
        match self {
            Counter::InOctets | Counter::OutOctets => 2_000_000,
            Counter::InPkts | Counter::OutPkts => 2_000,
            _ => 0,
        }
    }
}

/// Where a leaf's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafSource {
    Hostname,
    CpuInstant { cpu: u32 },
    MemoryPhysical,
    MemoryUsed,
    InterfaceName { interface: u32 },
    AdminStatus { interface: u32 },
    OperStatus { interface: u32 },
    Counter { interface: u32, counter: Counter },
}

impl LeafSource {
    /// Whether TARGET_DEFINED streams this leaf on change (state) rather than sampling it
    /// (counters and gauges).
    pub fn is_state(self) -> bool {
        matches!(
            self,
            LeafSource::Hostname
                | LeafSource::MemoryPhysical
                | LeafSource::InterfaceName { .. }
                | LeafSource::AdminStatus { .. }
                | LeafSource::OperStatus { .. }
        )
    }
}

/// One leaf of the tree: its full path and value source.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub path: Path,
    pub source: LeafSource,
}

/// The leaves every device has (the tree's shape is the same for all devices).
#[derive(Debug)]
pub struct LeafTable {
    pub leaves: Vec<Leaf>,
    pub interface_names: Vec<String>,
}

fn elem(name: &str) -> PathElem {
    PathElem {
        name: name.to_string(),
        key: Default::default(),
    }
}

fn keyed(name: &str, key: &str, value: &str) -> PathElem {
    PathElem {
        name: name.to_string(),
        key: [(key.to_string(), value.to_string())].into_iter().collect(),
    }
}

fn path(elems: Vec<PathElem>) -> Path {
    Path {
        elem: elems,
        ..Default::default()
    }
}

impl LeafTable {
    /// Builds the tree for devices with `interfaces` interfaces.
    pub fn new(interfaces: u32) -> LeafTable {
        let mut leaves = Vec::new();
        leaves.push(Leaf {
            path: path(vec![elem("system"), elem("state"), elem("hostname")]),
            source: LeafSource::Hostname,
        });
        for cpu in 0..CPUS_PER_DEVICE {
            leaves.push(Leaf {
                path: path(vec![
                    elem("system"),
                    elem("cpus"),
                    keyed("cpu", "index", &cpu.to_string()),
                    elem("state"),
                    elem("total"),
                    elem("instant"),
                ]),
                source: LeafSource::CpuInstant { cpu },
            });
        }
        for (name, source) in [
            ("physical", LeafSource::MemoryPhysical),
            ("used", LeafSource::MemoryUsed),
        ] {
            leaves.push(Leaf {
                path: path(vec![
                    elem("system"),
                    elem("memory"),
                    elem("state"),
                    elem(name),
                ]),
                source,
            });
        }
        let interface_names: Vec<String> =
            (1..=interfaces).map(|n| format!("Ethernet{n}")).collect();
        for (interface, name) in interface_names.iter().enumerate() {
            let interface = interface as u32;
            let state = |leaf: &[&str]| {
                let mut elems = vec![
                    elem("interfaces"),
                    keyed("interface", "name", name),
                    elem("state"),
                ];
                elems.extend(leaf.iter().map(|n| elem(n)));
                path(elems)
            };
            leaves.push(Leaf {
                path: state(&["name"]),
                source: LeafSource::InterfaceName { interface },
            });
            leaves.push(Leaf {
                path: state(&["admin-status"]),
                source: LeafSource::AdminStatus { interface },
            });
            leaves.push(Leaf {
                path: state(&["oper-status"]),
                source: LeafSource::OperStatus { interface },
            });
            for counter in Counter::ALL {
                leaves.push(Leaf {
                    path: state(&["counters", counter.leaf_name()]),
                    source: LeafSource::Counter { interface, counter },
                });
            }
        }
        LeafTable {
            leaves,
            interface_names,
        }
    }
}

/// A leaf value; counters and gauges are unsigned (pygnmi does not decode doubles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafValue {
    Text(Arc<str>),
    Status(&'static str),
    Uint(u64),
}

/// The point in simulated time a value is computed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    /// Counter steps since the simulator started.
    pub tick: u64,
    /// Flap periods since the simulator started.
    pub flap_epoch: u64,
}

/// Shared time base: when the simulator started and how fast things change.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub start: Instant,
    pub update_period: Duration,
    /// `None` disables flapping.
    pub flap_period: Option<Duration>,
}

impl Clock {
    pub fn moment_at(&self, at: Instant) -> Moment {
        let elapsed = at.saturating_duration_since(self.start);
        Moment {
            tick: periods(elapsed, self.update_period),
            flap_epoch: self
                .flap_period
                .map(|period| periods(elapsed, period))
                .unwrap_or(0),
        }
    }

    /// The first instant after `at` at which any value may change.
    pub fn next_change_after(&self, at: Instant) -> Instant {
        let elapsed = at.saturating_duration_since(self.start);
        let next_tick = next_boundary(elapsed, self.update_period);
        let next = match self.flap_period {
            Some(flap) => next_tick.min(next_boundary(elapsed, flap)),
            None => next_tick,
        };
        self.start + next
    }
}

fn periods(elapsed: Duration, period: Duration) -> u64 {
    (elapsed.as_nanos() / period.as_nanos().max(1)) as u64
}

fn next_boundary(elapsed: Duration, period: Duration) -> Duration {
    let period_ns = period.as_nanos().max(1);
    let next = (elapsed.as_nanos() / period_ns + 1) * period_ns;
    Duration::from_nanos(next.min(u64::MAX as u128) as u64)
}

/// SplitMix64: a cheap, well-mixed hash so values look random but are reproducible.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5151_5151, |acc, part| mix(acc ^ part))
}

/// One simulated device: its identity and the shared tree shape and clock.
#[derive(Clone, Debug)]
pub struct Device {
    pub index: u32,
    pub hostname: Arc<str>,
    pub table: Arc<LeafTable>,
    pub clock: Clock,
    interface_names: Arc<[Arc<str>]>,
}

impl Device {
    pub fn new(index: u32, hostname: String, table: Arc<LeafTable>, clock: Clock) -> Device {
        let interface_names = table
            .interface_names
            .iter()
            .map(|name| Arc::from(name.as_str()))
            .collect();
        Device {
            index,
            hostname: Arc::from(hostname),
            table,
            clock,
            interface_names,
        }
    }

    pub fn now(&self) -> Moment {
        self.clock.moment_at(Instant::now())
    }

    /// The value of leaf `leaf` (an index into the table) at `moment`.
    pub fn value(&self, leaf: usize, moment: Moment) -> LeafValue {
        let device = u64::from(self.index);
        match self.table.leaves[leaf].source {
            LeafSource::Hostname => LeafValue::Text(self.hostname.clone()),
            LeafSource::CpuInstant { cpu } => {
                LeafValue::Uint(3 + hash(&[device, 1, cpu.into(), moment.tick]) % 70)
            }
            LeafSource::MemoryPhysical => LeafValue::Uint(self.physical_memory()),
            LeafSource::MemoryUsed => {
                let percent = 30 + hash(&[device, 2, moment.tick]) % 40;
                LeafValue::Uint(self.physical_memory() / 100 * percent)
            }
            LeafSource::InterfaceName { interface } => {
                LeafValue::Text(self.interface_names[interface as usize].clone())
            }
            LeafSource::AdminStatus { .. } => LeafValue::Status("UP"),
            LeafSource::OperStatus { interface } => {
                let down = interface == FLAPPING_INTERFACE && moment.flap_epoch % 2 == 1;
                LeafValue::Status(if down { "DOWN" } else { "UP" })
            }
            LeafSource::Counter { interface, counter } => {
                LeafValue::Uint(self.counter(interface, counter, moment.tick))
            }
        }
    }

    fn physical_memory(&self) -> u64 {
        (4 + u64::from(self.index % 4) * 4) << 30
    }

    /// Monotonic counter: a per-interface base, a fixed rate per tick and a jitter smaller
    /// than half the rate, so every step is positive for traffic counters.
    fn counter(&self, interface: u32, counter: Counter, tick: u64) -> u64 {
        let seed = [u64::from(self.index), 3, interface.into(), counter as u64];
        let seeded = hash(&seed);
        let max_step = counter.max_step();
        if max_step == 0 {
            // Errors and discards: one more every `every` ticks.
            let every = 3 + seeded % 17;
            return seeded % 50 + tick / every;
        }
        let rate = max_step / 4 + seeded % (max_step - max_step / 4);
        let base = (seeded >> 16) % (rate * 10_000);
        let jitter = hash(&[seeded, tick]) % (rate / 2 + 1);
        base.saturating_add(tick.saturating_mul(rate))
            .saturating_add(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(interfaces: u32) -> Device {
        let clock = Clock {
            start: Instant::now(),
            update_period: Duration::from_millis(100),
            flap_period: Some(Duration::from_secs(1)),
        };
        Device::new(
            7,
            "sim-7".into(),
            Arc::new(LeafTable::new(interfaces)),
            clock,
        )
    }

    fn leaf_index(device: &Device, wanted: LeafSource) -> usize {
        device
            .table
            .leaves
            .iter()
            .position(|leaf| leaf.source == wanted)
            .unwrap()
    }

    #[test]
    fn tree_has_system_and_eleven_leaves_per_interface() {
        let table = LeafTable::new(3);
        assert_eq!(
            table.leaves.len(),
            1 + CPUS_PER_DEVICE as usize + 2 + 3 * 11
        );
        assert_eq!(
            table.interface_names,
            ["Ethernet1", "Ethernet2", "Ethernet3"]
        );
    }

    #[test]
    fn traffic_counters_grow_every_tick() {
        let device = device(2);
        let leaf = leaf_index(
            &device,
            LeafSource::Counter {
                interface: 1,
                counter: Counter::InOctets,
            },
        );
        let mut previous = 0;
        for tick in 0..200 {
            let LeafValue::Uint(value) = device.value(
                leaf,
                Moment {
                    tick,
                    flap_epoch: 0,
                },
            ) else {
                panic!("counter is not a number");
            };
            assert!(value > previous, "tick {tick}: {value} <= {previous}");
            previous = value;
        }
    }

    #[test]
    fn first_interface_flaps_each_epoch_and_others_stay_up() {
        let device = device(2);
        let first = leaf_index(&device, LeafSource::OperStatus { interface: 0 });
        let second = leaf_index(&device, LeafSource::OperStatus { interface: 1 });
        let at = |flap_epoch| Moment {
            tick: 0,
            flap_epoch,
        };
        assert_eq!(device.value(first, at(0)), LeafValue::Status("UP"));
        assert_eq!(device.value(first, at(1)), LeafValue::Status("DOWN"));
        assert_eq!(device.value(first, at(2)), LeafValue::Status("UP"));
        assert_eq!(device.value(second, at(1)), LeafValue::Status("UP"));
    }

    #[test]
    fn next_change_is_the_nearest_boundary() {
        let device = device(1);
        let start = device.clock.start;
        let next = device
            .clock
            .next_change_after(start + Duration::from_millis(950));
        assert_eq!(next, start + Duration::from_secs(1));
        let next = device
            .clock
            .next_change_after(start + Duration::from_millis(120));
        assert_eq!(next, start + Duration::from_millis(200));
    }
}
