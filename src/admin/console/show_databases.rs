//! `SHOW DATABASES`: one row per database clients use, PgBouncer's columns.

use std::collections::BTreeSet;

use super::show_servers::split;
use super::wire::{Table, null, val};
use crate::proxy::Shared;

/// PgBouncer's `SHOW DATABASES` columns.
pub const COLUMNS: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "server_lifetime",
    "pool_mode",
    "max_connections",
    "current_connections",
    "paused",
    "disabled",
];

/// Databases are not configured in switchyard (a client's `database` goes
/// to the node as is): the rows are the databases with a pool or a client
/// now, served by the primary, plus the admin console's.
pub fn show(shared: &Shared) -> Table {
    let settings = shared.settings.load();
    let config = &settings.config;
    let mut names = BTreeSet::new();
    for pool in shared.pools.all() {
        names.insert(pool.key().database.clone());
    }
    for (_, client) in shared.clients.all() {
        if !client.admin {
            names.insert(client.database.clone());
        }
    }
    let primary = shared.topology.load().primary().map(|m| m.addr.clone());
    let (host, port) = split(primary.as_deref().unwrap_or(""));
    let mode = format!("{:?}", config.server.pool_mode).to_ascii_lowercase();
    let paused = i32::from(shared.pause.is_paused());
    let mut table = Table::new(COLUMNS);
    for name in names {
        let current: usize = shared
            .pools
            .all()
            .iter()
            .filter(|p| p.key().database == name)
            .map(|p| p.stats().open)
            .sum();
        table.row(vec![
            val(&name),
            val(host),
            val(port),
            val(&name),
            null(),
            val(config.pool.max_size),
            val(config.pool.min_size),
            val(0),
            val(config.pool.max_lifetime.as_secs()),
            val(&mode),
            val(0),
            val(current),
            val(paused),
            val(0),
        ]);
    }
    table.row(vec![
        val("switchyard"),
        null(),
        val(port_of(&config.server.listen)),
        val("switchyard"),
        null(),
        val(0),
        val(0),
        val(0),
        val(0),
        val("statement"),
        val(0),
        val(0),
        val(0),
        val(0),
    ]);
    table
}

fn port_of(listen: &str) -> &str {
    split(listen).1
}
