//! Prometheus metrics: every collector the proxy exports, registered in
//! the proxy's own [`Registry`] and rendered in the text format on
//! `/metrics`.
//!
//! Names follow Prometheus conventions: `switchyard_` prefix, base units
//! (seconds, bytes), `_total` on counters. Labels are bounded: `node`,
//! `role`, `database`, `user`, a state or reason from a fixed set, and a
//! SQLSTATE class; never query text.
//!
//! The hot path pays one atomic add per update: labelled children are
//! resolved once (per pool in [`PoolMetrics`], per node and role in
//! [`RouteMetrics`]) and kept by their owner. Gauges that mirror state
//! kept elsewhere (pool sizes, client counts, pins) are read from their
//! source at scrape time by [`scrape`].

mod error;
mod errors;
mod pool;
pub mod scrape;

use prometheus::{
    Counter, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use error::MetricsError;
pub use errors::ErrorClasses;
pub use pool::{PoolMetrics, PoolTotalsSnapshot, RouteMetrics};

/// Buckets for waits and transaction times, in seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Labels of per-pool series.
const POOL_LABELS: &[&str] = &["node", "database", "user"];
/// Labels of per-route series.
const ROUTE_LABELS: &[&str] = &["node", "role"];

/// Every collector of the proxy. Cheap to share (`Arc<Metrics>` in
/// [`Shared`](crate::proxy::Shared)); all updates are lock-free.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `switchyard_client_connections{state}`: logged-in clients by state
    /// (`active` holds a server connection, `waiting` waits for one,
    /// `idle`), computed at scrape time.
    pub client_connections: IntGaugeVec,
    /// `switchyard_client_logins_total`: clients that logged in.
    pub client_logins: IntCounter,
    /// `switchyard_server_connections{node,database,user,state}`: server
    /// connections by state (`active`, `idle`, `testing`, `opening`), at scrape time.
    pub server_connections: IntGaugeVec,
    /// `switchyard_server_connects_total{node,database,user}`.
    pub server_connects: IntCounterVec,
    /// `switchyard_server_connect_errors_total{node,database,user}`.
    pub server_connect_errors: IntCounterVec,
    /// `switchyard_server_connections_closed_total{node,database,user,reason}`.
    pub server_connections_closed: IntCounterVec,
    /// `switchyard_pool_checkouts_total{node,database,user}`.
    pub checkouts: IntCounterVec,
    /// `switchyard_pool_checkout_timeouts_total{node,database,user}`.
    pub checkout_timeouts: IntCounterVec,
    /// `switchyard_pool_max_size{node,database,user}`: the size limit in force.
    pub pool_max_size: IntGaugeVec,
    /// `switchyard_checkout_wait_seconds{node,database,user}`.
    pub checkout_wait: HistogramVec,
    /// `switchyard_transactions_total{node,role}`.
    pub transactions: IntCounterVec,
    /// `switchyard_queries_total{node,role}`.
    pub queries: IntCounterVec,
    /// `switchyard_transaction_duration_seconds{node,role}`.
    pub transaction_duration: HistogramVec,
    /// `switchyard_client_received_bytes_total`: bytes read from clients.
    pub bytes_received: IntCounter,
    /// `switchyard_client_sent_bytes_total`: bytes written to clients.
    pub bytes_sent: IntCounter,
    /// `switchyard_errors_total{class}`: errors sent to clients, by SQLSTATE class.
    pub errors: IntCounterVec,
    /// The same family's children, for counting without a label lookup.
    pub error_classes: ErrorClasses,
    /// `switchyard_pins_total{reason}`: clients pinned to a server connection.
    pub pins: IntCounterVec,
    /// `switchyard_prepared_statement_cache_hits_total`.
    pub prepared_cache_hits: IntCounter,
    /// `switchyard_prepared_statement_cache_misses_total`.
    pub prepared_cache_misses: IntCounter,
    /// `switchyard_replica_lag_bytes{node}`.
    pub replica_lag_bytes: IntGaugeVec,
    /// `switchyard_replica_lag_seconds{node}`.
    pub replica_lag_seconds: prometheus::GaugeVec,
    /// `switchyard_node_role{node,role}`: 1 for the role a node has now.
    pub node_role: IntGaugeVec,
    /// `switchyard_node_healthy{node}`: 1 healthy, 0 not.
    pub node_healthy: IntGaugeVec,
    /// `switchyard_topology_changes_total`.
    pub topology_changes: IntCounter,
    /// `switchyard_failovers_total`.
    pub failovers: IntCounter,
    /// `switchyard_no_writable_primary_seconds_total`.
    pub no_primary_seconds: Counter,
    /// `switchyard_requests_held`: requests waiting for a writable primary now.
    pub requests_held: IntGauge,
    /// `switchyard_requests_held_total`: requests that had to wait for one.
    pub requests_held_total: IntCounter,
    /// `switchyard_primary_retries_total`.
    pub primary_retries: IntCounter,
    /// `switchyard_read_your_writes_fallbacks_total`.
    pub read_your_writes_fallbacks: IntCounter,
    /// `switchyard_config_reloads_total{result}` (`success`, `failure`).
    pub config_reloads: IntCounterVec,
    /// `switchyard_tls_handshakes_total`.
    pub tls_handshakes: IntCounter,
    /// `switchyard_tls_handshake_failures_total`.
    pub tls_handshake_failures: IntCounter,
    /// `switchyard_auth_failures_total`.
    pub auth_failures: IntCounter,
    /// `switchyard_paused`: 1 while PAUSE holds new transactions.
    pub paused: IntGauge,
    /// `switchyard_cancel_requests_total{outcome}` (`cancelled`,
    /// `forwarded`, `unknown`).
    pub cancel_requests: IntCounterVec,
    /// `switchyard_peers_live`: pods sharing the budget, this one included.
    pub peers_live: IntGauge,
    /// `switchyard_node_server_connections{node}`: server connections this
    /// pod holds to each node, as the connection budget counts them.
    pub node_server_connections: IntGaugeVec,
    /// `switchyard_server_connection_budget`: this pod's share of
    /// `pool.max_server_connections_per_node` (0: no budget).
    pub server_connection_budget: IntGauge,
}

