//! Which pool a server connection belongs to.

use std::fmt;

/// Identifies one pool: connections to one node, logged in to one database
/// as one user. Two sessions share server connections only when their keys
/// are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The node's address, `host:port`, as the pool connects to it.
    pub node: String,
    /// The database the connections are logged in to.
    pub database: String,
    /// The role the connections are logged in as.
    pub user: String,
}

impl PoolKey {
    /// A key for `user` on `database` at `node`.
    pub fn new(
        node: impl Into<String>,
        database: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        Self {
            node: node.into(),
            database: database.into(),
            user: user.into(),
        }
    }
}

impl fmt::Display for PoolKey {
    /// `user@database on node`, the form used in logs and client errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} on {}", self.user, self.database, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_user_database_and_node() {
        let key = PoolKey::new("127.0.0.1:5432", "appdb", "app");
        assert_eq!(key.to_string(), "app@appdb on 127.0.0.1:5432");
    }
}
