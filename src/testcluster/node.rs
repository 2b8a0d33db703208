//! One PostgreSQL server (primary or replica) of a [`LocalCluster`](super::LocalCluster).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::{ClusterError, tail};
use super::process::{self, Ctx};

/// Name of the file (inside the data directory) holding the node-specific
/// settings; `postgresql.conf` includes it last.
pub(crate) const NODE_CONF: &str = "switchyard_node.conf";

/// How long a server may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One PostgreSQL server process with its own data directory, unix socket
/// directory, loopback TCP address and log file.
///
/// Nodes are owned by a [`LocalCluster`](super::LocalCluster); a node that is
/// still running when dropped is shut down.
#[derive(Debug)]
pub struct Node {
    /// `primary`, `replica1`, `replica2`, ...
    pub name: String,
    /// The loopback address the server listens on (127.0.0.1 unless the
    /// cluster's spec names hosts).
    pub host: String,
    /// The TCP port the server listens on.
    pub port: u16,
    /// The data directory (`PGDATA`).
    pub data_dir: PathBuf,
    /// The directory holding the server's unix-domain socket.
    pub socket_dir: PathBuf,
    /// The server log file (stdout and stderr of the postmaster).
    pub log_file: PathBuf,
    ctx: Arc<Ctx>,
    /// The postmaster, when started by this node.
    child: Mutex<Option<Child>>,
}

/// Why a start attempt failed.
pub(crate) enum StartError {
    /// The TCP port was taken by someone else; retry on another port.
    PortInUse(ClusterError),
    /// Anything else.
    Other(ClusterError),
}

impl StartError {
    pub(crate) fn into_inner(self) -> ClusterError {
        match self {
            StartError::PortInUse(e) | StartError::Other(e) => e,
        }
    }
}

impl From<ClusterError> for StartError {
    fn from(e: ClusterError) -> Self {
        StartError::Other(e)
    }
}

impl Node {
    /// Creates the node's directory layout under the cluster's scratch
    /// directory (the data directory itself is created by initdb or
    /// pg_basebackup).
    pub(crate) fn create(
        ctx: Arc<Ctx>,
        name: &str,
        host: &str,
        port: u16,
    ) -> Result<Self, ClusterError> {
        let dir = ctx.base_dir.join(name);
        ctx.create_dir(&dir)?;
        let socket_dir = dir.join("sock");
        ctx.create_dir(&socket_dir)?;
        let log_file = dir.join("postgres.log");
        ctx.write_file(&log_file, "", 0o644)?;
        Ok(Node {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
            data_dir: dir.join("data"),
            socket_dir,
            log_file,
            ctx,
            child: Mutex::new(None),
        })
    }

    /// `"HOST:PORT"`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Runs `sql` with psql on database `postgres` as the superuser over the
    /// node's unix socket; returns the trimmed, unaligned, tuples-only output
    /// (one row per line, columns separated by `|`).
    pub fn psql(&self, sql: &str) -> Result<String, ClusterError> {
        self.psql_db("postgres", sql)
    }

    /// Like [`Node::psql`], on database `db`.
    pub fn psql_db(&self, db: &str, sql: &str) -> Result<String, ClusterError> {
        self.psql_inner(db, sql, None)
    }

    /// psql with an optional label replacing the command line in errors.
    pub(crate) fn psql_inner(
        &self,
        db: &str,
        sql: &str,
        label: Option<&str>,
    ) -> Result<String, ClusterError> {
        let mut cmd = self.ctx.command("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-w"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "10");
        let output = process::run(&mut cmd, label)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The server log contents so far (empty if it cannot be read).
    pub fn log(&self) -> String {
        fs::read(&self.log_file)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The postmaster's pid from `postmaster.pid`, if the file exists.
    pub fn postmaster_pid(&self) -> Option<i32> {
        read_pid_file(&self.data_dir).map(|(pid, _)| pid)
    }

    /// Whether this node's postmaster process is currently alive.
    pub fn is_running(&self) -> bool {
        if let Some(child) = self.lock_child().as_mut() {
            return matches!(child.try_wait(), Ok(None));
        }
        self.postmaster_pid().is_some_and(process::pid_alive)
    }

    /// Starts the server and waits (up to 30 s) until it accepts connections.
    /// Does nothing if this node's server is already running.
    pub fn start(&self) -> Result<(), ClusterError> {
        self.start_once().map_err(StartError::into_inner)
    }

    /// Stops the server with `pg_ctl stop -m MODE -w` (`MODE` is `smart`,
    /// `fast` or `immediate`) and reaps the postmaster process.
    pub fn stop(&self, mode: &str) -> Result<(), ClusterError> {
        if !matches!(mode, "smart" | "fast" | "immediate") {
            return Err(ClusterError::InvalidArgument(format!(
                "shutdown mode must be smart, fast or immediate, not {mode:?}"
            )));
        }
        let mut guard = self.lock_child();
        if guard
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
        {
            // Already exited (e.g. crashed): just forget it.
            *guard = None;
        }
        if guard.is_none() && !self.postmaster_pid().is_some_and(process::pid_alive) {
            return Ok(());
        }
        self.pg_ctl_stop(mode, 30)?;
        if let Some(mut child) = guard.take() {
            reap(&mut child, Duration::from_secs(5));
        }
        Ok(())
    }

    /// Promotes a replica to primary with `pg_ctl promote -w`.
    pub fn promote(&self) -> Result<(), ClusterError> {
        let mut cmd = self.ctx.command("pg_ctl");
        cmd.arg("promote")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "30"]);
        process::run(&mut cmd, None).map(drop)
    }

