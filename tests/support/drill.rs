//! The client side of a failover drill: writers that insert ids through
//! the proxy and record which server acknowledged each one, and readers
//! that run autocommit reads and record every error. Every loop is bounded
//! in count and stops when the drill says so.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use super::connect;

/// Writes per writer at most (a bound; drills stop long before).
const MAX_WRITES: i32 = 100_000;
/// Reads per reader at most.
const MAX_READS: usize = 100_000;
/// Pause between two reads, so readers leave the CPUs to the writers.
const READ_PAUSE: Duration = Duration::from_millis(2);

/// A request that failed.
#[derive(Debug)]
pub struct Failure {
    /// When it was sent.
    pub sent: SystemTime,
    /// When the error came back.
    pub at: SystemTime,
    /// What the client was told.
    pub error: String,
}

/// How writers name the server that took a write: its port.
pub const SERVER_PORT: &str = "inet_server_port()";
/// How writers name the server that took a write when the nodes share one
/// port on distinct loopback addresses: the address's last octet.
pub const SERVER_ADDRESS_LAST_OCTET: &str = "split_part(host(inet_server_addr()), '.', 4)::int";

/// What one writer saw.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// (when acknowledged, id, the server that took it: see [`Load::start_naming`])
    pub acknowledged: Vec<(SystemTime, i32, u16)>,
    /// Writes that failed.
    pub errors: Vec<Failure>,
}

/// What one reader saw.
#[derive(Debug, Default)]
pub struct ReaderLog {
    /// Reads answered.
    pub reads: usize,
    /// Reads that failed.
    pub errors: Vec<Failure>,
    /// The longest a read took.
    pub slowest: Duration,
}

/// Writers and readers running against the proxy.
pub struct Load {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<WriterLog>>,
    readers: Vec<JoinHandle<ReaderLog>>,
}

/// Creates the table the writers fill (through `dsn`).
pub async fn create_table(dsn: &str) {
    connect(dsn)
        .await
        .batch_execute("CREATE TABLE acks (id int PRIMARY KEY, port int NOT NULL)")
        .await
        .expect("create the drill's table");
}

impl Load {
    /// Starts `writers` writing clients and `readers` reading clients, each
    /// on its own connection through `dsn`, and waits until all have
    /// connected.
    pub async fn start(dsn: &str, writers: i32, readers: usize) -> Self {
        Self::start_naming(dsn, writers, readers, SERVER_PORT).await
    }

    /// As [`Load::start`], with writers recording `server` (a SQL
    /// expression, e.g. [`SERVER_ADDRESS_LAST_OCTET`]) as the server that
    /// took each write.
    pub async fn start_naming(dsn: &str, writers: i32, readers: usize, server: &str) -> Self {
        let insert_sql = format!("INSERT INTO acks VALUES ($1, {server}) RETURNING port");
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Load {
            stop: Arc::clone(&stop),
            writers: Vec::new(),
            readers: Vec::new(),
        };
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(64);
        for w in 0..writers {
            let client = connect(dsn).await;
            let stop = Arc::clone(&stop);
            let ready = ready_tx.clone();
            let insert_sql = insert_sql.clone();
            load.writers.push(tokio::spawn(async move {
                let insert = client
                    .prepare(&insert_sql)
                    .await
                    .expect("prepare the insert");
                let _ = ready.send(()).await;
                drop(ready);
                let mut log = WriterLog::default();
                for i in 0..MAX_WRITES {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = w * MAX_WRITES + i;
                    let sent = SystemTime::now();
                    match client.query_one(&insert, &[&id]).await {
                        Ok(row) => log.acknowledged.push((
                            SystemTime::now(),
                            id,
                            row.get::<_, i32>(0) as u16,
                        )),
                        Err(error) => log.errors.push(Failure {
                            sent,
                            at: SystemTime::now(),
                            error: describe(&error),
                        }),
                    }
                }
                // The session survived the failover.
                client
                    .query_one("SELECT 1", &[])
                    .await
                    .expect("a writer's connection is still usable after the drill");
                log
            }));
        }
        for _ in 0..readers {
            let client = connect(dsn).await;
            let stop = Arc::clone(&stop);
            let ready = ready_tx.clone();
            load.readers.push(tokio::spawn(async move {
                let _ = ready.send(()).await;
                drop(ready);
                let mut log = ReaderLog::default();
                for _ in 0..MAX_READS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = SystemTime::now();
                    match client.query_one("SELECT inet_server_port()", &[]).await {
                        Ok(_) => log.reads += 1,
                        Err(error) => log.errors.push(Failure {
                            sent,
                            at: SystemTime::now(),
                            error: describe(&error),
                        }),
                    }
                    let took = sent.elapsed().unwrap_or_default();
                    log.slowest = log.slowest.max(took);
                    tokio::time::sleep(READ_PAUSE).await;
                }
                client
                    .query_one("SELECT 1", &[])
                    .await
                    .expect("a reader's connection is still usable after the drill");
                log
            }));
        }
        drop(ready_tx);
        while ready_rx.recv().await.is_some() {}
        load
    }

    /// Stops every client and collects what they saw.
    pub async fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcome = Outcome::default();
        for writer in self.writers {
            outcome.writers.push(writer.await.expect("writer task"));
        }
        for reader in self.readers {
            outcome.readers.push(reader.await.expect("reader task"));
        }
        outcome
    }
}

