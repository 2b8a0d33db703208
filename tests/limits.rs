//! Client connection limits: `server.max_client_connections` and per-user
//! `max_connections`.

mod support;

use std::time::Duration;

use support::{APP_DB, APP_PASSWORD, APP_USER, Harness, connect, proxy_config, spec};
use switchyard::testcluster::LocalCluster;
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread")]
async fn clients_beyond_max_client_connections_get_53300_and_existing_ones_keep_working() {
    let h = Harness::with(spec(), "max_client_connections = 3");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&h.proxy_dsn()).await);
    }
    let started = std::time::Instant::now();
    let error = tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("fourth client refused");
    assert_eq!(error.code(), Some(&SqlState::TOO_MANY_CONNECTIONS));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not refused at once"
    );
    for client in &clients {
        let row = client.query_one("SELECT 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
    }
    // A client leaving frees its place.
    drop(clients.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client.query_one("SELECT 1", &[]).await.unwrap();
                break;
            }
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_max_connections_refuses_only_that_user() {
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    let config = proxy_config(&cluster, "").replace(
        &format!("name = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\""),
        &format!("name = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\nmax_connections = 1"),
    );
    let proxy = support::ProxyProcess::start(&config);
    let dsn = |user: &str, password: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={APP_DB}",
            proxy.addr.port()
        )
    };
    let first = connect(&dsn(APP_USER, APP_PASSWORD)).await;
    let error = tokio_postgres::connect(&dsn(APP_USER, APP_PASSWORD), tokio_postgres::NoTls)
        .await
        .err()
        .expect("second app client refused");
    assert_eq!(error.code(), Some(&SqlState::TOO_MANY_CONNECTIONS));
    let superuser = connect(&dsn("postgres", cluster.superuser_password())).await;
    superuser.query_one("SELECT 1", &[]).await.unwrap();
    first.query_one("SELECT 1", &[]).await.unwrap();
}

/// Connects, and returns the client with its connection task (which ends
/// with the error the proxy closed it with).
async fn connect_watched(
    dsn: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    (client, tokio::spawn(connection))
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_clients_are_closed_with_57p05_in_both_pool_modes_but_not_inside_a_transaction() {
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    for mode in ["session", "transaction"] {
        let proxy = support::ProxyProcess::start(&proxy_config(
            &cluster,
            &format!("pool_mode = \"{mode}\"\nclient_idle_timeout = \"1s\""),
        ));
        let dsn = format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
            proxy.addr.port()
        );
        let (idle, idle_connection) = connect_watched(&dsn).await;
        idle.simple_query("SELECT 1").await.unwrap();
        let idle_from = std::time::Instant::now();
        let (in_transaction, _kept) = connect_watched(&dsn).await;
        in_transaction.simple_query("BEGIN").await.unwrap();
        in_transaction.simple_query("SELECT 1").await.unwrap();
        // Pinned to its server connection (transaction mode), outside any transaction.
        let (pinned, pinned_connection) = connect_watched(&dsn).await;
        pinned
            .simple_query("CREATE TEMP TABLE t (x int)")
            .await
            .unwrap();
        let (busy, _busy_connection) = connect_watched(&dsn).await;

        // A query that runs longer than the limit is not idleness; nor are
        // short pauses between statements.
        let long = busy.simple_query("SELECT pg_sleep(1.5)");
        let chatty = async {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                in_transaction.simple_query("SELECT 2").await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        let (long, chatty) = tokio::join!(long, chatty);
        long.unwrap_or_else(|e| panic!("{mode}: long query cut: {e}"));
        chatty.unwrap_or_else(|e| panic!("{mode}: client in a transaction cut: {e}"));

        for (name, connection) in [("idle", idle_connection), ("pinned", pinned_connection)] {
            let ended = tokio::time::timeout(Duration::from_secs(5), connection)
                .await
                .unwrap_or_else(|_| panic!("{mode}: {name} client not closed"))
                .unwrap();
            let error = ended.expect_err("closed with an error");
            assert_eq!(
                error.as_db_error().map(|e| e.code()),
                Some(&SqlState::IDLE_SESSION_TIMEOUT),
                "{mode}: {name}: {error:?}"
            );
            assert_eq!(
                error.as_db_error().map(|e| e.message()),
                Some("terminating connection due to idle-session timeout")
            );
        }
        let waited = idle_from.elapsed();
        assert!(waited >= Duration::from_secs(1), "{mode}: {waited:?}");

        // The client inside its transaction now sits idle past the limit,
        // and is still served.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        in_transaction
            .simple_query("COMMIT")
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_pipelined_behind_the_startup_packet_still_lets_the_session_go_idle() {
    use support::raw::{read_message, startup_packet};
    use tokio::io::AsyncWriteExt;

    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    // A trust user: nothing to wait for between the startup packet and the query.
    let config = proxy_config(&cluster, "client_idle_timeout = \"1s\"").replace(
        &format!("password = \"{APP_PASSWORD}\"\n"),
        &format!("password = \"{APP_PASSWORD}\"\nauth = \"trust\"\n"),
    );
    let proxy = support::ProxyProcess::start(&config);
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut bytes = startup_packet(&[("user", APP_USER), ("database", APP_DB)]);
    bytes.extend_from_slice(b"Q\0\0\0\x0dSELECT 1\0");
    stream.write_all(&bytes).await.unwrap();
    let mut readies = 0;
    while readies < 2 {
        match read_message(&mut stream).await {
            (b'Z', _) => readies += 1,
            (b'E', body) => panic!("{}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    // The pipelined query was counted, so its answer leaves the session idle.
    let started = std::time::Instant::now();
    let (tag, body) = tokio::time::timeout(Duration::from_secs(5), read_message(&mut stream))
        .await
        .expect("the idle session was not closed");
    assert_eq!(tag, b'E', "{}", String::from_utf8_lossy(&body));
    assert!(body.windows(6).any(|w| w == b"C57P05"));
    assert!(started.elapsed() >= Duration::from_millis(900));
}
