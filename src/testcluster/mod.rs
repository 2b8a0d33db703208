//! A real, throw-away PostgreSQL cluster on this machine: one primary plus N
//! streaming replicas, built from the locally installed PostgreSQL binaries.
//!
//! [`PatroniCluster`] is the same for a Patroni-managed cluster: an etcd plus
//! Patroni members that bootstrap and fail over PostgreSQL themselves.
//!
//! Used by integration tests and by `switchyard demo`. Everything is
//! synchronous (`std::process`); async callers can wrap
//! [`LocalCluster::start`] in `tokio::task::spawn_blocking`.
//!
//! Each cluster lives in its own temporary directory (removed on drop) and
//! listens on free loopback ports, so many clusters can run side by side.
//! When the process runs as root, the servers run as the OS user
//! [`PG_OS_USER`] (created on demand), because PostgreSQL refuses root.
//!
//! ```no_run
//! use switchyard::testcluster::{ClusterSpec, LocalCluster};
//!
//! let spec = ClusterSpec {
//!     replicas: 2,
//!     users: vec![("app".into(), "app-secret".into())],
//!     databases: vec!["appdb".into()],
//!     ..ClusterSpec::default()
//! };
//! let cluster = LocalCluster::start(&spec)?;
//! println!("primary at {}", cluster.primary().addr());
//! assert_eq!(cluster.replicas()[0].psql("SELECT pg_is_in_recovery()")?, "t");
//! # Ok::<(), switchyard::testcluster::ClusterError>(())
//! ```

mod binaries;
mod error;
mod etcd;
mod http;
mod node;
mod os_user;
mod patroni;
mod process;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use binaries::PgBinaries;
pub use error::ClusterError;
pub use node::Node;
pub use os_user::PG_OS_USER;
pub use patroni::{PatroniCluster, PatroniNode, PatroniSpec};

use node::{NODE_CONF, StartError};
use process::Ctx;

/// How many times a node start is retried on a fresh port when its port was
/// grabbed by someone else between choosing and binding it.
const PORT_ATTEMPTS: usize = 5;

/// How long to wait for all replicas to be streaming.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);

/// What cluster to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Number of streaming replicas (physical, each with its own replication
    /// slot `replica_1`, `replica_2`, ...).
    pub replicas: usize,
    /// Password of the superuser `postgres` (SCRAM-SHA-256 over TCP; local
    /// unix-socket connections are trusted).
    pub superuser_password: String,
    /// Application roles `(name, password)` to create with `LOGIN CREATEDB`
    /// and `ALL` privileges on schema `public` of every listed database and of
    /// `postgres`.
    pub users: Vec<(String, String)>,
    /// Databases to create (owned by `postgres`).
    pub databases: Vec<String>,
    /// `max_connections` of every node.
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines, appended verbatim (after the built-in
    /// settings, so they override them).
    pub extra_conf: Vec<String>,
    /// When set, the primary accepts TLS (`ssl = on`) with this certificate.
    pub tls: Option<NodeTls>,
    /// Loopback address each node listens on, primary first, then one per
    /// replica. Empty: every node on 127.0.0.1 with a port of its own. Set:
    /// the nodes share one port, as a Kubernetes cluster's pods do
    /// (`podIP:5432`), so tests can serve the addresses a control plane
    /// names.
    pub hosts: Vec<String>,
}

/// A node's TLS certificate and key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTls {
    /// Certificate chain, leaf first.
    pub cert_pem: String,
    /// Private key.
    pub key_pem: String,
}

impl Default for ClusterSpec {
    /// No replicas, superuser password `postgres-secret`, no users or
    /// databases, `max_connections = 200`, no extra configuration, no TLS,
    /// every node on 127.0.0.1.
    fn default() -> Self {
        ClusterSpec {
            replicas: 0,
            superuser_password: "postgres-secret".to_owned(),
            users: Vec::new(),
            databases: Vec::new(),
            max_connections: 200,
            extra_conf: Vec::new(),
            tls: None,
            hosts: Vec::new(),
        }
    }
}

