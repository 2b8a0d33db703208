//! The server's default parameters, as reported at login.

use bytes::{Bytes, BytesMut};

use crate::protocol::frame::HEADER_LEN;

/// The ParameterStatus ('S') frames among the login messages `startup`
/// (tag and length included, in the server's order), without the notices.
///
/// `startup` comes from our own login code, so it is well formed; a
/// truncated tail is ignored rather than trusted.
pub(super) fn parameter_status_frames(startup: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(startup.len());
    let mut rest = startup;
    while rest.len() >= HEADER_LEN {
        let declared = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(frame) = rest.get(..declared.saturating_add(1)) else {
            break;
        };
        if declared < 4 {
            break;
        }
        if frame[0] == b'S' {
            out.extend_from_slice(frame);
        }
        rest = &rest[frame.len()..];
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::frame::encode_frame as frame;

    #[test]
    fn keeps_parameter_status_and_drops_notices() {
        let tz = frame(b'S', b"TimeZone\0UTC\0");
        let notice = frame(b'N', b"SNOTICE\0Mhello\0\0");
        let enc = frame(b'S', b"client_encoding\0UTF8\0");
        let input = [tz.clone(), notice, enc.clone()].concat();
        assert_eq!(
            parameter_status_frames(&input).as_ref(),
            [tz, enc].concat().as_slice()
        );
    }

    #[test]
    fn ignores_a_truncated_or_invalid_tail() {
        let tz = frame(b'S', b"TimeZone\0UTC\0");
        let mut input = tz.clone();
        input.extend_from_slice(&frame(b'S', b"DateStyle\0ISO\0")[..7]);
        assert_eq!(parameter_status_frames(&input).as_ref(), tz.as_slice());
        let bad = [tz.clone(), vec![b'S', 0, 0, 0, 2]].concat();
        assert_eq!(parameter_status_frames(&bad).as_ref(), tz.as_slice());
        assert!(parameter_status_frames(&[]).is_empty());
    }
}
