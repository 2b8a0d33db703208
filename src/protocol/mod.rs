//! The PostgreSQL wire protocol as the proxy sees it: frames, the startup
//! packet, and the few messages the proxy writes itself.
//!
//! Parsing here works on untrusted bytes: every length is checked against the
//! bytes actually present and against the configured maximum before anything
//! is allocated, and incomplete input is `Ok(None)`, never an error.

pub mod buffers;
mod error;
pub mod frame;
pub mod io;
pub mod messages;
pub mod scanner;
pub mod startup;

pub use error::ProtocolError;
pub use frame::{Frame, read_frame};
pub use scanner::FrameScanner;
pub use startup::{StartupPacket, read_startup_packet};
