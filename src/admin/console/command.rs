//! Parsing one console statement.

/// A console statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `SHOW POOLS`.
    ShowPools,
    /// `SHOW SERVERS`.
    ShowServers,
    /// `SHOW CLIENTS`.
    ShowClients,
    /// `SHOW STATS`.
    ShowStats,
    /// `SHOW DATABASES`.
    ShowDatabases,
    /// `SHOW CONFIG`.
    ShowConfig,
    /// `SHOW VERSION`.
    ShowVersion,
    /// `SHOW TOPOLOGY`.
    ShowTopology,
    /// `SHOW LAG`.
    ShowLag,
    /// `SHOW HELP` (or `HELP`).
    ShowHelp,
    /// `PAUSE`: hold new transactions.
    Pause,
    /// `RESUME`: release them.
    Resume,
    /// `RELOAD`: re-read the configuration file.
    Reload,
    /// `RECONNECT`: replace every server connection as it is released.
    Reconnect,
    /// `SHUTDOWN`: graceful shutdown, as SIGTERM.
    Shutdown,
}

impl Command {
    /// Parses one statement (no trailing `;`), case-insensitively. PgBouncer's
    /// optional database argument of PAUSE/RESUME/RECONNECT is not
    /// supported: they act on every pool.
    pub fn parse(statement: &str) -> Option<Self> {
        let words: Vec<String> = statement
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        Some(match words.as_slice() {
            ["SHOW", "POOLS"] => Self::ShowPools,
            ["SHOW", "SERVERS"] => Self::ShowServers,
            ["SHOW", "CLIENTS"] => Self::ShowClients,
            ["SHOW", "STATS"] => Self::ShowStats,
            ["SHOW", "DATABASES"] => Self::ShowDatabases,
            ["SHOW", "CONFIG"] => Self::ShowConfig,
            ["SHOW", "VERSION"] => Self::ShowVersion,
            ["SHOW", "TOPOLOGY"] => Self::ShowTopology,
            ["SHOW", "LAG"] => Self::ShowLag,
            ["SHOW", "HELP"] | ["HELP"] => Self::ShowHelp,
            ["PAUSE"] => Self::Pause,
            ["RESUME"] => Self::Resume,
            ["RELOAD"] => Self::Reload,
            ["RECONNECT"] => Self::Reconnect,
            ["SHUTDOWN"] => Self::Shutdown,
            _ => return None,
        })
    }
}

/// The statements of a simple query: split at `;`, trimmed, empty ones
/// dropped (console commands hold no quoted text).
pub fn statements(query: &str) -> Vec<&str> {
    query
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_case_insensitively_with_any_spacing() {
        assert_eq!(Command::parse("show  pools"), Some(Command::ShowPools));
        assert_eq!(Command::parse("Pause"), Some(Command::Pause));
        assert_eq!(Command::parse("SHOW pool"), None);
        assert_eq!(Command::parse("SELECT 1"), None);
        assert_eq!(
            statements(" SHOW POOLS; ;show lag ;"),
            ["SHOW POOLS", "show lag"]
        );
    }
}
