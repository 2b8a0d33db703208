//! The client's next request (frames through Sync, or one Query) as the
//! router sees it: may it run on a replica, may it be re-run, how long it is.

use super::relay::complete_frame;
use super::statements::{self, ClientStatements};
use crate::protocol::frame::HEADER_LEN;
use crate::router::access::{self, Access, Hint, WriteFunctions};
use crate::topology::LearnedWrites;

/// What the router needs to know about a buffered request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Every statement in it reads (or a hint says replica).
    pub read: bool,
    /// Re-running it changes nothing on the client's side: no named
    /// statement is defined or closed by it.
    pub replayable: bool,
    /// Bytes of `client_in` it spans; 0 when it is not all buffered yet.
    pub len: usize,
    /// Where the text to remember as a write sits, if it is one statement text.
    pub text: Option<(usize, usize)>,
}

impl Request {
    /// A request the router knows nothing about: primary, never re-run.
    const UNSURE: Self = Self {
        read: false,
        replayable: false,
        len: 0,
        text: None,
    };
}

/// How to classify a request's statements.
#[derive(Clone, Copy)]
pub struct Classifier<'a> {
    /// Functions that make a call a write.
    pub functions: &'a WriteFunctions,
    /// Statements replicas refused as writing.
    pub learned: &'a LearnedWrites,
    /// The request is the first of a transaction whose bare BEGIN the
    /// proxy holds: it reads only if its first statement is `SET
    /// TRANSACTION READ ONLY` (see [`access::classify_opened`]).
    pub opened: bool,
}

/// Inspects the request at the front of `buf`. Anything unexpected or
/// incomplete makes it a write: unsure means primary. Without a
/// `classifier` (a session whose route does not depend on what it sends:
/// routing off, or a fixed route) only its extent and whether it may be
/// re-run are read, and `read` is false.
pub fn inspect(
    buf: &[u8],
    limit: usize,
    statements: &ClientStatements,
    classifier: Option<Classifier<'_>>,
) -> Request {
    let mut opened = classifier.is_some_and(|c| c.opened);
    let is_read = |sql: &[u8], opened: bool| {
        classifier.is_some_and(|c| is_read(sql, c.functions, c.learned, opened))
    };
    let mut request = Request {
        read: true,
        replayable: true,
        len: 0,
        text: None,
    };
    // The class of the unnamed statement parsed earlier in this request.
    let mut unnamed: Option<bool> = None;
    let mut defined_here: Option<(&[u8], bool)> = None;
    let mut pos = 0;
    loop {
        let Ok(Some((tag, len))) = complete_frame(&buf[pos..], limit) else {
            return Request::UNSURE;
        };
        let frame = &buf[pos..pos + len];
        let body = &frame[HEADER_LEN..];
        let start = pos + HEADER_LEN;
        pos += len;
        match tag {
            b'Q' => {
                let sql = body.strip_suffix(b"\0").unwrap_or(body);
                request.read = is_read(sql, opened);
                request.text = Some((start, start + sql.len()));
                request.len = pos;
                return request;
            }
            b'P' => {
                let Ok(parse) = statements::read_parse(body) else {
                    return Request::UNSURE;
                };
                let read = is_read(parse.query, opened);
                opened = false;
                // Even a prepare-only request of a write goes to the
                // primary: its Parse may need a table a replica has yet
                // to replay.
                request.read &= read;
                let offset = parse.query.as_ptr() as usize - buf.as_ptr() as usize;
                request.text = Some((offset, offset + parse.query.len()));
                if parse.name.is_empty() {
                    unnamed = Some(read);
                } else {
                    request.replayable = false;
                    defined_here = Some((parse.name, read));
                }
            }
            b'B' => {
                let Ok(bind) = statements::read_bind(body) else {
                    return Request::UNSURE;
                };
                let read = if bind.statement.is_empty() {
                    unnamed
                } else {
                    match defined_here {
                        Some((name, read)) if name == bind.statement => Some(read),
                        // Bound without a Parse first: a held BEGIN's
                        // transaction is read-only only if this statement
                        // says so, which its cached class cannot tell.
                        _ if opened => statements
                            .get(bind.statement)
                            .map(|s| is_read(definition_text(&s.definition), true)),
                        _ => statements.get(bind.statement).map(|s| s.read),
                    }
                };
                opened = false;
                request.read &= read.unwrap_or(false);
            }
            b'C' => request.replayable = false,
            b'D' | b'E' | b'H' => {}
            b'S' => {
                request.len = pos;
                return request;
            }
            // FunctionCall, COPY data outside COPY, anything else.
            _ => return Request::UNSURE,
        }
    }
}

fn is_read(sql: &[u8], functions: &WriteFunctions, learned: &LearnedWrites, opened: bool) -> bool {
    let class = |sql| crate::router::memo::classify(sql, functions, opened);
    match access::hint(sql) {
        Some(Hint::Primary) => false,
        Some(Hint::Replica) => true,
        None => class(sql) == Access::Read && !learned.contains(sql),
    }
}

