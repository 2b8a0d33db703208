//! `SHOW STATS`: totals per database, PgBouncer's columns.

use super::wire::{Table, val};
use crate::admin::averages::totals_by_database;
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
/// pooling), then PgBouncer's averages over the last completed stats
/// period (`admin.stats_period`; all 0 until the first one ends): rates
/// per second (`avg_xact_count`, `avg_query_count`, `avg_recv`,
/// `avg_sent`) and microseconds per transaction (`avg_xact_time`), per
/// query (`avg_query_time`) and per checkout (`avg_wait_time`). Times are
/// in microseconds as in PgBouncer; a query is a Query or Sync message,
/// timed from when the proxy forwards it to its ReadyForQuery (pipelined
/// ones from the previous ReadyForQuery).
pub fn show(shared: &Shared) -> Table {
    let mut table = Table::new(COLUMNS);
    for (database, t) in totals_by_database(shared) {
        let avg = shared.averages.get(&database);
        table.row(vec![
            val(database),
            val(t.transactions),
            val(t.queries),
            val(t.received),
            val(t.sent),
            val(t.transaction_micros),
            val(t.query_micros),
            val(t.wait_micros),
            val(avg.xact_count),
            val(avg.query_count),
            val(avg.recv),
            val(avg.sent),
            val(avg.xact_time),
            val(avg.query_time),
            val(avg.wait_time),
        ]);
    }
    table
}
