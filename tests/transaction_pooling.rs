//! Transaction pooling against real PostgreSQL: many clients over few
//! server connections, with session state that follows each client.

mod support;

use std::time::Duration;

use support::{Harness, connect};
use tokio_postgres::error::SqlState;

fn harness(max_size: usize, extra_pool: &str) -> Harness {
    let timeout = if extra_pool.contains("checkout_timeout") {
        ""
    } else {
        "checkout_timeout = \"10s\"\n"
    };
    let extra = format!(
        "pool_mode = \"transaction\"\n\n[pool]\nmax_size = {max_size}\n{timeout}{extra_pool}\n"
    );
    Harness::with(support::spec(), &extra)
}

fn app_backends(h: &Harness) -> usize {
    h.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
        .parse()
        .unwrap()
}

#[test]
fn pgbench_64_clients_over_8_connections_in_every_mode() {
    let h = harness(8, "");
    h.pgbench_every_mode(64, 30, || {
        assert!(app_backends(&h) <= 8, "pool exceeded its size")
    });
    let consistent = h.admin_sql_app(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history) \
         AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT sum(delta) FROM pgbench_history)",
    );
    assert_eq!(consistent, "t");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_settings_follow_each_client_and_do_not_leak() {
    let h = harness(2, "");
    h.admin_sql_app("CREATE SCHEMA s1; CREATE SCHEMA s2; GRANT USAGE ON SCHEMA s1, s2 TO app");
    let mut clients = Vec::new();
    for i in 0..6 {
        let client = connect(&h.proxy_dsn()).await;
        if i < 4 {
            let schema = if i % 2 == 0 { "s1" } else { "s2" };
            client
                .batch_execute(&format!(
                    "SET search_path = {schema}, public; SET statement_timeout = '{}s'; SET application_name = 'client-{i}'",
                    i + 1
                ))
                .await
                .unwrap();
        }
        clients.push(client);
    }
    let plain_timeout = h.admin_sql("SHOW statement_timeout");
    for round in 0..10 {
        let mut tasks = Vec::new();
        for (i, client) in clients.iter().enumerate() {
            let query = client.query_one(
                "SELECT current_setting('search_path'), current_setting('statement_timeout'), \
                 current_setting('application_name')",
                &[],
            );
            tasks.push(async move { (i, query.await) });
        }
        for (i, row) in futures_util::future::join_all(tasks).await {
            let row = row.unwrap();
            let (path, timeout, name): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            if i < 4 {
                let schema = if i % 2 == 0 { "s1" } else { "s2" };
                assert_eq!(
                    path,
                    format!("{schema}, public"),
                    "round {round} client {i}"
                );
                assert_eq!(timeout, format!("{}s", i + 1), "round {round} client {i}");
                assert_eq!(name, format!("client-{i}"), "round {round} client {i}");
            } else {
                assert_eq!(path, "\"$user\", public", "leaked into client {i}");
                assert_eq!(timeout, plain_timeout, "leaked into client {i}");
                assert_eq!(name, "", "leaked into client {i}");
            }
        }
    }
    // RESET brings a client back to the defaults.
    clients[0].batch_execute("RESET search_path").await.unwrap();
    let path: String = clients[0]
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(path, "\"$user\", public");
    // SET LOCAL does not outlive its transaction.
    clients[5]
        .batch_execute("BEGIN; SET LOCAL statement_timeout = '7s'; COMMIT")
        .await
        .unwrap();
    let timeout: String = clients[5]
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, plain_timeout);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_clients_share_named_statements_over_four_connections() {
    let h = harness(4, "");
    let mut tasks = Vec::new();
    for i in 0..200i32 {
        let dsn = h.proxy_dsn();
        tasks.push(tokio::spawn(async move {
            let client = connect(&dsn).await;
            let shared = client.prepare("SELECT $1::int4 + 1").await.unwrap();
            let own = client
                .prepare(&format!("SELECT $1::int4 * {i}"))
                .await
                .unwrap();
            for round in 0..5i32 {
                let a: i32 = client.query_one(&shared, &[&round]).await.unwrap().get(0);
                let b: i32 = client.query_one(&own, &[&round]).await.unwrap().get(0);
                assert_eq!((a, b), (round + 1, round * i));
                tokio::task::yield_now().await;
            }
            // Close and re-prepare: the server-side statement stays cached.
            drop(own);
            let again = client
                .prepare(&format!("SELECT $1::int4 * {i}"))
                .await
                .unwrap();
            let c: i32 = client.query_one(&again, &[&3i32]).await.unwrap().get(0);
            assert_eq!(c, 3 * i);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(app_backends(&h) <= 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statement_errors_name_the_clients_statement() {
    let h = harness(2, "");
    let client = connect(&h.proxy_dsn()).await;
    let statement = client.prepare("SELECT $1::int4 / $2::int4").await.unwrap();
    let error = client
        .query_one(&statement, &[&1i32, &0i32])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO));
    // A bad statement fails at prepare time and never poisons the cache.
    let error = client.prepare("SELEKT 1").await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::SYNTAX_ERROR));
    let ok: i32 = client
        .query_one(&statement, &[&6i32, &3i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ok, 2);
}

async fn times_out(dsn: &str) -> bool {
    let other = connect(dsn).await;
    match other.simple_query("SELECT 1").await {
        Ok(_) => false,
        Err(error) => {
            assert_eq!(
                error.code(),
                Some(&SqlState::TOO_MANY_CONNECTIONS),
                "{error}"
            );
            let message = error
                .as_db_error()
                .map(|e| e.message().to_owned())
                .unwrap_or_default();
            assert!(
                message.contains("app@appdb"),
                "error names the pool: {message}"
            );
            true
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn temp_table_listen_and_advisory_lock_pin_and_unpin() {
    let h = harness(1, "checkout_timeout = \"1s\"");
    let dsn = h.proxy_dsn();
    let pinned = connect(&dsn).await;
    for (pin, check, release) in [
        (
            "CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)",
            "SELECT x FROM scratch",
            "DISCARD ALL",
        ),
        ("LISTEN channel_a", "SELECT 1", "UNLISTEN *"),
        (
            "SELECT pg_advisory_lock(42)",
            "SELECT 1",
            "SELECT pg_advisory_unlock_all()",
        ),
    ] {
        pinned.batch_execute(pin).await.unwrap();
        // The only server connection is pinned: others wait and time out.
        assert!(times_out(&dsn).await, "{pin} did not pin");
        // The pinned client keeps its state across transactions.
        pinned.simple_query(check).await.unwrap();
        pinned.simple_query(check).await.unwrap();
        pinned.batch_execute(release).await.unwrap();
        assert!(!times_out(&dsn).await, "{release} did not unpin");
    }
    // A release that is rolled back releases nothing.
    pinned.batch_execute("LISTEN channel_b").await.unwrap();
    pinned
        .batch_execute("BEGIN; UNLISTEN *; ROLLBACK")
        .await
        .unwrap();
    assert!(times_out(&dsn).await, "a rolled-back UNLISTEN unpinned");
    pinned.batch_execute("UNLISTEN *").await.unwrap();
    assert!(!times_out(&dsn).await, "UNLISTEN * did not unpin");

    // A client that leaves while pinned frees the connection, and its state dies with it.
    let leaver = connect(&dsn).await;
    leaver
        .batch_execute("CREATE TEMP TABLE gone (x int)")
        .await
        .unwrap();
    drop(leaver);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = connect(&dsn).await;
    let error = next.simple_query("SELECT * FROM gone").await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::UNDEFINED_TABLE));
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_reach_a_pinned_listener() {
    let h = harness(2, "");
    let (listener, mut connection) = tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            let _ = tx.send(message);
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let notifier = connect(&h.proxy_dsn()).await;
    notifier.batch_execute("NOTIFY jobs, 'one'").await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    match message {
        tokio_postgres::AsyncMessage::Notification(n) => assert_eq!(n.payload(), "one"),
        other => panic!("unexpected {other:?}"),
    }
}

/// Waits (bounded) until no backend matching `condition` is left, then a
/// little longer for the proxy to read the closed sockets.
fn wait_until_gone(h: &Harness, condition: &str) {
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE {condition}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.admin_sql(&sql) != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "backends survived termination"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_server_connections_are_never_reused() {
    let h = harness(2, "");
    let client = connect(&h.proxy_dsn()).await;
    client.simple_query("SELECT 1").await.unwrap();
    // Kill every idle pooled connection.
    h.admin_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'");
    wait_until_gone(&h, "usename = 'app'");
    for _ in 0..5 {
        client.simple_query("SELECT 1").await.unwrap();
    }

    // Killed mid-transaction: a clean error, then the next transaction works.
    client.batch_execute("BEGIN").await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    h.admin_sql(&format!("SELECT pg_terminate_backend({pid})"));
    wait_until_gone(&h, &format!("pid = {pid}"));
    let error = client.simple_query("SELECT 1").await.unwrap_err();
    let code = error.code().expect("an ErrorResponse").code().to_owned();
    assert!(code == "57P01" || code.starts_with("08"), "got {code}");
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_reaches_the_clients_current_connection_only() {
    let h = harness(1, "");
    let client = connect(&h.proxy_dsn()).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let error = sleeper.await.unwrap().unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < Duration::from_secs(1));

    // A stale key (its client is idle) must not cancel whoever now holds the connection.
    let idle = connect(&h.proxy_dsn()).await;
    idle.simple_query("SELECT 1").await.unwrap();
    let stale = idle.cancel_token();
    let busy = connect(&h.proxy_dsn()).await;
    let running = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stale.cancel_query(tokio_postgres::NoTls).await.unwrap();
    assert!(
        running.await.unwrap().is_ok(),
        "a stale key cancelled another client's query"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_idle_clients_and_lets_transactions_finish() {
    let mut h = harness(2, "");
    let (_idle, idle_connection) = tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let idle_connection = tokio::spawn(idle_connection);
    let busy = connect(&h.proxy_dsn()).await;
    let running = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.proxy.signal("TERM");
    support::assert_closed_by_shutdown(idle_connection).await;
    assert!(
        running.await.unwrap().is_ok(),
        "the running transaction was cut"
    );
    let status = h
        .proxy
        .wait_exit(Duration::from_secs(5))
        .expect("proxy exited");
    assert!(status.success());
}
