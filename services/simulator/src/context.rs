//! What a device's RPC handlers share: the device model, its stats, credentials, load
//! settings and the shutdown signal.

use crate::auth::Credentials;
use crate::model::Device;
use crate::stats::DeviceStats;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Load-mode settings (see `SimulatorArgs::load`).
#[derive(Clone, Copy, Debug)]
pub struct LoadSettings {
    pub updates_per_notification: usize,
}

/// Everything a device's RPC handlers share.
pub struct DeviceContext {
    pub device: Device,
    pub stats: Arc<DeviceStats>,
    pub credentials: Option<Credentials>,
    pub load: Option<LoadSettings>,
    pub shutdown: CancellationToken,
}
