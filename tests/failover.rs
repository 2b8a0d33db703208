//! Failover drills through the real binary: 16 writing and 4 reading
//! clients stay connected while the primary dies or hands over, writes wait
//! for the new primary instead of failing, no acknowledged write is lost,
//! and no write is taken by a node that is not the primary.
//!
//! - probe topology, plain streaming replication, the primary stopped hard
//!   and a replica promoted by hand;
//! - Patroni 3 + etcd, `kill -9` of the leader's Patroni and postmaster;
//! - Patroni, a planned `patronictl switchover`.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use support::drill::{self, IdleSessions, Load, port_of};
use support::{APP_DB, APP_PASSWORD, APP_USER, ProxyProcess, spec};
use switchyard::testcluster::{ClusterSpec, LocalCluster, PatroniCluster, PatroniSpec};

/// One drill at a time: they measure pauses in milliseconds on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WRITERS: i32 = 16;
/// How long the proxy may take to notice a dead primary: one probe
/// interval (100 ms) plus the probe timeout (500 ms) of the drills' configs.
const DETECTION: Duration = Duration::from_millis(600);
const READERS: usize = 4;

fn dsn(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}")
}

fn log_outcome(name: &str, outcome: &drill::Outcome, failure: SystemTime) {
    println!("{name}: {}", outcome.summary());
    for f in outcome.write_errors().iter().chain(&outcome.read_errors()) {
        println!(
            "  error at {} ms, sent at {} ms: {}",
            millis_since(failure, f.at),
            millis_since(failure, f.sent),
            f.error
        );
    }
}

/// Signed milliseconds from `origin` to `at`.
fn millis_since(origin: SystemTime, at: SystemTime) -> i128 {
    match at.duration_since(origin) {
        Ok(after) => after.as_millis() as i128,
        Err(before) => -(before.duration().as_millis() as i128),
    }
}

