//! The model of the cluster: who is primary, who replicates, how far behind.
//!
//! - [`claims`]: what a control plane says (static config, Patroni,
//!   CloudNativePG), before verification.
//! - [`publish`]: how watchers hand claims on (changes only, logged once).
//! - [`patroni`]: the Patroni REST API watcher.
//! - [`kubernetes`]: the CloudNativePG watcher (cargo feature `kubernetes`).

pub mod claims;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod patroni;
pub mod publish;

pub use claims::{ClaimedRole, Claims, MemberClaim};
