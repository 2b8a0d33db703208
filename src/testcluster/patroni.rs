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

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::binaries::PgBinaries;
use super::error::{ClusterError, tail};
use super::etcd::Etcd;
use super::process::{self, Ctx};
use super::{http, os_user, quote_ident, quote_literal};
use crate::topology::patroni::{ClusterDocument, parse_cluster};

/// How long the whole cluster may take to bootstrap (initdb, two base
/// backups, Patroni's first loops).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long Patroni gets to stop its PostgreSQL on SIGTERM before both are
/// killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

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
}

impl Default for PatroniSpec {
    /// Three members, ttl 10 s, loop_wait 1 s, retry_timeout 4 s (a
    /// `kill -9` of the leader fails over in about 10 s), superuser password
    /// `postgres-secret`, `max_connections = 200`, no users or databases.
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
        }
    }
}

/// One Patroni member and the PostgreSQL it manages.
#[derive(Debug)]
pub struct PatroniNode {
    /// Patroni member name: `m1`, `m2`, ...
    pub name: String,
    /// Base URL of its REST API, `http://127.0.0.1:PORT`.
    pub api_url: String,
    /// `127.0.0.1:PORT` of its REST API.
    pub api_addr: String,
    /// PostgreSQL TCP port on 127.0.0.1.
    pub pg_port: u16,
    /// PostgreSQL data directory.
    pub data_dir: PathBuf,
    /// Directory of PostgreSQL's unix socket.
    pub socket_dir: PathBuf,
    /// The member's Patroni configuration file.
    pub config_file: PathBuf,
    /// Patroni's log (PostgreSQL's own output goes there too).
    pub log_file: PathBuf,
    child: Mutex<Option<Child>>,
}

