//! Whole-frame decoding for the messages the proxy must read in full
//! (authentication exchanges, startup responses).
//!
//! The relay hot path does not use this: it streams frames through
//! [`crate::protocol::FrameScanner`] without buffering bodies.

use bytes::{Buf, Bytes, BytesMut};

use super::ProtocolError;

/// Size of a frame header: one tag byte and a four-byte big-endian length.
pub const HEADER_LEN: usize = 5;

/// One complete protocol message: its tag and body (length field removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte, e.g. `b'Q'`.
    pub tag: u8,
    /// The message body, without tag and length.
    pub body: Bytes,
}

/// Checks a frame's declared length (which counts itself) against the limit.
pub fn check_length(declared: u32, limit: usize) -> Result<usize, ProtocolError> {
    if declared < 4 {
        return Err(ProtocolError::InvalidLength(declared));
    }
    let total = u64::from(declared) + 1;
    if total > limit as u64 {
        return Err(ProtocolError::TooLarge {
            size: total,
            limit: limit as u64,
        });
    }
    Ok(declared as usize - 4)
}

/// Splits one complete frame off the front of `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete; the caller reads more
/// and calls again. A frame whose length exceeds `limit` (tag and length
/// included) is an error before any of its body is buffered.
pub fn read_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let declared = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let body_len = check_length(declared, limit)?;
    if buf.len() < HEADER_LEN + body_len {
        buf.reserve(HEADER_LEN + body_len - buf.len());
        return Ok(None);
    }
    let tag = buf[0];
    buf.advance(HEADER_LEN);
    let body = buf.split_to(body_len).freeze();
    Ok(Some(Frame { tag, body }))
}

/// A bounds-checked cursor over one frame's body.
#[derive(Debug)]
pub struct BodyReader<'a> {
    rest: &'a [u8],
    message: &'static str,
}

impl<'a> BodyReader<'a> {
    /// Reads the body of a message named `message` (used in errors).
    pub fn new(body: &'a [u8], message: &'static str) -> Self {
        Self {
            rest: body,
            message,
        }
    }

    fn malformed(&self) -> ProtocolError {
        ProtocolError::Malformed(self.message)
    }

    /// Reads a big-endian i32.
    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let bytes = self.bytes(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(self.malformed());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Reads a NUL-terminated string (the NUL is consumed, not returned).
    pub fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed())?;
        let (head, tail) = self.rest.split_at(end);
        self.rest = &tail[1..];
        Ok(head)
    }

    /// The unread remainder.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

/// One frame (tag, length, body) encoded by hand, for unit tests.
#[cfg(test)]
pub(crate) fn encode_frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Appends [`encode_frame`]`(tag, body)` to `out`, for unit tests.
#[cfg(test)]
pub(crate) fn push_frame(out: &mut bytes::BytesMut, tag: u8, body: &[u8]) {
    out.extend_from_slice(&encode_frame(tag, body));
}

/// A simple Query frame of `sql`, for unit tests.
#[cfg(test)]
pub(crate) fn query_frame(sql: &str) -> bytes::BytesMut {
    let mut out = bytes::BytesMut::new();
    push_frame(&mut out, b'Q', format!("{sql}\0").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn frame_bytes(tag: u8, body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u8(tag);
        buf.put_u32(body.len() as u32 + 4);
        buf.put_slice(body);
        buf
    }

    #[test]
    fn incomplete_frame_is_none_until_complete() {
        let full = frame_bytes(b'Q', b"select 1\0");
        let mut buf = BytesMut::from(&full[..7]);
        assert_eq!(read_frame(&mut buf, 1024), Ok(None));
        buf.extend_from_slice(&full[7..]);
        let frame = read_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.tag, b'Q');
        assert_eq!(&frame.body[..], b"select 1\0");
        assert!(buf.is_empty());
    }

    #[test]
    fn length_below_four_is_rejected() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(
            read_frame(&mut buf, 1024),
            Err(ProtocolError::InvalidLength(3))
        );
    }

    #[test]
    fn oversized_frame_is_rejected_before_its_body_arrives() {
        let mut buf = BytesMut::from(&[b'd', 0x40, 0, 0, 0][..]);
        assert!(matches!(
            read_frame(&mut buf, 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn body_reader_refuses_to_read_past_the_end() {
        let mut reader = BodyReader::new(b"ab\0\0", "test");
        assert_eq!(reader.cstr().unwrap(), b"ab");
        assert!(reader.i32().is_err());
        assert_eq!(reader.cstr().unwrap(), b"");
        assert!(reader.cstr().is_err());
        assert!(reader.bytes(1).is_err());
    }
}
