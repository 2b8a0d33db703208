//! Starts the control-plane watcher the configuration names, if any.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::claims::Claims;
use crate::config::{Config, TopologySource};

/// Spawns the Patroni or Kubernetes watcher on the current runtime and
/// returns the channel its claims arrive on; `None` for static and probe
/// topologies, which need no control plane.
pub fn spawn(
    config: &Config,
    shutdown: CancellationToken,
) -> Option<watch::Receiver<Option<Claims>>> {
    let (tx, rx) = watch::channel(None);
    match config.cluster.topology {
        TopologySource::Static | TopologySource::Probe => return None,
        TopologySource::Patroni => {
            let patroni = config.patroni.clone();
            tokio::spawn(async move {
                if let Err(error) = super::patroni::run(patroni, tx, shutdown).await {
                    tracing::error!(%error, "the Patroni watcher stopped; writes are held");
                }
            });
        }
        #[cfg(feature = "kubernetes")]
        TopologySource::Kubernetes => {
            let kubernetes = config.kubernetes.clone();
            tokio::spawn(async move {
                if let Err(error) = super::kubernetes::run(kubernetes, tx, shutdown).await {
                    tracing::error!(%error, "the Kubernetes watcher stopped; writes are held");
                }
            });
        }
        // Invariant: validate() refuses topology = "kubernetes" without the feature.
        #[cfg(not(feature = "kubernetes"))]
        TopologySource::Kubernetes => return None,
    }
    Some(rx)
}
