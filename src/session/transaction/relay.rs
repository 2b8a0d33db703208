//! One stretch of a client's traffic on a borrowed server connection, from
//! checkout to the next idle point (ReadyForQuery 'I' with nothing in
//! flight and no pin).
//!
//! Unlike session mode, messages are handled one by one: named statements
//! are renamed and re-prepared, and some replies are made up by the proxy
//! (see [`super::tracker`]). Bytes are copied into reusable output buffers,
//! never allocated per message; both directions are written as the peers
//! accept them, so neither a slow client nor a busy server can deadlock the
//! other, and each output buffer stops its input at [`HIGH_WATER`].

use std::collections::HashSet;

use super::super::signal::Signal;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::idle::IdleTimeout;
use super::catalog::PoolCatalog;
use super::pins::Pins;
use super::statements::{self, ClientStatement, ClientStatements};
use super::tracker::{Expect, ResponseTracker, Verdict};
use crate::backend::ServerConnection;
use crate::metrics::Metrics;
use crate::protocol::ProtocolError;
use crate::protocol::frame::{HEADER_LEN, check_length};
use crate::router::access::WriteFunctions;
use crate::router::effects::{SessionEffects, UnpinKind};
use crate::router::memo;
use crate::tls::ClientStream;

/// Output beyond this stops reading the input that feeds it.
pub const HIGH_WATER: usize = 64 * 1024;
/// Server messages at least this large are streamed rather than buffered whole.
const STREAM_THRESHOLD: usize = 32 * 1024;

/// What ends a session from outside its traffic, set up once per session:
/// the two shutdown signals (creating a cancellation future registers a
/// waiter under the token's lock, and polling one locks it too, neither of
/// which may happen per message), and the idle timeout's timer.
pub struct ShutdownWatch {
    /// Completes when shutdown starts draining.
    pub draining: Signal,
    /// Completes when the shutdown timeout expires.
    pub hard_stop: Signal,
    /// `server.client_idle_timeout`, judged by [`ClientState::idle_since`].
    pub idle: IdleTimeout,
}

impl ShutdownWatch {
    /// Watches `shutdown`'s tokens, and idleness beyond `idle_timeout` (zero: never).
    pub fn new(shutdown: &crate::proxy::Shutdown, idle_timeout: std::time::Duration) -> Self {
        Self {
            draining: Signal::new(shutdown.draining.clone()),
            hard_stop: Signal::new(shutdown.hard_stop.clone()),
            idle: IdleTimeout::new(idle_timeout),
        }
    }
}

/// Why a stretch ended.
#[derive(Debug)]
pub enum StretchEnd {
    /// Idle point reached: the connection can go back to the pool.
    Idle,
    /// Idle point reached while shutdown is draining.
    IdleDraining,
    /// The client sent Terminate.
    Terminate,
    /// The client's socket closed or failed.
    ClientGone,
    /// The client sent a frame that cannot be handled.
    ClientProtocol(ProtocolError),
    /// The server connection closed or failed.
    ServerLost,
    /// The server sent a frame that cannot be handled.
    ServerProtocol(ProtocolError),
    /// The shutdown timeout expired.
    HardStop,
    /// The client, pinned to its connection, sat idle past
    /// `server.client_idle_timeout`.
    IdleTimeout,
    /// The node stopped the request before any of it ran or any of the
    /// answer reached the client: a replica refused the read as writing
    /// (25006) or as unsupported there (0A000, e.g. a serializable
    /// transaction) or was lost, or the primary terminated it (57P01) or
    /// turned out to be in recovery (25006). Run it again on the primary, or, if
    /// the caller decides against that, deliver the held answer, which is
    /// left in `to_client`. `reusable` says whether the connection is still
    /// good (the answer ended with ReadyForQuery).
    Retry {
        /// The connection is idle and healthy.
        reusable: bool,
        /// The refusal was 25006: the statement writes, whoever sends it.
        writes: bool,
    },
}

/// How a stretch runs, decided by the router before it starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plan {
    /// The node is not the primary: forward one request at a time, and end
    /// the stretch at the first idle point, so that a later request that
    /// writes is routed afresh instead of following this one.
    pub gated: bool,
    /// The first request may be re-run on the primary: hold the answer back
    /// until it is known not to be a refusal (first row, ReadyForQuery, or
    /// on the primary the first CommandComplete, after which something may
    /// have committed).
    pub retryable: bool,
}

