//! Read or write: whether a query may run on a replica.
//!
//! A query is a read only when every statement in it is one of SELECT,
//! VALUES, TABLE, SHOW or EXPLAIN (without ANALYZE of a write), with no
//! locking clause, no `SELECT … INTO`, no data-modifying CTE and no call to
//! a function known to write. Transaction control is neutral, except that a
//! transaction must be declared READ ONLY (`BEGIN READ ONLY`, or `SET
//! TRANSACTION READ ONLY` as its first statement) to count as a read.
//! Anything else, and anything unsure, is a write: a write sent to the
//! primary is merely slower, a write sent to a replica is an error.
//!
//! One pass over the tokens with the same lexer as [`super::effects`]; no
//! allocation.

use super::lexer::{LexOptions, Lexer, Token, TokenKind};

/// Where a query may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads only: a replica may serve it.
    Read,
    /// Writes, or may write: the primary must serve it.
    Write,
}

/// Functions that write (or need the primary's session state) although
/// they are called from a SELECT. Matched on the unqualified name, ASCII
/// case-insensitively; entries ending in `*` match a prefix.
pub const DEFAULT_WRITE_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "pg_advisory_*",
    "pg_try_advisory_*",
    "lo_*",
    "dblink_exec",
    "txid_current",
    "pg_current_xact_id",
    "pg_notify",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_logical_slot_get_changes",
    "pg_replication_origin_*",
    "pg_import_system_collations",
];

/// The functions a classifier treats as writing: the defaults plus the
/// configured extras, lower-cased once.
#[derive(Clone, Debug)]
pub struct WriteFunctions {
    exact: Vec<Box<[u8]>>,
    prefixes: Vec<Box<[u8]>>,
    /// Bit n set: some exact name is n bytes long (bit 63: 63 or more).
    /// Most calls (`count(`, `now(`, `IN (`) fail this or the next test
    /// and skip comparing with every name.
    lengths: u64,
    /// Bit b set: some name or prefix starts with byte b (lower case).
    first_bytes: [u64; 4],
    /// Unique per list built, so that classes remembered under one list
    /// (see [`super::memo`]) are not taken for another's.
    generation: u64,
}

impl Default for WriteFunctions {
    fn default() -> Self {
        Self::new::<&str>(&[])
    }
}

