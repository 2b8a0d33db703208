//! TLS on both sides of the proxy, against real PostgreSQL: clients with
//! psql and tokio-postgres (sslmode require / verify-full, channel
//! binding, direct TLS, mTLS), certificate rotation, and the proxy's own
//! TLS to the nodes with each verification mode.

mod support;

use std::time::Duration;

use support::tls::{TestCa, client_config, connect_tls};
use support::{APP_DB, APP_PASSWORD, APP_USER, Harness, ProxyProcess, proxy_config, spec};
use switchyard::testcluster::{ClusterSpec, LocalCluster};
use tokio_postgres::config::{ChannelBinding, SslMode, SslNegotiation};
use tokio_postgres::error::SqlState;

/// A cluster and a proxy with client TLS `mode`, certificate for
/// localhost/127.0.0.1 issued by the returned CA; `extra` goes in `[tls]`.
fn tls_harness(mode: &str, extra: &str) -> (Harness, TestCa) {
    let ca = TestCa::new("switchyard test CA");
    let cert = ca.issue("proxy", &["localhost", "127.0.0.1"]);
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    let config = proxy_config(
        &cluster,
        &format!(
            "[tls]\nmode = \"{mode}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
            cert.cert_path.display(),
            cert.key_path.display()
        ),
    );
    let proxy = ProxyProcess::start(&config);
    (Harness { proxy, cluster }, ca)
}