/// A running primary plus replicas in a temporary directory.
///
/// Dropping it stops every server (even while a test panics) and removes the
/// temporary directory.
#[derive(Debug)]
pub struct LocalCluster {
    // Field order matters: nodes drop (and shut down) before the directory.
    primary: Node,
    replicas: Vec<Node>,
    ctx: Arc<Ctx>,
    superuser_password: String,
    stopped: bool,
    temp_dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Creates, configures and starts the cluster described by `spec`, and
    /// waits until every replica is streaming from the primary.
    pub fn start(spec: &ClusterSpec) -> Result<Self, ClusterError> {
        validate(spec)?;
        let started = Instant::now();
        let bins = PgBinaries::discover()?;
        let run_as = os_user::pg_run_as()?;

        let root = temp_root(run_as.is_some());
        let temp_dir = tempfile::Builder::new()
            .prefix("switchyard-pg-")
            .tempdir_in(&root)
            .or_else(|e| {
                // e.g. a read-only /dev/shm: fall back to the temp directory.
                if std::env::var_os(TMPDIR_ENV).is_some() || root == std::env::temp_dir() {
                    return Err(e);
                }
                tempfile::Builder::new().prefix("switchyard-pg-").tempdir()
            })
            .map_err(|e| {
                ClusterError::io(
                    format!("create temporary directory in {}", root.display()),
                    e,
                )
            })?;
        let ctx = Arc::new(Ctx {
            bins,
            run_as,
            base_dir: temp_dir.path().to_path_buf(),
        });
        ctx.chown(temp_dir.path())?;
        tracing::debug!(dir = %temp_dir.path().display(), bin_dir = %ctx.bins.bin_dir().display(), run_as = ?run_as, "creating local PostgreSQL cluster");

        let placement = Placement::for_spec(spec)?;
        let primary = start_primary(&ctx, spec, &placement)?;
        create_users_and_databases(&primary, spec)?;

        create_replication_slots(&primary, spec.replicas)?;
        let replicas = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..=spec.replicas)
                .map(|i| {
                    let ctx = &ctx;
                    let primary = &primary;
                    let placement = &placement;
                    scope.spawn(move || start_replica(ctx, spec, primary, i, placement))
                })
                .collect();
            let mut replicas = Vec::with_capacity(handles.len());
            let mut first_err = None;
            for (i, handle) in (1..).zip(handles) {
                match handle.join() {
                    Ok(Ok(node)) => replicas.push(node),
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(_) => {
                        first_err.get_or_insert(ClusterError::StartFailed {
                            node: format!("replica{i}"),
                            reason: "the setup thread panicked".to_owned(),
                            log_tail: String::new(),
                        });
                    }
                }
            }
            match first_err {
                // Successfully started replicas are dropped (and stopped) here.
                Some(e) => Err(e),
                None => Ok(replicas),
            }
        })?;

        wait_streaming(&primary, &replicas)?;

        tracing::info!(
            primary_port = primary.port,
            replica_ports = ?replicas.iter().map(|n| n.port).collect::<Vec<_>>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local PostgreSQL cluster started"
        );
        Ok(LocalCluster {
            primary,
            replicas,
            ctx,
            superuser_password: spec.superuser_password.clone(),
            stopped: false,
            temp_dir,
        })
    }

    /// Makes the primary acknowledge a commit only once every replica has
    /// it (`synchronous_standby_names = 'ANY n (*)'`, set on the primary
    /// alone), so that promoting any replica loses no acknowledged commit.
    /// A failover drill needs this: with asynchronous replication the
    /// primary may acknowledge a commit it never got to send.
    pub fn make_replication_synchronous(&self) -> Result<(), ClusterError> {
        let all = self.replicas.len();
        self.primary.psql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = 'ANY {all} (*)'"
        ))?;
        self.primary.psql("SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// The primary (read-write) node.
    pub fn primary(&self) -> &Node {
        &self.primary
    }

    /// The replicas (`replica1`, `replica2`, ...), in order.
    pub fn replicas(&self) -> &[Node] {
        &self.replicas
    }

    /// The primary followed by the replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// The directory of the PostgreSQL programs used (to find `psql`,
    /// `pgbench`, ... of the same version).
    pub fn bin_dir(&self) -> &Path {
        self.ctx.bins.bin_dir()
    }

    /// The PostgreSQL installation used.
    pub fn binaries(&self) -> &PgBinaries {
        &self.ctx.bins
    }

    /// `(uid, gid)` the servers run as; `None` when they run as the current
    /// (non-root) user.
    pub fn pg_user(&self) -> Option<(u32, u32)> {
        self.ctx.run_as
    }

    /// The password of the superuser `postgres`.
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// The temporary directory holding all nodes (removed on drop).
    pub fn base_dir(&self) -> &Path {
        self.temp_dir.path()
    }

    /// Stops every node (in parallel): `pg_ctl stop -m fast`, then
    /// `-m immediate`, then SIGKILL of the postmaster. Idempotent; the
    /// temporary directory is kept until the cluster is dropped.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let started = Instant::now();
        std::thread::scope(|scope| {
            for node in self.nodes() {
                let spawned = std::thread::Builder::new()
                    .name(format!("stop-{}", node.name))
                    .spawn_scoped(scope, move || node.shutdown());
                if spawned.is_err() {
                    node.shutdown();
                }
            }
        });
        self.stopped = true;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local PostgreSQL cluster stopped"
        );
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn validate(spec: &ClusterSpec) -> Result<(), ClusterError> {
    let bad = |msg: String| Err(ClusterError::InvalidArgument(msg));
    if spec.superuser_password.is_empty() {
        return bad("superuser_password must not be empty".to_owned());
    }
    if spec.max_connections < 10 {
        return bad(format!(
            "max_connections must be at least 10, not {}",
            spec.max_connections
        ));
    }
    for (name, password) in &spec.users {
        if name.is_empty() || name.contains('\0') || password.contains('\0') {
            return bad(format!("invalid user name or password for {name:?}"));
        }
    }
    for db in &spec.databases {
        if db.is_empty() || db.contains('\0') {
            return bad(format!("invalid database name {db:?}"));
        }
    }
    if spec.superuser_password.contains(['\0', '\n', '\r']) {
        return bad("superuser_password must not contain NUL or newlines".to_owned());
    }
    if !spec.hosts.is_empty() {
        if spec.hosts.len() != spec.replicas + 1 {
            return bad(format!(
                "hosts names {} addresses for {} nodes",
                spec.hosts.len(),
                spec.replicas + 1
            ));
        }
        let mut distinct = spec.hosts.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != spec.hosts.len() {
            // Nodes on one host would share its one port.
            return bad(format!("hosts {:?} names a host twice", spec.hosts));
        }
        for host in &spec.hosts {
            // Test traffic stays on loopback.
            if !host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            {
                return bad(format!("host {host:?} is not a loopback address"));
            }
        }
    }
    Ok(())
}

