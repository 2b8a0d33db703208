//! A client's session settings under transaction pooling: what its startup
//! packet and its SET commands asked for, re-applied on whichever server
//! connection serves its next transaction.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// Reads the settings in force on a server connection after a client changed them.
pub const SNAPSHOT_SQL: &str = "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings \
     WHERE source = 'session' ORDER BY name";

/// Name/value settings, with a fingerprint to compare connections cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSettings {
    pairs: Vec<(String, String)>,
    fingerprint: u64,
    // Asked of every request; worked out once from `pairs`.
    read_only: bool,
    serializable: bool,
}

impl SessionSettings {
    /// Settings from a startup packet: every parameter but user/database,
    /// plus `-c name=value` / `--name=value` items of `options`.
    pub fn from_startup(params: &[(String, String)]) -> Self {
        let mut pairs: Vec<(String, String)> = params
            .iter()
            .filter(|(name, _)| !NOT_SETTINGS.contains(&name.as_str()))
            .cloned()
            .collect();
        if let Some((_, options)) = params.iter().find(|(name, _)| name == "options") {
            pairs.extend(parse_options(options));
        }
        Self::from_pairs(pairs)
    }

    /// Settings from `(name, value)` pairs (e.g. rows of [`SNAPSHOT_SQL`]).
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        for pair in &mut pairs {
            pair.0.make_ascii_lowercase();
        }
        // Later values win, as they would on the server.
        let mut deduped: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            match deduped.iter_mut().find(|(n, _)| *n == name) {
                Some(existing) => existing.1 = value,
                None => deduped.push((name, value)),
            }
        }
        deduped.sort();
        let fingerprint = if deduped.is_empty() {
            0
        } else {
            let mut hasher = DefaultHasher::new();
            deduped.hash(&mut hasher);
            hasher.finish().max(1)
        };
        let read_only = deduped.iter().any(|(name, value)| {
            name == "default_transaction_read_only"
                && matches!(
                    value.to_ascii_lowercase().as_str(),
                    "on" | "true" | "1" | "yes"
                )
        });
        let serializable = deduped.iter().any(|(name, value)| {
            name == "default_transaction_isolation" && value.eq_ignore_ascii_case("serializable")
        });
        Self {
            pairs: deduped,
            fingerprint,
            read_only,
            serializable,
        }
    }

    /// Removes and returns the proxy's own `switchyard.route` setting (from
    /// a startup `-c switchyard.route=…`): it is never sent to a server.
    pub fn take_route(&mut self) -> Option<String> {
        let index = self
            .pairs
            .iter()
            .position(|(name, _)| name == crate::router::access::ROUTE_SETTING)?;
        let (_, value) = self.pairs.remove(index);
        *self = Self::from_pairs(std::mem::take(&mut self.pairs));
        Some(value)
    }

    /// True when the session's transactions are read-only by default
    /// (`default_transaction_read_only = on`).
    pub fn read_only_by_default(&self) -> bool {
        self.read_only
    }

    /// True when the session's transactions are serializable by default
    /// (`default_transaction_isolation = serializable`), which a hot
    /// standby refuses: its reads must run on the primary.
    pub fn serializable_by_default(&self) -> bool {
        self.serializable
    }

    /// 0 for server defaults; equal settings have equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// One simple-query string that takes a connection from any state to
    /// these settings.
    pub fn apply_sql(&self) -> String {
        let mut sql = String::from("RESET ALL");
        if self.pairs.is_empty() {
            return sql;
        }
        sql.push_str("; SELECT ");
        for (i, (name, value)) in self.pairs.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("pg_catalog.set_config(");
            push_literal(&mut sql, name);
            sql.push_str(", ");
            push_literal(&mut sql, value);
            sql.push_str(", false)");
        }
        sql
    }
}

// E'' literals mean the same whatever standard_conforming_strings says.
fn push_literal(sql: &mut String, value: &str) {
    sql.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => sql.push_str("''"),
            '\\' => sql.push_str("\\\\"),
            c => sql.push(c),
        }
    }
    sql.push('\'');
}

/// Splits a startup `options` string (backslash escapes spaces) into settings.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut pairs = Vec::new();
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        let setting = if word == "-c" {
            iter.next()
        } else if let Some(rest) = word.strip_prefix("-c") {
            Some(rest.to_owned())
        } else {
            word.strip_prefix("--").map(str::to_owned)
        };
        if let Some((name, value)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            pairs.push((name.replace('-', "_"), value.to_owned()));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect()
    }

    #[test]
    fn startup_settings_exclude_identity_and_expand_options() {
        let settings = SessionSettings::from_startup(&params(&[
            ("user", "app"),
            ("database", "db"),
            ("application_name", "pgbench"),
            (
                "options",
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=1MB -c x.y=with\\ space",
            ),
        ]));
        assert_eq!(
            settings.pairs,
            params(&[
                ("application_name", "pgbench"),
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("work_mem", "1MB"),
                ("x.y", "with space"),
            ])
        );
        assert_ne!(settings.fingerprint(), 0);
    }

    #[test]
    fn no_settings_means_fingerprint_zero_and_plain_reset() {
        let settings = SessionSettings::from_startup(&params(&[("user", "app")]));
        assert_eq!(settings.fingerprint(), 0);
        assert_eq!(settings.apply_sql(), "RESET ALL");
    }

    #[test]
    fn apply_sql_quotes_values_safely() {
        let settings = SessionSettings::from_pairs(params(&[("search_path", "\"$user\", it's\\")]));
        assert_eq!(
            settings.apply_sql(),
            "RESET ALL; SELECT pg_catalog.set_config(E'search_path', E'\"$user\", it''s\\\\', false)"
        );
    }

    #[test]
    fn order_does_not_change_the_fingerprint() {
        let a = SessionSettings::from_pairs(params(&[("a", "1"), ("b", "2")]));
        let b = SessionSettings::from_pairs(params(&[("b", "2"), ("a", "1")]));
        assert_eq!(a.fingerprint(), b.fingerprint());
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn the_route_option_is_taken_out_of_the_settings() {
        let params = vec![
            ("user".to_owned(), "app".to_owned()),
            (
                "options".to_owned(),
                "-c switchyard.route=replica -c search_path=x".to_owned(),
            ),
        ];
        let mut settings = SessionSettings::from_startup(&params);
        let expected = SessionSettings::from_pairs(vec![("search_path".into(), "x".into())]);
        assert_eq!(settings.take_route().as_deref(), Some("replica"));
        assert_eq!(settings, expected);
        assert_eq!(settings.take_route(), None);
    }

    #[test]
    fn read_only_default_is_read_from_the_settings() {
        let on = SessionSettings::from_pairs(vec![(
            "default_transaction_read_only".into(),
            "on".into(),
        )]);
        assert!(on.read_only_by_default());
        assert!(!SessionSettings::default().read_only_by_default());
    }

    #[test]
    fn serializable_default_is_read_from_the_settings() {
        let startup = vec![
            ("user".to_owned(), "app".to_owned()),
            (
                "options".to_owned(),
                "-c default_transaction_isolation=SERIALIZABLE".to_owned(),
            ),
        ];
        assert!(SessionSettings::from_startup(&startup).serializable_by_default());
        let repeatable = SessionSettings::from_pairs(vec![(
            "default_transaction_isolation".into(),
            "repeatable read".into(),
        )]);
        assert!(!repeatable.serializable_by_default());
    }
}
