//! Protocol features no high-level client exercises, driven byte by byte:
//! FunctionCall, protocol-version negotiation, pipelined startup.

mod support;

use support::Harness;
use support::raw::{raw_session, read_message, startup_packet};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn function_call_is_relayed() {
    let h = Harness::start();
    let oid: u32 = h
        .admin_sql("SELECT 'int4pl'::regproc::oid")
        .parse()
        .unwrap();
    let mut session = raw_session(&h).await;
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&0i16.to_be_bytes()); // all arguments in text
    body.extend_from_slice(&2i16.to_be_bytes());
    for arg in [b"2", b"3"] {
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(arg);
    }
    body.extend_from_slice(&0i16.to_be_bytes()); // text result
    let mut message = vec![b'F'];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend(body);
    session.write_all(&message).await.unwrap();
    let (tag, result) = read_message(&mut session).await;
    assert_eq!(tag, b'V', "{}", String::from_utf8_lossy(&result));
    assert_eq!(&result[..], b"\0\0\0\x015");
    let (tag, status) = read_message(&mut session).await;
    assert_eq!((tag, &status[..]), (b'Z', &b"I"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn newer_minor_protocol_is_negotiated_down_to_3_0() {
    let h = Harness::start();
    let mut packet = startup_packet(&[("user", "app"), ("_pq_.fancy", "1")]);
    packet[4..8].copy_from_slice(&((3i32 << 16) | 2).to_be_bytes());
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    stream.write_all(&packet).await.unwrap();
    let (tag, body) = read_message(&mut stream).await;
    assert_eq!(tag, b'v');
    assert_eq!(
        &body[..4],
        &0i32.to_be_bytes(),
        "newest minor version supported"
    );
    assert_eq!(&body[4..8], &1i32.to_be_bytes(), "one unsupported option");
    assert_eq!(&body[8..], b"_pq_.fancy\0");
    let (tag, _) = read_message(&mut stream).await;
    assert_eq!(tag, b'R', "authentication follows");
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_and_gss_requests_are_declined_then_startup_proceeds() {
    let h = Harness::start();
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    for code in [80_877_103i32, 80_877_104] {
        let mut request = 8u32.to_be_bytes().to_vec();
        request.extend_from_slice(&code.to_be_bytes());
        stream.write_all(&request).await.unwrap();
        let mut answer = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut answer)
            .await
            .unwrap();
        assert_eq!(&answer, b"N");
    }
    stream
        .write_all(&startup_packet(&[("user", "app")]))
        .await
        .unwrap();
    let (tag, body) = read_message(&mut stream).await;
    assert_eq!(tag, b'R');
    assert_eq!(
        &body[..4],
        &10i32.to_be_bytes(),
        "SASL authentication requested"
    );
}
