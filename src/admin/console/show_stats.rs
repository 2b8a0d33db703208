//! `SHOW STATS`: totals per database, PgBouncer's columns.

use std::collections::BTreeMap;

use super::wire::{Table, val};
use crate::metrics::PoolTotalsSnapshot;
use crate::proxy::Shared;

/// PgBouncer's `SHOW STATS` columns.
pub const COLUMNS: &[&str] = &[
    "database",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];

/// Totals since start per database, summed over its pools (transaction
/// pooling). Times are in microseconds as in PgBouncer; a query is a
/// Query or Sync message (one ReadyForQuery). The `avg_*` rates PgBouncer computes
/// per stats period are 0 except `avg_xact_time` and `avg_wait_time`,
/// which are averages per transaction since start.
pub fn show(shared: &Shared) -> Table {
    let mut by_database: BTreeMap<String, PoolTotalsSnapshot> = BTreeMap::new();
    for pool in shared.pools.all() {
        let totals = pool.metrics().totals();
        let sum = by_database.entry(pool.key().database.clone()).or_default();
        sum.transactions += totals.transactions;
        sum.transaction_micros += totals.transaction_micros;
        sum.queries += totals.queries;
        sum.received += totals.received;
        sum.sent += totals.sent;
        sum.wait_micros += totals.wait_micros;
    }
    let mut table = Table::new(COLUMNS);
    for (database, t) in by_database {
        let per_xact = |micros: u64| micros.checked_div(t.transactions).unwrap_or(0);
        table.row(vec![
            val(database),
            val(t.transactions),
            val(t.queries),
            val(t.received),
            val(t.sent),
            val(t.transaction_micros),
            val(0),
            val(t.wait_micros),
            val(0),
            val(0),
            val(0),
            val(0),
            val(per_xact(t.transaction_micros)),
            val(0),
            val(per_xact(t.wait_micros)),
        ]);
    }
    table
}
