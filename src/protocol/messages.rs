//! Messages the proxy writes itself (as opposed to relaying a peer's bytes).
//!
//! Encoded with pgwire's message types; none of these is on the per-message
//! hot path.

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};

/// SQLSTATE and message of an error the proxy reports to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// "FATAL" closes the connection; "ERROR" does not.
    pub severity: &'static str,
    /// Five-character SQLSTATE.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ClientError {
    /// A FATAL error: the proxy closes the connection after sending it.
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "FATAL",
            code,
            message: message.into(),
        }
    }

    /// Appends this error as an ErrorResponse to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let response = ErrorResponse::new(vec![
            (b'S', self.severity.to_owned()),
            (b'V', self.severity.to_owned()),
            (b'C', self.code.to_owned()),
            (b'M', self.message.clone()),
        ]);
        encode(&response, buf);
    }

    /// This error as a standalone ErrorResponse.
    pub fn to_bytes(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf
    }
}

// Invariant: pgwire's encode fails only for messages above its size limits,
// and every message built here is a few hundred bytes at most.
fn encode<M: Message>(message: &M, buf: &mut BytesMut) {
    if let Err(error) = message.encode(buf) {
        tracing::error!(%error, "failed to encode a proxy-generated message");
    }
}

/// AuthenticationOk.
pub fn authentication_ok(buf: &mut BytesMut) {
    encode(&Authentication::Ok, buf);
}

/// AuthenticationMD5Password with `salt`.
pub fn authentication_md5_password(buf: &mut BytesMut, salt: [u8; 4]) {
    buf.extend_from_slice(b"R\0\0\0\x0c\0\0\0\x05");
    buf.extend_from_slice(&salt);
}

/// AuthenticationSASL offering the given mechanisms.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let names = mechanisms.iter().map(|m| (*m).to_owned()).collect();
    encode(&Authentication::SASL(names), buf);
}

/// AuthenticationSASLContinue carrying a server-first-message.
pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    encode(
        &Authentication::SASLContinue(bytes::Bytes::copy_from_slice(data)),
        buf,
    );
}

/// AuthenticationSASLFinal carrying a server-final-message.
pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    encode(
        &Authentication::SASLFinal(bytes::Bytes::copy_from_slice(data)),
        buf,
    );
}

/// BackendKeyData with a protocol 3.0 (4-byte) secret.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    encode(&BackendKeyData::new(pid, SecretKey::I32(secret)), buf);
}

/// ParseComplete, whole (no body).
pub const PARSE_COMPLETE: &[u8] = b"1\0\0\0\x04";
/// BindComplete, whole.
pub const BIND_COMPLETE: &[u8] = b"2\0\0\0\x04";
/// CloseComplete, whole.
pub const CLOSE_COMPLETE: &[u8] = b"3\0\0\0\x04";
/// NoData, whole.
pub const NO_DATA: &[u8] = b"n\0\0\0\x04";
/// Terminate (frontend), whole.
pub const TERMINATE: &[u8] = b"X\0\0\0\x04";

/// ReadyForQuery with status idle.
pub fn ready_for_query_idle(buf: &mut BytesMut) {
    encode(&ReadyForQuery::new(TransactionStatus::Idle), buf);
}

/// ReadyForQuery with `status` (`I`, `T` or `E`), written directly: the
/// held-BEGIN path answers with it per request.
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    buf.extend_from_slice(&[b'Z', 0, 0, 0, 5, status]);
}

/// CommandComplete with `tag` (e.g. "SET").
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    encode(&CommandComplete::new(tag.to_owned()), buf);
}

/// NegotiateProtocolVersion: the proxy speaks 3.0 and none of `options`.
pub fn negotiate_protocol_version(buf: &mut BytesMut, options: &[String]) {
    encode(&NegotiateProtocolVersion::new(0, options.to_vec()), buf);
}

/// The SQLSTATE field (`C`) of an ErrorResponse or NoticeResponse body.
pub fn error_code(body: &[u8]) -> Option<&[u8]> {
    body.split(|&b| b == 0)
        .take_while(|field| !field.is_empty())
        .find_map(|field| field.strip_prefix(b"C"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_carries_severity_code_and_message() {
        let bytes = ClientError::fatal("28P01", "password authentication failed").to_bytes();
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len());
        let text = String::from_utf8_lossy(&bytes[5..]);
        assert!(text.contains("SFATAL\0"));
        assert!(text.contains("C28P01\0"));
        assert!(text.contains("Mpassword authentication failed\0"));
    }

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut buf = BytesMut::new();
        ready_for_query_idle(&mut buf);
        assert_eq!(&buf[..], b"Z\0\0\0\x05I");
        ready_for_query(&mut buf, b'T');
        assert_eq!(&buf[6..], b"Z\0\0\0\x05T");
    }
}
