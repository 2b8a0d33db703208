//! A real Patroni cluster on this machine: one etcd plus N Patroni members
//! (Debian `patroni` 3.x, `etcd3` DCS), each bootstrapping or cloning its
//! own PostgreSQL from the local binaries.
//!
//! Used by the Patroni watcher tests and the failover drills. Everything is
//! synchronous; async callers wrap [`PatroniCluster::start`] in
//! `spawn_blocking`. Every wait is bounded. Processes run as
//! [`PG_OS_USER`](super::PG_OS_USER) when the caller is root; everything
//! lives in one temporary directory, removed on drop after every process
//! has been stopped.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchyard::testcluster::{PatroniCluster, PatroniSpec};
//!
//! let cluster = PatroniCluster::start(&PatroniSpec::default())?;
//! let old = cluster.leader()?.name.clone();
//! cluster.kill_leader()?;
//! let new = cluster.wait_for_leader_change(&old, Duration::from_secs(30))?;
//! assert_ne!(new.name, old);
//! # Ok::<(), switchyard::testcluster::ClusterError>(())
//! ```

mod launch;
mod member;

use std::path::Path;
use std::time::{Duration, Instant};

pub use member::PatroniNode;

use super::binaries::PgBinaries;
use super::error::{ClusterError, tail};
use super::etcd::Etcd;
use super::process::{self, Ctx};
use super::{free_port, http, os_user, quote_ident, quote_literal, temp_root};
use crate::topology::patroni::{ClusterDocument, parse_cluster};
use launch::member_config;
pub(crate) use launch::{spawn_logged, tool_command};

/// How long the whole cluster may take to bootstrap (initdb, two base
/// backups, Patroni's first loops).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Time limit of one REST API request from the harness.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// What Patroni cluster to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniSpec {
    /// Number of Patroni members (each with its own PostgreSQL).
    pub members: usize,
    /// Password of the superuser `postgres` (SCRAM over TCP; the unix
    /// socket is trusted).
    pub superuser_password: String,
    /// Application roles `(name, password)` created on the leader with
    /// `LOGIN CREATEDB` and all privileges on schema `public` of `postgres`
    /// and of every listed database.
    pub users: Vec<(String, String)>,
    /// Databases to create.
    pub databases: Vec<String>,
    /// Patroni `ttl` (seconds): how long a dead leader keeps the leader key.
    pub ttl: u32,
    /// Patroni `loop_wait` (seconds).
    pub loop_wait: u32,
    /// Patroni `retry_timeout` (seconds).
    pub retry_timeout: u32,
    /// `max_connections` of every PostgreSQL.
    pub max_connections: u32,
    /// Patroni `synchronous_mode`: a commit is acknowledged only once a
    /// synchronous standby has it, and only that standby may be promoted,
    /// so a failover loses no acknowledged commit.
    pub synchronous_mode: bool,
}

impl Default for PatroniSpec {
    /// Three members, ttl 10 s, loop_wait 1 s, retry_timeout 4 s (a
    /// `kill -9` of the leader fails over in about 10 s), superuser password
    /// `postgres-secret`, `max_connections = 200`, asynchronous
    /// replication, no users or databases.
    fn default() -> Self {
        PatroniSpec {
            members: 3,
            superuser_password: "postgres-secret".to_owned(),
            users: Vec::new(),
            databases: Vec::new(),
            ttl: 10,
            loop_wait: 1,
            retry_timeout: 4,
            max_connections: 200,
            synchronous_mode: false,
        }
    }
}

/// A running etcd plus Patroni members in a temporary directory.
///
/// Dropping it stops every member (Patroni first, so it stops its
/// PostgreSQL), then etcd, then removes the directory.
#[derive(Debug)]
pub struct PatroniCluster {
    // Field order matters: members stop before etcd, both before the
    // directory goes.
    members: Vec<PatroniNode>,
    etcd: Etcd,
    ctx: Ctx,
    superuser_password: String,
    stopped: bool,
    temp_dir: tempfile::TempDir,
}

