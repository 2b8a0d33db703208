//! Just enough DER to walk a certificate that rustls has already verified:
//! single-byte tags, definite lengths, every length checked against the
//! bytes present. Anything else reads as `None`, never a panic.

/// SEQUENCE (constructed).
pub const SEQUENCE: u8 = 0x30;
/// SET (constructed).
pub const SET: u8 = 0x31;
/// INTEGER.
pub const INTEGER: u8 = 0x02;
/// BOOLEAN.
pub const BOOLEAN: u8 = 0x01;
/// OCTET STRING.
pub const OCTET_STRING: u8 = 0x04;
/// OBJECT IDENTIFIER.
pub const OID: u8 = 0x06;

/// Splits one DER element off the front: (its tag, its contents, the rest).
pub fn any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        // Multi-byte tag numbers do not occur where certificates are walked.
        return None;
    }
    let (&len_byte, rest) = rest.split_first()?;
    let (len, rest) = if len_byte < 0x80 {
        (usize::from(len_byte), rest)
    } else {
        // 0x80 (indefinite length) is not DER; more than 4 bytes is absurd.
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| {
        let (contents, rest) = rest.split_at(len);
        (tag, contents, rest)
    })
}

/// Splits one DER element with `tag` off the front: (its contents, the rest).
pub fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match any(input)? {
        (found, contents, rest) if found == tag => Some((contents, rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_against_the_input() {
        assert_eq!(any(b"\x04\x02ab"), Some((4, &b"ab"[..], &b""[..])));
        assert_eq!(any(b"\x04\x81\x01a!"), Some((4, &b"a"[..], &b"!"[..])));
        for bad in [
            &b""[..],
            b"\x04",
            b"\x04\x03ab",
            b"\x04\x80ab",
            b"\x04\x85\x01\x01\x01\x01\x01",
            b"\x04\x84\xff\xff\xff\xff",
            b"\x1f\x01\x01a",
        ] {
            assert_eq!(any(bad), None, "{bad:?}");
        }
        assert_eq!(element(b"\x04\x01a", SEQUENCE), None);
    }
}
