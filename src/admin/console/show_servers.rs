//! `SHOW SERVERS`: one row per server connection, PgBouncer's columns
//! plus `node`.

use std::time::{Instant, SystemTime};

use super::wire::{Table, null, val};
use crate::proxy::Shared;

/// PgBouncer's `SHOW SERVERS` columns, then `node`.
pub const COLUMNS: &[&str] = &[
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "node",
];

/// Every pooled server connection: idle ones with their pid and times;
/// checked-out ones (owned by their session) as `active` rows without
/// them; session-pooled connections as one `active` row per client.
pub fn show(shared: &Shared) -> Table {
    let mut table = Table::new(COLUMNS);
    let now = (Instant::now(), SystemTime::now());
    for pool in shared.pools.all() {
        let key = pool.key();
        let (host, port) = split(&key.node);
        let row =
            |state: &str, pid: Option<i32>, opened: Option<Instant>, used: Option<Instant>| {
                vec![
                    val("S"),
                    val(&key.user),
                    val(&key.database),
                    val(state),
                    val(host),
                    val(port),
                    null(),
                    null(),
                    opened.map(|t| timestamp(now, t)),
                    used.map(|t| timestamp(now, t)),
                    val(0),
                    val(0),
                    val(0),
                    null(),
                    null(),
                    pid.map(|p| p.to_string()),
                    val(""),
                    val(""),
                    val(&key.node),
                ]
            };
        // PgBouncer's states: `used` is idle but due a health check,
        // `tested` in its round trip.
        let check_after = pool.settings().health_check_after;
        let now = std::time::Instant::now();
        for idle in pool.idle_servers() {
            let due = now.saturating_duration_since(idle.idle_since) >= check_after;
            table.row(row(
                if due { "used" } else { "idle" },
                Some(idle.pid),
                Some(idle.opened),
                Some(idle.idle_since),
            ));
        }
        let stats = pool.stats();
        for _ in 0..stats.active {
            table.row(row("active", None, None, None));
        }
        for _ in 0..stats.testing {
            table.row(row("tested", None, None, None));
        }
        let opening = stats.active + stats.idle + stats.testing;
        for _ in 0..stats.open.saturating_sub(opening) {
            table.row(row("login", None, None, None));
        }
    }
    for (_, client) in shared.clients.all() {
        let Some(node) = &client.session_node else {
            continue;
        };
        let (host, port) = split(node);
        table.row(vec![
            val("S"),
            val(&client.user),
            val(&client.database),
            val("active"),
            val(host),
            val(port),
            null(),
            null(),
            val(rfc3339(client.connected_at)),
            null(),
            val(0),
            val(0),
            val(0),
            null(),
            null(),
            null(),
            val(""),
            val(&client.application_name),
            val(node),
        ]);
    }
    table
}

/// `host:port` split at the last colon.
pub fn split(node: &str) -> (&str, &str) {
    node.rsplit_once(':').unwrap_or((node, ""))
}

/// The wall-clock time of `at`, given `now` on both clocks.
fn timestamp(now: (Instant, SystemTime), at: Instant) -> String {
    rfc3339(now.1 - now.0.saturating_duration_since(at))
}

/// RFC 3339, seconds precision, UTC.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}