    /// Stops the node no matter what: `pg_ctl stop -m fast`, then
    /// `-m immediate`, then SIGKILL. Never fails; used on teardown.
    pub(crate) fn shutdown(&self) {
        let mut guard = self.lock_child();
        let child_running = guard
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !child_running {
            // Exited (or never started): forget it; a server started some
            // other way is still found through postmaster.pid.
            *guard = None;
        }
        let file_pid = self.postmaster_pid().filter(|&p| process::pid_alive(p));
        if !child_running && file_pid.is_none() {
            return;
        }
        if let Err(e) = self.pg_ctl_stop("fast", 10) {
            tracing::debug!(node = %self.name, error = %e, "fast shutdown failed, trying immediate");
            if let Err(e) = self.pg_ctl_stop("immediate", 5) {
                tracing::debug!(node = %self.name, error = %e, "immediate shutdown failed, killing");
            }
        }
        if let Some(mut child) = guard.take() {
            if !reap(&mut child, Duration::from_secs(3)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        } else if let Some(pid) = file_pid {
            wait_gone(pid, Duration::from_secs(3));
            if process::pid_alive(pid) && process::looks_like_postgres(pid) {
                process::sigkill(pid);
                wait_gone(pid, Duration::from_secs(2));
            }
        }
    }

    fn pg_ctl_stop(&self, mode: &str, timeout_secs: u32) -> Result<(), ClusterError> {
        let mut cmd = self.ctx.command("pg_ctl");
        cmd.arg("stop").arg("-D").arg(&self.data_dir).args([
            "-m",
            mode,
            "-w",
            "-t",
            &timeout_secs.to_string(),
        ]);
        process::run(&mut cmd, None).map(drop)
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the node-specific settings (port, socket directory, listen
    /// address) included at the end of `postgresql.conf`.
    pub(crate) fn write_node_conf(&self) -> Result<(), ClusterError> {
        let conf = format!(
            "# written by switchyard testcluster for node {name}\n\
             listen_addresses = '{host}'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             cluster_name = '{name}'\n",
            name = self.name,
            host = self.host,
            port = self.port,
            sock = conf_quote(&self.socket_dir.to_string_lossy()),
        );
        self.ctx
            .write_file(&self.data_dir.join(NODE_CONF), &conf, 0o600)
    }

    /// Spawns the postmaster and waits until it is ready; reports a port
    /// conflict separately so the caller can retry on another port.
    pub(crate) fn start_once(&self) -> Result<(), StartError> {
        let mut guard = self.lock_child();
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
            *guard = None;
        }

        let log_offset = fs::metadata(&self.log_file).map_or(0, |m| m.len());
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log_file)
            .map_err(|e| ClusterError::io(format!("open {}", self.log_file.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| ClusterError::io("duplicate log file handle", e))?;

        let mut cmd = self.ctx.command("postgres");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let command = process::describe(&cmd);
        let mut child = cmd
            .spawn()
            .map_err(|source| ClusterError::Spawn { command, source })?;
        let pid = child.id();
        tracing::debug!(node = %self.name, pid, port = self.port, "postmaster spawned");

        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let log = self.log_since(log_offset);
                    let err = ClusterError::StartFailed {
                        node: self.name.clone(),
                        reason: format!("postmaster exited with {status}"),
                        log_tail: tail(&log, 20),
                    };
                    let port_conflict = log.contains("could not bind")
                        || log.contains("Address already in use")
                        || log.contains("could not create any TCP/IP sockets");
                    return Err(if port_conflict {
                        StartError::PortInUse(err)
                    } else {
                        StartError::Other(err)
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    return Err(ClusterError::io("wait for postmaster", e).into());
                }
            }
            if let Some((file_pid, status)) = read_pid_file(&self.data_dir)
                && u32::try_from(file_pid).ok() == Some(pid)
                && (status == "ready" || status == "standby")
            {
                *guard = Some(child);
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ClusterError::StartFailed {
                    node: self.name.clone(),
                    reason: format!("not ready after {START_TIMEOUT:?}"),
                    log_tail: tail(&self.log_since(log_offset), 20),
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server log from byte `offset` on.
    fn log_since(&self, offset: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.log_file)
            && f.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `(pid, status)` from `DATADIR/postmaster.pid`: line 1 is the pid, line 8
/// the postmaster status (`starting`, `stopping`, `ready`, `standby`).
fn read_pid_file(data_dir: &Path) -> Option<(i32, String)> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let status = lines.nth(6).unwrap_or("").trim().to_owned();
    (pid > 0).then_some((pid, status))
}

/// Waits up to `timeout` for `child` to exit; `true` if it did.
fn reap(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Waits up to `timeout` for a process we are not the parent of to vanish.
fn wait_gone(pid: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while process::pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Escapes a value for a single-quoted `postgresql.conf` string.
pub(crate) fn conf_quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}
