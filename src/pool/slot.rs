//! Counting open connections, so a pool never exceeds `max_size`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// One unit of a pool's open-connection count, held while a connection is
/// being opened or validated by a checkout that might be cancelled.
///
/// Dropping it gives the unit back (the connection it stood for is gone);
/// [`OpenSlot::keep`] hands the unit over to the connection, which gives it
/// back when it is closed.
#[derive(Debug)]
#[must_use]
pub(super) struct OpenSlot<'a> {
    open: &'a AtomicUsize,
    held: bool,
}

impl<'a> OpenSlot<'a> {
    /// Counts one more open connection if fewer than `limit` are open.
    pub fn reserve(open: &'a AtomicUsize, limit: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()?;
        Some(Self { open, held: true })
    }

    /// Takes responsibility for a unit already counted (a connection taken
    /// from the idle list).
    pub fn adopt(open: &'a AtomicUsize) -> Self {
        Self { open, held: true }
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_stops_at_the_limit_and_drop_gives_back() {
        let open = AtomicUsize::new(0);
        let a = OpenSlot::reserve(&open, 2).expect("first");
        let b = OpenSlot::reserve(&open, 2).expect("second");
        assert!(OpenSlot::reserve(&open, 2).is_none());
        drop(a);
        assert_eq!(open.load(Ordering::Acquire), 1);
        b.keep();
        assert_eq!(open.load(Ordering::Acquire), 1);
        drop(OpenSlot::adopt(&open));
        assert_eq!(open.load(Ordering::Acquire), 0);
    }
}
