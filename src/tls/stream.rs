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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::tls::{Acceptor, TlsFiles};

    /// A TLS pair over loopback: (proxy side as a ClientStream, peer side).
    async fn tls_pair() -> (ClientStream, tokio_rustls::client::TlsStream<TcpStream>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let acceptor = Acceptor::load(TlsFiles {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
            client_ca: None,
        })
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .unwrap()
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.unwrap().stream
        };
        let (peer, ours) = tokio::join!(connect, accept);
        (ours, peer)
    }

    /// Both directions at once through the borrowed halves, far more than
    /// the socket buffers hold: nothing stalls and every byte arrives.
    #[tokio::test]
    async fn tls_halves_move_data_both_ways_at_once() {
        const LEN: usize = 4 * 1024 * 1024;
        let (mut ours, peer) = tls_pair().await;
        let (mut peer_read, mut peer_write) = tokio::io::split(peer);
        let peer_side = tokio::spawn(async move {
            let send = async {
                peer_write.write_all(&vec![1u8; LEN]).await.unwrap();
                peer_write.flush().await.unwrap();
            };
            let receive = async {
                let mut got = vec![0u8; LEN];
                peer_read.read_exact(&mut got).await.unwrap();
                assert!(got.iter().all(|&b| b == 2));
            };
            tokio::join!(send, receive);
        });
        let (mut read, mut write) = ours.split();
        let send = async {
            // Small writes, as the relays make, without an explicit flush.
            for chunk in vec![2u8; LEN].chunks(16 * 1024) {
                write.write_all(chunk).await.unwrap();
            }
        };
        let receive = async {
            let mut got = vec![0u8; LEN];
            read.read_exact(&mut got).await.unwrap();
            assert!(got.iter().all(|&b| b == 1));
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            tokio::join!(send, receive);
            peer_side.await.unwrap();
        })
        .await
        .expect("no deadlock");
    }

    #[tokio::test]
    async fn try_read_reports_nothing_yet_then_data() {
        let (ours, mut peer) = tls_pair().await;
        let mut buf = [0u8; 16];
        let err = ours.try_read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        peer.write_all(b"hello").await.unwrap();
        peer.flush().await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match ours.try_read(&mut buf) {
                Ok(n) => {
                    assert_eq!(&buf[..n], b"hello");
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline);
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(ours.is_tls());
    }
}
