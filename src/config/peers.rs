//! `[peers]`: the other switchyard pods behind the same Service, to which
//! CancelRequests for their sessions are forwarded and with which
//! `pool.max_server_connections_per_node` is shared.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Most sessions one pod can key at once while peers are on: the session
/// part of a cancel key is 15 bits (the peer id takes 16).
pub const MAX_SESSIONS_WITH_PEERS: usize = (1 << 15) - 1;

/// `[peers]`: where the other pods are and who this one is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// This pod's peer id (1..=65535); 0 derives it from `self_address`.
    pub id: u32,
    /// `ip:port` at which the other pods reach this one (its client port).
    pub self_address: String,
    /// Peers listed by hand: `"host:port"` (id derived from the IP) or
    /// `"ID=host:port"`. This pod may be listed too.
    #[serde(rename = "static")]
    pub static_peers: Vec<String>,
    /// DNS name whose A/AAAA records are the peers (a headless Service).
    pub dns: String,
    /// Client port of DNS-discovered peers.
    pub dns_port: u16,
    /// `ip:port` of the DNS server to ask; empty: the system's resolv.conf.
    pub dns_server: String,
    /// How often peers are re-resolved, checked and the budget re-divided.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Longest a peer may take to accept a TCP connection and count as live.
    #[serde(with = "humantime_serde")]
    pub check_timeout: Duration,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            id: 0,
            self_address: String::new(),
            static_peers: Vec::new(),
            dns: String::new(),
            dns_port: 6432,
            dns_server: String::new(),
            check_interval: Duration::from_secs(5),
            check_timeout: Duration::from_secs(1),
        }
    }
}

/// One `peers.static` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    /// The id written before `=`, if any; else derived from the resolved IP.
    pub id: Option<u16>,
    /// `host:port` (resolved at every check).
    pub address: String,
}

impl PeersConfig {
    /// True when any peer source is configured.
    pub fn enabled(&self) -> bool {
        !self.static_peers.is_empty() || !self.dns.is_empty()
    }

    /// This pod's peer id: `id`, else derived from `self_address`; 0 when
    /// peers are off (cancel keys then carry no peer id).
    pub fn own_id(&self) -> u16 {
        if !self.enabled() {
            return 0;
        }
        if let Ok(id) = u16::try_from(self.id)
            && id != 0
        {
            return id;
        }
        self.self_address
            .parse::<SocketAddr>()
            .ok()
            .and_then(|addr| derive_id(addr.ip()))
            .unwrap_or(0)
    }

    /// The parsed `static` entries.
    pub fn static_entries(&self) -> Result<Vec<StaticPeer>, ConfigError> {
        self.static_peers
            .iter()
            .enumerate()
            .map(|(index, entry)| parse_static(index, entry))
            .collect()
    }

    /// `self_address`, when set.
    pub fn self_address_parsed(&self) -> Option<SocketAddr> {
        self.self_address.parse().ok()
    }

    /// The DNS server to ask, when set.
    pub fn dns_server_addr(&self) -> Option<SocketAddr> {
        self.dns_server.parse().ok()
    }

    /// Checks the section; `max_clients` is `server.max_client_connections`.
    pub fn validate(&self, max_clients: usize) -> Result<(), ConfigError> {
        let entries = self.static_entries()?;
        if !self.enabled() {
            return Ok(());
        }
        if self.id > u32::from(u16::MAX) {
            return Err(ConfigError::invalid("peers.id", "must be 0..=65535"));
        }
        if !self.self_address.is_empty() {
            let addr: SocketAddr = self.self_address.parse().map_err(|_| {
                ConfigError::invalid("peers.self_address", "must be an ip:port address")
            })?;
            if self.id == 0 && derive_id(addr.ip()).is_none() {
                return Err(ConfigError::invalid(
                    "peers.self_address",
                    "its IP gives peer id 0 (last 16 bits zero); set peers.id",
                ));
            }
        }
        if self.own_id() == 0 {
            return Err(ConfigError::invalid(
                "peers.id",
                "set it (1..=65535) or peers.self_address (the id is then derived from the IP)",
            ));
        }
        for (index, entry) in entries.iter().enumerate() {
            let duplicate = entries[..index]
                .iter()
                .any(|e| e.id.is_some() && e.id == entry.id);
            if duplicate {
                return Err(ConfigError::invalid(
                    format!("peers.static[{index}]"),
                    "peer id listed twice",
                ));
            }
        }
        if !self.dns_server.is_empty() && self.dns_server_addr().is_none() {
            return Err(ConfigError::invalid(
                "peers.dns_server",
                "must be an ip:port address",
            ));
        }
        if self.dns_port == 0 {
            return Err(ConfigError::invalid("peers.dns_port", "must be 1..=65535"));
        }
        if self.check_interval.is_zero() || self.check_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "peers.check_interval",
                "check_interval and check_timeout must be more than zero",
            ));
        }
        if max_clients == 0 || max_clients > MAX_SESSIONS_WITH_PEERS {
            return Err(ConfigError::invalid(
                "server.max_client_connections",
                format!(
                    "must be 1..={MAX_SESSIONS_WITH_PEERS} with [peers] (cancel keys hold 15 bits of session)"
                ),
            ));
        }
        Ok(())
    }
}

