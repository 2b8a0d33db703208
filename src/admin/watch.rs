//! Reload when the configuration file changes. The directory is watched,
//! not the file: Kubernetes updates a mounted ConfigMap by swapping the
//! `..data` symlink, which replaces the file without writing to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::proxy::Shared;

/// Quiet time after the last change before the file is read: editors and
/// the kubelet write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Starts watching the directory of `shared.config_path` (if any) until
/// `stop` fires. A change that leaves the file's text as it was (a touch,
/// an unrelated file in the directory) reloads nothing.
pub fn spawn(shared: Arc<Shared>, stop: CancellationToken) {
    let Some(path) = shared.config_path.clone() else {
        return;
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the configuration file; reload with SIGHUP");
            return;
        }
    };
    if let Err(error) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(%error, dir = %dir.display(), "cannot watch the configuration directory; reload with SIGHUP");
        return;
    }
    tracing::debug!(dir = %dir.display(), "watching the configuration directory");
    tokio::spawn(async move {
        // Dropping the watcher stops it: it lives as long as this task.
        let _watcher = watcher;
        run(shared, path, rx, stop).await;
    });
}

async fn run(
    shared: Arc<Shared>,
    path: PathBuf,
    mut events: mpsc::UnboundedReceiver<()>,
    stop: CancellationToken,
) {
    let mut last = read(&path).await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => {
                if event.is_none() {
                    return;
                }
            }
        }
        // Debounce: wait until the directory has been quiet for a while.
        loop {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let text = read(&path).await;
        if text == last {
            continue;
        }
        last = text;
        let shared = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || {
            crate::admin::reload::reload(&shared, "file change")
        })
        .await;
    }
}

async fn read(path: &Path) -> Option<String> {
    tokio::fs::read_to_string(path).await.ok()
}