fn psql(h: &Harness, conninfo: &str) -> (bool, String) {
    let out = h.run("psql", &[conninfo, "-Atc", "SELECT 'ok:' || current_user"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("ok:app"), text)
}

fn conninfo(h: &Harness, host: &str, extra: &str) -> String {
    format!(
        "host={host} port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB} {extra}",
        h.proxy.addr.port()
    )
}

fn pg_config(h: &Harness, host: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(h.proxy.addr.port())
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname(APP_DB)
        .ssl_mode(SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_with_channel_binding_works_and_plaintext_is_refused_when_required() {
    let (h, ca) = tls_harness("require", "");
    let ca_path = ca.ca_path();
    let ca_path = ca_path.display();

    // psql (libpq): verify-full, channel binding required (SCRAM-SHA-256-PLUS).
    let (ok, text) = psql(
        &h,
        &conninfo(
            &h,
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca_path} channel_binding=require"),
        ),
    );
    assert!(ok, "psql verify-full + channel binding: {text}");
    let (ok, text) = psql(&h, &conninfo(&h, "127.0.0.1", "sslmode=require"));
    assert!(ok, "psql sslmode=require: {text}");

    // tokio-postgres: certificate verified against the CA and host name,
    // channel binding required.
    let mut config = pg_config(&h, "localhost");
    config.channel_binding(ChannelBinding::Require);
    let client = connect_tls(&config, client_config(&ca.ca_path(), None))
        .await
        .expect("tokio-postgres over TLS");
    let row = client
        .query_one("SELECT current_user::text, 42", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), APP_USER);

    // A larger result through the TLS relay.
    let rows = client
        .query(
            "SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2000);

    // Plaintext is refused before authentication, with 28000.
    let (ok, text) = psql(&h, &conninfo(&h, "127.0.0.1", "sslmode=disable"));
    assert!(!ok, "plaintext accepted: {text}");
    assert!(text.contains("TLS is required"), "{text}");
    let error = tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("plaintext refused");
    assert_eq!(
        error.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );
    assert!(
        !h.cluster.primary().log().contains("authentication failed"),
        "plaintext client reached the server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_tls_with_alpn_postgresql_is_accepted() {
    let (h, ca) = tls_harness("require", "");
    let mut config = pg_config(&h, "localhost");
    config.ssl_negotiation(SslNegotiation::Direct);
    let client = connect_tls(&config, client_config(&ca.ca_path(), None))
        .await
        .expect("direct TLS");
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_mode_serves_plaintext_and_tls_clients() {
    let (h, ca) = tls_harness("allow", "");
    let plain = support::connect(&h.proxy_dsn()).await;
    assert_eq!(
        plain
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    let tls = connect_tls(
        &pg_config(&h, "localhost"),
        client_config(&ca.ca_path(), None),
    )
    .await
    .unwrap();
    assert_eq!(
        tls.query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_host_and_expired_certificates_are_refused_by_verify_full() {
    let ca = TestCa::new("switchyard test CA");
    let wrong_host = ca.issue("wrong", &["db.example.com"]);
    let expired = ca.issue_expired("expired", &["localhost", "127.0.0.1"]);
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    let ca_path = ca.ca_path();
    for (cert, expected) in [
        (&wrong_host, "does not match host name"),
        (&expired, "certificate verify failed"),
    ] {
        let proxy = ProxyProcess::start(&proxy_config(
            &cluster,
            &format!(
                "[tls]\nmode = \"require\"\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.cert_path.display(),
                cert.key_path.display()
            ),
        ));
        let conninfo = format!(
            "host=localhost port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB} \
             sslmode=verify-full sslrootcert={}",
            proxy.addr.port(),
            ca_path.display()
        );
        let out = std::process::Command::new(cluster.binaries().program("psql"))
            .args([&conninfo, "-Atc", "SELECT 1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "verify-full accepted a bad certificate"
        );
        assert!(stderr.contains(expected), "{expected}: {stderr}");

        // tokio-postgres (rustls) refuses it as well, naming the reason.
        let mut config = tokio_postgres::Config::new();
        config
            .host("localhost")
            .port(proxy.addr.port())
            .user(APP_USER)
            .password(APP_PASSWORD)
            .dbname(APP_DB)
            .ssl_mode(SslMode::Require);
        let error = connect_tls(&config, client_config(&ca_path, None))
            .await
            .expect_err("rustls refused the certificate");
        let text = format!("{error:?}");
        assert!(
            text.contains("NotValidForName") || text.contains("Expired"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificate_is_served_to_new_connections_without_restart() {
    let (h, first_ca) = tls_harness("require", "");
    let config = pg_config(&h, "localhost");
    let old_client = connect_tls(&config, client_config(&first_ca.ca_path(), None))
        .await
        .unwrap();

    // Kubernetes-style rotation: new files, new CA, same paths.
    let second_ca = TestCa::new("rotated CA");
    let rotated = second_ca.issue("rotated", &["localhost", "127.0.0.1"]);
    let cert_path = first_ca.dir.path().join("proxy.crt");
    let key_path = first_ca.dir.path().join("proxy.key");
    rotated.write_to(&cert_path, &key_path);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match connect_tls(&config, client_config(&second_ca.ca_path(), None)).await {
            Ok(client) => {
                client.query_one("SELECT 1", &[]).await.unwrap();
                break;
            }
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "rotated certificate never served: {error:?}\n{}",
                    h.proxy.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // New connections no longer get the old certificate...
    assert!(
        connect_tls(&config, client_config(&first_ca.ca_path(), None))
            .await
            .is_err()
    );
    // ...and the connection made before the rotation keeps working.
    old_client.query_one("SELECT 2", &[]).await.unwrap();
    assert!(h.proxy.log().contains("TLS certificate reloaded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificate_is_required_when_client_ca_is_set() {
    let client_ca = TestCa::new("client CA");
    let client_cert = client_ca.issue("client", &["app"]);
    let (h, ca) = tls_harness(
        "require",
        &format!("client_ca = \"{}\"", client_ca.ca_path().display()),
    );
    let config = pg_config(&h, "localhost");
    let without = connect_tls(&config, client_config(&ca.ca_path(), None)).await;
    assert!(without.is_err(), "client without certificate was accepted");
    let with = connect_tls(&config, client_config(&ca.ca_path(), Some(&client_cert)))
        .await
        .expect("client with certificate");
    with.query_one("SELECT 1", &[]).await.unwrap();
}

/// A cluster whose primary serves TLS with a certificate for "localhost" only.
fn tls_cluster(ca: &TestCa) -> LocalCluster {
    let node_cert = ca.issue("node", &["localhost"]);
    LocalCluster::start(&ClusterSpec {
        tls: Some(node_cert.node_tls()),
        ..spec()
    })
    .expect("start TLS cluster")
}

/// A proxy in front of `node` (`host:port`) with `[server_tls]` `server_tls`.
fn proxy_to(cluster: &LocalCluster, node: &str, server_tls: &str) -> ProxyProcess {
    ProxyProcess::start(&format!(
        r#"
[routing]
# A node the proxy cannot reach is not waited for long in these tests.
failover_timeout = "1s"

[server]
listen = "{{listen}}"
admin_listen = "127.0.0.1:0"
[cluster]
nodes = ["{node}"]
primary = "{node}"
[server_tls]
{server_tls}
[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
[[users]]
name = "postgres"
password = "{}"
"#,
        cluster.superuser_password()
    ))
}

/// The server-side message of a tokio-postgres error.
fn message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |e| e.message().to_owned())
}

async fn server_side_ssl(proxy: &ProxyProcess) -> Result<bool, tokio_postgres::Error> {
    let dsn = format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
        proxy.addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_verifies_the_node_certificate_as_server_tls_mode_says() {
    let ca = TestCa::new("node CA");
    let cluster = tls_cluster(&ca);
    let port = cluster.primary().port;
    let ca_file = format!("ca_file = \"{}\"", ca.ca_path().display());

    // verify-full by name: encrypted.
    let proxy = proxy_to(
        &cluster,
        &format!("localhost:{port}"),
        &format!("mode = \"verify-full\"\n{ca_file}"),
    );
    assert!(server_side_ssl(&proxy).await.unwrap(), "not encrypted");

    // verify-full by IP: the certificate names only "localhost": refused.
    let proxy = proxy_to(
        &cluster,
        &format!("127.0.0.1:{port}"),
        &format!("mode = \"verify-full\"\n{ca_file}"),
    );
    let error = server_side_ssl(&proxy)
        .await
        .expect_err("wrong host accepted");
    let text = message(&error);
    assert!(text.contains("TLS with server"), "{text}");
    assert!(text.contains("not valid for name"), "{text}");

    // verify-ca: the chain is enough.
    let proxy = proxy_to(
        &cluster,
        &format!("127.0.0.1:{port}"),
        &format!("mode = \"verify-ca\"\n{ca_file}"),
    );
    assert!(server_side_ssl(&proxy).await.unwrap());

    // verify-ca against another CA: refused.
    let other = TestCa::new("other CA");
    let proxy = proxy_to(
        &cluster,
        &format!("127.0.0.1:{port}"),
        &format!(
            "mode = \"verify-ca\"\nca_file = \"{}\"",
            other.ca_path().display()
        ),
    );
    let error = server_side_ssl(&proxy)
        .await
        .expect_err("unknown CA accepted");
    assert!(message(&error).contains("UnknownIssuer"), "{error:?}");

    // require and prefer encrypt without checking.
    for mode in ["require", "prefer"] {
        let proxy = proxy_to(
            &cluster,
            &format!("127.0.0.1:{port}"),
            &format!("mode = \"{mode}\""),
        );
        assert!(server_side_ssl(&proxy).await.unwrap(), "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_refuses_an_expired_node_certificate_naming_the_reason() {
    let ca = TestCa::new("node CA");
    let expired = ca.issue_expired("node", &["localhost"]);
    let cluster = LocalCluster::start(&ClusterSpec {
        tls: Some(expired.node_tls()),
        ..spec()
    })
    .expect("start TLS cluster");
    let port = cluster.primary().port;
    let ca_file = format!("ca_file = \"{}\"", ca.ca_path().display());
    for mode in ["verify-ca", "verify-full"] {
        let proxy = proxy_to(
            &cluster,
            &format!("localhost:{port}"),
            &format!("mode = \"{mode}\"\n{ca_file}"),
        );
        let error = server_side_ssl(&proxy)
            .await
            .expect_err("expired node certificate accepted");
        // 08006 from the login, or 57P03 when the probes refused the
        // node first (then no primary is verified); either names the reason.
        assert!(
            [SqlState::CONNECTION_FAILURE, SqlState::CANNOT_CONNECT_NOW]
                .iter()
                .any(|code| error.code() == Some(code)),
            "{error:?}"
        );
        let text = message(&error);
        assert!(text.contains("TLS with server"), "{mode}: {text}");
        assert!(text.to_lowercase().contains("expired"), "{mode}: {text}");
    }
    // require does not check the certificate, as libpq's sslmode=require.
    let proxy = proxy_to(&cluster, &format!("localhost:{port}"), "mode = \"require\"");
    assert!(server_side_ssl(&proxy).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn require_fails_and_prefer_falls_back_when_the_node_has_no_tls() {
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    let node = cluster.primary().addr();
    let proxy = proxy_to(&cluster, &node, "mode = \"prefer\"");
    assert!(!server_side_ssl(&proxy).await.unwrap());
    let proxy = proxy_to(&cluster, &node, "mode = \"require\"");
    let error = server_side_ssl(&proxy)
        .await
        .expect_err("plain node accepted");
    assert!(message(&error).contains("does not accept TLS"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_runs_over_tls_on_both_sides_in_both_pool_modes() {
    let ca = TestCa::new("switchyard test CA");
    let proxy_cert = ca.issue("proxy", &["localhost", "127.0.0.1"]);
    let cluster = tls_cluster(&ca);
    let port = cluster.primary().port;
    for mode in ["session", "transaction"] {
        let proxy = ProxyProcess::start(&format!(
            r#"
[server]
listen = "{{listen}}"
admin_listen = "127.0.0.1:0"
pool_mode = "{mode}"
[cluster]
nodes = ["localhost:{port}"]
primary = "localhost:{port}"
[tls]
mode = "require"
cert = "{cert}"
key = "{key}"
[server_tls]
mode = "verify-full"
ca_file = "{ca}"
[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
"#,
            cert = proxy_cert.cert_path.display(),
            key = proxy_cert.key_path.display(),
            ca = ca.ca_path().display(),
        ));
        let conninfo = format!(
            "host=localhost port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB} \
             sslmode=verify-full sslrootcert={} channel_binding=require",
            proxy.addr.port(),
            ca.ca_path().display()
        );
        let pgbench = cluster.binaries().program("pgbench");
        let run = |args: &[&str]| {
            let out = std::process::Command::new(&pgbench)
                .args(args)
                .arg(&conninfo)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "{mode} pgbench {args:?}: {text}\n{}",
                proxy.log()
            );
            text
        };
        if mode == "session" {
            run(&["-i", "-s", "1", "-q"]);
        }
        for query_mode in ["simple", "extended", "prepared"] {
            let text = run(&["-M", query_mode, "-c", "4", "-j", "2", "-t", "100", "-n"]);
            assert!(
                text.contains("number of transactions actually processed: 400/400"),
                "{mode} {query_mode}: {text}"
            );
        }
        if mode == "transaction" {
            // The pool's idle server connections are all encrypted.
            let count = |ssl: &str| {
                cluster
                    .primary()
                    .psql(&format!(
                        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                         WHERE usename = 'app' AND ssl = {ssl}"
                    ))
                    .unwrap()
            };
            assert_ne!(count("true"), "0");
            assert_eq!(count("false"), "0");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificate_must_name_the_user_when_client_cert_user_is_cn() {
    let client_ca = TestCa::new("client CA");
    let (h, ca) = tls_harness(
        "allow",
        &format!(
            "client_ca = \"{}\"\nclient_cert_user = \"cn\"\n[tls.client_cert_map]\n\"deploy-bot\" = [\"{APP_USER}\"]",
            client_ca.ca_path().display()
        ),
    );
    let config = pg_config(&h, "localhost");
    let login = |cert: &support::tls::Issued| {
        let tls = client_config(&ca.ca_path(), Some(cert));
        let config = config.clone();
        async move { connect_tls(&config, tls).await }
    };

    // Someone else's certificate (CA-signed, so the handshake succeeds) is
    // refused with 28000 before any server connection is opened.
    let mallory = client_ca.issue("mallory", &["mallory"]);
    let error = login(&mallory).await.expect_err("mallory logged in as app");
    assert_eq!(
        error.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{error:?}"
    );
    let text = message(&error);
    assert!(
        text.contains("certificate authentication failed for user \"app\"")
            && text.contains("\"mallory\""),
        "{text}"
    );
    // A plaintext client (tls.mode = "allow") has no certificate at all.
    let error = tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("plaintext client logged in without a certificate");
    assert_eq!(
        error.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );
    assert!(
        message(&error).contains("no client certificate"),
        "{error:?}"
    );
    let log = h.cluster.primary().log();
    assert!(
        !log.contains("user=app database=appdb"),
        "a refused client reached the server:\n{log}"
    );

    // The user's own certificate, and one the map lets stand for it, log in.
    for cert in [
        client_ca.issue("app", &[APP_USER]),
        client_ca.issue("bot", &["deploy-bot"]),
    ] {
        let client = login(&cert).await.expect("certificate naming the user");
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), APP_USER);
    }
}
