//! `switchyard demo --failover`: writers run through the proxy while the
//! demo's primary is stopped hard and a replica is promoted by hand; then
//! the demo prints what the clients saw and checks that every acknowledged
//! write is on the new primary.
//!
//! The writers are the proxy's own server-side connector pointed at the
//! proxy (it speaks the client half of the protocol too), so the demo needs
//! no client library.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::backend::query::{self, InternalError};
use crate::backend::{self, Secret, ServerConnection};
use crate::protocol::frame::HEADER_LEN;
use crate::testcluster::{ClusterError, LocalCluster};
use crate::tls::Connector;

/// Writing clients.
const WRITERS: usize = 8;
/// Load before the primary is stopped, and after the promotion.
const STEADY: Duration = Duration::from_secs(3);
/// Time between stopping the primary and promoting a replica, as an
/// operator's script would take.
const PROMOTION_DELAY: Duration = Duration::from_millis(500);
/// Writes per writer at most (a bound; the drill stops long before).
const MAX_WRITES: u32 = 200_000;

/// Why the drill could not run.
#[derive(Debug, Error)]
pub enum DrillError {
    /// A writer could not log in through the proxy.
    #[error("cannot connect through switchyard: {0}")]
    Connect(#[from] backend::BackendError),
    /// Setting up or checking the table failed.
    #[error("{what}: {source}")]
    Query {
        /// What the demo was doing.
        what: &'static str,
        /// The failure.
        source: InternalError,
    },
    /// Stopping or promoting a node failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The load thread could not run.
    #[error("load runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Who the writers log in as.
pub struct Login<'a> {
    /// Application user.
    pub user: &'a str,
    /// Its password.
    pub password: &'a str,
    /// Database.
    pub database: &'a str,
}

/// What one writer saw.
#[derive(Debug, Default)]
struct WriterLog {
    /// (when acknowledged, sequence number, server port)
    acknowledged: Vec<(Instant, u32, u16)>,
    /// (when, SQLSTATE and message)
    errors: Vec<(Instant, String)>,
    /// The writer's connection to the proxy broke.
    dropped: bool,
}

/// What the drill measured.
#[derive(Debug)]
pub struct Report {
    /// Acknowledged writes.
    pub acknowledged: usize,
    /// Acknowledged before the stop, on the old primary.
    pub before: usize,
    /// Failed writes, with SQLSTATE and message.
    pub errors: Vec<String>,
    /// From the stop to the first write acknowledged by the new primary.
    pub write_pause: Duration,
    /// From the promotion to that write.
    pub promotion_to_write: Duration,
    /// Acknowledged writes taken by a server that was not primary then.
    pub misrouted: usize,
    /// Acknowledged writes missing on the new primary.
    pub lost: usize,
    /// Writer connections the proxy dropped.
    pub dropped: usize,
}

impl Report {
    /// True when the clients saw what switchyard promises: nothing lost,
    /// nothing misrouted, no connection dropped.
    pub fn kept_its_promise(&self) -> bool {
        self.lost == 0 && self.misrouted == 0 && self.dropped == 0
    }
}

/// Runs the drill against `cluster` through the proxy at `proxy`.
pub fn run(proxy: SocketAddr, cluster: &LocalCluster, login: &Login) -> Result<Report, DrillError> {
    let old = cluster.primary();
    let new = cluster
        .replicas()
        .first()
        .ok_or_else(|| ClusterError::InvalidArgument("the failover demo needs a replica".into()))?;
    // Asynchronous replication may lose commits the old primary
    // acknowledged; the drill shows what the proxy does, so it rules that out.
    cluster.make_replication_synchronous()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let params = vec![
        ("user".to_owned(), login.user.to_owned()),
        ("database".to_owned(), login.database.to_owned()),
    ];
    let secret = Secret::Password(login.password.to_owned());
    let addr = proxy.to_string();
    let plain = Connector::default();
    let connect = || {
        backend::connect(
            &addr,
            &params,
            Some(&secret),
            &plain,
            Duration::from_secs(10),
        )
    };
    runtime.block_on(async {
        let mut setup = connect().await?;
        query::query(
            &mut setup,
            "/* switchyard: primary */ CREATE TABLE IF NOT EXISTS failover_demo \
             (writer int, n int, PRIMARY KEY (writer, n))",
        )
        .await
        .map_err(|source| DrillError::Query {
            what: "create the demo table",
            source,
        })
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::with_capacity(WRITERS);
    for _ in 0..WRITERS {
        writers.push(runtime.block_on(connect())?);
    }
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = writers
                    .into_iter()
                    .enumerate()
                    .map(|(w, conn)| tokio::spawn(write_loop(w, conn, Arc::clone(&stop))))
                    .collect();
                let mut logs = Vec::with_capacity(tasks.len());
                for task in tasks {
                    logs.push(task.await.unwrap_or_default());
                }
                logs
            })
        })
    };

    println!("  {WRITERS} clients are writing through switchyard...");
    std::thread::sleep(STEADY);
    let stopped = Instant::now();
    println!(
        "  stopping the primary {} (immediate: no checkpoint, backends killed)",
        old.addr()
    );
    old.stop("immediate")?;
    std::thread::sleep(PROMOTION_DELAY);
    println!("  promoting the replica {}", new.addr());
    new.promote()?;
    let promoted = Instant::now();
    std::thread::sleep(STEADY);
    stop.store(true, Ordering::Relaxed);
    let logs = load.join().unwrap_or_default();

    let old_port = old.port;
    let new_port = new.port;
    let acknowledged: Vec<(Instant, u32, u16, usize)> = logs
        .iter()
        .enumerate()
        .flat_map(|(w, log)| {
            log.acknowledged
                .iter()
                .map(move |&(at, n, port)| (at, n, port, w))
        })
        .collect();
    let first_new = acknowledged
        .iter()
        .filter(|(at, _, port, _)| *at > stopped && *port == new_port)
        .map(|(at, ..)| *at)
        .min();
    // The old primary may finish a commit while `pg_ctl stop` runs; after
    // the promotion only the new primary may take writes.
    let misrouted = acknowledged
        .iter()
        .filter(|(at, _, port, _)| {
            (*at >= promoted && *port != new_port) || (*at < stopped && *port != old_port)
        })
        .count();
    let stored = stored_writes(new, login)?;
    let lost = acknowledged
        .iter()
        .filter(|(_, n, _, w)| !stored.contains(&(*w as i32, *n as i32)))
        .count();
    Ok(Report {
        acknowledged: acknowledged.len(),
        before: acknowledged.iter().filter(|(at, ..)| *at < stopped).count(),
        errors: logs
            .iter()
            .flat_map(|log| log.errors.iter())
            .map(|(at, error)| {
                format!(
                    "+{} ms: {error}",
                    at.saturating_duration_since(stopped).as_millis()
                )
            })
            .collect(),
        write_pause: first_new.map_or(Duration::MAX, |at| at - stopped),
        promotion_to_write: first_new
            .map_or(Duration::MAX, |at| at.saturating_duration_since(promoted)),
        misrouted,
        lost,
        dropped: logs.iter().filter(|log| log.dropped).count(),
    })
}

