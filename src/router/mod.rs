//! The router: decides what a query needs before it is sent anywhere.
//!
//! Everything here works from a cheap lexer ([`lexer`]) rather than a SQL
//! parser, because it runs for every query on the hot path: no allocation,
//! no failure, a few hundred nanoseconds for a typical statement.
//!
//! - [`lexer`]: tokens and statements of a query, quotes, dollar quotes and
//!   comments understood.
//! - [`effects`]: what a query does to session state that outlives its
//!   transaction (session parameters, pins, releases), for transaction
//!   pooling.
//! - [`access`]: read or write, and routing hints.
//! - [`memo`]: the classes and session effects of recently seen texts, per
//!   worker thread.
//! - [`control`]: bare BEGIN / COMMIT / ROLLBACK, which the proxy may answer.
//! - [`target`]: which node serves a transaction.

pub mod access;
mod classify;
pub mod control;
pub mod effects;
mod flags;
mod keyword;
pub mod lexer;
pub mod memo;
pub mod target;

pub use effects::{
    Flag, FlagSet, PinReason, PinSet, SessionEffects, StatementEffects, UnpinKind, UnpinSet,
    session_effects, session_effects_bytes, session_effects_with, statement_effects,
};
pub use lexer::{LexOptions, Lexer, Statement, Statements, Token, TokenKind, statements};
