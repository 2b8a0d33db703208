//! A hand-written SQL lexer for classifying statements on the hot path.
//!
//! It follows PostgreSQL's own scanner (`scan.l`) closely enough to know where
//! every literal, quoted identifier, comment and statement begins and ends,
//! and no further: it builds no syntax tree, never allocates and never fails.
//!
//! Input is bytes, because query text arrives in the client encoding and need
//! not be UTF-8. Every byte at or above 0x80 is an identifier character, as in
//! PostgreSQL, which is right for UTF-8 and every server encoding. The
//! client-only encodings (SJIS, BIG5, GBK, UHC, GB18030) can carry `\` as the
//! second byte of a character; inside an `E'...'` literal that byte would be
//! read as an escape, so for those encodings results are best effort.
//!
//! Malformed input still lexes: an unterminated quote, dollar quote or
//! comment runs to the end of the input (and the token says so), and a
//! stray `)` leaves the depth at zero. PostgreSQL rejects such a query before
//! running any of it, so a classifier only has to return, not to be right.

/// The one server setting that changes how SQL is lexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LexOptions {
    /// PostgreSQL's `standard_conforming_strings` (on by default since 9.1).
    /// When off, a backslash escapes the next byte in ordinary `'...'`
    /// literals too, not only in `E'...'` ones.
    pub standard_conforming_strings: bool,
}

impl Default for LexOptions {
    /// The server default: `standard_conforming_strings = on`.
    fn default() -> Self {
        Self {
            standard_conforming_strings: true,
        }
    }
}

/// What a [`Token`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An unquoted identifier or keyword (`select`, `pg_catalog`, `foo$1`).
    Word,
    /// A double-quoted identifier: `"..."` or `U&"..."`.
    QuotedIdent,
    /// A string literal: `'...'`, `E'...'`, `U&'...'`, `B'...'`, `X'...'`
    /// or `N'...'`.
    String,
    /// A dollar-quoted string: `$$...$$` or `$tag$...$tag$`.
    DollarString,
    /// A numeric literal (`42`, `1.5e-3`, `.5`, `0x1F`).
    Number,
    /// A positional parameter (`$1`).
    Param,
    /// A run of operator characters (`=`, `<>`, `*`, `||`).
    Operator,
    /// `(`
    OpenParen,
    /// `)`
    CloseParen,
    /// `;`
    Semicolon,
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// `[`, `]`, `:` or `..`.
    Punct,
    /// Any other single byte, such as a stray `\` or a control character.
    Other,
}

/// One token: its kind, its bytes as written, and where it sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// What the token is.
    pub kind: TokenKind,
    /// The token's bytes as written, quotes and prefixes included; never empty.
    pub text: &'a [u8],
    /// Byte offset of the token in the lexer's input.
    pub offset: usize,
    /// Parenthesis depth the token sits at. Both parentheses of a pair report
    /// the depth outside them, so a top-level `(` and its `)` are at 0.
    pub depth: u32,
    /// False for a string, quoted identifier or dollar string whose closing
    /// delimiter is missing (it runs to the end of input); true otherwise.
    pub terminated: bool,
}

impl<'a> Token<'a> {
    /// True for an unquoted word equal to `keyword`, ignoring ASCII case
    /// (`keyword` is compared as given, so pass it in either case).
    pub fn is_keyword(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword.as_bytes())
    }

    /// True for a `;` outside all parentheses: the end of a statement.
    pub fn is_statement_end(&self) -> bool {
        self.kind == TokenKind::Semicolon && self.depth == 0
    }

    /// Byte offset just past the token.
    pub fn end(&self) -> usize {
        self.offset + self.text.len()
    }

    /// The inside of a quoted token, delimiters and prefix (`E`, `U&`, the
    /// dollar tag) removed and escapes left as written. For an unterminated
    /// token, everything after the opening delimiter. Other tokens return
    /// their whole text.
    pub fn content(&self) -> &'a [u8] {
        let text = self.text;
        let open = match self.kind {
            TokenKind::String => position(text, b'\'').map(|i| i + 1),
            TokenKind::QuotedIdent => position(text, b'"').map(|i| i + 1),
            TokenKind::DollarString => text
                .get(1..)
                .and_then(|rest| position(rest, b'$'))
                .map(|i| i + 2),
            _ => return text,
        };
        let open = open.unwrap_or(text.len());
        let close = match (self.terminated, self.kind) {
            (false, _) => 0,
            (true, TokenKind::DollarString) => open,
            (true, _) => 1,
        };
        let end = text.len().saturating_sub(close).max(open);
        text.get(open..end).unwrap_or_default()
    }
}

