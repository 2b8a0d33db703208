//! The model of the cluster: who is primary, who replicates, how far behind.
//!
//! - [`claims`]: what a control plane says (static config, Patroni,
//!   CloudNativePG), before verification.

pub mod claims;

pub use claims::{ClaimedRole, Claims, MemberClaim};
