//! Auth passthrough (`[auth]`): the SCRAM verifier of a user who is not in
//! `[[users]]` is fetched from the primary with `auth.query`, run as
//! `auth.user`, and cached for `auth.cache_ttl`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use postgres_protocol::IsNull;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::scram::{ScramVerifier, VERIFIER_PREFIX};
use crate::backend::{self, Secret, ServerConnection};
use crate::config::Config;
use crate::protocol::frame::BodyReader;
use crate::protocol::io::read_message;
use crate::tls::Connector;

/// Largest message accepted in answer to the auth query.
const QUERY_MESSAGE_LIMIT: usize = 64 * 1024;

/// Fetches and caches verifiers.
pub struct Passthrough {
    user: String,
    secret: Secret,
    query: String,
    database: String,
    ttl: Duration,
    /// Nodes to run the lookup on, in order: the configured primary first
    /// (any node answers: roles and their verifiers replicate).
    nodes: Vec<String>,
    tls: Connector,
    connect_timeout: Duration,
    /// Touched once per login of a passthrough user, never per message.
    cache: Mutex<HashMap<String, (Instant, Option<ScramVerifier>)>>,
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passthrough")
            .field("user", &self.user)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Passthrough {
    /// The passthrough `config` asks for, if `auth.user` is set.
    pub fn from_config(config: &Config, tls: &Connector) -> Option<Self> {
        let auth = &config.auth;
        Some(Self {
            user: auth.user.clone()?,
            secret: Secret::Password(auth.password.clone()?),
            query: auth.query.clone(),
            database: auth.database.clone(),
            ttl: auth.cache_ttl,
            nodes: config
                .cluster
                .primary
                .iter()
                .chain(&config.cluster.nodes)
                .cloned()
                .collect(),
            tls: tls.clone(),
            connect_timeout: config.server.connect_timeout,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The verifier of `user`, or `None` when the query finds no SCRAM
    /// verifier for it (no such role, no password, or an md5 hash).
    pub async fn verifier(&self, user: &str) -> Result<Option<ScramVerifier>, String> {
        if let Some((fetched, verifier)) = self.lock().get(user)
            && fetched.elapsed() < self.ttl
        {
            return Ok(verifier.clone());
        }
        let text = self.fetch(user).await?;
        let verifier = text
            .as_deref()
            .filter(|t| t.starts_with(VERIFIER_PREFIX))
            .and_then(|t| ScramVerifier::parse(t).ok());
        if verifier.is_none() {
            tracing::info!(user, "auth query found no SCRAM verifier");
        }
        let mut cache = self.lock();
        // Bounded by the roles that exist plus the names tried within one TTL.
        cache.retain(|_, (fetched, _)| fetched.elapsed() < self.ttl);
        cache.insert(user.to_owned(), (Instant::now(), verifier.clone()));
        Ok(verifier)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<ScramVerifier>)>> {
        // Single inserts and removes cannot leave the map inconsistent.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn fetch(&self, user: &str) -> Result<Option<String>, String> {
        let params = [
            ("user".to_owned(), self.user.clone()),
            ("database".to_owned(), self.database.clone()),
            (
                "application_name".to_owned(),
                "switchyard auth_query".to_owned(),
            ),
        ];
        let mut last_error = "no node to run the auth query on".to_owned();
        let mut opened = None;
        for node in &self.nodes {
            match backend::connect(
                node,
                &params,
                Some(&self.secret),
                &self.tls,
                self.connect_timeout,
            )
            .await
            {
                Ok(conn) => {
                    opened = Some(conn);
                    break;
                }
                Err(error) => last_error = error.to_string(),
            }
        }
        let Some(mut conn) = opened else {
            return Err(last_error);
        };
        let result = tokio::time::timeout(self.connect_timeout, self.run_query(&mut conn, user))
            .await
            .map_err(|_| "auth query timed out".to_owned())
            .flatten();
        let _ = conn
            .stream
            .write_all(crate::protocol::messages::TERMINATE)
            .await;
        result
    }

    async fn run_query(
        &self,
        conn: &mut ServerConnection,
        user: &str,
    ) -> Result<Option<String>, String> {
        let mut out = BytesMut::with_capacity(256);
        let encode = |e: &dyn std::fmt::Display| format!("cannot encode auth query: {e}");
        frontend::parse("", &self.query, [], &mut out).map_err(|e| encode(&e))?;
        frontend::bind(
            "",
            "",
            [0],
            [user],
            |value, buf| {
                buf.put_slice(value.as_bytes());
                Ok(IsNull::No)
            },
            [0],
            &mut out,
        )
        .map_err(|_| "cannot encode auth query parameters".to_owned())?;
        frontend::execute("", 1, &mut out).map_err(|e| encode(&e))?;
        frontend::sync(&mut out);
        conn.stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = std::mem::take(&mut conn.pending);
        let mut found = None;
        loop {
            let frame = read_message(&mut conn.stream, &mut buf, QUERY_MESSAGE_LIMIT)
                .await
                .map_err(|e| e.to_string())?;
            match frame.tag {
                b'D' => found = second_column(&frame.body),
                b'E' => return Err("the auth query failed on the server".to_owned()),
                b'Z' => return Ok(found),
                _ => {}
            }
        }
    }
}

/// The second column of a DataRow as text; `None` when NULL or absent.
fn second_column(body: &[u8]) -> Option<String> {
    let mut row = BodyReader::new(body, "DataRow");
    let columns = row.bytes(2).ok()?;
    if i16::from_be_bytes([columns[0], columns[1]]) < 2 {
        return None;
    }
    let first = row.i32().ok()?;
    row.bytes(usize::try_from(first).unwrap_or(0)).ok()?;
    let len = usize::try_from(row.i32().ok()?).ok()?;
    String::from_utf8(row.bytes(len).ok()?.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_column_of_a_data_row() {
        let mut row = vec![0, 2, 0, 0, 0, 3];
        row.extend_from_slice(b"bob");
        row.extend_from_slice(&[0, 0, 0, 2]);
        row.extend_from_slice(b"pw");
        assert_eq!(second_column(&row).as_deref(), Some("pw"));
        let null = [0, 2, 0, 0, 0, 1, b'x', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(second_column(&null), None);
        assert_eq!(second_column(&[0, 2, 0]), None);
        assert_eq!(second_column(&[]), None);
    }
}
