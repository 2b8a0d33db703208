//! The Patroni watcher: polls `GET /cluster` on the members' REST APIs and
//! publishes what Patroni says as [`Claims`].
//!
//! Patroni answers `/cluster` from its DCS view on every member, so any
//! member will do: the watcher sticks to the first URL that answers and
//! moves to the next one as soon as a request fails or times out (a killed
//! leader's API is exactly the one that stops answering). Polling is fast
//! (default every 500 ms) because Patroni's promotion is what ends a
//! failover's write pause.
//!
//! When no member's API answers, the last published claims stay in place:
//! the probe verification decides whether the nodes they name still serve.
//!
//! ```no_run
//! # async fn demo(config: switchyard::config::PatroniConfig) -> Result<(), switchyard::topology::patroni::PatroniError> {
//! let (tx, rx) = tokio::sync::watch::channel(None);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(switchyard::topology::patroni::run(config, tx, shutdown.clone()));
//! # Ok(()) }
//! ```

mod client;
mod cluster;
mod error;

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use client::ClusterEndpoint;
pub use cluster::{ClusterDocument, PatroniMember, SOURCE, parse_cluster, to_claims};
pub use error::PatroniError;

use super::claims::Claims;
use super::publish::publish_if_changed;
use crate::config::PatroniConfig;
use client::HttpClient;

/// Shortest poll interval and request timeout honoured: a zero from the
/// config would otherwise spin or fail every request.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Runs the Patroni watcher until `shutdown` is cancelled or every receiver
/// of `tx` is gone. Fails at once (publishing nothing) when the config names
/// no usable URL.
pub async fn run(
    config: PatroniConfig,
    tx: watch::Sender<Option<Claims>>,
    shutdown: CancellationToken,
) -> Result<(), PatroniError> {
    PatroniWatcher::new(&config)?.run(tx, shutdown).await;
    Ok(())
}

/// Polls Patroni members' `/cluster` in turn.
#[derive(Debug)]
pub struct PatroniWatcher {
    endpoints: Vec<ClusterEndpoint>,
    client: HttpClient,
    poll_interval: Duration,
    /// Index of the endpoint that answered last (tried first next time).
    current: usize,
}

impl PatroniWatcher {
    /// Checks `config.urls` (plain `http://`, at least one).
    pub fn new(config: &PatroniConfig) -> Result<Self, PatroniError> {
        if config.urls.is_empty() {
            return Err(PatroniError::NoUrls);
        }
        let endpoints = config
            .urls
            .iter()
            .map(|u| ClusterEndpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PatroniWatcher {
            endpoints,
            client: HttpClient::new(config.request_timeout.max(MIN_PERIOD)),
            poll_interval: config.poll_interval.max(MIN_PERIOD),
            current: 0,
        })
    }

    /// Asks the members in turn, starting with the one that answered last,
    /// until one answers with a valid document. Each attempt is bounded by
    /// `request_timeout`, so one poll takes at most `urls × request_timeout`.
    /// The error is the last member's.
    pub async fn poll_once(&mut self) -> Result<Claims, PatroniError> {
        let count = self.endpoints.len();
        let mut last_err = PatroniError::NoUrls;
        for step in 0..count {
            let index = (self.current + step) % count;
            let endpoint = &self.endpoints[index];
            let result = self
                .client
                .get(endpoint)
                .await
                .and_then(|body| parse_cluster(&body));
            match result {
                Ok(doc) => {
                    if index != self.current {
                        tracing::info!(url = %endpoint.base, "Patroni watcher now asks this member's API");
                        self.current = index;
                    }
                    return Ok(to_claims(&doc));
                }
                Err(e) => {
                    tracing::debug!(url = %endpoint.base, error = %e, "Patroni member API failed; trying the next");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    /// Polls every `poll_interval` and publishes changed claims, until
    /// `shutdown` is cancelled or `tx` has no receivers left.
    pub async fn run(mut self, tx: watch::Sender<Option<Claims>>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.poll_interval);
        // After a slow poll (members timing out), wait a full interval
        // rather than firing a burst of catch-up polls.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        tracing::info!(
            urls = ?self.endpoints.iter().map(|e| e.base.as_str()).collect::<Vec<_>>(),
            poll_interval_ms = self.poll_interval.as_millis() as u64,
            "Patroni watcher started"
        );
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                result = self.poll_once() => result,
            };
            match result {
                Ok(claims) => {
                    if failing {
                        tracing::info!(url = %self.endpoints[self.current].base, "Patroni REST API answers again");
                        failing = false;
                    }
                    publish_if_changed(&tx, claims);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "no Patroni member's REST API answers; keeping the last claims");
                        failing = true;
                    }
                }
            }
            if tx.is_closed() {
                tracing::debug!("nobody receives Patroni claims any more");
                break;
            }
        }
        tracing::info!("Patroni watcher stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-route HTTP server answering every request with `body`.
    async fn serve(body: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// A URL nothing listens on (connection refused).
    async fn dead_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    const DOC: &str = r#"{"members": [{"name": "a", "role": "leader", "state": "running", "host": "127.0.0.1", "port": 5001, "timeline": 1}, {"name": "b", "role": "replica", "state": "streaming", "host": "127.0.0.1", "port": 5002, "timeline": 1, "lag": 0}]}"#;

    fn config(urls: Vec<String>) -> PatroniConfig {
        PatroniConfig {
            urls,
            poll_interval: Duration::from_millis(20),
            request_timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn empty_or_bad_urls_are_refused() {
        assert!(matches!(
            PatroniWatcher::new(&config(vec![])),
            Err(PatroniError::NoUrls)
        ));
        assert!(matches!(
            PatroniWatcher::new(&config(vec!["https://x:8008".into()])),
            Err(PatroniError::BadUrl { .. })
        ));
    }

    #[tokio::test]
    async fn a_dead_member_is_skipped_and_the_answering_one_kept() {
        let good = serve(DOC).await;
        let mut watcher = PatroniWatcher::new(&config(vec![dead_url().await, good])).unwrap();
        let claims = watcher.poll_once().await.unwrap();
        assert_eq!(claims.claimed_primary().unwrap().addr, "127.0.0.1:5001");
        assert_eq!(watcher.current, 1);
    }

    #[tokio::test]
    async fn run_publishes_once_and_stops_on_shutdown() {
        let (tx, mut rx) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config(vec![serve(DOC).await]), tx, shutdown.clone()));
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let first = rx.borrow_and_update().clone().unwrap();
        assert!(!first.hold_writes);
        // Several more polls of the same answer publish nothing new.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!rx.has_changed().unwrap());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn all_members_down_keeps_the_last_claims() {
        let (tx, rx) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config(vec![dead_url().await]), tx, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(rx.borrow().is_none());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
