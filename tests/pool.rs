//! Server connection pools against a real PostgreSQL: size bounds, checkout
//! timeouts, broken-connection detection, reaping, refilling, retiring.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use switchyard::backend::ServerConnection;
use switchyard::pool::{Pool, PoolError, PoolKey, PoolSettings, Pools};
use switchyard::protocol::io::read_message;
use switchyard::testcluster::{ClusterSpec, LocalCluster};
use tokio::io::AsyncWriteExt;

const USER: &str = "app";
const PASSWORD: &str = "app-secret";
const DB: &str = "appdb";
const BACKENDS_SQL: &str = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'";
const PIDS_SQL: &str = "SELECT pid FROM pg_stat_activity WHERE usename = 'app' ORDER BY pid";

fn start_cluster() -> Arc<LocalCluster> {
    let spec = ClusterSpec {
        users: vec![(USER.into(), PASSWORD.into())],
        databases: vec![DB.into()],
        ..ClusterSpec::default()
    };
    let cluster = tokio::task::block_in_place(|| LocalCluster::start(&spec));
    Arc::new(cluster.expect("start cluster"))
}

fn key(cluster: &LocalCluster) -> PoolKey {
    PoolKey::new(cluster.primary().addr(), DB, USER)
}

fn settings(max_size: usize) -> PoolSettings {
    PoolSettings {
        max_size,
        checkout_timeout: Duration::from_secs(5),
        ..PoolSettings::default()
    }
}

fn pool(cluster: &LocalCluster, settings: PoolSettings) -> Arc<Pool> {
    Pool::new(key(cluster), Some(PASSWORD.into()), settings)
}

/// Superuser SQL on the primary (blocking psql, off the async workers).
fn psql(cluster: &LocalCluster, sql: &str) -> String {
    tokio::task::block_in_place(|| cluster.primary().psql(sql)).expect("psql")
}

fn backends(cluster: &LocalCluster) -> usize {
    psql(cluster, BACKENDS_SQL).parse().expect("count")
}

fn server_pids(cluster: &LocalCluster) -> HashSet<i32> {
    psql(cluster, PIDS_SQL)
        .lines()
        .map(|l| l.parse().expect("pid"))
        .collect()
}

