//! Server connections: connecting and logging in to a PostgreSQL node.

mod connect;
mod error;
pub mod query;

pub use connect::{ServerConnection, connect};
pub use error::BackendError;
