//! Client authentication in the proxy and login to the server.

mod support;

use support::{APP_DB, Harness, connect};
use tokio_postgres::error::SqlState;

fn dsn(h: &Harness, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} password={password} dbname={APP_DB}",
        h.proxy.addr.port()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_gets_28p01_and_never_reaches_the_server() {
    let h = Harness::start();
    for (user, password) in [("app", "wrong"), ("nobody", "whatever"), ("postgres", "")] {
        let error = tokio_postgres::connect(&dsn(&h, user, password), tokio_postgres::NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        assert_eq!(
            error.code(),
            Some(&SqlState::INVALID_PASSWORD),
            "{user}: {error}"
        );
    }
    let attempts = h.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'nobody'");
    assert_eq!(attempts, "0");
    // log_connections is on: the server never saw a connection for these users.
    let log = h.cluster.primary().log();
    assert!(
        !log.contains("user=nobody"),
        "server saw a login attempt:\n{log}"
    );
    assert!(
        !log.contains("user=app database=appdb application_name"),
        "{log}"
    );
    assert!(!log.contains("authentication failed"), "{log}");

    // The right password still works afterwards.
    let client = connect(&h.proxy_dsn()).await;
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "app");
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_parameters_reach_the_server() {
    let h = Harness::start();
    let dsn = format!(
        "{} application_name=switchyard-test options='-c search_path=pg_catalog -c work_mem=5MB'",
        h.proxy_dsn()
    );
    let client = connect(&dsn).await;
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('search_path'), \
             current_setting('work_mem'), current_database()::text",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "switchyard-test");
    assert_eq!(row.get::<_, &str>(1), "pg_catalog");
    assert_eq!(row.get::<_, &str>(2), "5MB");
    assert_eq!(row.get::<_, &str>(3), APP_DB);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_errors_at_login_are_passed_through() {
    let h = Harness::start();
    let dsn = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname=no_such_db",
        h.proxy.addr.port()
    );
    let error = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.code(),
        Some(&SqlState::INVALID_CATALOG_NAME),
        "{error}"
    );
}

#[test]
fn trust_user_and_md5_or_cleartext_server_logins_work() {
    let cluster = switchyard::testcluster::LocalCluster::start(&support::spec()).unwrap();
    let primary = cluster.primary();
    primary
        .psql(
            "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5pw'; \
             CREATE ROLE clearuser LOGIN PASSWORD 'clearpw'; GRANT CONNECT ON DATABASE appdb TO md5user, clearuser",
        )
        .unwrap();
    // Put md5 and password rules before the generic scram rule.
    let hba = primary.data_dir.join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    let rules = "host all md5user 127.0.0.1/32 md5\nhost all clearuser 127.0.0.1/32 password\n";
    std::fs::write(&hba, format!("{rules}{original}")).unwrap();
    primary.psql("SELECT pg_reload_conf()").unwrap();

    let extra_users = r#"
[[users]]
name = "md5user"
password = "md5pw"

[[users]]
name = "clearuser"
password = "clearpw"
auth = "trust"
"#;
    let config = format!("{}{extra_users}", support::proxy_config(&cluster, ""));
    let proxy = support::ProxyProcess::start(&config);
    let psql = cluster.binaries().program("psql");
    for (user, password) in [("md5user", "md5pw"), ("clearuser", "")] {
        let url = format!(
            "postgres://{user}:{password}@127.0.0.1:{}/appdb",
            proxy.addr.port()
        );
        let out = std::process::Command::new(&psql)
            .args(["-X", "-A", "-t", "-d", &url, "-c", "SELECT current_user"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
    }
}

/// Users and `[auth]` for a proxy in front of `cluster` (no `[[users]]` from support).
fn config_with(
    cluster: &switchyard::testcluster::LocalCluster,
    server: &str,
    rest: &str,
) -> String {
    let primary = cluster.primary().addr();
    format!(
        r#"
[server]
listen = "{{listen}}"
admin_listen = "127.0.0.1:0"
{server}
[cluster]
nodes = ["{primary}"]
primary = "{primary}"
monitor_user = "postgres"
monitor_password = "{superpw}"
{rest}
"#,
        superpw = cluster.superuser_password()
    )
}

async fn login(port: u16, user: &str, password: &str) -> Result<String, tokio_postgres::Error> {
    let dsn = format!("host=127.0.0.1 port={port} user={user} password={password} dbname={APP_DB}");
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // Two transactions, so transaction pooling opens (or reuses) pooled connections.
    client.simple_query("SELECT 1").await?;
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn verifier_only_user_logs_in_to_the_node_without_a_plaintext_password() {
    let h = Harness::start();
    let verifier = h.admin_sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    for mode in ["session", "transaction"] {
        let config = config_with(
            &h.cluster,
            &format!("pool_mode = \"{mode}\""),
            &format!("[[users]]\nname = \"app\"\npassword = \"{verifier}\"\n"),
        );
        let proxy = support::ProxyProcess::start(&config);
        let user = login(proxy.addr.port(), "app", support::APP_PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}\n{}", proxy.log()));
        assert_eq!(user, "app");
        let error = login(proxy.addr.port(), "app", "wrong").await.unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD), "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_passthrough_follows_password_changes_after_the_cache_expires() {
    let h = Harness::start();
    h.admin_sql(
        "CREATE ROLE pt_user LOGIN PASSWORD 'first-pw'; GRANT CONNECT ON DATABASE appdb TO pt_user",
    );
    for mode in ["session", "transaction"] {
        let config = config_with(
            &h.cluster,
            &format!("pool_mode = \"{mode}\""),
            &format!(
                "[auth]\nuser = \"postgres\"\npassword = \"{}\"\ncache_ttl = \"1s\"\n",
                h.cluster.superuser_password()
            ),
        );
        let proxy = support::ProxyProcess::start(&config);
        let port = proxy.addr.port();
        let (old, new) = if mode == "session" {
            ("first-pw", "second-pw")
        } else {
            ("second-pw", "third-pw")
        };
        let user = login(port, "pt_user", old)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}\n{}", proxy.log()));
        assert_eq!(user, "pt_user");
        // Unknown to PostgreSQL too: fails like a wrong password.
        let error = login(port, "no_such_role", "x").await.unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD));

        h.admin_sql(&format!("ALTER ROLE pt_user PASSWORD '{new}'"));
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let user = login(port, "pt_user", new)
            .await
            .unwrap_or_else(|e| panic!("{mode} new password: {e:?}\n{}", proxy.log()));
        assert_eq!(user, "pt_user");
        let error = login(port, "pt_user", old).await.unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD), "{mode}");
    }
}

