//! Session-mode relay: the client's bytes to its server and back, frame
//! aware but never re-encoded.
//!
//! Each direction reads into one fixed buffer, lets the [`FrameScanner`]
//! note frame boundaries (and the few frames that matter: ReadyForQuery,
//! Terminate, FATAL errors), then writes the very same bytes on. Nothing is
//! allocated per message and no lock is taken. Backpressure is end to end:
//! while a write waits on a slow peer, that direction reads nothing more, so
//! a session holds at most one buffer per direction in flight.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::idle::IdleTimeout;
use super::signal::Signal;
use super::transaction::complete_frame;
use super::transaction::statements::read_parse;
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::{FrameScanner, ProtocolError};
use crate::proxy::Shutdown;
use crate::router::effects::session_effects_bytes;
use crate::tls::{ClientStream, ServerStream};

/// Bytes read per syscall in each direction.
const BUFFER_LEN: usize = 16 * 1024;
/// `Activity::idle_since` while the client is not idle.
const BUSY: u64 = u64::MAX;

/// Why a relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client's socket closed or failed without Terminate.
    ClientGone,
    /// The client sent a frame that cannot be relayed.
    ClientProtocol(ProtocolError),
    /// The server ended the session while nothing was in flight (a
    /// shutdown, a terminated backend): the client has asked nothing, so
    /// the session may go on on another server. `farewell` holds the bytes
    /// the server sent last (its FATAL), not relayed.
    ServerLeftIdle {
        /// What the server said, for the client if the session cannot go on.
        farewell: Vec<u8>,
    },
    /// The server's socket closed or failed.
    ServerGone {
        /// The server's last message was a FATAL error the client has already received.
        fatal_relayed: bool,
    },
    /// The server sent a frame that cannot be relayed.
    ServerProtocol(ProtocolError),
    /// Shutdown began and the session reached an idle point.
    DrainedIdle,
    /// The client sat idle longer than `server.client_idle_timeout`.
    IdleTimeout,
    /// The shutdown timeout expired.
    HardStop,
}

/// State the two directions of one session share. Both run in the same
/// task, so relaxed atomics are enough; they are atomics only to be `Sync`.
#[derive(Debug)]
pub struct Activity {
    requests: AtomicU64,
    readies: AtomicU64,
    status: AtomicU8,
    client_at_boundary: AtomicBool,
    close_when_idle: AtomicBool,
    /// When the client last became idle (a ReadyForQuery "idle" relayed,
    /// nothing sent since), in nanoseconds after `born`; [`BUSY`] otherwise.
    idle_since: AtomicU64,
    born: Instant,
    /// The client left state on its server that a new connection would
    /// lack (see [`ServerState`]).
    stateful: AtomicBool,
    /// Bytes read from the client (a metric, or a detached counter).
    received: prometheus::IntCounter,
    /// Bytes written to the client.
    sent: prometheus::IntCounter,
    /// Requests (Query, Sync, FunctionCall) sent to the server.
    queries: prometheus::IntCounter,
    /// ErrorResponses relayed to the client, by class (none without metrics).
    errors: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            readies: AtomicU64::new(0),
            status: AtomicU8::new(b'I'),
            client_at_boundary: AtomicBool::new(true),
            close_when_idle: AtomicBool::new(false),
            // A session starts idle: its greeting ended with ReadyForQuery.
            idle_since: AtomicU64::new(0),
            born: Instant::now(),
            stateful: AtomicBool::new(false),
            received: detached_counter(),
            sent: detached_counter(),
            queries: detached_counter(),
            errors: None,
        }
    }
}

fn detached_counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new("detached_total", "-")
        .expect("invariant: a name and a help text are valid")
}

impl Activity {
    /// Activity whose client traffic adds to the proxy's byte counters and
    /// whose requests count as queries on `route`.
    pub fn counting(
        metrics: &std::sync::Arc<crate::metrics::Metrics>,
        route: &crate::metrics::RouteMetrics,
    ) -> Self {
        Self {
            received: metrics.bytes_received.clone(),
            sent: metrics.bytes_sent.clone(),
            queries: route.query_counter(),
            errors: Some(std::sync::Arc::clone(metrics)),
            ..Self::default()
        }
    }

