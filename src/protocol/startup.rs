//! The untagged first packet a client sends: StartupMessage, SSLRequest,
//! GSSENCRequest or CancelRequest.

use bytes::BytesMut;

use super::ProtocolError;
use super::frame::BodyReader;

/// PostgreSQL's own cap on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET_LEN: u32 = 10_000;
/// Request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Longest cancel secret protocol 3.2 allows.
const MAX_CANCEL_SECRET_LEN: usize = 256;

/// A decoded first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running in the session that holds this key.
    CancelRequest {
        /// Process id from the BackendKeyData the client was given.
        pid: i32,
        /// Secret from that BackendKeyData (4 bytes in protocol 3.0).
        secret: Vec<u8>,
    },
    /// A protocol 3.x StartupMessage.
    Startup {
        /// The minor protocol version the client asked for.
        minor: u16,
        /// Parameters in the order sent, `_pq_.` protocol options excluded.
        params: Vec<(String, String)>,
        /// `_pq_.` protocol options, which this proxy does not support.
        protocol_options: Vec<String>,
    },
}

impl StartupPacket {
    /// The value of startup parameter `name`, if the client sent it.
    pub fn param(params: &[(String, String)], name: &str) -> Option<String> {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
}

/// Splits one startup packet off the front of `buf`.
///
/// `Ok(None)` while incomplete. Lengths outside 8..=10000 bytes are errors
/// before anything is buffered, as in PostgreSQL.
pub fn read_startup_packet(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_PACKET_LEN).contains(&len) {
        return Err(ProtocolError::InvalidStartupLength(len));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    let packet = buf.split_to(len as usize);
    parse_startup_body(&packet[4..]).map(Some)
}

fn parse_startup_body(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut reader = BodyReader::new(body, "startup");
    let code = reader.i32()?;
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let pid = reader.i32()?;
            let secret = reader.rest();
            if secret.len() < 4 || secret.len() > MAX_CANCEL_SECRET_LEN {
                return Err(ProtocolError::Malformed("CancelRequest"));
            }
            Ok(StartupPacket::CancelRequest {
                pid,
                secret: secret.to_vec(),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol { major, minor });
            }
            parse_parameters(reader.rest(), minor)
        }
    }
}

fn parse_parameters(mut rest: &[u8], minor: u16) -> Result<StartupPacket, ProtocolError> {
    let mut params = Vec::new();
    let mut protocol_options = Vec::new();
    loop {
        let mut reader = BodyReader::new(rest, "startup");
        let name = reader
            .cstr()
            .map_err(|_| ProtocolError::InvalidStartupPacket("missing terminator"))?;
        if name.is_empty() {
            if !reader.rest().is_empty() {
                return Err(ProtocolError::InvalidStartupPacket(
                    "bytes after the terminator",
                ));
            }
            break;
        }
        let value = reader
            .cstr()
            .map_err(|_| ProtocolError::InvalidStartupPacket("parameter without value"))?;
        rest = reader.rest();
        let name = utf8(name)?;
        if name.starts_with("_pq_.") {
            protocol_options.push(name);
        } else {
            params.push((name, utf8(value)?));
        }
    }
    if !params.iter().any(|(name, _)| name == "user") {
        return Err(ProtocolError::InvalidStartupPacket(
            "no PostgreSQL user name specified",
        ));
    }
    Ok(StartupPacket::Startup {
        minor,
        params,
        protocol_options,
    })
}

// Parameters are kept as text because they are matched against configured
// user and database names; invalid UTF-8 is refused rather than mangled.
fn utf8(bytes: &[u8]) -> Result<String, ProtocolError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ProtocolError::InvalidStartupPacket("parameter is not valid UTF-8"))
}

/// Encodes an SSLRequest, asking a server for TLS.
pub fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
}

/// Encodes a protocol 3.0 CancelRequest for a server.
pub fn cancel_request(pid: i32, secret: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(12 + secret.len());
    buf.extend_from_slice(&(12 + secret.len() as u32).to_be_bytes());
    buf.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    buf.extend_from_slice(&pid.to_be_bytes());
    buf.extend_from_slice(secret);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, rest: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(8 + rest.len() as u32).to_be_bytes());
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(rest);
        buf
    }

    #[test]
    fn startup_message_parameters_are_read_in_order() {
        let mut buf = packet(196_608, b"user\0app\0database\0db\0_pq_.x\0y\0\0");
        let parsed = read_startup_packet(&mut buf).unwrap().unwrap();
        assert_eq!(
            parsed,
            StartupPacket::Startup {
                minor: 0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ],
                protocol_options: vec!["_pq_.x".into()],
            }
        );
    }

    #[test]
    fn special_requests_are_recognised() {
        let mut buf = packet(SSL_REQUEST_CODE, b"");
        assert_eq!(
            read_startup_packet(&mut buf).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        let mut buf = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 1, 2, 3, 4]);
        assert_eq!(
            read_startup_packet(&mut buf).unwrap(),
            Some(StartupPacket::CancelRequest {
                pid: 7,
                secret: vec![1, 2, 3, 4]
            })
        );
    }

    #[test]
    fn bad_packets_are_errors_not_panics() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 2][..]);
        assert!(read_startup_packet(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0u8, 1, 0, 0][..]);
        assert!(read_startup_packet(&mut buf).is_err());
        let mut buf = packet(2 << 16, b"user\0x\0\0");
        assert!(matches!(
            read_startup_packet(&mut buf),
            Err(ProtocolError::UnsupportedProtocol { major: 2, .. })
        ));
        let mut buf = packet(196_608, b"user\0app");
        assert!(read_startup_packet(&mut buf).is_err());
        let mut buf = packet(196_608, b"database\0x\0\0");
        assert!(read_startup_packet(&mut buf).is_err());
        let mut buf = packet(196_608, b"user\0\xff\0\0");
        assert!(read_startup_packet(&mut buf).is_err());
    }

    #[test]
    fn incomplete_packet_is_none() {
        let full = packet(196_608, b"user\0app\0\0");
        let mut buf = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(read_startup_packet(&mut buf), Ok(None));
    }
}
