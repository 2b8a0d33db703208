//! Patroni's `GET /cluster` document and its mapping to [`Claims`].
//!
//! Shape (Patroni 3.x and 4.x):
//! `{"members": [{"name", "role", "state", "host", "port", "timeline", "lag", ...}], ...}`.
//! Only the fields the proxy needs are read; unknown fields are ignored so
//! newer Patroni versions keep working.

use serde::Deserialize;

use super::error::PatroniError;
use crate::topology::{ClaimedRole, Claims, MemberClaim};

/// [`Claims::source`] of every claim this watcher makes.
pub const SOURCE: &str = "patroni";

/// The parts of Patroni's `GET /cluster` answer the proxy uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterDocument {
    /// Every member Patroni knows (from the DCS), leader included.
    #[serde(default)]
    pub members: Vec<PatroniMember>,
    /// Whether Patroni's automatic failover is paused (maintenance mode).
    #[serde(default)]
    pub pause: bool,
}

/// One entry of `members`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PatroniMember {
    /// Patroni member name (`name:` in its config).
    pub name: String,
    /// `leader`, `standby_leader`, `replica`, `sync_standby`,
    /// `quorum_standby`, ... (`master` in Patroni before 2.0).
    pub role: String,
    /// `running` (any role in 3.x), `streaming` (replicas in 4.x),
    /// `starting`, `stopped`, `crashed`, `creating replica`, ...
    #[serde(default)]
    pub state: String,
    /// PostgreSQL host (`postgresql.connect_address`).
    #[serde(default)]
    pub host: String,
    /// PostgreSQL port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Timeline the member reports.
    #[serde(default)]
    pub timeline: Option<u32>,
    /// Replication lag in bytes; Patroni writes the string `"unknown"` when
    /// it cannot tell, which is kept as `None`.
    #[serde(default, deserialize_with = "lag_bytes")]
    pub lag: Option<u64>,
}

impl PatroniMember {
    /// The role as a claim: `leader` (and Patroni 1.x `master`) is the
    /// primary. A `standby_leader` leads a standby cluster and is itself in
    /// recovery, so it is a replica here.
    pub fn claimed_role(&self) -> ClaimedRole {
        match self.role.as_str() {
            "leader" | "master" | "primary" => ClaimedRole::Primary,
            "replica" | "sync_standby" | "quorum_standby" | "standby_leader" => {
                ClaimedRole::Replica
            }
            _ => ClaimedRole::Unknown,
        }
    }

    /// Whether Patroni says PostgreSQL is serving: state `running` (3.x) or
    /// `streaming` (4.x replicas).
    pub fn is_ready(&self) -> bool {
        matches!(self.state.as_str(), "running" | "streaming")
    }

    /// `host:port` (`[host]:port` for IPv6), or `None` when Patroni did not
    /// publish a connect address.
    pub fn addr(&self) -> Option<String> {
        let port = self.port?;
        if self.host.is_empty() {
            return None;
        }
        if self.host.contains(':') && !self.host.starts_with('[') {
            Some(format!("[{}]:{port}", self.host))
        } else {
            Some(format!("{}:{port}", self.host))
        }
    }
}

/// Reads `lag` as bytes; anything but a non-negative integer is `None`.
fn lag_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(value.and_then(|v| v.as_u64()))
}

/// Parses a `GET /cluster` body.
pub fn parse_cluster(body: &[u8]) -> Result<ClusterDocument, PatroniError> {
    serde_json::from_slice(body).map_err(PatroniError::Parse)
}

