//! A bare BEGIN held back by the proxy.
//!
//! `BEGIN` alone says nothing about where its transaction may run; the
//! transaction's next request does (`SET TRANSACTION READ ONLY` first makes
//! it read-only, anything else needs the primary). So the proxy answers a
//! request that is exactly one bare BEGIN itself, with what PostgreSQL
//! sends (ParseComplete, BindComplete, NoData, CommandComplete "BEGIN",
//! ReadyForQuery 'T', as the request asks), and opens the transaction on
//! the node its next request is routed to. A COMMIT or ROLLBACK right after
//! it is answered here too: the transaction did nothing, on no server.
//!
//! When the held transaction fails before any server has it (no
//! connection for its first request, say), the client is told what
//! PostgreSQL would say: ReadyForQuery 'E', then 25P02 for everything until
//! COMMIT or ROLLBACK, both answered ROLLBACK.
//!
//! Only requests whose answer is certain qualify: one statement, no
//! parameters, the unnamed portal, a Sync at the end, no statement name
//! reused. Anything else (a pipeline with more after the BEGIN, say) goes
//! to a server as before, which sends the transaction to the primary.

use bytes::Buf;

use super::relay::{ClientState, complete_frame};
use super::statements::{self, ClientStatement, ClientStatements};
use crate::protocol::ProtocolError;
use crate::protocol::frame::{BodyReader, HEADER_LEN};
use crate::router::access::WriteFunctions;
use crate::router::control::{Control, bare_control};

/// A buffered request made of one bare transaction-control statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lone {
    /// The statement.
    pub control: Control,
    /// Bytes of the client's input it spans, through its Query or Sync.
    pub len: usize,
}

/// The request at the front of `buf`, when it is one bare
/// transaction-control statement, whole (simple Query, or Parse / Bind /
/// Describe portal / Execute / Sync of the unnamed portal).
pub fn lone(buf: &[u8], limit: usize, known: &ClientStatements) -> Option<Lone> {
    let (tag, len) = complete_frame(buf, limit).ok()??;
    if tag == b'Q' {
        let body = &buf[HEADER_LEN..len];
        let sql = body.strip_suffix(b"\0")?;
        return bare_control(sql).map(|control| Lone { control, len });
    }
    if tag != b'P' && tag != b'B' {
        return None;
    }
    extended(buf, limit, known)
}

/// Where an extended-protocol request stands while it is read.
#[derive(Default)]
struct Steps<'a> {
    parsed: Option<(&'a [u8], Control)>,
    bound: Option<Control>,
    executed: bool,
}

fn extended(buf: &[u8], limit: usize, known: &ClientStatements) -> Option<Lone> {
    let mut steps = Steps::default();
    let mut pos = 0;
    loop {
        let (tag, len) = complete_frame(&buf[pos..], limit).ok()??;
        let body = &buf[pos + HEADER_LEN..pos + len];
        pos += len;
        let ok = match tag {
            b'P' => steps.parse(body, known),
            b'B' => steps.bind(body, known),
            b'D' => steps.bound.is_some() && !steps.executed && is_unnamed_portal(body),
            b'E' => steps.execute(body),
            b'H' => true,
            b'S' => {
                return Some(Lone {
                    control: steps.bound.filter(|_| steps.executed)?,
                    len: pos,
                });
            }
            _ => false,
        };
        if !ok {
            return None;
        }
    }
}

impl<'a> Steps<'a> {
    fn parse(&mut self, body: &'a [u8], known: &ClientStatements) -> bool {
        if self.parsed.is_some() || self.bound.is_some() {
            return false;
        }
        let Ok(parse) = statements::read_parse(body) else {
            return false;
        };
        // The cheap test first: most statements are not transaction control.
        let Some(control) = definition_control(parse.definition) else {
            return false;
        };
        // Redefining a name is PostgreSQL's error to report.
        if !parse.name.is_empty() && known.get(parse.name).is_some() {
            return false;
        }
        self.parsed = Some((parse.name, control));
        true
    }

