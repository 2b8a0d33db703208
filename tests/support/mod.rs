//! Shared end-to-end harness: a real PostgreSQL cluster and the real
//! `switchyard` binary in front of it.
#![allow(dead_code)]

pub mod drill;
pub mod raw;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use switchyard::testcluster::{ClusterSpec, LocalCluster};

/// The application user every harness creates.
pub const APP_USER: &str = "app";
/// Its password.
pub const APP_PASSWORD: &str = "app-secret";
/// The application database.
pub const APP_DB: &str = "appdb";

/// A cluster plus a proxy process.
pub struct Harness {
    pub proxy: ProxyProcess,
    pub cluster: LocalCluster,
}

/// A running `switchyard` binary.
pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- switchyard log ----\n{}", self.log());
        }
    }
}

impl ProxyProcess {
    /// Starts the binary with `config` (TOML text; `{listen}` is replaced by a free port).
    pub fn start(config: &str) -> Self {
        Self::start_at(config, free_port())
    }

    /// As [`ProxyProcess::start`], listening on `port` (for configs that
    /// must name the address before the process starts, e.g. peer lists).
    pub fn start_at(config: &str, port: u16) -> Self {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// As [`ProxyProcess::start`], listening on `addr` (any 127.0.0.0/8
    /// address, for tests that need peers on distinct IPs).
    pub fn start_on(config: &str, addr: SocketAddr) -> Self {
        Self::start_with_env(config, addr, &[])
    }

    /// As [`ProxyProcess::start_on`], with `env` added to the process's
    /// environment (e.g. `KUBECONFIG`).
    pub fn start_with_env(config: &str, addr: SocketAddr, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("switchyard.toml");
        std::fs::write(&config_path, config.replace("{listen}", &addr.to_string())).unwrap();
        let log = std::fs::File::create(dir.path().join("switchyard.log")).unwrap();
        // TEST_PROXY_BIN runs the tests against another build (e.g.
        // the release one, to read its memory in `idle_clients.rs`).
        let bin = std::env::var_os("TEST_PROXY_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_switchyard").into());
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .env(
                "SWITCHYARD_LOG",
                std::env::var("TEST_PROXY_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let proxy = Self { child, addr, dir };
        proxy.wait_listening();
        proxy
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "proxy did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("switchyard.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Peak resident set size in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// utime + stime in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

/// `GET path` on a local HTTP port (the admin server): status and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("admin port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Parses a Prometheus text exposition.
pub fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format")
}

/// The values of every sample of `name` carrying every label in `labels`.
pub fn metric_values<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = f64> + 'a {
    scrape
        .samples
        .iter()
        .filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// The value of the first sample of `name` carrying every label in `labels`.
pub fn metric_sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    metric_values(scrape, name, labels).next()
}

/// The sum of every sample of `name` carrying every label in `labels`.
pub fn metric_sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_values(scrape, name, labels).sum()
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The default cluster spec: primary only, user `app`, database `appdb`.
pub fn spec() -> ClusterSpec {
    ClusterSpec {
        users: vec![(APP_USER.into(), APP_PASSWORD.into())],
        databases: vec![APP_DB.into()],
        ..ClusterSpec::default()
    }
}

/// Proxy config for `cluster` with user `app` (SCRAM) plus `extra` TOML.
pub fn proxy_config(cluster: &LocalCluster, extra: &str) -> String {
    let primary = cluster.primary().addr();
    // Tests drain at once unless they ask for a grace period.
    let grace = if extra.contains("shutdown_grace") {
        ""
    } else {
        "shutdown_grace = \"0s\""
    };
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
{grace}
{extra}

[cluster]
nodes = ["{primary}"]
primary = "{primary}"
monitor_user = "postgres"

[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"

[[users]]
name = "postgres"
password = "{superpw}"
"#,
        superpw = cluster.superuser_password()
    )
}

impl Harness {
    /// Starts a primary-only cluster and the proxy in front of it.
    pub fn start() -> Self {
        Self::with(spec(), "")
    }

    /// Starts a cluster from `spec` and a proxy with `extra` [server] keys.
    pub fn with(spec: ClusterSpec, extra_server: &str) -> Self {
        let cluster = LocalCluster::start(&spec).expect("start cluster");
        let proxy = ProxyProcess::start(&proxy_config(&cluster, extra_server));
        Self { proxy, cluster }
    }

    /// libpq-style connection string through the proxy.
    pub fn proxy_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
            self.proxy.addr.port()
        )
    }

