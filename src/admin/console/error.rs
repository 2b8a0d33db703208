//! Why a console statement failed, and the SQLSTATE the client sees.

use thiserror::Error;

use crate::admin::reload::ReloadError;
use crate::admin::state::PauseInterrupted;

/// A console statement that could not be carried out.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// Not a console command.
    #[error("unknown admin console command {0:?}; try SHOW HELP")]
    UnknownCommand(String),
    /// The extended query protocol was used.
    #[error("the admin console accepts simple queries only")]
    ExtendedProtocol,
    /// RELOAD refused the new configuration.
    #[error("{0}")]
    Reload(#[from] ReloadError),
    /// PAUSE gave up waiting for the active transactions (RESUME came
    /// first); new transactions are not held.
    #[error("PAUSE interrupted: {0}")]
    Pause(#[from] PauseInterrupted),
}

impl ConsoleError {
    /// The SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::UnknownCommand(_) => "42601",
            Self::ExtendedProtocol => "0A000",
            Self::Reload(_) => "F0000",
            Self::Pause(_) => "57014",
        }
    }
}