    fn bind(&mut self, body: &'a [u8], known: &ClientStatements) -> bool {
        if self.bound.is_some() {
            return false;
        }
        let Ok(bind) = statements::read_bind(body) else {
            return false;
        };
        if !bind.portal.is_empty() || !no_parameters(bind.rest) {
            return false;
        }
        self.bound = match self.parsed {
            Some((name, control)) if name == bind.statement => Some(control),
            _ if bind.statement.is_empty() => None,
            _ => known
                .get(bind.statement)
                .and_then(|s| definition_control(&s.definition)),
        };
        self.bound.is_some()
    }

    fn execute(&mut self, body: &[u8]) -> bool {
        if self.bound.is_none() || self.executed {
            return false;
        }
        let mut reader = BodyReader::new(body, "Execute");
        let unnamed = reader.cstr().is_ok_and(<[u8]>::is_empty);
        self.executed = unnamed && reader.i32().is_ok() && reader.rest().is_empty();
        self.executed
    }
}

/// The statement in a Parse definition (query text, NUL, parameter types)
/// when it is bare transaction control declaring no parameters.
fn definition_control(definition: &[u8]) -> Option<Control> {
    let end = definition.iter().position(|&b| b == 0)?;
    if definition.get(end + 1..) != Some(&[0, 0][..]) {
        return None;
    }
    bare_control(&definition[..end])
}

/// A Bind's tail: no parameter formats, no parameters, result formats of
/// text or binary only.
fn no_parameters(rest: &[u8]) -> bool {
    let check = || -> Result<bool, ProtocolError> {
        let mut reader = BodyReader::new(rest, "Bind");
        let formats = reader.bytes(2)?;
        let params = reader.bytes(2)?;
        if formats != [0, 0] || params != [0, 0] {
            return Ok(false);
        }
        let results = reader.bytes(2)?;
        let results = u16::from_be_bytes([results[0], results[1]]) as usize;
        let codes = reader.bytes(2 * results)?;
        Ok(reader.rest().is_empty() && codes.chunks(2).all(|c| c == [0, 0] || c == [0, 1]))
    };
    check().unwrap_or(false)
}

fn is_unnamed_portal(body: &[u8]) -> bool {
    statements::read_target(body, "Describe")
        .is_ok_and(|(kind, name)| kind == b'P' && name.is_empty())
        && body.len() == 2
}

/// Answers `lone` (at the front of the client's input) as PostgreSQL
/// would, ending with ReadyForQuery `status`; named statements it defines
/// are remembered like any other.
pub fn answer(state: &mut ClientState, lone: Lone, status: u8, functions: &WriteFunctions) {
    let mut pos = 0;
    while pos < lone.len {
        let rest = &state.client_in[pos..lone.len];
        let Ok(Some((tag, len))) = complete_frame(rest, usize::MAX) else {
            break;
        };
        let frame = &rest[..len];
        let out = &mut state.to_client;
        match tag {
            b'P' => {
                if let Ok(parse) = statements::read_parse(&frame[HEADER_LEN..])
                    && !parse.name.is_empty()
                {
                    let statement = ClientStatement::from_parse(&parse, functions);
                    state.statements.define(parse.name, statement);
                }
                out.extend_from_slice(PARSE_COMPLETE);
            }
            b'B' => out.extend_from_slice(BIND_COMPLETE),
            b'D' => out.extend_from_slice(NO_DATA),
            b'E' => out.extend_from_slice(lone.control.command_complete()),
            b'Q' => {
                out.extend_from_slice(lone.control.command_complete());
                ready_for_query(out, status);
            }
            b'S' => ready_for_query(out, status),
            _ => {}
        }
        pos += len;
    }
    state.client_in.advance(lone.len);
}

