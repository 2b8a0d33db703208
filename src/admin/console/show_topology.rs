//! `SHOW TOPOLOGY` and `SHOW LAG`.

use super::wire::{Table, val};
use crate::proxy::Shared;

/// `SHOW TOPOLOGY` columns.
pub const TOPOLOGY_COLUMNS: &[&str] = &[
    "node",
    "role",
    "healthy",
    "timeline",
    "replay_lsn",
    "lag_bytes",
    "lag_seconds",
    "source",
    "last_change",
];

/// `SHOW LAG` columns.
pub const LAG_COLUMNS: &[&str] = &["node", "role", "replay_lsn", "lag_bytes", "lag_seconds"];

/// Every member with its role and what is known of it (NULL: not measured).
pub fn topology(shared: &Shared) -> Table {
    let view = shared.topology_view();
    let mut table = Table::new(TOPOLOGY_COLUMNS);
    for member in &view.members {
        table.row(vec![
            val(&member.node),
            val(member.role),
            member.healthy.map(|h| if h { "t" } else { "f" }.to_owned()),
            member.timeline.map(|t| t.to_string()),
            member.replay_lsn.clone(),
            member.lag_bytes.map(|b| b.to_string()),
            member.lag_seconds.map(|s| s.to_string()),
            val(&view.source),
            val(&view.last_change),
        ]);
    }
    table
}

/// Replication lag of every replica (NULL: not measured).
pub fn lag(shared: &Shared) -> Table {
    let view = shared.topology_view();
    let mut table = Table::new(LAG_COLUMNS);
    for member in view.members.iter().filter(|m| m.role != "primary") {
        table.row(vec![
            val(&member.node),
            val(member.role),
            member.replay_lsn.clone(),
            member.lag_bytes.map(|b| b.to_string()),
            member.lag_seconds.map(|s| s.to_string()),
        ]);
    }
    table
}
