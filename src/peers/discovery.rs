//! The peer-list task: every `peers.check_interval` it resolves the peers
//! (static list and/or a headless Service's A/AAAA records), checks which
//! of them accept a TCP connection on their client port, publishes the
//! table, and re-divides `pool.max_server_connections_per_node` by the
//! live count.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Peer, PeerTable, PeersError};
use crate::config::{PeersConfig, derive_id};
use crate::proxy::Shared;

/// Runs discovery and re-balancing until `stop` fires. Also runs without
/// `[peers]`: the budget is then this pod's alone.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut dns = DnsSource::default();
    // What each source last resolved to: a failed lookup keeps the
    // previous answer rather than forget a peer (forgetting one would
    // enlarge this pod's share while that peer may still hold its own).
    let mut last = LastKnown::default();
    loop {
        let settings = shared.settings.load_full();
        let config = &settings.config.peers;
        let candidates = if config.enabled() {
            gather(config, &mut dns, &mut last).await
        } else {
            Vec::new()
        };
        let own = shared.peers.own_id();
        let table = check(
            candidates,
            own,
            config.self_address_parsed(),
            config.check_timeout,
        )
        .await;
        let live = table.live_count();
        let previous = shared.peers.publish(table);
        let budget = settings.config.pool.max_server_connections_per_node;
        let share = share_of(budget, live);
        let old_share = shared.pools.node_budget();
        shared.pools.set_node_budget(share);
        shared.metrics.peers_live.set(live as i64);
        shared.metrics.server_connection_budget.set(share as i64);
        if previous.live_count() != live || old_share != share {
            tracing::info!(
                live,
                share,
                budget,
                "peers checked; connection budget share set"
            );
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.check_interval) => {}
        }
    }
}

/// This pod's per-node share of `budget` among `live` pods: an equal
/// share rounded down (the sum never exceeds the budget), at least 1;
/// 0 when there is no budget.
pub fn share_of(budget: usize, live: usize) -> usize {
    if budget == 0 {
        return 0;
    }
    (budget / live.max(1)).max(1)
}

/// The last successful answer of each source.
#[derive(Debug, Default)]
struct LastKnown {
    /// `peers.static` entry → the address it resolved to.
    statics: HashMap<String, SocketAddr>,
    dns: Vec<(u16, SocketAddr)>,
}

/// Every candidate (id, address) from the static list and DNS.
async fn gather(
    config: &PeersConfig,
    dns: &mut DnsSource,
    last: &mut LastKnown,
) -> Vec<(u16, SocketAddr)> {
    let mut found = static_peers(config, &mut last.statics).await;
    if !config.dns.is_empty() {
        match dns.lookup(config).await {
            Ok(answer) => last.dns = answer,
            Err(error) => tracing::warn!(%error, "peer DNS lookup failed; keeping the last answer"),
        }
        found.extend(last.dns.iter().copied());
    }
    found
}

/// The static entries, each resolved on its own: one that fails keeps
/// the address it last resolved to.
async fn static_peers(
    config: &PeersConfig,
    last: &mut HashMap<String, SocketAddr>,
) -> Vec<(u16, SocketAddr)> {
    let mut found = Vec::new();
    // Validated at load: a bad entry never reaches here.
    for entry in config.static_entries().unwrap_or_default() {
        let resolved = match resolve_first(&entry.address).await {
            Ok(addr) => {
                last.insert(entry.address.clone(), addr);
                Some(addr)
            }
            Err(error) => {
                tracing::warn!(%error, "keeping the peer's last known address");
                last.get(&entry.address).copied()
            }
        };
        let Some(addr) = resolved else {
            continue;
        };
        match entry.id.or_else(|| derive_id(addr.ip())) {
            Some(id) => found.push((id, addr)),
            None => tracing::warn!(
                address = entry.address,
                "peer IP gives id 0; give it an id (ID=host:port)"
            ),
        }
    }
    found
}

async fn resolve_first(address: &str) -> Result<SocketAddr, PeersError> {
    let error = |source| PeersError::Static {
        address: address.to_owned(),
        source,
    };
    tokio::net::lookup_host(address)
        .await
        .map_err(error)?
        .next()
        .ok_or_else(|| error(std::io::Error::other("no address")))
}