impl PatroniCluster {
    /// Starts etcd and the members, waits until one member leads and every
    /// member is running, then creates the spec's users and databases.
    ///
    /// A start that fails (typically a free port taken by another test
    /// between choosing and binding it) is retried once from scratch.
    pub fn start(spec: &PatroniSpec) -> Result<Self, ClusterError> {
        if spec.members == 0 || spec.superuser_password.is_empty() {
            return Err(ClusterError::InvalidArgument(
                "a Patroni cluster needs at least one member and a superuser password".to_owned(),
            ));
        }
        match Self::start_once(spec) {
            Err(e @ (ClusterError::StartFailed { .. } | ClusterError::Timeout { .. })) => {
                tracing::warn!(error = %e, "Patroni cluster start failed; retrying once");
                Self::start_once(spec)
            }
            result => result,
        }
    }

    fn start_once(spec: &PatroniSpec) -> Result<Self, ClusterError> {
        let started = Instant::now();
        let bins = PgBinaries::discover()?;
        let run_as = os_user::pg_run_as()?;
        let temp_dir = tempfile::Builder::new()
            .prefix("switchyard-patroni-")
            .tempdir_in(temp_root(run_as.is_some()))
            .map_err(|e| ClusterError::io("create temporary directory", e))?;
        let ctx = Ctx {
            bins,
            run_as,
            base_dir: temp_dir.path().to_path_buf(),
        };
        ctx.chown(temp_dir.path())?;

        let etcd = Etcd::start(&ctx, &temp_dir.path().join("etcd"))?;
        let mut cluster = PatroniCluster {
            members: Vec::new(),
            etcd,
            ctx,
            superuser_password: spec.superuser_password.clone(),
            stopped: false,
            temp_dir,
        };
        for i in 1..=spec.members {
            let member = cluster.start_member(spec, &format!("m{i}"))?;
            cluster.members.push(member);
        }
        cluster.wait_all_running(spec.members, START_TIMEOUT)?;
        cluster.wait_all_streaming(spec, START_TIMEOUT)?;
        cluster.create_users_and_databases(spec)?;
        tracing::info!(
            members = spec.members,
            leader = %cluster.leader()?.name,
            etcd = %cluster.etcd.client_addr,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Patroni cluster started"
        );
        Ok(cluster)
    }

    fn start_member(&self, spec: &PatroniSpec, name: &str) -> Result<PatroniNode, ClusterError> {
        let dir = self.ctx.base_dir.join(name);
        self.ctx.create_dir(&dir)?;
        let member = PatroniNode::new(name, &dir, free_port()?, free_port()?);
        let yaml = member_config(
            spec,
            &member,
            &self.etcd.client_addr,
            self.ctx.bins.bin_dir(),
        );
        self.ctx.write_file(&member.config_file, &yaml, 0o600)?;
        let mut cmd = tool_command(&self.ctx, "patroni", &dir);
        cmd.arg(&member.config_file);
        member.set_child(spawn_logged(&mut cmd, &member.log_file)?);
        Ok(member)
    }

