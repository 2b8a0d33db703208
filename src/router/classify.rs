//! The per-statement scanner behind [`super::effects`]: one pass over a
//! statement's tokens, with the statement-initial rules reading the first
//! words and the rules that apply anywhere watching every token.

use super::effects::{PinReason, SessionEffects, UnpinKind};
use super::keyword::Kw;
use super::lexer::{Lexer, Token, TokenKind};

/// How many `DO` blocks inside `DO` blocks are scanned.
const MAX_DO_NESTING: u8 = 4;

/// Where the statements being classified come from.
#[derive(Clone, Copy, Debug)]
pub(super) struct Context {
    /// Inside a `DO` body: PL/pgSQL block words also start statements, and
    /// unpins are not reported.
    in_do_body: bool,
    /// How many `DO` bodies enclose these statements.
    nesting: u8,
}

impl Context {
    pub(super) const TOP_LEVEL: Self = Self {
        in_do_body: false,
        nesting: 0,
    };
}

/// What the first words said the statement is, for the rules that need it
/// while reading the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Create,
    CreateTemp,
    Declare,
    Do,
}

/// Classifies the next non-empty statement in `lexer`, consuming it and its
/// `;`. `None` at end of input. One pass over the tokens.
pub(super) fn next_statement(lexer: &mut Lexer<'_>, cx: Context) -> Option<SessionEffects> {
    loop {
        let mut scan = Scan::new(lexer, cx);
        match scan.next() {
            Some((_, first)) => return Some(scan.classify(first)),
            None if scan.exhausted => return None,
            None => continue,
        }
    }
}

/// One statement's tokens, read once. Every token goes through
/// [`Scan::observe`] (the rules that apply anywhere) on its way to the
/// statement-initial rules in [`Scan::classify`].
struct Scan<'l, 'a> {
    lexer: &'l mut Lexer<'a>,
    cx: Context,
    /// The statement's end was reached.
    done: bool,
    /// The input's end was reached.
    exhausted: bool,
    kind: Kind,
    /// The last three tokens, most recent first.
    window: [Kw; 3],
    /// A `DECLARE` reached its `FOR`, after which `WITH HOLD` is query text.
    cursor_query: bool,
    /// A `CREATE TEMP` table said `ON COMMIT DROP`.
    on_commit_drop: bool,
    effects: SessionEffects,
}

impl<'l, 'a> Scan<'l, 'a> {
    fn new(lexer: &'l mut Lexer<'a>, cx: Context) -> Self {
        Self {
            lexer,
            cx,
            done: false,
            exhausted: false,
            kind: Kind::Plain,
            window: [Kw::Other; 3],
            cursor_query: false,
            on_commit_drop: false,
            effects: SessionEffects::NONE,
        }
    }

    /// The statement's next token, `None` at its end.
    #[inline]
    fn next(&mut self) -> Option<(Token<'a>, Kw)> {
        if self.done {
            return None;
        }
        let Some(token) = self.lexer.next() else {
            self.done = true;
            self.exhausted = true;
            return None;
        };
        let kw = Kw::of(&token);
        let block_word = self.cx.in_do_body && token.depth == 0 && kw.starts_plpgsql_statement();
        if token.is_statement_end() || block_word {
            self.done = true;
            return None;
        }
        self.observe(&token, kw);
        Some((token, kw))
    }

    fn next_kw(&mut self) -> Kw {
        self.next().map_or(Kw::Other, |(_, kw)| kw)
    }

    /// Applies the statement-initial rules, given the first word, then reads
    /// the statement to its end.
    fn classify(mut self, first: Kw) -> SessionEffects {
        let head = match first {
            Kw::Explain => self.skip_explain_options(),
            other => other,
        };
        match head {
            Kw::Set => self.set(),
            Kw::Reset => self.effects.sets_session_state = true,
            Kw::Create => self.create(),
            Kw::Listen => self.pin(PinReason::Listen),
            Kw::Unlisten => self.unlisten(),
            Kw::Declare => self.kind = Kind::Declare,
            Kw::Prepare => self.prepare(),
            Kw::Load => self.pin(PinReason::Other("LOAD")),
            Kw::Discard => self.discard(),
            Kw::Close => self.close(),
            Kw::Deallocate => self.deallocate(),
            Kw::Do => self.kind = Kind::Do,
            _ => {}
        }
        while self.next().is_some() {}
        if self.kind == Kind::CreateTemp && !self.on_commit_drop {
            self.pin(PinReason::TempTable);
        }
        self.effects
    }

    /// `EXPLAIN [ANALYZE] [VERBOSE] [(options)]`: returns the first word of
    /// the explained statement, which `EXPLAIN ANALYZE` runs.
    fn skip_explain_options(&mut self) -> Kw {
        while let Some((token, kw)) = self.next() {
            match kw {
                Kw::Analyze | Kw::Verbose => {}
                _ if token.kind == TokenKind::OpenParen => {
                    let depth = token.depth;
                    while let Some((t, _)) = self.next() {
                        if t.kind == TokenKind::CloseParen && t.depth == depth {
                            break;
                        }
                    }
                }
                _ => return kw,
            }
        }
        Kw::Other
    }

