//! `switchyard_errors_total{class}`: ErrorResponses sent or relayed to
//! clients, by SQLSTATE class, counted without a lock or an allocation.
//!
//! A class is two characters of `0-9A-Z`, so there are at most 36 × 36 of
//! them. Each has a cell resolved on its first error (the label lookup,
//! which takes the collector's lock, happens once per class per process);
//! after that, counting is an atomic load and an atomic add.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::error_code;

/// Characters a SQLSTATE is made of.
const SYMBOLS: usize = 36;
/// The class an error without a readable SQLSTATE is counted under
/// (PostgreSQL's "internal error").
const UNREADABLE: [u8; 2] = *b"XX";

/// The per-class children of `switchyard_errors_total`.
#[derive(Debug)]
pub struct ErrorClasses {
    family: IntCounterVec,
    cells: Box<[OnceLock<IntCounter>]>,
}

impl ErrorClasses {
    pub(super) fn new(family: IntCounterVec) -> Self {
        Self {
            family,
            cells: (0..SYMBOLS * SYMBOLS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one error whose SQLSTATE is `code` (its first two
    /// characters are the class; anything else counts as `XX`).
    pub fn count(&self, code: &[u8]) {
        let (index, class) = class_of(code);
        self.cells[index]
            .get_or_init(|| {
                // Both bytes are ASCII digits or capitals.
                let label = std::str::from_utf8(&class).unwrap_or("XX");
                self.family.with_label_values(&[label])
            })
            .inc();
    }

    /// Counts `frame` if it is an ErrorResponse (tag, length and at least
    /// the start of its body); other frames are ignored.
    pub fn count_frame(&self, frame: &[u8]) {
        if frame.first() == Some(&b'E') {
            self.count_body(frame.get(HEADER_LEN..).unwrap_or_default());
        }
    }

    /// Counts an ErrorResponse from its body, or from the first bytes of
    /// it: the code is read as far as it goes (two characters name the
    /// class).
    pub fn count_body(&self, body: &[u8]) {
        self.count(error_code(body).unwrap_or(&UNREADABLE));
    }

    /// Counts every ErrorResponse among `bytes`, a run of whole frames
    /// (a message the proxy wrote itself); stops at a partial frame.
    pub fn count_frames(&self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(header) = rest.get(..HEADER_LEN) {
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let Some(frame) = rest.get(..len.saturating_add(1)) else {
                return;
            };
            self.count_frame(frame);
            rest = &rest[frame.len().max(HEADER_LEN)..];
        }
    }
}

/// The cell index and label of `code`'s class.
fn class_of(code: &[u8]) -> (usize, [u8; 2]) {
    let index = |[a, b]: [u8; 2]| Some(symbol(a)? * SYMBOLS + symbol(b)?);
    let class = match code {
        [a, b, ..] => [*a, *b],
        _ => UNREADABLE,
    };
    match index(class) {
        Some(i) => (i, class),
        // UNREADABLE is two capitals: it has an index.
        None => (index(UNREADABLE).unwrap_or_default(), UNREADABLE),
    }
}

/// The index of a SQLSTATE character.
fn symbol(byte: u8) -> Option<usize> {
    match byte {
        b'0'..=b'9' => Some(usize::from(byte - b'0')),
        b'A'..=b'Z' => Some(10 + usize::from(byte - b'A')),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::ClientError;
    use prometheus::Opts;

    fn classes() -> ErrorClasses {
        ErrorClasses::new(IntCounterVec::new(Opts::new("errors_total", "-"), &["class"]).unwrap())
    }

    fn get(classes: &ErrorClasses, class: &str) -> u64 {
        classes.family.with_label_values(&[class]).get()
    }

    #[test]
    fn errors_are_counted_by_class() {
        let c = classes();
        c.count(b"42P01");
        c.count(b"42601");
        c.count(b"4");
        c.count(b"a1000");
        assert_eq!(get(&c, "42"), 2);
        assert_eq!(get(&c, "XX"), 2);
    }

    #[test]
    fn frames_are_read_whole_or_by_their_head() {
        let c = classes();
        let mut two = ClientError::fatal("57P01", "shutting down").to_bytes();
        two.extend_from_slice(b"Z\0\0\0\x05I");
        two.extend_from_slice(&ClientError::fatal("08006", "lost").to_bytes());
        c.count_frames(&two);
        assert_eq!(get(&c, "57"), 1);
        assert_eq!(get(&c, "08"), 1);
        // The scanner's head may cut the code: two characters are enough.
        c.count_body(b"SERROR\0VERROR\0C25");
        assert_eq!(get(&c, "25"), 1);
        c.count_frames(b"E\0\0");
        c.count_frame(b"Z\0\0\0\x05I");
        assert_eq!(get(&c, "XX"), 0);
    }
}