/// Maps a `/cluster` document to claims.
///
/// Members without a connect address are left out (the proxy could not
/// reach them). Writes are held unless exactly one member is the leader
/// and Patroni says it is running: with no leader (failover under way, or
/// a standby cluster) there is nowhere to send writes.
pub fn to_claims(doc: &ClusterDocument) -> Claims {
    let mut members: Vec<MemberClaim> = doc
        .members
        .iter()
        .filter_map(|m| {
            Some(MemberClaim {
                name: m.name.clone(),
                addr: m.addr()?,
                role: m.claimed_role(),
                timeline: m.timeline,
                ready: m.is_ready(),
            })
        })
        .collect();
    // Sorted so that a reordered but identical answer is not a change.
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut claims = Claims {
        source: SOURCE,
        members,
        hold_writes: false,
    };
    claims.hold_writes = !claims.claimed_primary().is_some_and(|p| p.ready);
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from Patroni 3.0.2 (Debian) on loopback, healthy.
    const HEALTHY_3: &str = r#"{"members": [{"name": "m1", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:18001/patroni", "host": "127.0.0.1", "port": 17001, "timeline": 1, "lag": 0}, {"name": "m2", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:18002/patroni", "host": "127.0.0.1", "port": 17002, "timeline": 1}, {"name": "m3", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:18003/patroni", "host": "127.0.0.1", "port": 17003, "timeline": 1, "lag": 0}]}"#;

    /// Patroni 4.x shape: replicas report `streaming`, lag may be "unknown".
    const HEALTHY_4: &str = r#"{"members": [{"name": "pg-a", "role": "leader", "state": "running", "api_url": "http://10.0.0.5:8008/patroni", "host": "10.0.0.5", "port": 5432, "timeline": 3}, {"name": "pg-b", "role": "sync_standby", "state": "streaming", "api_url": "http://10.0.0.6:8008/patroni", "host": "10.0.0.6", "port": 5432, "timeline": 3, "receive_lag": 0, "replay_lag": 0, "lag": 0}, {"name": "pg-c", "role": "replica", "state": "starting", "host": "10.0.0.7", "port": 5432, "lag": "unknown"}], "scope": "demo"}"#;

    /// Recorded right after `kill -9` of the leader's Patroni and PostgreSQL
    /// and the leader key's expiry: no leader yet.
    const NO_LEADER: &str = r#"{"members": [{"name": "m1", "role": "replica", "state": "running", "host": "127.0.0.1", "port": 17001, "timeline": 1, "lag": 0}, {"name": "m3", "role": "replica", "state": "running", "host": "127.0.0.1", "port": 17003, "timeline": 1, "lag": 0}]}"#;

    fn claims(text: &str) -> Claims {
        to_claims(&parse_cluster(text.as_bytes()).unwrap())
    }

    #[test]
    fn leader_is_the_claimed_primary_in_patroni_3() {
        let c = claims(HEALTHY_3);
        assert_eq!(c.source, "patroni");
        assert!(!c.hold_writes);
        let primary = c.claimed_primary().unwrap();
        assert_eq!(
            (primary.name.as_str(), primary.addr.as_str()),
            ("m2", "127.0.0.1:17002")
        );
        assert_eq!(primary.timeline, Some(1));
        let replicas: Vec<_> = c
            .members
            .iter()
            .filter(|m| m.role == ClaimedRole::Replica && m.ready)
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(replicas, ["m1", "m3"]);
    }

    #[test]
    fn streaming_replicas_of_patroni_4_are_ready() {
        let doc = parse_cluster(HEALTHY_4.as_bytes()).unwrap();
        assert_eq!(doc.members[1].lag, Some(0));
        assert_eq!(doc.members[2].lag, None, "\"unknown\" lag is no number");
        let c = to_claims(&doc);
        assert!(!c.hold_writes);
        assert_eq!(c.claimed_primary().unwrap().addr, "10.0.0.5:5432");
        let b = &c.members[1];
        assert_eq!((b.role, b.ready), (ClaimedRole::Replica, true));
        let starting = &c.members[2];
        assert_eq!(
            (starting.role, starting.ready),
            (ClaimedRole::Replica, false)
        );
    }

    #[test]
    fn no_leader_holds_writes() {
        let c = claims(NO_LEADER);
        assert!(c.claimed_primary().is_none());
        assert!(c.hold_writes);
        assert_eq!(c.members.len(), 2);
    }

    #[test]
    fn a_leader_that_is_not_running_holds_writes() {
        let c = claims(&HEALTHY_3.replace(
            r#""role": "leader", "state": "running""#,
            r#""role": "leader", "state": "stopped""#,
        ));
        assert_eq!(c.claimed_primary().unwrap().name, "m2");
        assert!(c.hold_writes);
    }

    #[test]
    fn standby_leader_is_no_primary() {
        let c = claims(&HEALTHY_3.replace(r#""leader""#, r#""standby_leader""#));
        assert!(c.claimed_primary().is_none());
        assert!(c.hold_writes);
        assert!(c.members.iter().all(|m| m.role == ClaimedRole::Replica));
    }

    #[test]
    fn member_order_does_not_matter() {
        let doc = parse_cluster(HEALTHY_3.as_bytes()).unwrap();
        let mut reversed = doc.clone();
        reversed.members.reverse();
        assert_eq!(to_claims(&doc), to_claims(&reversed));
    }

    #[test]
    fn members_without_address_are_left_out_and_ipv6_is_bracketed() {
        let text = r#"{"members": [{"name": "a", "role": "leader", "state": "running", "host": "::1", "port": 5432}, {"name": "b", "role": "replica", "state": "running"}]}"#;
        let c = claims(text);
        assert_eq!(c.members.len(), 1);
        assert_eq!(c.members[0].addr, "[::1]:5432");
    }

    #[test]
    fn unknown_roles_are_unknown_and_garbage_is_an_error() {
        let c = claims(&HEALTHY_3.replace(r#""role": "replica""#, r#""role": "witness""#));
        assert!(c.members.iter().any(|m| m.role == ClaimedRole::Unknown));
        assert!(parse_cluster(b"<html>").is_err());
        assert!(parse_cluster(br#"{"members": [{"role": "leader"}]}"#).is_err());
        assert!(claims("{}").members.is_empty());
    }
}
