//! The words the session-effects classifier reacts to.

use super::lexer::{Token, TokenKind};

/// A word the classifier knows, or [`Kw::Other`] for any other token.
///
/// Unquoted words match case-insensitively, as PostgreSQL folds them. Quoted
/// identifiers only match the function names and `pg_temp`, exactly: a
/// quoted `"listen"` is a name, never the keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kw {
    Other,
    All,
    Analyze,
    Begin,
    Characteristics,
    Close,
    Commit,
    Constraints,
    Create,
    Deallocate,
    Declare,
    Discard,
    Do,
    Drop,
    Else,
    Explain,
    For,
    Global,
    Hold,
    Insert,
    Into,
    Listen,
    Load,
    Local,
    Loop,
    Merge,
    On,
    Or,
    Prepare,
    Recursive,
    Replace,
    Reset,
    Set,
    Temp,
    Then,
    Transaction,
    Unlisten,
    Unlogged,
    Verbose,
    With,
    /// `pg_advisory_lock`, `pg_try_advisory_lock` and their `_shared` forms:
    /// the session-level locks, not the `_xact_` ones.
    AdvisoryLockFn,
    /// `pg_advisory_unlock_all`.
    AdvisoryUnlockAllFn,
    /// `set_config`.
    SetConfigFn,
    /// `pg_temp` or a backend's own `pg_temp_N` schema.
    PgTemp,
}

/// The longest word in the table (`pg_try_advisory_lock_shared`).
const LONGEST: usize = 27;

impl Kw {
    /// What `token` is to the classifier.
    #[inline]
    pub(super) fn of(token: &Token<'_>) -> Kw {
        match token.kind {
            TokenKind::Word => Self::from_word(token.text),
            TokenKind::QuotedIdent => Self::from_quoted(token.content()),
            _ => Kw::Other,
        }
    }

    /// True for the PL/pgSQL words after which a new statement starts.
    pub(super) fn starts_plpgsql_statement(self) -> bool {
        matches!(self, Kw::Begin | Kw::Then | Kw::Else | Kw::Loop)
    }

    /// Dispatches on length and first letter, so an ordinary identifier
    /// costs one table jump and at most two comparisons.
    fn from_word(word: &[u8]) -> Kw {
        let Some(first) = word.first() else {
            return Kw::Other;
        };
        let candidates: &[(&[u8], Kw)] = match (word.len(), first.to_ascii_lowercase()) {
            (2, b'd') => &[(b"do", Kw::Do)],
            (2, b'o') => &[(b"on", Kw::On), (b"or", Kw::Or)],
            (3, b'a') => &[(b"all", Kw::All)],
            (3, b'f') => &[(b"for", Kw::For)],
            (3, b's') => &[(b"set", Kw::Set)],
            (4, b'd') => &[(b"drop", Kw::Drop)],
            (4, b'e') => &[(b"else", Kw::Else)],
            (4, b'h') => &[(b"hold", Kw::Hold)],
            (4, b'i') => &[(b"into", Kw::Into)],
            (4, b'l') => &[(b"load", Kw::Load), (b"loop", Kw::Loop)],
            (4, b't') => &[(b"temp", Kw::Temp), (b"then", Kw::Then)],
            (4, b'w') => &[(b"with", Kw::With)],
            (5, b'b') => &[(b"begin", Kw::Begin)],
            (5, b'c') => &[(b"close", Kw::Close)],
            (5, b'l') => &[(b"local", Kw::Local)],
            (5, b'm') => &[(b"merge", Kw::Merge)],
            (5, b'r') => &[(b"reset", Kw::Reset)],
            (6, b'c') => &[(b"create", Kw::Create), (b"commit", Kw::Commit)],
            (6, b'g') => &[(b"global", Kw::Global)],
            (6, b'i') => &[(b"insert", Kw::Insert)],
            (6, b'l') => &[(b"listen", Kw::Listen)],
            (7, b'a') => &[(b"analyze", Kw::Analyze), (b"analyse", Kw::Analyze)],
            (7, b'd') => &[(b"declare", Kw::Declare), (b"discard", Kw::Discard)],
            (7, b'e') => &[(b"explain", Kw::Explain)],
            (7, b'r') => &[(b"replace", Kw::Replace)],
            (7, b'v') => &[(b"verbose", Kw::Verbose)],
            (8, b'u') => &[(b"unlisten", Kw::Unlisten), (b"unlogged", Kw::Unlogged)],
            (9, b'r') => &[(b"recursive", Kw::Recursive)],
            (9, b't') => &[(b"temporary", Kw::Temp)],
            (10, b'd') => &[(b"deallocate", Kw::Deallocate)],
            (10, b's') => &[(b"set_config", Kw::SetConfigFn)],
            (11, b'c') => &[(b"constraints", Kw::Constraints)],
            (11, b't') => &[(b"transaction", Kw::Transaction)],
            (15, b'c') => &[(b"characteristics", Kw::Characteristics)],
            (_, b'p') => return Self::from_p_word(word),
            _ => return Kw::Other,
        };
        candidates
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map_or(Kw::Other, |&(_, kw)| kw)
    }

