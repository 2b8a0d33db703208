//! The peer list in force, published whole after each check (arc-swap:
//! read by CancelRequests without a lock).

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Another pod, as last checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its peer id (in the cancel keys it issues).
    pub id: u16,
    /// Its client port.
    pub addr: SocketAddr,
    /// It accepted a TCP connection at the last check.
    pub live: bool,
}

/// The other pods (this one excluded) after one discovery round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTable {
    /// Other pods, one per peer id.
    pub peers: Vec<Peer>,
}

impl PeerTable {
    /// The client port of peer `id`, live or not (a cancel is worth trying).
    pub fn address_of(&self, id: u16) -> Option<SocketAddr> {
        self.peers.iter().find(|p| p.id == id).map(|p| p.addr)
    }

    /// Pods sharing the budget: this one plus the live others.
    pub fn live_count(&self) -> usize {
        1 + self.peers.iter().filter(|p| p.live).count()
    }
}

/// This pod's id and the latest peer table.
#[derive(Debug)]
pub struct Peers {
    own_id: u16,
    table: ArcSwap<PeerTable>,
}

impl Peers {
    /// No peers known yet; `own_id` 0 means peers are off.
    pub fn new(own_id: u16) -> Self {
        Self {
            own_id,
            table: ArcSwap::from_pointee(PeerTable::default()),
        }
    }

    /// This pod's peer id (0: peers off).
    pub fn own_id(&self) -> u16 {
        self.own_id
    }

    /// The latest table.
    pub fn table(&self) -> Arc<PeerTable> {
        self.table.load_full()
    }

    /// Publishes a new table; returns the previous one.
    pub fn publish(&self, table: PeerTable) -> Arc<PeerTable> {
        self.table.swap(Arc::new(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_count_includes_this_pod_and_only_live_peers() {
        let peer = |id, live| Peer {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 6000 + id)),
            live,
        };
        let table = PeerTable {
            peers: vec![peer(2, true), peer(3, false)],
        };
        assert_eq!(table.live_count(), 2);
        assert_eq!(table.address_of(3).map(|a| a.port()), Some(6003));
        assert_eq!(table.address_of(4), None);
    }
}