impl WriteFunctions {
    /// The defaults plus `extra` (same syntax as [`DEFAULT_WRITE_FUNCTIONS`]).
    pub fn new<S: AsRef<str>>(extra: &[S]) -> Self {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        let names = DEFAULT_WRITE_FUNCTIONS
            .iter()
            .copied()
            .chain(extra.iter().map(AsRef::as_ref));
        let mut lengths = 0;
        let mut first_bytes = [0; 4];
        for name in names {
            let lower = name.trim().to_ascii_lowercase().into_bytes();
            match lower.strip_suffix(b"*") {
                Some(prefix) => prefixes.push(prefix.into()),
                None => {
                    lengths |= length_bit(lower.len());
                    exact.push(lower.into_boxed_slice());
                }
            }
        }
        for name in exact.iter().chain(&prefixes) {
            match name.first() {
                Some(&b) => first_bytes[usize::from(b >> 6)] |= 1 << (b & 63),
                // An empty prefix (`*`) matches every name.
                None => first_bytes = [u64::MAX; 4],
            }
        }
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            exact,
            prefixes,
            lengths,
            first_bytes,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Identifies this list among all built in the process (clones share it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True when a call of `name` (as written, unquoted or quoted content) writes.
    pub fn contains(&self, name: &[u8], quoted: bool) -> bool {
        // Entries are lower case: a quoted name must match as written.
        let first = match name.first() {
            Some(&b) if quoted => b,
            Some(&b) => b.to_ascii_lowercase(),
            None => return false,
        };
        if self.first_bytes[usize::from(first >> 6)] & (1 << (first & 63)) == 0 {
            return false;
        }
        let eq = |candidate: &[u8]| {
            if quoted {
                candidate == name
            } else {
                candidate.eq_ignore_ascii_case(name)
            }
        };
        let starts = |prefix: &[u8]| {
            name.len() >= prefix.len()
                && if quoted {
                    name.starts_with(prefix)
                } else {
                    name[..prefix.len()].eq_ignore_ascii_case(prefix)
                }
        };
        let exact = self.lengths & length_bit(name.len()) != 0;
        (exact && self.exact.iter().any(|f| eq(f))) || self.prefixes.iter().any(|p| starts(p))
    }
}

/// A name length's bit in [`WriteFunctions::lengths`].
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// Classifies `sql` (a simple Query's text or a Parse's query).
pub fn classify(sql: &[u8], functions: &WriteFunctions) -> Access {
    classify_with(sql, functions, LexOptions::default())
}

/// [`classify`] with the session's lexing options.
pub fn classify_with(sql: &[u8], functions: &WriteFunctions, options: LexOptions) -> Access {
    classify_from(sql, functions, options, false)
}

/// Classifies `sql` as the first request of a transaction that a bare
/// `BEGIN` (no access mode) opened just before it: a read only when its
/// first statement is `SET TRANSACTION … READ ONLY` and everything after
/// the transaction (if it ends inside `sql`) reads too.
pub fn classify_opened(sql: &[u8], functions: &WriteFunctions) -> Access {
    classify_from(sql, functions, LexOptions::default(), true)
}

fn classify_from(
    sql: &[u8],
    functions: &WriteFunctions,
    options: LexOptions,
    opened: bool,
) -> Access {
    let mut lexer = Lexer::with_options(sql, options);
    // A transaction opened here must be declared read-only before its
    // first real statement.
    let mut open_transaction = opened;
    let mut first_in_transaction = opened;
    loop {
        let Some(first) = lexer.by_ref().find(|t| !t.is_statement_end()) else {
            // A transaction left open without READ ONLY may write later.
            return if open_transaction {
                Access::Write
            } else {
                Access::Read
            };
        };
        let verdict = statement(first, &mut lexer, functions);
        let was_first = first_in_transaction;
        first_in_transaction = false;
        match verdict {
            Verdict::Read => {
                if open_transaction && was_first {
                    // A real statement before SET TRANSACTION READ ONLY.
                    return Access::Write;
                }
            }
            Verdict::Neutral => {}
            Verdict::Begin { read_only } => {
                if !read_only {
                    open_transaction = true;
                    first_in_transaction = true;
                }
            }
            Verdict::SetTransactionReadOnly if was_first => open_transaction = false,
            Verdict::SetTransactionReadOnly => {}
            Verdict::Write => return Access::Write,
        }
    }
}

/// One statement's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Read,
    Write,
    /// COMMIT, ROLLBACK and the like: nothing to read or write.
    Neutral,
    Begin {
        read_only: bool,
    },
    SetTransactionReadOnly,
}

/// Classifies the statement starting at `first`, consuming its tokens
/// through its `;` (or the end of input).
fn statement(first: Token<'_>, lexer: &mut Lexer<'_>, functions: &WriteFunctions) -> Verdict {
    let verdict = match first_word(first, lexer) {
        // These read through the statement's end themselves: one pass.
        Some(Lead::Select) => return query_body(lexer, functions, false),
        Some(Lead::With) => return query_body(lexer, functions, true),
        Some(Lead::Show) => Verdict::Read,
        Some(Lead::Explain) => explain(lexer, functions),
        Some(Lead::Begin) => begin(lexer),
        Some(Lead::Neutral) => Verdict::Neutral,
        Some(Lead::Set) => set(lexer),
        None => Verdict::Write,
    };
    skip_statement(lexer);
    verdict
}

/// What a statement's first word makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lead {
    Select,
    With,
    Show,
    Explain,
    Begin,
    Neutral,
    Set,
}

/// The statement's lead word; a leading `(` (a parenthesised SELECT) is
/// looked through.
fn first_word(first: Token<'_>, lexer: &mut Lexer<'_>) -> Option<Lead> {
    let mut token = first;
    while token.kind == TokenKind::OpenParen {
        token = lexer.next()?;
    }
    if token.kind != TokenKind::Word {
        return None;
    }
    let word = token.text;
    let is = |kw: &str| word.eq_ignore_ascii_case(kw.as_bytes());
    Some(if is("select") || is("values") || is("table") {
        Lead::Select
    } else if is("with") {
        Lead::With
    } else if is("show") {
        Lead::Show
    } else if is("explain") {
        Lead::Explain
    } else if is("begin") || is("start") {
        Lead::Begin
    } else if is("commit")
        || is("end")
        || is("rollback")
        || is("abort")
        || is("savepoint")
        || is("release")
    {
        Lead::Neutral
    } else if is("set") {
        Lead::Set
    } else {
        return None;
    })
}