/// What a client session carries from one stretch to the next.
#[derive(Debug, Default)]
pub struct ClientState {
    /// The client's named statements.
    pub statements: ClientStatements,
    /// What pins the client to its connection.
    pub pins: Pins,
    /// A statement in this stretch may have changed session settings.
    pub settings_dirty: bool,
    /// Requests in flight.
    pub tracker: ResponseTracker,
    /// Bytes from the client not yet handled.
    pub client_in: BytesMut,
    /// Bytes for the client not yet written.
    pub to_client: BytesMut,
    /// An error the server sent while nothing was in flight.
    pub lost_connection_error: Option<bytes::Bytes>,
    /// An error owed to the client's next request (its connection died
    /// between requests, taking its transaction or pinned state with it).
    pub owed_error: Option<bytes::Bytes>,
    /// Newly pinned for this reason (for counting and logging).
    pub new_pin: Option<crate::router::effects::PinReason>,
    /// A copy of the request a replica is running, in case the primary
    /// must run it instead (reused buffer).
    pub replay: BytesMut,
    /// Client bytes this stretch (for metrics).
    pub traffic: crate::admin::hooks::Traffic,
    /// When the client became idle between transactions (nothing sent
    /// since); `None` while it is not, or when no idle timeout is set.
    pub idle_since: Option<tokio::time::Instant>,
}

/// Per-stretch scratch state.
struct Stretch<'a> {
    state: &'a mut ClientState,
    catalog: &'a PoolCatalog,
    functions: &'a WriteFunctions,
    /// Errors relayed and prepared-statement cache use are counted here.
    metrics: &'a Metrics,
    plan: Plan,
    /// Gated stretch: a request was sent and its ReadyForQuery is due.
    gate_closed: bool,
    /// Output to the client is held back (see [`Plan::retryable`]).
    holding: bool,
    /// The held answer is a refusal: retry on the primary.
    refused: bool,
    /// The refusal was 25006 (the statement writes).
    refused_as_write: bool,
    prepared: &'a mut HashSet<u64>,
    /// The connection's own buffers (see `ServerConnection::outgoing`).
    to_server: &'a mut BytesMut,
    server_in: &'a mut BytesMut,
    server_streaming: usize,
    at_ready: bool,
    status: u8,
    limit: usize,
    /// When the request now awaiting a ReadyForQuery was sent (query time
    /// for SHOW STATS: one clock read per request and per ReadyForQuery).
    query_clock: Option<std::time::Instant>,
}

