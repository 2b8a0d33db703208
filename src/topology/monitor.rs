//! The topology monitor: probes every node on a fixed interval, elects the
//! primary from what the nodes say (and what the control plane claims),
//! measures replica lag, and publishes a new snapshot each round.
//!
//! A single task on the control runtime; sessions only read its snapshots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::claims::{ClaimedRole, Claims};
use super::election::{Claim, LagLimits, elect};
use super::probe::{Observation, ProbeLogin, Prober};
use super::snapshot::{Member, NodeLoad, Role, Snapshot};
use crate::config::{Config, TopologySource};
use crate::proxy::Shared;

/// A node being watched: its probe connection and load counter survive
/// config reloads that keep the node.
struct Watched {
    addr: String,
    prober: Prober,
    load: Arc<NodeLoad>,
}

/// Probes the nodes until `shutdown`. `claims` carries a control plane's
/// view (Patroni, Kubernetes); static and probe topologies pass `None`.
pub async fn run(
    shared: Arc<Shared>,
    claims: Option<watch::Receiver<Option<Claims>>>,
    shutdown: CancellationToken,
) {
    let mut watched: Vec<Watched> = Vec::new();
    loop {
        let settings = shared.settings.load_full();
        let config = &settings.config;
        let nodes = node_list(config, claims.as_ref());
        sync_nodes(&mut watched, &nodes, config, &shared);
        let Some((user, password, database)) = config.monitor_credentials() else {
            // Invariant: validate() refuses a config without monitor credentials.
            return;
        };
        let login = Arc::new(ProbeLogin::new(
            user,
            password,
            database,
            settings.server_tls.clone(),
        ));
        let timeout = config.cluster.probe_timeout;
        let (probed, results) = probe_all(std::mem::take(&mut watched), login, timeout).await;
        watched = probed;
        let observations: Vec<Option<Observation>> =
            results.iter().map(|r| r.as_ref().ok().copied()).collect();
        let claim = current_claim(config, claims.as_ref());
        let limits = LagLimits {
            max_bytes: config.routing.max_replica_lag_bytes,
            max_seconds: config.routing.max_replica_lag.as_secs_f64(),
        };
        let previous = shared.topology.snapshot();
        let mut next = elect(&previous, &observations, &claim, limits);
        note_probe_errors(&mut next, &results);
        if next.differs_in_shape(&previous) {
            log_change(&previous, &next);
            retire_lost_nodes(&shared, &previous, &next);
            shared.metrics.topology_changed();
            if previous.primary().is_some()
                && next
                    .primary()
                    .is_some_and(|p| Some(&p.addr) != previous.primary().map(|o| &o.addr))
            {
                shared.metrics.failover();
            }
        }
        record_metrics(&shared, &previous, &next);
        shared.topology.publish(next);
        shared.readiness.set_topology_ready(true);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.cluster.probe_interval) => {}
        }
    }
}

/// The configured nodes, then the members a control plane reports that
/// the configuration does not list (Patroni members, CNPG pods).
fn node_list(config: &Config, claims: Option<&watch::Receiver<Option<Claims>>>) -> Vec<String> {
    let mut nodes = config.cluster.nodes.clone();
    if let Some(view) = claims.and_then(|rx| rx.borrow().clone()) {
        for member in view.members {
            if !nodes.contains(&member.addr) {
                nodes.push(member.addr);
            }
        }
    }
    nodes
}

/// Makes `watched` and the published members match `nodes`.
fn sync_nodes(watched: &mut Vec<Watched>, nodes: &[String], config: &Config, shared: &Shared) {
    let weight = |addr: &str| config.cluster.weights.get(addr).copied().unwrap_or(1);
    let snapshot = shared.topology.snapshot();
    let same_nodes = watched.len() == nodes.len()
        && watched.iter().zip(nodes).all(|(w, n)| &w.addr == n)
        && snapshot.members.len() == nodes.len()
        && snapshot.members.iter().all(|m| m.weight == weight(&m.addr));
    if same_nodes {
        return;
    }
    let mut old: HashMap<String, Watched> =
        watched.drain(..).map(|w| (w.addr.clone(), w)).collect();
    let previous: HashMap<&str, &Member> = snapshot
        .members
        .iter()
        .map(|m| (m.addr.as_str(), m))
        .collect();
    let mut members = Vec::with_capacity(nodes.len());
    for addr in nodes {
        let node = old.remove(addr).unwrap_or_else(|| Watched {
            addr: addr.clone(),
            prober: Prober::default(),
            load: Arc::default(),
        });
        let member = match previous.get(addr.as_str()) {
            Some(member) => Member {
                weight: weight(addr),
                load: Arc::clone(&node.load),
                ..(*member).clone()
            },
            None => Member::unprobed(addr, weight(addr), Arc::clone(&node.load)),
        };
        members.push(member);
        watched.push(node);
    }
    tracing::info!(nodes = ?nodes, "topology nodes set");
    let primary = snapshot
        .primary()
        .and_then(|p| members.iter().position(|m| m.addr == p.addr));
    shared.topology.publish(Snapshot {
        members,
        primary,
        ..(*snapshot).clone()
    });
}

