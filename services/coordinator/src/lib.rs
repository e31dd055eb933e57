//! gnomon coordinator: leader election, target placement, failover, rebalance and drain.
//!
//! The leader watches the registered members (`<cluster>-gnmic-api`), the target locks
//! (`gnmic/<cluster>/targets/…`) and the target configs kept in the store
//! (`gnmic/<cluster>/config/targets/…`), and places every target without an owner through
//! the members' REST APIs (gnmic's handshake), reacting to watch events within milliseconds
//! and reconciling everything every `targets-watch-timer` as a safety net.

pub mod api;
pub mod discovery;
pub mod drain;
pub mod election;
mod handshake;
pub mod leader;
pub mod member_client;
mod member_starts;
pub mod members;
pub mod placement;
pub mod settings;

pub use drain::{drain_member, DrainError, Drained};
pub use election::{spawn, CoordinatorHandle, LeaderRequestError};
pub use gnomon_coordination::TargetStore;
pub use settings::CoordinatorSettings;
