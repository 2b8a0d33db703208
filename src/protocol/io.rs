//! Reading whole messages from a socket, for the phases that need them
//! (startup and authentication), with the same limits as the decoders.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Frame, ProtocolError, StartupPacket, read_frame, read_startup_packet};

/// Why a message could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent invalid bytes.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
}

/// Reads one tagged message, buffering in `buf` (leftover bytes stay there).
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Frame, ReadError> {
    loop {
        if let Some(frame) = read_frame(buf, limit)? {
            return Ok(frame);
        }
        fill(reader, buf).await?;
    }
}

/// Reads one untagged startup packet.
pub async fn read_startup<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<StartupPacket, ReadError> {
    loop {
        if let Some(packet) = read_startup_packet(buf)? {
            return Ok(packet);
        }
        fill(reader, buf).await?;
    }
}

async fn fill<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Result<(), ReadError> {
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(4096);
    }
    if reader.read_buf(buf).await? == 0 {
        return Err(ReadError::Closed);
    }
    Ok(())
}