/// Answers the request at the front of the client's input inside a held
/// transaction that failed on no server, where PostgreSQL answers from its
/// failed transaction block: a lone COMMIT or ROLLBACK ends it (tag
/// ROLLBACK, ReadyForQuery 'I'), a lone Sync gets ReadyForQuery 'E'. The
/// status sent, or `None` when the request is to be refused with
/// [`in_failed_transaction`] (anything else, pipelines ending it included:
/// without a server, the proxy answers only what it can answer exactly).
pub fn answer_failed(
    state: &mut ClientState,
    limit: usize,
    functions: &WriteFunctions,
) -> Option<u8> {
    if let Ok(Some((b'S', len))) = complete_frame(&state.client_in, limit) {
        state.client_in.advance(len);
        ready_for_query(&mut state.to_client, b'E');
        return Some(b'E');
    }
    let ending = lone(&state.client_in, limit, &state.statements)
        .filter(|l| matches!(l.control, Control::Commit | Control::Rollback))?;
    let lone = Lone {
        control: Control::Rollback,
        ..ending
    };
    answer(state, lone, b'I', functions);
    Some(b'I')
}

/// PostgreSQL's refusal of a statement inside a failed transaction block.
pub fn in_failed_transaction() -> bytes::Bytes {
    crate::protocol::messages::ClientError {
        severity: "ERROR",
        code: "25P02",
        message: "current transaction is aborted, commands ignored until end of transaction block"
            .into(),
    }
    .to_bytes()
    .freeze()
}