/// The rest of a SELECT (or WITH) statement, through its end.
fn query_body(lexer: &mut Lexer<'_>, functions: &WriteFunctions, with: bool) -> Verdict {
    let mut previous: Option<Token<'_>> = None;
    while let Some(token) = lexer.next() {
        if token.is_statement_end() {
            break;
        }
        match token.kind {
            TokenKind::OpenParen => {
                if let Some(name) = previous.filter(|p| is_name(p)) {
                    let quoted = name.kind == TokenKind::QuotedIdent;
                    if functions.contains(name.content(), quoted) {
                        return Verdict::Write;
                    }
                }
            }
            TokenKind::Word => {
                let word = token.text;
                let is = |kw: &[u8]| word.eq_ignore_ascii_case(kw);
                // By length first: most words are none of these.
                let writes = match word.len() {
                    3 => is(b"for") && locking_clause_follows(lexer),
                    // `SELECT … INTO t` creates a table; inside parentheses
                    // INTO cannot appear in a read, so any depth counts.
                    4 => is(b"into"),
                    5 => with && is(b"merge"),
                    6 => with && (is(b"insert") || is(b"update") || is(b"delete")),
                    _ => false,
                };
                if writes {
                    return Verdict::Write;
                }
            }
            _ => {}
        }
        previous = Some(token);
    }
    Verdict::Read
}

/// True for tokens that can name a function being called.
fn is_name(token: &Token<'_>) -> bool {
    matches!(token.kind, TokenKind::Word | TokenKind::QuotedIdent)
}

/// After FOR: UPDATE, SHARE, NO KEY UPDATE or KEY SHARE make a locking clause.
fn locking_clause_follows(after_for: &Lexer<'_>) -> bool {
    let mut next = after_for.clone();
    match next.next() {
        Some(t) if t.is_keyword("update") || t.is_keyword("share") => true,
        Some(t) if t.is_keyword("no") || t.is_keyword("key") => true,
        _ => false,
    }
}

/// EXPLAIN: a read, unless it ANALYZEs (runs) a statement that writes.
fn explain(lexer: &mut Lexer<'_>, functions: &WriteFunctions) -> Verdict {
    let mut analyze = false;
    let mut look = lexer.clone();
    let mut next = look.next();
    // EXPLAIN (ANALYZE, …) or EXPLAIN ANALYZE VERBOSE …
    if let Some(t) = next.filter(|t| t.kind == TokenKind::OpenParen) {
        let depth = t.depth;
        while let Some(inner) = look.next() {
            if inner.kind == TokenKind::CloseParen && inner.depth == depth {
                break;
            }
            if inner.is_keyword("analyze") || inner.is_keyword("analyse") {
                let value = look.clone().next();
                analyze = !matches!(value, Some(v) if v.is_keyword("false") || v.is_keyword("off"));
            }
        }
        next = look.next();
    }
    while let Some(t) = next {
        if t.is_keyword("analyze") || t.is_keyword("analyse") {
            analyze = true;
        } else if !t.is_keyword("verbose") {
            break;
        }
        next = look.next();
    }
    if !analyze {
        return Verdict::Read;
    }
    match next {
        Some(first) if !first.is_statement_end() => {
            // The outer statement's end is consumed by the caller.
            match statement(first, &mut look, functions) {
                Verdict::Read => Verdict::Read,
                _ => Verdict::Write,
            }
        }
        _ => Verdict::Write,
    }
}

/// BEGIN / START TRANSACTION, with its modes.
fn begin(lexer: &mut Lexer<'_>) -> Verdict {
    Verdict::Begin {
        read_only: declares_read_only(lexer.clone()),
    }
}

/// SET: only `SET TRANSACTION READ ONLY` is a read; other settings go to
/// the primary (their effect is tracked for the session either way).
fn set(lexer: &mut Lexer<'_>) -> Verdict {
    let mut look = lexer.clone();
    match look.next() {
        Some(t) if t.is_keyword("transaction") => {
            if declares_read_only(look) {
                Verdict::SetTransactionReadOnly
            } else {
                Verdict::Write
            }
        }
        _ => Verdict::Write,
    }
}

