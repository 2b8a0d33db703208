//! A single-node etcd (Debian `etcd-server`) on loopback, the DCS of a
//! [`PatroniCluster`](super::PatroniCluster).

use std::path::Path;
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::{ClusterError, tail};
use super::http;
use super::process::Ctx;

/// How long etcd may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd; killed (SIGKILL: its data is throw-away) on drop.
#[derive(Debug)]
pub struct Etcd {
    /// `127.0.0.1:PORT` of the client API.
    pub client_addr: String,
    log_file: std::path::PathBuf,
    child: Mutex<Option<Child>>,
}

impl Etcd {
    /// Starts etcd with its data under `dir`, on free loopback ports, and
    /// waits until it reports healthy.
    pub(crate) fn start(ctx: &Ctx, dir: &Path) -> Result<Self, ClusterError> {
        ctx.create_dir(dir)?;
        let client = format!("127.0.0.1:{}", super::free_port()?);
        let peer = format!("http://127.0.0.1:{}", super::free_port()?);
        let log_file = dir.join("etcd.log");
        let mut cmd = super::patroni::tool_command(ctx, "etcd", dir);
        cmd.args(["--name", "etcd1", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("etcd1={peer}")])
            // Less fsync work on a shared test machine; data is throw-away.
            .args(["--unsafe-no-fsync", "--log-level", "warn"]);
        let child = super::patroni::spawn_logged(&mut cmd, &log_file)?;
        let etcd = Etcd {
            client_addr: client,
            log_file,
            child: Mutex::new(Some(child)),
        };
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    fn wait_healthy(&self) -> Result<(), ClusterError> {
        let started = Instant::now();
        loop {
            if let Ok((200, body)) = http::get(&self.client_addr, "/health", Duration::from_secs(1))
                && body.contains("true")
            {
                return Ok(());
            }
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || started.elapsed() > START_TIMEOUT {
                return Err(ClusterError::StartFailed {
                    node: "etcd".to_owned(),
                    reason: if exited {
                        "etcd exited".to_owned()
                    } else {
                        format!("not healthy after {START_TIMEOUT:?}")
                    },
                    log_tail: tail(
                        &std::fs::read_to_string(&self.log_file).unwrap_or_default(),
                        20,
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd and reaps it. Idempotent.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
