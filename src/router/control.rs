//! Bare transaction control: a `BEGIN` that says nothing about where its
//! transaction may run, and the `COMMIT` or `ROLLBACK` that can end such a
//! transaction before it did anything.
//!
//! The router holds a bare BEGIN back until the transaction's next request
//! shows whether it is read-only (`SET TRANSACTION READ ONLY`), so only
//! statements whose answer the proxy can give exactly as PostgreSQL would
//! are recognised here: no modes, no `AND CHAIN`, no routing hint, one
//! statement.

use super::access::hint;
use super::lexer::{Lexer, Token, TokenKind};

/// A transaction-control statement the proxy can answer itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// `BEGIN [WORK | TRANSACTION]` or `START TRANSACTION`, without modes.
    Begin,
    /// `COMMIT` or `END` (`[WORK | TRANSACTION]`).
    Commit,
    /// `ROLLBACK` or `ABORT` (`[WORK | TRANSACTION]`).
    Rollback,
}

impl Control {
    /// The CommandComplete PostgreSQL sends for it (inside a transaction
    /// that has not failed), whole.
    pub fn command_complete(self) -> &'static [u8] {
        match self {
            Self::Begin => b"C\0\0\0\x0aBEGIN\0",
            Self::Commit => b"C\0\0\0\x0bCOMMIT\0",
            Self::Rollback => b"C\0\0\0\x0dROLLBACK\0",
        }
    }
}

/// When `sql` is exactly one bare transaction-control statement (an
/// optional trailing `;` and comments aside), which one.
pub fn bare_control(sql: &[u8]) -> Option<Control> {
    // Most requests are neither: leave them after looking at one byte.
    let first = sql.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(
        first.to_ascii_lowercase(),
        b'b' | b's' | b'c' | b'e' | b'r' | b'a' | b'/' | b'-'
    ) {
        return None;
    }
    if hint(sql).is_some() {
        // A hint names a node: the statement is routed as written.
        return None;
    }
    let mut tokens = Lexer::new(sql);
    let lead = tokens.next()?;
    let control = if lead.is_keyword("begin") {
        Control::Begin
    } else if lead.is_keyword("start") {
        if !tokens.next().is_some_and(|t| t.is_keyword("transaction")) {
            return None;
        }
        return only_end_follows(tokens).then_some(Control::Begin);
    } else if lead.is_keyword("commit") || lead.is_keyword("end") {
        Control::Commit
    } else if lead.is_keyword("rollback") || lead.is_keyword("abort") {
        Control::Rollback
    } else {
        return None;
    };
    let mut rest = tokens.clone();
    match rest.next() {
        Some(t) if t.is_keyword("work") || t.is_keyword("transaction") => tokens = rest,
        _ => {}
    }
    only_end_follows(tokens).then_some(control)
}

/// True when nothing but one optional `;` is left.
fn only_end_follows(mut tokens: Lexer<'_>) -> bool {
    match tokens.next() {
        None => true,
        Some(Token {
            kind: TokenKind::Semicolon,
            ..
        }) => tokens.next().is_none(),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_begin_commit_and_rollback_are_recognised() {
        for sql in [
            "BEGIN",
            "begin;",
            "  BEGIN WORK ; ",
            "begin transaction",
            "START TRANSACTION",
            "/* a comment */ BEGIN -- trailing\n",
        ] {
            assert_eq!(bare_control(sql.as_bytes()), Some(Control::Begin), "{sql}");
        }
        for sql in ["COMMIT", "commit work;", "END", "end transaction"] {
            assert_eq!(bare_control(sql.as_bytes()), Some(Control::Commit), "{sql}");
        }
        for sql in ["ROLLBACK", "abort;", "rollback transaction"] {
            assert_eq!(
                bare_control(sql.as_bytes()),
                Some(Control::Rollback),
                "{sql}"
            );
        }
    }

    #[test]
    fn modes_chains_hints_and_more_statements_are_not_bare() {
        for sql in [
            "BEGIN READ ONLY",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "START TRANSACTION READ WRITE",
            "START",
            "BEGIN; SELECT 1",
            "BEGIN;;",
            "COMMIT AND CHAIN",
            "ROLLBACK AND NO CHAIN",
            "ROLLBACK TO SAVEPOINT a",
            "ROLLBACK PREPARED 'x'",
            "COMMIT PREPARED 'x'",
            "END WORK WORK",
            "/* switchyard: primary */ BEGIN",
            "-- switchyard: replica\nBEGIN",
            "SELECT 1",
            "",
            "beginning",
        ] {
            assert_eq!(bare_control(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn command_complete_frames_are_well_formed() {
        for control in [Control::Begin, Control::Commit, Control::Rollback] {
            let frame = control.command_complete();
            let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
            assert_eq!(len + 1, frame.len(), "{control:?}");
            assert_eq!(frame.last(), Some(&0));
        }
    }
}
