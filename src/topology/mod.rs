//! The model of the cluster: who is primary, who replicates, how far behind.
//!
//! - [`claims`]: what a control plane says (static config, Patroni,
//!   CloudNativePG), before verification.
//! - [`probe`]: what a node says about itself.
//! - [`election`]: probe results and claims to roles and rotation.
//! - [`snapshot`]: the published, immutable view sessions route by.
//! - [`monitor`]: the task that probes, elects and publishes.
//! - [`learned`]: statements found to write on a replica.
//! - [`publish`]: how watchers hand claims on (changes only, logged once).
//! - [`patroni`]: the Patroni REST API watcher.
//! - [`kubernetes`]: the CloudNativePG watcher (cargo feature `kubernetes`).
//! - [`watch`]: starts the watcher the configuration names.

pub mod claims;
pub mod election;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod learned;
pub mod monitor;
pub mod patroni;
pub mod probe;
pub mod publish;
pub mod snapshot;
pub mod watch;

pub use claims::{ClaimedRole, Claims, MemberClaim};
pub use learned::LearnedWrites;
pub use snapshot::{LoadGuard, Member, NodeLoad, Role, Snapshot, Topology};