use crate::protocol::messages::{BIND_COMPLETE, NO_DATA, PARSE_COMPLETE, ready_for_query};

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    use crate::protocol::frame::{push_frame as frame, query_frame as query};

    /// Parse (if `parse`), Bind, Describe portal, Execute, Sync, as libpq's
    /// PQexecParams / PQexecPrepared send them.
    fn extended(name: &str, sql: &str, parse: bool) -> BytesMut {
        let mut out = BytesMut::new();
        if parse {
            frame(&mut out, b'P', format!("{name}\0{sql}\0\0\0").as_bytes());
        }
        frame(
            &mut out,
            b'B',
            format!("\0{name}\0\0\0\0\0\0\x01\0\x01").as_bytes(),
        );
        frame(&mut out, b'D', b"P\0");
        frame(&mut out, b'E', b"\0\0\0\0\0");
        frame(&mut out, b'S', b"");
        out
    }

    fn lone_of(buf: &[u8], known: &ClientStatements) -> Option<Lone> {
        lone(buf, 1 << 20, known)
    }

    #[test]
    fn a_simple_begin_is_answered_with_begin_and_in_transaction() {
        let mut state = ClientState {
            client_in: query("BEGIN"),
            ..ClientState::default()
        };
        state.client_in.extend_from_slice(&query("SELECT 1"));
        let lone = lone_of(&state.client_in, &state.statements).unwrap();
        assert_eq!(lone.control, Control::Begin);
        answer(&mut state, lone, b'T', &WriteFunctions::default());
        assert_eq!(&state.to_client[..], b"C\0\0\0\x0aBEGIN\0Z\0\0\0\x05T");
        assert_eq!(&state.client_in[..], &query("SELECT 1")[..]);
    }

    #[test]
    fn an_extended_begin_gets_every_reply_and_defines_its_statement() {
        let mut state = ClientState {
            client_in: extended("s1", "BEGIN", true),
            ..ClientState::default()
        };
        let lone = lone_of(&state.client_in, &state.statements).unwrap();
        answer(&mut state, lone, b'T', &WriteFunctions::default());
        assert_eq!(
            &state.to_client[..],
            b"1\0\0\0\x042\0\0\0\x04n\0\0\0\x04C\0\0\0\x0aBEGIN\0Z\0\0\0\x05T"
        );
        assert!(state.client_in.is_empty());
        // Bound again later without a Parse: still recognised.
        let again = extended("s1", "BEGIN", false);
        assert!(lone_of(&again, &state.statements).is_some());
        // Parsing the same name again is PostgreSQL's error to give.
        assert!(lone_of(&extended("s1", "BEGIN", true), &state.statements).is_none());
        let commit = extended("", "COMMIT", true);
        assert_eq!(
            lone_of(&commit, &state.statements).map(|l| l.control),
            Some(Control::Commit)
        );
    }

    #[test]
    fn a_failed_held_transaction_ends_only_with_commit_or_rollback() {
        let functions = WriteFunctions::default();
        let failed = |input: BytesMut| {
            let mut state = ClientState {
                client_in: input,
                ..ClientState::default()
            };
            let status = answer_failed(&mut state, 1 << 20, &functions);
            (status, state)
        };
        // COMMIT ends it as ROLLBACK, in either protocol.
        let (status, state) = failed(query("COMMIT"));
        assert_eq!(status, Some(b'I'));
        assert_eq!(&state.to_client[..], b"C\0\0\0\x0dROLLBACK\0Z\0\0\0\x05I");
        let (status, state) = failed(extended("", "END", true));
        assert_eq!(status, Some(b'I'));
        assert_eq!(
            &state.to_client[..],
            b"1\0\0\0\x042\0\0\0\x04n\0\0\0\x04C\0\0\0\x0dROLLBACK\0Z\0\0\0\x05I"
        );
        assert!(state.client_in.is_empty());
        // A Sync alone: still failed.
        let mut sync = BytesMut::new();
        frame(&mut sync, b'S', b"");
        let (status, state) = failed(sync);
        assert_eq!(status, Some(b'E'));
        assert_eq!(&state.to_client[..], b"Z\0\0\0\x05E");
        // Anything else is refused (by the caller), untouched here.
        for refused in [query("SELECT 1"), query("BEGIN"), query("COMMIT; SELECT 1")] {
            let (status, state) = failed(refused.clone());
            assert_eq!(status, None);
            assert!(state.to_client.is_empty());
            assert_eq!(state.client_in, refused);
        }
        let error = in_failed_transaction();
        assert_eq!(
            crate::protocol::messages::error_code(&error[HEADER_LEN..]),
            Some(&b"25P02"[..])
        );
    }

    #[test]
    fn pipelines_parameters_and_incomplete_requests_are_not_lone() {
        let known = ClientStatements::default();
        // BEGIN and a query before one Sync (JDBC's way).
        let mut pipeline = BytesMut::new();
        frame(&mut pipeline, b'P', b"\0BEGIN\0\0\0");
        frame(&mut pipeline, b'B', b"\0\0\0\0\0\0\0\0");
        frame(&mut pipeline, b'E', b"\0\0\0\0\0");
        frame(&mut pipeline, b'P', b"\0SELECT 1\0\0\0");
        frame(&mut pipeline, b'B', b"\0\0\0\0\0\0\0\0");
        frame(&mut pipeline, b'E', b"\0\0\0\0\0");
        frame(&mut pipeline, b'S', b"");
        assert!(lone_of(&pipeline, &known).is_none());
        // Declared parameter types, a named portal, no Sync yet.
        let mut typed = BytesMut::new();
        frame(&mut typed, b'P', b"\0BEGIN\0\0\x01\0\0\0\x17");
        assert!(lone_of(&typed, &known).is_none());
        let mut portal = BytesMut::new();
        frame(&mut portal, b'P', b"\0BEGIN\0\0\0");
        frame(&mut portal, b'B', b"p\0\0\0\0\0\0\0\0");
        frame(&mut portal, b'E', b"p\0\0\0\0\0");
        frame(&mut portal, b'S', b"");
        assert!(lone_of(&portal, &known).is_none());
        let whole = extended("", "BEGIN", true);
        assert!(lone_of(&whole[..whole.len() - 5], &known).is_none());
        // Bind of the unnamed statement without its Parse, or unknown.
        assert!(lone_of(&extended("", "BEGIN", false), &known).is_none());
        assert!(lone_of(&extended("nope", "BEGIN", false), &known).is_none());
        assert!(lone_of(&query("BEGIN READ ONLY"), &known).is_none());
        assert!(lone_of(&query("BEGIN; SELECT 1"), &known).is_none());
    }
}
