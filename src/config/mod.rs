//! Configuration: the TOML file, `SWITCHYARD_*` overrides, defaults and
//! validation. Every key is documented in `config/switchyard.toml` and README.md.

mod env;
mod error;
mod peers;
mod routing;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use env::apply_overrides;
pub use error::ConfigError;
pub use peers::{MAX_SESSIONS_WITH_PEERS, PeersConfig, StaticPeer, derive_id};
pub use routing::{Consistency, DatabaseConfig, Route, RoutingConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client-facing settings.
    pub server: ServerConfig,
    /// The PostgreSQL nodes and how their roles are learnt.
    pub cluster: ClusterConfig,
    /// Patroni control plane (topology = "patroni").
    pub patroni: PatroniConfig,
    /// CloudNativePG control plane (topology = "kubernetes").
    pub kubernetes: KubernetesConfig,
    /// Server connection pools (transaction pooling).
    pub pool: PoolConfig,
    /// Client-facing TLS.
    pub tls: TlsConfig,
    /// Read/write routing (transaction mode).
    pub routing: RoutingConfig,
    /// Per-database routing policy.
    pub databases: Vec<DatabaseConfig>,
    /// The admin console.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// TLS to the PostgreSQL nodes.
    pub server_tls: ServerTlsConfig,
    /// Auth passthrough: verifiers of users not in `[[users]]`, fetched from the primary.
    pub auth: AuthQueryConfig,
    /// The other switchyard pods (cancel forwarding, shared connection budget).
    pub peers: PeersConfig,
    /// Users clients may log in as.
    pub users: Vec<UserConfig>,
}

/// `[log]`: how the proxy logs (read at start).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `switchyard=debug`; the
    /// `SWITCHYARD_LOG` environment variable takes precedence.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// `[admin]`: who may use the admin console, and its statistics.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Users (each also listed in `[[users]]`, which authenticates them)
    /// who may connect to the virtual database `switchyard` or `pgbouncer`.
    pub users: Vec<String>,
    /// The period `SHOW STATS`' `avg_*` columns average over (PgBouncer's
    /// `stats_period`).
    #[serde(with = "humantime_serde")]
    pub stats_period: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            stats_period: Duration::from_secs(60),
        }
    }
}

/// `[server]`: the client-facing side of the proxy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address clients connect to.
    pub listen: String,
    /// Address of the HTTP admin server (/metrics, /healthz, /readyz, /topology).
    pub admin_listen: String,
    /// How server connections are shared between clients.
    pub pool_mode: PoolMode,
    /// Largest protocol message accepted in either direction, in bytes.
    pub max_message_size: usize,
    /// Time a new client has to send its startup packet and authenticate.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Time allowed to open and log in a server connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time sessions get to finish after SIGTERM/SIGINT before they are closed.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// After SIGTERM: time new clients are still accepted (while `/readyz`
    /// already says not ready) before they are refused with 57P03. Part of
    /// `shutdown_timeout`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Threads serving clients; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Most client connections open at once (0: no limit); beyond it new
    /// clients get 53300 at once.
    pub max_client_connections: usize,
    /// A client idle between transactions longer than this is closed with
    /// FATAL 57P05 (zero: never).
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:6432".into(),
            admin_listen: "0.0.0.0:9930".into(),
            pool_mode: PoolMode::Session,
            max_message_size: 256 * 1024 * 1024,
            startup_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            worker_threads: 0,
            max_client_connections: 10_000,
            client_idle_timeout: Duration::ZERO,
        }
    }
}

/// `[pool]`: per (node, database, user) server connection pools, used when
/// `server.pool_mode = "transaction"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Connections each pool keeps open even when idle.
    pub min_size: usize,
    /// Most connections a pool opens.
    pub max_size: usize,
    /// Longest a transaction waits for a connection before failing with 53300.
    #[serde(with = "humantime_serde")]
    pub checkout_timeout: Duration,
    /// Idle connections beyond `min_size` are closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections are closed once this old (at their next checkin).
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// A connection idle longer than this is checked with a round trip before use.
    #[serde(with = "humantime_serde")]
    pub health_check_after: Duration,
    /// Server connections all the peers together may open to one node (0:
    /// no budget); each live peer gets an equal share.
    pub max_server_connections_per_node: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_size: 0,
            max_size: 20,
            checkout_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            health_check_after: Duration::from_secs(30),
            max_server_connections_per_node: 0,
        }
    }
}

