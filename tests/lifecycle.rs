//! Session lifecycle through the proxy: cancel, client death, server death,
//! graceful shutdown.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Harness, connect};
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread")]
async fn pg_sleep_is_cancelled_through_the_proxy_within_a_second() {
    let h = Harness::start();
    let client = connect(&h.proxy_dsn()).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let error = sleeper.await.unwrap().unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(elapsed < Duration::from_secs(1), "cancel took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_cancel_key_cancels_nothing() {
    let h = Harness::start();
    let client = connect(&h.proxy_dsn()).await;
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(2)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A CancelRequest with a random key, sent straight to the proxy.
    for pid in [1i32, 2, 12345, i32::MAX] {
        let mut packet = Vec::new();
        packet.extend_from_slice(&16u32.to_be_bytes());
        packet.extend_from_slice(&80_877_102i32.to_be_bytes());
        packet.extend_from_slice(&pid.to_be_bytes());
        packet.extend_from_slice(&0x1234_5678i32.to_be_bytes());
        let mut stream = tokio::net::TcpStream::connect(h.proxy.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, &packet)
            .await
            .unwrap();
    }
    let result = sleeper.await.unwrap();
    assert!(result.is_ok(), "forged key cancelled a query: {result:?}");
}

#[test]
fn killed_client_leaves_no_active_server_backend() {
    let h = Harness::start();
    let mut psql = Command::new(h.cluster.binaries().program("psql"))
        .args([
            "-X",
            "-d",
            &h.proxy_url(),
            "-c",
            "SELECT pg_sleep(30) /* doomed */",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let count_sql = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%doomed%' AND pid <> pg_backend_pid()";
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.admin_sql(count_sql) != "1" {
        assert!(Instant::now() < deadline, "query never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    psql.kill().unwrap();
    psql.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        h.admin_sql(count_sql),
        "0",
        "server backend survived its client"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_termination_gives_the_client_a_clean_error() {
    let h = Harness::start();
    let (client, connection) = tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    h.admin_sql(&format!("SELECT pg_terminate_backend({pid})"));
    // The server's FATAL reaches the idle client as an ErrorResponse, then the connection closes.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("client connection closed")
        .unwrap();
    let error = ended.expect_err("connection ended with the server's error");
    let db_error = error
        .as_db_error()
        .expect("an ErrorResponse, not a broken socket");
    assert_eq!(db_error.code(), &SqlState::ADMIN_SHUTDOWN);
    assert!(client.is_closed());

    // A server that disappears without a word: the proxy reports class 08.
    let client = connect(&h.proxy_dsn()).await;
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.cluster.primary().stop("immediate").unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let code = error.code().expect("an ErrorResponse").code().to_owned();
    assert!(code.starts_with("08") || code == "57P01", "got {code}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_running_transaction_finish_then_exits() {
    let mut h = Harness::start();
    let client = connect(&h.proxy_dsn()).await;
    let (_idle, idle_connection) = tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let idle_connection = tokio::spawn(idle_connection);
    let running = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(1.5)").await;
        (result, client)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.proxy.signal("TERM");
    // New clients are refused once draining.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    // The idle session is closed at once with 57P01.
    support::assert_closed_by_shutdown(idle_connection).await;
    // The running query completes.
    let (result, _client) = running.await.unwrap();
    assert!(result.is_ok(), "in-flight query was cut: {result:?}");
    let status = h
        .proxy
        .wait_exit(Duration::from_secs(5))
        .expect("proxy exited");
    assert!(status.success());
}
