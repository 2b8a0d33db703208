//! The operator's side through the real binary: /metrics, /healthz,
//! /readyz, /topology, the admin console, hot reload and the drain.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{
    APP_DB, APP_PASSWORD, APP_USER, ProxyProcess, connect, free_port, http_get,
    metric_sample as sample, parse_metrics as parse, proxy_config,
};
use switchyard::testcluster::LocalCluster;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;

/// A cluster, the proxy with a known admin HTTP port, and `postgres` as
/// console admin.
struct Admin {
    proxy: ProxyProcess,
    cluster: LocalCluster,
    http_port: u16,
}

impl Admin {
    fn start(extra_server: &str) -> Self {
        Self::start_with_admin(extra_server, "")
    }

    /// As [`Admin::start`], with `extra_admin` keys in `[admin]`.
    fn start_with_admin(extra_server: &str, extra_admin: &str) -> Self {
        let cluster = LocalCluster::start(&support::spec()).expect("start cluster");
        let http_port = free_port();
        let config = proxy_config(&cluster, extra_server)
            .replace(
                "admin_listen = \"127.0.0.1:0\"",
                &format!("admin_listen = \"127.0.0.1:{http_port}\""),
            )
            .replace(
                "[cluster]",
                &format!("[admin]\nusers = [\"postgres\"]\n{extra_admin}\n\n[cluster]"),
            );
        let proxy = ProxyProcess::start(&config);
        Self {
            proxy,
            cluster,
            http_port,
        }
    }

    /// `GET path` on the admin port: status code and body.
    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http_port, path)
    }

    fn app_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
            self.proxy.addr.port()
        )
    }

    fn console_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres password={} dbname=switchyard",
            self.proxy.addr.port(),
            self.cluster.superuser_password()
        )
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.proxy.dir.path().join("switchyard.toml")
    }

    /// Rewrites the config file with `from` replaced by `to`.
    fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        assert!(text.contains(from), "{from:?} not in config:\n{text}");
        std::fs::write(self.config_path(), text.replace(from, to)).unwrap();
    }

    /// The value of the one sample named `name` whose labels include `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        sample(&parse(&body), name, labels)
    }
}

