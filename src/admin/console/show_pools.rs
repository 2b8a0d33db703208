//! `SHOW POOLS`: one row per pool (node, database, user), PgBouncer's
//! columns plus `node`.

use std::collections::BTreeMap;

use super::wire::{Table, val};
use crate::config::PoolMode;
use crate::proxy::Shared;

/// PgBouncer's `SHOW POOLS` columns (1.21), then switchyard's `node`.
pub const COLUMNS: &[&str] = &[
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "node",
];

#[derive(Default)]
struct Row {
    clients: usize,
    waiting: usize,
    active: usize,
    idle: usize,
    used: usize,
    tested: usize,
    login: usize,
    max_wait: std::time::Duration,
    session_mode: bool,
}

/// The pools now. `sv_idle` counts idle connections ready to use,
/// `sv_used` idle ones due a health check (idle for `health_check_after`),
/// `sv_tested` those in the check's round trip. `maxwait`/`maxwait_us` say
/// how long the oldest checkout still waiting for a server connection has
/// waited. Session pooling has no pools: each session-pooled
/// client appears with its own server connection, grouped by node,
/// database and user.
pub fn show(shared: &Shared) -> Table {
    let mut rows: BTreeMap<(String, String, String), Row> = BTreeMap::new();
    for (_, client) in shared.clients.all() {
        if client.admin {
            continue;
        }
        let node = client.session_node.clone().unwrap_or_default();
        let session_mode = client.session_node.is_some();
        let row = rows
            .entry((node, client.database.clone(), client.user.clone()))
            .or_default();
        row.clients += 1;
        if session_mode {
            row.session_mode = true;
            row.active += 1;
        }
    }
    // Transaction-pooled clients are counted under their pool's node.
    for pool in shared.pools.all() {
        let key = pool.key();
        let stats = pool.stats();
        let mut row = rows
            .remove(&(String::new(), key.database.clone(), key.user.clone()))
            .unwrap_or_default();
        row.waiting = stats.waiting;
        row.active = stats.active;
        // PgBouncer's sv_idle is ready to use; sv_used awaits a check.
        row.idle = stats.idle.saturating_sub(stats.idle_unchecked);
        row.used = stats.idle_unchecked;
        row.tested = stats.testing;
        row.login = stats
            .open
            .saturating_sub(stats.active + stats.idle + stats.testing);
        row.max_wait = stats.max_wait;
        rows.insert(
            (key.node.clone(), key.database.clone(), key.user.clone()),
            row,
        );
    }
    let mut table = Table::new(COLUMNS);
    for ((node, database, user), row) in rows {
        let mode = if row.session_mode {
            PoolMode::Session
        } else {
            PoolMode::Transaction
        };
        table.row(vec![
            val(database),
            val(user),
            val(row.clients.saturating_sub(row.waiting)),
            val(row.waiting),
            val(0),
            val(0),
            val(row.active),
            val(0),
            val(0),
            val(row.idle),
            val(row.used),
            val(row.tested),
            val(row.login),
            // PgBouncer: whole seconds, then the microseconds beyond them.
            val(row.max_wait.as_secs()),
            val(row.max_wait.subsec_micros()),
            val(format!("{mode:?}").to_ascii_lowercase()),
            val(node),
        ]);
    }
    table
}
