//! The running proxy: shared state, startup and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::listener::{accept_loop, cancel::CancelRegistry};
use crate::pool::Pools;
use crate::session::Credentials;
use crate::session::transaction::Catalogs;
use crate::session::transaction::pins::PinCounters;

/// The configuration in force and what is derived from it, swapped as a whole.
#[derive(Debug)]
pub struct Settings {
    /// The validated configuration.
    pub config: Config,
    /// Users' SCRAM verifiers and passwords.
    pub credentials: Credentials,
}

/// State every session reads.
#[derive(Debug)]
pub struct Shared {
    /// Current settings; a session loads them once when it starts.
    pub settings: ArcSwap<Settings>,
    /// Cancel keys of live sessions.
    pub cancels: Arc<CancelRegistry>,
    /// Server connection pools (transaction pooling).
    pub pools: Pools,
    /// Pins by reason.
    pub pins: PinCounters,
    /// What is known about each pool's statements and greetings.
    pub catalogs: Catalogs,
}

/// The two stages of shutdown, observed by the listener and every session.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop accepting; sessions close at their next idle point.
    pub draining: CancellationToken,
    /// `shutdown_timeout` has passed: sessions close now.
    pub hard_stop: CancellationToken,
}

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// The client listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
}

/// A proxy bound to its port, ready to run.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds `server.listen` and derives credentials from `config`.
    pub async fn bind(config: Config) -> Result<Self, ProxyError> {
        let addr = config.server.listen.clone();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let credentials = Credentials::from_config(&config);
        let shared = Arc::new(Shared {
            settings: ArcSwap::from_pointee(Settings {
                config,
                credentials,
            }),
            cancels: Arc::new(CancelRegistry::default()),
            pools: Pools::default(),
            pins: PinCounters::default(),
            catalogs: Catalogs::default(),
        });
        Ok(Self { listener, shared })
    }

    /// The address clients connect to (useful when `listen` used port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves clients until `stop` completes, then drains: no new clients,
    /// idle sessions close at once, busy ones at their next idle point, and
    /// whatever remains after `server.shutdown_timeout` is closed.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let shutdown = Shutdown::default();
        let sessions = TaskTracker::new();
        let timeout = self.shared.settings.load().config.server.shutdown_timeout;
        let acceptor = tokio::spawn(accept_loop(
            self.listener,
            Arc::clone(&self.shared),
            shutdown.clone(),
            sessions.clone(),
        ));
        stop.await;
        tracing::info!(timeout = ?timeout, "shutting down");
        shutdown.draining.cancel();
        let _ = acceptor.await;
        sessions.close();
        if tokio::time::timeout(timeout, sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = sessions.len(),
                "shutdown timeout reached; closing sessions"
            );
            shutdown.hard_stop.cancel();
            sessions.wait().await;
        }
        tracing::info!("shutdown complete");
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The tokio runtime the proxy runs on: `worker_threads` threads, or one
/// per core when 0.
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder.enable_all().build()
}
