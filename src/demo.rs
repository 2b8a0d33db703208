//! `switchyard demo`: a local primary and two streaming replicas from the
//! PostgreSQL binaries on this machine, with the proxy in front, until Ctrl-C.

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;

use crate::config::{ClusterConfig, Config, ServerConfig, UserConfig};
use crate::proxy::{Proxy, termination_signal};
use crate::testcluster::{ClusterSpec, LocalCluster};

/// The demo's application user, password and database.
pub const DEMO_USER: &str = "app";
const DEMO_PASSWORD: &str = "app-secret";
const DEMO_DB: &str = "appdb";

/// Runs the demo until SIGINT/SIGTERM, then removes the cluster.
pub fn run() -> ExitCode {
    println!("switchyard demo: starting PostgreSQL (primary + 2 streaming replicas)...");
    let spec = ClusterSpec {
        replicas: 2,
        users: vec![(DEMO_USER.into(), DEMO_PASSWORD.into())],
        databases: vec![DEMO_DB.into()],
        ..ClusterSpec::default()
    };
    let cluster = match LocalCluster::start(&spec) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("error: cannot start the demo cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = demo_config(&cluster);
    let code = match crate::proxy::control_runtime() {
        Ok(runtime) => runtime.block_on(serve(config, &cluster)),
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            ExitCode::FAILURE
        }
    };
    drop(cluster);
    println!("switchyard demo: stopped; the cluster is removed.");
    code
}

fn demo_config(cluster: &LocalCluster) -> Config {
    // The documented port when it is free, else any free port.
    let listen = if TcpListener::bind("127.0.0.1:6432").is_ok() {
        "127.0.0.1:6432"
    } else {
        "127.0.0.1:0"
    };
    Config {
        server: ServerConfig {
            listen: listen.into(),
            worker_threads: std::env::var("SWITCHYARD_SERVER_WORKER_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            admin_listen: "127.0.0.1:9930".into(),
            ..ServerConfig::default()
        },
        cluster: ClusterConfig {
            nodes: cluster.nodes().map(|n| n.addr()).collect(),
            primary: Some(cluster.primary().addr()),
            ..ClusterConfig::default()
        },
        users: vec![UserConfig {
            name: DEMO_USER.into(),
            password: Some(DEMO_PASSWORD.into()),
            auth: Default::default(),
        }],
        ..Config::default()
    }
}

async fn serve(config: Config, cluster: &LocalCluster) -> ExitCode {
    let proxy = match Proxy::bind(config) {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let port = match proxy.local_addr() {
        Ok(addr) => addr.port(),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "PostgreSQL nodes:");
    for node in cluster.nodes() {
        let _ = writeln!(out, "  {:<9} {}", node.name, node.addr());
    }
    let _ = writeln!(
        out,
        "Connect through switchyard (session pooling, writes to the primary):"
    );
    let _ = writeln!(
        out,
        "postgres://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{port}/{DEMO_DB}"
    );
    let _ = writeln!(
        out,
        "e.g.  psql 'postgres://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{port}/{DEMO_DB}'"
    );
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    let _ = out.flush();
    drop(out);
    proxy.run(termination_signal()).await;
    ExitCode::SUCCESS
}
