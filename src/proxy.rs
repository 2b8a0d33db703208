//! The running proxy: shared state, startup and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::clients::Clients;
use crate::admin::state::{Control, Pause, Readiness};
use crate::admin::topology::TopologyView;
use crate::config::Config;
use crate::listener::limits::ClientLimits;
use crate::listener::{accept_loop, cancel::CancelRegistry};
use crate::metrics::{Metrics, MetricsError};
use crate::peers::Peers;
use crate::pool::Pools;
use crate::router::access::WriteFunctions;
use crate::session::transaction::Catalogs;
use crate::session::transaction::pins::PinCounters;
use crate::session::{Credentials, Passthrough};
use crate::tls::{Acceptor, Connector, TlsError, TlsFiles};
use crate::topology::{LearnedWrites, Snapshot, Topology};

/// The configuration in force and what is derived from it, swapped as a whole.
#[derive(Debug)]
pub struct Settings {
    /// The validated configuration.
    pub config: Config,
    /// Users' SCRAM verifiers and passwords.
    pub credentials: Credentials,
    /// Functions the classifier treats as writes (built-ins plus
    /// `routing.write_functions`).
    pub write_functions: WriteFunctions,
    /// When this configuration was loaded.
    pub loaded_at: SystemTime,
    /// Client-facing TLS, when `[tls]` names a certificate.
    pub client_tls: Option<Acceptor>,
    /// TLS to the nodes (`[server_tls]`).
    pub server_tls: Connector,
    /// Auth passthrough, when `auth.user` is set.
    pub passthrough: Option<Passthrough>,
}

