//! Server connections: connecting (plain or TLS) and logging in to a
//! PostgreSQL node.

mod connect;
mod error;
pub mod query;
mod scram_keys;
mod secret;

pub use connect::{ServerConnection, connect};
pub use error::BackendError;
pub use scram_keys::KeysExchange;
pub use secret::{ScramKeys, Secret};
