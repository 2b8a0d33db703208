//! `switchyard demo`: a local primary and two streaming replicas from the
//! PostgreSQL binaries on this machine, with the proxy in front, until
//! Ctrl-C; with `--failover`, a failover drill through it instead.

mod failover;

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;

use crate::config::Config;
use crate::proxy::{Proxy, termination_signal};
use crate::testcluster::{ClusterSpec, LocalCluster};

/// The demo's application user, password and database.
pub const DEMO_USER: &str = "app";
const DEMO_PASSWORD: &str = "app-secret";
const DEMO_DB: &str = "appdb";

/// Runs the demo until SIGINT/SIGTERM (or, with `failover`, through a
/// failover drill), then removes the cluster.
pub fn run(failover: bool) -> ExitCode {
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
    let config = match demo_config(&cluster, failover) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = if failover {
        drill(config, &cluster)
    } else {
        match crate::proxy::control_runtime() {
            Ok(runtime) => runtime.block_on(serve(config, &cluster)),
            Err(error) => {
                eprintln!("error: cannot start the runtime: {error}");
                ExitCode::FAILURE
            }
        }
    };
    drop(cluster);
    println!("switchyard demo: stopped; the cluster is removed.");
    code
}

fn demo_config(
    cluster: &LocalCluster,
    failover: bool,
) -> Result<Config, crate::config::ConfigError> {
    // The documented port when it is free, else any free port.
    let listen = if TcpListener::bind("127.0.0.1:6432").is_ok() {
        "127.0.0.1:6432"
    } else {
        "127.0.0.1:0"
    };
    let admin = if TcpListener::bind("127.0.0.1:9930").is_ok() {
        "127.0.0.1:9930"
    } else {
        "127.0.0.1:0"
    };
    let nodes: Vec<String> = cluster
        .nodes()
        .map(|n| format!("\"{}\"", n.addr()))
        .collect();
    // The drill promotes a replica by hand, so roles come from the probes.
    let roles = if failover {
        "topology = \"probe\"\nprobe_interval = \"100ms\"\nprobe_timeout = \"500ms\"".to_owned()
    } else {
        format!("primary = \"{}\"", cluster.primary().addr())
    };
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\npool_mode = \"transaction\"\n\n\
         [cluster]\nnodes = [{}]\n{roles}\n\n\
         [[users]]\nname = \"{DEMO_USER}\"\npassword = \"{DEMO_PASSWORD}\"\n",
        nodes.join(", "),
    );
    // SWITCHYARD_* variables apply as for a config file (e.g.
    // SWITCHYARD_SERVER_POOL_MODE=transaction).
    Config::from_toml(&text, std::path::Path::new("demo"), std::env::vars())
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
    let mode = match proxy.pool_mode() {
        crate::config::PoolMode::Session => "session",
        crate::config::PoolMode::Transaction => "transaction",
    };
    let _ = writeln!(
        out,
        "Connect through switchyard ({mode} pooling; writes to the primary, reads spread over the replicas in transaction mode):"
    );
    let _ = writeln!(
        out,
        "postgres://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{port}/{DEMO_DB}"
    );
    let _ = writeln!(
        out,
        "e.g.  psql 'postgres://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{port}/{DEMO_DB}'"
    );
    if let Ok(admin) = proxy.admin_addr() {
        let _ = writeln!(
            out,
            "Metrics: http://{admin}/metrics (also /healthz /readyz /topology)"
        );
    }
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    let _ = out.flush();
    drop(out);
    proxy.run(termination_signal()).await;
    ExitCode::SUCCESS
}

/// The failover drill: the proxy serves on its own thread while the drill
/// stops the primary and promotes a replica; exits non-zero unless every
/// acknowledged write survived and no client was dropped.
fn drill(config: Config, cluster: &LocalCluster) -> ExitCode {
    let proxy = match Proxy::bind(config) {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match proxy.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match crate::proxy::control_runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::spawn(move || {
        runtime.block_on(proxy.run(async {
            let _ = stop_rx.await;
        }));
    });
    println!("switchyard listens on {addr}; failover drill:");
    let login = failover::Login {
        user: DEMO_USER,
        password: DEMO_PASSWORD,
        database: DEMO_DB,
    };
    let code = match failover::run(addr, cluster, &login) {
        Ok(report) => {
            failover::print(&report);
            if report.kept_its_promise() {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: the clients saw a broken promise (see above)");
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: the drill failed: {error}");
            ExitCode::FAILURE
        }
    };
    let _ = stop_tx.send(());
    let _ = serving.join();
    code
}