/// `server.pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A client keeps one server connection for its whole session.
    Session,
    /// A client borrows a server connection per transaction.
    Transaction,
}

/// `[cluster]`: the PostgreSQL nodes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Every node's `host:port`.
    pub nodes: Vec<String>,
    /// Where roles come from.
    pub topology: TopologySource,
    /// The writable node, for topology = "static".
    pub primary: Option<String>,
    /// Relative read share per node (`"host:port" = weight`), default 1.
    pub weights: std::collections::BTreeMap<String, u32>,
    /// How often every node is probed (role, timeline, LSNs, lag).
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// A probe (connect or query) slower than this counts as a failure.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Role the probes log in as; default: the first `[[users]]` entry
    /// with a password.
    pub monitor_user: Option<String>,
    /// Its password; default: that user's password.
    pub monitor_password: Option<String>,
    /// Database the probes connect to.
    pub monitor_database: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            topology: TopologySource::Static,
            primary: None,
            weights: Default::default(),
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(1),
            monitor_user: None,
            monitor_password: None,
            monitor_database: "postgres".into(),
        }
    }
}

/// `cluster.topology`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TopologySource {
    /// Roles as written in this file.
    #[default]
    Static,
    /// Roles from polling every node.
    Probe,
    /// Roles from Patroni's REST API.
    Patroni,
    /// Roles from CloudNativePG's Kubernetes objects.
    Kubernetes,
}

/// `[patroni]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatroniConfig {
    /// REST API base URLs of the Patroni members.
    pub urls: Vec<String>,
    /// Time between two `GET /cluster` polls.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Time one `GET /cluster` may take (connect included) before the next
    /// member's API is tried.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for PatroniConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
        }
    }
}

/// `[kubernetes]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Namespace of the CNPG Cluster.
    pub namespace: String,
    /// Name of the CNPG Cluster.
    pub cluster: String,
    /// PostgreSQL port of the instance Pods (the member address is
    /// `podIP:port`).
    pub port: u16,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            cluster: String::new(),
            port: 5432,
        }
    }
}

/// `[tls]`: client-facing TLS.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Whether clients may or must use TLS.
    pub mode: TlsMode,
    /// PEM certificate chain.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
    /// PEM CA certificates; when set, TLS clients must present a
    /// certificate that chains to one of them (mTLS).
    pub client_ca: Option<String>,
    /// Which users a client certificate may log in as.
    pub client_cert_user: ClientCertUser,
    /// Certificate name → users it may log in as besides its own name.
    pub client_cert_map: std::collections::BTreeMap<String, Vec<String>>,
}

/// `tls.client_cert_user`: how a client certificate's names limit the
/// users it may log in as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCertUser {
    /// Any user (the certificate only has to chain to `client_ca`).
    #[default]
    Off,
    /// The subject's commonName must be the user (PostgreSQL's
    /// `clientcert=verify-full`).
    Cn,
    /// The commonName or a subjectAltName DNS name or email address.
    CnOrSan,
}

impl ClientCertUser {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Cn => "cn",
            Self::CnOrSan => "cn-or-san",
        }
    }
}

/// `[server_tls]`: TLS from the proxy to the PostgreSQL nodes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// Whether and how strictly connections to the nodes are encrypted.
    pub mode: ServerTlsMode,
    /// PEM CA certificates node certificates must chain to (verify-ca, verify-full).
    pub ca_file: Option<String>,
}

/// `server_tls.mode`, with libpq's sslmode meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS when the node offers it, else plain; certificate not checked.
    Prefer,
    /// TLS or no connection; certificate not checked.
    Require,
    /// TLS with a certificate that chains to `ca_file`.
    VerifyCa,
    /// As verify-ca, and the certificate names the node's host.
    VerifyFull,
}

