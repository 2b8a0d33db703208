//! Is an idle server connection still usable? A non-blocking liveness
//! probe, a real round trip for connections idle a while, and the polite
//! way to close one.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::backend::ServerConnection;
use crate::protocol::io::{ReadError, read_message};

/// A simple Query with an empty query string.
const EMPTY_QUERY: &[u8] = b"Q\0\0\0\x05\0";
/// Terminate.
const TERMINATE: &[u8] = b"X\0\0\0\x04";
/// The answer to an empty query is two tiny messages; anything bigger is
/// not an answer we expect (notices aside, which are small too).
const PING_MESSAGE_LIMIT: usize = 16 * 1024;

/// Why an idle connection is not handed out.
#[derive(Debug, Error)]
pub(super) enum HealthError {
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// The server sent bytes while the connection was idle (typically a
    /// FATAL ErrorResponse from `pg_terminate_backend` or a shutdown).
    #[error("server sent {0} unexpected bytes while the connection was idle")]
    UnexpectedData(usize),
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The empty-query round trip failed to read.
    #[error("health check failed: {0}")]
    Read(#[from] ReadError),
    /// The empty-query round trip got an answer it did not expect.
    #[error("health check got message type {:?} instead of {expected}", char::from(*tag))]
    UnexpectedMessage {
        /// The tag received.
        tag: u8,
        /// What was due.
        expected: &'static str,
    },
    /// The empty-query round trip took too long.
    #[error("health check timed out after {0:?}")]
    Timeout(Duration),
}

/// Checks, without waiting, that the server has neither closed `conn` nor
/// sent anything on it since it went idle.
///
/// This sees what the runtime's I/O driver has already seen: an event that
/// arrived a moment ago may not be visible yet, so a session must still
/// handle a connection that fails on first use.
pub(super) fn check_alive(conn: &ServerConnection) -> Result<(), HealthError> {
    if !conn.pending.is_empty() {
        return Err(HealthError::UnexpectedData(conn.pending.len()));
    }
    let mut probe = [0u8; 64];
    match conn.stream.try_read(&mut probe) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(HealthError::Io(e)),
        Ok(0) => Err(HealthError::Closed),
        Ok(n) => Err(HealthError::UnexpectedData(n)),
    }
}

/// Sends an empty query and expects EmptyQueryResponse then
/// ReadyForQuery(idle) within `timeout`, so a connection that looks alive
/// but whose server is gone (or frozen) is caught.
pub(super) async fn ping(
    conn: &mut ServerConnection,
    timeout: Duration,
) -> Result<(), HealthError> {
    tokio::time::timeout(timeout, round_trip(conn))
        .await
        .map_err(|_| HealthError::Timeout(timeout))?
}

async fn round_trip(conn: &mut ServerConnection) -> Result<(), HealthError> {
    conn.stream.write_all(EMPTY_QUERY).await?;
    let mut buf = BytesMut::with_capacity(64);
    expect(conn, &mut buf, b'I', "EmptyQueryResponse").await?;
    let ready = expect(conn, &mut buf, b'Z', "ReadyForQuery").await?;
    if ready.as_ref() != b"I" {
        return Err(HealthError::UnexpectedMessage {
            tag: b'Z',
            expected: "ReadyForQuery (idle)",
        });
    }
    if !buf.is_empty() {
        return Err(HealthError::UnexpectedData(buf.len()));
    }
    Ok(())
}

/// Reads the next message, skipping the asynchronous ones a server may
/// send at any time (NoticeResponse, ParameterStatus), and checks its tag.
async fn expect(
    conn: &mut ServerConnection,
    buf: &mut BytesMut,
    tag: u8,
    expected: &'static str,
) -> Result<bytes::Bytes, HealthError> {
    loop {
        let frame = read_message(&mut conn.stream, buf, PING_MESSAGE_LIMIT).await?;
        match frame.tag {
            t if t == tag => return Ok(frame.body),
            b'N' | b'S' => continue,
            other => {
                return Err(HealthError::UnexpectedMessage {
                    tag: other,
                    expected,
                });
            }
        }
    }
}

/// Closes `conn`: sends Terminate if the socket takes it right away (best
/// effort, never waits), then drops the socket.
pub(super) fn terminate(conn: Box<ServerConnection>) {
    // A partial write leaves a truncated message, which the server treats
    // like a dropped connection: no worse than not sending it.
    let _ = conn.stream.try_write(TERMINATE);
}