impl Settings {
    /// Derives everything the sessions need from a validated `config`:
    /// verifiers, the classifier's write functions, and the TLS material
    /// (read from disk now, so a bad file stops the start or the reload).
    pub fn new(config: Config) -> Result<Self, TlsError> {
        let credentials = Credentials::from_config(&config);
        let client_tls = TlsFiles::from_config(&config.tls)
            .map(Acceptor::load)
            .transpose()?;
        let server_tls = Connector::from_config(&config.server_tls)?;
        let passthrough = Passthrough::from_config(&config, &server_tls);
        Ok(Self {
            credentials,
            write_functions: WriteFunctions::new(&config.routing.write_functions),
            config,
            loaded_at: SystemTime::now(),
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
    /// The other pods, for cancel forwarding and the connection budget.
    pub peers: Peers,
    /// Server connection pools (transaction pooling).
    pub pools: Pools,
    /// Pins by reason.
    pub pins: PinCounters,
    /// What is known about each pool's statements and greetings.
    pub catalogs: Catalogs,
    /// The verified cluster topology, published by the monitor.
    pub topology: Arc<Topology>,
    /// Statements a replica refused as writing; routed to the primary since.
    pub learned_writes: LearnedWrites,
    /// Every Prometheus collector.
    pub metrics: Arc<Metrics>,
    /// Logged-in clients (SHOW CLIENTS, client gauges).
    pub clients: Arc<Clients>,
    /// What `/readyz` answers.
    pub readiness: Readiness,
    /// PAUSE/RESUME of new transactions.
    pub pause: Pause,
    /// SHOW STATS' averages over the last stats period.
    pub averages: crate::admin::averages::PeriodAverages,
    /// Requests from the admin console (SHUTDOWN).
    pub control: Control,
    /// The configuration file, re-read by reloads; `None` when the proxy
    /// was built from a `Config` value alone.
    pub config_path: Option<PathBuf>,
    /// Connected clients, against the connection limits.
    pub limits: Arc<ClientLimits>,
}

impl Shared {
    /// The topology as `/topology`, SHOW TOPOLOGY and SHOW LAG report it:
    /// the monitor's latest snapshot.
    pub fn topology_view(&self) -> TopologyView {
        let settings = self.settings.load();
        TopologyView::from_snapshot(&self.topology.snapshot(), &settings.config)
    }
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
    /// The metrics could not be set up.
    #[error("{0}")]
    Metrics(#[from] MetricsError),
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
    admin: std::net::TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds `server.listen` once per worker thread (SO_REUSEPORT, so the
    /// kernel spreads new clients across the workers) and derives
    /// credentials from `config`.
    pub fn bind(config: Config) -> Result<Self, ProxyError> {
        Self::bind_file(config, None)
    }

    /// [`Proxy::bind`] for a configuration read from `path`, which reloads
    /// (SIGHUP, RELOAD, a change to the file) read again.
    pub fn bind_file(config: Config, path: Option<PathBuf>) -> Result<Self, ProxyError> {
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
        let admin = bind_admin(&config.server.admin_listen)?;
        let metrics = Arc::new(Metrics::new()?);
        let topology = Arc::new(Topology::new(Snapshot::initial(Vec::new())));
        // Fixed for the process's life: keys handed out carry it.
        let own_peer_id = config.peers.own_id();
        let settings = Settings::new(config)?;
        let pools = Pools::with_parts(settings.server_tls.clone(), Arc::clone(&metrics));
        let shared = Arc::new(Shared {
            settings: ArcSwap::from_pointee(settings),
            cancels: Arc::new(CancelRegistry::for_peer(own_peer_id)),
            peers: Peers::new(own_peer_id),
            pools,
            pins: PinCounters::default(),
            catalogs: Catalogs::default(),
            topology,
            learned_writes: LearnedWrites::default(),
            metrics,
            clients: Arc::default(),
            readiness: Readiness::default(),
            pause: Pause::default(),
            averages: Default::default(),
            control: Control::default(),
            config_path: path,
            limits: Arc::default(),
        });
        Ok(Self {
            listeners,
            admin,
            shared,
        })
    }

    /// The address of the HTTP admin server.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The state sessions share (metrics, pools, readiness).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
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
        let claims = crate::topology::watch::spawn(
            &self.shared.settings.load().config,
            shutdown.hard_stop.clone(),
        );
        let monitor = tokio::spawn(crate::topology::monitor::run(
            Arc::clone(&self.shared),
            claims,
            shutdown.hard_stop.clone(),
        ));
        let admin_stop = CancellationToken::new();
        self.start_admin(&admin_stop);
        tokio::spawn(crate::admin::averages::run(
            Arc::clone(&self.shared),
            admin_stop.clone(),
        ));
        // Runs until the very end: cancels are forwarded during the drain too.
        tokio::spawn(crate::peers::discovery::run(
            Arc::clone(&self.shared),
            admin_stop.clone(),
        ));
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
        tokio::select! {
            () = stop => {}
            () = self.shared.control.shutdown.cancelled() => {}
        }
        // Not ready at once, so load balancers stop sending new clients;
        // they are still served for the grace period while that spreads.
        self.shared.readiness.set_draining();
        let server = self.shared.settings.load().config.server.clone();
        let grace = server.shutdown_grace.min(server.shutdown_timeout);
        let timeout = server.shutdown_timeout - grace;
        tracing::info!(
            ?grace,
            ?timeout,
            "shutting down: not ready; draining after the grace period"
        );
        tokio::time::sleep(grace).await;
        tracing::info!("draining: new clients refused, sessions close at their next idle point");
        shutdown.draining.cancel();
        // Held transactions run (and end) rather than wait forever.
        self.shared.pause.resume();
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
        monitor.abort();
        admin_stop.cancel();
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

impl Proxy {
    /// Starts the HTTP admin server, the SIGHUP handler and the config
    /// file watch on the current (control) runtime, until `stop` fires.
    fn start_admin(&self, stop: &CancellationToken) {
        // Ready for traffic once the monitor publishes its first snapshot.
        match self.admin.try_clone().and_then(TcpListener::from_std) {
            Ok(listener) => {
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "admin HTTP listening");
                }
                let shared = Arc::clone(&self.shared);
                tokio::spawn(crate::admin::http::serve(listener, shared, stop.clone()));
            }
            Err(error) => tracing::error!(%error, "cannot serve the admin HTTP port"),
        }
        tokio::spawn(crate::admin::reload::on_sighup(
            Arc::clone(&self.shared),
            stop.clone(),
        ));
        crate::admin::watch::spawn(Arc::clone(&self.shared), stop.clone());
    }
}

fn bind_admin(addr: &str) -> Result<std::net::TcpListener, ProxyError> {
    let bind_error = |source| ProxyError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
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
        // A second handle on the socket keeps the port open after the
        // accept loop ends, to refuse new clients with 57P03 while draining.
        let kept = self.listener.try_clone();
        runtime.block_on(async move {
            match TcpListener::from_std(self.listener) {
                Ok(listener) => {
                    self.shared.readiness.set_listening(true);
                    let shared = Arc::clone(&self.shared);
                    accept_loop(listener, shared, self.shutdown, self.sessions.clone()).await;
                }
                Err(error) => tracing::error!(%error, "cannot register a listener"),
            }
            // Keep this thread's sessions running until every session is done.
            match kept {
                Ok(kept) => {
                    let done = self.sessions.wait();
                    crate::admin::drain::refuse_new_clients(kept, self.shared, done).await;
                }
                Err(_) => self.sessions.wait().await,
            }
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
