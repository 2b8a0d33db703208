//! What a query does to session state that outlives its transaction.
//!
//! Transaction pooling hands a client a different server connection for each
//! transaction, which is only correct while nothing the client relies on
//! stays behind on the old one. [`session_effects`] reads a query (a simple
//! Query string of any number of statements, or a Parse'd statement) and
//! reports what it leaves behind:
//!
//! - **session state**: `SET`/`RESET` of session parameters, `set_config()`;
//! - **pins**, state that cannot be replayed elsewhere ([`PinReason`]):
//!   temporary tables, `LISTEN`, session advisory locks, `WITH HOLD`
//!   cursors, SQL `PREPARE`, `LOAD`;
//! - **unpins**, statements that drop such state wholesale ([`UnpinKind`]):
//!   `DISCARD ALL`, `UNLISTEN *`, `pg_advisory_unlock_all()`, ...
//!
//! Statement-initial rules (`SET`, `LISTEN`, `CREATE TEMP`, ...) look at the
//! first words of each statement; function rules (`pg_advisory_lock(`,
//! `set_config(`, with or without a schema) look everywhere. Nothing inside a
//! string, quoted identifier, dollar quote or comment counts, with one
//! deliberate exception: the code block of a `DO` statement runs right away,
//! so its body is scanned for pins and session state (never for unpins: a
//! block may release conditionally).
//!
//! Conservative by construction: a false pin costs a connection for a while;
//! a missed pin breaks a client. Hence any `set_config` call counts, a
//! function named like an advisory lock counts whatever its schema, and
//! unpins are only reported for the unambiguous wholesale forms. What cannot
//! be seen is not guessed at: a user function or procedure that takes a lock,
//! or SQL built at run time (`EXECUTE format(...)` in PL/pgSQL), goes
//! unnoticed.
//!
//! Unpins say what the statements do *if they succeed and commit*:
//! `UNLISTEN` and `DROP` are transactional, and a failing statement stops the
//! rest of a multi-statement query. A caller applies them only after the
//! query completed without error, outside a failed transaction.

use super::classify::{Context, next_statement};
pub use super::flags::{Flag, FlagSet};
use super::lexer::{LexOptions, Lexer};

/// Why a session must keep its server connection across transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// `CREATE TEMP TABLE|VIEW|SEQUENCE`, `SELECT ... INTO TEMP`, or an
    /// object created in `pg_temp`. Not for `ON COMMIT DROP` tables, which
    /// never outlive their transaction.
    TempTable,
    /// `LISTEN channel`.
    Listen,
    /// A session-level advisory lock: `pg_advisory_lock`,
    /// `pg_advisory_lock_shared`, `pg_try_advisory_lock`,
    /// `pg_try_advisory_lock_shared` (the `_xact_` forms end with the
    /// transaction and do not pin).
    AdvisoryLock,
    /// `DECLARE ... CURSOR WITH HOLD`.
    HoldCursor,
    /// SQL-level `PREPARE name AS ...` (not `PREPARE TRANSACTION`).
    SqlPrepare,
    /// Any other pin, named by its statement. Today only `"LOAD"` (a library
    /// loaded into that backend for good), which nothing releases. A
    /// [`PinSet`] holds all `Other` reasons as one member.
    Other(&'static str),
}

impl PinReason {
    /// Every reason, in declaration order (what [`PinSet`] lists).
    pub const ALL: [PinReason; 6] = [
        PinReason::TempTable,
        PinReason::Listen,
        PinReason::AdvisoryLock,
        PinReason::HoldCursor,
        PinReason::SqlPrepare,
        PinReason::Other("LOAD"),
    ];

    /// A stable snake_case name, for metric labels and logs (`"other"` for
    /// every [`PinReason::Other`]).
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::TempTable => "temp_table",
            PinReason::Listen => "listen",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::Other(_) => "other",
        }
    }
}

/// A statement that drops one kind of pinning state all at once.
///
/// Declared broadest first, which is the order [`SessionEffects::unpin`]
/// picks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum UnpinKind {
    /// `DISCARD ALL`: every pin except [`PinReason::Other`] (a `LOAD`ed
    /// library stays), every session parameter, every prepared statement.
    DiscardAll,
    /// `DEALLOCATE ALL` or `DEALLOCATE PREPARE ALL`.
    DeallocateAll,
    /// `DISCARD TEMP` (or `TEMPORARY`): drops all temporary tables.
    DiscardTemp,
    /// `UNLISTEN *`.
    UnlistenAll,
    /// `pg_advisory_unlock_all()`.
    AdvisoryUnlockAll,
    /// `CLOSE ALL`.
    CloseAll,
}