    /// True when every Query/Sync/FunctionCall sent has been answered by a
    /// ReadyForQuery and the last one said "idle, no transaction".
    pub fn is_idle(&self) -> bool {
        self.requests.load(Relaxed) == self.readies.load(Relaxed)
            && self.status.load(Relaxed) == b'I'
    }

    /// True when a message written to the client now would not split a frame.
    pub fn client_at_boundary(&self) -> bool {
        self.client_at_boundary.load(Relaxed)
    }

    /// True when the session could continue on a new server connection: no
    /// request in flight, no transaction open, the client between frames,
    /// and nothing left on the server that a new connection would lack.
    pub fn can_move(&self) -> bool {
        self.is_idle() && self.client_at_boundary() && !self.stateful.load(Relaxed)
    }

    /// Since when the client has been idle between transactions, if it is
    /// (and a message to it would not split a frame).
    pub fn idle_since(&self) -> Option<Instant> {
        let nanos = self.idle_since.load(Relaxed);
        (nanos != BUSY && self.is_idle() && self.client_at_boundary())
            .then(|| self.born + Duration::from_nanos(nanos))
    }

    /// Notes that the client became idle now, unless it already was (a
    /// notification relayed to an idle client does not restart its clock).
    fn note_idle(&self) {
        if self.idle_since.load(Relaxed) == BUSY {
            let nanos = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(BUSY - 1);
            self.idle_since.store(nanos, Relaxed);
        }
    }
}

/// Relays between `client` and `server`, starting with the client's
/// `early` bytes (pipelined behind its startup packet), until one side
/// ends, shutdown asks the session to stop, or the client sits idle past
/// `idle`.
pub async fn relay(
    client: &mut ClientStream,
    server: &mut ServerStream,
    early: &[u8],
    limit: usize,
    mut idle: IdleTimeout,
    activity: &Activity,
    shutdown: &Shutdown,
) -> RelayEnd {
    // Polled on every wake-up of the relay: see `Signal`.
    let mut draining = Signal::new(shutdown.draining.clone());
    let mut hard_stop = Signal::new(shutdown.hard_stop.clone());
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let track_idle = idle.is_enabled();
    let upstream = client_to_server(&mut client_read, &mut server_write, early, limit, activity);
    let downstream = server_to_client(
        &mut server_read,
        &mut client_write,
        limit,
        activity,
        track_idle,
    );
    tokio::pin!(upstream, downstream);
    let mut drain_noticed = false;
    loop {
        tokio::select! {
            end = &mut upstream => return end,
            end = &mut downstream => return end,
            () = &mut draining, if !drain_noticed => {
                drain_noticed = true;
                activity.close_when_idle.store(true, Relaxed);
                if activity.is_idle() && activity.client_at_boundary() {
                    return RelayEnd::DrainedIdle;
                }
            }
            () = &mut hard_stop => return RelayEnd::HardStop,
            () = idle.expired(|| activity.idle_since()) => return RelayEnd::IdleTimeout,
        }
    }
}

async fn client_to_server<R, W>(
    reader: &mut R,
    writer: &mut W,
    early: &[u8],
    limit: usize,
    activity: &Activity,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER_LEN].into_boxed_slice();
    let mut scanner = FrameScanner::new(limit);
    let mut state = ServerState::default();
    // What the client pipelined behind its startup packet goes through the
    // same scanner: its requests count, and the scanner stays aligned.
    if !early.is_empty()
        && let Some(end) = forward(&mut scanner, &mut state, early, writer, activity).await
    {
        return end;
    }
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return RelayEnd::ClientGone,
            Ok(n) => n,
        };
        activity.received.inc_by(n as u64);
        if let Some(end) = forward(&mut scanner, &mut state, &buf[..n], writer, activity).await {
            return end;
        }
    }
}

