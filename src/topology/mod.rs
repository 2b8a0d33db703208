//! The model of the cluster: who is primary, who replicates, how far behind.
//!
//! - [`claims`]: what a control plane says (static config, Patroni,
//!   CloudNativePG), before verification.
//! - [`probe`]: what a node says about itself.
//! - [`election`]: probe results and claims to roles and rotation.
//! - [`snapshot`]: the published, immutable view sessions route by.
//! - [`monitor`]: the task that probes, elects and publishes.
//! - [`learned`]: statements found to write on a replica.

pub mod claims;
pub mod election;
pub mod learned;
pub mod monitor;
pub mod probe;
pub mod snapshot;

pub use claims::{ClaimedRole, Claims, MemberClaim};
pub use learned::LearnedWrites;
pub use snapshot::{LoadGuard, Member, NodeLoad, Role, Snapshot, Topology};