/// Probes every node at once; returns them with their observations, in order.
async fn probe_all(
    nodes: Vec<Watched>,
    login: Arc<ProbeLogin>,
    timeout: Duration,
) -> (Vec<Watched>, Vec<Result<Observation, String>>) {
    let count = nodes.len();
    let mut tasks = JoinSet::new();
    for (index, mut node) in nodes.into_iter().enumerate() {
        let login = Arc::clone(&login);
        tasks.spawn(async move {
            let seen = match node.prober.probe(&node.addr, &login, timeout).await {
                Ok(seen) => Ok(seen),
                Err(error) => {
                    tracing::debug!(node = %node.addr, %error, "probe failed");
                    Err(error.to_string())
                }
            };
            (index, node, seen)
        });
    }
    let mut slots: Vec<Option<(Watched, Result<Observation, String>)>> =
        (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        // A probe task does not panic; if one did, its node is dropped
        // here and re-added (unprobed) by the next sync.
        if let Ok((index, node, seen)) = joined {
            slots[index] = Some((node, seen));
        }
    }
    let mut watched = Vec::with_capacity(count);
    let mut observations = Vec::with_capacity(count);
    for (node, seen) in slots.into_iter().flatten() {
        watched.push(node);
        observations.push(seen);
    }
    (watched, observations)
}

/// What the configured control plane says now.
fn current_claim(config: &Config, claims: Option<&watch::Receiver<Option<Claims>>>) -> Claim {
    match config.cluster.topology {
        TopologySource::Probe => Claim::ProbeOnly,
        TopologySource::Static => Claim::Primary(config.cluster.primary.clone()),
        TopologySource::Patroni | TopologySource::Kubernetes => {
            let view = claims.and_then(|rx| rx.borrow().clone());
            match view {
                None => Claim::Primary(None),
                Some(view) if view.hold_writes => Claim::HoldWrites,
                Some(view) => Claim::Primary(
                    view.claimed_primary()
                        .filter(|m| m.role == ClaimedRole::Primary)
                        .map(|m| m.addr.clone()),
                ),
            }
        }
    }
}

fn log_change(previous: &Snapshot, next: &Snapshot) {
    for member in &next.members {
        let before = previous.members.iter().find(|m| m.addr == member.addr);
        let (role_before, rotation_before) =
            before.map_or((Role::Unavailable, false), |m| (m.role, m.in_rotation));
        if role_before != member.role || rotation_before != member.in_rotation {
            tracing::info!(
                node = %member.addr,
                role = member.role.as_str(),
                was = role_before.as_str(),
                in_rotation = member.in_rotation,
                lag_bytes = ?member.lag_bytes,
                lag_seconds = ?member.lag_seconds,
                "node changed"
            );
        }
    }
    match (previous.primary(), next.primary()) {
        (_, Some(primary)) if previous.primary().map(|p| &p.addr) != Some(&primary.addr) => {
            tracing::info!(primary = %primary.addr, timeline = ?primary.timeline, "primary elected");
        }
        (Some(old), None) => tracing::warn!(
            was = %old.addr,
            reason = next.no_primary_reason.as_deref().unwrap_or("unknown"),
            "no writable primary: writes are held"
        ),
        _ => {}
    }
    if next.split_brain && !previous.split_brain {
        tracing::error!(
            reason = next.no_primary_reason.as_deref().unwrap_or(""),
            "split brain: writes held"
        );
    }
}

/// Idle connections to a node that lost the primary role or went away are
/// closed, so none of them is handed out for a write that belongs elsewhere.
fn retire_lost_nodes(shared: &Shared, previous: &Snapshot, next: &Snapshot) {
    for before in &previous.members {
        let now = next.members.iter().find(|m| m.addr == before.addr);
        let lost_primary =
            before.role == Role::Primary && now.is_none_or(|m| m.role != Role::Primary);
        let lost = before.reachable && now.is_none_or(|m| !m.reachable);
        if lost_primary || lost {
            shared.pools.close_idle_on(&before.addr);
        }
    }
}

/// Node roles, health and lag in the metrics; time without a primary.
fn record_metrics(shared: &Shared, previous: &Snapshot, next: &Snapshot) {
    let metrics = &shared.metrics;
    for old in &previous.members {
        if !next.members.iter().any(|m| m.addr == old.addr) {
            metrics.forget_node(&old.addr);
        }
    }
    for member in &next.members {
        let role = match member.role {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unavailable => "unknown",
        };
        metrics.set_node_state(&member.addr, role, member.reachable);
        if member.role == Role::Replica {
            metrics.set_replica_lag(
                &member.addr,
                member.lag_bytes.unwrap_or(0),
                member.lag_seconds.unwrap_or(0.0),
            );
        }
    }
    if next.primary.is_none() && previous.version > 0 {
        let elapsed = next
            .published_at
            .duration_since(previous.published_at)
            .unwrap_or_default();
        metrics.add_seconds_without_primary(elapsed.as_secs_f64());
    }
}

/// Keeps each failed probe's reason on its member, and names it in the
/// reason there is no primary, so a client waiting for writes is told why
/// (e.g. the node's TLS certificate was refused).
fn note_probe_errors(next: &mut Snapshot, results: &[Result<Observation, String>]) {
    for (member, result) in next.members.iter_mut().zip(results) {
        member.probe_error = result.as_ref().err().cloned();
    }
    let Some(reason) = next.no_primary_reason.as_mut() else {
        return;
    };
    let unreachable = next
        .members
        .iter()
        .find(|m| reason.ends_with(&format!("{} is unreachable", m.addr)));
    if let Some(error) = unreachable.and_then(|m| m.probe_error.as_deref()) {
        reason.push_str(": ");
        reason.push_str(error);
    }
}
