//! A failover drill with the probe topology: plain streaming replication,
//! the primary stopped hard, a replica promoted by hand. Clients keep their
//! connections, writes wait for the new primary instead of failing, and no
//! acknowledged write is lost.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{APP_DB, APP_PASSWORD, APP_USER, Harness, ProxyProcess, connect, spec};
use switchyard::testcluster::{ClusterSpec, LocalCluster};

fn probe_config(cluster: &LocalCluster) -> String {
    support::replicated_config(
        cluster,
        "topology = \"probe\"\nprobe_timeout = \"500ms\"",
        "failover_timeout = \"20s\"",
        "",
    )
}

/// What one writing client saw.
#[derive(Debug, Default)]
struct Seen {
    acknowledged: Vec<i32>,
    errors: Vec<(Instant, String)>,
    /// (when acknowledged, server port that took it)
    writes: Vec<(Instant, u16)>,
    read_errors: usize,
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_topology_survives_a_manual_promotion_without_losing_writes() {
    let h = tokio::task::spawn_blocking(|| {
        let cluster = LocalCluster::start(&ClusterSpec {
            replicas: 2,
            ..spec()
        })
        .expect("start cluster");
        let proxy = ProxyProcess::start(&probe_config(&cluster));
        Harness { proxy, cluster }
    })
    .await
    .unwrap();
    let old_port: u16 = h
        .cluster
        .primary()
        .addr()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let new_port: u16 = h.cluster.replicas()[0]
        .addr()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let setup = connect(&h.proxy_dsn()).await;
    setup
        .batch_execute("CREATE TABLE acks (id int PRIMARY KEY, port int)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..16i32 {
        let dsn = h.proxy_dsn();
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            let client = connect(&dsn).await;
            let mut seen = Seen::default();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let id = c * 100_000 + i;
                i += 1;
                let written = client
                    .query_one(
                        "INSERT INTO acks VALUES ($1, inet_server_port()) RETURNING port",
                        &[&id],
                    )
                    .await;
                match written {
                    Ok(row) => {
                        seen.acknowledged.push(id);
                        seen.writes
                            .push((Instant::now(), row.get::<_, i32>(0) as u16));
                    }
                    Err(error) => seen.errors.push((Instant::now(), error.to_string())),
                }
                if client.query_one("SELECT 1", &[]).await.is_err() {
                    seen.read_errors += 1;
                }
            }
            // The connection survived the failover.
            client
                .query_one("SELECT 1", &[])
                .await
                .expect("connection still usable");
            seen
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The primary dies (no shutdown checkpoint, backends killed), then a
    // replica is promoted by hand, as an operator (or a script) would.
    let killed = Instant::now();
    let stopped = tokio::task::block_in_place(|| {
        h.cluster.primary().stop("immediate").unwrap();
        let stopped = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        h.cluster.replicas()[0].promote().unwrap();
        stopped
    });
    let promoted = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for client in clients {
        all.push(client.await.expect("client task"));
    }

    // Writes were taken by the old primary before the kill and by the new
    // one after the promotion, by nothing else.
    let first_after = all
        .iter()
        .flat_map(|s| s.writes.iter())
        .filter(|(at, _)| *at > promoted)
        .map(|(at, _)| *at)
        .min()
        .expect("writes resumed");
    for seen in &all {
        for (at, port) in &seen.writes {
            // While the stop runs, the old primary may still commit.
            let allowed = if *at < killed {
                *port == old_port
            } else if *at < stopped {
                *port == old_port || *port == new_port
            } else {
                *port == new_port
            };
            assert!(
                allowed,
                "write acknowledged by port {port} at {:?} after the kill",
                at.saturating_duration_since(killed)
            );
        }
    }
    let gap = first_after.saturating_duration_since(promoted);
    let errors: Vec<&(Instant, String)> = all.iter().flat_map(|s| s.errors.iter()).collect();
    let read_errors: usize = all.iter().map(|s| s.read_errors).sum();
    let acknowledged: Vec<i32> = all
        .iter()
        .flat_map(|s| s.acknowledged.iter().copied())
        .collect();
    println!(
        "failover drill: {} acknowledged writes, {} write errors, {read_errors} read errors, promotion -> first write {gap:?}",
        acknowledged.len(),
        errors.len()
    );
    for (at, error) in &errors {
        println!(
            "  error {:?} after the kill: {error}",
            at.saturating_duration_since(killed)
        );
    }
    // At most one error per client: the transaction in flight at the kill.
    assert!(errors.len() <= 16, "{errors:?}");
    for (at, _) in &errors {
        assert!(
            at.saturating_duration_since(killed) < Duration::from_secs(1),
            "an error long after the kill: writes should have waited"
        );
    }
    assert!(
        gap <= Duration::from_secs(1),
        "writes resumed {gap:?} after promotion"
    );

    // Every acknowledged write is on the new primary.
    let direct = connect(&format!(
        "host=127.0.0.1 port={new_port} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}"
    ))
    .await;
    let stored: std::collections::HashSet<i32> = direct
        .query("SELECT id FROM acks", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .count();
    assert_eq!(lost, 0, "acknowledged writes lost");
    drop(setup);
}