/// A primary with `replicas` streaming replicas and the proxy following
/// them with the probe topology, in `pool_mode`.
async fn probe_cluster_with_proxy(
    replicas: usize,
    pool_mode: &'static str,
) -> (LocalCluster, ProxyProcess) {
    tokio::task::spawn_blocking(move || {
        let cluster =
            LocalCluster::start(&ClusterSpec { replicas, ..spec() }).expect("start cluster");
        let config = support::replicated_config(
            &cluster,
            "topology = \"probe\"\nprobe_timeout = \"500ms\"",
            "failover_timeout = \"20s\"",
            "",
        )
        .replace(
            "pool_mode = \"transaction\"",
            &format!("pool_mode = \"{pool_mode}\""),
        );
        let proxy = ProxyProcess::start(&config);
        (cluster, proxy)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_topology_survives_a_manual_promotion_without_losing_writes() {
    let _serial = SERIAL.lock().await;
    let (cluster, proxy) = probe_cluster_with_proxy(2, "transaction").await;
    cluster
        .make_replication_synchronous()
        .expect("synchronous replication");
    let old_port = cluster.primary().port;
    let new_port = cluster.replicas()[0].port;
    let through_proxy = dsn(proxy.addr.port());
    drill::create_table(&through_proxy).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let load = Load::start(&through_proxy, WRITERS, READERS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The primary dies (no shutdown checkpoint, backends killed), then a
    // replica is promoted by hand, as an operator (or a script) would.
    let killed = SystemTime::now();
    let stopped = tokio::task::block_in_place(|| {
        cluster.primary().stop("immediate").unwrap();
        let stopped = SystemTime::now();
        std::thread::sleep(Duration::from_millis(500));
        cluster.replicas()[0].promote().unwrap();
        stopped
    });
    let promoted = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let outcome = load.stop().await;
    log_outcome("probe drill", &outcome, killed);

    // While the stop runs, the old primary may still commit.
    outcome.assert_writes_only_where(|at, port| {
        if at < killed {
            port == old_port
        } else if at < stopped {
            port == old_port || port == new_port
        } else {
            port == new_port
        }
    });
    outcome.assert_errors_only_in_flight(stopped + DETECTION);
    assert!(outcome.read_errors().is_empty(), "reads failed");
    let gap = outcome
        .first_write_after(promoted)
        .expect("writes resumed after the promotion");
    println!("probe drill: promotion -> first write {gap:?}");
    assert!(
        gap <= Duration::from_secs(1),
        "writes resumed {gap:?} after promotion"
    );
    outcome.assert_none_lost(&dsn(new_port)).await;
}

/// A Patroni cluster with synchronous replication (so that a failover
/// loses no acknowledged commit) and the proxy following it.
async fn patroni_with_proxy() -> (Arc<PatroniCluster>, ProxyProcess) {
    tokio::task::spawn_blocking(|| {
        let cluster = PatroniCluster::start(&PatroniSpec {
            users: vec![(APP_USER.into(), APP_PASSWORD.into())],
            databases: vec![APP_DB.into()],
            synchronous_mode: true,
            ..PatroniSpec::default()
        })
        .expect("start the Patroni cluster");
        let urls: Vec<String> = cluster
            .api_urls()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect();
        let config = support::replicated_config_for(
            &cluster.member_addrs(),
            cluster.superuser_password(),
            &format!(
                "topology = \"patroni\"\nprobe_timeout = \"500ms\"\n\n[patroni]\nurls = [{}]\npoll_interval = \"100ms\"\nrequest_timeout = \"500ms\"",
                urls.join(", ")
            ),
            "failover_timeout = \"30s\"",
            "",
        );
        let proxy = ProxyProcess::start(&config);
        (Arc::new(cluster), proxy)
    })
    .await
    .unwrap()
}

/// Runs `f` on the blocking pool (the Patroni harness is synchronous).
async fn blocking<T: Send + 'static>(
    cluster: &Arc<PatroniCluster>,
    f: impl FnOnce(&PatroniCluster) -> T + Send + 'static,
) -> T {
    let cluster = Arc::clone(cluster);
    tokio::task::spawn_blocking(move || f(&cluster))
        .await
        .expect("blocking task")
}

/// Stops the cluster off the async threads (stopping waits for Patroni).
async fn stop_cluster(cluster: Arc<PatroniCluster>) {
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("stop task panicked");
}

#[tokio::test(flavor = "multi_thread")]
async fn patroni_kill_9_of_the_leader_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let (cluster, proxy) = patroni_with_proxy().await;
    let through_proxy = dsn(proxy.addr.port());
    drill::create_table(&through_proxy).await;
    let old = blocking(&cluster, |c| c.leader().expect("a leader").name.clone()).await;
    let old_port = port_of(&cluster.member(&old).unwrap().addr());

    let load = Load::start(&through_proxy, WRITERS, READERS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killing = SystemTime::now();
    let killed_name = blocking(&cluster, |c| {
        c.kill_leader().expect("kill the leader").name.clone()
    })
    .await;
    assert_eq!(killed_name, old);
    let killed = SystemTime::now();
    let old_name = old.clone();
    let new = blocking(&cluster, move |c| {
        c.wait_for_leader_change(&old_name, Duration::from_secs(40))
            .expect("Patroni elects a new leader")
            .name
            .clone()
    })
    .await;
    let new = cluster.member(&new).unwrap();
    let new_port = port_of(&new.addr());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcome = load.stop().await;
    let promoted = new
        .promoted_at()
        .expect("the new leader's log shows its promotion");
    log_outcome("Patroni kill -9 drill", &outcome, killing);

    // Backends orphaned by the postmaster's death may finish a commit the
    // synchronous standby already has; nothing may follow the promotion.
    outcome.assert_writes_only_where(|at, port| {
        if at < promoted {
            port == old_port
        } else {
            port == new_port
        }
    });
    outcome.assert_errors_only_in_flight(killed + DETECTION);
    for failure in outcome.write_errors() {
        assert!(
            failure.at.duration_since(killing).unwrap_or_default() < Duration::from_secs(1),
            "an error long after the kill (writes should have waited): {failure:?}"
        );
    }
    assert!(outcome.read_errors().is_empty(), "reads failed");
    let gap = outcome
        .first_write_after(promoted)
        .expect("writes resumed after the promotion");
    println!(
        "Patroni kill -9 drill: {} promoted {:?} after the kill; promotion -> first write through the proxy {gap:?}",
        new.name,
        promoted.duration_since(killing).unwrap_or_default()
    );
    assert!(
        gap <= Duration::from_secs(1),
        "writes resumed {gap:?} after promotion"
    );
    outcome.assert_none_lost(&dsn(new_port)).await;
    drop(proxy);
    stop_cluster(cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patroni_switchover_costs_clients_between_transactions_nothing() {
    let _serial = SERIAL.lock().await;
    let (cluster, proxy) = patroni_with_proxy().await;
    let through_proxy = dsn(proxy.addr.port());
    drill::create_table(&through_proxy).await;
    let old = blocking(&cluster, |c| c.leader().expect("a leader").name.clone()).await;
    // With synchronous_mode only the synchronous standby may take over;
    // Patroni names one within a loop or two of the start.
    let candidate = blocking(&cluster, |c| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = c.cluster_status().expect("GET /cluster");
            if let Some(m) = status.members.iter().find(|m| m.role == "sync_standby") {
                return m.name.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no synchronous standby: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await;
    let candidate_port = port_of(&cluster.member(&candidate).unwrap().addr());
    let old_port = port_of(&cluster.member(&old).unwrap().addr());

    let idle = IdleSessions::open(&through_proxy, 8).await;
    assert_eq!(idle.write_each(-100, old_port).await, Vec::<String>::new());
    let load = Load::start(&through_proxy, WRITERS, READERS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = SystemTime::now();
    {
        let candidate = candidate.clone();
        blocking(&cluster, move |c| {
            c.switchover(&candidate).expect("patronictl switchover")
        })
        .await;
    }
    let old_name = old.clone();
    let new = blocking(&cluster, move |c| {
        c.wait_for_leader_change(&old_name, Duration::from_secs(30))
            .expect("the candidate leads")
            .name
            .clone()
    })
    .await;
    assert_eq!(new, candidate);
    let new = cluster.member(&new).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcome = load.stop().await;
    let promoted = new
        .promoted_at()
        .expect("the candidate's log shows its promotion");
    let old_stopping = cluster
        .member(&old)
        .and_then(|m| m.logged_at("received fast shutdown request"))
        .expect("the old leader's log shows its shutdown");
    log_outcome("Patroni switchover drill", &outcome, old_stopping);

    outcome.assert_writes_only_where(|at, port| {
        if at < promoted {
            port == old_port
        } else {
            port == candidate_port
        }
    });
    // Sessions between transactions see nothing of the switchover.
    assert_eq!(
        idle.write_each(-200, candidate_port).await,
        Vec::<String>::new(),
        "idle sessions saw errors"
    );
    // Only a write already running when the old primary began to shut
    // down may fail (its commit cut while it waited for the standby).
    outcome.assert_errors_only_in_flight(old_stopping + DETECTION);
    assert!(outcome.read_errors().is_empty(), "reads failed");
    let gap = outcome
        .first_write_after(promoted)
        .expect("writes resumed after the promotion");
    println!(
        "Patroni switchover drill: patronictl started {:?} before {candidate}'s promotion; promotion -> first write through the proxy {gap:?}",
        promoted.duration_since(started).unwrap_or_default()
    );
    assert!(
        gap <= Duration::from_secs(1),
        "writes resumed {gap:?} after promotion"
    );
    outcome.assert_none_lost(&dsn(candidate_port)).await;
    drop(proxy);
    stop_cluster(cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claimed_primary_still_in_recovery_never_gets_a_write() {
    // The control plane (here the static config) names the replica as
    // primary; the probes find it in recovery, so writes are held and then
    // refused by the proxy, and the replica never sees one.
    let (cluster, proxy) = tokio::task::spawn_blocking(|| {
        let cluster = LocalCluster::start(&ClusterSpec {
            replicas: 1,
            extra_conf: vec!["log_statement = 'all'".into()],
            ..spec()
        })
        .expect("start cluster");
        let replica = cluster.replicas()[0].addr();
        let config = support::replicated_config(
            &cluster,
            &format!("topology = \"static\"\nprimary = \"{replica}\""),
            "failover_timeout = \"1s\"",
            "",
        );
        let proxy = ProxyProcess::start(&config);
        (cluster, proxy)
    })
    .await
    .unwrap();
    cluster
        .primary()
        .psql_db(APP_DB, "CREATE TABLE guard (note text)")
        .unwrap();
    let client = support::connect(&dsn(proxy.addr.port())).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let error = client
            .execute("INSERT INTO guard VALUES ('split-brain-probe')", &[])
            .await
            .expect_err("no verified primary: the write is refused");
        let db = error.as_db_error().expect("an ErrorResponse");
        assert_eq!(db.code().code(), "57P03", "{db:?}");
        assert!(db.message().contains("in recovery"), "{}", db.message());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // Reads still flow (on the replica).
    let port: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("reads are served")
        .get(0);
    assert_eq!(port as u16, cluster.replicas()[0].port);
    let replica_log = cluster.replicas()[0].log();
    assert!(
        replica_log.contains("statement: SELECT inet_server_port()")
            || replica_log.contains("inet_server_port"),
        "the replica logs statements (log_statement = 'all')"
    );
    assert!(
        !replica_log.contains("split-brain-probe"),
        "a write reached the replica:\n{replica_log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_terminated_on_a_healthy_primary_is_not_run_again() {
    // pg_terminate_backend of a running query reports 57P01 before any
    // CommandComplete, as a shutdown does; the primary stays, so the
    // proxy delivers the termination instead of re-running the query.
    let h = tokio::task::spawn_blocking(|| {
        support::Harness::with(spec(), "pool_mode = \"transaction\"")
    })
    .await
    .unwrap();
    let client = support::connect(&h.proxy_dsn()).await;
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        let result = client
            .simple_query("SELECT pg_sleep(20) -- terminate me")
            .await;
        (result, client)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let terminated = h.admin_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE '%terminate me' AND pid <> pg_backend_pid()",
        );
        if terminated.trim() == "1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the query never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (result, client) = sleeper.await.unwrap();
    let error = result.expect_err("the termination reaches the client");
    assert_eq!(
        error.as_db_error().map(|e| e.code().code()),
        Some("57P01"),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the query ran again after its termination"
    );
    let again = h.admin_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%terminate me' AND pid <> pg_backend_pid()",
    );
    assert_eq!(again.trim(), "0", "the terminated query is running again");
    // The session goes on.
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_made_read_only_gets_its_refusal_at_once() {
    // The primary refuses a write with 25006 because of the session's own
    // setting, not a demotion: the refusal is the answer, not a retry loop.
    let h = tokio::task::spawn_blocking(|| {
        support::Harness::with(spec(), "pool_mode = \"transaction\"")
    })
    .await
    .unwrap();
    let client = support::connect(&h.proxy_dsn()).await;
    client
        .batch_execute("CREATE TABLE ro (id int); SET default_transaction_read_only = on")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let error = client
        .execute("INSERT INTO ro VALUES (1)", &[])
        .await
        .expect_err("read-only session");
    assert_eq!(
        error.as_db_error().map(|e| e.code().code()),
        Some("25006"),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_mode_clients_between_transactions_move_to_the_new_primary() {
    let _serial = SERIAL.lock().await;
    let (cluster, proxy) = probe_cluster_with_proxy(1, "session").await;
    let old_port = cluster.primary().port as i32;
    let new_port = cluster.replicas()[0].port as i32;
    let through_proxy = dsn(proxy.addr.port());
    let plain = support::connect(&through_proxy).await;
    plain
        .batch_execute("CREATE TABLE moved (id int)")
        .await
        .unwrap();
    let port: i32 = plain
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port, old_port);
    let with_settings = support::connect(&through_proxy).await;
    with_settings
        .batch_execute("SET application_name = 'kept'")
        .await
        .unwrap();
    let in_transaction = support::connect(&through_proxy).await;
    in_transaction
        .batch_execute("BEGIN; INSERT INTO moved VALUES (0)")
        .await
        .unwrap();

    tokio::task::block_in_place(|| {
        cluster.primary().stop("immediate").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        cluster.replicas()[0].promote().unwrap();
    });

    // Nothing was in flight and nothing was kept on the old server: the
    // session goes on on the new primary, writes included.
    let started = std::time::Instant::now();
    let port: i32 = plain
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("the idle, stateless session carries on")
        .get(0);
    assert_eq!(port, new_port);
    plain
        .execute("INSERT INTO moved VALUES (1)", &[])
        .await
        .expect("writes on the new primary");
    println!(
        "session mode: the idle session's first query after the promotion took {:?}",
        started.elapsed()
    );
    // A SET and an open transaction cannot move: a clean error, then closed.
    for (name, client) in [
        ("SET", &with_settings),
        ("open transaction", &in_transaction),
    ] {
        let error = client
            .simple_query("SELECT 1")
            .await
            .expect_err("a session that cannot move is ended");
        println!("session mode, {name}: {error:?}");
        assert!(client.is_closed(), "{name}: the session is closed");
    }
}
