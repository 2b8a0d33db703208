//! End-to-end tests of the Patroni watcher against a real Patroni 3.x
//! cluster (etcd + 3 members on loopback, started by the test support).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use switchyard::config::PatroniConfig;
use switchyard::testcluster::{PatroniCluster, PatroniSpec};
use switchyard::topology::{ClaimedRole, Claims, patroni};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One Patroni cluster at a time: two would share the 2 cores and blur the
/// failover timings these tests report.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("switchyard=info")
        .with_test_writer()
        .try_init();
}

async fn start_cluster() -> Arc<PatroniCluster> {
    let cluster = tokio::task::spawn_blocking(|| PatroniCluster::start(&PatroniSpec::default()))
        .await
        .expect("start task panicked")
        .expect("Patroni cluster start failed");
    Arc::new(cluster)
}

/// Stops the cluster off the async threads (stopping waits for Patroni).
async fn stop_cluster(cluster: Arc<PatroniCluster>) {
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("stop task panicked");
}

struct Watcher {
    rx: watch::Receiver<Option<Claims>>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), patroni::PatroniError>>,
}

impl Watcher {
    /// The watcher with its documented defaults (500 ms poll, 1 s timeout).
    fn start(cluster: &PatroniCluster) -> Self {
        let config = PatroniConfig {
            urls: cluster.api_urls(),
            ..PatroniConfig::default()
        };
        let (tx, rx) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(patroni::run(config, tx, shutdown.clone()));
        Watcher { rx, shutdown, task }
    }

