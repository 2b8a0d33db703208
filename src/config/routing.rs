//! `[routing]` and `[[databases]]`: where transactions go, and how stale a
//! read may be.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[routing]`: read/write splitting across the nodes (transaction mode).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Reads go to replicas; false sends everything to the primary.
    pub enabled: bool,
    /// Default policy for users and databases that set none.
    pub route: Route,
    /// Default consistency for users and databases that set none.
    pub consistency: Consistency,
    /// The primary also serves reads, alongside the replicas.
    pub primary_reads: bool,
    /// A replica further behind than this many bytes of WAL leaves rotation.
    pub max_replica_lag_bytes: u64,
    /// A replica whose replay is older than this (while WAL is waiting)
    /// leaves rotation.
    #[serde(with = "humantime_serde")]
    pub max_replica_lag: Duration,
    /// Functions that write, besides the built-in list (`name` or `prefix*`).
    pub write_functions: Vec<String>,
    /// How long a transaction that needs the primary waits for one.
    #[serde(with = "humantime_serde")]
    pub failover_timeout: Duration,
    /// Re-run on the primary an autocommit read a replica refused as
    /// writing (SQLSTATE 25006) or lost before any row reached the client.
    pub retry_on_primary: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            route: Route::Auto,
            consistency: Consistency::Eventual,
            primary_reads: false,
            max_replica_lag_bytes: 16 * 1024 * 1024,
            max_replica_lag: Duration::from_secs(10),
            write_functions: Vec::new(),
            failover_timeout: Duration::from_secs(30),
            retry_on_primary: true,
        }
    }
}

/// Where a user's or database's transactions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Reads to replicas, writes and read-write transactions to the primary.
    #[default]
    Auto,
    /// Everything to the primary.
    Primary,
    /// Everything to replicas (a read-only reporting user).
    Replica,
}

impl Route {
    /// Parses the value of `SET switchyard.route` or a startup option.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" | "default" => Some(Route::Auto),
            "primary" => Some(Route::Primary),
            "replica" => Some(Route::Replica),
            _ => None,
        }
    }
}

/// How fresh a session's reads must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Any replica in rotation.
    #[default]
    Eventual,
    /// Only replicas that replayed the session's last committed write.
    ReadYourWrites,
}

/// One `[[databases]]` entry: routing policy for a database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The database name clients connect to.
    pub name: String,
    /// Overrides `routing.route` for this database.
    pub route: Option<Route>,
    /// Overrides `routing.consistency` for this database.
    pub consistency: Option<Consistency>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_values_parse_case_insensitively() {
        assert_eq!(Route::parse(" Primary "), Some(Route::Primary));
        assert_eq!(Route::parse("replica"), Some(Route::Replica));
        assert_eq!(Route::parse("AUTO"), Some(Route::Auto));
        assert_eq!(Route::parse("sideways"), None);
    }
}
