//! Asking one node what it is: in recovery or not, timeline, WAL positions.
//!
//! One query per probe, on a connection kept open between probes (a
//! reconnect per probe would cost a login, and a fork on the server, every
//! few hundred milliseconds).

use std::time::Duration;

use thiserror::Error;

use crate::backend::query::{self, InternalError};
use crate::backend::{BackendError, Secret, ServerConnection, connect};
use crate::tls::Connector;

/// What a node said about itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Current WAL position (primary) or replay position (replica).
    pub lsn: Option<u64>,
    /// WAL received but perhaps not replayed (replica).
    pub receive_lsn: Option<u64>,
    /// Timeline: from the current WAL file name on a primary, from the WAL
    /// receiver on a replica.
    pub timeline: Option<u32>,
    /// Seconds since the last replayed transaction's commit (replica).
    pub replay_age: Option<f64>,
}

/// The probe query. `pg_walfile_name()` fails during recovery, hence the
/// CASE; its first 8 hex digits are the timeline, readable without the
/// superuser-only `pg_control_checkpoint()`.
pub const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
     pg_last_wal_receive_lsn(), \
     CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver) \
          ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
     extract(epoch FROM now() - pg_last_xact_replay_timestamp())";

/// Why a probe failed.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// Could not connect or log in.
    #[error(transparent)]
    Connect(#[from] BackendError),
    /// The probe query failed.
    #[error("probe query failed: {0}")]
    Query(#[from] InternalError),
    /// No answer within the probe timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer did not have the expected shape.
    #[error("unexpected probe answer: {0:?}")]
    Answer(Vec<String>),
}

/// How probes log in.
#[derive(Clone, Debug)]
pub struct ProbeLogin {
    /// Startup parameters (user, database, application_name).
    pub params: Vec<(String, String)>,
    /// Password, if the server asks for one.
    pub secret: Option<Secret>,
    /// TLS to the nodes (`[server_tls]`).
    pub tls: Connector,
}

impl ProbeLogin {
    /// Logs in as `user` to `database`, naming the connection in pg_stat_activity.
    pub fn new(user: &str, password: Option<&str>, database: &str, tls: Connector) -> Self {
        Self {
            params: vec![
                ("user".into(), user.into()),
                ("database".into(), database.into()),
                ("application_name".into(), "switchyard-monitor".into()),
            ],
            secret: password.map(|p| Secret::Password(p.into())),
            tls,
        }
    }
}

/// A node's probe connection, opened on first use and after a failure.
#[derive(Debug, Default)]
pub struct Prober {
    conn: Option<ServerConnection>,
}

impl Prober {
    /// Probes `addr` within `timeout`; a failure closes the connection.
    pub async fn probe(
        &mut self,
        addr: &str,
        login: &ProbeLogin,
        timeout: Duration,
    ) -> Result<Observation, ProbeError> {
        let result = tokio::time::timeout(timeout, self.probe_once(addr, login, timeout))
            .await
            .unwrap_or(Err(ProbeError::Timeout(timeout)));
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn probe_once(
        &mut self,
        addr: &str,
        login: &ProbeLogin,
        timeout: Duration,
    ) -> Result<Observation, ProbeError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(
                connect(
                    addr,
                    &login.params,
                    login.secret.as_ref(),
                    &login.tls,
                    timeout,
                )
                .await?,
            ),
        };
        let result = query::query(conn, PROBE_SQL).await?;
        let row = result.rows.into_iter().next().unwrap_or_default();
        parse_row(&row).ok_or(ProbeError::Answer(row))
    }
}

/// Reads the probe query's row (text format; NULL arrives as "").
pub fn parse_row(row: &[String]) -> Option<Observation> {
    let [in_recovery, lsn, receive_lsn, timeline, replay_age] = row else {
        return None;
    };
    let in_recovery = match in_recovery.as_str() {
        "t" => true,
        "f" => false,
        _ => return None,
    };
    Some(Observation {
        in_recovery,
        lsn: parse_lsn(lsn),
        receive_lsn: parse_lsn(receive_lsn),
        timeline: timeline.parse().ok(),
        replay_age: replay_age.parse().ok(),
    })
}

/// Parses PostgreSQL's `XXX/YYYYYYYY` LSN notation.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some((high << 32) | low)
}

/// Formats an LSN the way PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn lsns_parse_and_format_like_postgres() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn(""), None);
        assert_eq!(parse_lsn("zz/1"), None);
        assert_eq!(parse_lsn("1FFFFFFFF/0"), None);
    }

    #[test]
    fn primary_and_replica_rows_parse() {
        let primary = parse_row(&row(&["f", "0/3000060", "", "1", ""])).unwrap();
        assert!(!primary.in_recovery);
        assert_eq!(primary.timeline, Some(1));
        assert_eq!(primary.receive_lsn, None);
        let replica = parse_row(&row(&["t", "0/3000000", "0/3000060", "2", "0.25"])).unwrap();
        assert!(replica.in_recovery);
        assert_eq!(replica.replay_age, Some(0.25));
        assert!(parse_row(&row(&["x", "", "", "", ""])).is_none());
        assert!(parse_row(&row(&["t"])).is_none());
    }
}
