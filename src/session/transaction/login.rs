//! Login in transaction mode: the client's settings and routing policy,
//! its pools and cancel key, and a greeting with the server's parameters
//! learned from a first checkout.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::catalog::PoolCatalog;
use super::node_pools::NodePools;
use super::settings::SessionSettings;
use super::{as_fatal, pool_error_bytes, pool_settings};
use crate::backend::Secret;
use crate::backend::query::{self as internal, InternalError};
use crate::config::Route;
use crate::listener::cancel::Registration;
use crate::pool::Pool;
use crate::protocol::messages::{self, ClientError};
use crate::proxy::{Settings, Shared};
use crate::router::target::{NoPrimary, Policy, wait_for_primary};
use crate::tls::ClientStream;
use crate::topology::Role;

/// What login in transaction mode establishes.
pub(super) struct Login {
    pub(super) pools: NodePools,
    pub(super) catalog: Arc<PoolCatalog>,
    pub(super) settings: SessionSettings,
    pub(super) registration: Registration,
    pub(super) policy: Policy,
}

/// Logs the client in: its settings and route, the pools it may use, its
/// cancel key, and the greeting (server parameters and key) written to it.
/// `Ok(None)` when the client was refused with an error already written.
pub(super) async fn login(
    client: &mut ClientStream,
    shared: &Arc<Shared>,
    settings: &Settings,
    params: &[(String, String)],
    password: Option<Secret>,
) -> Result<Option<Login>, Bytes> {
    let user = crate::protocol::StartupPacket::param(params, "user").unwrap_or_default();
    let database =
        crate::protocol::StartupPacket::param(params, "database").unwrap_or_else(|| user.clone());
    let mut session_settings = SessionSettings::from_startup(params);
    let policy = session_policy(settings, &user, &database, session_settings.take_route())?;
    let mut pools = NodePools::new(database, user, password, pool_settings(settings));
    let catalog = shared.catalogs.get(&pools.catalog_key());
    let fingerprint = session_settings.fingerprint();

    // Clients with settings seen before are greeted without a server round
    // trip, so logins keep working while every connection is busy, and
    // while the primary is being replaced.
    let mut greeting = match catalog.greeting(fingerprint) {
        Some(frames) => BytesMut::from(&frames[..]),
        None => {
            let node = greeting_node(shared, settings).await?;
            let pool = pools.get(shared, &node);
            let frames = first_greeting(&pool, &session_settings).await?;
            catalog.remember_greeting(fingerprint, frames.clone());
            BytesMut::from(&frames[..])
        }
    };
    // The login connection (if any) went back to the pool: nothing to
    // cancel until the first transaction links one.
    let registration = shared.cancels.register(None);
    let key = registration.key();
    messages::backend_key_data(&mut greeting, key.pid, key.secret);
    messages::ready_for_query_idle(&mut greeting);
    if client.write_all(&greeting).await.is_err() {
        return Ok(None);
    }
    Ok(Some(Login {
        pools,
        catalog,
        settings: session_settings,
        registration,
        policy,
    }))
}

/// The session's routing policy: user, then database, then `[routing]`,
/// overridden by a startup `-c switchyard.route=…`.
fn session_policy(
    settings: &Settings,
    user: &str,
    database: &str,
    startup_route: Option<String>,
) -> Result<Policy, Bytes> {
    let (mut route, consistency) = settings.config.policy(user, database);
    if let Some(value) = startup_route {
        route = Route::parse(&value).ok_or_else(|| {
            ClientError::fatal("22023", invalid_route(&value))
                .to_bytes()
                .freeze()
        })?;
    }
    let routing = &settings.config.routing;
    Ok(Policy::new(
        routing.enabled,
        route,
        consistency,
        routing.primary_reads,
        rand::random(),
    ))
}

pub(super) fn invalid_route(value: &str) -> String {
    format!(
        "invalid value for parameter \"{}\": \"{value}\" (use primary, replica or auto)",
        crate::router::access::ROUTE_SETTING
    )
}

/// The node that answers a new client's first login: the primary, or
/// while there is none, a replica in rotation (its read-only state is
/// hidden: the proxy as a whole takes writes).
async fn greeting_node(shared: &Shared, settings: &Settings) -> Result<String, Bytes> {
    let snapshot = shared.topology.snapshot();
    if let Some(primary) = snapshot.primary() {
        return Ok(primary.addr.clone());
    }
    if let Some(replica) = snapshot
        .members
        .iter()
        .find(|m| m.role == Role::Replica && m.in_rotation)
    {
        return Ok(replica.addr.clone());
    }
    let timeout = settings.config.routing.failover_timeout;
    wait_for_primary(&shared.topology, timeout)
        .await
        .map_err(|e| {
            ClientError::fatal(NoPrimary::SQLSTATE, e.to_string())
                .to_bytes()
                .freeze()
        })
}

/// Checks out a connection, applies `settings`, and returns the
/// ParameterStatus frames the client should see.
async fn first_greeting(pool: &Arc<Pool>, settings: &SessionSettings) -> Result<Bytes, Bytes> {
    let mut conn = pool
        .checkout()
        .await
        .map_err(|e| pool_error_bytes(&e, true))?;
    let statuses = match internal::query(&mut conn, &settings.apply_sql()).await {
        Ok(result) => result.parameter_status,
        Err(InternalError::Refused(raw)) => {
            conn.settings_fingerprint = u64::MAX;
            conn.checkin();
            return Err(as_fatal(&raw));
        }
        Err(InternalError::Connection(reason)) => {
            conn.discard();
            return Err(ClientError::fatal("08006", reason).to_bytes().freeze());
        }
    };
    conn.settings_fingerprint = settings.fingerprint();
    let frames = merge_parameters(pool.server_parameters().unwrap_or_default(), &statuses);
    conn.checkin();
    Ok(frames.freeze())
}

/// The pool's default ParameterStatus frames, overridden by `statuses`.
fn merge_parameters(defaults: Bytes, statuses: &[Bytes]) -> BytesMut {
    let mut frames: Vec<Bytes> = Vec::new();
    let mut rest = defaults;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1;
        if len > rest.len() || len < 5 {
            break;
        }
        let frame = rest.split_to(len);
        if frame[0] == b'S' {
            frames.push(frame);
        }
    }
    for status in statuses {
        let name = internal::parameter_name(status);
        frames.retain(|f| internal::parameter_name(f) != name);
        frames.push(status.clone());
    }
    // The greeting may come from a replica (no primary at that moment);
    // the session as a whole takes writes.
    for frame in &mut frames {
        if internal::parameter_name(frame) == b"in_hot_standby" {
            *frame = internal::whole(b'S', b"in_hot_standby\0off\0");
        }
    }
    let mut out = BytesMut::new();
    for frame in frames {
        out.extend_from_slice(&frame);
    }
    out
}