/// Iterates over the tokens of a query, skipping whitespace and comments.
///
/// Cloning a lexer is cheap (a slice and three integers), which is how
/// callers look ahead.
#[derive(Clone, Debug)]
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    depth: u32,
    options: LexOptions,
}

impl<'a> Lexer<'a> {
    /// A lexer over `sql` (a `&str`, `&[u8]`, `&Bytes`, ...) with the server
    /// default [`LexOptions`].
    pub fn new<S: AsRef<[u8]> + ?Sized>(sql: &'a S) -> Self {
        Self::with_options(sql, LexOptions::default())
    }

    /// A lexer over `sql` with explicit options.
    pub fn with_options<S: AsRef<[u8]> + ?Sized>(sql: &'a S, options: LexOptions) -> Self {
        Self {
            src: sql.as_ref(),
            pos: 0,
            depth: 0,
            options,
        }
    }

    /// The options this lexer was made with.
    pub fn options(&self) -> LexOptions {
        self.options
    }

    /// The whole input, as given.
    pub fn source(&self) -> &'a [u8] {
        self.src
    }

    /// Byte offset of the next unread byte.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Current parenthesis depth (unclosed `(` seen so far).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Turns the rest of the input into an iterator over its statements.
    pub fn into_statements(self) -> Statements<'a> {
        Statements { lexer: self }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.src.get(at).copied()
    }

    /// Skips whitespace, `-- line` comments and nested `/* block */` comments.
    #[inline]
    fn skip_trivia(&mut self) {
        // Tokens are mostly one space apart: step over that space without
        // a branch, which the predictor guesses wrong about as often as
        // right (profiled: the whitespace loop's exit was a third of the
        // classifier's time on a 300-byte statement).
        self.pos += usize::from(self.byte(self.pos) == Some(b' '));
        loop {
            self.pos = self.run(self.pos, SPACE);
            let Some(b) = self.byte(self.pos) else {
                return;
            };
            let next = self.byte(self.pos + 1);
            if b == b'-' && next == Some(b'-') {
                self.pos = self.line_comment_end(self.pos + 2);
            } else if b == b'/' && next == Some(b'*') {
                self.pos = self.block_comment_end(self.pos + 2);
            } else {
                return;
            }
        }
    }

    /// Where a line comment whose body starts at `from` ends: at its newline
    /// (left for the whitespace skip) or the end of input.
    #[cold]
    fn line_comment_end(&self, from: usize) -> usize {
        let rest = self.src.get(from..).unwrap_or_default();
        from + rest
            .iter()
            .position(|&c| c == b'\n' || c == b'\r')
            .unwrap_or(rest.len())
    }

    /// Where a block comment whose body starts at `from` ends (just past its
    /// closing `*/`, or the end of input). Block comments nest.
    #[cold]
    fn block_comment_end(&self, from: usize) -> usize {
        let mut nesting = 1usize;
        let mut i = from;
        while let Some(b) = self.byte(i) {
            let next = self.byte(i + 1);
            if b == b'/' && next == Some(b'*') {
                nesting += 1;
                i += 2;
            } else if b == b'*' && next == Some(b'/') {
                nesting -= 1;
                i += 2;
                if nesting == 0 {
                    return i;
                }
            } else {
                i += 1;
            }
        }
        self.src.len()
    }

    /// Lexes the token starting with `first` at `self.pos`, leaving `self.pos`
    /// just past it. Returns its kind and whether it is terminated.
    fn scan(&mut self, first: u8) -> (TokenKind, bool) {
        let start = self.pos;
        let next = self.byte(start + 1);
        if is(first, IDENT_START) {
            // Most words are plain; only a letter right before `'` or `&`
            // can be a literal's prefix.
            return match next {
                Some(b'\'' | b'&') => self.prefixed(start, first),
                _ => self.word(start),
            };
        }
        match first {
            b'\'' => {
                let backslashes = !self.options.standard_conforming_strings;
                self.quoted(start, b'\'', backslashes, TokenKind::String)
            }
            b'"' => self.quoted(start, b'"', false, TokenKind::QuotedIdent),
            b'$' => self.dollar(start),
            b'0'..=b'9' => self.number(start),
            b'.' if next == Some(b'.') => {
                self.pos += 2;
                (TokenKind::Punct, true)
            }
            b'.' if next.is_some_and(|b| b.is_ascii_digit()) => self.number(start),
            b'(' => self.single(TokenKind::OpenParen),
            b')' => self.single(TokenKind::CloseParen),
            b';' => self.single(TokenKind::Semicolon),
            b',' => self.single(TokenKind::Comma),
            b'.' => self.single(TokenKind::Dot),
            b'[' | b']' | b':' => self.single(TokenKind::Punct),
            b if is(b, OPERATOR) => self.operator(start),
            _ => self.single(TokenKind::Other),
        }
    }

    /// A word starting with `first` and followed by `'` or `&`: a literal
    /// with a prefix (`E'`, `N'`, `B'`, `X'`, `U&'`, `U&"`) or a plain word.
    #[inline(never)]
    fn prefixed(&mut self, start: usize, first: u8) -> (TokenKind, bool) {
        let backslashes = !self.options.standard_conforming_strings;
        let next = self.byte(start + 1);
        match (first.to_ascii_lowercase(), next, self.byte(start + 2)) {
            (b'e', Some(b'\''), _) => self.quoted(start + 1, b'\'', true, TokenKind::String),
            (b'n', Some(b'\''), _) => self.quoted(start + 1, b'\'', backslashes, TokenKind::String),
            (b'b' | b'x', Some(b'\''), _) => {
                self.quoted(start + 1, b'\'', false, TokenKind::String)
            }
            (b'u', Some(b'&'), Some(b'\'')) => {
                self.quoted(start + 2, b'\'', false, TokenKind::String)
            }
            (b'u', Some(b'&'), Some(b'"')) => {
                self.quoted(start + 2, b'"', false, TokenKind::QuotedIdent)
            }
            _ => self.word(start),
        }
    }

    fn single(&mut self, kind: TokenKind) -> (TokenKind, bool) {
        self.pos += 1;
        (kind, true)
    }

    /// A quoted token whose opening `quote` is at `open`. A doubled quote is
    /// part of the token; with `backslashes`, `\` escapes the next byte.
    #[inline(never)]
    fn quoted(
        &mut self,
        open: usize,
        quote: u8,
        backslashes: bool,
        kind: TokenKind,
    ) -> (TokenKind, bool) {
        let mut i = open + 1;
        while let Some(b) = self.byte(i) {
            if b == quote {
                if self.byte(i + 1) == Some(quote) {
                    i += 2;
                    continue;
                }
                self.pos = i + 1;
                return (kind, true);
            }
            i += if backslashes && b == b'\\' { 2 } else { 1 };
        }
        self.pos = self.src.len();
        (kind, false)
    }

    fn word(&mut self, start: usize) -> (TokenKind, bool) {
        self.pos = self.run(start + 1, IDENT_CONT);
        (TokenKind::Word, true)
    }

    /// `$1`, `$tag$...$tag$`, or a lone `$`.
    #[inline(never)]
    fn dollar(&mut self, start: usize) -> (TokenKind, bool) {
        match self.byte(start + 1) {
            Some(b) if b.is_ascii_digit() => {
                self.pos = self.run(start + 1, DIGIT);
                return (TokenKind::Param, true);
            }
            Some(b) if b == b'$' || is(b, IDENT_START) => {}
            _ => return self.single(TokenKind::Other),
        }
        let tag_end = self.run(start + 1, DOLLAR_TAG);
        if self.byte(tag_end) != Some(b'$') {
            return self.single(TokenKind::Other);
        }
        let body = tag_end + 1;
        let delimiter = self.src.get(start..body).unwrap_or_default();
        let rest = self.src.get(body..).unwrap_or_default();
        match find_delimiter(rest, delimiter) {
            Some(at) => {
                self.pos = body + at + delimiter.len();
                (TokenKind::DollarString, true)
            }
            None => {
                self.pos = self.src.len();
                (TokenKind::DollarString, false)
            }
        }
    }

    /// Digits with an optional fraction and exponent, or a `0x`/`0o`/`0b`
    /// literal. Letters after a decimal number start a new token.
    #[inline(never)]
    fn number(&mut self, start: usize) -> (TokenKind, bool) {
        let radix = matches!(
            self.byte(start + 1),
            Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        );
        if self.byte(start) == Some(b'0') && radix {
            self.pos = self.run(start + 2, DIGIT | IDENT_START);
            return (TokenKind::Number, true);
        }
        let mut i = self.run(start, DIGIT);
        // `1..10` (a PL/pgSQL range) is an integer followed by `..`.
        if self.byte(i) == Some(b'.') && self.byte(i + 1) != Some(b'.') {
            i = self.run(i + 1, DIGIT);
        }
        if matches!(self.byte(i), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.byte(i + 1), Some(b'+' | b'-')));
            if self.byte(i + 1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                i = self.run(i + 1 + sign, DIGIT);
            }
        }
        self.pos = i;
        (TokenKind::Number, true)
    }

    /// A run of operator characters, cut before a `--` or `/*` comment.
    #[inline(never)]
    fn operator(&mut self, start: usize) -> (TokenKind, bool) {
        let mut i = start + 1;
        while let Some(b) = self.byte(i) {
            let next = self.byte(i + 1);
            let comment = (b == b'-' && next == Some(b'-')) || (b == b'/' && next == Some(b'*'));
            if !is(b, OPERATOR) || comment {
                break;
            }
            i += 1;
        }
        self.pos = i;
        (TokenKind::Operator, true)
    }

    /// The offset of the first byte at or after `from` in none of `classes`.
    #[inline]
    fn run(&self, from: usize, classes: u8) -> usize {
        let mut i = from;
        while let Some(&b) = self.src.get(i) {
            if !is(b, classes) {
                break;
            }
            i += 1;
        }
        i
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_trivia();
        let offset = self.pos;
        let first = self.byte(offset)?;
        let (kind, terminated) = self.scan(first);
        let depth = match kind {
            TokenKind::OpenParen => {
                let outside = self.depth;
                self.depth = self.depth.saturating_add(1);
                outside
            }
            TokenKind::CloseParen => {
                self.depth = self.depth.saturating_sub(1);
                self.depth
            }
            _ => self.depth,
        };
        Some(Token {
            kind,
            text: self.src.get(offset..self.pos).unwrap_or_default(),
            offset,
            depth,
            terminated,
        })
    }
}