impl PatroniNode {
    /// `127.0.0.1:PG_PORT`: the address the proxy connects to.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.pg_port)
    }

    /// Patroni's log so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether this member's Patroni process is alive.
    pub fn patroni_running(&self) -> bool {
        self.lock_child()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The postmaster's pid from `postmaster.pid`, when it is alive and is
    /// PostgreSQL.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        (process::pid_alive(pid) && process::looks_like_postgres(pid)).then_some(pid)
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `SIGKILL`s Patroni and then its postmaster (the crash the failover
    /// drills simulate). Idempotent.
    pub fn kill(&self) {
        let postmaster = self.postmaster_pid();
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = postmaster {
            process::sigkill(pid);
        }
    }

    /// `SIGTERM` to Patroni (it stops PostgreSQL itself, fast mode).
    fn terminate(&self) {
        if let Some(child) = self.lock_child().as_ref() {
            signal(child.id(), "TERM");
        }
    }

    /// Waits (bounded) for Patroni to exit after [`Self::terminate`], then
    /// kills whatever is left.
    fn reap(&self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.patroni_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
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
    pub fn start(spec: &PatroniSpec) -> Result<Self, ClusterError> {
        if spec.members == 0 || spec.superuser_password.is_empty() {
            return Err(ClusterError::InvalidArgument(
                "a Patroni cluster needs at least one member and a superuser password".to_owned(),
            ));
        }
        let started = Instant::now();
        let bins = PgBinaries::discover()?;
        let run_as = os_user::pg_run_as()?;
        let temp_dir = tempfile::Builder::new()
            .prefix("switchyard-patroni-")
            .tempdir_in(super::temp_root(run_as.is_some()))
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
        let api_port = super::free_port()?;
        let member = PatroniNode {
            name: name.to_owned(),
            api_url: format!("http://127.0.0.1:{api_port}"),
            api_addr: format!("127.0.0.1:{api_port}"),
            pg_port: super::free_port()?,
            data_dir: dir.join("data"),
            socket_dir: dir.clone(),
            config_file: dir.join("patroni.yml"),
            log_file: dir.join("patroni.log"),
            child: Mutex::new(None),
        };
        let yaml = member_config(
            spec,
            &member,
            &self.etcd.client_addr,
            self.ctx.bins.bin_dir(),
        );
        self.ctx.write_file(&member.config_file, &yaml, 0o600)?;
        let mut cmd = tool_command(&self.ctx, "patroni", &dir);
        cmd.arg(&member.config_file);
        *member.lock_child() = Some(spawn_logged(&mut cmd, &member.log_file)?);
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

/// The member's Patroni YAML. Paths and passwords are single-quoted YAML
/// scalars.
fn member_config(spec: &PatroniSpec, m: &PatroniNode, etcd: &str, bin_dir: &Path) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let p = |p: &Path| q(&p.display().to_string());
    format!(
        "scope: switchyard\n\
         name: {name}\n\
         log:\n  level: INFO\n\
         restapi:\n  listen: {api}\n  connect_address: {api}\n\
         etcd3:\n  hosts: {etcd}\n  protocol: http\n\
         bootstrap:\n\
         \x20 dcs:\n\
         \x20   ttl: {ttl}\n\
         \x20   loop_wait: {loop_wait}\n\
         \x20   retry_timeout: {retry_timeout}\n\
         \x20   maximum_lag_on_failover: 1048576\n\
         \x20   postgresql:\n\
         \x20     use_pg_rewind: false\n\
         \x20     use_slots: true\n\
         \x20     parameters:\n\
         \x20       wal_level: replica\n\
         \x20       hot_standby: 'on'\n\
         \x20       max_connections: {max_connections}\n\
         \x20       max_wal_senders: 10\n\
         \x20       max_replication_slots: 10\n\
         \x20       fsync: 'off'\n\
         \x20       full_page_writes: 'off'\n\
         \x20 initdb:\n\
         \x20 - encoding: UTF8\n\
         \x20 - locale: C\n\
         \x20 - auth-host: scram-sha-256\n\
         \x20 - auth-local: trust\n\
         \x20 pg_hba:\n\
         \x20 - local all all trust\n\
         \x20 - local replication all trust\n\
         \x20 - host all all 127.0.0.1/32 scram-sha-256\n\
         \x20 - host replication all 127.0.0.1/32 scram-sha-256\n\
         postgresql:\n\
         \x20 listen: 127.0.0.1:{pg_port}\n\
         \x20 connect_address: 127.0.0.1:{pg_port}\n\
         \x20 data_dir: {data_dir}\n\
         \x20 bin_dir: {bin_dir}\n\
         \x20 pgpass: {pgpass}\n\
         \x20 authentication:\n\
         \x20   superuser:\n      username: postgres\n      password: {su_pw}\n\
         \x20   replication:\n      username: replicator\n      password: 'replicator-secret'\n\
         \x20 parameters:\n\
         \x20   unix_socket_directories: {sock}\n\
         \x20   shared_buffers: 32MB\n\
         \x20   password_encryption: scram-sha-256\n",
        name = m.name,
        api = m.api_addr,
        ttl = spec.ttl,
        loop_wait = spec.loop_wait,
        retry_timeout = spec.retry_timeout,
        max_connections = spec.max_connections,
        pg_port = m.pg_port,
        data_dir = p(&m.data_dir),
        bin_dir = p(bin_dir),
        pgpass = p(&m.socket_dir.join("pgpass")),
        su_pw = q(&spec.superuser_password),
        sock = p(&m.socket_dir),
    )
}

/// A [`Command`] for a non-PostgreSQL tool (`etcd`, `patroni`,
/// `patronictl`) set up like the PostgreSQL ones: the cluster's OS user,
/// no `PG*` environment, `cwd`/`HOME` = `dir`, stdin from `/dev/null`.
pub(crate) fn tool_command(ctx: &Ctx, program: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        // Python's click refuses an ASCII locale.
        .env("LC_ALL", "C.UTF-8")
        .env("HOME", dir);
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"PG") {
            cmd.env_remove(key);
        }
    }
    if let Some((uid, gid)) = ctx.run_as {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Spawns `cmd` with stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, ClusterError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ClusterError::io(format!("open {}", log.display()), e))?;
    let err = file
        .try_clone()
        .map_err(|e| ClusterError::io(format!("open {}", log.display()), e))?;
    cmd.stdout(file).stderr(err);
    cmd.spawn().map_err(|source| ClusterError::Spawn {
        command: process::describe(cmd),
        source,
    })
}

/// Sends `SIG<name>` to `pid` with the `kill` utility (the crate forbids
/// `unsafe`, so no `libc::kill`).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_config_is_yaml_with_quoted_secrets() {
        let spec = PatroniSpec {
            superuser_password: "it's".into(),
            ..PatroniSpec::default()
        };
        let m = PatroniNode {
            name: "m1".into(),
            api_url: "http://127.0.0.1:8008".into(),
            api_addr: "127.0.0.1:8008".into(),
            pg_port: 5432,
            data_dir: "/t/m1/data".into(),
            socket_dir: "/t/m1".into(),
            config_file: "/t/m1/patroni.yml".into(),
            log_file: "/t/m1/patroni.log".into(),
            child: Mutex::new(None),
        };
        let yaml = member_config(
            &spec,
            &m,
            "127.0.0.1:2379",
            Path::new("/usr/lib/postgresql/15/bin"),
        );
        assert!(yaml.contains("    ttl: 10\n"), "{yaml}");
        assert!(yaml.contains("      password: 'it''s'\n"), "{yaml}");
        assert!(yaml.contains("  data_dir: '/t/m1/data'\n"), "{yaml}");
        assert!(yaml.contains("  hosts: 127.0.0.1:2379\n"), "{yaml}");
    }
}
