//! Counting open connections, so a pool never exceeds `max_size` and the
//! proxy never exceeds its share of a node's connection budget.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::budget::NodeUnits;

/// Why no unit could be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// The pool has `max_size` connections open.
    Pool,
    /// The node's share of `pool.max_server_connections_per_node` is used.
    Node,
}

/// One unit of a pool's open-connection count (and of its node's budget),
/// held while a connection is being opened or validated by a checkout that
/// might be cancelled.
///
/// Dropping it gives the unit back (the connection it stood for is gone);
/// [`OpenSlot::keep`] hands the unit over to the connection, which gives it
/// back when it is closed.
#[derive(Debug)]
#[must_use]
pub(super) struct OpenSlot<'a> {
    open: &'a AtomicUsize,
    node: &'a NodeUnits,
    held: bool,
}

impl<'a> OpenSlot<'a> {
    /// Counts one more open connection if fewer than `limit` are open in
    /// the pool and the node's budget has room.
    pub fn reserve(open: &'a AtomicUsize, limit: usize, node: &'a NodeUnits) -> Result<Self, Full> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .map_err(|_| Full::Pool)?;
        if !node.try_take() {
            open.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Node);
        }
        Ok(Self {
            open,
            node,
            held: true,
        })
    }

    /// Takes responsibility for a unit already counted (a connection taken
    /// from the idle list).
    pub fn adopt(open: &'a AtomicUsize, node: &'a NodeUnits) -> Self {
        Self {
            open,
            node,
            held: true,
        }
    }

    /// The connection lives on and keeps the unit.
    pub fn keep(mut self) {
        self.held = false;
    }
}

impl Drop for OpenSlot<'_> {
    fn drop(&mut self) {
        if self.held {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.node.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_stops_at_the_limit_and_drop_gives_back() {
        let open = AtomicUsize::new(0);
        let node = NodeUnits::unlimited();
        let a = OpenSlot::reserve(&open, 2, &node).expect("first");
        let b = OpenSlot::reserve(&open, 2, &node).expect("second");
        assert_eq!(OpenSlot::reserve(&open, 2, &node).unwrap_err(), Full::Pool);
        drop(a);
        assert_eq!(open.load(Ordering::Acquire), 1);
        b.keep();
        assert_eq!(open.load(Ordering::Acquire), 1);
        assert_eq!(node.open(), 1);
        drop(OpenSlot::adopt(&open, &node));
        assert_eq!(open.load(Ordering::Acquire), 0);
        assert_eq!(node.open(), 0);
    }
}
