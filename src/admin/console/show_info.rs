//! `SHOW CONFIG`, `SHOW VERSION` and `SHOW HELP`.

use super::wire::{Table, val};
use crate::admin::reload::RESTART_ONLY;
use crate::config::Config;
use crate::proxy::Shared;

/// `SHOW CONFIG` (PgBouncer's columns): every key in force, its default,
/// and whether a reload can change it. `[[users]]` is left out (passwords).
pub fn config(shared: &Shared) -> Table {
    let settings = shared.settings.load();
    let current = flatten(&settings.config);
    let defaults = flatten(&Config::default());
    let mut table = Table::new(&["key", "value", "default", "changeable"]);
    for (key, value) in current {
        let default = defaults
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let changeable = if RESTART_ONLY.contains(&key.as_str()) {
            "no"
        } else {
            "yes"
        };
        table.row(vec![val(&key), val(value), val(default), val(changeable)]);
    }
    table
}

/// `section.key` and its TOML value, sorted; arrays as TOML, strings bare.
fn flatten(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(toml::Value::Table(table)) = toml::Value::try_from(config) else {
        return out;
    };
    for (section, value) in table {
        let toml::Value::Table(keys) = value else {
            continue;
        };
        for (key, value) in keys {
            let text = match value {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            out.push((format!("{section}.{key}"), text));
        }
    }
    out.sort();
    out
}

/// `SHOW VERSION`.
pub fn version() -> Table {
    let mut table = Table::new(&["version"]);
    table.row(vec![val(format!(
        "switchyard {}",
        env!("CARGO_PKG_VERSION")
    ))]);
    table
}

/// `SHOW HELP`: the commands this console knows.
pub fn help() -> Table {
    let mut table = Table::new(&["command", "meaning"]);
    for (command, meaning) in [
        (
            "SHOW POOLS",
            "pools: clients and server connections by state",
        ),
        ("SHOW SERVERS", "server connections"),
        ("SHOW CLIENTS", "client connections"),
        ("SHOW STATS", "totals per database"),
        ("SHOW DATABASES", "databases in use"),
        ("SHOW CONFIG", "configuration in force"),
        ("SHOW VERSION", "switchyard version"),
        ("SHOW TOPOLOGY", "cluster members and roles"),
        ("SHOW LAG", "replica lag"),
        ("PAUSE", "hold new transactions"),
        ("RESUME", "release held transactions"),
        ("RELOAD", "re-read the configuration file"),
        (
            "RECONNECT",
            "replace server connections as they are released",
        ),
        ("SHUTDOWN", "graceful shutdown, as SIGTERM"),
    ] {
        table.row(vec![val(command), val(meaning)]);
    }
    table
}
