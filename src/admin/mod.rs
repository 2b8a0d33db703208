//! The operator's side: the HTTP server (`/metrics`, `/healthz`,
//! `/readyz`, `/topology`), the PgBouncer-style admin console, hot
//! reload, and what a drain does to new clients.

pub mod averages;
pub mod clients;
pub mod console;
pub mod drain;
pub mod hooks;
pub mod http;
pub mod reload;
pub mod state;
pub mod topology;
pub mod watch;
