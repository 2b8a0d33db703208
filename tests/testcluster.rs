//! Integration tests for `switchyard::testcluster`: real PostgreSQL servers.

use std::time::{Duration, Instant};

use switchyard::testcluster::{ClusterSpec, LocalCluster};

/// Whether a process with this pid exists (zombies count as existing).
fn process_exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Debug logs of the cluster, shown for failing tests (or with --nocapture).
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("switchyard=debug")
        .with_test_writer()
        .try_init();
}

async fn start(spec: ClusterSpec) -> LocalCluster {
    tokio::task::spawn_blocking(move || LocalCluster::start(&spec))
        .await
        .expect("start task panicked")
        .expect("cluster start failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_with_two_streaming_replicas() {
    let spec = ClusterSpec {
        replicas: 2,
        users: vec![("app".to_owned(), "app-secret".to_owned())],
        databases: vec!["appdb".to_owned()],
        ..ClusterSpec::default()
    };
    init_tracing();
    let t0 = Instant::now();
    let cluster = start(spec).await;
    eprintln!(
        "primary + 2 replicas started in {:?} (bin dir {}, pg user {:?})",
        t0.elapsed(),
        cluster.bin_dir().display(),
        cluster.pg_user()
    );

    assert_eq!(cluster.replicas().len(), 2);
    assert_eq!(cluster.nodes().count(), 3);
    let ports: Vec<u16> = cluster.nodes().map(|n| n.port).collect();
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);

    // Roles.
    assert_eq!(
        cluster
            .primary()
            .psql("SELECT pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    for replica in cluster.replicas() {
        assert_eq!(replica.psql("SELECT pg_is_in_recovery()").unwrap(), "t");
    }
    assert_eq!(
        cluster
            .primary()
            .psql("SELECT count(*) FROM pg_replication_slots WHERE active")
            .unwrap(),
        "2"
    );

    // Replication of a write (the app user can create tables in its database).
    cluster
        .primary()
        .psql_db(
            "appdb",
            "SET ROLE app; CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t VALUES (1, 'hello')",
        )
        .unwrap();
    let replica = &cluster.replicas()[1];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match replica.psql_db("appdb", "SELECT v FROM t WHERE id = 1") {
            Ok(v) if v == "hello" => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "row not replicated within 5 s: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    // A psql error carries the server's message.
    let err = cluster
        .primary()
        .psql("SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");

    // SCRAM over TCP as the application user, on primary and replica.
    for node in [cluster.primary(), replica] {
        let conninfo = format!(
            "host={} port={} user=app password=app-secret dbname=appdb",
            node.host, node.port
        );
        let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", node.name));
        let conn = tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT current_user::text, v FROM t WHERE id = $1",
                &[&1i32],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "app");
        assert_eq!(row.get::<_, String>(1), "hello");
        drop(client);
        conn.await.unwrap().unwrap();
    }
    // Wrong passwords are rejected (SCRAM is really enforced).
    let bad = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=app password=wrong dbname=appdb",
            cluster.primary().port
        ),
        tokio_postgres::NoTls,
    )
    .await;
    assert!(bad.is_err());
    assert!(
        cluster
            .primary()
            .log()
            .contains("connection authorized: user=app")
    );

    // Teardown.
    let pids: Vec<i32> = cluster
        .nodes()
        .map(|n| n.postmaster_pid().expect("postmaster.pid"))
        .collect();
    assert!(pids.iter().all(|&pid| process_exists(pid)));
    let dir = cluster.base_dir().to_path_buf();
    assert!(dir.exists());
    let t1 = Instant::now();
    drop(cluster);
    eprintln!("cluster stopped and removed in {:?}", t1.elapsed());
    for pid in pids {
        assert!(!process_exists(pid), "postmaster {pid} still exists");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn promote_stop_start_and_parallel_clusters() {
    init_tracing();
    // Two clusters at once (as parallel tests do) must not collide.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            LocalCluster::start(&ClusterSpec {
                replicas: 1,
                ..ClusterSpec::default()
            })
        });
        let b = s.spawn(|| LocalCluster::start(&ClusterSpec::default()));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_ne!(a.primary().port, b.primary().port);
    assert_ne!(a.base_dir(), b.base_dir());
    assert!(b.replicas().is_empty());

    // Promote the replica.
    let replica = &a.replicas()[0];
    replica.promote().unwrap();
    assert_eq!(replica.psql("SELECT pg_is_in_recovery()").unwrap(), "f");
    replica
        .psql("CREATE TABLE after_promotion (x int)")
        .unwrap();

    // Stop and restart a node.
    let primary = b.primary();
    primary.psql("CREATE TABLE survives (x int)").unwrap();
    primary.stop("fast").unwrap();
    assert!(!primary.is_running());
    assert!(primary.psql("SELECT 1").is_err());
    primary.stop("fast").unwrap(); // stopping a stopped node is fine
    primary.start().unwrap();
    assert_eq!(
        primary
            .psql("SELECT count(*) FROM pg_tables WHERE tablename = 'survives'")
            .unwrap(),
        "1"
    );
    assert!(primary.stop("bogus").is_err());

    // Explicit stop is idempotent; drop after stop still cleans up.
    let mut a = a;
    let pid = a.primary().postmaster_pid().unwrap();
    a.stop();
    a.stop();
    assert!(!process_exists(pid));
    let dir = a.base_dir().to_path_buf();
    drop(a);
    assert!(!dir.exists());
}

#[test]
fn teardown_when_the_test_panics() {
    init_tracing();
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = LocalCluster::start(&ClusterSpec::default()).unwrap();
        *seen.lock().unwrap() = Some((
            cluster.primary().postmaster_pid().unwrap(),
            cluster.base_dir().to_path_buf(),
        ));
        panic!("intentional panic to exercise teardown");
    }));
    assert!(result.is_err());
    let (pid, dir) = seen.into_inner().unwrap().unwrap();
    assert!(!process_exists(pid), "postmaster {pid} survived the panic");
    assert!(!dir.exists(), "{} survived the panic", dir.display());
}

#[test]
fn bad_configuration_is_reported_with_the_server_log() {
    init_tracing();
    let spec = ClusterSpec {
        extra_conf: vec!["no_such_setting = 1".to_owned()],
        ..ClusterSpec::default()
    };
    let err = LocalCluster::start(&spec).unwrap_err();
    let msg = err.to_string();
    eprintln!("expected start error: {msg}");
    assert!(
        matches!(
            err,
            switchyard::testcluster::ClusterError::StartFailed { .. }
        ),
        "{msg}"
    );
    assert!(msg.contains("no_such_setting"), "{msg}");

    let err = LocalCluster::start(&ClusterSpec {
        max_connections: 0,
        ..ClusterSpec::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
}

#[test]
fn node_hosts_must_be_loopback_and_one_per_node() {
    let err = LocalCluster::start(&ClusterSpec {
        replicas: 1,
        hosts: vec!["127.0.1.1".to_owned()],
        ..ClusterSpec::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("2 nodes"), "{err}");

    let err = LocalCluster::start(&ClusterSpec {
        hosts: vec!["10.0.0.1".to_owned()],
        ..ClusterSpec::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("not a loopback"), "{err}");

    let err = LocalCluster::start(&ClusterSpec {
        replicas: 1,
        hosts: vec!["127.0.1.1".to_owned(), "127.0.1.1".to_owned()],
        ..ClusterSpec::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}
