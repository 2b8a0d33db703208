//! Running a request again: on the primary after a replica refused it or
//! was lost before answering, or on the next primary after a failover; and
//! the window within which the primary's failures are waited out.

use std::time::Instant;

use bytes::BytesMut;

use super::TransactionSession;
use super::request::Request;
use crate::pool::PooledConnection;

impl TransactionSession {
    /// True while the primary's first failure of this request is younger
    /// than `routing.failover_timeout` (starting the clock on the first
    /// failure).
    pub(super) fn primary_may_be_failing(&mut self) -> bool {
        self.primary_failing_since.get_or_insert_with(Instant::now);
        self.within_failover_window()
    }

    /// True unless the primary has been failing the request at hand for
    /// `routing.failover_timeout` already.
    pub(super) fn within_failover_window(&self) -> bool {
        let timeout = self.proxy.config.routing.failover_timeout;
        self.primary_failing_since
            .is_none_or(|since| since.elapsed() < timeout)
    }

    /// A replica refused the request (or was lost before answering): run
    /// it again on the primary, and remember the statement when the
    /// refusal said it `writes`.
    pub(super) fn retry_on_primary(
        &mut self,
        conn: PooledConnection,
        reusable: bool,
        writes: bool,
        request: Request,
    ) {
        if reusable {
            conn.checkin();
        } else {
            conn.discard();
            self.state.tracker.clear();
        }
        if let Some((start, end)) = request.text.filter(|_| reusable && writes) {
            self.shared
                .learned_writes
                .insert(&self.state.replay[start..end]);
        }
        tracing::debug!(reusable, "retrying a replica's request on the primary");
        self.shared.metrics.retry_on_primary();
        self.restore_request();
        self.force_primary = true;
    }

    /// The primary stopped the request before it ran and is going away
    /// (shutting down, or demoted under us): run the request again on
    /// whichever node is primary next (waiting for one up to
    /// `routing.failover_timeout`, counted from the first failure).
    pub(super) fn rerun_after_failover(&mut self, conn: PooledConnection, reusable: bool) {
        if reusable {
            conn.checkin();
        } else {
            conn.discard();
            self.state.tracker.clear();
        }
        self.primary_may_be_failing();
        tracing::debug!(
            reusable,
            "the primary stopped a request before it ran; running it again"
        );
        self.shared.metrics.retry_on_primary();
        self.restore_request();
    }

    /// Puts the copy of the request taken for a re-run back in front of
    /// whatever the client sent since.
    pub(super) fn restore_request(&mut self) {
        let mut restored =
            BytesMut::with_capacity(self.state.replay.len() + self.state.client_in.len());
        restored.extend_from_slice(&self.state.replay);
        restored.extend_from_slice(&self.state.client_in);
        self.state.client_in = restored;
    }
}