#[test]
fn md5_clients_log_in_with_a_plaintext_password_or_a_stored_hash() {
    let cluster = switchyard::testcluster::LocalCluster::start(&support::spec()).unwrap();
    let primary = cluster.primary();
    primary
        .psql(
            "SET password_encryption = 'md5'; CREATE ROLE md5only LOGIN PASSWORD 'md5pw'; \
             GRANT CONNECT ON DATABASE appdb TO md5only",
        )
        .unwrap();
    let hba = primary.data_dir.join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all md5only 127.0.0.1/32 md5\n{original}"),
    )
    .unwrap();
    primary.psql("SELECT pg_reload_conf()").unwrap();
    // The proxy holds only the hash pg_authid holds; it logs in to the
    // node (which asks for md5) with it. `app` keeps a plaintext password
    // the node's SCRAM login needs, but its clients use md5.
    let stored = switchyard::session::md5::stored_hash("md5only", "md5pw");
    assert_eq!(
        primary
            .psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5only'")
            .unwrap(),
        stored
    );
    let config =
        support::proxy_config(&cluster, "").replace(
            "name = \"app\"\npassword = \"app-secret\"",
            "name = \"app\"\npassword = \"app-secret\"\nauth = \"md5\"",
        ) + &format!("\n[[users]]\nname = \"md5only\"\npassword = \"{stored}\"\nauth = \"md5\"\n");
    assert_eq!(config.matches("auth = \"md5\"").count(), 2, "{config}");
    let proxy = support::ProxyProcess::start(&config);
    let psql = cluster.binaries().program("psql");
    let run = |user: &str, password: &str| {
        let url = format!(
            "postgres://{user}:{password}@127.0.0.1:{}/appdb",
            proxy.addr.port()
        );
        std::process::Command::new(&psql)
            .args(["-X", "-A", "-t", "-d", &url, "-c", "SELECT current_user"])
            .output()
            .unwrap()
    };
    for (user, password) in [("md5only", "md5pw"), ("app", "app-secret")] {
        let out = run(user, password);
        assert!(
            out.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
        let wrong = run(user, "wrong");
        assert!(!wrong.status.success());
        let stderr = String::from_utf8_lossy(&wrong.stderr);
        assert!(
            stderr.contains("password authentication failed"),
            "{user}: {stderr}"
        );
    }
}