/// The rows of a simple-query result: column names and values.
fn rows(messages: &[SimpleQueryMessage]) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            );
        }
    }
    (columns, rows)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_transactions_during_pgbench_with_bounded_labels() {
    let a = Admin::start("pool_mode = \"transaction\"");
    let primary = a.cluster.primary().addr();
    let route = [("node", primary.as_str()), ("role", "primary")];

    // A known number of transactions: 25 autocommit queries and 5 explicit
    // transactions of three statements each.
    let client = connect(&a.app_dsn()).await;
    // Counted before the client sees the end of each one: a scrape right
    // after the reply finds it, every time.
    for n in 1..=25 {
        client.simple_query("SELECT 1").await.unwrap();
        assert_eq!(
            a.metric("switchyard_transactions_total", &route),
            Some(f64::from(n)),
            "transaction {n} not counted by the time its client saw the end"
        );
    }
    for _ in 0..5 {
        client
            .batch_execute("BEGIN; SELECT 1; SELECT 2; COMMIT")
            .await
            .unwrap();
    }
    assert_eq!(
        a.metric("switchyard_transactions_total", &route),
        Some(30.0)
    );
    assert_eq!(a.metric("switchyard_queries_total", &route), Some(30.0));
    // Every ErrorResponse a client gets is counted by SQLSTATE class, the
    // server's (42P01) as the proxy's own (22023).
    let missing = client.simple_query("SELECT * FROM no_such_table").await;
    assert_eq!(
        missing.unwrap_err().code(),
        Some(&SqlState::UNDEFINED_TABLE)
    );
    let bad_route = client
        .simple_query("SET switchyard.route = 'nowhere'")
        .await;
    assert_eq!(
        bad_route.unwrap_err().code(),
        Some(&SqlState::INVALID_PARAMETER_VALUE)
    );
    assert_eq!(
        a.metric("switchyard_errors_total", &[("class", "42")]),
        Some(1.0)
    );
    assert_eq!(
        a.metric("switchyard_errors_total", &[("class", "22")]),
        Some(1.0)
    );
    // A named statement: parsed on the server connection once (Parse: a
    // miss), then found there by its Describe and two Binds (hits).
    let statement = client.prepare("SELECT $1::int + 1").await.unwrap();
    for n in 0..2 {
        let row = client.query_one(&statement, &[&n]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), n + 1);
    }
    assert_eq!(
        a.metric("switchyard_prepared_statement_cache_misses_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        a.metric("switchyard_prepared_statement_cache_hits_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        a.metric("switchyard_client_connections", &[("state", "idle")]),
        Some(1.0)
    );
    assert!(
        a.metric("switchyard_client_received_bytes_total", &[])
            .unwrap()
            > 0.0
    );
    assert!(a.metric("switchyard_client_sent_bytes_total", &[]).unwrap() > 0.0);
    let pool = [
        ("node", primary.as_str()),
        ("database", APP_DB),
        ("user", APP_USER),
    ];
    assert_eq!(
        a.metric("switchyard_server_connects_total", &pool),
        Some(1.0)
    );

    // A wrong password is counted.
    let wrong = a.app_dsn().replace(APP_PASSWORD, "wrong");
    assert!(
        tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .is_err()
    );
    assert_eq!(a.metric("switchyard_auth_failures_total", &[]), Some(1.0));
    assert_eq!(
        a.metric("switchyard_errors_total", &[("class", "28")]),
        Some(1.0)
    );
    drop(client);

    // pgbench: counters move while it runs and the text parses every time.
    let url = format!(
        "postgres://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{APP_DB}",
        a.proxy.addr.port()
    );
    let pgbench = a.cluster.binaries().program("pgbench");
    let init = std::process::Command::new(&pgbench)
        .args(["-i", "-s", "1", "-q", &url])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let before = a.metric("switchyard_transactions_total", &route).unwrap();
    let mut run = std::process::Command::new(&pgbench)
        .args(["-S", "-n", "-c", "4", "-j", "2", "-t", "300", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = vec![before];
    let mut label_names = BTreeSet::new();
    let mut series = 0;
    loop {
        let (_, body) = a.get("/metrics");
        let scrape = parse(&body);
        seen.push(sample(&scrape, "switchyard_transactions_total", &route).unwrap());
        for s in &scrape.samples {
            label_names.extend(s.labels.keys().cloned());
        }
        series = series.max(scrape.samples.len());
        if run.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = run.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("actually processed: 1200/1200"), "{stdout}");
    let after = a.metric("switchyard_transactions_total", &route).unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "counter went down: {seen:?}"
    );
    // pgbench's own setup queries add a few transactions of their own.
    assert!(
        (1200.0..1220.0).contains(&(after - before)),
        "{before} -> {after}"
    );
    // Bounded labels: no query text, a fixed set of names, few series.
    let allowed: BTreeSet<String> = [
        "node", "role", "database", "user", "state", "reason", "class", "result", "version", "le",
        "outcome",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert!(label_names.is_subset(&allowed), "{label_names:?}");
    assert!(series < 400, "{series} series");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_topology_and_readyz_flips_on_sigterm_before_the_listener_closes() {
    let mut a = Admin::start("pool_mode = \"transaction\"\nshutdown_grace = \"2s\"");
    assert_eq!(a.get("/healthz"), (200, "ok\n".to_owned()));
    // Ready once the worker threads run their accept loops (the port itself
    // accepts from bind on).
    wait_until("readyz 200", Duration::from_secs(5), || {
        a.get("/readyz").0 == 200
    });
    let (status, topology) = a.get("/topology");
    assert_eq!(status, 200);
    let topology: serde_json::Value = serde_json::from_str(&topology).unwrap();
    assert_eq!(topology["primary"], a.cluster.primary().addr().as_str());
    assert_eq!(topology["members"][0]["role"], "primary");

    let client = connect(&a.app_dsn()).await;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS drained (x int); BEGIN; INSERT INTO drained VALUES (1)",
        )
        .await
        .unwrap();
    a.proxy.signal("TERM");
    let signalled = Instant::now();
    wait_until("readyz 503", Duration::from_millis(500), || {
        a.get("/readyz").0 == 503
    });
    // Within the grace period the listener still takes new clients.
    let late = connect(&a.app_dsn()).await;
    late.simple_query("SELECT 1").await.unwrap();
    assert!(signalled.elapsed() < Duration::from_secs(2));
    // After it, new logins are refused with 57P03.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let refused = tokio_postgres::connect(&a.app_dsn(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused after the grace period");
    assert_eq!(refused.code(), Some(&SqlState::CANNOT_CONNECT_NOW));
    // The transaction open at SIGTERM commits, then its client is closed.
    client
        .batch_execute("COMMIT")
        .await
        .expect("commit after SIGTERM");
    let next = client.simple_query("SELECT 1").await;
    assert!(next.is_err(), "closed at its transaction boundary");
    let status = a.proxy.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success());
    assert_eq!(
        a.cluster
            .primary()
            .psql_db(APP_DB, "SELECT count(*) FROM drained")
            .unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn console_counts_idle_connections_due_a_health_check_as_used() {
    // Every idle connection is due a round trip before its next use.
    let a = Admin::start("pool_mode = \"transaction\"\n\n[pool]\nhealth_check_after = \"0s\"");
    let app = connect(&a.app_dsn()).await;
    app.simple_query("SELECT 1").await.unwrap();
    let console = connect(&a.console_dsn()).await;
    let (columns, pools) = rows(&console.simple_query("SHOW POOLS").await.unwrap());
    let column = |name: &str| columns.iter().position(|c| c == name).unwrap();
    let row = pools
        .iter()
        .find(|r| r[0].as_deref() == Some(APP_DB) && r[1].as_deref() == Some(APP_USER))
        .expect("a row for the pool used");
    let value = |name: &str| row[column(name)].as_deref();
    assert_eq!(
        (value("sv_idle"), value("sv_used"), value("sv_tested")),
        (Some("0"), Some("1"), Some("0")),
        "{row:?}"
    );
    let (columns, servers) = rows(&console.simple_query("SHOW SERVERS").await.unwrap());
    let state = columns.iter().position(|c| c == "state").unwrap();
    assert!(
        servers.iter().any(|r| r[state].as_deref() == Some("used")),
        "{servers:?}"
    );
    // The check's round trip passes and the connection serves again.
    app.simple_query("SELECT 2").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_pools_and_pause_holds_transactions_until_resume() {
    let a = Admin::start("pool_mode = \"transaction\"");
    let app = connect(&a.app_dsn()).await;
    app.simple_query("SELECT 1").await.unwrap();
    let console = connect(&a.console_dsn()).await;

    let (columns, pools) = rows(&console.simple_query("SHOW POOLS").await.unwrap());
    assert_eq!(
        &columns[..13],
        [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login"
        ]
    );
    let row = pools
        .iter()
        .find(|r| r[0].as_deref() == Some(APP_DB) && r[1].as_deref() == Some(APP_USER))
        .expect("a row for the pool used");
    assert_eq!(row[2].as_deref(), Some("1"), "cl_active: {row:?}");
    assert_eq!(row[9].as_deref(), Some("1"), "sv_idle: {row:?}");
    for (command, first) in [
        ("SHOW SERVERS", "type"),
        ("SHOW CLIENTS", "type"),
        ("SHOW STATS", "database"),
        ("SHOW DATABASES", "name"),
        ("SHOW CONFIG", "key"),
        ("SHOW VERSION", "version"),
        ("SHOW TOPOLOGY", "node"),
    ] {
        let (columns, rows) = rows(&console.simple_query(command).await.unwrap());
        assert_eq!(
            columns.first().map(String::as_str),
            Some(first),
            "{command}"
        );
        assert!(!rows.is_empty(), "{command} returned no rows");
    }
    let (_, stats) = rows(&console.simple_query("SHOW STATS").await.unwrap());
    assert_eq!(
        stats[0][1].as_deref(),
        Some("1"),
        "total_xact_count: {stats:?}"
    );
    assert_eq!(stats[0][2].as_deref(), Some("1"), "total_query_count");
    let error = console.simple_query("SHOW NOTHING").await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::SYNTAX_ERROR));

    // psql sees the same console.
    let psql = std::process::Command::new(a.cluster.binaries().program("psql"))
        .args(["-X", "-A", "-d", &a.console_dsn(), "-c", "SHOW POOLS"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&psql.stdout);
    assert!(
        out.starts_with("database|user|cl_active|cl_waiting|"),
        "{out}"
    );

    console.simple_query("PAUSE").await.unwrap();
    let held = tokio::spawn(async move { app.simple_query("SELECT 42").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "PAUSE let a transaction through");
    console.simple_query("RESUME").await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(2), held)
        .await
        .expect("RESUME released the transaction")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");

    // Only admin.users get the console.
    let not_admin = a
        .app_dsn()
        .replace(&format!("dbname={APP_DB}"), "dbname=pgbouncer");
    let refused = tokio_postgres::connect(&not_admin, tokio_postgres::NoTls)
        .await
        .err()
        .expect("app is not an admin");
    assert_eq!(
        refused.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_waits_for_an_open_transaction_and_holds_new_ones_until_resume() {
    let a = Admin::start("pool_mode = \"transaction\"");
    let open = connect(&a.app_dsn()).await;
    let later = connect(&a.app_dsn()).await;
    open.batch_execute("CREATE TABLE paused (x int); BEGIN; INSERT INTO paused VALUES (1)")
        .await
        .unwrap();
    let console = connect(&a.console_dsn()).await;
    let pausing = tokio::spawn(async move {
        let outcome = console.simple_query("PAUSE").await;
        (Instant::now(), outcome, console)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pausing.is_finished(),
        "PAUSE returned with a transaction open"
    );
    // A new transaction is held from PAUSE on.
    let held = tokio::spawn(async move {
        let outcome = later.simple_query("SELECT count(*) FROM paused").await;
        (Instant::now(), outcome)
    });
    // The open transaction goes on and commits; PAUSE is still waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !pausing.is_finished(),
        "PAUSE returned with a transaction open"
    );
    open.batch_execute("INSERT INTO paused VALUES (2); COMMIT")
        .await
        .expect("commit while PAUSE waits");
    let committed = Instant::now();
    let (paused_at, outcome, console) = tokio::time::timeout(Duration::from_secs(2), pausing)
        .await
        .expect("PAUSE returned once the transaction ended")
        .unwrap();
    outcome.expect("PAUSE");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "a new transaction ran while paused");
    let resumed = Instant::now();
    console.simple_query("RESUME").await.unwrap();
    let (ran_at, outcome) = tokio::time::timeout(Duration::from_secs(2), held)
        .await
        .expect("RESUME released the held transaction")
        .unwrap();
    let (_, counted) = rows(&outcome.expect("no error after RESUME"));
    assert_eq!(counted[0][0].as_deref(), Some("2"));
    assert!(ran_at >= resumed);
    eprintln!(
        "PAUSE replied {:?} after the COMMIT; the held transaction ran {:?} after RESUME",
        paused_at.saturating_duration_since(committed),
        ran_at - resumed
    );
}

/// The value of `column` in the row of SHOW `what` whose first column is
/// `first`.
async fn console_value(
    console: &tokio_postgres::Client,
    what: &str,
    first: &str,
    column: &str,
) -> u64 {
    let (columns, rows) = rows(&console.simple_query(&format!("SHOW {what}")).await.unwrap());
    let index = columns.iter().position(|c| c == column).unwrap();
    let row = rows
        .iter()
        .find(|r| r[0].as_deref() == Some(first))
        .unwrap_or_else(|| panic!("no {first} row in SHOW {what}: {rows:?}"));
    row[index].as_deref().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn show_pools_maxwait_and_show_stats_averages_follow_the_traffic() {
    let a = Admin::start_with_admin(
        "pool_mode = \"transaction\"\n[pool]\nmax_size = 1\ncheckout_timeout = \"10s\"",
        "stats_period = \"1s\"",
    );
    let console = connect(&a.console_dsn()).await;
    let holder = connect(&a.app_dsn()).await;
    let waiter = connect(&a.app_dsn()).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiting = tokio::spawn(async move {
        waiter.simple_query("SELECT 1").await.unwrap();
        waiter
    });
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // The waiting checkout is the oldest: 1.3 s and counting.
    let seconds = console_value(&console, "POOLS", APP_DB, "maxwait").await;
    let micros = console_value(&console, "POOLS", APP_DB, "maxwait_us").await;
    let waited = seconds as f64 + micros as f64 / 1e6;
    eprintln!("maxwait {seconds} s {micros} us");
    assert!((1.3..3.0).contains(&waited), "maxwait {waited} s");
    // SHOW CLIENTS names the waiting client, and for how long.
    let (columns, clients) = rows(&console.simple_query("SHOW CLIENTS").await.unwrap());
    let column = |name: &str| columns.iter().position(|c| c == name).unwrap();
    let states: Vec<&str> = clients
        .iter()
        .filter(|r| r[column("database")].as_deref() == Some(APP_DB))
        .map(|r| r[column("state")].as_deref().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "waiting").count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "active").count(),
        1,
        "{states:?}"
    );
    let waiting_row = clients
        .iter()
        .find(|r| r[column("state")].as_deref() == Some("waiting"))
        .unwrap();
    let wait_s: f64 = waiting_row[column("wait")]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let wait_us: f64 = waiting_row[column("wait_us")]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let client_waited = wait_s + wait_us / 1e6;
    eprintln!("SHOW CLIENTS: waiting for {client_waited} s");
    assert!(
        (1.3..3.0).contains(&client_waited),
        "wait {client_waited} s"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    let waiter = waiting.await.unwrap();
    let (columns, clients) = rows(&console.simple_query("SHOW CLIENTS").await.unwrap());
    let state = columns.iter().position(|c| c == "state").unwrap();
    assert!(
        clients
            .iter()
            .all(|r| r[state].as_deref() == Some("active")),
        "{clients:?}"
    );
    assert_eq!(console_value(&console, "POOLS", APP_DB, "maxwait").await, 0);
    assert_eq!(
        console_value(&console, "POOLS", APP_DB, "maxwait_us").await,
        0
    );

    // The period that saw the long checkout averages it in.
    let stat = |column: &'static str| {
        let console = &console;
        async move { console_value(console, "STATS", APP_DB, column).await }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut wait_time = 0;
    while wait_time < 300_000 {
        assert!(
            Instant::now() < deadline,
            "avg_wait_time stayed {wait_time}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        wait_time = stat("avg_wait_time").await;
    }
    eprintln!("avg_wait_time {wait_time} us");
    // Traffic for a while: rates per second over the last period.
    let busy_until = Instant::now() + Duration::from_millis(2500);
    let mut sent = 0;
    while Instant::now() < busy_until {
        waiter.simple_query("SELECT 1").await.unwrap();
        sent += 1;
    }
    let (xacts, queries) = (stat("avg_xact_count").await, stat("avg_query_count").await);
    let (recv, bytes_out) = (stat("avg_recv").await, stat("avg_sent").await);
    let xact_time = stat("avg_xact_time").await;
    let query_time = stat("avg_query_time").await;
    let total_query_time = stat("total_query_time").await;
    eprintln!(
        "{sent} transactions in 2.5 s; last period: avg_xact_count {xacts}, avg_query_count {queries}, avg_recv {recv}, avg_sent {bytes_out}, avg_xact_time {xact_time} us, avg_query_time {query_time} us; total_query_time {total_query_time} us"
    );
    // A query is timed from its forwarding to its ReadyForQuery, inside
    // the transaction's own time.
    assert!(
        query_time > 0 && query_time <= xact_time,
        "avg_query_time {query_time}, avg_xact_time {xact_time}"
    );
    assert!(total_query_time >= query_time);
    assert!(xacts > 0 && xacts <= sent, "avg_xact_count {xacts}");
    assert_eq!(queries, xacts, "one query per transaction");
    assert!(
        recv > 0 && bytes_out > recv,
        "avg_recv {recv}, avg_sent {bytes_out}"
    );
    assert!(
        xact_time > 0 && xact_time < 1_000_000,
        "avg_xact_time {xact_time}"
    );
    // A quiet period brings the rates back to 0.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stat("avg_xact_count").await > 0 {
        assert!(Instant::now() < deadline, "avg_xact_count stayed above 0");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stat("avg_xact_time").await, 0);
    assert_eq!(stat("avg_query_time").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_handshakes_and_failed_handshakes_are_counted() {
    use support::tls::{TestCa, client_config, connect_tls};
    let ca = TestCa::new("switchyard test CA");
    let cert = ca.issue("proxy", &["localhost", "127.0.0.1"]);
    let a = Admin::start(&format!(
        "pool_mode = \"transaction\"\n[tls]\nmode = \"allow\"\ncert = \"{}\"\nkey = \"{}\"",
        cert.cert_path.display(),
        cert.key_path.display()
    ));
    let config: tokio_postgres::Config = a.app_dsn().parse().unwrap();
    let mut config = config;
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let client = connect_tls(&config, client_config(&ca.ca_path(), None))
        .await
        .expect("TLS client");
    client.simple_query("SELECT 1").await.unwrap();
    // A client that asks for TLS, then sends no ClientHello but garbage.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(a.proxy.addr).unwrap();
    raw.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .unwrap();
    let mut answer = [0u8; 1];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"S");
    raw.write_all(b"this is not a TLS record\n").unwrap();
    let _ = raw.read(&mut [0u8; 64]);
    drop(raw);
    wait_until("failure counted", Duration::from_secs(5), || {
        a.metric("switchyard_tls_handshake_failures_total", &[]) == Some(1.0)
    });
    assert_eq!(a.metric("switchyard_tls_handshakes_total", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_a_new_pool_size_and_refuses_an_invalid_file() {
    let a = Admin::start(
        "pool_mode = \"transaction\"\n[pool]\nmax_size = 1\ncheckout_timeout = \"500ms\"",
    );
    let holder = connect(&a.app_dsn()).await;
    let other = connect(&a.app_dsn()).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // One connection, held: the other client's checkout times out.
    let error = other.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::TOO_MANY_CONNECTIONS));

    a.edit_config("max_size = 1", "max_size = 2");
    let console = connect(&a.console_dsn()).await;
    console.simple_query("RELOAD").await.unwrap();
    other
        .simple_query("SELECT 1")
        .await
        .expect("second connection after RELOAD");
    let primary = a.cluster.primary().addr();
    let pool = [
        ("node", primary.as_str()),
        ("database", APP_DB),
        ("user", APP_USER),
    ];
    assert_eq!(a.metric("switchyard_pool_max_size", &pool), Some(2.0));
    let (_, config) = rows(&console.simple_query("SHOW CONFIG").await.unwrap());
    let max = config
        .iter()
        .find(|r| r[0].as_deref() == Some("pool.max_size"))
        .unwrap();
    assert_eq!(max[1].as_deref(), Some("2"));

    // An invalid file is refused; the old configuration keeps serving.
    a.edit_config("max_size = 2", "max_size = 0");
    let error = console.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::CONFIG_FILE_ERROR));
    let message = error.as_db_error().unwrap().message();
    assert!(message.contains("pool.max_size"), "{message}");
    holder.batch_execute("COMMIT").await.unwrap();
    other.simple_query("SELECT 1").await.unwrap();
    assert_eq!(a.metric("switchyard_pool_max_size", &pool), Some(2.0));
    // A changed node list: existing clients stay, /topology follows.
    a.edit_config("max_size = 0", "max_size = 2");
    let nodes = format!("nodes = [\"{primary}\"]");
    a.edit_config(&nodes, &format!("nodes = [\"{primary}\", \"127.0.0.1:1\"]"));
    console.simple_query("RELOAD").await.unwrap();
    holder
        .simple_query("SELECT 1")
        .await
        .expect("client kept across RELOAD");
    // The topology monitor probes the new node on its next round; an
    // unreachable node is listed with no role it could serve.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, topology) = a.get("/topology");
        let role = a.metric(
            "switchyard_node_role",
            &[("node", "127.0.0.1:1"), ("role", "unknown")],
        );
        if topology.contains("127.0.0.1:1") && role == Some(1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{topology}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        a.metric("switchyard_config_reloads_total", &[("result", "failure")])
            .unwrap()
            >= 1.0
    );
}

#[test]
fn sighup_and_a_file_change_reload_and_are_counted_in_json_logs() {
    let a = Admin::start("[log]\nformat = \"json\"");
    let reloads = |result| {
        a.metric("switchyard_config_reloads_total", &[("result", result)])
            .unwrap()
    };
    assert_eq!(reloads("success"), 0.0);
    a.proxy.signal("HUP");
    wait_until("SIGHUP reload", Duration::from_secs(5), || {
        reloads("success") == 1.0
    });
    // An edit of the file in place (the file watch, no signal).
    a.edit_config("shutdown_timeout = \"5s\"", "shutdown_timeout = \"6s\"");
    wait_until("file-change reload", Duration::from_secs(5), || {
        reloads("success") == 2.0
    });
    // Kubernetes' way: a new file renamed over the old one.
    let text = std::fs::read_to_string(a.config_path()).unwrap();
    let staged = a.proxy.dir.path().join("..staged");
    std::fs::write(&staged, text.replace("shutdown_timeout = \"6s\"", "[bogus")).unwrap();
    std::fs::rename(&staged, a.config_path()).unwrap();
    wait_until("refused reload", Duration::from_secs(5), || {
        reloads("failure") == 1.0
    });
    assert_eq!(reloads("success"), 2.0);
    let log = a.proxy.log();
    assert!(log.contains("configuration reload refused"), "{log}");
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(event["fields"]["message"].is_string(), "{line}");
    }
    // Still serving with the configuration in force.
    assert_eq!(a.get("/readyz").0, 200);
    session_pooled_clients_are_active_and_their_queries_counted(&a);
}

#[test]
fn kubernetes_manifests_carry_a_valid_config_and_probe_the_admin_port() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/k8s");
    let configmap = std::fs::read_to_string(root.join("configmap.yaml")).unwrap();
    let toml: String = configmap
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("switchyard.toml: |"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    // As the Deployment sets it from the Pod IP.
    let pod_env = vec![(
        "SWITCHYARD_PEERS_SELF_ADDRESS".to_owned(),
        "10.244.1.17:6432".to_owned(),
    )];
    let config = switchyard::config::Config::from_toml(
        &toml,
        std::path::Path::new("configmap.yaml"),
        pod_env,
    )
    .expect("the ConfigMap's switchyard.toml is valid");
    assert_eq!(config.peers.own_id(), 256 + 17);
    assert!(config.server.admin_listen.ends_with(":9930"));
    let deployment = std::fs::read_to_string(root.join("deployment.yaml")).unwrap();
    for needle in [
        "path: /readyz",
        "path: /healthz",
        "containerPort: 9930",
        "preStop",
        "SWITCHYARD_PEERS_SELF_ADDRESS",
    ] {
        assert!(deployment.contains(needle), "deployment lacks {needle}");
    }
    let peers = std::fs::read_to_string(root.join("service-peers.yaml")).unwrap();
    assert!(
        peers.contains("clusterIP: None"),
        "peer Service is headless"
    );
    assert!(peers.contains(&format!("name: {}", config.peers.dns)));
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("config/grafana/switchyard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let metrics = switchyard::metrics::Metrics::new().unwrap();
    // Touch every labelled family so it appears in the exposition.
    metrics.set_node_state("n:1", "primary", true);
    metrics.set_replica_lag("n:1", 0, 0.0);
    metrics.error("08006");
    metrics.route("n:1", "primary").transaction_done(0.0);
    metrics.pool("n:1", "d", "u").checkout_waited(0.0);
    let exported = metrics.encode().unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("switchyard_"))
            {
                let family = name.trim_end_matches("_bucket");
                let known = exported.contains(&format!("# TYPE {family} "))
                    || [
                        "switchyard_server_connections",
                        "switchyard_client_connections",
                        "switchyard_pins_total",
                        "switchyard_pool_checkout_timeouts_total",
                    ]
                    .contains(&family);
                assert!(known, "{name} in {:?} is not exported", panel["title"]);
            }
        }
    }
}

/// Session pooling: a client holds its server connection, so it counts as
/// active, and each of its requests as a query.
fn session_pooled_clients_are_active_and_their_queries_counted(a: &Admin) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&a.app_dsn()).await;
        for _ in 0..3 {
            client.simple_query("SELECT 1").await.unwrap();
        }
        let primary = a.cluster.primary().addr();
        let route = [("node", primary.as_str()), ("role", "primary")];
        assert_eq!(a.metric("switchyard_queries_total", &route), Some(3.0));
        assert_eq!(
            a.metric("switchyard_client_connections", &[("state", "active")]),
            Some(1.0)
        );
        let active = [("node", primary.as_str()), ("state", "active")];
        assert_eq!(
            a.metric("switchyard_server_connections", &active),
            Some(1.0)
        );
        // The server's errors are counted as they are relayed.
        let missing = client.simple_query("SELECT * FROM no_such_table").await;
        assert_eq!(
            missing.unwrap_err().code(),
            Some(&SqlState::UNDEFINED_TABLE)
        );
        assert_eq!(
            a.metric("switchyard_errors_total", &[("class", "42")]),
            Some(1.0)
        );
        // PAUSE waits for the session-pooled client to leave, as PgBouncer's.
        let console = connect(&a.console_dsn()).await;
        let pausing = tokio::spawn(async move { console.simple_query("PAUSE").await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!pausing.is_finished(), "PAUSE returned with a session open");
        drop(client);
        tokio::time::timeout(Duration::from_secs(2), pausing)
            .await
            .expect("PAUSE returned once the session ended")
            .unwrap()
            .expect("PAUSE");
        let console = connect(&a.console_dsn()).await;
        console.simple_query("RESUME").await.unwrap();
    });
}
