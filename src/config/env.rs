//! `SWITCHYARD_<SECTION>_<KEY>` environment overrides, for deployments that
//! set configuration through a Pod spec rather than a file.

use toml::{Table, Value};

use super::ConfigError;

const PREFIX: &str = "SWITCHYARD_";
/// Sections an override may target; `users` is an array and is file-only.
const SECTIONS: &[&str] = &[
    "server",
    "cluster",
    "pool",
    "routing",
    "patroni",
    "kubernetes",
    "tls",
    "server_tls",
    "auth",
    "admin",
    "log",
    "peers",
];
/// Keys whose override may be a comma-separated list instead of TOML syntax.
const LIST_KEYS: &[&str] = &["nodes", "urls", "users", "static"];
/// Variables with the prefix that are not config keys.
const NOT_KEYS: &[&str] = &["SWITCHYARD_CONFIG", "SWITCHYARD_LOG", "SWITCHYARD_BIN"];

/// Applies every `SWITCHYARD_*` variable in `vars` to `table`; returns how many applied.
///
/// `SWITCHYARD_SERVER_ADMIN_LISTEN=0.0.0.0:9930` sets `server.admin_listen`.
/// A value that parses as a TOML value (number, boolean, array, quoted
/// string) is taken as such; anything else is a string.
pub fn apply_overrides(
    table: &mut Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<usize, ConfigError> {
    let mut applied = 0;
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        if NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        // Longest section name first: SERVER_TLS_MODE is server_tls.mode.
        let Some((section, key)) = SECTIONS
            .iter()
            .filter_map(|s| Some((*s, lower.strip_prefix(s)?.strip_prefix('_')?)))
            .max_by_key(|(s, _)| s.len())
        else {
            return Err(match lower.split_once('_') {
                Some((section, _)) => env_error(
                    &var,
                    format!(
                        "unknown section {section:?}; known: {}",
                        SECTIONS.join(", ")
                    ),
                ),
                None => env_error(&var, "expected SWITCHYARD_<SECTION>_<KEY>"),
            });
        };
        let value = parse_value(key, &raw);
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(section_table) = entry else {
            return Err(env_error(&var, format!("{section} is not a table")));
        };
        section_table.insert(key.to_owned(), value);
        applied += 1;
    }
    Ok(applied)
}

fn parse_value(key: &str, raw: &str) -> Value {
    if let Ok(mut parsed) = format!("v = {raw}").parse::<Table>()
        && let Some(value) = parsed.remove("v")
    {
        return value;
    }
    if LIST_KEYS.contains(&key) {
        let items = raw
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Value::String(item.to_owned()))
            .collect();
        return Value::Array(items);
    }
    Value::String(raw.to_owned())
}

fn env_error(var: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var: var.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn override_sets_nested_key_with_underscores() {
        let mut table = Table::new();
        let n = apply_overrides(
            &mut table,
            vars(&[
                ("SWITCHYARD_SERVER_ADMIN_LISTEN", "127.0.0.1:1"),
                ("SWITCHYARD_SERVER_MAX_MESSAGE_SIZE", "4096"),
                ("SWITCHYARD_CLUSTER_NODES", "a:1, b:2"),
                ("PATH", "/bin"),
                ("SWITCHYARD_CONFIG", "/etc/x.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            table["server"]["admin_listen"].as_str(),
            Some("127.0.0.1:1")
        );
        assert_eq!(table["server"]["max_message_size"].as_integer(), Some(4096));
        let nodes = table["cluster"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].as_str(), Some("b:2"));
    }

    #[test]
    fn unknown_section_names_the_variable() {
        let mut table = Table::new();
        let err = apply_overrides(&mut table, vars(&[("SWITCHYARD_BOGUS_X", "1")])).unwrap_err();
        assert!(err.to_string().contains("SWITCHYARD_BOGUS_X"));
    }
}
