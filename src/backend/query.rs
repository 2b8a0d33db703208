//! Queries the proxy runs on a server connection for itself (applying a
//! client's settings, reading them back, probing a node); the client sees
//! none of it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::backend::ServerConnection;
use crate::protocol::frame::BodyReader;
use crate::protocol::io::{ReadError, read_message};

/// Internal queries are small; their answers must be too.
const INTERNAL_MESSAGE_LIMIT: usize = 1024 * 1024;
/// An internal query that takes longer than this means a sick connection.
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an internal query failed.
#[derive(Debug, Error)]
pub enum InternalError {
    /// The connection failed or timed out.
    #[error("server connection failed: {0}")]
    Connection(String),
    /// The server answered with an error (raw ErrorResponse frame kept).
    #[error("server refused an internal query")]
    Refused(Bytes),
}

impl From<ReadError> for InternalError {
    fn from(error: ReadError) -> Self {
        Self::Connection(error.to_string())
    }
}

/// What an internal query returned.
#[derive(Debug, Default)]
pub struct InternalResult {
    /// Text rows.
    pub rows: Vec<Vec<String>>,
    /// ParameterStatus frames the server sent meanwhile, whole.
    pub parameter_status: Vec<Bytes>,
}

/// Runs `sql` as a simple query and reads everything up to ReadyForQuery.
pub async fn query(
    conn: &mut ServerConnection,
    sql: &str,
) -> Result<InternalResult, InternalError> {
    tokio::time::timeout(INTERNAL_TIMEOUT, run(conn, sql))
        .await
        .map_err(|_| InternalError::Connection("internal query timed out".into()))?
}

async fn run(conn: &mut ServerConnection, sql: &str) -> Result<InternalResult, InternalError> {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    out.extend_from_slice(b"Q");
    out.extend_from_slice(&(sql.len() as u32 + 5).to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    out.extend_from_slice(b"\0");
    conn.stream
        .write_all(&out)
        .await
        .map_err(|e| InternalError::Connection(e.to_string()))?;
    let mut buf = std::mem::take(&mut conn.pending);
    let mut result = InternalResult::default();
    let mut refused = None;
    loop {
        let frame = read_message(&mut conn.stream, &mut buf, INTERNAL_MESSAGE_LIMIT).await?;
        match frame.tag {
            b'D' => result.rows.push(text_row(&frame.body)),
            b'S' => result.parameter_status.push(whole(frame.tag, &frame.body)),
            b'E' => refused = Some(whole(frame.tag, &frame.body)),
            b'Z' => break,
            _ => {}
        }
    }
    conn.pending = buf;
    match refused {
        Some(error) => Err(InternalError::Refused(error)),
        None => Ok(result),
    }
}

fn text_row(body: &[u8]) -> Vec<String> {
    let mut reader = BodyReader::new(body, "DataRow");
    let columns = reader
        .bytes(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .unwrap_or(0);
    let mut row = Vec::with_capacity(columns as usize);
    for _ in 0..columns {
        let Ok(len) = reader.i32() else { break };
        let value = usize::try_from(len)
            .ok()
            .and_then(|len| reader.bytes(len).ok())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        row.push(value);
    }
    row
}

/// Re-frames a message body.
pub fn whole(tag: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out.freeze()
}

/// The parameter name of a ParameterStatus frame (whole frame given).
pub fn parameter_name(frame: &[u8]) -> &[u8] {
    let body = frame.get(5..).unwrap_or_default();
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    &body[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows_decode_to_text_and_nulls_to_empty() {
        let body = b"\0\x02\0\0\0\x03abc\xff\xff\xff\xff";
        assert_eq!(text_row(body), vec!["abc".to_owned(), String::new()]);
        assert!(text_row(b"\0\x05\0").is_empty());
    }

    #[test]
    fn parameter_names_are_read_from_whole_frames() {
        let frame = whole(b'S', b"TimeZone\0UTC\0");
        assert_eq!(parameter_name(&frame), b"TimeZone");
    }
}