/// A resolver for `peers.dns`, rebuilt when `peers.dns_server` changes.
#[derive(Default)]
struct DnsSource {
    resolver: Option<(String, TokioResolver)>,
}

impl DnsSource {
    async fn lookup(&mut self, config: &PeersConfig) -> Result<Vec<(u16, SocketAddr)>, PeersError> {
        let resolver = self.resolver(config)?;
        let answer =
            resolver
                .lookup_ip(config.dns.as_str())
                .await
                .map_err(|e| PeersError::Dns {
                    name: config.dns.clone(),
                    reason: e.to_string(),
                })?;
        let mut found = Vec::new();
        for ip in answer.iter() {
            match derive_id(ip) {
                Some(id) => found.push((id, SocketAddr::new(ip, config.dns_port))),
                None => tracing::warn!(%ip, "peer IP gives id 0; ignored"),
            }
        }
        Ok(found)
    }

    fn resolver(&mut self, config: &PeersConfig) -> Result<&TokioResolver, PeersError> {
        let stale = self
            .resolver
            .as_ref()
            .is_none_or(|(server, _)| *server != config.dns_server);
        if stale {
            let resolver = build_resolver(config)?;
            self.resolver = Some((config.dns_server.clone(), resolver));
        }
        // Set just above when it was missing.
        self.resolver
            .as_ref()
            .map(|(_, resolver)| resolver)
            .ok_or_else(|| PeersError::Resolver("no resolver".into()))
    }
}

fn build_resolver(config: &PeersConfig) -> Result<TokioResolver, PeersError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match config.dns_server_addr() {
        Some(server) => {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                provider,
            )
        }
        None => {
            TokioResolver::builder(provider).map_err(|e| PeersError::Resolver(e.to_string()))?
        }
    };
    let options = builder.options_mut();
    // Every round asks the server: the headless Service's records are the
    // membership, and a cached answer would hide pods coming and going.
    options.positive_max_ttl = Some(Duration::ZERO);
    options.negative_max_ttl = Some(Duration::ZERO);
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = config.check_timeout;
    options.attempts = 1;
    builder
        .build()
        .map_err(|e| PeersError::Resolver(e.to_string()))
}

/// One entry per peer id other than `own`, each checked with a TCP connect
/// bounded by `timeout` (all at once).
async fn check(
    candidates: Vec<(u16, SocketAddr)>,
    own: u16,
    own_addr: Option<SocketAddr>,
    timeout: Duration,
) -> PeerTable {
    let mut unique: BTreeMap<u16, SocketAddr> = BTreeMap::new();
    for (id, addr) in candidates {
        if id == own || Some(addr) == own_addr {
            continue;
        }
        if let Some(first) = unique.get(&id) {
            if *first != addr {
                tracing::warn!(id, %addr, kept = %first, "two peers share an id; set distinct ids");
            }
            continue;
        }
        unique.insert(id, addr);
    }
    let mut probes = JoinSet::new();
    for (id, addr) in unique {
        probes.spawn(async move {
            let live = matches!(
                tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            Peer { id, addr, live }
        });
    }
    let mut peers = Vec::new();
    while let Some(probe) = probes.join_next().await {
        if let Ok(peer) = probe {
            peers.push(peer);
        }
    }
    peers.sort_by_key(|p| p.id);
    PeerTable { peers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_divides_the_budget_rounding_down_but_never_to_zero() {
        assert_eq!(share_of(30, 3), 10);
        assert_eq!(share_of(30, 2), 15);
        assert_eq!(share_of(10, 4), 2);
        assert_eq!(share_of(2, 5), 1);
        assert_eq!(share_of(0, 3), 0);
        assert_eq!(share_of(30, 0), 30);
    }

    #[tokio::test]
    async fn check_skips_this_pod_and_marks_who_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let table = check(
            vec![(1, up), (2, up), (3, closed), (2, closed)],
            1,
            None,
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(
            table.peers,
            vec![
                Peer {
                    id: 2,
                    addr: up,
                    live: true
                },
                Peer {
                    id: 3,
                    addr: closed,
                    live: false
                },
            ]
        );
        assert_eq!(table.live_count(), 2);
    }
}
