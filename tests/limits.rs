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