enum Event {
    ClientRead(std::io::Result<usize>),
    ServerRead(std::io::Result<usize>),
    ClientWrote(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    Draining,
    HardStop,
    IdleTimeout,
}

/// Relays until the next idle point (or the end of the session).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &mut ClientStream,
    conn: &mut ServerConnection,
    state: &mut ClientState,
    catalog: &PoolCatalog,
    functions: &WriteFunctions,
    metrics: &Metrics,
    plan: Plan,
    limit: usize,
    shutdown: &mut ShutdownWatch,
    lent_at: std::time::Instant,
) -> StretchEnd {
    let ServerConnection {
        stream,
        prepared,
        pending,
        outgoing,
        ..
    } = conn;
    // Whatever a broken stretch left is void; a connection that kept any is
    // not reused, but be sure.
    outgoing.clear();
    let mut stretch = Stretch {
        state,
        catalog,
        functions,
        metrics,
        plan,
        gate_closed: false,
        holding: plan.retryable,
        refused: false,
        refused_as_write: false,
        prepared,
        to_server: outgoing,
        server_in: pending,
        server_streaming: 0,
        at_ready: true,
        status: b'I',
        limit,
        // The first request's clock starts when the connection was lent
        // (the checkout read the clock then): one clock read fewer per
        // transaction; what lies between is the settings' round trip, if any.
        query_clock: Some(lent_at),
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = stream.split();
    let mut drain_seen = false;
    loop {
        match stretch.handle_client() {
            Ok(true) => {}
            Ok(false) => return StretchEnd::Terminate,
            Err(error) => return StretchEnd::ClientProtocol(error),
        }
        if let Err(error) = stretch.handle_server() {
            return StretchEnd::ServerProtocol(error);
        }
        if stretch.refused && stretch.at_ready && stretch.state.tracker.is_empty() {
            return StretchEnd::Retry {
                reusable: true,
                writes: stretch.refused_as_write,
            };
        }
        let settled = stretch.settled();
        if settled && !stretch.state.pins.is_pinned() {
            // The transaction is over; its last bytes (ReadyForQuery) are
            // the caller's to write, after it has counted the transaction,
            // so that a client never sees the end of a transaction before
            // the metrics do.
            stretch.state.traffic.sent += stretch.state.to_client.len() as u64;
            return StretchEnd::Idle;
        }
        let idle = settled && stretch.state.to_client.is_empty();
        if idle && drain_seen {
            return StretchEnd::IdleDraining;
        }
        // Pinned and idle: the idle timeout applies here too. The clock is
        // read once as the client becomes idle, not per message.
        if !idle {
            stretch.state.idle_since = None;
        } else if stretch.state.idle_since.is_none() && shutdown.idle.is_enabled() {
            stretch.state.idle_since = Some(tokio::time::Instant::now());
        }
        let idle_since = stretch.state.idle_since;
        reserve(&mut stretch.state.client_in);
        reserve(stretch.server_in);
        let s = &mut stretch;
        let event = tokio::select! {
            biased;
            () = &mut shutdown.hard_stop => Event::HardStop,
            () = &mut shutdown.draining, if !drain_seen => Event::Draining,
            r = client_write.write(&s.state.to_client), if !s.holding && !s.state.to_client.is_empty() => Event::ClientWrote(r),
            r = server_write.write(s.to_server), if !s.to_server.is_empty() => Event::ServerWrote(r),
            r = server_read.read_buf(&mut *s.server_in), if s.state.to_client.len() < HIGH_WATER => Event::ServerRead(r),
            r = client_read.read_buf(&mut s.state.client_in), if !s.gate_closed && s.to_server.len() < HIGH_WATER => Event::ClientRead(r),
            () = shutdown.idle.expired(|| idle_since), if idle => Event::IdleTimeout,
        };
        match event {
            Event::HardStop => return StretchEnd::HardStop,
            Event::IdleTimeout => return StretchEnd::IdleTimeout,
            Event::Draining => drain_seen = true,
            Event::ClientWrote(Ok(n)) if n > 0 => {
                stretch.state.traffic.sent += n as u64;
                stretch.state.to_client.advance(n);
            }
            Event::ServerWrote(Ok(n)) if n > 0 => stretch.to_server.advance(n),
            Event::ClientRead(Ok(n)) if n > 0 => {}
            Event::ServerRead(Ok(n)) if n > 0 => {}
            Event::ClientWrote(_) | Event::ClientRead(_) => return StretchEnd::ClientGone,
            Event::ServerWrote(_) | Event::ServerRead(_) => {
                // A replica's read can always run again; on the primary
                // only a request the server said it stopped before
                // committing (a lost connection alone may follow a commit).
                if stretch.holding && (stretch.plan.gated || stretch.refused) {
                    // Nothing of the answer reached the client: the primary
                    // can answer it instead.
                    return StretchEnd::Retry {
                        reusable: false,
                        writes: false,
                    };
                }
                // Keep what the server said last (e.g. its FATAL) for the client.
                let _ = stretch.handle_server();
                if stretch.holding {
                    // Delivered after all: count its errors now.
                    stretch.metrics.errors_in(&stretch.state.to_client);
                }
                return StretchEnd::ServerLost;
            }
        }
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
}

/// Tag and length of the complete frame at the front of `buf`, if there is one.
pub fn complete_frame(buf: &[u8], limit: usize) -> Result<Option<(u8, usize)>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let body = check_length(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]), limit)?;
    Ok((buf.len() >= HEADER_LEN + body).then_some((buf[0], HEADER_LEN + body)))
}

