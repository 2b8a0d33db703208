//! `SHOW CLIENTS`: one row per logged-in client, PgBouncer's columns.

use super::show_servers::rfc3339;
use super::wire::{Table, null, val};
use crate::proxy::Shared;

/// PgBouncer's `SHOW CLIENTS` columns.
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
    "id",
];

/// Every logged-in client, the admin console's included (as PgBouncer).
/// `state` is `active` for every client: per-client transaction state is
/// not tracked (pool-level counts are in SHOW POOLS).
pub fn show(shared: &Shared) -> Table {
    let mut table = Table::new(COLUMNS);
    for (id, client) in shared.clients.all() {
        table.row(vec![
            val("C"),
            val(&client.user),
            val(&client.database),
            val("active"),
            val(client.addr.ip()),
            val(client.addr.port()),
            null(),
            null(),
            val(rfc3339(client.connected_at)),
            null(),
            val(0),
            val(0),
            val(0),
            val(format!("{id:x}")),
            null(),
            val(0),
            val(""),
            val(&client.application_name),
            val(id),
        ]);
    }
    table
}