/// Everything the drill's clients saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One log per writer.
    pub writers: Vec<WriterLog>,
    /// One log per reader.
    pub readers: Vec<ReaderLog>,
}

impl Outcome {
    /// Every acknowledged write: (when, id, port).
    pub fn acknowledged(&self) -> impl Iterator<Item = &(SystemTime, i32, u16)> {
        self.writers.iter().flat_map(|w| w.acknowledged.iter())
    }

    /// Every failed write.
    pub fn write_errors(&self) -> Vec<&Failure> {
        self.writers.iter().flat_map(|w| w.errors.iter()).collect()
    }

    /// Every failed read.
    pub fn read_errors(&self) -> Vec<&Failure> {
        self.readers.iter().flat_map(|r| r.errors.iter()).collect()
    }

    /// Reads answered in all.
    pub fn reads(&self) -> usize {
        self.readers.iter().map(|r| r.reads).sum()
    }

    /// The longest any read took.
    pub fn slowest_read(&self) -> Duration {
        self.readers
            .iter()
            .map(|r| r.slowest)
            .max()
            .unwrap_or_default()
    }

    /// How long after `moment` the first write was acknowledged.
    pub fn first_write_after(&self, moment: SystemTime) -> Option<Duration> {
        self.acknowledged()
            .filter_map(|(at, _, _)| at.duration_since(moment).ok())
            .min()
    }

    /// Asserts that every acknowledged write came from a server `allowed`
    /// at the time it was acknowledged.
    pub fn assert_writes_only_where(&self, allowed: impl Fn(SystemTime, u16) -> bool) {
        for (at, id, port) in self.acknowledged() {
            let since_epoch = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            assert!(
                allowed(*at, *port),
                "write {id} acknowledged by the server on port {port} at {since_epoch:?} after the epoch, which was not the primary then"
            );
        }
    }

    /// Asserts that only writes sent before `in_flight_until` failed: the
    /// transactions in flight when the primary failed, or sent to it before
    /// the proxy could know (a killed postmaster's orphaned backends still
    /// take a request or two until they notice). Every later write waited.
    pub fn assert_errors_only_in_flight(&self, in_flight_until: SystemTime) {
        for (w, writer) in self.writers.iter().enumerate() {
            for failure in &writer.errors {
                assert!(
                    failure.sent <= in_flight_until,
                    "writer {w}: a write sent after the failure was known failed: {failure:?}"
                );
            }
        }
    }

    /// Asserts that every acknowledged id is stored on the server at
    /// `direct_dsn` (the new primary).
    pub async fn assert_none_lost(&self, direct_dsn: &str) {
        let direct = connect(direct_dsn).await;
        let stored: HashSet<i32> = direct
            .query("SELECT id FROM acks", &[])
            .await
            .expect("read the acknowledged ids back")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let lost: Vec<i32> = self
            .acknowledged()
            .map(|(_, id, _)| *id)
            .filter(|id| !stored.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged writes lost: {lost:?}",
            lost.len()
        );
    }

    /// One line for the test log.
    pub fn summary(&self) -> String {
        format!(
            "{} acknowledged writes, {} write errors, {} reads, {} read errors, slowest read {:?}",
            self.acknowledged().count(),
            self.write_errors().len(),
            self.reads(),
            self.read_errors().len(),
            self.slowest_read()
        )
    }
}

/// The server's SQLSTATE and message, or the client library's reason.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// The port of a `host:port` address.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("an address with a port")
}

/// Sessions that sit idle between transactions through a failover.
pub struct IdleSessions {
    clients: Vec<tokio_postgres::Client>,
}

impl IdleSessions {
    /// Opens `n` sessions through `dsn`.
    pub async fn open(dsn: &str, n: usize) -> Self {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(connect(dsn).await);
        }
        IdleSessions { clients }
    }

    /// One write on each session (ids from `first_id` up), each acknowledged
    /// by the server on `port`; returns what failed.
    pub async fn write_each(&self, first_id: i32, port: u16) -> Vec<String> {
        let mut failures = Vec::new();
        for (i, client) in self.clients.iter().enumerate() {
            let id = first_id + i as i32;
            match client
                .query_one(
                    "INSERT INTO acks VALUES ($1, inet_server_port()) RETURNING port",
                    &[&id],
                )
                .await
            {
                Ok(row) if row.get::<_, i32>(0) as u16 == port => {}
                Ok(row) => failures.push(format!(
                    "write {id} acknowledged by port {}, not {port}",
                    row.get::<_, i32>(0)
                )),
                Err(error) => failures.push(describe(&error)),
            }
        }
        failures
    }
}