/// Registers `collector` in `registry` and hands it back.
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: Result<C, prometheus::Error>,
) -> Result<C, MetricsError> {
    let collector = collector.map_err(MetricsError::Register)?;
    registry
        .register(Box::new(collector.clone()))
        .map_err(MetricsError::Register)?;
    Ok(collector)
}

fn latency(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
}

impl Metrics {
    /// Every collector, registered in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new_custom(Some("switchyard".into()), None)
            .map_err(MetricsError::Register)?;
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let errors = counter_vec(
            "errors_total",
            "ErrorResponses sent or relayed to clients (the server's and the proxy's own), by SQLSTATE class (first two characters).",
            &["class"],
        )?;
        let build = gauge_vec("build_info", "Version of the running binary.", &["version"])?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let metrics = Self {
            client_connections: gauge_vec(
                "client_connections",
                "Logged-in clients by state: active (holds a server connection), waiting (for one), idle.",
                &["state"],
            )?,
            client_logins: counter("client_logins_total", "Clients that logged in.")?,
            server_connections: gauge_vec(
                "server_connections",
                "Server connections by state: active (in use), idle, testing (health check), opening.",
                &["node", "database", "user", "state"],
            )?,
            server_connects: counter_vec(
                "server_connects_total",
                "Server connections opened.",
                POOL_LABELS,
            )?,
            server_connect_errors: counter_vec(
                "server_connect_errors_total",
                "Attempts to open a server connection that failed.",
                POOL_LABELS,
            )?,
            server_connections_closed: counter_vec(
                "server_connections_closed_total",
                "Pooled server connections closed, by reason (broken, session, idle_timeout, max_lifetime).",
                &["node", "database", "user", "reason"],
            )?,
            checkouts: counter_vec(
                "pool_checkouts_total",
                "Server connections handed out by a pool.",
                POOL_LABELS,
            )?,
            checkout_timeouts: counter_vec(
                "pool_checkout_timeouts_total",
                "Checkouts that failed after pool.checkout_timeout (53300).",
                POOL_LABELS,
            )?,
            pool_max_size: gauge_vec(
                "pool_max_size",
                "pool.max_size in force for the pool.",
                POOL_LABELS,
            )?,
            checkout_wait: register(
                &r,
                HistogramVec::new(
                    latency(
                        "checkout_wait_seconds",
                        "Time a checkout waited for a server connection.",
                    ),
                    POOL_LABELS,
                ),
            )?,
            transactions: counter_vec(
                "transactions_total",
                "Transactions (or pinned stretches) served, by node and its role.",
                ROUTE_LABELS,
            )?,
            queries: counter_vec(
                "queries_total",
                "Queries routed, by node and its role.",
                ROUTE_LABELS,
            )?,
            transaction_duration: register(
                &r,
                HistogramVec::new(
                    latency(
                        "transaction_duration_seconds",
                        "Time from checkout to the end of the transaction, by node and role.",
                    ),
                    ROUTE_LABELS,
                ),
            )?,
            bytes_received: counter("client_received_bytes_total", "Bytes read from clients.")?,
            bytes_sent: counter("client_sent_bytes_total", "Bytes written to clients.")?,
            errors: errors.clone(),
            error_classes: ErrorClasses::new(errors),
            pins: counter_vec(
                "pins_total",
                "Clients pinned to their server connection, by reason.",
                &["reason"],
            )?,
            prepared_cache_hits: counter(
                "prepared_statement_cache_hits_total",
                "Uses (Parse, Bind, Describe) of a client's named prepared statement that found it already parsed on the server connection (transaction pooling).",
            )?,
            prepared_cache_misses: counter(
                "prepared_statement_cache_misses_total",
                "Uses of a client's named prepared statement that made the proxy parse it on the server connection first (transaction pooling).",
            )?,
            replica_lag_bytes: gauge_vec(
                "replica_lag_bytes",
                "Replay lag of a replica behind the primary, in bytes of WAL.",
                &["node"],
            )?,
            replica_lag_seconds: register(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "replica_lag_seconds",
                        "Replay lag of a replica behind the primary, in seconds.",
                    ),
                    &["node"],
                ),
            )?,
            node_role: gauge_vec(
                "node_role",
                "1 for the role a node has now (primary, replica, unknown).",
                ROUTE_LABELS,
            )?,
            node_healthy: gauge_vec(
                "node_healthy",
                "1 when the node answers its health checks.",
                &["node"],
            )?,
            topology_changes: counter(
                "topology_changes_total",
                "Topology snapshots published with a change.",
            )?,
            failovers: counter("failovers_total", "Changes of the writable primary.")?,
            no_primary_seconds: register(
                &r,
                Counter::new(
                    "no_writable_primary_seconds_total",
                    "Time spent without a writable primary.",
                ),
            )?,
            requests_held: register(
                &r,
                IntGauge::new(
                    "requests_held",
                    "Requests waiting for a writable primary now.",
                ),
            )?,
            requests_held_total: counter(
                "requests_held_total",
                "Requests that waited for a writable primary.",
            )?,
            primary_retries: counter("primary_retries_total", "Requests retried on the primary.")?,
            read_your_writes_fallbacks: counter(
                "read_your_writes_fallbacks_total",
                "Reads sent to the primary because no replica had replayed the session's last write.",
            )?,
            config_reloads: counter_vec(
                "config_reloads_total",
                "Configuration reloads, by result (success, failure).",
                &["result"],
            )?,
            tls_handshakes: counter("tls_handshakes_total", "Client TLS handshakes completed.")?,
            tls_handshake_failures: counter(
                "tls_handshake_failures_total",
                "Client TLS handshakes that failed.",
            )?,
            auth_failures: counter(
                "auth_failures_total",
                "Client logins refused: wrong password or unknown user.",
            )?,
            paused: register(
                &r,
                IntGauge::new("paused", "1 while the admin PAUSE holds new transactions."),
            )?,
            cancel_requests: counter_vec(
                "cancel_requests_total",
                "CancelRequests received, by outcome (cancelled, forwarded, unknown).",
                &["outcome"],
            )?,
            peers_live: register(
                &r,
                IntGauge::new(
                    "peers_live",
                    "switchyard pods sharing the connection budget, this one included.",
                ),
            )?,
            node_server_connections: gauge_vec(
                "node_server_connections",
                "Server connections this pod has open to each node, over all pools and session-pooled sessions (what the connection budget counts).",
                &["node"],
            )?,
            server_connection_budget: register(
                &r,
                IntGauge::new(
                    "server_connection_budget",
                    "This pod's share of pool.max_server_connections_per_node (0: no budget).",
                ),
            )?,
            registry: r,
        };
        // Both results exist from the start, so a rate() over them works.
        for result in ["success", "failure"] {
            metrics.config_reloads.with_label_values(&[result]);
        }
        for outcome in ["cancelled", "forwarded", "unknown"] {
            metrics.cancel_requests.with_label_values(&[outcome]);
        }
        metrics.peers_live.set(1);
        Ok(metrics)
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(MetricsError::Encode)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Per-pool children, resolved once when the pool is created.
    pub fn pool(&self, node: &str, database: &str, user: &str) -> PoolMetrics {
        PoolMetrics::resolve(self, node, database, user)
    }

    /// Per-route children (transactions, queries, duration) for `node` in
    /// `role`, resolved once by the owner (a pool, a router table entry).
    pub fn route(&self, node: &str, role: &str) -> RouteMetrics {
        RouteMetrics::resolve(self, node, role)
    }

    /// Counts one error sent to a client, by its SQLSTATE's class (an
    /// atomic add once the class has been seen).
    pub fn error(&self, sqlstate: &str) {
        self.error_classes.count(sqlstate.as_bytes());
    }

    /// Counts the ErrorResponses among `frames` (whole frames the proxy
    /// wrote itself), by class.
    pub fn errors_in(&self, frames: &[u8]) {
        self.error_classes.count_frames(frames);
    }

    /// Publishes a node's role (`primary`, `replica`, `unknown`) and
    /// health, as a topology watcher learns them.
    pub fn set_node_state(&self, node: &str, role: &str, healthy: bool) {
        for known in ["primary", "replica", "unknown"] {
            let value = i64::from(known == role);
            self.node_role.with_label_values(&[node, known]).set(value);
        }
        self.node_healthy
            .with_label_values(&[node])
            .set(i64::from(healthy));
    }

    /// Publishes a replica's replay lag.
    pub fn set_replica_lag(&self, node: &str, bytes: u64, seconds: f64) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.replica_lag_bytes.with_label_values(&[node]).set(bytes);
        self.replica_lag_seconds
            .with_label_values(&[node])
            .set(seconds);
    }

    /// Forgets a node no longer in the topology, so its series stop.
    pub fn forget_node(&self, node: &str) {
        let _ = self.replica_lag_bytes.remove_label_values(&[node]);
        let _ = self.replica_lag_seconds.remove_label_values(&[node]);
        let _ = self.node_healthy.remove_label_values(&[node]);
        for role in ["primary", "replica", "unknown"] {
            let _ = self.node_role.remove_label_values(&[node, role]);
        }
    }

    /// A new topology snapshot differs from the last one.
    pub fn topology_changed(&self) {
        self.topology_changes.inc();
    }

    /// The writable primary changed.
    pub fn failover(&self) {
        self.failovers.inc();
    }

    /// Adds time spent without a writable primary.
    pub fn add_seconds_without_primary(&self, seconds: f64) {
        self.no_primary_seconds.inc_by(seconds.max(0.0));
    }

    /// A request starts waiting for a writable primary; the returned guard
    /// ends the wait when dropped.
    pub fn hold_request(&self) -> HeldRequest<'_> {
        self.requests_held_total.inc();
        self.requests_held.inc();
        HeldRequest(&self.requests_held)
    }

    /// A request was retried on the primary.
    pub fn retry_on_primary(&self) {
        self.primary_retries.inc();
    }

    /// A read went to the primary for read-your-writes.
    pub fn read_your_writes_fallback(&self) {
        self.read_your_writes_fallbacks.inc();
    }

    /// A client TLS handshake ended (`ok` false when it failed).
    pub fn tls_handshake(&self, ok: bool) {
        if ok {
            self.tls_handshakes.inc();
        } else {
            self.tls_handshake_failures.inc();
        }
    }

    /// Clients' named prepared statements were used (Parse, Bind or
    /// Describe): `hits` times already parsed on the connection serving
    /// them, `misses` times parsed there first.
    pub fn prepared_statements(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.prepared_cache_hits.inc_by(hits);
        }
        if misses > 0 {
            self.prepared_cache_misses.inc_by(misses);
        }
    }

    /// A CancelRequest was served with `outcome`.
    pub fn cancel_request(&self, outcome: &str) {
        self.cancel_requests.with_label_values(&[outcome]).inc();
    }

    /// A configuration reload ended.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
    }
}

