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
use crate::listener::limits::ClientLimits;
use crate::listener::{accept_loop, cancel::CancelRegistry};
use crate::pool::Pools;
use crate::session::transaction::Catalogs;
use crate::session::transaction::pins::PinCounters;
use crate::session::{Credentials, Passthrough};
use crate::tls::{Acceptor, Connector, TlsError, TlsFiles};

/// The configuration in force and what is derived from it, swapped as a whole.
#[derive(Debug)]
pub struct Settings {
    /// The validated configuration.
    pub config: Config,
    /// Users' SCRAM verifiers and passwords.
    pub credentials: Credentials,
    /// Client-facing TLS, when `[tls]` names a certificate.
    pub client_tls: Option<Acceptor>,
    /// TLS to the nodes (`[server_tls]`).
    pub server_tls: Connector,
    /// Auth passthrough, when `auth.user` is set.
    pub passthrough: Option<Passthrough>,
}

impl Settings {
    /// Derives everything from `config`: verifiers, and the TLS material
    /// (read from disk now, so a bad file stops the start).
    pub fn from_config(config: Config) -> Result<Self, TlsError> {
        let credentials = Credentials::from_config(&config);
        let client_tls = TlsFiles::from_config(&config.tls)
            .map(Acceptor::load)
            .transpose()?;
        let server_tls = Connector::from_config(&config.server_tls)?;
        let passthrough = Passthrough::from_config(&config, &server_tls);
        Ok(Self {
            config,
            credentials,
            client_tls,
            server_tls,
            passthrough,
        })
    }
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
    /// Connected clients, against the connection limits.
    pub limits: Arc<ClientLimits>,
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
    /// A TLS certificate, key or CA file cannot be used.
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// A proxy bound to its port, ready to run.
#[derive(Debug)]
pub struct Proxy {
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds `server.listen` once per worker thread (SO_REUSEPORT, so the
    /// kernel spreads new clients across the workers) and derives
    /// credentials from `config`.
    pub fn bind(config: Config) -> Result<Self, ProxyError> {
        let addr = config.server.listen.clone();
        let bind_error = |source| ProxyError::Bind {
            addr: addr.clone(),
            source,
        };
        let requested: SocketAddr = addr
            .parse()
            .map_err(|_| bind_error(std::io::Error::other("not an ip:port address")))?;
        let workers = worker_count(config.server.worker_threads);
        let first = reuse_port_listener(requested).map_err(bind_error)?;
        // Port 0 resolves on the first bind; the others share that port.
        let resolved = first.local_addr().map_err(bind_error)?;
        let mut listeners = vec![first];
        for _ in 1..workers {
            listeners.push(reuse_port_listener(resolved).map_err(bind_error)?);
        }
        let settings = Settings::from_config(config)?;
        let pools = Pools::with_tls(settings.server_tls.clone());
        let shared = Arc::new(Shared {
            settings: ArcSwap::from_pointee(settings),
            cancels: Arc::new(CancelRegistry::default()),
            pools,
            pins: PinCounters::default(),
            catalogs: Catalogs::default(),
            limits: Arc::default(),
        });
        Ok(Self { listeners, shared })
    }

    /// The pool mode in force.
    pub fn pool_mode(&self) -> crate::config::PoolMode {
        self.shared.settings.load().config.server.pool_mode
    }

    /// The address clients connect to (useful when `listen` used port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners[0].local_addr()
    }

    /// Serves clients until `stop` completes, then drains: no new clients,
    /// idle sessions close at once, busy ones at their next idle point, and
    /// whatever remains after `server.shutdown_timeout` is closed.
    ///
    /// Each worker thread runs its own single-threaded runtime with its own
    /// listener: a session lives on one thread for its life, so the relay
    /// never pays for cross-thread wake-ups or work stealing.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let shutdown = Shutdown::default();
        let sessions = TaskTracker::new();
        let timeout = self.shared.settings.load().config.server.shutdown_timeout;
        let mut workers = Vec::new();
        for (index, listener) in self.listeners.into_iter().enumerate() {
            let worker = Worker {
                listener,
                shared: Arc::clone(&self.shared),
                shutdown: shutdown.clone(),
                sessions: sessions.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("switchyard-{index}"))
                .spawn(move || worker.run())
            {
                Ok(handle) => workers.push(handle),
                Err(error) => tracing::error!(%error, "cannot start a worker thread"),
            }
        }
        stop.await;
        tracing::info!(timeout = ?timeout, "shutting down");
        shutdown.draining.cancel();
        // Accept loops see `draining` before their sessions can finish, so
        // closing the tracker now cannot miss a session.
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
        for worker in workers {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
        tracing::info!("shutdown complete");
    }
}

/// One worker thread's share of the proxy.
struct Worker {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    sessions: TaskTracker,
}

impl Worker {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start a worker runtime");
                return;
            }
        };
        runtime.block_on(async move {
            match TcpListener::from_std(self.listener) {
                Ok(listener) => {
                    accept_loop(listener, self.shared, self.shutdown, self.sessions.clone()).await;
                }
                Err(error) => tracing::error!(%error, "cannot register a listener"),
            }
            // Keep this thread's sessions running until every session is done.
            self.sessions.wait().await;
        });
    }
}

fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
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

/// The small runtime that runs the control side (signals, shutdown) while
/// worker threads serve clients.
pub fn control_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
