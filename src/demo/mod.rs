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
    // Held until the demo ends (see documented_ports_lock).
    let ports_lock = documented_ports_lock();
    let config = match demo_config(&cluster, failover, ports_lock.is_some()) {
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
    drop(ports_lock);
    println!("switchyard demo: stopped; the cluster is removed.");
    code
}

/// A lock held for a demo's life while it may use the documented ports
/// (6432 and 9930); `None` when another demo holds it. Without it, two
/// demos started at once both found 6432 free and both bound it (its
/// listeners set SO_REUSEPORT, so clients were split between the two
/// proxies), or one failed to bind 9930 (seen in `tests/demo.rs`, whose
/// two demos run in parallel).
fn documented_ports_lock() -> Option<std::fs::File> {
    exclusive_lock(&std::env::temp_dir().join("switchyard-demo-ports.lock"))
}

/// An exclusive lock on the file at `path` (created if missing), unless
/// another holder has it.
fn exclusive_lock(path: &std::path::Path) -> Option<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

fn demo_config(
    cluster: &LocalCluster,
    failover: bool,
    documented_ports: bool,
) -> Result<Config, crate::config::ConfigError> {
    // The documented port when this demo may take it and it is free, else
    // any free port.
    let free = |addr: &str| documented_ports && TcpListener::bind(addr).is_ok();
    let listen = if free("127.0.0.1:6432") {
        "127.0.0.1:6432"
    } else {
        "127.0.0.1:0"
    };
    let admin = if free("127.0.0.1:9930") {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_demo_at_a_time_holds_the_documented_ports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.lock");
        let first = exclusive_lock(&path).expect("nobody holds it yet");
        assert!(exclusive_lock(&path).is_none(), "a second demo got it too");
        drop(first);
        assert!(exclusive_lock(&path).is_some(), "released with the first");
    }
}