/// A request held for a writable primary; dropping it ends the hold.
#[derive(Debug)]
pub struct HeldRequest<'a>(&'a IntGauge);

impl Drop for HeldRequest<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_counters_end_in_total() {
        let metrics = Metrics::new().unwrap();
        metrics.auth_failures.inc();
        metrics.error("28P01");
        metrics.set_node_state("10.0.0.5:5432", "primary", true);
        let route = metrics.route("10.0.0.5:5432", "primary");
        route.transaction_done(0.002);
        let text = metrics.encode().unwrap();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("switchyard_"), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
        assert!(text.contains("switchyard_auth_failures_total 1"), "{text}");
        assert!(
            text.contains("switchyard_errors_total{class=\"28\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "switchyard_transactions_total{node=\"10.0.0.5:5432\",role=\"primary\"} 1"
            )
        );
        assert!(text.contains("switchyard_node_role{node=\"10.0.0.5:5432\",role=\"replica\"} 0"));
    }

    #[test]
    fn held_request_gauge_returns_to_zero() {
        let metrics = Metrics::new().unwrap();
        {
            let _held = metrics.hold_request();
            assert_eq!(metrics.requests_held.get(), 1);
        }
        assert_eq!(metrics.requests_held.get(), 0);
        assert_eq!(metrics.requests_held_total.get(), 1);
    }
}
