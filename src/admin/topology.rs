//! The topology as the admin side shows it (`/topology`, `SHOW TOPOLOGY`,
//! `SHOW LAG`): the topology monitor's latest snapshot.

use std::time::SystemTime;

use serde::Serialize;

use crate::config::Config;
use crate::topology::probe::format_lsn;
use crate::topology::{Role, Snapshot};

/// One member of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// `host:port`.
    pub node: String,
    /// `primary`, `replica` or `unknown`.
    pub role: &'static str,
    /// Whether the last health check passed; `None` when nothing probes it.
    pub healthy: Option<bool>,
    /// Timeline; `None` when unknown.
    pub timeline: Option<u32>,
    /// Replay LSN, e.g. `0/3000060`; `None` when unknown.
    pub replay_lsn: Option<String>,
    /// Replay lag behind the primary in bytes; `None` when unknown.
    pub lag_bytes: Option<u64>,
    /// Replay lag behind the primary in seconds; `None` when unknown.
    pub lag_seconds: Option<f64>,
}

/// A snapshot of the cluster as the admin side reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyView {
    /// Where roles come from (`static`, `probe`, `patroni`, `kubernetes`).
    pub source: String,
    /// The writable primary, if there is one.
    pub primary: Option<String>,
    /// Every member.
    pub members: Vec<MemberView>,
    /// When this view last changed, RFC 3339.
    pub last_change: String,
}

impl TopologyView {
    /// The monitor's verified `snapshot`, with the source `config` names.
    pub fn from_snapshot(snapshot: &Snapshot, config: &Config) -> Self {
        let members = snapshot
            .members
            .iter()
            .map(|m| MemberView {
                node: m.addr.clone(),
                role: match m.role {
                    Role::Primary => "primary",
                    Role::Replica => "replica",
                    Role::Unavailable => "unknown",
                },
                healthy: Some(m.reachable),
                timeline: m.timeline,
                replay_lsn: m.lsn.map(format_lsn),
                lag_bytes: m.lag_bytes,
                lag_seconds: m.lag_seconds,
            })
            .collect();
        Self {
            source: format!("{:?}", config.cluster.topology).to_ascii_lowercase(),
            primary: snapshot.primary().map(|m| m.addr.clone()),
            members,
            last_change: humantime::format_rfc3339_seconds(snapshot.published_at).to_string(),
        }
    }

    /// The static topology of `config`, as of `since`: the configured
    /// primary, every other node listed as a replica with nothing measured.
    pub fn from_config(config: &Config, since: SystemTime) -> Self {
        let primary = config.cluster.primary.clone();
        let mut nodes = config.cluster.nodes.clone();
        if let Some(primary) = &primary
            && !nodes.contains(primary)
        {
            nodes.insert(0, primary.clone());
        }
        let members = nodes
            .into_iter()
            .map(|node| MemberView {
                role: if Some(&node) == primary.as_ref() {
                    "primary"
                } else {
                    "replica"
                },
                node,
                healthy: None,
                timeline: None,
                replay_lsn: None,
                lag_bytes: None,
                lag_seconds: None,
            })
            .collect();
        Self {
            source: format!("{:?}", config.cluster.topology).to_ascii_lowercase(),
            primary,
            members,
            last_change: humantime::format_rfc3339_seconds(since).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_view_marks_the_configured_primary() {
        let mut config = Config::default();
        config.cluster.nodes = vec!["a:1".into(), "b:2".into()];
        config.cluster.primary = Some("b:2".into());
        let view = TopologyView::from_config(&config, SystemTime::UNIX_EPOCH);
        let roles: Vec<_> = view
            .members
            .iter()
            .map(|m| (m.node.as_str(), m.role))
            .collect();
        assert_eq!(roles, [("a:1", "replica"), ("b:2", "primary")]);
        assert_eq!(view.source, "static");
        assert_eq!(view.last_change, "1970-01-01T00:00:00Z");
    }
}