/// Environment variable naming the directory to create clusters in
/// (overrides the automatic choice of `/dev/shm` or the temp directory).
pub const TMPDIR_ENV: &str = "SWITCHYARD_PG_TMPDIR";

/// Free space a tmpfs `/dev/shm` must have to hold clusters.
const SHM_MIN_FREE_BYTES: u64 = 1 << 30;

/// Where to create the cluster's temporary directory:
/// 1. `$SWITCHYARD_PG_TMPDIR` if set;
/// 2. `/dev/shm` if it is a tmpfs with at least 1 GiB free -- a RAM-backed
///    directory makes initdb and pg_basebackup several times faster;
/// 3. the usual temp directory ([`std::env::temp_dir`]), or `/tmp` if the
///    servers run as another user who could not traverse it.
fn temp_root(other_user: bool) -> PathBuf {
    if let Some(dir) = std::env::var_os(TMPDIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && free_bytes(shm).is_some_and(|free| free >= SHM_MIN_FREE_BYTES) {
        return shm.to_path_buf();
    }
    let root = std::env::temp_dir();
    if !other_user {
        return root;
    }
    let traversable = fs::canonicalize(&root).is_ok_and(|real| {
        real.ancestors()
            .all(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
    });
    if traversable {
        root
    } else {
        PathBuf::from("/tmp")
    }
}

/// Free bytes on the filesystem holding `path`, from POSIX `df -Pk`.
fn free_bytes(path: &Path) -> Option<u64> {
    let output = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    // "Filesystem 1024-blocks Used Available Capacity Mounted-on"
    let text = String::from_utf8_lossy(&output.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Where each node listens: its host, and the port all nodes share (when
/// `spec.hosts` is set) or `None` for a free port of each node's own.
struct Placement {
    hosts: Vec<String>,
    shared_port: Option<u16>,
}

impl Placement {
    fn for_spec(spec: &ClusterSpec) -> Result<Self, ClusterError> {
        if spec.hosts.is_empty() {
            return Ok(Placement {
                hosts: vec![DEFAULT_HOST.to_owned(); spec.replicas + 1],
                shared_port: None,
            });
        }
        Ok(Placement {
            hosts: spec.hosts.clone(),
            shared_port: Some(port_free_on_all(&spec.hosts)?),
        })
    }

    /// Node `i`'s host (0 = the primary) and a port to start it on.
    fn node(&self, i: usize) -> Result<(&str, u16), ClusterError> {
        let port = match self.shared_port {
            Some(port) => port,
            None => free_port()?,
        };
        Ok((&self.hosts[i], port))
    }
}

/// The host of nodes whose spec names none.
const DEFAULT_HOST: &str = "127.0.0.1";

/// A port currently free on every one of `hosts`.
fn port_free_on_all(hosts: &[String]) -> Result<u16, ClusterError> {
    let bind = |host: &str, port: u16| TcpListener::bind((host, port));
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let first = bind(&hosts[0], 0)
            .and_then(|l| l.local_addr())
            .map_err(|e| ClusterError::io(format!("bind {}:0 to find a free port", hosts[0]), e))?;
        let port = first.port();
        match hosts[1..]
            .iter()
            .map(|h| bind(h, port))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(_listeners) => return Ok(port),
            Err(e) => last_error = Some(e),
        }
    }
    Err(ClusterError::io(
        format!("find a port free on all of {hosts:?}"),
        last_error.unwrap_or_else(|| std::io::Error::other("no attempt made")),
    ))
}

/// A currently free TCP port on 127.0.0.1 (may be taken again by the time it
/// is used; callers retry).
fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| ClusterError::io("bind 127.0.0.1:0 to find a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::io("read local address", e))
}

/// Starts `node`, moving it to a fresh port if its port turns out taken
/// (unless the nodes share one port, which cannot move).
fn start_with_port_retry(node: &mut Node, placement: &Placement) -> Result<(), ClusterError> {
    let mut attempt = 1;
    loop {
        match node.start_once() {
            Ok(()) => return Ok(()),
            Err(StartError::PortInUse(e))
                if attempt < PORT_ATTEMPTS && placement.shared_port.is_none() =>
            {
                tracing::debug!(node = %node.name, port = node.port, error = %e, "port taken, retrying on another port");
                node.port = free_port()?;
                node.write_node_conf()?;
                attempt += 1;
            }
            Err(e) => return Err(e.into_inner()),
        }
    }
}

/// initdb + configuration + start of the primary.
fn start_primary(
    ctx: &Arc<Ctx>,
    spec: &ClusterSpec,
    placement: &Placement,
) -> Result<Node, ClusterError> {
    let (host, port) = placement.node(0)?;
    let mut node = Node::create(Arc::clone(ctx), "primary", host, port)?;

    let pwfile = ctx.base_dir.join("superuser.pw");
    ctx.write_file(&pwfile, &format!("{}\n", spec.superuser_password), 0o600)?;
    let mut initdb = ctx.command("initdb");
    initdb
        .arg("-D")
        .arg(&node.data_dir)
        .args([
            "-U",
            "postgres",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    let result = process::run(&mut initdb, None);
    let _ = fs::remove_file(&pwfile);
    result?;

    let mut conf = format!(
        "\n# --- switchyard testcluster ---\n\
         password_encryption = 'scram-sha-256'\n\
         wal_level = replica\n\
         max_wal_senders = {senders}\n\
         max_replication_slots = {senders}\n\
         hot_standby = on\n\
         max_connections = {max_connections}\n\
         fsync = off\n\
         full_page_writes = off\n\
         shared_buffers = '32MB'\n\
         max_wal_size = '256MB'\n\
         logging_collector = off\n\
         log_connections = on\n\
         log_disconnections = on\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n\
         dynamic_shared_memory_type = posix\n\
         include_if_exists '{NODE_CONF}'\n",
        senders = (spec.replicas + 2).max(10),
        max_connections = spec.max_connections,
    );
    if let Some(tls) = &spec.tls {
        // Written as the server's OS user: PostgreSQL refuses a key file it
        // does not own or that others can read.
        ctx.write_file(&node.data_dir.join("server.crt"), &tls.cert_pem, 0o644)?;
        ctx.write_file(&node.data_dir.join("server.key"), &tls.key_pem, 0o600)?;
        conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    }
    if !spec.extra_conf.is_empty() {
        conf.push_str("# extra_conf\n");
        for line in &spec.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
    }
    process::append_file(&node.data_dir.join("postgresql.conf"), &conf)?;

    let hba = "# written by switchyard testcluster\n\
               # TYPE  DATABASE     USER  ADDRESS        METHOD\n\
               local   all          all                  trust\n\
               local   replication  all                  trust\n\
               host    all          all   127.0.0.0/8    scram-sha-256\n\
               host    all          all   ::1/128        scram-sha-256\n\
               host    replication  all   127.0.0.0/8    scram-sha-256\n\
               host    replication  all   ::1/128        scram-sha-256\n";
    ctx.write_file(&node.data_dir.join("pg_hba.conf"), hba, 0o600)?;
    node.write_node_conf()?;

    start_with_port_retry(&mut node, placement)?;
    tracing::debug!(node = %node.name, port = node.port, "primary ready");
    Ok(node)
}

/// Creates the spec's roles and databases on the primary.
fn create_users_and_databases(primary: &Node, spec: &ClusterSpec) -> Result<(), ClusterError> {
    let role_list = spec
        .users
        .iter()
        .map(|(name, _)| quote_ident(name))
        .collect::<Vec<_>>()
        .join(", ");
    let grants = |db: &str| {
        format!(
            "GRANT ALL ON DATABASE {db} TO {role_list}; GRANT ALL ON SCHEMA public TO {role_list};",
            db = quote_ident(db)
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
        primary.psql_inner(
            "postgres",
            &sql,
            Some("psql -c 'CREATE ROLE ... (redacted)'"),
        )?;
    }
    for db in &spec.databases {
        primary.psql(&format!("CREATE DATABASE {}", quote_ident(db)))?;
        if !spec.users.is_empty() {
            primary.psql_db(db, &grants(db))?;
        }
    }
    Ok(())
}

/// Name of the physical replication slot of replica `i` (1-based).
fn slot_name(i: usize) -> String {
    format!("replica_{i}")
}

/// Creates the replicas' physical slots on the primary, reserving WAL right
/// away. (`pg_basebackup -C` would create each slot only after its backup
/// started, so a checkpoint requested by a concurrent backup could recycle
/// the WAL segment the other backup still needs.)
fn create_replication_slots(primary: &Node, replicas: usize) -> Result<(), ClusterError> {
    if replicas == 0 {
        return Ok(());
    }
    let sql = (1..=replicas)
        .map(|i| {
            format!(
                "SELECT pg_create_physical_replication_slot({}, true);",
                quote_literal(&slot_name(i))
            )
        })
        .collect::<String>();
    primary.psql(&sql).map(drop)
}

/// pg_basebackup from the primary + configuration + start of replica `i`.
fn start_replica(
    ctx: &Arc<Ctx>,
    spec: &ClusterSpec,
    primary: &Node,
    i: usize,
    placement: &Placement,
) -> Result<Node, ClusterError> {
    let (host, port) = placement.node(i)?;
    let mut node = Node::create(Arc::clone(ctx), &format!("replica{i}"), host, port)?;
    let mut backup = ctx.command("pg_basebackup");
    backup
        .args(["-h", &primary.host, "-p", &primary.port.to_string()])
        .args(["-U", "postgres", "-w", "-D"])
        .arg(&node.data_dir)
        .args(["-R", "-X", "stream", "-S", &slot_name(i)])
        .args(["--checkpoint=fast", "--no-sync"])
        .env("PGPASSWORD", &spec.superuser_password);
    process::run(&mut backup, None)?;

    // The copy carries the primary's node settings; replace them.
    node.write_node_conf()?;
    start_with_port_retry(&mut node, placement)?;
    tracing::debug!(node = %node.name, port = node.port, "replica ready");
    Ok(node)
}

/// Waits until the primary reports every replica as streaming and every
/// replica accepts queries.
fn wait_streaming(primary: &Node, replicas: &[Node]) -> Result<(), ClusterError> {
    if replicas.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let want = replicas.len().to_string();
    let mut last = String::new();
    loop {
        last = primary
            .psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            .unwrap_or(last);
        if last == want {
            break;
        }
        if started.elapsed() > STREAMING_TIMEOUT {
            return Err(ClusterError::Timeout {
                what: format!(
                    "{want} replicas to be streaming (last count: {last:?}); primary log tail:\n{}",
                    error::tail(&primary.log(), 10)
                ),
                waited: STREAMING_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for replica in replicas {
        loop {
            match replica.psql("SELECT 1") {
                Ok(_) => break,
                Err(e) if started.elapsed() > STREAMING_TIMEOUT => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    Ok(())
}

/// Quotes an SQL identifier (`"name"`).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (`'value'`, standard_conforming_strings).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use node::conf_quote;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(conf_quote(r"a'b\c"), r"a''b\\c");
    }

    #[test]
    fn default_spec() {
        let spec = ClusterSpec::default();
        assert_eq!(spec.replicas, 0);
        assert_eq!(spec.superuser_password, "postgres-secret");
        assert_eq!(spec.max_connections, 200);
        assert!(validate(&spec).is_ok());
    }
}
