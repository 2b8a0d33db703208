//! Read/write routing through the real binary, against a primary and two
//! streaming replicas: where reads and writes land, the classifier's traps,
//! read-only transactions, lag, read-your-writes, replicas going away.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::raw::{raw_session, read_message};
use support::{
    APP_DB, APP_PASSWORD, Harness, ProxyProcess, connect, free_port, http_get, metric_sum,
    parse_metrics, spec,
};
use switchyard::testcluster::{ClusterSpec, LocalCluster};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A primary, two replicas, and the proxy routing across all three.
fn routed(extra_routing: &str, extra_conf: &[&str]) -> Harness {
    routed_with_admin(extra_routing, extra_conf, 0)
}

/// [`routed`] with the admin HTTP port (metrics) at `admin_port` (0: any).
fn routed_with_admin(extra_routing: &str, extra_conf: &[&str], admin_port: u16) -> Harness {
    let mut users = spec().users;
    users.push(("reporting".into(), APP_PASSWORD.into()));
    let cluster = LocalCluster::start(&ClusterSpec {
        replicas: 2,
        users,
        extra_conf: extra_conf.iter().map(|s| (*s).to_owned()).collect(),
        ..spec()
    })
    .expect("start cluster");
    let config = routing_config(&cluster, extra_routing).replace(
        "admin_listen = \"127.0.0.1:0\"",
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
    );
    let proxy = ProxyProcess::start(&config);
    let h = Harness { proxy, cluster };
    wait_for_replicas_in_rotation(&h);
    h
}

fn routing_config(cluster: &LocalCluster, extra_routing: &str) -> String {
    support::replicated_config(
        cluster,
        &format!("primary = \"{}\"", cluster.primary().addr()),
        extra_routing,
        &format!(
            "\n[[users]]\nname = \"reporting\"\npassword = \"{APP_PASSWORD}\"\nroute = \"replica\""
        ),
    )
}

fn port_of(node: &switchyard::testcluster::Node) -> u16 {
    node.addr().rsplit_once(':').unwrap().1.parse().unwrap()
}

fn ports(h: &Harness) -> (u16, u16, u16) {
    let replicas = h.cluster.replicas();
    (
        port_of(h.cluster.primary()),
        port_of(&replicas[0]),
        port_of(&replicas[1]),
    )
}

/// The proxy probes at startup; reads before the first probe go to the primary.
fn wait_for_replicas_in_rotation(h: &Harness) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&h.proxy_dsn()).await;
        let (_, r1, r2) = ports(h);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = (false, false);
        while !(seen.0 && seen.1) {
            assert!(Instant::now() < deadline, "replicas never served a read");
            let port = server_port(&client).await;
            seen.0 |= port == r1;
            seen.1 |= port == r2;
        }
    });
}

async fn server_port(client: &tokio_postgres::Client) -> u16 {
    let row = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("read through the proxy");
    row.get::<_, i32>(0) as u16
}

async fn simple_port(client: &tokio_postgres::Client, sql: &str) -> u16 {
    let messages = client.simple_query(sql).await.expect(sql);
    for message in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return row.get(0).unwrap().parse().unwrap();
        }
    }
    panic!("no row from {sql}");
}