/// Scans client bytes, counts their requests and writes them to the
/// server; `Some` when the relay must stop.
async fn forward<W: AsyncWrite + Unpin>(
    scanner: &mut FrameScanner,
    state: &mut ServerState,
    bytes: &[u8],
    writer: &mut W,
    activity: &Activity,
) -> Option<RelayEnd> {
    activity.idle_since.store(BUSY, Relaxed);
    let at_frame_start = scanner.at_boundary();
    let mut requests = 0;
    let mut statements = false;
    let mut terminated = false;
    let scanned = scanner.scan(bytes, |tag, _| match tag {
        b'Q' | b'F' => {
            requests += 1;
            statements = true;
        }
        b'S' => requests += 1,
        b'P' | b'C' => statements = true,
        b'X' => terminated = true,
        _ => {}
    });
    if let Err(error) = scanned {
        return Some(RelayEnd::ClientProtocol(error));
    }
    if requests > 0 {
        activity.requests.fetch_add(requests, Relaxed);
        activity.queries.inc_by(requests);
    }
    // Lexed only until lasting state is found: such a session costs
    // nothing more per message.
    if statements && !state.lasting {
        state.note(bytes, at_frame_start, scanner.limit());
        activity.stateful.store(state.is_some(), Relaxed);
    }
    if writer.write_all(bytes).await.is_err() {
        return Some(RelayEnd::ServerGone {
            fatal_relayed: false,
        });
    }
    terminated.then_some(RelayEnd::ClientTerminated)
}

async fn server_to_client<R, W>(
    reader: &mut R,
    writer: &mut W,
    limit: usize,
    activity: &Activity,
    track_idle: bool,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER_LEN].into_boxed_slice();
    let mut scanner = FrameScanner::new(limit);
    let mut fatal_relayed = false;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return RelayEnd::ServerGone { fatal_relayed },
            Ok(n) => n,
        };
        let idle_before = activity.is_idle();
        let mut ready = false;
        let scanned = scanner.scan(&buf[..n], |tag, head| {
            fatal_relayed =
                tag == b'E' && (head.starts_with(b"SFATAL") || head.starts_with(b"SPANIC"));
            // A FATAL while idle is the server leaving: not relayed now,
            // so counted if and when the client is told.
            let farewell = fatal_relayed && idle_before && activity.is_idle();
            if let (b'E', false, Some(metrics)) = (tag, farewell, &activity.errors) {
                metrics.error_classes.count_body(head);
            }
            if tag == b'Z' {
                ready = true;
                activity.readies.fetch_add(1, Relaxed);
                activity
                    .status
                    .store(head.first().copied().unwrap_or(b'I'), Relaxed);
            }
        });
        if let Err(error) = scanned {
            return RelayEnd::ServerProtocol(error);
        }
        if fatal_relayed && idle_before && activity.is_idle() {
            return RelayEnd::ServerLeftIdle {
                farewell: buf[..n].to_vec(),
            };
        }
        // Once per transaction: the clock starts as its last ReadyForQuery
        // goes out (PostgreSQL arms idle_session_timeout there too).
        if track_idle && ready && activity.is_idle() && scanner.at_boundary() {
            activity.note_idle();
        }
        activity.client_at_boundary.store(false, Relaxed);
        if writer.write_all(&buf[..n]).await.is_err() {
            return RelayEnd::ClientGone;
        }
        activity.sent.inc_by(n as u64);
        activity
            .client_at_boundary
            .store(scanner.at_boundary(), Relaxed);
        if activity.close_when_idle.load(Relaxed) && activity.is_idle() && scanner.at_boundary() {
            return RelayEnd::DrainedIdle;
        }
    }
}

/// Named prepared statements held at most before the session counts as
/// stateful for good (kept inline: no allocation per statement).
const TRACKED_STATEMENTS: usize = 16;

/// What a session-mode client has left on its server that a new server
/// connection would lack: named prepared statements (until closed), and
/// anything lasting — SQL with session effects (SET, temporary tables,
/// LISTEN, advisory locks, cursors WITH HOLD, PREPARE, LOAD; see
/// [`crate::router::effects`]), a FunctionCall, or a request this
/// inspection cannot read whole (cut by a read, over 16 KiB: rare).
#[derive(Debug, Default)]
struct ServerState {
    lasting: bool,
    /// Hashes of the open named statements.
    statements: [u64; TRACKED_STATEMENTS],
    open: usize,
}

impl ServerState {
    fn is_some(&self) -> bool {
        self.lasting || self.open > 0
    }