impl UnpinKind {
    /// Every kind, in declaration order.
    pub const ALL: [UnpinKind; 6] = [
        UnpinKind::DiscardAll,
        UnpinKind::DeallocateAll,
        UnpinKind::DiscardTemp,
        UnpinKind::UnlistenAll,
        UnpinKind::AdvisoryUnlockAll,
        UnpinKind::CloseAll,
    ];

    /// A stable snake_case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            UnpinKind::DiscardAll => "discard_all",
            UnpinKind::DeallocateAll => "deallocate_all",
            UnpinKind::DiscardTemp => "discard_temp",
            UnpinKind::UnlistenAll => "unlisten_all",
            UnpinKind::AdvisoryUnlockAll => "advisory_unlock_all",
            UnpinKind::CloseAll => "close_all",
        }
    }

    /// True when this statement, once committed, leaves no state of kind
    /// `reason` behind.
    pub fn releases(self, reason: PinReason) -> bool {
        match self {
            UnpinKind::DiscardAll => !matches!(reason, PinReason::Other(_)),
            UnpinKind::DeallocateAll => reason == PinReason::SqlPrepare,
            UnpinKind::DiscardTemp => reason == PinReason::TempTable,
            UnpinKind::UnlistenAll => reason == PinReason::Listen,
            UnpinKind::AdvisoryUnlockAll => reason == PinReason::AdvisoryLock,
            UnpinKind::CloseAll => reason == PinReason::HoldCursor,
        }
    }
}

impl Flag for PinReason {
    const ALL: &'static [Self] = &PinReason::ALL;
    fn bit(self) -> u8 {
        match self {
            PinReason::TempTable => 0,
            PinReason::Listen => 1,
            PinReason::AdvisoryLock => 2,
            PinReason::HoldCursor => 3,
            PinReason::SqlPrepare => 4,
            PinReason::Other(_) => 5,
        }
    }
}

impl Flag for UnpinKind {
    const ALL: &'static [Self] = &UnpinKind::ALL;
    fn bit(self) -> u8 {
        self as u8
    }
}

/// The reasons a query pins its session.
pub type PinSet = FlagSet<PinReason>;

/// The wholesale releases a query performs.
pub type UnpinSet = FlagSet<UnpinKind>;

/// What a query does to session state that outlives its transaction.
///
/// `pin` and `unpin` are one member of `pins` and `unpins` each, for
/// callers that want a single reason to log; a caller that tracks what holds
/// a session must use the sets, since `LISTEN a; SELECT pg_advisory_lock(1)`
/// pins for two reasons and `UNLISTEN *` later releases only one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionEffects {
    /// True when a statement changes session parameters: `SET` (not
    /// `SET LOCAL`, `SET TRANSACTION` or `SET CONSTRAINTS`), `RESET`,
    /// `SET SESSION CHARACTERISTICS`, any `set_config()` call, `DISCARD ALL`.
    pub sets_session_state: bool,
    /// The first of `pins` in [`PinReason::ALL`] order; `None` when empty.
    pub pin: Option<PinReason>,
    /// The first (broadest) of `unpins`; `None` when empty.
    pub unpin: Option<UnpinKind>,
    /// Every reason the query pins its session.
    pub pins: PinSet,
    /// Every wholesale release the query performs.
    pub unpins: UnpinSet,
}

impl SessionEffects {
    /// No effects at all.
    pub const NONE: Self = Self {
        sets_session_state: false,
        pin: None,
        unpin: None,
        pins: PinSet::EMPTY,
        unpins: UnpinSet::EMPTY,
    };

    /// True when the query leaves nothing behind and releases nothing.
    pub fn is_empty(&self) -> bool {
        !self.sets_session_state && self.pins.is_empty() && self.unpins.is_empty()
    }

