//! Many switchyard pods behind one Service: who the other pods are
//! ([`discovery`]), where a CancelRequest for another pod's session goes
//! ([`cancel`]), and this pod's share of the server-connection budget.
//!
//! There is no cluster protocol: each pod learns the same peer list (a
//! static list, or a headless Service's DNS records), checks which peers
//! answer on their client port, and divides
//! `pool.max_server_connections_per_node` by the live count itself.

pub mod cancel;
pub mod discovery;
mod error;
mod table;

pub use error::PeersError;
pub use table::{Peer, PeerTable, Peers};
