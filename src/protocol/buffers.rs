//! Buffers of long-lived connections: what one large message grew is not
//! kept while the connection is idle.

use bytes::BytesMut;

/// Largest allocation an idle buffer keeps: the relays' usual 16–32 KiB
/// stay (no allocation per transaction), what one large message grew goes.
pub const MAX_IDLE_BUFFER: usize = 64 * 1024;

/// Replaces an empty buffer whose allocation exceeds [`MAX_IDLE_BUFFER`]
/// with an unallocated one (a buffer still holding bytes is left alone).
///
/// `capacity()` alone cannot tell: a buffer that was written and then
/// consumed (`advance`) reports only the room after its consumed part.
/// `try_reclaim` succeeds, without allocating, exactly when the allocation
/// has room for that much once the consumed part is taken back.
pub fn shed_if_large(buf: &mut BytesMut) {
    if buf.is_empty() && buf.try_reclaim(MAX_IDLE_BUFFER + 1) {
        *buf = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Buf;

    use super::*;

    #[test]
    fn only_empty_buffers_grown_past_the_limit_are_shed() {
        let mut usual = BytesMut::with_capacity(32 * 1024);
        shed_if_large(&mut usual);
        assert!(usual.capacity() >= 32 * 1024, "the usual buffer is kept");
        let mut grown = BytesMut::with_capacity(4 * MAX_IDLE_BUFFER);
        shed_if_large(&mut grown);
        assert_eq!(grown.capacity(), 0, "a grown, empty buffer is freed");
        // Written and consumed: little room is left after the consumed
        // part, but the allocation is as large.
        let mut consumed = BytesMut::with_capacity(4 * MAX_IDLE_BUFFER);
        consumed.extend_from_slice(&vec![0; 4 * MAX_IDLE_BUFFER - 100]);
        consumed.advance(consumed.len());
        assert!(consumed.capacity() < MAX_IDLE_BUFFER);
        shed_if_large(&mut consumed);
        assert_eq!(consumed.capacity(), 0, "a consumed large buffer is freed");
        let mut holding = BytesMut::with_capacity(4 * MAX_IDLE_BUFFER);
        holding.extend_from_slice(b"unread");
        shed_if_large(&mut holding);
        assert_eq!(&holding[..], b"unread", "bytes are never dropped");
    }
}