/// One statement of a query: the bytes from its first token to its last,
/// without the `;` that ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement's text; never empty, starts and ends with a token.
    pub text: &'a [u8],
    /// Byte offset of `text` in the query.
    pub offset: usize,
    options: LexOptions,
}

impl<'a> Statement<'a> {
    /// The statement's tokens.
    pub fn tokens(&self) -> Lexer<'a> {
        Lexer::with_options(self.text, self.options)
    }
}

/// Iterates over the statements of a query: split at `;` outside
/// parentheses, empty statements (only whitespace, comments or `;`) skipped.
#[derive(Clone, Debug)]
pub struct Statements<'a> {
    lexer: Lexer<'a>,
}

impl<'a> Iterator for Statements<'a> {
    type Item = Statement<'a>;

    fn next(&mut self) -> Option<Statement<'a>> {
        let first = self.lexer.find(|t| !t.is_statement_end())?;
        let mut end = first.end();
        for token in self.lexer.by_ref() {
            if token.is_statement_end() {
                break;
            }
            end = token.end();
        }
        Some(Statement {
            text: self.lexer.src.get(first.offset..end).unwrap_or_default(),
            offset: first.offset,
            options: self.lexer.options,
        })
    }
}

/// The statements of `sql`, lexed with the server default [`LexOptions`].
pub fn statements<S: AsRef<[u8]> + ?Sized>(sql: &S) -> Statements<'_> {
    Lexer::new(sql).into_statements()
}

