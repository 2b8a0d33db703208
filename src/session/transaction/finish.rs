//! The end of a stretch: the connection goes back to the pool (or is
//! closed), and the client hears what it must (a lost server, shutdown,
//! its idle timeout).

use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::TransactionSession;
use super::relay::StretchEnd;
use super::settings::{SNAPSHOT_SQL, SessionSettings};
use crate::backend::query as internal;
use crate::listener::cancel::send_cancel;
use crate::pool::PooledConnection;
use crate::protocol::messages::{self, ClientError};

impl TransactionSession {
    /// Counts a pin the stretch made, and logs it once at debug.
    pub(super) fn count_pin(&mut self) {
        if let Some(reason) = self.state.new_pin.take() {
            self.shared.pins.count(reason);
            tracing::debug!(
                ?reason,
                client = self.registration.key().pid,
                "client pinned to its server connection"
            );
        }
    }

    /// Returns the connection (or not) after a stretch that `ended` (its
    /// last ReadyForQuery); false when the session ends.
    pub(super) async fn finish_stretch(
        &mut self,
        conn: PooledConnection,
        end: StretchEnd,
        ended: Instant,
    ) -> bool {
        if matches!(end, StretchEnd::Idle)
            && !self.state.settings_dirty
            && !self.state.pins.is_pinned()
        {
            // The common end: nothing to read back, nothing to say.
            conn.checkin_at(ended);
            return true;
        }
        // Boxed: the other ends await round trips and writes that would
        // otherwise size every request's future.
        Box::pin(self.finish_stretch_otherwise(conn, end, ended)).await
    }

    /// [`Self::finish_stretch`] for every end but the common one.
    async fn finish_stretch_otherwise(
        &mut self,
        mut conn: PooledConnection,
        end: StretchEnd,
        ended: Instant,
    ) -> bool {
        tracing::trace!(?end, server = %conn.addr, pinned = self.state.pins.is_pinned(), "stretch ended");
        match end {
            StretchEnd::Idle | StretchEnd::IdleDraining => {
                if self.state.settings_dirty {
                    self.snapshot_settings(&mut conn).await;
                }
                if self.state.pins.is_pinned() {
                    // Draining while pinned: the pinned state cannot survive.
                    conn.discard();
                } else {
                    conn.checkin_at(ended);
                }
                if matches!(end, StretchEnd::IdleDraining) {
                    self.say_goodbye().await;
                    return false;
                }
                true
            }
            StretchEnd::IdleTimeout => {
                // Only a pinned client idles inside a stretch; its pinned
                // state (temp tables, LISTEN, ...) cannot outlive it.
                conn.discard();
                self.close_idle().await;
                false
            }
            StretchEnd::Terminate => {
                let reusable = !self.state.pins.is_pinned() && self.state.tracker.is_empty();
                if reusable {
                    conn.checkin();
                } else {
                    conn.discard();
                }
                false
            }
            StretchEnd::ClientGone | StretchEnd::ClientProtocol(_) | StretchEnd::HardStop => {
                if !self.state.tracker.is_empty() {
                    send_cancel(&conn.cancel_target).await;
                }
                conn.discard();
                let message = match end {
                    StretchEnd::ClientProtocol(error) => {
                        crate::session::SessionError::Protocol(error).to_client()
                    }
                    StretchEnd::HardStop => Some(shutdown_error()),
                    _ => None,
                };
                if let Some(message) = message {
                    self.shared.metrics.errors_in(&message);
                    let _ = self.client.write_all(&self.state.to_client).await;
                    let _ = self.client.write_all(&message).await;
                }
                false
            }
            StretchEnd::ServerLost => self.server_lost(conn).await,
            // Handled before the stretch is finished.
            StretchEnd::Retry { .. } => {
                conn.discard();
                true
            }
            StretchEnd::ServerProtocol(error) => {
                tracing::warn!(%error, server = %conn.addr, "server sent an invalid message");
                self.server_lost(conn).await
            }
        }
    }

    /// The server connection died mid-stretch: the client gets an error for
    /// what was in flight and keeps its connection.
    pub(super) async fn server_lost(&mut self, conn: PooledConnection) -> bool {
        let addr = conn.addr.clone();
        conn.discard();
        let pending = self.state.tracker.pending_ready();
        self.state.tracker.clear();
        self.state.pins = Default::default();
        self.state.client_in.clear();
        // The request in flight may have been committing (an autocommit
        // statement, or COMMIT): then nobody can know whether it committed,
        // which PostgreSQL calls transaction_resolution_unknown.
        let error = ClientError {
            severity: "ERROR",
            code: "08007",
            message: format!(
                "connection to server {addr} was lost while a request was in flight: an open transaction was rolled back, but a commit in flight may or may not have happened"
            ),
        };
        if pending == 0 {
            // Nothing was in flight, but the client was in a transaction or
            // pinned: its next request learns that the state is gone.
            let said = self.state.lost_connection_error.take();
            let code = match said.as_deref() {
                Some(frame) if frame.windows(7).any(|w| w == b"C57P01\0") => "57P01",
                _ => "08006",
            };
            let owed = ClientError {
                severity: "ERROR",
                code,
                message: format!(
                    "connection to server {addr} was lost; the open transaction and session state on it are gone"
                ),
            };
            self.state.owed_error = Some(owed.to_bytes().freeze());
            return self.flush().await;
        }
        self.state.lost_connection_error = None;
        // A FATAL the server sent is relayed as it came; follow it with what
        // the client still waits for.
        let server_said_fatal = self.state.to_client.windows(7).any(|w| w == b"SFATAL\0");
        if !server_said_fatal {
            self.shared.metrics.error(error.code);
            error.encode(&mut self.state.to_client);
        }
        for _ in 0..pending {
            messages::ready_for_query_idle(&mut self.state.to_client);
        }
        self.flush().await
    }

    async fn snapshot_settings(&mut self, conn: &mut PooledConnection) {
        self.state.settings_dirty = false;
        match internal::query(conn, SNAPSHOT_SQL).await {
            Ok(result) => {
                let pairs = result
                    .rows
                    .into_iter()
                    .filter_map(|row| {
                        let mut columns = row.into_iter();
                        Some((columns.next()?, columns.next()?))
                    })
                    .collect();
                self.settings = SessionSettings::from_pairs(pairs);
                conn.settings_fingerprint = self.settings.fingerprint();
            }
            Err(error) => {
                tracing::warn!(%error, "could not read back session settings");
                conn.settings_fingerprint = u64::MAX;
            }
        }
    }

    /// Closes a client idle past `server.client_idle_timeout` (57P05).
    pub(super) async fn close_idle(&mut self) {
        tracing::debug!(
            client = self.registration.key().pid,
            "client closed after server.client_idle_timeout"
        );
        let error = crate::session::idle::error();
        self.shared.metrics.errors_in(&error);
        let _ = self.client.write_all(&error).await;
        let _ = self.client.shutdown().await;
    }

    pub(super) async fn say_goodbye(&mut self) {
        let error = shutdown_error();
        self.shared.metrics.errors_in(&error);
        let _ = self.client.write_all(&error).await;
        let _ = self.client.shutdown().await;
    }
}

pub(super) fn shutdown_error() -> Bytes {
    ClientError::fatal(
        "57P01",
        "terminating connection because switchyard is shutting down",
    )
    .to_bytes()
    .freeze()
}