impl ServerTlsMode {
    /// True for the modes that check the node's certificate.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

/// `[auth]`: auth passthrough. Users not listed in `[[users]]` are looked
/// up on the primary by `query`, run as `user`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthQueryConfig {
    /// The role the proxy logs in as to run `query`; passthrough is off when unset.
    pub user: Option<String>,
    /// That role's password (or its SCRAM verifier copied from pg_authid).
    pub password: Option<String>,
    /// Returns `(name, verifier)` for the user in `$1`.
    pub query: String,
    /// Database `query` runs in.
    pub database: String,
    /// How long a fetched verifier (or its absence) is trusted.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for AuthQueryConfig {
    fn default() -> Self {
        Self {
            user: None,
            password: None,
            query: "SELECT usename, passwd FROM pg_shadow WHERE usename = $1".into(),
            database: "postgres".into(),
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// `tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// SSLRequest is answered 'N'.
    #[default]
    Disable,
    /// TLS when the client asks for it.
    Allow,
    /// Plaintext clients are refused.
    Require,
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The PostgreSQL role name.
    pub name: String,
    /// Password for client authentication and for logging in to the nodes.
    pub password: Option<String>,
    /// How the proxy authenticates this user's clients.
    #[serde(default)]
    pub auth: AuthMethod,
    /// Overrides the database's and `routing.route` for this user.
    pub route: Option<Route>,
    /// Overrides the database's and `routing.consistency` for this user.
    pub consistency: Option<Consistency>,
    /// Most client connections this user may have open at once.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// `users[].auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 against `password`.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// No client authentication.
    #[serde(rename = "trust")]
    Trust,
    /// md5 against `password` (plaintext, or the stored `md5…` hash).
    #[serde(rename = "md5")]
    Md5,
}

impl Config {
    /// Reads `path`, applies `SWITCHYARD_*` overrides from the process
    /// environment, and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, std::env::vars())
    }

    /// Parses `text` (named `path` in errors), applies overrides from `vars`, validates.
    pub fn from_toml(
        text: &str,
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        // Parsed from text first so that errors carry line numbers.
        let mut config: Config = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        if apply_overrides(&mut table, vars)? > 0 {
            config = table.try_into().map_err(|e: toml::de::Error| {
                parse_error(format!("after SWITCHYARD_* overrides: {e}"))
            })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: addresses parse, the primary is a node,
    /// user names are unique, and the chosen features exist in this build.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("server.listen", &self.server.listen)?;
        parse_addr("server.admin_listen", &self.server.admin_listen)?;
        if self.pool.max_size == 0 {
            return Err(ConfigError::invalid("pool.max_size", "must be at least 1"));
        }
        if self.pool.min_size > self.pool.max_size {
            return Err(ConfigError::invalid(
                "pool.min_size",
                "must not exceed pool.max_size",
            ));
        }
        if self.server.max_message_size < 8192 {
            return Err(ConfigError::invalid(
                "server.max_message_size",
                "must be at least 8192 bytes",
            ));
        }
        self.validate_users()?;
        self.validate_cluster()?;
        self.validate_tls()?;
        self.validate_auth_query()?;
        self.peers.validate(self.server.max_client_connections)?;
        self.validate_admin()
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        if self.admin.stats_period < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "admin.stats_period",
                "must be at least 1s",
            ));
        }
        for (index, name) in self.admin.users.iter().enumerate() {
            if self.user(name).is_none() {
                return Err(ConfigError::invalid(
                    format!("admin.users[{index}]"),
                    format!("{name:?} is not listed in [[users]]"),
                ));
            }
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        for node in &self.cluster.nodes {
            check_host_port("cluster.nodes", node)?;
        }
        let discovered = matches!(
            self.cluster.topology,
            TopologySource::Patroni | TopologySource::Kubernetes
        );
        if self.cluster.nodes.is_empty() && !discovered {
            return Err(ConfigError::invalid(
                "cluster.nodes",
                "list at least one host:port",
            ));
        }
        for node in self.cluster.weights.keys() {
            check_host_port("cluster.weights", node)?;
        }
        if self.cluster.probe_interval.is_zero() {
            return Err(ConfigError::invalid(
                "cluster.probe_interval",
                "must be more than zero",
            ));
        }
        if self.monitor_credentials().is_none() {
            return Err(ConfigError::invalid(
                "cluster.monitor_user",
                "set it (and monitor_password), or give a [[users]] entry a password",
            ));
        }
        match self.cluster.topology {
            TopologySource::Static => {}
            TopologySource::Probe => return Ok(()),
            TopologySource::Patroni if self.patroni.urls.is_empty() => {
                return Err(ConfigError::invalid(
                    "patroni.urls",
                    "list the Patroni REST API of at least one member (topology = \"patroni\")",
                ));
            }
            TopologySource::Patroni => return Ok(()),
            TopologySource::Kubernetes if !cfg!(feature = "kubernetes") => {
                return Err(ConfigError::invalid(
                    "cluster.topology",
                    "this build has no Kubernetes support (cargo feature \"kubernetes\")",
                ));
            }
            TopologySource::Kubernetes if self.kubernetes.cluster.is_empty() => {
                return Err(ConfigError::invalid(
                    "kubernetes.cluster",
                    "name the CloudNativePG Cluster (topology = \"kubernetes\")",
                ));
            }
            TopologySource::Kubernetes => return Ok(()),
        }
        let Some(primary) = &self.cluster.primary else {
            return Err(ConfigError::invalid(
                "cluster.primary",
                "required when cluster.topology = \"static\"",
            ));
        };
        check_host_port("cluster.primary", primary)?;
        if !self.cluster.nodes.contains(primary) {
            return Err(ConfigError::invalid(
                "cluster.primary",
                format!("{primary:?} is not one of cluster.nodes"),
            ));
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let has_cert = self.tls.cert.is_some() && self.tls.key.is_some();
        if self.tls.mode != TlsMode::Disable && !has_cert {
            return Err(ConfigError::invalid(
                "tls.mode",
                "\"allow\" and \"require\" need tls.cert and tls.key",
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::invalid(
                "tls.key",
                "tls.cert and tls.key go together",
            ));
        }
        if self.tls.client_cert_user != ClientCertUser::Off && self.tls.client_ca.is_none() {
            return Err(ConfigError::invalid(
                "tls.client_cert_user",
                "needs tls.client_ca (only certificates chained to it are matched to users)",
            ));
        }
        if !self.tls.client_cert_map.is_empty() && self.tls.client_cert_user == ClientCertUser::Off
        {
            return Err(ConfigError::invalid(
                "tls.client_cert_map",
                "used only with tls.client_cert_user = \"cn\" or \"cn-or-san\"",
            ));
        }
        if self.server_tls.mode.verifies() && self.server_tls.ca_file.is_none() {
            return Err(ConfigError::invalid(
                "server_tls.ca_file",
                "required for server_tls.mode verify-ca and verify-full",
            ));
        }
        Ok(())
    }

    fn validate_auth_query(&self) -> Result<(), ConfigError> {
        if self.auth.user.is_some() && self.auth.password.is_none() {
            return Err(ConfigError::invalid(
                "auth.password",
                "required when auth.user is set",
            ));
        }
        if self.auth.user.is_some() && !self.auth.query.contains("$1") {
            return Err(ConfigError::invalid(
                "auth.query",
                "must take the user name as $1",
            ));
        }
        Ok(())
    }

    fn validate_users(&self) -> Result<(), ConfigError> {
        for (index, user) in self.users.iter().enumerate() {
            let key = format!("users[{index}]");
            if user.name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must not be empty",
                ));
            }
            if self.users[..index].iter().any(|u| u.name == user.name) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("user {:?} is listed twice", user.name),
                ));
            }
            if let Some(password) = &user.password
                && password.starts_with(crate::session::VERIFIER_PREFIX)
                && crate::session::ScramVerifier::parse(password).is_err()
            {
                return Err(ConfigError::invalid(
                    format!("{key}.password"),
                    "starts like a SCRAM verifier but is not one (SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey)",
                ));
            }
            if user.auth == AuthMethod::ScramSha256 && user.password.is_none() {
                return Err(ConfigError::invalid(
                    format!("{key}.password"),
                    "required for auth = \"scram-sha-256\"",
                ));
            }
            if user.auth == AuthMethod::Md5
                && user
                    .password
                    .as_deref()
                    .is_none_or(|p| p.starts_with(crate::session::VERIFIER_PREFIX))
            {
                return Err(ConfigError::invalid(
                    format!("{key}.password"),
                    "auth = \"md5\" needs a plaintext password or a stored md5 hash (md5…)",
                ));
            }
        }
        Ok(())
    }

    /// The user, password and database the topology probes log in with.
    pub fn monitor_credentials(&self) -> Option<(&str, Option<&str>, &str)> {
        let database = self.cluster.monitor_database.as_str();
        if let Some(user) = &self.cluster.monitor_user {
            let password = self
                .cluster
                .monitor_password
                .as_deref()
                .or_else(|| self.user(user).and_then(|u| u.password.as_deref()));
            return Some((user, password, database));
        }
        // A stored SCRAM verifier cannot log in by itself: skip those users.
        let plaintext = self.users.iter().find_map(|u| {
            let password = u.password.as_deref()?;
            (!password.starts_with("SCRAM-SHA-256$")
                && !crate::session::md5::is_stored_hash(password))
            .then_some((u.name.as_str(), Some(password), database))
        });
        plaintext.or_else(|| {
            let auth = &self.auth;
            Some((
                auth.user.as_deref()?,
                Some(auth.password.as_deref()?),
                database,
            ))
        })
    }

    /// The routing policy for `user` on `database`: the user's setting,
    /// else the database's, else `[routing]`'s.
    pub fn policy(&self, user: &str, database: &str) -> (Route, Consistency) {
        let user = self.user(user);
        let database = self.databases.iter().find(|d| d.name == database);
        let route = user
            .and_then(|u| u.route)
            .or_else(|| database.and_then(|d| d.route))
            .unwrap_or(self.routing.route);
        let consistency = user
            .and_then(|u| u.consistency)
            .or_else(|| database.and_then(|d| d.consistency))
            .unwrap_or(self.routing.consistency);
        (route, consistency)
    }

    /// The `[[users]]` entry named `name`.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::invalid(key, format!("{value:?} is not an ip:port address")))
}