/// Where `delimiter` (`$tag$`, a tag never holding `$`) first occurs in
/// `haystack`. Linear time: after a partial match of length k, the bytes
/// matched after the leading `$` were tag bytes, so none of them is a `$`
/// that could start the real match, and the search resumes k bytes on.
fn find_delimiter(haystack: &[u8], delimiter: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(rest) = haystack.get(i..) {
        i += position(rest, b'$')?;
        let candidate = haystack.get(i..).unwrap_or_default();
        let matched = candidate
            .iter()
            .zip(delimiter)
            .take_while(|(a, b)| a == b)
            .count();
        if matched == delimiter.len() {
            return Some(i);
        }
        i += matched.max(1);
    }
    None
}

fn position(bytes: &[u8], needle: u8) -> Option<usize> {
    bytes.iter().position(|&b| b == needle)
}

/// PostgreSQL's `space`: `[ \t\n\r\f\v]`.
const SPACE: u8 = 1;
/// Starts an identifier: a letter, `_`, or any byte from 0x80.
const IDENT_START: u8 = 2;
/// Continues an identifier: the above, digits and `$`.
const IDENT_CONT: u8 = 4;
/// Continues a dollar-quote tag: an identifier character other than `$`.
const DOLLAR_TAG: u8 = 8;
/// A digit or `_` (PostgreSQL 16 allows `1_000`).
const DIGIT: u8 = 16;
/// PostgreSQL's operator characters: ``~!@#^&|`?+-*/%<>=``.
const OPERATOR: u8 = 32;

