//! switchyard: a replication-aware PostgreSQL proxy.
//!
//! The modules follow the data path (DESIGN.md): [`listener`] accepts,
//! [`session`] authenticates and relays, [`backend`] opens server
//! connections, [`protocol`] frames the bytes in between.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod backend;
pub mod config;
pub mod demo;
pub mod listener;
pub mod metrics;
pub mod peers;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod router;
pub mod session;
pub mod testcluster;
pub mod tls;
pub mod topology;
