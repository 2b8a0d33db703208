//! Streaming frame boundaries for the relay hot path.
//!
//! Hand-written rather than a `tokio_util` codec because a codec yields whole
//! frames, which means buffering a frame's full body (a 1 GB DataRow or COPY
//! chunk) before forwarding it. The scanner instead watches the byte stream
//! go by, so the relay forwards each read buffer as it came in, unchanged and
//! unallocated, while still knowing where every frame starts and ends.

use super::ProtocolError;
use super::frame::{HEADER_LEN, check_length};

/// How many leading body bytes the scanner keeps for each frame: enough for
/// ReadyForQuery's status, a Terminate, or an ErrorResponse's severity and
/// SQLSTATE (PostgreSQL sends `S`, `V` and `C` first; 48 bytes leave room
/// for a localized severity).
pub const HEAD_LEN: usize = 48;

/// Tracks frame boundaries across arbitrarily split reads.
#[derive(Debug)]
pub struct FrameScanner {
    limit: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    tag: u8,
    in_body: bool,
    body_len: usize,
    body_remaining: usize,
    head: [u8; HEAD_LEN],
    head_len: usize,
}

impl FrameScanner {
    /// A scanner that rejects frames larger than `limit` bytes (tag and length included).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            header: [0; HEADER_LEN],
            header_len: 0,
            tag: 0,
            in_body: false,
            body_len: 0,
            body_remaining: 0,
            head: [0; HEAD_LEN],
            head_len: 0,
        }
    }

    /// The largest frame accepted.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// True when every byte seen so far belongs to a complete frame, so a
    /// message written now would not split one.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && !self.in_body
    }

    /// Walks `chunk`, calling `on_frame(tag, head)` once for each frame that
    /// completes in it, where `head` is the first [`HEAD_LEN`] bytes of the
    /// body (all of it when shorter).
    ///
    /// An invalid or oversized header is an error; the caller must then stop
    /// relaying, because the stream can no longer be framed.
    pub fn scan(
        &mut self,
        chunk: &[u8],
        mut on_frame: impl FnMut(u8, &[u8]),
    ) -> Result<(), ProtocolError> {
        let mut pos = 0;
        while pos < chunk.len() {
            if self.in_body {
                pos += self.continue_body(&chunk[pos..], &mut on_frame);
                continue;
            }
            let rest = &chunk[pos..];
            if self.header_len == 0 && rest.len() >= HEADER_LEN {
                let body_len = self.start_frame(rest[0], [rest[1], rest[2], rest[3], rest[4]])?;
                pos += HEADER_LEN;
                let available = chunk.len() - pos;
                if available >= body_len {
                    // Fast path: the whole frame is in this chunk, nothing to copy.
                    let head = &chunk[pos..pos + body_len.min(HEAD_LEN)];
                    self.in_body = false;
                    on_frame(self.tag, head);
                    pos += body_len;
                }
                continue;
            }
            let take = (HEADER_LEN - self.header_len).min(rest.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&rest[..take]);
            self.header_len += take;
            pos += take;
            if self.header_len == HEADER_LEN {
                self.header_len = 0;
                let h = self.header;
                let body_len = self.start_frame(h[0], [h[1], h[2], h[3], h[4]])?;
                if body_len == 0 {
                    self.in_body = false;
                    on_frame(self.tag, &[]);
                }
            }
        }
        Ok(())
    }

    fn start_frame(&mut self, tag: u8, length: [u8; 4]) -> Result<usize, ProtocolError> {
        let body_len = check_length(u32::from_be_bytes(length), self.limit)?;
        self.tag = tag;
        self.in_body = true;
        self.body_len = body_len;
        self.body_remaining = body_len;
        self.head_len = 0;
        Ok(body_len)
    }

    fn continue_body(&mut self, rest: &[u8], on_frame: &mut impl FnMut(u8, &[u8])) -> usize {
        let take = self.body_remaining.min(rest.len());
        let head_wanted = self.body_len.min(HEAD_LEN) - self.head_len;
        let head_take = head_wanted.min(take);
        self.head[self.head_len..self.head_len + head_take].copy_from_slice(&rest[..head_take]);
        self.head_len += head_take;
        self.body_remaining -= take;
        if self.body_remaining == 0 {
            self.in_body = false;
            on_frame(self.tag, &self.head[..self.head_len]);
        }
        take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::frame::encode_frame as frame;

    fn scan_in_pieces(stream: &[u8], piece: usize) -> Vec<(u8, Vec<u8>)> {
        let mut scanner = FrameScanner::new(1 << 20);
        let mut seen = Vec::new();
        for chunk in stream.chunks(piece) {
            scanner
                .scan(chunk, |tag, head| seen.push((tag, head.to_vec())))
                .unwrap();
        }
        assert!(scanner.at_boundary());
        seen
    }

    #[test]
    fn frames_are_found_however_the_stream_is_split() {
        let mut stream = frame(b'Z', b"I");
        stream.extend(frame(b'D', &[7u8; 100]));
        stream.extend(frame(b'X', b""));
        stream.extend(frame(b'E', b"SFATAL\0C57P01\0\0"));
        let expected = vec![
            (b'Z', b"I".to_vec()),
            (b'D', vec![7u8; HEAD_LEN]),
            (b'X', vec![]),
            // Short enough to be kept whole: the code is in the head.
            (b'E', b"SFATAL\0C57P01\0\0".to_vec()),
        ];
        for piece in 1..=stream.len() {
            assert_eq!(scan_in_pieces(&stream, piece), expected, "piece {piece}");
        }
    }

    #[test]
    fn mid_frame_is_not_a_boundary() {
        let mut scanner = FrameScanner::new(1024);
        let stream = frame(b'D', b"hello");
        scanner.scan(&stream[..3], |_, _| {}).unwrap();
        assert!(!scanner.at_boundary());
        scanner.scan(&stream[3..7], |_, _| {}).unwrap();
        assert!(!scanner.at_boundary());
        scanner.scan(&stream[7..], |_, _| {}).unwrap();
        assert!(scanner.at_boundary());
    }

    #[test]
    fn oversized_and_short_lengths_are_errors() {
        let mut scanner = FrameScanner::new(100);
        assert!(matches!(
            scanner.scan(&frame(b'd', &[0; 200]), |_, _| {}),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut scanner = FrameScanner::new(100);
        assert_eq!(
            scanner.scan(&[b'Q', 0, 0, 0, 2], |_, _| {}),
            Err(ProtocolError::InvalidLength(2))
        );
    }
}