    /// Every member, in name order.
    pub fn members(&self) -> &[PatroniNode] {
        &self.members
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&PatroniNode> {
        self.members.iter().find(|m| m.name == name)
    }

    /// REST API base URLs of every member (for `patroni.urls`).
    pub fn api_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.api_url.clone()).collect()
    }

    /// PostgreSQL `127.0.0.1:port` of every member (for `cluster.nodes`).
    pub fn member_addrs(&self) -> Vec<String> {
        self.members.iter().map(PatroniNode::addr).collect()
    }

    /// etcd's client address (`127.0.0.1:PORT`).
    pub fn etcd_addr(&self) -> &str {
        &self.etcd.client_addr
    }

    /// The password of the superuser `postgres`.
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// The temporary directory holding everything.
    pub fn base_dir(&self) -> &Path {
        self.temp_dir.path()
    }

    /// Patroni's `GET /cluster`, asked of each member whose Patroni is alive
    /// until one answers.
    pub fn cluster_status(&self) -> Result<ClusterDocument, ClusterError> {
        let mut last = String::from("no member's Patroni is running");
        for member in self.members.iter().filter(|m| m.patroni_running()) {
            match http::get(&member.api_addr, "/cluster", API_TIMEOUT) {
                Ok((200, body)) => match parse_cluster(body.as_bytes()) {
                    Ok(doc) => return Ok(doc),
                    Err(e) => last = format!("{}: {e}", member.name),
                },
                Ok((status, _)) => last = format!("{}: HTTP {status}", member.name),
                Err(e) => last = format!("{}: {e}", member.name),
            }
        }
        Err(ClusterError::CommandFailed {
            command: "GET /cluster".to_owned(),
            status: "no answer".to_owned(),
            stderr_tail: last,
        })
    }

    /// The member Patroni currently names leader with state `running`.
    pub fn leader(&self) -> Result<&PatroniNode, ClusterError> {
        let doc = self.cluster_status()?;
        doc.members
            .iter()
            .find(|m| m.role == "leader" && m.state == "running")
            .and_then(|m| self.member(&m.name))
            .ok_or_else(|| ClusterError::CommandFailed {
                command: "GET /cluster".to_owned(),
                status: "no running leader".to_owned(),
                stderr_tail: format!("{doc:?}"),
            })
    }

    /// `kill -9` of the current leader's Patroni and PostgreSQL; returns the
    /// killed member (its processes are gone when this returns).
    pub fn kill_leader(&self) -> Result<&PatroniNode, ClusterError> {
        let leader = self.leader()?;
        leader.kill();
        tracing::info!(member = %leader.name, "killed the Patroni leader (SIGKILL Patroni and postmaster)");
        Ok(leader)
    }

    /// Waits until Patroni names a running leader other than `old` **and**
    /// that member's PostgreSQL answers `pg_is_in_recovery() = false`.
    pub fn wait_for_leader_change(
        &self,
        old: &str,
        timeout: Duration,
    ) -> Result<&PatroniNode, ClusterError> {
        let started = Instant::now();
        loop {
            let last = match self.leader() {
                Ok(leader) if leader.name != old => match self.is_in_recovery(leader) {
                    Ok(false) => return Ok(leader),
                    Ok(true) => format!("{} still in recovery", leader.name),
                    Err(e) => e.to_string(),
                },
                Ok(leader) => format!("{} still leads", leader.name),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > timeout {
                return Err(ClusterError::Timeout {
                    what: format!("a new Patroni leader other than {old} (last: {last})"),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Planned switchover with `patronictl switchover --force` from the
    /// current leader to `candidate`; returns once Patroni reports it done.
    pub fn switchover(&self, candidate: &str) -> Result<(), ClusterError> {
        let leader = self.leader()?;
        let mut cmd = tool_command(&self.ctx, "patronictl", self.base_dir());
        cmd.arg("-c")
            .arg(&leader.config_file)
            .args(["switchover", "--leader", &leader.name])
            .args(["--candidate", candidate, "--force"]);
        process::run(&mut cmd, None).map(drop)
    }

    /// Runs `sql` with psql as `postgres` over the member's unix socket;
    /// the trimmed, unaligned, tuples-only output.
    pub fn psql(&self, member: &PatroniNode, sql: &str) -> Result<String, ClusterError> {
        self.psql_db(member, "postgres", sql)
    }

    /// Like [`Self::psql`], on database `db`.
    pub fn psql_db(
        &self,
        member: &PatroniNode,
        db: &str,
        sql: &str,
    ) -> Result<String, ClusterError> {
        let mut cmd = self.ctx.command("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-w", "-h"])
            .arg(&member.socket_dir)
            .args([
                "-p",
                &member.pg_port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "5");
        let out = process::run(&mut cmd, Some("psql -c (redacted)"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `SELECT pg_is_in_recovery()` on the member.
    pub fn is_in_recovery(&self, member: &PatroniNode) -> Result<bool, ClusterError> {
        Ok(self.psql(member, "SELECT pg_is_in_recovery()")? == "t")
    }

    /// Stops every member (SIGTERM to all Patroni, bounded wait, then
    /// SIGKILL of what is left) and etcd. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        for member in &self.members {
            member.terminate();
        }
        std::thread::scope(|scope| {
            for member in &self.members {
                scope.spawn(move || member.reap());
            }
        });
        self.etcd.stop();
        self.stopped = true;
    }

    fn wait_all_running(&self, members: usize, timeout: Duration) -> Result<(), ClusterError> {
        let started = Instant::now();
        loop {
            let last = match self.cluster_status() {
                Ok(doc) => {
                    let running = doc.members.iter().filter(|m| m.is_ready()).count();
                    let leaders = doc
                        .members
                        .iter()
                        .filter(|m| m.role == "leader" && m.is_ready())
                        .count();
                    if running == members && leaders == 1 {
                        let leader = self.leader()?;
                        if matches!(self.is_in_recovery(leader), Ok(false)) {
                            return Ok(());
                        }
                    }
                    format!("{running}/{members} running, {leaders} leader(s)")
                }
                Err(e) => e.to_string(),
            };
            if let Some(dead) = self.members.iter().find(|m| !m.patroni_running()) {
                return Err(ClusterError::StartFailed {
                    node: dead.name.clone(),
                    reason: "Patroni exited".to_owned(),
                    log_tail: tail(&dead.log(), 20),
                });
            }
            if started.elapsed() > timeout {
                let logs = self
                    .members
                    .iter()
                    .map(|m| format!("--- {} ---\n{}", m.name, tail(&m.log(), 8)))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(ClusterError::Timeout {
                    what: format!("every Patroni member running ({last})\n{logs}"),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every replica streams from the leader (and, in
    /// synchronous mode, one is its synchronous standby). Patroni reports
    /// replicas `running` before they stream: a leader creates their
    /// replication slots a loop after bootstrap, and a replica refused for
    /// a missing slot retries only after `wal_retrieve_retry_interval`
    /// (5 s). A drill started earlier had writes acknowledged by a leader
    /// without standbys, and Patroni then refused every replica as too far
    /// behind to take over (`maximum_lag_on_failover`).
    fn wait_all_streaming(
        &self,
        spec: &PatroniSpec,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let started = Instant::now();
        let replicas = spec.members.saturating_sub(1);
        let wanted_sync = usize::from(spec.synchronous_mode && replicas > 0);
        let query = "SELECT count(*) FILTER (WHERE state = 'streaming') || ',' || \
                     count(*) FILTER (WHERE sync_state = 'sync') FROM pg_stat_replication";
        loop {
            let last = match self.psql(self.leader()?, query) {
                Ok(counts) => {
                    let mut parts = counts
                        .split(',')
                        .map(|n| n.trim().parse::<usize>().unwrap_or(0));
                    let streaming = parts.next().unwrap_or(0);
                    let sync = parts.next().unwrap_or(0);
                    if streaming >= replicas && sync >= wanted_sync {
                        return Ok(());
                    }
                    format!("{streaming}/{replicas} streaming, {sync} synchronous")
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() > timeout {
                return Err(ClusterError::Timeout {
                    what: format!("every replica streaming from the leader ({last})"),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn create_users_and_databases(&self, spec: &PatroniSpec) -> Result<(), ClusterError> {
        let leader = self.leader()?;
        let roles = spec
            .users
            .iter()
            .map(|(name, _)| quote_ident(name))
            .collect::<Vec<_>>()
            .join(", ");
        let grants = |db: &str| {
            format!(
                "GRANT ALL ON DATABASE {} TO {roles}; GRANT ALL ON SCHEMA public TO {roles};",
                quote_ident(db)
            )
        };
        if !spec.users.is_empty() {
            let mut sql = String::new();
            for (name, password) in &spec.users {
                sql.push_str(&format!(
                    "CREATE ROLE {} LOGIN CREATEDB PASSWORD {}; ",
                    quote_ident(name),
                    quote_literal(password)
                ));
            }
            sql.push_str(&grants("postgres"));
            self.psql(leader, &sql)?;
        }
        for db in &spec.databases {
            self.psql(leader, &format!("CREATE DATABASE {}", quote_ident(db)))?;
            if !spec.users.is_empty() {
                self.psql_db(leader, db, &grants(db))?;
            }
        }
        Ok(())
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
