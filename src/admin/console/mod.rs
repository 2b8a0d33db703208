//! The admin console: a client that logs in to the virtual database
//! `switchyard` (or `pgbouncer`, for existing tooling) as one of
//! `admin.users` gets PgBouncer-style SHOW commands and controls over the
//! simple query protocol instead of a server session.

mod command;
mod error;
mod show_clients;
mod show_databases;
mod show_info;
mod show_pools;
mod show_servers;
mod show_stats;
mod show_topology;
pub mod wire;

use std::sync::Arc;

use crate::tls::ClientStream;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

pub use command::Command;
pub use error::ConsoleError;

use crate::protocol::frame::BodyReader;
use crate::protocol::io::read_message;
use crate::protocol::messages::{self, ClientError};
use crate::proxy::{Shared, Shutdown};
use wire::Table;

/// Database names that open the console.
pub const DATABASES: &[&str] = &["switchyard", "pgbouncer"];

/// True when `database` names the admin console.
pub fn is_console_database(database: &str) -> bool {
    DATABASES.contains(&database)
}

/// Serves an authenticated admin until it leaves or shutdown closes it.
/// `early` holds bytes the client sent after its login.
pub async fn serve(
    mut client: ClientStream,
    mut early: BytesMut,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let mut out = BytesMut::new();
    greet(&mut out);
    if client.write_all(&out).await.is_err() {
        return;
    }
    let limit = shared.settings.load().config.server.max_message_size;
    let mut failed_extended = false;
    loop {
        let read = tokio::select! {
            () = shutdown.draining.cancelled() => {
                let bye = ClientError::fatal("57P01", "terminating connection because switchyard is shutting down").to_bytes();
                shared.metrics.errors_in(&bye);
                let _ = client.write_all(&bye).await;
                return;
            }
            read = read_message(&mut client, &mut early, limit) => read,
        };
        let Ok(frame) = read else {
            return;
        };
        out.clear();
        match frame.tag {
            b'Q' => {
                let query = BodyReader::new(&frame.body, "Query")
                    .cstr()
                    .map(|q| String::from_utf8_lossy(q).into_owned())
                    .unwrap_or_default();
                run_query(&shared, &query, &mut out).await;
                messages::ready_for_query_idle(&mut out);
            }
            b'X' => return,
            b'S' => {
                failed_extended = false;
                messages::ready_for_query_idle(&mut out);
            }
            _ if !failed_extended => {
                failed_extended = true;
                let error = ConsoleError::ExtendedProtocol;
                wire::error(&mut out, error.sqlstate(), error.to_string());
            }
            _ => {}
        }
        shared.metrics.errors_in(&out);
        if client.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// ParameterStatus a client library expects, BackendKeyData, ReadyForQuery.
fn greet(out: &mut BytesMut) {
    let version = format!("16.0 (switchyard {})", env!("CARGO_PKG_VERSION"));
    for (name, value) in [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        wire::parameter_status(out, name, value);
    }
    // Cancelling a console command cancels nothing: the key is inert.
    messages::backend_key_data(out, 0, 0);
    messages::ready_for_query_idle(out);
}

/// Runs every statement of a simple query; stops at the first error, as
/// PostgreSQL does.
async fn run_query(shared: &Arc<Shared>, query: &str, out: &mut BytesMut) {
    let statements = command::statements(query);
    if statements.is_empty() {
        wire::empty_query(out);
        return;
    }
    for statement in statements {
        if let Err(error) = run(shared, statement, out).await {
            tracing::info!(statement, %error, "admin console command failed");
            wire::error(out, error.sqlstate(), error.to_string());
            return;
        }
    }
}

async fn run(
    shared: &Arc<Shared>,
    statement: &str,
    out: &mut BytesMut,
) -> Result<(), ConsoleError> {
    let command = Command::parse(statement)
        .ok_or_else(|| ConsoleError::UnknownCommand(statement.to_owned()))?;
    let table: Table = match command {
        Command::ShowPools => show_pools::show(shared),
        Command::ShowServers => show_servers::show(shared),
        Command::ShowClients => show_clients::show(shared),
        Command::ShowStats => show_stats::show(shared),
        Command::ShowDatabases => show_databases::show(shared),
        Command::ShowConfig => show_info::config(shared),
        Command::ShowVersion => show_info::version(),
        Command::ShowHelp => show_info::help(),
        Command::ShowTopology => show_topology::topology(shared),
        Command::ShowLag => show_topology::lag(shared),
        control => return run_control(shared, control, out).await,
    };
    wire::table(out, &table);
    Ok(())
}

/// The commands that change something; each is logged.
async fn run_control(
    shared: &Arc<Shared>,
    command: Command,
    out: &mut BytesMut,
) -> Result<(), ConsoleError> {
    tracing::info!(?command, "admin console command");
    let tag = match command {
        Command::Pause => {
            // Returns once the transactions running now have ended, as
            // PgBouncer's PAUSE does; new ones wait from this moment on.
            shared.pause.pause().await?;
            "PAUSE"
        }
        Command::Resume => {
            shared.pause.resume();
            "RESUME"
        }
        Command::Reload => {
            let shared = Arc::clone(shared);
            // Reading the file is blocking I/O; keep it off the worker.
            let outcome = tokio::task::spawn_blocking(move || {
                crate::admin::reload::reload(&shared, "console")
            })
            .await
            .unwrap_or(Err(crate::admin::reload::ReloadError::Aborted))?;
            for ignored in outcome.ignored {
                wire::notice(
                    out,
                    &format!("{ignored} cannot change without a restart; ignored"),
                );
            }
            "RELOAD"
        }
        Command::Reconnect => {
            for pool in shared.pools.all() {
                pool.reconnect();
            }
            "RECONNECT"
        }
        Command::Shutdown => {
            shared.control.shutdown.cancel();
            "SHUTDOWN"
        }
        _ => return Err(ConsoleError::UnknownCommand(format!("{command:?}"))),
    };
    wire::command_complete(out, tag);
    Ok(())
}