    /// The effects of running `self`'s statements and then `other`'s.
    ///
    /// Order is lost: a caller applying merged effects should release
    /// first and pin second, which errs towards staying pinned.
    pub fn merge(self, other: Self) -> Self {
        let mut merged = Self {
            sets_session_state: self.sets_session_state || other.sets_session_state,
            pins: self.pins.union(other.pins),
            unpins: self.unpins.union(other.unpins),
            ..Self::NONE
        };
        merged.sync_firsts();
        merged
    }

    pub(super) fn add_pin(&mut self, reason: PinReason) {
        self.pins.insert(reason);
        self.sync_firsts();
    }

    pub(super) fn add_unpin(&mut self, kind: UnpinKind) {
        self.unpins.insert(kind);
        self.sync_firsts();
    }

    fn sync_firsts(&mut self) {
        self.pin = self.pins.first();
        self.unpin = self.unpins.first();
    }
}

/// The effects of every statement in `sql`, merged, lexed with the server
/// default [`LexOptions`]. Never panics and does not allocate.
pub fn session_effects(sql: &str) -> SessionEffects {
    session_effects_with(sql.as_bytes(), LexOptions::default())
}

/// [`session_effects`] for query text as it came off the wire, in the client
/// encoding, which need not be UTF-8.
pub fn session_effects_bytes(sql: &[u8]) -> SessionEffects {
    session_effects_with(sql, LexOptions::default())
}

/// [`session_effects_bytes`] with explicit lexer options (for a session
/// running with `standard_conforming_strings = off`).
pub fn session_effects_with(sql: &[u8], options: LexOptions) -> SessionEffects {
    if plainly_without_effects(sql) {
        return SessionEffects::NONE;
    }
    lexed_effects(sql, options)
}

/// The effects of `sql` from a full lexer pass, with no shortcut (for a
/// caller that has already looked for one).
pub(super) fn lexed_effects(sql: &[u8], options: LexOptions) -> SessionEffects {
    statement_effects(sql, options).fold(SessionEffects::NONE, SessionEffects::merge)
}

/// Statement kinds that leave nothing behind by themselves: only a
/// function they call or a `SELECT … INTO TEMP` could.
const PLAIN_FIRST_WORDS: [&[u8]; 7] = [
    b"select", b"insert", b"update", b"delete", b"with", b"values", b"table",
];

/// Words that every function or temp-table rule needs somewhere in the text
/// (`pg_advisory_*`, `set_config`, `pg_temp`, `TEMP`/`TEMPORARY`), in any case.
const TELLTALE_WORDS: [&[u8]; 3] = [b"temp", b"advisory", b"set_config"];

/// True when `sql` cannot have session effects, seen without the lexer: one
/// statement (no `;` but trailing ones), starting with a plain statement
/// word, with no quoted identifier (whose escapes could spell a name) and
/// none of [`TELLTALE_WORDS`] anywhere. Most application queries are such,
/// and each text is often new (literal values), so a memo cannot help:
/// this pass costs a fraction of the lexer's. Anything else gets the lexer.
pub(super) fn plainly_without_effects(sql: &[u8]) -> bool {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let rest = &sql[start..];
    let word_len = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let (word, after) = rest.split_at(word_len);
    // A word glued to an identifier byte (`select_x`, `select$1`) is not
    // the keyword.
    if after
        .first()
        .is_some_and(|&b| b == b'_' || b == b'$' || b.is_ascii_digit() || b >= 0x80)
        || !PLAIN_FIRST_WORDS
            .iter()
            .any(|plain| word.eq_ignore_ascii_case(plain))
    {
        return false;
    }
    if let Some(semicolon) = after.iter().position(|&b| b == b';')
        && after[semicolon..]
            .iter()
            .any(|&b| b != b';' && !b.is_ascii_whitespace())
    {
        return false;
    }
    !after.contains(&b'"') && !has_telltale_word(after)
}

/// Each telltale word's first four bytes, case-folded as [`fold4`] folds.
const TELLTALE_PREFIXES: [u32; TELLTALE_WORDS.len()] = {
    let mut prefixes = [0; TELLTALE_WORDS.len()];
    let mut i = 0;
    while i < prefixes.len() {
        let word = TELLTALE_WORDS[i];
        prefixes[i] = fold4([word[0], word[1], word[2], word[3]]);
        i += 1;
    }
    prefixes
};

/// Four bytes with bit 5 set in each: ASCII letters lose their case. Other
/// bytes may fold onto a letter, which only sends a text to the lexer.
const fn fold4(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes) | 0x2020_2020
}