/// True when the transaction modes in the rest of the statement say READ
/// ONLY (and not READ WRITE after it), and not SERIALIZABLE: a hot standby
/// refuses serializable transactions (0A000, "cannot use serializable mode
/// in a hot standby"), so those run on the primary even when read-only.
fn declares_read_only(mut look: Lexer<'_>) -> bool {
    let mut read_only = false;
    while let Some(t) = look.next() {
        if t.is_statement_end() {
            break;
        }
        if t.is_keyword("serializable") {
            return false;
        }
        if t.is_keyword("read") {
            // Peek: in `REPEATABLE READ READ ONLY` the word after the first
            // READ starts the next mode.
            match look.clone().next() {
                Some(m) if m.is_keyword("only") => read_only = true,
                Some(m) if m.is_keyword("write") => read_only = false,
                _ => {}
            }
        }
    }
    read_only
}

/// Consumes the rest of the current statement.
fn skip_statement(lexer: &mut Lexer<'_>) {
    for token in lexer.by_ref() {
        if token.is_statement_end() {
            return;
        }
    }
}

/// A routing hint written in a query's leading comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hint {
    /// `/* switchyard: primary */`
    Primary,
    /// `/* switchyard: replica */`
    Replica,
}

/// The hint in `sql`'s leading comment (`/* switchyard: primary */` or
/// `-- switchyard: replica`), if it has one.
pub fn hint(sql: &[u8]) -> Option<Hint> {
    let start = sql.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &sql[start..];
    let comment = if let Some(body) = rest.strip_prefix(b"/*") {
        let end = find(body, b"*/").unwrap_or(body.len());
        &body[..end]
    } else if let Some(body) = rest.strip_prefix(b"--") {
        let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
        &body[..end]
    } else {
        return None;
    };
    let text = trim(comment);
    let value = strip_prefix_ignore_case(text, b"switchyard:")?;
    let value = trim(value);
    if value.eq_ignore_ascii_case(b"primary") {
        Some(Hint::Primary)
    } else if value.eq_ignore_ascii_case(b"replica") {
        Some(Hint::Replica)
    } else {
        None
    }
}

/// The setting that picks a session's route, intercepted by the proxy.
pub const ROUTE_SETTING: &str = "switchyard.route";

/// When `sql` is exactly one `SET switchyard.route = 'value'` (or `TO`, or
/// `RESET switchyard.route`, which gives `"auto"`), the value as written.
pub fn route_setting(sql: &[u8]) -> Option<&[u8]> {
    // Most queries are not SET: leave them after one comparison.
    let start = sql.trim_ascii_start();
    let verb = start.get(..3)?;
    if !verb.eq_ignore_ascii_case(b"set") && !verb.eq_ignore_ascii_case(b"res") {
        return None;
    }
    let mut statements = super::lexer::statements(sql);
    let statement = statements.next()?;
    if statements.next().is_some() {
        return None;
    }
    let mut tokens = statement.tokens();
    let verb = tokens.next()?;
    let reset = verb.is_keyword("reset");
    if !reset && !verb.is_keyword("set") {
        return None;
    }
    let mut name = tokens.next()?;
    if name.is_keyword("session") || name.is_keyword("local") {
        name = tokens.next()?;
    }
    let (schema, dot, setting) = (name, tokens.next()?, tokens.next()?);
    let named = schema.is_keyword("switchyard")
        && dot.kind == TokenKind::Dot
        && setting.is_keyword("route");
    if !named {
        return None;
    }
    if reset {
        return tokens.next().is_none().then_some(b"auto".as_slice());
    }
    let assign = tokens.next()?;
    if !(assign.is_keyword("to") || assign.text == b"=") {
        return None;
    }
    let value = tokens.next()?;
    if tokens.next().is_some() {
        return None;
    }
    match value.kind {
        TokenKind::String | TokenKind::Word | TokenKind::QuotedIdent => Some(value.content()),
        _ => None,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

fn strip_prefix_ignore_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &bytes[prefix.len()..])
}

#[cfg(test)]
mod tests;