fn check_host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let valid = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{value:?} is not a host:port address"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [cluster]
        nodes = ["127.0.0.1:5432"]
        primary = "127.0.0.1:5432"
        [[users]]
        name = "app"
        password = "secret"
    "#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), Vec::new())
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = load(MINIMAL).unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:6432");
        assert_eq!(config.server.admin_listen, "0.0.0.0:9930");
        assert_eq!(config.server.pool_mode, PoolMode::Session);
        assert_eq!(config.server.startup_timeout, Duration::from_secs(10));
        assert_eq!(config.cluster.primary.as_deref(), Some("127.0.0.1:5432"));
        assert_eq!(config.user("app").unwrap().auth, AuthMethod::ScramSha256);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(&format!("{MINIMAL}\n[server]\nlisten_port = 1\n")).unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn primary_outside_nodes_is_refused_naming_the_key() {
        let text = MINIMAL.replace(
            "primary = \"127.0.0.1:5432\"",
            "primary = \"10.0.0.9:5432\"",
        );
        let err = load(&text).unwrap_err();
        assert!(err.to_string().starts_with("cluster.primary"), "{err}");
    }

    #[test]
    fn durations_are_human_readable() {
        let config = load(&format!(
            "[server]\nstartup_timeout = \"1500ms\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(config.server.startup_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn environment_overrides_the_file() {
        let vars = vec![(
            "SWITCHYARD_SERVER_LISTEN".to_owned(),
            "127.0.0.1:7000".to_owned(),
        )];
        let config = Config::from_toml(MINIMAL, Path::new("t"), vars).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:7000");
    }

    #[test]
    fn admin_users_come_from_the_file_or_the_environment_and_must_be_users() {
        let vars = vec![("SWITCHYARD_ADMIN_USERS".to_owned(), "app".to_owned())];
        let config = Config::from_toml(MINIMAL, Path::new("t"), vars).unwrap();
        assert_eq!(config.admin.users, ["app"]);
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(5));
        let err = load(&format!("[admin]\nusers = [\"ops\"]\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().starts_with("admin.users[0]"), "{err}");
    }

    #[test]
    fn scram_user_without_password_is_refused() {
        let text = MINIMAL.replace("password = \"secret\"", "");
        let err = load(&text).unwrap_err();
        assert!(err.to_string().starts_with("users[0].password"), "{err}");
    }

    #[test]
    fn probe_topology_needs_no_primary() {
        let text = MINIMAL.replace("primary = \"127.0.0.1:5432\"", "topology = \"probe\"");
        let config = load(&text).unwrap();
        assert_eq!(config.cluster.topology, TopologySource::Probe);
        assert!(load(&MINIMAL.replace("primary = \"127.0.0.1:5432\"", "")).is_err());
    }

    #[test]
    fn routing_policy_prefers_user_then_database_then_default() {
        let text = format!(
            "{MINIMAL}\n[[users]]\nname = \"rep\"\npassword = \"x\"\nroute = \"replica\"\n\
             [[databases]]\nname = \"reports\"\nroute = \"primary\"\nconsistency = \"read_your_writes\"\n"
        );
        let config = load(&text).unwrap();
        assert_eq!(
            config.policy("app", "appdb"),
            (Route::Auto, Consistency::Eventual)
        );
        assert_eq!(
            config.policy("app", "reports"),
            (Route::Primary, Consistency::ReadYourWrites)
        );
        assert_eq!(
            config.policy("rep", "reports"),
            (Route::Replica, Consistency::ReadYourWrites)
        );
        assert_eq!(
            config.monitor_credentials(),
            Some(("app", Some("secret"), "postgres"))
        );
    }

    #[test]
    fn watcher_keys_have_documented_defaults() {
        let config = load(MINIMAL).unwrap();
        assert_eq!(config.patroni.poll_interval, Duration::from_millis(500));
        assert_eq!(config.patroni.request_timeout, Duration::from_secs(1));
        assert_eq!(config.kubernetes.port, 5432);
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../../config/switchyard.toml");
        load(text).unwrap();
    }

    #[test]
    fn tls_modes_need_a_certificate_and_verify_modes_a_ca() {
        let err = load(&format!("{MINIMAL}\n[tls]\nmode = \"require\"\n")).unwrap_err();
        assert!(err.to_string().starts_with("tls.mode"), "{err}");
        let err = load(&format!(
            "{MINIMAL}\n[server_tls]\nmode = \"verify-full\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().starts_with("server_tls.ca_file"), "{err}");
        let config = load(&format!(
            "{MINIMAL}\n[tls]\nmode = \"allow\"\ncert = \"c\"\nkey = \"k\"\n[server_tls]\nmode = \"verify-ca\"\nca_file = \"ca\"\n"
        ))
        .unwrap();
        assert_eq!(config.tls.mode, TlsMode::Allow);
        assert_eq!(config.server_tls.mode, ServerTlsMode::VerifyCa);
    }

    #[test]
    fn server_tls_section_is_reachable_by_environment() {
        let vars = vec![
            ("SWITCHYARD_SERVER_TLS_MODE".to_owned(), "prefer".to_owned()),
            ("SWITCHYARD_AUTH_CACHE_TTL".to_owned(), "5s".to_owned()),
            (
                "SWITCHYARD_SERVER_MAX_CLIENT_CONNECTIONS".to_owned(),
                "7".to_owned(),
            ),
        ];
        let config = Config::from_toml(MINIMAL, Path::new("t"), vars).unwrap();
        assert_eq!(config.server_tls.mode, ServerTlsMode::Prefer);
        assert_eq!(config.auth.cache_ttl, Duration::from_secs(5));
        assert_eq!(config.server.max_client_connections, 7);
    }

    #[test]
    fn malformed_verifier_password_is_refused_naming_the_user() {
        let text = MINIMAL.replace("password = \"secret\"", "password = \"SCRAM-SHA-256$x\"");
        let err = load(&text).unwrap_err();
        assert!(err.to_string().starts_with("users[0].password"), "{err}");
    }

    #[test]
    fn client_idle_timeout_is_off_by_default_and_takes_durations() {
        assert_eq!(
            load(MINIMAL).unwrap().server.client_idle_timeout,
            Duration::ZERO
        );
        let config = load(&format!(
            "[server]\nclient_idle_timeout = \"5m\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(config.server.client_idle_timeout, Duration::from_secs(300));
        let vars = vec![(
            "SWITCHYARD_SERVER_CLIENT_IDLE_TIMEOUT".to_owned(),
            "30s".to_owned(),
        )];
        let config = Config::from_toml(MINIMAL, Path::new("t"), vars).unwrap();
        assert_eq!(config.server.client_idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn client_cert_user_needs_a_client_ca_and_the_map_needs_a_rule() {
        let tls = "[tls]\nmode = \"require\"\ncert = \"c\"\nkey = \"k\"\n";
        let err = load(&format!("{MINIMAL}\n{tls}client_cert_user = \"cn\"\n")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tls.client_cert_user: needs tls.client_ca"),
            "{err}"
        );
        let err = load(&format!(
            "{MINIMAL}\n{tls}client_ca = \"ca\"\n[tls.client_cert_map]\nbot = [\"app\"]\n"
        ))
        .unwrap_err();
        assert!(err.to_string().starts_with("tls.client_cert_map"), "{err}");
        let config = load(&format!(
            "{MINIMAL}\n{tls}client_ca = \"ca\"\nclient_cert_user = \"cn-or-san\"\n[tls.client_cert_map]\nbot = [\"app\"]\n"
        ))
        .unwrap();
        assert_eq!(config.tls.client_cert_user, ClientCertUser::CnOrSan);
        assert_eq!(config.tls.client_cert_map["bot"], ["app"]);
        let err = load(&format!("{MINIMAL}\n{tls}client_cert_user = \"dn\"\n")).unwrap_err();
        assert!(err.to_string().contains("client_cert_user"), "{err}");
    }

    #[test]
    fn auth_user_needs_a_password() {
        let err = load(&format!("{MINIMAL}\n[auth]\nuser = \"pgbouncer\"\n")).unwrap_err();
        assert!(err.to_string().starts_with("auth.password"), "{err}");
    }
}