/// True when one of [`TELLTALE_WORDS`] occurs in `text`, in any case.
///
/// One folded four-byte comparison per position instead of a word
/// comparison at every `t`, `a` and `s` (frequent letters in SQL): a
/// prefix never misses a real occurrence, and the whole word is compared
/// only where a prefix matched.
fn has_telltale_word(text: &[u8]) -> bool {
    text.windows(4).enumerate().any(|(i, window)| {
        let folded = fold4([window[0], window[1], window[2], window[3]]);
        TELLTALE_PREFIXES.contains(&folded)
            && TELLTALE_WORDS.iter().any(|word| {
                text[i..]
                    .get(..word.len())
                    .is_some_and(|candidate| candidate.eq_ignore_ascii_case(word))
            })
    })
}

/// The effects of each non-empty statement of `sql`, in order, for a caller
/// that wants to apply pins and releases in the order they happen.
pub fn statement_effects(sql: &[u8], options: LexOptions) -> StatementEffects<'_> {
    StatementEffects {
        lexer: Lexer::with_options(sql, options),
    }
}

/// Iterator returned by [`statement_effects`].
#[derive(Clone, Debug)]
pub struct StatementEffects<'a> {
    lexer: Lexer<'a>,
}

impl Iterator for StatementEffects<'_> {
    type Item = SessionEffects;

    fn next(&mut self) -> Option<SessionEffects> {
        next_statement(&mut self.lexer, Context::TOP_LEVEL)
    }
}

#[cfg(test)]
mod tests {
    use super::PinReason::{AdvisoryLock, HoldCursor, Listen, SqlPrepare, TempTable};
    use super::UnpinKind::{
        AdvisoryUnlockAll, CloseAll, DeallocateAll, DiscardAll, DiscardTemp, UnlistenAll,
    };
    use super::*;
    use crate::router::lexer::statements;
    use proptest::prelude::*;

    const NONE: SessionEffects = SessionEffects::NONE;

    fn set() -> SessionEffects {
        SessionEffects {
            sets_session_state: true,
            ..NONE
        }
    }

    fn pin(reason: PinReason) -> SessionEffects {
        let mut effects = NONE;
        effects.add_pin(reason);
        effects
    }

    fn unpin(kind: UnpinKind) -> SessionEffects {
        let mut effects = NONE;
        effects.add_unpin(kind);
        effects
    }

    const LOAD: PinReason = PinReason::Other("LOAD");