/// The query text of a Parse definition (text, NUL, parameter types).
fn definition_text(definition: &[u8]) -> &[u8] {
    let end = definition
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(definition.len());
    &definition[..end]
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    use crate::protocol::frame::{push_frame as frame, query_frame as query};

    fn extended(name: &str, sql: &str) -> BytesMut {
        let mut out = BytesMut::new();
        frame(&mut out, b'P', format!("{name}\0{sql}\0\0\0").as_bytes());
        frame(&mut out, b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes());
        frame(&mut out, b'E', b"\0\0\0\0\0");
        frame(&mut out, b'S', b"");
        out
    }

    fn classified<'a>(
        functions: &'a WriteFunctions,
        learned: &'a LearnedWrites,
        opened: bool,
    ) -> Option<Classifier<'a>> {
        Some(Classifier {
            functions,
            learned,
            opened,
        })
    }

    fn look(buf: &[u8]) -> Request {
        let (functions, learned) = (WriteFunctions::default(), LearnedWrites::default());
        inspect(
            buf,
            1 << 20,
            &ClientStatements::default(),
            classified(&functions, &learned, false),
        )
    }

    #[test]
    fn simple_queries_are_classified_and_measured() {
        let mut buf = query("SELECT 1");
        let len = buf.len();
        buf.extend_from_slice(&query("INSERT INTO t VALUES (1)"));
        let first = look(&buf);
        assert!(first.read && first.replayable);
        assert_eq!(first.len, len);
        let (a, b) = first.text.unwrap();
        assert_eq!(&buf[a..b], b"SELECT 1");
        assert!(!look(&buf[len..]).read);
    }

    #[test]
    fn extended_requests_are_classified_through_sync() {
        let unnamed = extended("", "SELECT 1");
        let request = look(&unnamed);
        assert!(request.read && request.replayable);
        assert_eq!(request.len, unnamed.len());
        let named = look(&extended("s1", "SELECT 1"));
        assert!(named.read && !named.replayable);
        assert!(!look(&extended("", "SELECT nextval('s')")).read);
    }

    #[test]
    fn unrouted_requests_are_measured_but_not_classified() {
        let known = ClientStatements::default();
        for buf in [
            query("SELECT 1"),
            extended("", "SELECT 1"),
            extended("s1", "SELECT 1"),
        ] {
            let routed = look(&buf);
            let unrouted = inspect(&buf, 1 << 20, &known, None);
            assert!(!unrouted.read);
            assert_eq!(
                (unrouted.len, unrouted.replayable, unrouted.text),
                (routed.len, routed.replayable, routed.text)
            );
        }
    }

    #[test]
    fn incomplete_or_unknown_requests_are_writes() {
        let buf = extended("", "SELECT 1");
        assert_eq!(look(&buf[..buf.len() - 5]), Request::UNSURE);
        let mut bind_only = BytesMut::new();
        frame(&mut bind_only, b'B', b"\0unknown\0\0\0\0\0\0\0");
        frame(&mut bind_only, b'S', b"");
        assert!(!look(&bind_only).read);
    }

    #[test]
    fn after_a_held_begin_the_first_statement_must_declare_read_only() {
        let (functions, learned) = (WriteFunctions::default(), LearnedWrites::default());
        let opened = |buf: &[u8], known: &ClientStatements| {
            inspect(buf, 1 << 20, known, classified(&functions, &learned, true))
        };
        let known = ClientStatements::default();
        assert!(opened(&query("SET TRANSACTION READ ONLY"), &known).read);
        assert!(!opened(&query("SELECT 1"), &known).read);
        assert!(opened(&extended("", "SET TRANSACTION READ ONLY"), &known).read);
        assert!(!opened(&extended("", "SELECT 1"), &known).read);
        // A statement prepared earlier is judged by its text, not by its
        // cached class (a SELECT reads alone, but not as a transaction's
        // first statement).
        let mut known = ClientStatements::default();
        for (name, sql) in [("ro", "SET TRANSACTION READ ONLY"), ("sel", "SELECT 1")] {
            let body = format!("{name}\0{sql}\0\0\0");
            let parse = statements::read_parse(body.as_bytes()).unwrap();
            let statement =
                statements::ClientStatement::from_parse(&parse, &WriteFunctions::default());
            known.define(parse.name, statement);
        }
        let bind = |name: &str| {
            let mut out = BytesMut::new();
            frame(&mut out, b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes());
            frame(&mut out, b'E', b"\0\0\0\0\0");
            frame(&mut out, b'S', b"");
            out
        };
        assert!(opened(&bind("ro"), &known).read);
        assert!(!opened(&bind("sel"), &known).read);
    }

    #[test]
    fn hints_and_learned_writes_override_the_classifier() {
        assert!(!look(&query("/* switchyard: primary */ SELECT 1")).read);
        assert!(look(&query("/* switchyard: replica */ SELECT nextval('s')")).read);
        let learned = LearnedWrites::default();
        learned.insert(b"SELECT f()");
        let buf = query("SELECT f()");
        let functions = WriteFunctions::default();
        let request = inspect(
            &buf,
            1 << 20,
            &ClientStatements::default(),
            classified(&functions, &learned, false),
        );
        assert!(!request.read);
    }
}