    /// Notes the frames of `chunk`, which starts at a frame boundary when
    /// `at_frame_start`.
    fn note(&mut self, chunk: &[u8], at_frame_start: bool, limit: usize) {
        if !at_frame_start {
            self.lasting = true;
            return;
        }
        let mut pos = 0;
        while pos < chunk.len() && !self.lasting {
            let Ok(Some((tag, len))) = complete_frame(&chunk[pos..], limit) else {
                self.lasting = true;
                return;
            };
            self.note_frame(tag, &chunk[pos + HEADER_LEN..pos + len]);
            pos += len;
        }
    }

    fn note_frame(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'Q' => {
                let sql = body.strip_suffix(b"\0").unwrap_or(body);
                self.lasting |= !session_effects_bytes(sql).is_empty();
            }
            b'P' => match read_parse(body) {
                Ok(parse) => {
                    self.lasting |= !session_effects_bytes(parse.query).is_empty();
                    if !parse.name.is_empty() {
                        self.open_statement(name_hash(parse.name));
                    }
                }
                Err(_) => self.lasting = true,
            },
            // Close of a named statement ('S'); portals end with their
            // transaction anyway.
            b'C' => {
                if let Some((b'S', rest)) = body.split_first() {
                    let name = rest.strip_suffix(b"\0").unwrap_or(rest);
                    if !name.is_empty() {
                        self.close_statement(name_hash(name));
                    }
                }
            }
            b'F' => self.lasting = true,
            _ => {}
        }
    }

    fn open_statement(&mut self, hash: u64) {
        if self.statements[..self.open].contains(&hash) {
            return;
        }
        if self.open == TRACKED_STATEMENTS {
            self.lasting = true;
            return;
        }
        self.statements[self.open] = hash;
        self.open += 1;
    }

    fn close_statement(&mut self, hash: u64) {
        if let Some(i) = self.statements[..self.open].iter().position(|&h| h == hash) {
            self.open -= 1;
            self.statements.swap(i, self.open);
        }
    }
}

fn name_hash(name: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::frame::encode_frame as frame;

    fn query(sql: &str) -> Vec<u8> {
        frame(b'Q', format!("{sql}\0").as_bytes())
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        frame(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
    }

    fn state_after(frames: &[Vec<u8>]) -> ServerState {
        let mut state = ServerState::default();
        for f in frames {
            state.note(f, true, 1 << 20);
        }
        state
    }

    fn close(name: &str) -> Vec<u8> {
        frame(b'C', format!("S{name}\0").as_bytes())
    }

    #[test]
    fn plain_statements_leave_no_state() {
        for sql in [
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
            "BEGIN; UPDATE t SET x = 1; COMMIT",
            "SET LOCAL statement_timeout = 0",
        ] {
            assert!(!state_after(&[query(sql)]).is_some(), "{sql}");
        }
        let mut extended = parse("", "SELECT $1");
        extended.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
        extended.extend(frame(b'E', b"\0\0\0\0\0"));
        extended.extend(frame(b'S', b""));
        assert!(!state_after(&[extended]).is_some());
        // A named statement counts until it is closed.
        assert!(state_after(&[parse("s1", "SELECT 1")]).is_some());
        assert!(!state_after(&[parse("s1", "SELECT 1"), close("s1")]).is_some());
        assert!(
            state_after(&[
                parse("s1", "SELECT 1"),
                parse("s2", "SELECT 2"),
                close("s1")
            ])
            .is_some()
        );
    }

    #[test]
    fn lasting_session_state_is_noticed() {
        for sql in [
            "SET search_path = app",
            "SELECT set_config('x.y', '1', false)",
            "CREATE TEMP TABLE t (x int)",
            "LISTEN jobs",
            "SELECT pg_advisory_lock(1)",
            "PREPARE p AS SELECT 1",
        ] {
            assert!(state_after(&[query(sql)]).lasting, "{sql}");
        }
        assert!(state_after(&[frame(b'F', b"\0\0\0\x01")]).lasting);
        // A frame cut by the read, or one that starts mid-frame.
        let cut = query("SELECT 1");
        assert!(state_after(&[cut[..cut.len() - 2].to_vec()]).lasting);
        let mut state = ServerState::default();
        state.note(&cut, false, 1 << 20);
        assert!(state.lasting);
        // More named statements than are tracked.
        let many: Vec<Vec<u8>> = (0..=TRACKED_STATEMENTS)
            .map(|i| parse(&format!("s{i}"), "SELECT 1"))
            .collect();
        assert!(state_after(&many).lasting);
    }
}
