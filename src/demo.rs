//! `switchyard demo`: a local replicated cluster with the proxy in front.

use std::process::ExitCode;

/// Runs the demo until Ctrl-C.
pub fn run() -> ExitCode {
    ExitCode::FAILURE
}