/// The peer id of a pod at `ip`: the address's last 16 bits, which differ
/// between pods of one Kubernetes pod network (a /16 or smaller per
/// cluster). `None` when they are zero (0 means "no peer id").
pub fn derive_id(ip: IpAddr) -> Option<u16> {
    let id = match ip {
        IpAddr::V4(v4) => {
            let [_, _, c, d] = v4.octets();
            u16::from_be_bytes([c, d])
        }
        IpAddr::V6(v6) => {
            let octets = v6.octets();
            u16::from_be_bytes([octets[14], octets[15]])
        }
    };
    (id != 0).then_some(id)
}

fn parse_static(index: usize, entry: &str) -> Result<StaticPeer, ConfigError> {
    let key = || format!("peers.static[{index}]");
    let (id, address) = match entry.split_once('=') {
        Some((id, address)) => {
            let id = id
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|id| *id != 0)
                .ok_or_else(|| {
                    ConfigError::invalid(key(), "the id before '=' must be 1..=65535")
                })?;
            (Some(id), address.trim())
        }
        None => (None, entry.trim()),
    };
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        return Err(ConfigError::invalid(
            key(),
            format!("{entry:?} is not host:port or ID=host:port"),
        ));
    }
    Ok(StaticPeer {
        id,
        address: address.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(text: &str) -> PeersConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn off_by_default_and_own_id_is_zero() {
        let config = PeersConfig::default();
        assert!(!config.enabled());
        assert_eq!(config.own_id(), 0);
        config.validate(10_000).unwrap();
    }

    #[test]
    fn id_is_explicit_or_derived_from_the_self_address() {
        let config = peers("id = 7\nstatic = [\"7=127.0.0.1:1\", \"8=127.0.0.1:2\"]");
        assert_eq!(config.own_id(), 7);
        config.validate(100).unwrap();
        let config = peers("self_address = \"10.244.3.17:6432\"\ndns = \"sy\"");
        assert_eq!(config.own_id(), 3 * 256 + 17);
        config.validate(100).unwrap();
    }

    #[test]
    fn bad_entries_are_refused_naming_the_key() {
        let cases = [
            ("id = 1\nstatic = [\"0=a:1\"]", "peers.static[0]"),
            ("id = 1\nstatic = [\"a\"]", "peers.static[0]"),
            ("id = 1\nstatic = [\"2=a:1\", \"2=b:1\"]", "peers.static[1]"),
            ("static = [\"a:1\"]", "peers.id"),
            ("id = 70000\nstatic = [\"a:1\"]", "peers.id"),
            (
                "self_address = \"10.0.0.0:1\"\ndns = \"x\"",
                "peers.self_address",
            ),
            (
                "id = 1\ndns = \"x\"\ndns_server = \"nope\"",
                "peers.dns_server",
            ),
            (
                "id = 1\ndns = \"x\"\ncheck_interval = \"0s\"",
                "peers.check_interval",
            ),
        ];
        for (text, key) in cases {
            let err = peers(text).validate(100).unwrap_err();
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
        let err = peers("id = 1\ndns = \"x\"").validate(0).unwrap_err();
        assert!(err.to_string().starts_with("server.max_client_connections"));
    }

    #[test]
    fn derived_ids_take_the_last_16_bits() {
        assert_eq!(derive_id("10.1.2.3".parse().unwrap()), Some(0x0203));
        assert_eq!(derive_id("fd00::1:2".parse().unwrap()), Some(2));
        assert_eq!(derive_id("10.1.0.0".parse().unwrap()), None);
    }
}
