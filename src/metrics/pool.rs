//! Labelled children resolved once by their owner, so that updating them
//! on the hot path is an atomic add and no label lookup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus::{Histogram, HistogramOpts, IntCounter};

use super::{LATENCY_BUCKETS, Metrics};

/// The series of one route (node and role): what the router and the
/// transaction loop bump per transaction and per query.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    transactions: IntCounter,
    queries: IntCounter,
    duration: Histogram,
}

impl RouteMetrics {
    pub(super) fn resolve(metrics: &Metrics, node: &str, role: &str) -> Self {
        let labels = [node, role];
        Self {
            transactions: metrics.transactions.with_label_values(&labels),
            queries: metrics.queries.with_label_values(&labels),
            duration: metrics.transaction_duration.with_label_values(&labels),
        }
    }

    /// Series that belong to no registry: for pools built outside a proxy
    /// (unit tests, benches).
    pub fn detached() -> Self {
        Self {
            transactions: detached_counter(),
            queries: detached_counter(),
            duration: detached_histogram(),
        }
    }

    /// One transaction ended after `seconds` on this route.
    pub fn transaction_done(&self, seconds: f64) {
        self.transactions.inc();
        self.duration.observe(seconds);
    }

    /// `n` queries were sent on this route.
    pub fn queries(&self, n: u64) {
        self.queries.inc_by(n);
    }

    /// The query counter itself, for owners that add to it directly.
    pub fn query_counter(&self) -> IntCounter {
        self.queries.clone()
    }

    /// Transactions counted so far (for SHOW STATS).
    pub fn transaction_count(&self) -> u64 {
        self.transactions.get()
    }

    /// Seconds spent in transactions so far (for SHOW STATS).
    pub fn transaction_seconds(&self) -> f64 {
        self.duration.get_sample_sum()
    }

    /// Queries counted so far (for SHOW STATS).
    pub fn query_count(&self) -> u64 {
        self.queries.get()
    }
}

/// The series of one pool, resolved when the pool is created, plus the
/// per-pool totals `SHOW STATS` reports (route series are per node, not
/// per database).
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    checkout_wait: Histogram,
    /// The route the pool serves (its node, with the role it had when the
    /// pool was created).
    pub route: RouteMetrics,
    totals: Arc<PoolTotals>,
}

/// Per-pool totals since start.
#[derive(Debug, Default)]
struct PoolTotals {
    transactions: AtomicU64,
    transaction_micros: AtomicU64,
    queries: AtomicU64,
    query_micros: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
}

/// What `SHOW STATS` reads from one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolTotalsSnapshot {
    /// Transactions (or pinned stretches) served.
    pub transactions: u64,
    /// Microseconds spent in them.
    pub transaction_micros: u64,
    /// Requests (Query and Sync messages) in them.
    pub queries: u64,
    /// Microseconds from each request to its ReadyForQuery.
    pub query_micros: u64,
    /// Bytes read from this pool's clients during transactions.
    pub received: u64,
    /// Bytes written to them during transactions.
    pub sent: u64,
    /// Microseconds checkouts waited.
    pub wait_micros: u64,
    /// Checkouts (each timed in `wait_micros`).
    pub checkouts: u64,
}

impl PoolMetrics {
    pub(super) fn resolve(metrics: &Metrics, node: &str, database: &str, user: &str) -> Self {
        let primary = metrics_role_of(metrics, node);
        Self {
            checkout_wait: metrics
                .checkout_wait
                .with_label_values(&[node, database, user]),
            route: RouteMetrics::resolve(metrics, node, primary),
            totals: Arc::default(),
        }
    }

    /// Series that belong to no registry (see [`RouteMetrics::detached`]).
    pub fn detached() -> Self {
        Self {
            checkout_wait: detached_histogram(),
            route: RouteMetrics::detached(),
            totals: Arc::default(),
        }
    }

    /// A checkout got its connection after waiting `seconds`.
    pub fn checkout_waited(&self, seconds: f64) {
        self.checkout_wait.observe(seconds);
    }

    /// One transaction ended after `seconds`, having moved these bytes
    /// from and to its client.
    pub fn transaction_done(&self, seconds: f64, received: u64, sent: u64) {
        self.route.transaction_done(seconds);
        let totals = &self.totals;
        totals.transactions.fetch_add(1, Relaxed);
        // Saturating: a transaction cannot last 584,000 years.
        let micros = (seconds * 1e6) as u64;
        totals.transaction_micros.fetch_add(micros, Relaxed);
        if received > 0 {
            totals.received.fetch_add(received, Relaxed);
        }
        if sent > 0 {
            totals.sent.fetch_add(sent, Relaxed);
        }
    }

    /// `n` requests (Query or Sync) were served, taking `micros` from
    /// each request to its ReadyForQuery.
    pub fn queries(&self, n: u64, micros: u64) {
        if n > 0 {
            self.route.queries(n);
            self.totals.queries.fetch_add(n, Relaxed);
        }
        if micros > 0 {
            self.totals.query_micros.fetch_add(micros, Relaxed);
        }
    }

    /// The pool's totals now.
    pub fn totals(&self) -> PoolTotalsSnapshot {
        let t = &self.totals;
        PoolTotalsSnapshot {
            transactions: t.transactions.load(Relaxed),
            transaction_micros: t.transaction_micros.load(Relaxed),
            queries: t.queries.load(Relaxed),
            query_micros: t.query_micros.load(Relaxed),
            received: t.received.load(Relaxed),
            sent: t.sent.load(Relaxed),
            wait_micros: (self.checkout_wait_seconds() * 1e6) as u64,
            checkouts: self.checkout_wait_count(),
        }
    }

    /// Seconds checkouts have waited so far (for SHOW STATS).
    pub fn checkout_wait_seconds(&self) -> f64 {
        self.checkout_wait.get_sample_sum()
    }

    /// Checkouts timed so far.
    pub fn checkout_wait_count(&self) -> u64 {
        self.checkout_wait.get_sample_count()
    }
}

/// The role label a pool's route starts with: the one `node_role` shows
/// now, else `primary` (in this version every pool serves the primary).
fn metrics_role_of(metrics: &Metrics, node: &str) -> &'static str {
    for role in ["replica", "unknown"] {
        if metrics
            .node_role
            .get_metric_with_label_values(&[node, role])
            .is_ok_and(|g| g.get() == 1)
        {
            return role;
        }
    }
    "primary"
}

fn detached_histogram() -> Histogram {
    let opts = HistogramOpts::new("detached_seconds", "-").buckets(LATENCY_BUCKETS.to_vec());
    Histogram::with_opts(opts).expect("invariant: a name, a help text and sorted buckets are valid")
}

fn detached_counter() -> IntCounter {
    IntCounter::new("detached_total", "-").expect("invariant: a name and a help text are valid")
}