/// The classes of every byte, looked up once per byte on the hot path.
static CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < table.len() {
        let b = i as u8;
        let start = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
        let digit = b.is_ascii_digit();
        let mut class = 0;
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            class |= SPACE;
        }
        if start {
            class |= IDENT_START | IDENT_CONT | DOLLAR_TAG;
        }
        if digit {
            class |= IDENT_CONT | DOLLAR_TAG | DIGIT;
        }
        if b == b'$' {
            class |= IDENT_CONT;
        }
        if b == b'_' {
            class |= DIGIT;
        }
        if matches!(
            b,
            b'~' | b'!'
                | b'@'
                | b'#'
                | b'^'
                | b'&'
                | b'|'
                | b'`'
                | b'?'
                | b'+'
                | b'-'
                | b'*'
                | b'/'
                | b'%'
                | b'<'
                | b'>'
                | b'='
        ) {
            class |= OPERATOR;
        }
        table[i] = class;
        i += 1;
    }
    table
}

/// True when `b` is in any of `classes`.
fn is(b: u8, classes: u8) -> bool {
    CLASSES[usize::from(b)] & classes != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds(sql: &str) -> Vec<(TokenKind, &str)> {
        Lexer::new(sql)
            .map(|t| (t.kind, std::str::from_utf8(t.text).unwrap()))
            .collect()
    }

    fn statement_texts(sql: &str) -> Vec<&str> {
        statements(sql)
            .map(|s| std::str::from_utf8(s.text).unwrap())
            .collect()
    }

    use TokenKind::*;

    #[test]
    fn words_numbers_operators_and_punctuation_are_separate_tokens() {
        assert_eq!(
            kinds("SELECT a.b, 1.5e-3 FROM t WHERE x<>$1::int[1]"),
            vec![
                (Word, "SELECT"),
                (Word, "a"),
                (Dot, "."),
                (Word, "b"),
                (Comma, ","),
                (Number, "1.5e-3"),
                (Word, "FROM"),
                (Word, "t"),
                (Word, "WHERE"),
                (Word, "x"),
                (Operator, "<>"),
                (Param, "$1"),
                (Punct, ":"),
                (Punct, ":"),
                (Word, "int"),
                (Punct, "["),
                (Number, "1"),
                (Punct, "]"),
            ]
        );
    }

    #[test]
    fn comments_are_skipped_and_nest() {
        assert_eq!(
            kinds("-- SET x\nSELECT /* a /* b */ still comment */ 1 --tail"),
            vec![(Word, "SELECT"), (Number, "1")]
        );
        assert_eq!(
            kinds("SELECT 1 /* /* */"),
            vec![(Word, "SELECT"), (Number, "1")]
        );
        assert_eq!(kinds("a\r-- x\rb"), vec![(Word, "a"), (Word, "b")]);
    }

    #[test]
    fn operators_stop_before_comments() {
        assert_eq!(
            kinds("1+--c\n2 */* c */3"),
            vec![
                (Number, "1"),
                (Operator, "+"),
                (Number, "2"),
                (Operator, "*"),
                (Number, "3")
            ]
        );
    }

    #[test]
    fn string_literals_with_prefixes_and_escapes() {
        assert_eq!(
            kinds(r"'it''s' E'\'' e'a\\' U&'d\0061' B'01' X'ff' N'n' date'x'"),
            vec![
                (String, "'it''s'"),
                (String, r"E'\''"),
                (String, r"e'a\\'"),
                (String, r"U&'d\0061'"),
                (String, "B'01'"),
                (String, "X'ff'"),
                (String, "N'n'"),
                (Word, "date"),
                (String, "'x'"),
            ]
        );
    }

    #[test]
    fn backslashes_escape_only_when_strings_are_not_standard() {
        let sql = r"'a\'; b'";
        assert_eq!(kinds(sql)[0], (String, r"'a\'"));
        let legacy = LexOptions {
            standard_conforming_strings: false,
        };
        let tokens: Vec<_> = Lexer::with_options(sql, legacy).collect();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].text, sql.as_bytes());
    }

    #[test]
    fn quoted_identifiers_double_their_quotes() {
        assert_eq!(
            kinds(r#""a""b" U&"x" "#),
            vec![(QuotedIdent, r#""a""b""#), (QuotedIdent, r#"U&"x""#)]
        );
    }

    #[test]
    fn dollar_quotes_match_their_own_tag() {
        assert_eq!(
            kinds("$$a$b$$ $fn$ $$ inner $$ $fn$ $1 foo$$bar$$"),
            vec![
                (DollarString, "$$a$b$$"),
                (DollarString, "$fn$ $$ inner $$ $fn$"),
                (Param, "$1"),
                (Word, "foo$$bar$$"),
            ]
        );
        assert_eq!(kinds("$a$ $ab$ $a$"), vec![(DollarString, "$a$ $ab$ $a$")]);
        assert_eq!(kinds("$1$"), vec![(Param, "$1"), (Other, "$")]);
    }

    #[test]
    fn unterminated_tokens_run_to_the_end() {
        for sql in ["'abc", "E'a\\'", "\"abc", "$q$ abc $q", "U&'x"] {
            let tokens: Vec<_> = Lexer::new(sql).collect();
            assert_eq!(tokens.len(), 1, "{sql}");
            assert!(!tokens[0].terminated, "{sql}");
            assert_eq!(tokens[0].end(), sql.len(), "{sql}");
        }
        assert_eq!(kinds("SELECT /* open"), vec![(Word, "SELECT")]);
    }

    #[test]
    fn content_strips_delimiters() {
        fn content(sql: &str) -> &[u8] {
            Lexer::new(sql).next().unwrap().content()
        }
        assert_eq!(content("E'a''b'"), b"a''b");
        assert_eq!(content("$x$ body $x$"), b" body ");
        assert_eq!(content("$$$$"), b"");
        assert_eq!(content("U&\"id\""), b"id");
        assert_eq!(content("'open"), b"open");
        assert_eq!(content("$t$open"), b"open");
        assert_eq!(content("word"), b"word");
    }

    #[test]
    fn numbers_do_not_swallow_ranges_or_words() {
        assert_eq!(
            kinds("1..10 0x1F .5 3into"),
            vec![
                (Number, "1"),
                (Punct, ".."),
                (Number, "10"),
                (Number, "0x1F"),
                (Number, ".5"),
                (Number, "3"),
                (Word, "into"),
            ]
        );
    }

    #[test]
    fn parentheses_report_the_depth_outside_them() {
        let depths: Vec<_> = Lexer::new("f((a)) ) (")
            .map(|t| (t.kind, t.depth))
            .collect();
        assert_eq!(
            depths,
            vec![
                (Word, 0),
                (OpenParen, 0),
                (OpenParen, 1),
                (Word, 2),
                (CloseParen, 1),
                (CloseParen, 0),
                (CloseParen, 0),
                (OpenParen, 0),
            ]
        );
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        assert_eq!(
            statement_texts(" ;; SET a = 1 ; SELECT ';', (1;2) /* ; */ ;-- x;\n ; "),
            vec!["SET a = 1", "SELECT ';', (1;2)"]
        );
        assert_eq!(
            statement_texts("SELECT $$;$$; x"),
            vec!["SELECT $$;$$", "x"]
        );
        assert!(statement_texts(" -- only a comment").is_empty());
    }

    #[test]
    fn statement_tokens_relex_the_statement() {
        let second = statements("SELECT 1; LISTEN ch").nth(1).unwrap();
        assert_eq!(second.offset, 10);
        let words: Vec<_> = second.tokens().map(|t| t.text).collect();
        assert_eq!(words, vec![&b"LISTEN"[..], b"ch"]);
    }

    #[test]
    fn non_utf8_bytes_are_identifier_characters() {
        let sql: &[u8] = b"SELECT \xff\xfe, '\xc3' FROM t";
        let tokens: Vec<_> = Lexer::new(sql).map(|t| (t.kind, t.text)).collect();
        assert_eq!(tokens[1], (Word, &b"\xff\xfe"[..]));
        assert_eq!(tokens[3], (String, &b"'\xc3'"[..]));
    }

    #[test]
    fn long_partial_dollar_tags_are_searched_in_linear_time() {
        let tag = format!("${}$", "a".repeat(5_000));
        let body = format!("${}b", "a".repeat(5_000)).repeat(200);
        let sql = format!("{tag}{body}{tag}");
        let tokens: Vec<_> = Lexer::new(&sql).collect();
        assert_eq!(tokens.len(), 1);
        assert!(tokens[0].terminated);
    }

    /// Checks that tokens tile the input in order, never empty, never out of
    /// bounds, and that statements are well-formed.
    fn check_invariants(src: &[u8]) {
        let mut last_end = 0;
        for token in Lexer::new(src) {
            assert!(!token.text.is_empty());
            assert!(token.offset >= last_end);
            assert_eq!(&src[token.offset..token.end()], token.text);
            last_end = token.end();
        }
        for statement in statements(src) {
            assert!(!statement.text.is_empty());
            let end = statement.offset + statement.text.len();
            assert_eq!(&src[statement.offset..end], statement.text);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_strings_lex_without_panicking(sql in any::<std::string::String>()) {
            check_invariants(sql.as_bytes());
        }

        #[test]
        fn arbitrary_bytes_lex_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            check_invariants(&bytes);
        }

        #[test]
        fn sql_like_noise_lexes_without_panicking(sql in r#"[-$'"/*;()\\eEuU&xX_a-z0-9 \n.]{0,200}"#) {
            check_invariants(sql.as_bytes());
        }
    }
}