    /// Waits (bounded) for published claims satisfying `want`; every
    /// published version is passed to `seen` as well.
    async fn wait_for(
        &mut self,
        timeout: Duration,
        mut seen: impl FnMut(&Claims),
        want: impl Fn(&Claims) -> bool,
    ) -> Claims {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(claims) = self.rx.borrow_and_update().clone() {
                seen(&claims);
                if want(&claims) {
                    return claims;
                }
            }
            match tokio::time::timeout_at(deadline, self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("the watcher stopped publishing"),
                Err(_) => panic!(
                    "no matching claims within {timeout:?}; last: {:?}",
                    self.rx.borrow()
                ),
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("watcher did not stop within 5 s")
            .expect("watcher panicked")
            .expect("watcher failed");
    }
}

fn primary_name(claims: &Claims) -> Option<&str> {
    claims.claimed_primary().map(|m| m.name.as_str())
}

/// Asserts the healthy view: the real leader is the one claimed primary,
/// the other members are ready replicas, writes are not held.
async fn assert_claims_match_leader(cluster: &Arc<PatroniCluster>, watcher: &mut Watcher) {
    let leader = {
        let cluster = Arc::clone(cluster);
        tokio::task::spawn_blocking(move || cluster.leader().map(|m| m.name.clone()))
            .await
            .unwrap()
            .expect("Patroni names a leader")
    };
    let claims = watcher
        .wait_for(
            Duration::from_secs(10),
            |_| {},
            |c| primary_name(c) == Some(leader.as_str()) && c.members.len() == 3,
        )
        .await;
    let member = cluster.member(&leader).unwrap();
    assert_eq!(claims.claimed_primary().unwrap().addr, member.addr());
    assert!(!claims.hold_writes, "{claims:?}");
    let replicas = claims
        .members
        .iter()
        .filter(|m| m.role == ClaimedRole::Replica && m.ready)
        .count();
    assert_eq!(replicas, 2, "{claims:?}");
    let mut addrs: Vec<_> = claims.members.iter().map(|m| m.addr.clone()).collect();
    let mut expected = cluster.member_addrs();
    addrs.sort();
    expected.sort();
    assert_eq!(addrs, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_name_a_new_primary_after_kill_9_of_the_leader() {
    init_tracing();
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster().await;
    let mut watcher = Watcher::start(&cluster);
    assert_claims_match_leader(&cluster, &mut watcher).await;

    let old = primary_name(watcher.rx.borrow().as_ref().unwrap())
        .unwrap()
        .to_owned();
    let killed_at = Instant::now();
    {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || cluster.kill_leader().map(|m| m.name.clone()))
            .await
            .unwrap()
            .expect("kill the leader");
    }

    let mut held_at = None;
    let claims = watcher
        .wait_for(
            Duration::from_secs(30),
            |c| {
                if c.hold_writes && held_at.is_none() {
                    held_at = Some(killed_at.elapsed());
                }
            },
            |c| !c.hold_writes && primary_name(c).is_some_and(|p| p != old),
        )
        .await;
    let claimed_after = killed_at.elapsed();
    let claimed_wall = SystemTime::now();
    let new = primary_name(&claims).unwrap().to_owned();
    assert!(
        claims
            .members
            .iter()
            .all(|m| m.name != old || m.role != ClaimedRole::Primary),
        "{claims:?}"
    );

    // The claimed primary is really out of recovery (Patroni promotes it
    // right after taking the leader key; allow a few seconds for that).
    let verified = {
        let cluster = Arc::clone(&cluster);
        let old = old.clone();
        tokio::task::spawn_blocking(move || {
            cluster
                .wait_for_leader_change(&old, Duration::from_secs(15))
                .map(|m| m.name.clone())
        })
        .await
        .unwrap()
        .expect("a new leader out of recovery")
    };
    let verified_after = killed_at.elapsed();
    assert_eq!(verified, new, "the claimed primary is Patroni's leader");
    let member = cluster.member(&new).unwrap();
    assert!(!cluster.is_in_recovery(member).unwrap());
    assert_eq!(claims.claimed_primary().unwrap().addr, member.addr());
    let promoted = member
        .promoted_at()
        .expect("the new leader's log records its promotion");
    // Positive: the claims came after PostgreSQL finished promoting.
    let claims_after_promotion_ms = match claimed_wall.duration_since(promoted) {
        Ok(after) => after.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    };
    eprintln!(
        "kill -9 of {old}: writes held after {held_at:?}, claims name {new} after {} ms \
         ({claims_after_promotion_ms:+} ms from its promotion), {new} verified out of \
         recovery after {} ms",
        claimed_after.as_millis(),
        verified_after.as_millis()
    );

    watcher.stop().await;
    stop_cluster(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_follow_a_patronictl_switchover() {
    init_tracing();
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster().await;
    let mut watcher = Watcher::start(&cluster);
    assert_claims_match_leader(&cluster, &mut watcher).await;

    let old = primary_name(watcher.rx.borrow().as_ref().unwrap())
        .unwrap()
        .to_owned();
    let candidate = cluster
        .members()
        .iter()
        .map(|m| m.name.clone())
        .find(|n| *n != old)
        .unwrap();
    let started = Instant::now();
    {
        let cluster = Arc::clone(&cluster);
        let candidate = candidate.clone();
        tokio::task::spawn_blocking(move || cluster.switchover(&candidate))
            .await
            .unwrap()
            .expect("patronictl switchover");
    }
    let claims = watcher
        .wait_for(
            Duration::from_secs(30),
            |_| {},
            |c| !c.hold_writes && primary_name(c) == Some(candidate.as_str()),
        )
        .await;
    let member = cluster.member(&candidate).unwrap();
    assert_eq!(claims.claimed_primary().unwrap().addr, member.addr());
    let verified = {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || {
            cluster
                .wait_for_leader_change(&old, Duration::from_secs(15))
                .map(|m| m.name.clone())
        })
        .await
        .unwrap()
        .expect("the candidate leads, out of recovery")
    };
    assert_eq!(verified, candidate);
    eprintln!(
        "patronictl switchover to {candidate}: claims and verification after {} ms",
        started.elapsed().as_millis()
    );

    watcher.stop().await;
    stop_cluster(cluster).await;
}