impl Stretch<'_> {
    /// Idle point reached, but for output the client has yet to be sent
    /// (nothing held back: a held answer ends with a retry, or is
    /// released by its ReadyForQuery).
    fn settled(&self) -> bool {
        self.at_ready
            && self.status == b'I'
            && !self.holding
            && self.state.tracker.is_empty()
            && (self.gate_closed || self.state.client_in.is_empty())
            && self.to_server.is_empty()
            && self.server_in.is_empty()
            && self.server_streaming == 0
    }

    /// Handles every complete client frame; `Ok(false)` on Terminate.
    fn handle_client(&mut self) -> Result<bool, ProtocolError> {
        // Taken out so frames can be read in place while the rest of the
        // state is updated; put back (minus what was handled) below.
        let mut input = std::mem::take(&mut self.state.client_in);
        let mut pos = 0;
        let result = loop {
            if self.gate_closed {
                break Ok(true);
            }
            let (tag, len) = match complete_frame(&input[pos..], self.limit) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(true),
                Err(error) => break Err(error),
            };
            if tag == b'X' {
                pos += len;
                break Ok(false);
            }
            if matches!(tag, b'Q' | b'S') {
                self.state.traffic.queries += 1;
                self.query_clock.get_or_insert_with(std::time::Instant::now);
            }
            if let Err(error) = self.client_frame(tag, &input[pos..pos + len]) {
                break Err(error);
            }
            pos += len;
            if self.plan.gated && matches!(tag, b'Q' | b'S' | b'F') {
                self.gate_closed = true;
            }
            self.release_replies();
        };
        input.advance(pos);
        self.state.traffic.received += pos as u64;
        self.state.client_in = input;
        result
    }

    fn client_frame(&mut self, tag: u8, frame: &[u8]) -> Result<(), ProtocolError> {
        let body = &frame[HEADER_LEN..];
        if tag != b'H' {
            self.at_ready = false;
        }
        let expect = match tag {
            b'Q' => {
                let sql = body.strip_suffix(b"\0").unwrap_or(body);
                self.note_effects(&memo::session_effects(sql));
                Some(Expect::Ready)
            }
            b'P' => return self.client_parse(frame),
            b'B' => return self.client_bind(frame),
            b'D' => return self.client_describe(frame),
            b'C' => return self.client_close(frame),
            b'E' => Some(Expect::Execute),
            b'S' | b'F' => Some(Expect::Ready),
            _ => None,
        };
        self.to_server.extend_from_slice(frame);
        if let Some(expect) = expect {
            self.state.tracker.push(expect);
        }
        Ok(())
    }

    fn note_effects(&mut self, effects: &SessionEffects) {
        if effects.sets_session_state {
            self.state.settings_dirty = true;
        }
        if effects.unpins.contains(UnpinKind::DiscardAll)
            || effects.unpins.contains(UnpinKind::DeallocateAll)
        {
            // The server drops every prepared statement, ours included.
            self.prepared.clear();
            self.state.statements.clear();
            self.state.settings_dirty = true;
        }
        if let Some(reason) = self.state.pins.note_sent(effects) {
            self.state.new_pin = Some(reason);
        }
    }

    fn client_parse(&mut self, frame: &[u8]) -> Result<(), ProtocolError> {
        let parse = statements::read_parse(&frame[HEADER_LEN..])?;
        if parse.name.is_empty() {
            self.note_effects(&memo::session_effects(parse.query));
            self.to_server.extend_from_slice(frame);
            self.state.tracker.push(Expect::Parse(0));
            return Ok(());
        }
        let statement = ClientStatement::from_parse(&parse, self.functions);
        let internal = statement.internal;
        self.state.statements.define(parse.name, statement);
        let hit = self.prepared.contains(&internal);
        self.state.traffic.count_prepared(hit);
        if hit {
            self.state
                .tracker
                .push(Expect::Reply(super::tracker::Synthetic::ParseComplete));
        } else {
            statements::write_parse(self.to_server, internal, parse.definition);
            self.prepared.insert(internal);
            self.state.tracker.push(Expect::Parse(internal));
        }
        Ok(())
    }

    /// Makes sure the server has the client's statement `name`; returns its hash.
    fn ensure_prepared(&mut self, name: &[u8]) -> Option<u64> {
        let statement = self.state.statements.get(name)?;
        let (internal, pins, sets) = (
            statement.internal,
            statement.pins,
            statement.sets_session_state,
        );
        let hit = self.prepared.contains(&internal);
        self.state.traffic.count_prepared(hit);
        if !hit {
            statements::write_parse(self.to_server, internal, &statement.definition);
            self.prepared.insert(internal);
            self.state.tracker.push(Expect::InjectedParse(internal));
        }
        if sets {
            self.state.settings_dirty = true;
        }
        if pins {
            // The statement's text pins; re-read it for the exact reason.
            let query = self
                .state
                .statements
                .get(name)
                .map(|s| s.definition.clone());
            if let Some(definition) = query {
                let text = definition.split(|&b| b == 0).next().unwrap_or_default();
                self.note_effects(&memo::session_effects(text));
            }
        }
        Some(internal)
    }

    fn client_bind(&mut self, frame: &[u8]) -> Result<(), ProtocolError> {
        let bind = statements::read_bind(&frame[HEADER_LEN..])?;
        let named = !bind.statement.is_empty();
        match named
            .then(|| self.ensure_prepared(bind.statement))
            .flatten()
        {
            Some(internal) => {
                statements::write_bind(self.to_server, bind.portal, internal, bind.rest)
            }
            // Unnamed, or unknown: the server's own error names the client's statement.
            None => self.to_server.extend_from_slice(frame),
        }
        self.state.tracker.push(Expect::Bind);
        Ok(())
    }

    fn client_describe(&mut self, frame: &[u8]) -> Result<(), ProtocolError> {
        let (kind, name) = statements::read_target(&frame[HEADER_LEN..], "Describe")?;
        let internal = (kind == b'S' && !name.is_empty())
            .then(|| self.ensure_prepared(name))
            .flatten();
        match internal {
            Some(internal) => statements::write_describe_statement(self.to_server, internal),
            None => self.to_server.extend_from_slice(frame),
        }
        self.state.tracker.push(Expect::Describe);
        Ok(())
    }

    fn client_close(&mut self, frame: &[u8]) -> Result<(), ProtocolError> {
        let (kind, name) = statements::read_target(&frame[HEADER_LEN..], "Close")?;
        if kind == b'S' && !name.is_empty() {
            // The server-side statement stays cached for other clients; closing
            // a statement that does not exist is not an error in PostgreSQL.
            self.state.statements.remove(name);
            self.state
                .tracker
                .push(Expect::Reply(super::tracker::Synthetic::CloseComplete));
            return Ok(());
        }
        self.to_server.extend_from_slice(frame);
        self.state.tracker.push(Expect::Close);
        Ok(())
    }

    /// Handles every complete (or streamable) server frame.
    fn handle_server(&mut self) -> Result<(), ProtocolError> {
        let mut input = std::mem::take(&mut *self.server_in);
        let result = self.server_frames(&mut input);
        *self.server_in = input;
        result
    }

    fn server_frames(&mut self, input: &mut BytesMut) -> Result<(), ProtocolError> {
        let mut pos = 0;
        let result = loop {
            let rest = &input[pos..];
            if self.server_streaming > 0 {
                let n = self.server_streaming.min(rest.len());
                self.state.to_client.extend_from_slice(&rest[..n]);
                pos += n;
                self.server_streaming -= n;
                if self.server_streaming > 0 {
                    break Ok(());
                }
                continue;
            }
            if rest.len() < HEADER_LEN {
                break Ok(());
            }
            let tag = rest[0];
            let total = match check_length(
                u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]),
                self.limit,
            ) {
                Ok(body) => HEADER_LEN + body,
                Err(error) => break Err(error),
            };
            if rest.len() < total {
                if total >= STREAM_THRESHOLD && matches!(tag, b'D' | b'd') {
                    // Rows and COPY data need no inspection: stream them.
                    self.release_held();
                    self.release_replies();
                    self.server_streaming = total;
                    continue;
                }
                break Ok(());
            }
            self.server_frame(tag, &rest[..total]);
            pos += total;
        };
        input.advance(pos);
        if let Some(header) = input.get(1..5) {
            let wanted =
                u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize + 1;
            if self.server_streaming == 0 && wanted < STREAM_THRESHOLD {
                input.reserve(wanted.saturating_sub(input.len()));
            }
        }
        result
    }

    /// While the answer is held: a 25006 refusal means retry (if the
    /// request ends outside a transaction), so does a replica's 0A000
    /// (a standby refuses serializable transactions, which a role's or
    /// database's default can make of any read), and so does the primary
    /// terminating the connection (57P01) before any CommandComplete; a
    /// row, COPY data, or a large answer means the result is real and is
    /// released, and on the primary so does a CommandComplete.
    fn watch_held(&mut self, tag: u8, frame: &[u8]) {
        let on_primary = !self.plan.gated;
        match tag {
            b'E' => match crate::protocol::messages::error_code(&frame[HEADER_LEN..]) {
                Some(b"25006") => {
                    self.refused = true;
                    self.refused_as_write = true;
                }
                // Not remembered as a write: it is the session's setting,
                // not the statement, that the standby refused.
                Some(b"0A000") if !on_primary => self.refused = true,
                // PostgreSQL commits an implicit transaction before the
                // last CommandComplete of a Query, or at Sync after every
                // Execute's, and holds interrupts while it commits: a
                // termination (shutdown, demotion, pg_terminate_backend)
                // reported before any CommandComplete committed nothing.
                Some(b"57P01") if on_primary => self.refused = true,
                _ => {}
            },
            b'C' if on_primary => self.holding = false,
            b'Z' => {
                let status = frame.get(HEADER_LEN).copied().unwrap_or(b'I');
                if !(self.refused && status == b'I') {
                    self.refused = false;
                    self.refused_as_write = false;
                    self.holding = false;
                }
            }
            b'D' | b'd' | b'G' | b'H' | b'W' => self.holding = false,
            _ if self.state.to_client.len() >= HIGH_WATER / 2 => self.holding = false,
            _ => {}
        }
    }

    fn release_replies(&mut self) {
        let state = &mut *self.state;
        state
            .tracker
            .due_replies(|reply| state.to_client.extend_from_slice(reply.bytes()));
    }

    fn server_frame(&mut self, tag: u8, frame: &[u8]) {
        self.release_replies();
        if tag == b'E' && self.state.tracker.is_empty() {
            // Nothing in flight: a FATAL on its way out (e.g. the backend
            // was terminated). Relayed now it would close the client; the
            // client learns of it with its next request instead.
            self.state.lost_connection_error = Some(bytes::Bytes::copy_from_slice(frame));
            return;
        }
        let verdict = self.state.tracker.on_server_message(tag);
        if let Some(parsed) = self.state.tracker.take_completed_parse() {
            self.catalog.mark_valid(parsed);
        }
        if let Some(failed) = self.state.tracker.take_failed_parse() {
            self.prepared.remove(&failed);
            self.state.statements.forget_internal(failed);
        }
        let was_holding = self.holding;
        if self.holding {
            self.watch_held(tag, frame);
        }
        match tag {
            b'E' => self.state.pins.note_failure(),
            b'C' if frame[HEADER_LEN..].starts_with(b"ROLLBACK") => self.state.pins.note_failure(),
            b'Z' => {
                self.at_ready = true;
                self.status = frame.get(HEADER_LEN).copied().unwrap_or(b'I');
                if let Some(sent) = self.query_clock.take() {
                    let now = std::time::Instant::now();
                    self.state.traffic.query_micros += (now - sent).as_micros() as u64;
                    self.state.traffic.ready_at = Some(now);
                    if self.state.tracker.awaits_ready() {
                        // Pipelined: the next request's answer starts now.
                        self.query_clock = Some(now);
                    }
                }
                if self.status == b'I' {
                    self.state.pins.transaction_ended();
                } else {
                    // Inside a (read-only) transaction: its next request
                    // belongs to it, wherever it goes.
                    self.gate_closed = false;
                }
            }
            _ => {}
        }
        if verdict == Verdict::Forward {
            let renamed = (tag == b'E')
                .then(|| statements::rename_in_error(&frame[HEADER_LEN..], &self.state.statements))
                .flatten();
            self.state
                .to_client
                .extend_from_slice(renamed.as_deref().unwrap_or(frame));
            if tag == b'E' && !self.holding && !was_holding {
                self.metrics.error_classes.count_frame(frame);
            }
        }
        if was_holding && !self.holding {
            // The held answer is the client's after all, this frame
            // included: count its errors (a retried one never is).
            self.metrics.errors_in(&self.state.to_client);
        }
        self.release_replies();
    }

    /// Stops holding the answer back; counts the errors it holds.
    fn release_held(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.metrics.errors_in(&self.state.to_client);
        }
    }
}