    #[rustfmt::skip]
    fn cases() -> Vec<(&'static str, SessionEffects)> {
        vec![
            // SET and RESET.
            ("SET search_path = app", set()),
            ("set TimeZone to 'UTC'", set()),
            ("SET SESSION statement_timeout = 0", set()),
            ("SET LOCAL statement_timeout = 0", NONE),
            ("set local search_path = x", NONE),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", NONE),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", set()),
            ("SET CONSTRAINTS ALL DEFERRED", NONE),
            ("SET ROLE admin", set()),
            ("SET SESSION AUTHORIZATION bob", set()),
            ("SET TIME ZONE 'Europe/Paris'", set()),
            ("SET NAMES 'UTF8'", set()),
            ("SET SCHEMA 'app'", set()),
            ("SET \"local\" = 1", set()),
            ("RESET search_path", set()),
            ("RESET ALL", set()),
            ("reset role", set()),
            ("  \n\t SET x = 1", set()),
            ("/* lead */ -- comment\n SET x = 1", set()),
            ("UPDATE t SET a = 1", NONE),
            ("ALTER ROLE bob SET search_path = x", NONE),
            ("SET a = 1; SELECT 1", set()),
            ("SELECT 1; set a = 1", set()),
            ("SELECT 1;; ;SET a=1;", set()),
            ("select 1 from t; Set A = 1;", set()),
            ("SELECT '; SET a = 1'", NONE),
            ("SELECT 'SET x = 1'", NONE),
            // set_config, anywhere, any schema, any third argument.
            ("SELECT set_config('search_path', 'app', false)", set()),
            ("SELECT pg_catalog.set_config('a.b', 'c', true)", set()),
            ("select SET_CONFIG ( 'a', 'b', false )", set()),
            ("SELECT \"set_config\"('a', 'b', false)", set()),
            ("SELECT 'set_config(1)'", NONE),
            ("SELECT set_config FROM t", NONE),
            // Temporary objects.
            ("CREATE TEMP TABLE t (id int)", pin(TempTable)),
            ("create temporary table t as select 1", pin(TempTable)),
            ("CREATE GLOBAL TEMPORARY TABLE t (x int)", pin(TempTable)),
            ("CREATE LOCAL TEMP TABLE t (x int)", pin(TempTable)),
            ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", pin(TempTable)),
            ("CREATE TEMP SEQUENCE s", pin(TempTable)),
            ("CREATE TEMP RECURSIVE VIEW v (n) AS VALUES (1)", pin(TempTable)),
            ("CREATE TEMP TABLE t (x int) ON COMMIT DROP", NONE),
            ("CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", NONE),
            ("CREATE TEMP TABLE t (x int) ON COMMIT DELETE ROWS", pin(TempTable)),
            ("CREATE TABLE t (x int)", NONE),
            ("CREATE UNLOGGED TABLE t (x int)", NONE),
            ("CREATE TABLE pg_temp.t (x int)", pin(TempTable)),
            ("CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", pin(TempTable)),
            ("SELECT * INTO TEMP t FROM a", pin(TempTable)),
            ("SELECT a INTO TEMPORARY TABLE t FROM b", pin(TempTable)),
            ("select 1 as x into local temp t", pin(TempTable)),
            ("WITH a AS (SELECT 1) SELECT * INTO TEMP t FROM a", pin(TempTable)),
            ("EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", pin(TempTable)),
            ("EXPLAIN (ANALYZE, BUFFERS) CREATE TEMP TABLE t AS SELECT 1", pin(TempTable)),
            ("SELECT 1 INTO pg_temp.t", pin(TempTable)),
            ("INSERT INTO temp VALUES (1)", NONE),
            ("INSERT INTO pg_temp.t VALUES (1)", NONE),
            ("MERGE INTO temp t USING s ON true WHEN MATCHED THEN DELETE", NONE),
            ("SELECT * FROM temp", NONE),
            ("SELECT * INTO t FROM a", NONE),
            ("SELECT 'CREATE TEMP TABLE t'", NONE),
            // LISTEN and UNLISTEN.
            ("LISTEN jobs", pin(Listen)),
            ("listen \"Jobs\"", pin(Listen)),
            ("LISTEN", pin(Listen)),
            ("SELECT \"listen\" FROM t", NONE),
            ("SELECT U&\"listen\" FROM t", NONE),
            ("NOTIFY jobs", NONE),
            ("SELECT $$LISTEN a$$", NONE),
            ("SELECT $tag$ LISTEN a; $$ nested $$ $tag$", NONE),
            ("UNLISTEN *", unpin(UnlistenAll)),
            ("UNLISTEN jobs", NONE),
            ("unlisten * ; listen b", unpin(UnlistenAll).merge(pin(Listen))),
            // Advisory locks.
            ("SELECT pg_advisory_lock(1)", pin(AdvisoryLock)),
            ("SELECT pg_try_advisory_lock(1, 2)", pin(AdvisoryLock)),
            ("SELECT PG_ADVISORY_LOCK_SHARED(42)", pin(AdvisoryLock)),
            ("select pg_catalog.pg_try_advisory_lock_shared(1)", pin(AdvisoryLock)),
            ("SELECT\tpg_advisory_lock\n(\n1\n)", pin(AdvisoryLock)),
            ("SELECT x FROM t WHERE pg_advisory_lock /* why */ (id) IS NOT NULL", pin(AdvisoryLock)),
            ("SELECT \"pg_advisory_lock\"(1)", pin(AdvisoryLock)),
            ("SELECT pg_advisory_xact_lock(1)", NONE),
            ("SELECT pg_try_advisory_xact_lock_shared(1)", NONE),
            ("SELECT pg_advisory_unlock(1)", NONE),
            ("SELECT pg_advisory_lock FROM t", NONE),
            ("SELECT 'pg_advisory_lock(1)'", NONE),
            ("/* pg_advisory_lock(1) */ SELECT 1", NONE),
            ("SELECT 1 -- pg_advisory_lock(1)\n", NONE),
            ("SELECT pg_advisory_unlock_all()", unpin(AdvisoryUnlockAll)),
            // Escapes decide where a literal ends.
            (r"SELECT E'\'' || pg_advisory_lock(1)::text", pin(AdvisoryLock)),
            (r"SELECT E'\' pg_advisory_lock(1) '", NONE),
            (r"SELECT e'\\', pg_advisory_lock(1)", pin(AdvisoryLock)),
            (r"SELECT 'a\', pg_advisory_lock(1)", pin(AdvisoryLock)),
            (r"SELECT E'\''; LISTEN a", pin(Listen)),
            (r"SELECT E'\'; LISTEN a'", NONE),
            ("SELECT 'it''s; LISTEN a'", NONE),
            ("SELECT 'it''s'; LISTEN a", pin(Listen)),
            (r"SELECT U&'\0041', 1; LISTEN a", pin(Listen)),
            // Cursors.
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", pin(HoldCursor)),
            ("declare c binary no scroll cursor with hold for select * from t", pin(HoldCursor)),
            ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", NONE),
            ("DECLARE c CURSOR FOR SELECT 1", NONE),
            ("DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold", NONE),
            ("CLOSE ALL", unpin(CloseAll)),
            ("CLOSE c", NONE),
            // Prepared statements.
            ("PREPARE q (int) AS SELECT $1", pin(SqlPrepare)),
            ("prepare q as select 1", pin(SqlPrepare)),
            ("PREPARE TRANSACTION 'tx1'", NONE),
            ("EXECUTE q(1)", NONE),
            ("DEALLOCATE ALL", unpin(DeallocateAll)),
            ("DEALLOCATE PREPARE ALL", unpin(DeallocateAll)),
            ("DEALLOCATE q", NONE),
            // LOAD and DISCARD.
            ("LOAD 'auto_explain'", pin(LOAD)),
            ("DISCARD ALL", unpin(DiscardAll).merge(set())),
            ("DISCARD TEMP", unpin(DiscardTemp)),
            ("discard temporary", unpin(DiscardTemp)),
            ("DISCARD PLANS", NONE),
            // DO blocks run their code: pins and state count, unpins do not.
            ("DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$", pin(AdvisoryLock)),
            ("DO $do$ BEGIN CREATE TEMP TABLE t (x int); END $do$", pin(TempTable)),
            ("DO LANGUAGE plpgsql $$ BEGIN IF true THEN LISTEN a; END IF; END $$", pin(Listen)),
            ("DO 'BEGIN SET search_path = x; END'", set()),
            ("DO $$ BEGIN DISCARD ALL; END $$", set()),
            ("DO $$ BEGIN RAISE NOTICE 'LISTEN x'; END $$", NONE),
            ("SELECT $$ BEGIN PERFORM pg_advisory_lock(1); END $$", NONE),
            ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_lock(1); END $$", NONE),
            // Several statements, odd spacing, broken input.
            ("SELECT 1; LISTEN a; SELECT pg_advisory_lock(1)", pin(Listen).merge(pin(AdvisoryLock))),
            (
                "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *; \
                 SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES",
                set()
                    .merge(unpin(CloseAll))
                    .merge(unpin(DeallocateAll))
                    .merge(unpin(UnlistenAll))
                    .merge(unpin(AdvisoryUnlockAll))
                    .merge(unpin(DiscardTemp)),
            ),
            ("SELECT 1; --x\r\nLISTEN a", pin(Listen)),
            ("SELECT 1 /* ; LISTEN a */", NONE),
            ("SELECT 1 -- ; LISTEN a", NONE),
            ("/* a /* nested */ LISTEN b */ SELECT 1", NONE),
            ("/* a /* nested */ */ LISTEN b", pin(Listen)),
            ("SELECT 'unterminated; LISTEN a", NONE),
            ("SELECT $$ unterminated; LISTEN a", NONE),
            ("SELECT \"unterminated; LISTEN a", NONE),
            ("/* unterminated LISTEN a", NONE),
            ("SELECT (1; LISTEN a", NONE),
            ("", NONE),
            (";;;", NONE),
            ("   \n  ", NONE),
        ]
    }

    #[test]
    fn statements_have_the_expected_effects() {
        let cases = cases();
        assert!(cases.len() >= 80);
        let wrong: Vec<_> = cases
            .iter()
            .map(|&(sql, expected)| (sql, expected, session_effects(sql)))
            .filter(|(_, expected, got)| expected != got)
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn single_pin_and_unpin_are_one_member_of_the_sets() {
        let effects =
            session_effects("LISTEN a; SELECT pg_advisory_lock(1); UNLISTEN *; DISCARD ALL");
        assert_eq!(effects.pin, Some(Listen));
        assert_eq!(
            effects.pins.iter().collect::<Vec<_>>(),
            vec![Listen, AdvisoryLock]
        );
        assert_eq!(effects.unpin, Some(DiscardAll));
        assert!(effects.unpins.contains(UnlistenAll));
        assert!(!effects.is_empty());
    }

    #[test]
    fn statement_effects_keep_statement_order() {
        let each: Vec<_> =
            statement_effects(b"LISTEN a; ; SELECT 1; UNLISTEN *", LexOptions::default()).collect();
        assert_eq!(each, vec![pin(Listen), NONE, unpin(UnlistenAll)]);
    }

    #[test]
    fn legacy_strings_let_backslash_hide_a_quote() {
        let sql = br"SELECT 'a\'; LISTEN b'";
        assert_eq!(session_effects_bytes(sql), pin(Listen));
        let legacy = LexOptions {
            standard_conforming_strings: false,
        };
        assert_eq!(session_effects_with(sql, legacy), NONE);
    }

    #[test]
    fn non_utf8_bytes_are_classified_like_identifiers() {
        assert_eq!(
            session_effects_bytes(b"SELECT \xff\xfe; LISTEN a"),
            pin(Listen)
        );
        assert_eq!(session_effects_bytes(b"SELECT '\xff; LISTEN a'"), NONE);
        assert_eq!(session_effects_bytes(b"\xffLISTEN a"), NONE);
    }

    #[test]
    fn discard_all_releases_everything_but_loaded_libraries() {
        for reason in PinReason::ALL {
            assert_eq!(DiscardAll.releases(reason), reason != LOAD, "{reason:?}");
        }
        assert!(UnlistenAll.releases(Listen));
        assert!(!UnlistenAll.releases(AdvisoryLock));
        assert!(CloseAll.releases(HoldCursor));
        assert!(DeallocateAll.releases(SqlPrepare));
        assert!(DiscardTemp.releases(TempTable));
        assert!(AdvisoryUnlockAll.releases(AdvisoryLock));
    }

    #[test]
    fn flag_sets_behave_like_sets() {
        let mut pins: PinSet = [Listen, LOAD, Listen].into_iter().collect();
        assert_eq!(pins.iter().collect::<Vec<_>>(), vec![Listen, LOAD]);
        assert!(pins.contains(PinReason::Other("anything")));
        pins.remove(Listen);
        assert_eq!(pins.first(), Some(LOAD));
        assert_eq!(format!("{pins:?}"), r#"{Other("LOAD")}"#);
        assert_eq!(PinReason::TempTable.as_str(), "temp_table");
        assert_eq!(UnpinKind::CloseAll.as_str(), "close_all");
    }

    #[test]
    fn deep_nesting_neither_recurses_nor_panics() {
        let parens = format!(
            "SELECT {}1{}; LISTEN a",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert_eq!(session_effects(&parens), pin(Listen));
        let comments = format!("{} LISTEN a", "/*".repeat(100_000));
        assert_eq!(session_effects(&comments), NONE);
        let mut block = String::from("PERFORM pg_advisory_lock(1);");
        for level in 0..20 {
            block = format!("DO $l{level}$ BEGIN {block} END $l{level}$");
        }
        assert_eq!(
            session_effects(&block),
            NONE,
            "nesting beyond the limit is not scanned"
        );
        let shallow = "DO $a$ BEGIN DO $b$ BEGIN PERFORM pg_advisory_lock(1); END $b$; END $a$";
        assert_eq!(session_effects(shallow), pin(AdvisoryLock));
    }

    /// Rough cost per statement: `cargo test --release --lib router -- --ignored --nocapture`.
    #[test]
    fn plain_statements_skip_the_lexer_and_anything_telling_does_not() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
            "  select 1",
            "INSERT INTO t VALUES (1) RETURNING id;;  ",
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
            "UPDATE accounts SET balance = 0 WHERE id = $1",
        ] {
            assert!(plainly_without_effects(sql.as_bytes()), "{sql}");
            assert_eq!(session_effects(sql), NONE, "{sql}");
        }
        for sql in [
            "SELECT pg_advisory_lock(1)",
            "select PG_TRY_ADVISORY_LOCK(1)",
            "SELECT SeT_CoNfIg('a', 'b', false)",
            "SELECT 1 FROM pg_TEMP",
            "SELECT set_config('a', 'b', false)",
            "SELECT * INTO TEMP t FROM u",
            "SELECT 1 INTO pg_temp.t",
            "SELECT 1; SET a = 1",
            "SELECT \"x\" FROM t",
            "/* c */ SELECT 1",
            "(SELECT 1)",
            "SET search_path = a",
            "selectx 1",
            "select_x(1)",
            "",
        ] {
            assert!(!plainly_without_effects(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    #[ignore]
    fn timing_per_statement() {
        let statements = [
            "SELECT id, name, email FROM users WHERE id = $1",
            "UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1",
            "INSERT INTO events (kind, payload, created_at) VALUES ($1, $2, now()) RETURNING id",
            "SET search_path = app, public",
            "BEGIN",
            "SELECT pg_advisory_lock(42)",
            "/* app:checkout */ SELECT o.id, sum(l.qty * l.price) FROM orders o \
             JOIN lines l ON l.order_id = o.id WHERE o.customer = $1 GROUP BY o.id",
        ];
        let rounds = 200_000;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for sql in statements {
                std::hint::black_box(session_effects(std::hint::black_box(sql)));
            }
        }
        let per = start.elapsed().as_nanos() / (rounds * statements.len()) as u128;
        let bytes: usize = statements.iter().map(|s| s.len()).sum::<usize>() / statements.len();
        println!("session_effects: {per} ns/statement (mean {bytes} bytes)");
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(sql in any::<String>()) {
            let merged = session_effects(&sql);
            let each = statement_effects(sql.as_bytes(), LexOptions::default());
            prop_assert_eq!(each.clone().count(), statements(&sql).count());
            prop_assert_eq!(each.fold(NONE, SessionEffects::merge), merged);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            session_effects_bytes(&bytes);
            let legacy = LexOptions { standard_conforming_strings: false };
            session_effects_with(&bytes, legacy);
        }

        #[test]
        fn the_plain_shortcut_agrees_with_the_lexer(
            sql in r#"(SELECT |select |WITH |INSERT |DO |LISTEN |SET |CREATE |DECLARE |INTO |TEMP |temporary |pg_temp\.|pg_advisory_lock\(|PG_ADVISORY_UNLOCK_ALL\(|set_config\(|"set_config"\(|U&"|HOLD |FOR |[-$'"/*;()\\eEuU&_a-z0-9 \n.])*"#
        ) {
            let lexed = lexed_effects(sql.as_bytes(), LexOptions::default());
            if plainly_without_effects(sql.as_bytes()) {
                prop_assert_eq!(lexed, NONE, "{}", sql);
            }
        }

        #[test]
        fn sql_like_noise_never_panics(sql in r#"(DO |LISTEN |SET |[-$'"/*;()\\eEuU&_a-z0-9 \n.])*"#) {
            session_effects(&sql);
        }

        #[test]
        fn quoted_text_never_has_effects(text in any::<String>()) {
            let literal = format!("SELECT '{}'", text.replace('\'', "''"));
            prop_assert!(session_effects(&literal).is_empty(), "{}", literal);
            let ident = format!("SELECT \"{}\"", text.replace('"', "\"\""));
            prop_assert!(session_effects(&ident).is_empty(), "{}", ident);
            if !text.contains("$q$") && !text.ends_with('$') {
                let dollar = format!("SELECT $q${text}$q$");
                prop_assert!(session_effects(&dollar).is_empty(), "{}", dollar);
            }
            if !text.contains("*/") && !text.contains("/*") && !text.ends_with('/') && !text.ends_with('*') {
                let comment = format!("/*{text}*/ SELECT 1");
                prop_assert!(session_effects(&comment).is_empty(), "{}", comment);
            }
            if !text.contains(['\n', '\r']) {
                let line = format!("SELECT 1 --{text}");
                prop_assert!(session_effects(&line).is_empty(), "{}", line);
            }
        }
    }
}
