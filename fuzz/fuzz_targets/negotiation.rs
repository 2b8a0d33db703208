//! Feeds arbitrary bytes to the opening of a client connection: encryption
//! requests (SSLRequest, GSSENCRequest), CancelRequest and StartupMessage,
//! as `read_opening` reads them from a socket, with TLS offered or not.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::session::{Opening, read_opening};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket whose peer sent `input` in chunks of `chunk` bytes, then closed.
struct Replay<'a> {
    input: &'a [u8],
    chunk: usize,
    written: usize,
}

impl AsyncRead for Replay<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.input.len().min(self.chunk).min(buf.remaining());
        buf.put_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let tls_offered = control & 1 == 1;
    let chunk = usize::from(control >> 1).max(1);
    let mut stream = Replay { input, chunk, written: 0 };
    let mut buf = BytesMut::new();
    let opened = runtime().block_on(read_opening(&mut stream, &mut buf, tls_offered));
    if let Ok(Opening::TlsRequest) = opened {
        // TLS is only ever accepted when offered, and with nothing smuggled behind it.
        assert!(tls_offered);
        assert!(buf.is_empty());
    }
    // At most three encryption answers of one byte, plus a NegotiateProtocolVersion.
    assert!(stream.written <= 3 + 10_000 + 16);
});
