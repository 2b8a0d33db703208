//! The `avg_*` columns of `SHOW STATS`, with PgBouncer's meaning: rates
//! and averages over the last completed stats period
//! (`admin.stats_period`). One task takes every database's totals at the
//! end of each period and publishes the differences; the data path only
//! ever adds to the totals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::metrics::PoolTotalsSnapshot;
use crate::proxy::Shared;

/// One database's averages over the last stats period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Averages {
    /// Transactions per second.
    pub xact_count: u64,
    /// Queries (Query and Sync messages) per second.
    pub query_count: u64,
    /// Bytes per second read from clients.
    pub recv: u64,
    /// Bytes per second written to clients.
    pub sent: u64,
    /// Microseconds per transaction ended in the period.
    pub xact_time: u64,
    /// Microseconds per query (request to ReadyForQuery).
    pub query_time: u64,
    /// Microseconds per checkout (of a server connection) in the period.
    pub wait_time: u64,
}

impl Averages {
    /// The averages between the totals `before` and `after`, `elapsed` apart.
    pub fn between(
        before: &PoolTotalsSnapshot,
        after: &PoolTotalsSnapshot,
        elapsed: Duration,
    ) -> Self {
        let delta = |f: fn(&PoolTotalsSnapshot) -> u64| f(after).saturating_sub(f(before));
        let micros = elapsed.as_micros().max(1);
        // Rounded to the nearest unit, as integers like PgBouncer's.
        let per_second = |n: u64| {
            let rate = (u128::from(n) * 1_000_000 + micros / 2) / micros;
            u64::try_from(rate).unwrap_or(u64::MAX)
        };
        let transactions = delta(|t| t.transactions);
        let queries = delta(|t| t.queries);
        let checkouts = delta(|t| t.checkouts);
        Self {
            xact_count: per_second(transactions),
            query_count: per_second(queries),
            recv: per_second(delta(|t| t.received)),
            sent: per_second(delta(|t| t.sent)),
            xact_time: delta(|t| t.transaction_micros)
                .checked_div(transactions)
                .unwrap_or(0),
            query_time: delta(|t| t.query_micros).checked_div(queries).unwrap_or(0),
            wait_time: delta(|t| t.wait_micros).checked_div(checkouts).unwrap_or(0),
        }
    }
}

/// The averages of the last completed period, per database.
#[derive(Debug, Default)]
pub struct PeriodAverages {
    last: ArcSwap<BTreeMap<String, Averages>>,
}

impl PeriodAverages {
    /// One database's averages; zero before the first period ends.
    pub fn get(&self, database: &str) -> Averages {
        self.last.load().get(database).copied().unwrap_or_default()
    }
}

/// Every database's totals since start, summed over its pools.
pub fn totals_by_database(shared: &Shared) -> BTreeMap<String, PoolTotalsSnapshot> {
    let mut by_database: BTreeMap<String, PoolTotalsSnapshot> = BTreeMap::new();
    for pool in shared.pools.all() {
        let totals = pool.metrics().totals();
        let sum = by_database.entry(pool.key().database.clone()).or_default();
        sum.transactions += totals.transactions;
        sum.transaction_micros += totals.transaction_micros;
        sum.queries += totals.queries;
        sum.query_micros += totals.query_micros;
        sum.received += totals.received;
        sum.sent += totals.sent;
        sum.wait_micros += totals.wait_micros;
        sum.checkouts += totals.checkouts;
    }
    by_database
}

/// Publishes each period's averages in `shared.averages` until `stop`.
/// The period is read from the configuration at the start of each one,
/// so a reload applies from the next period on.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut before = totals_by_database(&shared);
    let mut since = Instant::now();
    loop {
        let period = shared.settings.load().config.admin.stats_period;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let after = totals_by_database(&shared);
        let elapsed = since.elapsed();
        let averages = after
            .iter()
            .map(|(database, now)| {
                let then = before.get(database).copied().unwrap_or_default();
                (database.clone(), Averages::between(&then, now, elapsed))
            })
            .collect();
        shared.averages.last.store(Arc::new(averages));
        before = after;
        since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_rates_per_second_and_times_per_transaction() {
        let before = PoolTotalsSnapshot {
            transactions: 10,
            transaction_micros: 5_000,
            queries: 20,
            query_micros: 4_000,
            received: 1_000,
            sent: 2_000,
            wait_micros: 100,
            checkouts: 10,
        };
        let after = PoolTotalsSnapshot {
            transactions: 30,
            transaction_micros: 9_000,
            queries: 60,
            query_micros: 6_000,
            received: 3_000,
            sent: 12_000,
            wait_micros: 500,
            checkouts: 30,
        };
        let averages = Averages::between(&before, &after, Duration::from_secs(2));
        assert_eq!(
            averages,
            Averages {
                xact_count: 10,
                query_count: 20,
                recv: 1_000,
                sent: 5_000,
                xact_time: 200,
                query_time: 50,
                wait_time: 20,
            }
        );
        // An idle period: all zero, no division by zero.
        let idle = Averages::between(&after, &after, Duration::from_secs(60));
        assert_eq!(idle, Averages::default());
    }
}