/// One writer: inserts (w, n) for n = 0, 1, … until told to stop.
async fn write_loop(w: usize, mut conn: ServerConnection, stop: Arc<AtomicBool>) -> WriterLog {
    let mut log = WriterLog::default();
    for n in 0..MAX_WRITES {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let sql =
            format!("INSERT INTO failover_demo VALUES ({w}, {n}) RETURNING inet_server_port()");
        match query::query(&mut conn, &sql).await {
            Ok(result) => {
                let port = result
                    .rows
                    .first()
                    .and_then(|row| row.first())
                    .and_then(|port| port.parse().ok())
                    .unwrap_or(0);
                log.acknowledged.push((Instant::now(), n, port));
            }
            Err(InternalError::Refused(frame)) => {
                log.errors.push((Instant::now(), describe(&frame)));
            }
            Err(InternalError::Connection(reason)) => {
                log.errors
                    .push((Instant::now(), format!("connection lost: {reason}")));
                log.dropped = true;
                break;
            }
        }
    }
    log
}

/// Every (writer, n) stored on `node`, read straight from it.
fn stored_writes(
    node: &crate::testcluster::Node,
    login: &Login,
) -> Result<HashSet<(i32, i32)>, DrillError> {
    let text = node.psql_db(
        login.database,
        "SELECT writer || ',' || n FROM failover_demo",
    )?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (w, n) = line.trim().split_once(',')?;
            Some((w.parse().ok()?, n.parse().ok()?))
        })
        .collect())
}

/// "SQLSTATE: message" of an ErrorResponse frame.
fn describe(frame: &[u8]) -> String {
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    let field = |code: u8| {
        body.split(|&b| b == 0)
            .find(|f| f.first() == Some(&code))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
            .unwrap_or_default()
    };
    format!("{} {}: {}", field(b'S'), field(b'C'), field(b'M'))
}

/// Prints the report the way the demo shows it.
pub fn print(report: &Report) {
    println!("What the clients saw:");
    println!(
        "  writes acknowledged:         {} ({} before the stop)",
        report.acknowledged, report.before
    );
    println!("  write errors:                {}", report.errors.len());
    for error in &report.errors {
        println!("    {error}");
    }
    println!(
        "  write pause:                 {} ms (primary stopped -> first write on the new primary)",
        report.write_pause.as_millis()
    );
    println!(
        "  promotion -> first write:    {} ms",
        report.promotion_to_write.as_millis()
    );
    println!("  taken by a non-primary:      {}", report.misrouted);
    println!("  acknowledged writes lost:    {}", report.lost);
    println!("  client connections dropped:  {}", report.dropped);
}