    /// Words starting with `p`: `prepare` and the `pg_` names, folded to
    /// lower case first (they are the only long ones).
    fn from_p_word(word: &[u8]) -> Kw {
        if word.eq_ignore_ascii_case(b"prepare") {
            return Kw::Prepare;
        }
        if word.len() > LONGEST
            || !word
                .get(..3)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"pg_"))
        {
            return Kw::Other;
        }
        let mut buf = [0u8; LONGEST];
        for (lower, &b) in buf.iter_mut().zip(word) {
            *lower = b.to_ascii_lowercase();
        }
        Self::from_quoted(buf.get(..word.len()).unwrap_or_default())
    }

    /// Matches the names that keep their meaning when quoted, exactly.
    fn from_quoted(name: &[u8]) -> Kw {
        match name {
            b"pg_advisory_lock"
            | b"pg_advisory_lock_shared"
            | b"pg_try_advisory_lock"
            | b"pg_try_advisory_lock_shared" => Kw::AdvisoryLockFn,
            b"pg_advisory_unlock_all" => Kw::AdvisoryUnlockAllFn,
            b"set_config" => Kw::SetConfigFn,
            b"pg_temp" => Kw::PgTemp,
            _ if is_numbered_temp_schema(name) => Kw::PgTemp,
            _ => Kw::Other,
        }
    }
}

/// `pg_temp_N`: the name a backend's temporary schema has in the catalog.
fn is_numbered_temp_schema(name: &[u8]) -> bool {
    name.strip_prefix(b"pg_temp_")
        .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::lexer::Lexer;

    fn kw(sql: &str) -> Kw {
        Kw::of(&Lexer::new(sql).next().unwrap())
    }

    #[test]
    fn words_match_in_any_case() {
        assert_eq!(kw("LiStEn"), Kw::Listen);
        assert_eq!(kw("TEMPORARY"), Kw::Temp);
        assert_eq!(kw("PG_CATALOG"), Kw::Other);
        assert_eq!(kw("PG_TRY_ADVISORY_LOCK_SHARED"), Kw::AdvisoryLockFn);
        assert_eq!(kw("pg_advisory_xact_lock"), Kw::Other);
        assert_eq!(kw("pg_temp_12"), Kw::PgTemp);
        assert_eq!(kw("pg_temp_"), Kw::Other);
        assert_eq!(kw(&"x".repeat(100)), Kw::Other);
    }

    #[test]
    fn quoted_identifiers_match_only_exact_function_names() {
        assert_eq!(kw(r#""listen""#), Kw::Other);
        assert_eq!(kw(r#""set_config""#), Kw::SetConfigFn);
        assert_eq!(kw(r#""SET_CONFIG""#), Kw::Other);
    }
}
