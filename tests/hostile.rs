//! Malformed and hostile input: the proxy answers with an error or closes,
//! never panics, and keeps serving everyone else.

mod support;

use support::raw::{raw_session, read_message, send_raw, sqlstate, startup_packet};
use support::{Harness, connect};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_startup_packets_get_errors_and_the_proxy_stays_up() {
    let h = Harness::start();
    let healthy = connect(&h.proxy_dsn()).await;

    // Garbage before the startup packet (an HTTP request).
    let reply = send_raw(&h, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(sqlstate(&reply).as_deref(), Some("08P01"));
    // Length below the minimum, and far above PostgreSQL's 10000-byte cap.
    assert_eq!(
        sqlstate(&send_raw(&h, &[0, 0, 0, 4]).await).as_deref(),
        Some("08P01")
    );
    assert_eq!(
        sqlstate(&send_raw(&h, &[0x7f, 0, 0, 0, 0, 3, 0, 0]).await).as_deref(),
        Some("08P01")
    );
    // Protocol 2.0.
    let mut v2 = 8u32.to_be_bytes().to_vec();
    v2.extend_from_slice(&(2i32 << 16).to_be_bytes());
    assert_eq!(sqlstate(&send_raw(&h, &v2).await).as_deref(), Some("0A000"));
    // Parameters without terminator, without user, non-UTF-8.
    let mut unterminated = startup_packet(&[("user", "app")]);
    unterminated.pop();
    unterminated[3] -= 1;
    assert_eq!(
        sqlstate(&send_raw(&h, &unterminated).await).as_deref(),
        Some("08P01")
    );
    assert_eq!(
        sqlstate(&send_raw(&h, &startup_packet(&[("database", "x")])).await).as_deref(),
        Some("08P01")
    );
    // Truncated packet then close: nothing to answer, no crash.
    let _ = send_raw(&h, &[0, 0, 0, 50, 0, 3]).await;
    // Random bytes.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20 {
        let junk: Vec<u8> = (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = send_raw(&h, &junk).await;
    }

    let row = healthy.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(h.proxy.log().lines().all(|l| !l.contains("panicked")));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_after_login_end_only_that_session() {
    let h = Harness::with(support::spec(), "max_message_size = 65536");
    let healthy = connect(&h.proxy_dsn()).await;

    // Bad length in a frame.
    let mut bad = raw_session(&h).await;
    bad.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    let (tag, body) = read_message(&mut bad).await;
    assert_eq!(tag, b'E');
    assert!(String::from_utf8_lossy(&body).contains("C08P01"));

    // Oversized frame: refused before its body is read.
    let mut big = raw_session(&h).await;
    big.write_all(&[b'Q', 0, 0x10, 0, 0]).await.unwrap();
    let (tag, body) = read_message(&mut big).await;
    assert_eq!(tag, b'E');
    assert!(String::from_utf8_lossy(&body).contains("C54000"));

    // Bad password-message tag during SCRAM.
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    stream
        .write_all(&startup_packet(&[("user", "app")]))
        .await
        .unwrap();
    let _ = read_message(&mut stream).await;
    stream
        .write_all(&[b'p', 0, 0, 0, 8, 0, 0, 0, 0])
        .await
        .unwrap();
    let (tag, _) = read_message(&mut stream).await;
    assert_eq!(tag, b'E');

    let row = healthy.query_one("SELECT 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_client_is_dropped_after_the_startup_timeout() {
    let h = Harness::with(support::spec(), "startup_timeout = \"1s\"");
    let started = std::time::Instant::now();
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    // Half a startup packet, then silence.
    stream.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut reply);
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .expect("closed by the proxy")
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(sqlstate(&reply).as_deref(), Some("08006"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_stalled_half_startups_are_dropped_at_the_timeout_while_a_client_is_served() {
    const STALLED: usize = 1000;
    let timeout = std::time::Duration::from_secs(3);
    let h = Harness::with(support::spec(), "startup_timeout = \"3s\"");
    let started = std::time::Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
        // Half a startup packet (length 40, then 2 of the 4 version bytes).
        stream.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
        stalled.push(stream);
    }
    let opened = started.elapsed();

    // Meanwhile a normal client logs in and is served.
    let served_at = std::time::Instant::now();
    let client = connect(&h.proxy_dsn()).await;
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    let served_in = served_at.elapsed();
    assert!(
        started.elapsed() < timeout,
        "opening {STALLED} connections and serving a client took {:?}",
        started.elapsed()
    );

    // Every stalled connection is closed by the proxy, with 08006, at the timeout.
    let reads = stalled.into_iter().map(|mut stream| async move {
        let mut reply = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut reply).await;
        reply
    });
    let replies = tokio::time::timeout(
        timeout + std::time::Duration::from_secs(10),
        futures_util::future::join_all(reads),
    )
    .await
    .expect("every stalled connection closed");
    let closed_after = started.elapsed();
    assert!(closed_after >= timeout - std::time::Duration::from_millis(100));
    let timed_out = replies
        .iter()
        .filter(|r| sqlstate(r).as_deref() == Some("08006"))
        .count();
    assert_eq!(timed_out, STALLED);
    eprintln!(
        "{STALLED} stalled connections opened in {opened:?}; client served in {served_in:?}; \
         all closed {closed_after:?} after the first"
    );
    // The served client is still fine.
    client.query_one("SELECT 2", &[]).await.unwrap();
}
