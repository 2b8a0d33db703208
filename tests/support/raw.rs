//! A hand-driven protocol client for tests that need exact bytes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Harness;

/// Sends `bytes` and returns what the proxy answered before closing (bounded wait).
pub async fn send_raw(h: &Harness, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut reply)).await;
    reply
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = (body.len() as u32 + 4).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

pub fn sqlstate(reply: &[u8]) -> Option<String> {
    if reply.first() != Some(&b'E') {
        return None;
    }
    let text = String::from_utf8_lossy(&reply[5..]).into_owned();
    text.split('\0')
        .find_map(|f| f.strip_prefix('C'))
        .map(str::to_owned)
}

/// Logs in through a raw socket as `app` (trust is not configured, so this
/// performs SCRAM with postgres-protocol's client) and returns the stream.
pub async fn raw_session(h: &Harness) -> TcpStream {
    raw_login(h.proxy.addr).await.0
}

/// Logs in as `app` at `addr` (SCRAM); returns the stream at ReadyForQuery
/// and the BackendKeyData (process id, secret) the proxy issued.
pub async fn raw_login(addr: std::net::SocketAddr) -> (TcpStream, (i32, i32)) {
    raw_login_to(addr, "appdb").await
}

/// [`raw_login`] to `database`, with no other startup parameter.
pub async fn raw_login_to(addr: std::net::SocketAddr, database: &str) -> (TcpStream, (i32, i32)) {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut key = (0, 0);
    stream
        .write_all(&startup_packet(&[("user", "app"), ("database", database)]))
        .await
        .unwrap();
    let mut scram = ScramSha256::new(
        super::APP_PASSWORD.as_bytes(),
        ChannelBinding::unsupported(),
    );
    let mut buf = bytes::BytesMut::new();
    loop {
        let (tag, body) = read_message(&mut stream).await;
        match (
            tag,
            body.get(..4)
                .map(|c| i32::from_be_bytes(c.try_into().unwrap())),
        ) {
            (b'R', Some(10)) => {
                postgres_protocol::message::frontend::sasl_initial_response(
                    "SCRAM-SHA-256",
                    scram.message(),
                    &mut buf,
                )
                .unwrap();
            }
            (b'R', Some(11)) => {
                scram.update(&body[4..]).unwrap();
                postgres_protocol::message::frontend::sasl_response(scram.message(), &mut buf)
                    .unwrap();
            }
            (b'R', Some(12)) => scram.finish(&body[4..]).unwrap(),
            (b'K', _) if body.len() >= 8 => {
                key = (
                    i32::from_be_bytes(body[..4].try_into().unwrap()),
                    i32::from_be_bytes(body[4..8].try_into().unwrap()),
                );
            }
            (b'Z', _) => return (stream, key),
            (b'E', _) => panic!("login failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
        if !buf.is_empty() {
            stream.write_all(&buf).await.unwrap();
            buf.clear();
        }
    }
}

pub async fn read_message(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.unwrap();
    let len = u32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.unwrap();
    (header[0], body)
}
