//! A socket that is plain TCP or TLS over TCP, and its two halves.
//!
//! The relays read and write one connection from two futures in one task,
//! through halves that borrow it (no allocation per split, which transaction
//! pooling does once per transaction). Plain TCP uses tokio's borrowing
//! split. A TLS session's two directions share one rustls state, so its
//! halves share it through a mutex: both halves live in the same task and
//! never hold the lock across an await, so the lock is never contended and
//! costs one uncontended atomic per poll. Nothing safe and lock-free exists
//! for this (tokio's own `split` allocates and locks too).

use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp;

/// The client side of the proxy: a client connection, plain or TLS.
pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;
/// The server side of the proxy: a connection to a PostgreSQL node, plain or TLS.
pub type ServerStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// A TCP connection, with or without TLS on it.
///
/// Reads and writes behave as on the bare socket, with one addition for
/// TLS: ciphertext that a write could not hand to a full socket is sent by
/// the next read or write on either half, so a caller that writes, then
/// only reads, never leaves data stranded inside the TLS layer.
#[derive(Debug)]
pub enum MaybeTls<T> {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: a TLS session is large).
    Tls(Box<Mutex<T>>),
}

/// The reading half of a [`MaybeTls`], borrowed from it.
#[derive(Debug)]
pub enum ReadHalf<'a, T> {
    /// Plain TCP.
    Plain(tcp::ReadHalf<'a>),
    /// TLS over TCP.
    Tls(&'a Mutex<T>),
}

/// The writing half of a [`MaybeTls`], borrowed from it.
#[derive(Debug)]
pub enum WriteHalf<'a, T> {
    /// Plain TCP.
    Plain(tcp::WriteHalf<'a>),
    /// TLS over TCP.
    Tls(&'a Mutex<T>),
}

fn lock<T>(tls: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside rustls while locked leaves a session that will fail
    // its next operation cleanly; nothing here depends on the poison flag.
    tls.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> MaybeTls<T> {
    /// Wraps an established TLS session.
    pub fn tls(stream: T) -> Self {
        Self::Tls(Box::new(Mutex::new(stream)))
    }

    /// True when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Splits into a reading and a writing half that borrow `self`.
    pub fn split(&mut self) -> (ReadHalf<'_, T>, WriteHalf<'_, T>) {
        match self {
            Self::Plain(tcp) => {
                let (read, write) = tcp.split();
                (ReadHalf::Plain(read), WriteHalf::Plain(write))
            }
            Self::Tls(tls) => {
                let tls: &Mutex<T> = tls;
                (ReadHalf::Tls(tls), WriteHalf::Tls(tls))
            }
        }
    }

    /// Runs `f` on the TLS session, if there is one.
    pub fn with_tls<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(tls) => Some(f(&lock(tls))),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> MaybeTls<T> {
    /// Reads what is available without waiting: `WouldBlock` when nothing is.
    /// For TLS, records that carry no application data (e.g. session
    /// tickets) are consumed and count as nothing.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.try_read(buf),
            Self::Tls(tls) => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut read_buf = ReadBuf::new(buf);
                match poll_tls_read(&mut *lock(tls), &mut cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => Ok(read_buf.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Writes what the socket takes right away, without waiting.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.try_write(buf),
            Self::Tls(tls) => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut tls = lock(tls);
                let written = match Pin::new(&mut *tls).poll_write(&mut cx, buf) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
                };
                let _ = Pin::new(&mut *tls).poll_flush(&mut cx);
                Ok(written)
            }
        }
    }
}

/// Reads from a TLS session after pushing out any ciphertext a previous
/// write left behind (the socket was full then).
fn poll_tls_read<T: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut T,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    // Pending here registers for writability, so the task wakes to finish.
    let _ = Pin::new(&mut *tls).poll_flush(cx);
    Pin::new(tls).poll_read(cx, buf)
}

fn poll_tls_write<T: AsyncWrite + Unpin>(
    tls: &mut T,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    Pin::new(tls).poll_write(cx, buf)
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => poll_tls_read(&mut *lock(tls), cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => poll_tls_write(&mut *lock(tls), cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(&mut *lock(tls)).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(&mut *lock(tls)).poll_shutdown(cx),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ReadHalf<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(half) => Pin::new(half).poll_read(cx, buf),
            Self::Tls(tls) => poll_tls_read(&mut *lock(tls), cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WriteHalf<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(half) => Pin::new(half).poll_write(cx, buf),
            Self::Tls(tls) => poll_tls_write(&mut *lock(tls), cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(half) => Pin::new(half).poll_flush(cx),
            Self::Tls(tls) => Pin::new(&mut *lock(tls)).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(half) => Pin::new(half).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(&mut *lock(tls)).poll_shutdown(cx),
        }
    }
}