/// Polls `check` (sleeping asynchronously, so the runtime keeps driving
/// sockets) until it holds or `timeout` passes.
async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `sql` as a simple Query on the raw connection; returns the first
/// column of each row. Panics on an ErrorResponse.
async fn query(conn: &mut ServerConnection, sql: &str) -> Vec<String> {
    let mut msg = BytesMut::new();
    msg.extend_from_slice(b"Q");
    msg.extend_from_slice(&(4 + sql.len() as u32 + 1).to_be_bytes());
    msg.extend_from_slice(sql.as_bytes());
    msg.extend_from_slice(b"\0");
    conn.stream.write_all(&msg).await.expect("send query");
    let mut buf = BytesMut::new();
    let mut rows = Vec::new();
    loop {
        let frame = read_message(&mut conn.stream, &mut buf, 1 << 20)
            .await
            .expect("read reply");
        match frame.tag {
            b'D' => {
                let mut body = frame.body;
                body.advance(2);
                let len = body.get_i32() as usize;
                rows.push(String::from_utf8(body[..len].to_vec()).expect("utf8"));
            }
            b'E' => panic!("query failed: {:?}", frame.body),
            b'Z' => {
                assert_eq!(frame.body.as_ref(), b"I", "connection left idle");
                assert!(buf.is_empty());
                return rows;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_size_bounds_server_backends_under_50_concurrent_checkouts() {
    let cluster = start_cluster();
    let pool = pool(&cluster, settings(5));
    let done = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (cluster, pool, done) = (Arc::clone(&cluster), Arc::clone(&pool), Arc::clone(&done));
        tokio::spawn(async move {
            let (mut most_backends, mut most_open, mut samples) = (0, 0, 0);
            while done.load(Ordering::Acquire) < 50 {
                most_open = most_open.max(pool.stats().open);
                most_backends = most_backends.max(backends(&cluster));
                samples += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (most_backends, most_open, samples)
        })
    };
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (pool, done) = (Arc::clone(&pool), Arc::clone(&done));
            tokio::spawn(async move {
                let mut conn = pool.checkout().await.expect("checkout");
                assert_eq!(query(&mut conn, "SELECT 1").await, ["1"]);
                tokio::time::sleep(Duration::from_millis(40)).await;
                conn.checkin();
                done.fetch_add(1, Ordering::Release);
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    let (most_backends, most_open, samples) = monitor.await.expect("monitor");
    let stats = pool.stats();
    assert!(samples > 0);
    assert!(
        most_backends <= 5,
        "{most_backends} server backends for max_size 5"
    );
    assert!(
        most_open <= 5,
        "{most_open} connections open for max_size 5"
    );
    assert_eq!(stats.checkouts, 50);
    assert_eq!(stats.checkout_timeouts, 0);
    assert!(stats.connects <= 5, "{stats:?}");
    assert_eq!((stats.active, stats.waiting), (0, 0));
    assert_eq!(stats.idle, stats.open);
    assert!(backends(&cluster) <= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_timeout_names_the_pool_when_all_connections_are_held() {
    let cluster = start_cluster();
    let pool = pool(
        &cluster,
        PoolSettings {
            checkout_timeout: Duration::from_millis(300),
            ..settings(2)
        },
    );
    let held = [
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ];
    let started = Instant::now();
    let error = pool.checkout().await.expect_err("pool is exhausted");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        matches!(error, PoolError::CheckoutTimeout { .. }),
        "{error:?}"
    );
    assert_eq!(error.sqlstate(), "53300");
    let expected = format!(
        "waiting for a server connection in pool app@appdb on {}",
        cluster.primary().addr()
    );
    assert!(error.to_string().contains(&expected), "{error}");
    assert!(
        error.to_string().starts_with("timed out after 300ms"),
        "{error}"
    );
    let stats = pool.stats();
    assert_eq!(
        (stats.checkout_timeouts, stats.waiting, stats.active),
        (1, 0, 2)
    );

    let [first, _second] = held;
    let pid = first.pid;
    first.checkin();
    let again = pool.checkout().await.expect("a slot is free again");
    assert_eq!(again.pid, pid, "the idle connection is reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_terminated_while_idle_is_never_handed_out() {
    let cluster = start_cluster();
    let pool = pool(&cluster, settings(2));
    let conn = pool.checkout().await.unwrap();
    let killed = conn.pid;
    conn.checkin();
    psql(&cluster, &format!("SELECT pg_terminate_backend({killed})"));
    eventually("the backend to exit", Duration::from_secs(5), || {
        !server_pids(&cluster).contains(&killed)
    })
    .await;

    let mut conn = pool.checkout().await.expect("checkout after kill");
    assert_ne!(conn.pid, killed);
    assert_eq!(query(&mut conn, "SELECT 1").await, ["1"]);
    conn.checkin();
    let stats = pool.stats();
    assert_eq!(
        (stats.discarded_broken, stats.connects, stats.open),
        (1, 2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_idle_past_health_check_after_gets_a_round_trip() {
    let cluster = start_cluster();
    let pool = pool(
        &cluster,
        PoolSettings {
            health_check_after: Duration::ZERO,
            ..settings(2)
        },
    );
    let conn = pool.checkout().await.unwrap();
    let pid = conn.pid;
    conn.checkin();
    // The empty query answered: the same connection comes back, still idle.
    let mut conn = pool.checkout().await.unwrap();
    assert_eq!(conn.pid, pid);
    assert_eq!(query(&mut conn, "SELECT 2").await, ["2"]);
    conn.checkin();
    assert_eq!(pool.stats().discarded_broken, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_connections_due_a_check_and_in_their_round_trip() {
    let cluster = start_cluster();
    let pool = pool(
        &cluster,
        PoolSettings {
            health_check_after: Duration::from_millis(300),
            ..settings(2)
        },
    );
    let conn = pool.checkout().await.unwrap();
    let frozen = conn.pid;
    conn.checkin();
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.idle_unchecked, stats.testing), (1, 0, 0));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.idle_unchecked, stats.testing), (1, 1, 0));

    // A stopped backend cannot answer the check's empty query: the
    // connection is counted as tested (not idle, not opening) until the
    // check gives up, then retired, and the checkout gets a new one.
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &frozen.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {frozen}");
    };
    signal("-STOP");
    let checkout = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.checkout().await.map(|conn| conn.pid) }
    });
    eventually(
        "the check's round trip counted",
        Duration::from_secs(1),
        || {
            let stats = pool.stats();
            (stats.testing, stats.idle, stats.open) == (1, 0, 1)
        },
    )
    .await;
    let pid = checkout.await.unwrap();
    signal("-CONT");
    let pid = pid.expect("a new connection after the failed check");
    assert_ne!(pid, frozen);
    let stats = pool.stats();
    assert_eq!((stats.testing, stats.discarded_broken), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_reaps_idle_connections() {
    let cluster = start_cluster();
    let pool = pool(
        &cluster,
        PoolSettings {
            idle_timeout: Duration::from_secs(1),
            ..settings(3)
        },
    );
    let held = [
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ];
    held.into_iter().for_each(|c| c.checkin());
    assert_eq!(pool.stats().idle, 3);
    assert_eq!(backends(&cluster), 3);
    eventually(
        "the reaper to close idle connections",
        Duration::from_secs(5),
        || pool.stats().open == 0,
    )
    .await;
    eventually("the backends to exit", Duration::from_secs(3), || {
        backends(&cluster) == 0
    })
    .await;
    assert_eq!(pool.stats().closed_idle, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_size_is_opened_kept_and_refilled() {
    let cluster = start_cluster();
    let pool = pool(
        &cluster,
        PoolSettings {
            min_size: 2,
            idle_timeout: Duration::from_secs(1),
            ..settings(4)
        },
    );
    eventually("min_size connections", Duration::from_secs(5), || {
        backends(&cluster) == 2
    })
    .await;
    let first = server_pids(&cluster);
    assert!(pool.server_parameters().is_some());

    // Idle past idle_timeout, but min_size stays open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server_pids(&cluster), first);
    assert_eq!(pool.stats().closed_idle, 0);

    psql(
        &cluster,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
    );
    eventually("min_size refilled", Duration::from_secs(5), || {
        let now = server_pids(&cluster);
        now.len() == 2 && now.is_disjoint(&first)
    })
    .await;
    assert_eq!(pool.stats().discarded_broken, 2);
    let mut conn = pool.checkout().await.unwrap();
    assert_eq!(query(&mut conn, "SELECT 3").await, ["3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_retires_connections_at_checkin_and_while_idle() {
    let cluster = start_cluster();
    let pool = pool(
        &cluster,
        PoolSettings {
            max_lifetime: Duration::from_secs(1),
            ..settings(2)
        },
    );
    // Checked in after its lifetime: closed, not pooled.
    let conn = pool.checkout().await.unwrap();
    let old = conn.pid;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    conn.checkin();
    assert_eq!((pool.stats().open, pool.stats().closed_lifetime), (0, 1));
    eventually(
        "the retired backend to exit",
        Duration::from_secs(3),
        || !server_pids(&cluster).contains(&old),
    )
    .await;

    // Reaches its lifetime while idle: the reaper retires it.
    let conn = pool.checkout().await.unwrap();
    let idle = conn.pid;
    conn.checkin();
    eventually("the reaper to retire it", Duration::from_secs(4), || {
        pool.stats().open == 0
    })
    .await;
    assert_eq!(pool.stats().closed_lifetime, 2);
    let conn = pool.checkout().await.unwrap();
    assert_ne!(conn.pid, idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_frees_its_slot_and_is_closed() {
    let cluster = start_cluster();
    let pool = pool(
        &cluster,
        PoolSettings {
            checkout_timeout: Duration::from_millis(500),
            ..settings(1)
        },
    );
    let conn = pool.checkout().await.unwrap();
    let dropped = conn.pid;
    drop(conn);
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle, stats.active), (0, 0, 0));
    assert_eq!(stats.discarded_by_session, 1);
    eventually(
        "the dropped backend to exit",
        Duration::from_secs(3),
        || !server_pids(&cluster).contains(&dropped),
    )
    .await;

    let conn = pool.checkout().await.expect("the slot is free");
    assert_ne!(conn.pid, dropped);
    conn.discard();
    assert_eq!(pool.stats().discarded_by_session, 2);
    assert_eq!(pool.stats().open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_login_keeps_the_server_error_and_frees_the_slot() {
    let cluster = start_cluster();
    let pools = Pools::new();
    let pool = pools.get_or_create(
        key(&cluster),
        Some("wrong-password".into()),
        PoolSettings {
            checkout_timeout: Duration::from_millis(500),
            ..settings(1)
        },
    );
    for _ in 0..2 {
        let error = pool.checkout().await.expect_err("wrong password");
        assert_eq!(error.sqlstate(), "08006");
        let raw = error.server_error().expect("server's ErrorResponse");
        assert_eq!(raw[0], b'E');
        assert!(String::from_utf8_lossy(raw).contains("28P01"), "{raw:?}");
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.open, stats.connect_errors, stats.checkout_timeouts),
        (0, 2, 0)
    );
    assert_eq!(pools.all().len(), 1);
}