#[tokio::test(flavor = "multi_thread")]
async fn autocommit_reads_spread_evenly_over_replicas_and_writes_hit_the_primary() {
    let h = tokio::task::spawn_blocking(|| routed("", &[]))
        .await
        .unwrap();
    let (primary, r1, r2) = ports(&h);
    let client = connect(&h.proxy_dsn()).await;
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for _ in 0..1000 {
        *counts.entry(server_port(&client).await).or_default() += 1;
    }
    let (a, b) = (
        counts.get(&r1).copied().unwrap_or(0),
        counts.get(&r2).copied().unwrap_or(0),
    );
    println!(
        "1000 reads: replica {r1}: {a}, replica {b}: {r2}, primary: {:?}",
        counts.get(&primary)
    );
    assert_eq!(a + b, 1000, "every read on a replica: {counts:?}");
    assert!((400..=600).contains(&a), "within ±20 % of even: {counts:?}");

    client
        .batch_execute("CREATE TABLE landed (port int)")
        .await
        .unwrap();
    for _ in 0..100 {
        client
            .execute("INSERT INTO landed SELECT inet_server_port()", &[])
            .await
            .unwrap();
    }
    let landed = h.cluster.primary().psql_db(
        APP_DB,
        "SELECT count(*) || ' ' || min(port) || ' ' || max(port) FROM landed",
    );
    assert_eq!(landed.unwrap(), format!("100 {primary} {primary}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn classifier_traps_land_on_the_primary_and_no_read_only_error_reaches_the_client() {
    let h = tokio::task::spawn_blocking(|| routed("", &[]))
        .await
        .unwrap();
    let (primary, _, _) = ports(&h);
    let client = connect(&h.proxy_dsn()).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int primary key, port int); \
             INSERT INTO t VALUES (1, 0), (2, 0); \
             CREATE SEQUENCE s; \
             CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS \
               $$ UPDATE t SET port = inet_server_port() WHERE id = 2; SELECT inet_server_port() $$;",
        )
        .await
        .unwrap();
    // Wait until the replicas have the schema.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traps = [
        "WITH d AS (DELETE FROM t WHERE id = 99 RETURNING *) SELECT inet_server_port()",
        "SELECT inet_server_port() FROM t WHERE id = 1 FOR UPDATE",
        "SELECT inet_server_port() FROM t FOR SHARE LIMIT 1",
        "SELECT inet_server_port(), nextval('s')",
        "/* switchyard: primary */ SELECT inet_server_port()",
    ];
    for trap in traps {
        for _ in 0..5 {
            assert_eq!(simple_port(&client, trap).await, primary, "{trap}");
        }
    }
    // SELECT INTO creates a table: on the primary.
    client
        .simple_query("SELECT inet_server_port() AS port INTO made_here")
        .await
        .unwrap();
    let made = h
        .cluster
        .primary()
        .psql_db(APP_DB, "SELECT port FROM made_here")
        .unwrap();
    assert_eq!(made, primary.to_string());
    // A function that writes looks like a read: a replica refuses it with
    // 25006, the proxy re-runs it on the primary, the client sees a result.
    for _ in 0..20 {
        assert_eq!(simple_port(&client, "SELECT bump()").await, primary);
        let row = client.query_one("SELECT bump()", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0) as u16, primary);
    }
    let bumped = h
        .cluster
        .primary()
        .psql_db(APP_DB, "SELECT port FROM t WHERE id = 2")
        .unwrap();
    assert_eq!(bumped, primary.to_string());
    // No 25006 ever reached the client: every call above returned a row.
    let log = h.proxy.log();
    assert!(
        log.contains("retrying a replica's request on the primary"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_transactions_run_on_a_replica_and_read_write_ones_on_the_primary() {
    let h = tokio::task::spawn_blocking(|| routed("", &[]))
        .await
        .unwrap();
    let (primary, r1, r2) = ports(&h);
    let client = connect(&h.proxy_dsn()).await;
    client
        .batch_execute("CREATE TABLE w (port int)")
        .await
        .unwrap();
    for begin in [
        "BEGIN READ ONLY",
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
    ] {
        for _ in 0..10 {
            client.batch_execute(begin).await.unwrap();
            let first = simple_port(&client, "SELECT inet_server_port()").await;
            let second = simple_port(&client, "SELECT inet_server_port()").await;
            client.batch_execute("COMMIT").await.unwrap();
            assert!(first == r1 || first == r2, "{begin}: ran on {first}");
            assert_eq!(first, second, "one transaction, one node");
        }
    }
    // A hot standby refuses serializable transactions (0A000): read-only
    // or not, they run on the primary, with no error for the client.
    for begin in [
        "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
        "START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE, DEFERRABLE",
    ] {
        client.batch_execute(begin).await.unwrap();
        let port = simple_port(&client, "SELECT inet_server_port()").await;
        client.batch_execute("COMMIT").await.unwrap();
        assert_eq!(port, primary, "{begin}");
    }
    // So do the reads of a session that made serializable its default...
    client
        .batch_execute("SET default_transaction_isolation = 'serializable'")
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(server_port(&client).await, primary);
    }
    client
        .batch_execute("RESET default_transaction_isolation")
        .await
        .unwrap();
    // ...and, through a retry on the primary, those of a session whose
    // database made it the default (which the proxy cannot see), in the
    // simple protocol and with unnamed statements. (A named statement's
    // Parse is not re-run elsewhere: its 0A000 reaches the client.)
    let primary_node = h.cluster.primary();
    primary_node
        .psql("CREATE DATABASE serial OWNER app")
        .unwrap();
    primary_node
        .psql("ALTER DATABASE serial SET default_transaction_isolation = 'serializable'")
        .unwrap();
    for replica in h.cluster.replicas() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while replica
            .psql("SELECT count(*) FROM pg_database WHERE datname = 'serial'")
            .unwrap()
            != "1"
        {
            assert!(
                Instant::now() < deadline,
                "the replica never got the database"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let serial = connect(&h.proxy_dsn().replace("dbname=appdb", "dbname=serial")).await;
    for _ in 0..10 {
        let row = serial
            .query_typed_one("SELECT inet_server_port()", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0) as u16, primary);
        assert_eq!(
            simple_port(&serial, "SELECT inet_server_port()").await,
            primary
        );
    }
    // A client with no settings to apply: the replica's 0A000 itself is
    // held back and the request re-run on the primary.
    let (mut raw, _) = support::raw::raw_login_to(h.proxy.addr, "serial").await;
    for _ in 0..5 {
        let replies = exchange(&mut raw, &message(b'Q', b"SELECT inet_server_port()\0")).await;
        assert_eq!(tags(&replies), b"TDCZ", "{replies:?}");
        assert_eq!(first_value(&replies), primary.to_string());
        let replies = exchange(&mut raw, &unnamed_extended("SELECT inet_server_port()")).await;
        assert_eq!(tags(&replies), b"12TDCZ", "{replies:?}");
        assert_eq!(first_value(&replies), primary.to_string());
    }
    let log = h.proxy.log();
    assert!(
        log.contains("retrying a replica's request on the primary"),
        "{log}"
    );
    // The session whose settings a replica refused stopped asking replicas.
    assert_eq!(
        log.matches("replica cannot take the session").count(),
        1,
        "{log}"
    );
    // The statement itself was not learned as a write.
    let port = simple_port(&client, "SELECT inet_server_port()").await;
    assert!(port == r1 || port == r2, "ran on {port}");
    for _ in 0..10 {
        client.batch_execute("BEGIN").await.unwrap();
        let before = simple_port(&client, "SELECT inet_server_port()").await;
        client
            .batch_execute("INSERT INTO w SELECT inet_server_port()")
            .await
            .unwrap();
        let after = simple_port(&client, "SELECT inet_server_port()").await;
        client.batch_execute("COMMIT").await.unwrap();
        assert_eq!((before, after), (primary, primary));
    }
    // A reporting user goes to replicas whatever it sends; a route hint
    // and SET switchyard.route move a session.
    let reporting = connect(&h.proxy_dsn().replace("user=app", "user=reporting")).await;
    let port = server_port(&reporting).await;
    assert!(port == r1 || port == r2);
    client
        .batch_execute("SET switchyard.route = 'primary'")
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(server_port(&client).await, primary);
    }
    client
        .batch_execute("RESET switchyard.route")
        .await
        .unwrap();
    let started = connect(&format!(
        "{} options='-c switchyard.route=primary'",
        h.proxy_dsn()
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(server_port(&started).await, primary);
    }
    let bad = client
        .batch_execute("SET switchyard.route = 'sideways'")
        .await;
    assert_eq!(
        bad.unwrap_err().code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lagging_replica_leaves_rotation_within_a_second_and_returns() {
    let h = tokio::task::spawn_blocking(|| routed("max_replica_lag_bytes = 65536", &[]))
        .await
        .unwrap();
    let (_, r1, _) = ports(&h);
    let client = connect(&h.proxy_dsn()).await;
    client
        .batch_execute("CREATE TABLE filler (x text)")
        .await
        .unwrap();
    // Counted before the pause: the replica may leave while the write
    // below is still streaming, before the INSERT returns.
    let leaving = format!("node=127.0.0.1:{r1} role=\"replica\" was=\"replica\" in_rotation=false");
    let left_before = h.proxy.log().matches(&leaving).count();
    h.cluster.replicas()[0]
        .psql("SELECT pg_wal_replay_pause()")
        .unwrap();
    // About 1 MB of WAL the paused replica cannot replay.
    client
        .batch_execute("INSERT INTO filler SELECT repeat('x', 100) FROM generate_series(1, 8000)")
        .await
        .unwrap();
    let written = Instant::now();
    // The proxy's own decision, from its log (each rotation change is
    // logged), so that the time of the reads that confirm it below is not
    // counted: on a loaded machine those take a while themselves.
    let left = loop {
        if h.proxy.log().matches(&leaving).count() > left_before {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "paused replica stayed in rotation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("paused replica left rotation {left:?} after the write");
    assert!(left <= Duration::from_secs(1), "took {left:?}");
    // None of them on the paused replica. (Not all on the other one: it
    // may lag past the limit for a moment too while the write streams, and
    // then reads go to the primary.)
    for _ in 0..20 {
        let port = server_port(&client).await;
        if port == r1 {
            let log = h.proxy.log();
            let node = format!("node=127.0.0.1:{r1}");
            let changes: Vec<&str> = log.lines().filter(|l| l.contains(&node)).collect();
            panic!("a read ran on {port} after the replica left rotation: {changes:#?}");
        }
    }
    h.cluster.replicas()[0]
        .psql("SELECT pg_wal_replay_resume()")
        .unwrap();
    let resumed = Instant::now();
    loop {
        if server_port(&client).await == r1 {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "replica never came back"
        );
    }
    println!(
        "resumed replica back in rotation after {:?}",
        resumed.elapsed()
    );
}

/// Runs `iterations` of "insert a row, read it back at once" on `clients`
/// connections; returns how many reads missed their own row.
async fn read_after_write_misses(dsn: &str, clients: usize, iterations: usize) -> usize {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let dsn = dsn.to_owned();
        tasks.push(tokio::spawn(async move {
            let client = connect(&dsn).await;
            let mut misses = 0;
            for i in 0..iterations {
                let id = (c * iterations + i) as i32;
                client
                    .execute("INSERT INTO ryw VALUES ($1)", &[&id])
                    .await
                    .unwrap();
                let found = client
                    .query_opt("SELECT id FROM ryw WHERE id = $1", &[&id])
                    .await
                    .unwrap();
                misses += usize::from(found.is_none());
            }
            misses
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn read_your_writes_never_misses_while_replicas_lag() {
    // Replicas apply WAL 50 ms late, like a busy replica.
    let h = tokio::task::spawn_blocking(|| {
        routed(
            "consistency = \"read_your_writes\"",
            &["recovery_min_apply_delay = '50ms'"],
        )
    })
    .await
    .unwrap();
    let client = connect(&h.proxy_dsn()).await;
    client
        .batch_execute("CREATE TABLE ryw (id int primary key)")
        .await
        .unwrap();
    drop(client);
    let started = Instant::now();
    let misses = read_after_write_misses(&h.proxy_dsn(), 4, 2500).await;
    println!(
        "read_your_writes: {misses} misses in 10000 insert-then-read ({:?})",
        started.elapsed()
    );
    assert_eq!(misses, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn eventual_reads_miss_under_lag() {
    let h = tokio::task::spawn_blocking(|| routed("", &["recovery_min_apply_delay = '50ms'"]))
        .await
        .unwrap();
    let client = connect(&h.proxy_dsn()).await;
    client
        .batch_execute("CREATE TABLE ryw (id int primary key)")
        .await
        .unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let misses = read_after_write_misses(&h.proxy_dsn(), 4, 500).await;
    println!(
        "eventual: {misses} misses in 2000 insert-then-read ({:.1} %)",
        misses as f64 / 20.0
    );
    assert!(misses > 0, "replicas 50 ms behind must miss some reads");
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_continue_on_the_primary_when_both_replicas_stop() {
    let h = tokio::task::spawn_blocking(|| routed("", &[]))
        .await
        .unwrap();
    let (primary, _, _) = ports(&h);
    let client = connect(&h.proxy_dsn()).await;
    for replica in h.cluster.replicas() {
        replica.stop("immediate").unwrap();
    }
    // Reads keep working at once (a replica's lost connection is retried
    // on the primary) and settle on the primary.
    for _ in 0..200 {
        let port = server_port(&client).await;
        let _ = port;
    }
    for _ in 0..50 {
        assert_eq!(server_port(&client).await, primary);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_has_yet_to_replay_a_new_database_hands_the_read_to_the_primary() {
    let h = tokio::task::spawn_blocking(|| routed("", &[]))
        .await
        .unwrap();
    let (primary, _, _) = ports(&h);
    for replica in h.cluster.replicas() {
        replica.psql("SELECT pg_wal_replay_pause()").unwrap();
    }
    h.admin_sql("CREATE DATABASE fresh");
    // Both replicas stay in rotation (the lag is a few bytes), but neither
    // has the database yet: their 3D000 at login is not the client's error.
    let client = connect(&h.proxy_dsn().replace("dbname=appdb", "dbname=fresh")).await;
    for _ in 0..20 {
        assert_eq!(server_port(&client).await, primary);
    }
    for replica in h.cluster.replicas() {
        replica.psql("SELECT pg_wal_replay_resume()").unwrap();
    }
}

/// One protocol message, framed.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Parse (unnamed), Bind, Describe portal, Execute, Sync of `sql`, as
/// libpq's PQexecParams sends it.
fn unnamed_extended(sql: &str) -> Vec<u8> {
    let mut out = message(b'P', format!("\0{sql}\0\0\0").as_bytes());
    out.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    out.extend(message(b'D', b"P\0"));
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out.extend(message(b'S', b""));
    out
}

/// Sends `request` and reads the replies through ReadyForQuery.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Vec<(u8, Vec<u8>)> {
    stream.write_all(request).await.unwrap();
    let mut replies = Vec::new();
    loop {
        let (tag, body) = read_message(stream).await;
        replies.push((tag, body));
        if tag == b'Z' {
            return replies;
        }
    }
}

fn tags(replies: &[(u8, Vec<u8>)]) -> Vec<u8> {
    replies.iter().map(|(tag, _)| *tag).collect()
}

/// The first column of the first DataRow, as text.
fn first_value(replies: &[(u8, Vec<u8>)]) -> String {
    let (_, row) = replies.iter().find(|(tag, _)| *tag == b'D').expect("a row");
    let len = i32::from_be_bytes(row[2..6].try_into().unwrap()) as usize;
    String::from_utf8(row[6..6 + len].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bare_begin_then_set_transaction_read_only_runs_on_a_replica() {
    let h = tokio::task::spawn_blocking(|| routed("", &[]))
        .await
        .unwrap();
    let (_, r1, r2) = ports(&h);
    let on_replica = |port: u16| port == r1 || port == r2;
    let client = connect(&h.proxy_dsn()).await;
    // Simple protocol, each statement its own Query.
    for begin in ["BEGIN", "START TRANSACTION", "begin work;"] {
        for _ in 0..5 {
            client.batch_execute(begin).await.unwrap();
            client
                .batch_execute("SET TRANSACTION READ ONLY")
                .await
                .unwrap();
            let first = simple_port(&client, "SELECT inet_server_port()").await;
            let second = simple_port(&client, "SELECT inet_server_port()").await;
            client.batch_execute("COMMIT").await.unwrap();
            assert!(on_replica(first), "{begin}: ran on {first}");
            assert_eq!(first, second, "one transaction, one node");
        }
    }
    // The transaction is read-only where it runs, as it would be on the
    // primary: a write fails with PostgreSQL's own 25006.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET TRANSACTION READ ONLY")
        .await
        .unwrap();
    let refused = client.batch_execute("CREATE TABLE nope (x int)").await;
    assert_eq!(
        refused.unwrap_err().code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    // Extended protocol with named statements (tokio-postgres prepares each).
    let begin = client.prepare("BEGIN").await.unwrap();
    let read_only = client.prepare("SET TRANSACTION READ ONLY").await.unwrap();
    let port = client.prepare("SELECT inet_server_port()").await.unwrap();
    let commit = client.prepare("COMMIT").await.unwrap();
    for _ in 0..10 {
        client.execute(&begin, &[]).await.unwrap();
        client.execute(&read_only, &[]).await.unwrap();
        let first = client.query_one(&port, &[]).await.unwrap().get::<_, i32>(0) as u16;
        let second = client.query_one(&port, &[]).await.unwrap().get::<_, i32>(0) as u16;
        client.execute(&commit, &[]).await.unwrap();
        assert!(on_replica(first), "extended: ran on {first}");
        assert_eq!(first, second, "one transaction, one node");
    }
    // Unnamed statements, replies checked byte for byte.
    let mut raw = raw_session(&h).await;
    for _ in 0..5 {
        let replies = exchange(&mut raw, &unnamed_extended("BEGIN")).await;
        assert_eq!(tags(&replies), b"12nCZ");
        assert_eq!(replies[3].1, b"BEGIN\0");
        assert_eq!(replies[4].1, b"T");
        let replies = exchange(&mut raw, &unnamed_extended("SET TRANSACTION READ ONLY")).await;
        assert_eq!(tags(&replies), b"12nCZ", "{replies:?}");
        assert_eq!(replies[4].1, b"T");
        let replies = exchange(&mut raw, &unnamed_extended("SELECT inet_server_port()")).await;
        assert_eq!(tags(&replies), b"12TDCZ", "{replies:?}");
        let served = first_value(&replies).parse::<u16>().unwrap();
        assert!(on_replica(served), "raw extended: ran on {served}");
        let replies = exchange(&mut raw, &message(b'Q', b"COMMIT\0")).await;
        assert_eq!(tags(&replies), b"CZ");
        assert_eq!(replies[1].1, b"I");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bare_begin_with_a_write_runs_wholly_on_the_primary_and_an_empty_one_on_no_server() {
    let admin_port = free_port();
    let h = tokio::task::spawn_blocking(move || routed_with_admin("", &[], admin_port))
        .await
        .unwrap();
    let (primary, _, _) = ports(&h);
    let client = connect(&h.proxy_dsn()).await;
    client
        .batch_execute("CREATE TABLE w (port int)")
        .await
        .unwrap();
    // BEGIN; INSERT; COMMIT, each its own Query, and all in one.
    for _ in 0..10 {
        client.batch_execute("BEGIN").await.unwrap();
        client
            .batch_execute("INSERT INTO w SELECT inet_server_port()")
            .await
            .unwrap();
        let inside = simple_port(&client, "SELECT inet_server_port()").await;
        client.batch_execute("COMMIT").await.unwrap();
        assert_eq!(inside, primary);
        client
            .batch_execute("BEGIN; INSERT INTO w SELECT inet_server_port(); COMMIT")
            .await
            .unwrap();
    }
    // The same with prepared statements, and a read first: a transaction
    // that did not start with SET TRANSACTION READ ONLY may write later.
    let begin = client.prepare("BEGIN").await.unwrap();
    let port = client.prepare("SELECT inet_server_port()").await.unwrap();
    let insert = client
        .prepare("INSERT INTO w SELECT inet_server_port()")
        .await
        .unwrap();
    let commit = client.prepare("COMMIT").await.unwrap();
    for _ in 0..10 {
        client.execute(&begin, &[]).await.unwrap();
        let first = client.query_one(&port, &[]).await.unwrap().get::<_, i32>(0) as u16;
        client.execute(&insert, &[]).await.unwrap();
        client.execute(&commit, &[]).await.unwrap();
        assert_eq!(first, primary);
    }
    let landed = h.cluster.primary().psql_db(
        APP_DB,
        "SELECT count(*) || ' ' || min(port) || ' ' || max(port) FROM w",
    );
    assert_eq!(landed.unwrap(), format!("30 {primary} {primary}"));

    // BEGIN then COMMIT or ROLLBACK, nothing between: answered by the
    // proxy exactly as PostgreSQL answers, no server transaction at all.
    let transactions = || {
        let (_, text) = http_get(admin_port, "/metrics");
        metric_sum(&parse_metrics(&text), "switchyard_transactions_total", &[])
    };
    let rollback = client.prepare("ROLLBACK").await.unwrap();
    let mut raw = raw_session(&h).await;
    // The last stretch is counted just after its reply went out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = transactions();
    for _ in 0..10 {
        client.batch_execute("BEGIN").await.unwrap();
        client.batch_execute("COMMIT").await.unwrap();
        client.batch_execute("START TRANSACTION").await.unwrap();
        client.batch_execute("ROLLBACK").await.unwrap();
        client.execute(&begin, &[]).await.unwrap();
        client.execute(&commit, &[]).await.unwrap();
        client.execute(&begin, &[]).await.unwrap();
        client.execute(&rollback, &[]).await.unwrap();
        let replies = exchange(&mut raw, &message(b'Q', b"BEGIN\0")).await;
        assert_eq!(tags(&replies), b"CZ");
        assert_eq!(
            (&replies[0].1[..], &replies[1].1[..]),
            (&b"BEGIN\0"[..], &b"T"[..])
        );
        let replies = exchange(&mut raw, &unnamed_extended("END")).await;
        assert_eq!(tags(&replies), b"12nCZ");
        assert_eq!(
            (&replies[3].1[..], &replies[4].1[..]),
            (&b"COMMIT\0"[..], &b"I"[..])
        );
    }
    assert_eq!(
        transactions(),
        before,
        "no server served an empty transaction"
    );
    // Still a working session afterwards, and the counter does count
    // (one transaction on the primary, one read on a replica).
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO w SELECT inet_server_port()")
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_ne!(
        simple_port(&client, "SELECT inet_server_port()").await,
        primary
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(transactions(), before + 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_begin_that_cannot_open_leaves_a_failed_transaction_until_it_ends() {
    let pool = "\n[pool]\nmax_size = 1\ncheckout_timeout = \"300ms\"";
    let h = tokio::task::spawn_blocking(move || routed(pool, &[]))
        .await
        .unwrap();
    let holder = connect(&h.proxy_dsn()).await;
    holder
        .batch_execute("CREATE TABLE w (x int)")
        .await
        .unwrap();
    let mut raw = raw_session(&h).await;
    // The primary's only connection is taken by an open transaction.
    holder
        .batch_execute("BEGIN; INSERT INTO w VALUES (1)")
        .await
        .unwrap();
    let replies = exchange(&mut raw, &message(b'Q', b"BEGIN\0")).await;
    assert_eq!(tags(&replies), b"CZ");
    assert_eq!(replies[1].1, b"T");
    // Its first write cannot get a connection: the transaction fails, as
    // it would have on a server.
    let replies = exchange(&mut raw, &message(b'Q', b"INSERT INTO w VALUES (2)\0")).await;
    assert_eq!(tags(&replies), b"EZ", "{replies:?}");
    assert_eq!(replies[1].1, b"E");
    // Everything but its end is refused with 25P02, with no server.
    let replies = exchange(&mut raw, &message(b'Q', b"SELECT 1\0")).await;
    assert_eq!(tags(&replies), b"EZ");
    assert!(
        replies[0].1.windows(6).any(|w| w == b"C25P02"),
        "{replies:?}"
    );
    assert_eq!(replies[1].1, b"E");
    let replies = exchange(&mut raw, &unnamed_extended("SELECT 1")).await;
    assert_eq!(tags(&replies), b"EZ");
    assert_eq!(replies[1].1, b"E");
    let replies = exchange(&mut raw, &message(b'S', b"")).await;
    assert_eq!(tags(&replies), b"Z");
    assert_eq!(replies[0].1, b"E");
    // COMMIT ends it as PostgreSQL does: ROLLBACK.
    let replies = exchange(&mut raw, &unnamed_extended("COMMIT")).await;
    assert_eq!(tags(&replies), b"12nCZ");
    assert_eq!(replies[3].1, b"ROLLBACK\0");
    assert_eq!(replies[4].1, b"I");
    // The holder commits; the client's next transaction works.
    holder.batch_execute("COMMIT").await.unwrap();
    let replies = exchange(&mut raw, &message(b'Q', b"BEGIN\0")).await;
    assert_eq!(tags(&replies), b"CZ");
    let replies = exchange(&mut raw, &message(b'Q', b"INSERT INTO w VALUES (3)\0")).await;
    assert_eq!(tags(&replies), b"CZ", "{replies:?}");
    assert_eq!(replies[1].1, b"T");
    let replies = exchange(&mut raw, &message(b'Q', b"COMMIT\0")).await;
    assert_eq!(tags(&replies), b"CZ");
    assert_eq!(replies[1].1, b"I");
    let rows = h
        .cluster
        .primary()
        .psql_db(APP_DB, "SELECT string_agg(x::text, ',' ORDER BY x) FROM w")
        .unwrap();
    assert_eq!(rows, "1,3");
}
