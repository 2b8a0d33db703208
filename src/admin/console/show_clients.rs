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
/// `state` is `waiting` while the client waits for a server connection
/// (`wait` seconds and `wait_us` microseconds so far), else `active`, which
/// in PgBouncer's sense covers clients in a transaction and idle ones.
pub fn show(shared: &Shared) -> Table {
    let mut table = Table::new(COLUMNS);
    for (id, client) in shared.clients.all() {
        let waited = client.wait.waited();
        let state = if waited.is_some() {
            "waiting"
        } else {
            "active"
        };
        let waited = waited.unwrap_or_default();
        table.row(vec![
            val("C"),
            val(&client.user),
            val(&client.database),
            val(state),
            val(client.addr.ip()),
            val(client.addr.port()),
            null(),
            null(),
            val(rfc3339(client.connected_at)),
            null(),
            val(waited.as_secs()),
            val(waited.subsec_micros()),
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
