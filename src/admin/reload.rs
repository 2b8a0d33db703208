//! Hot reload: SIGHUP, the console's RELOAD and the file watch all end
//! here. The file is parsed and validated in full before anything
//! changes; a refused file leaves the configuration in force untouched.

use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::proxy::{Settings, Shared};
use crate::session::transaction::pool_settings;

/// Keys read once at start: a reload that changes them logs that they are
/// ignored and keeps the old values.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.admin_listen",
    "server.worker_threads",
    "log.format",
    "log.level",
    "peers.id",
    "peers.self_address",
];

/// Why a reload was refused.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The proxy was started without a configuration file.
    #[error("no configuration file to reload (started without --config)")]
    NoConfigFile,
    /// The new file cannot be used.
    #[error("new configuration refused, the previous one stays in force: {0}")]
    Config(#[from] ConfigError),
    /// A TLS file the new configuration names cannot be loaded.
    #[error("new configuration refused, the previous one stays in force: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The reload task did not finish (the runtime is shutting down).
    #[error("reload aborted")]
    Aborted,
}

/// What a successful reload did.
#[derive(Debug, Default)]
pub struct ReloadOutcome {
    /// Restart-only keys whose new values were ignored.
    pub ignored: Vec<&'static str>,
}

/// Re-reads the configuration file and, if it is valid, puts it in force:
/// new sessions use it at once, existing pools take the new pool settings
/// (keeping their connections), and running sessions keep the settings
/// they started with. Counted in `switchyard_config_reloads_total`.
/// Blocking (reads a file): call from a blocking context.
pub fn reload(shared: &Shared, trigger: &'static str) -> Result<ReloadOutcome, ReloadError> {
    let result = try_reload(shared);
    shared.metrics.config_reload(result.is_ok());
    match &result {
        Ok(outcome) => {
            tracing::info!(trigger, ignored = ?outcome.ignored, "configuration reloaded");
        }
        Err(error) => {
            tracing::warn!(trigger, %error, "configuration reload refused");
        }
    }
    result
}

fn try_reload(shared: &Shared) -> Result<ReloadOutcome, ReloadError> {
    let path = shared
        .config_path
        .as_ref()
        .ok_or(ReloadError::NoConfigFile)?;
    let mut config = Config::load(path)?;
    let old = shared.settings.load();
    let ignored = keep_restart_only(&old.config, &mut config);
    for key in &ignored {
        tracing::warn!(
            key,
            "setting cannot change without a restart; new value ignored"
        );
    }
    let settings = Settings::new(config)?;
    let pool_settings = pool_settings(&settings);
    shared.settings.store(Arc::new(settings));
    for pool in shared.pools.all() {
        pool.reconfigure(pool_settings.clone());
    }
    // Node list changes reach the topology monitor on its next round.
    Ok(ReloadOutcome { ignored })
}

/// Copies restart-only values from `old` into `new`; names those that differed.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut ignored = Vec::new();
    if new.server.listen != old.server.listen {
        new.server.listen.clone_from(&old.server.listen);
        ignored.push("server.listen");
    }
    if new.server.admin_listen != old.server.admin_listen {
        new.server.admin_listen.clone_from(&old.server.admin_listen);
        ignored.push("server.admin_listen");
    }
    if new.server.worker_threads != old.server.worker_threads {
        new.server.worker_threads = old.server.worker_threads;
        ignored.push("server.worker_threads");
    }
    if new.log.format != old.log.format {
        new.log.format = old.log.format;
        ignored.push("log.format");
    }
    if new.log.level != old.log.level {
        new.log.level.clone_from(&old.log.level);
        ignored.push("log.level");
    }
    // Cancel keys already handed out carry the peer id this pod started with.
    if new.peers.id != old.peers.id {
        new.peers.id = old.peers.id;
        ignored.push("peers.id");
    }
    if new.peers.self_address != old.peers.self_address {
        new.peers.self_address.clone_from(&old.peers.self_address);
        ignored.push("peers.self_address");
    }
    ignored
}

/// Reloads on every SIGHUP until `stop` fires.
pub async fn on_sighup(shared: Arc<Shared>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; reload with the console's RELOAD");
        return;
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            received = hangup.recv() => {
                if received.is_none() {
                    return;
                }
            }
        }
        let shared = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || reload(&shared, "SIGHUP")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_keys_keep_their_old_values() {
        let old = Config::default();
        let mut new = Config::default();
        new.server.listen = "127.0.0.1:1".into();
        new.pool.max_size = 3;
        let ignored = keep_restart_only(&old, &mut new);
        assert_eq!(ignored, ["server.listen"]);
        assert_eq!(new.server.listen, old.server.listen);
        assert_eq!(new.pool.max_size, 3);
    }
}