    /// postgres:// URL through the proxy.
    pub fn proxy_url(&self) -> String {
        format!(
            "postgres://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{APP_DB}",
            self.proxy.addr.port()
        )
    }

    /// Connection string straight to the primary.
    pub fn direct_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
            self.cluster.primary().port
        )
    }

    /// postgres:// URL straight to the primary.
    pub fn direct_url(&self) -> String {
        format!(
            "postgres://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{APP_DB}",
            self.cluster.primary().port
        )
    }

    /// Runs a PostgreSQL client program (psql, pgbench) from the cluster's binaries.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(self.cluster.binaries().program(program))
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap()
    }

    /// Initializes pgbench data through the proxy, then runs pgbench in
    /// every query mode (-S and TPC-B-like), asserting no client aborted and
    /// every transaction ran; `after_each` runs after every pgbench run.
    pub fn pgbench_every_mode(
        &self,
        clients: u32,
        transactions: u32,
        mut after_each: impl FnMut(),
    ) {
        let url = self.proxy_url();
        let init = self.run("pgbench", &["-i", "-s", "1", "-q", &url]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let expected = format!(
            "number of transactions actually processed: {total}/{total}",
            total = clients * transactions
        );
        let (clients, transactions) = (clients.to_string(), transactions.to_string());
        for mode in ["simple", "extended", "prepared"] {
            for select_only in [true, false] {
                let mut args = vec![
                    "-M",
                    mode,
                    "-c",
                    &clients,
                    "-j",
                    "2",
                    "-t",
                    &transactions,
                    "-n",
                ];
                if select_only {
                    args.push("-S");
                }
                args.push(&url);
                let out = self.run("pgbench", &args);
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success(),
                    "{mode} -S={select_only}: {stdout}\n{stderr}"
                );
                assert!(stdout.contains(&expected), "{stdout}");
                assert!(
                    stdout.contains("number of failed transactions: 0"),
                    "{stdout}"
                );
                after_each();
            }
        }
    }

    /// Superuser SQL on the primary, straight (not through the proxy).
    pub fn admin_sql(&self, sql: &str) -> String {
        self.cluster.primary().psql(sql).expect("admin sql")
    }

    /// Superuser SQL in the application database, straight to the primary.
    pub fn admin_sql_app(&self, sql: &str) -> String {
        self.cluster
            .primary()
            .psql_db(APP_DB, sql)
            .expect("admin sql")
    }
}

/// Connects tokio-postgres and drives its connection in the background.
pub async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Where test data files go.
pub fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-{}-{name}", std::process::id()))
}

/// Asserts that a tokio-postgres connection task ends within 2 s with the
/// proxy's FATAL 57P01 (shutdown), as an idle client sees on SIGTERM.
pub async fn assert_closed_by_shutdown(
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let ended = tokio::time::timeout(std::time::Duration::from_secs(2), connection)
        .await
        .expect("idle client closed at once")
        .unwrap();
    let error = ended.expect_err("closed with an error");
    assert_eq!(
        error.as_db_error().map(|e| e.code()),
        Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN)
    );
}

/// Transaction-mode proxy config over every node of `cluster` (primary and
/// replicas), probed every 100 ms as `postgres`, with `cluster_keys` and
/// `routing_keys` added to their sections and `extra_users` appended.
pub fn replicated_config(
    cluster: &LocalCluster,
    cluster_keys: &str,
    routing_keys: &str,
    extra_users: &str,
) -> String {
    let nodes: Vec<String> = cluster.nodes().map(|n| n.addr()).collect();
    replicated_config_for(
        &nodes,
        cluster.superuser_password(),
        cluster_keys,
        routing_keys,
        extra_users,
    )
}

/// [`replicated_config`] over `nodes` (`host:port`) whose superuser
/// `postgres` has `superuser_password` (e.g. a Patroni cluster's members).
pub fn replicated_config_for(
    nodes: &[String],
    superuser_password: &str,
    cluster_keys: &str,
    routing_keys: &str,
    extra_users: &str,
) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "127.0.0.1:0"
pool_mode = "transaction"
shutdown_timeout = "5s"

[cluster]
nodes = [{nodes}]
monitor_user = "postgres"
probe_interval = "100ms"
{cluster_keys}

[routing]
{routing_keys}

[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"

[[users]]
name = "postgres"
password = "{superpw}"
{extra_users}
"#,
        nodes = nodes.join(", "),
        superpw = superuser_password
    )
}