    /// `SET ...`: session state unless `LOCAL`, `TRANSACTION` or
    /// `CONSTRAINTS`, which end with the transaction.
    fn set(&mut self) {
        if !matches!(
            self.next_kw(),
            Kw::Local | Kw::Transaction | Kw::Constraints
        ) {
            self.effects.sets_session_state = true;
        }
    }

    /// `CREATE [OR REPLACE] [GLOBAL|LOCAL] [TEMP|TEMPORARY] [UNLOGGED]
    /// [RECURSIVE] ...`; the pin itself waits for the end, for `ON COMMIT DROP`.
    fn create(&mut self) {
        self.kind = Kind::Create;
        loop {
            match self.next_kw() {
                Kw::Or | Kw::Replace | Kw::Global | Kw::Local | Kw::Unlogged | Kw::Recursive => {}
                Kw::Temp => {
                    self.kind = Kind::CreateTemp;
                    return;
                }
                _ => return,
            }
        }
    }

    fn unlisten(&mut self) {
        if self
            .next()
            .is_some_and(|(t, _)| t.kind == TokenKind::Operator && t.text == b"*")
        {
            self.unpin(UnpinKind::UnlistenAll);
        }
    }

    /// `PREPARE name ...` pins; `PREPARE TRANSACTION 'gid'` (two-phase
    /// commit) does not.
    fn prepare(&mut self) {
        let Some((_, second)) = self.next() else {
            return;
        };
        let two_phase = second == Kw::Transaction
            && self.next().is_some_and(|(t, _)| {
                matches!(t.kind, TokenKind::String | TokenKind::DollarString)
            });
        if !two_phase {
            self.pin(PinReason::SqlPrepare);
        }
    }

    fn discard(&mut self) {
        match self.next_kw() {
            Kw::All => {
                self.effects.sets_session_state = true;
                self.unpin(UnpinKind::DiscardAll);
            }
            Kw::Temp => self.unpin(UnpinKind::DiscardTemp),
            _ => {}
        }
    }

    fn close(&mut self) {
        if self.next_kw() == Kw::All {
            self.unpin(UnpinKind::CloseAll);
        }
    }

    fn deallocate(&mut self) {
        let mut kw = self.next_kw();
        if kw == Kw::Prepare {
            kw = self.next_kw();
        }
        if kw == Kw::All {
            self.unpin(UnpinKind::DeallocateAll);
        }
    }

    /// The rules that apply to every token of a statement.
    #[inline(always)]
    fn observe(&mut self, token: &Token<'a>, kw: Kw) {
        let [p0, p1, p2] = self.window;
        match token.kind {
            TokenKind::OpenParen => self.function_call(p0),
            TokenKind::Dot if p0 == Kw::PgTemp && (self.kind == Kind::Create || into(p1, p2)) => {
                self.pin(PinReason::TempTable);
            }
            TokenKind::String | TokenKind::DollarString
                if self.kind == Kind::Do && token.depth == 0 =>
            {
                self.do_body(token.content());
            }
            _ => {}
        }
        let top = token.depth == 0;
        match kw {
            Kw::Temp if into(p0, p1) || (matches!(p0, Kw::Local | Kw::Global) && into(p1, p2)) => {
                self.pin(PinReason::TempTable);
            }
            Kw::For if self.kind == Kind::Declare && top => self.cursor_query = true,
            Kw::Hold if self.kind == Kind::Declare && p0 == Kw::With && !self.cursor_query => {
                self.pin(PinReason::HoldCursor);
            }
            Kw::Drop
                if self.kind == Kind::CreateTemp && top && p0 == Kw::Commit && p1 == Kw::On =>
            {
                self.on_commit_drop = true;
            }
            _ => {}
        }
        self.window = [kw, p0, p1];
    }

    /// `name(`, where `name` is the word before the parenthesis.
    fn function_call(&mut self, name: Kw) {
        match name {
            Kw::AdvisoryLockFn => self.pin(PinReason::AdvisoryLock),
            Kw::AdvisoryUnlockAllFn => self.unpin(UnpinKind::AdvisoryUnlockAll),
            Kw::SetConfigFn => self.effects.sets_session_state = true,
            _ => {}
        }
    }

    /// Scans a `DO` block's code as the statements it will run.
    fn do_body(&mut self, code: &[u8]) {
        if self.cx.nesting >= MAX_DO_NESTING {
            return;
        }
        let cx = Context {
            in_do_body: true,
            nesting: self.cx.nesting + 1,
        };
        let mut lexer = Lexer::with_options(code, self.lexer.options());
        while let Some(inner) = next_statement(&mut lexer, cx) {
            self.effects = self.effects.merge(inner);
        }
    }

    fn pin(&mut self, reason: PinReason) {
        self.effects.add_pin(reason);
    }

    fn unpin(&mut self, kind: UnpinKind) {
        if !self.cx.in_do_body {
            self.effects.add_unpin(kind);
        }
    }
}

/// True when `word` is the `INTO` of `SELECT ... INTO new_table` (`before`
/// the word ahead of it), not of `INSERT INTO` or `MERGE INTO`, whose target
/// already exists: `SELECT * INTO TEMP t` creates a table, `INSERT INTO temp`
/// fills one called "temp".
fn into(word: Kw, before: Kw) -> bool {
    word == Kw::Into && !matches!(before, Kw::Insert | Kw::Merge)
}
