//! CancelRequest routing: clients get proxy-issued keys, mapped here to the
//! key of the server connection that serves them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::startup::cancel_request;

/// Where a cancel for one client session must go.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// Server address.
    pub addr: String,
    /// Server BackendKeyData process id.
    pub pid: i32,
    /// Server BackendKeyData secret.
    pub secret: Bytes,
}

/// The key handed to a client in place of its server's BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKey {
    /// Proxy-issued process id, unique among live sessions.
    pub pid: i32,
    /// Random secret.
    pub secret: i32,
}

/// A live session's secret and where its cancels go now.
type LiveKey = (i32, Arc<KeyState>);

/// Where a key's cancels go, and whether the session holds that connection now.
#[derive(Debug)]
struct KeyState {
    target: ArcSwap<CancelTarget>,
    // Under transaction pooling a connection the client gave back serves
    // someone else: a cancel must then go nowhere.
    linked: AtomicBool,
}

/// Live sessions' cancel keys.
///
/// A mutex, because it is touched only when a session starts or ends and
/// when a CancelRequest arrives, never per message.
#[derive(Debug)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<i32, LiveKey>>,
    next_pid: AtomicU32,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            next_pid: AtomicU32::new(rand::rng().random_range(1..1 << 30)),
        }
    }
}

/// Removes a session's key from the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    key: ClientKey,
    state: Arc<KeyState>,
}

impl Registration {
    /// The key to send the client.
    pub fn key(&self) -> ClientKey {
        self.key
    }

    /// Points the key at another server connection (transaction pooling
    /// moves a client between connections); lock-free.
    pub fn retarget(&self, target: CancelTarget) {
        self.state.target.store(Arc::new(target));
    }

    /// True when the key already points at backend `pid` on `addr`.
    pub fn points_at(&self, addr: &str, pid: i32) -> bool {
        let target = self.state.target.load();
        target.pid == pid && target.addr == addr
    }

    /// Marks whether the session holds its target connection right now;
    /// cancels for an unlinked session are dropped.
    pub fn set_linked(&self, linked: bool) {
        self.state.linked.store(linked, Ordering::Release);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, LiveKey>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues a fresh client key for a session served by `target`.
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> Registration {
        let secret: i32 = rand::rng().random();
        let mut sessions = self.lock();
        let pid = loop {
            let candidate = (self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x3fff_ffff) as i32;
            if candidate != 0 && !sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        let state = Arc::new(KeyState {
            target: ArcSwap::from_pointee(target),
            linked: AtomicBool::new(true),
        });
        sessions.insert(pid, (secret, Arc::clone(&state)));
        Registration {
            registry: Arc::clone(self),
            key: ClientKey { pid, secret },
            state,
        }
    }

    /// The target for a client's CancelRequest, if `pid` and `secret` match a live session.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let sessions = self.lock();
        let (expected, state) = sessions.get(&pid)?;
        let valid = secret == expected.to_be_bytes() && state.linked.load(Ordering::Acquire);
        valid.then(|| state.target.load().as_ref().clone())
    }
}

/// Sends a CancelRequest for `target` to its server and waits (briefly) for
/// the server to close, as libpq does.
pub async fn send_cancel(target: &CancelTarget) {
    let attempt = async {
        let mut stream = TcpStream::connect(&target.addr).await?;
        stream
            .write_all(&cancel_request(target.pid, &target.secret))
            .await?;
        let mut sink = [0u8; 1];
        let _ = stream.read(&mut sink).await?;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(addr = %target.addr, %error, "cancel request failed"),
        Err(_) => tracing::warn!(addr = %target.addr, "cancel request timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        CancelTarget {
            addr: "127.0.0.1:1".into(),
            pid: 42,
            secret: Bytes::from_static(&[1, 2, 3, 4]),
        }
    }

    #[test]
    fn key_maps_to_server_target_until_session_ends() {
        let registry = Arc::new(CancelRegistry::default());
        let registration = registry.register(target());
        let key = registration.key();
        let found = registry.lookup(key.pid, &key.secret.to_be_bytes()).unwrap();
        assert_eq!(found.pid, 42);
        drop(registration);
        assert!(
            registry
                .lookup(key.pid, &key.secret.to_be_bytes())
                .is_none()
        );
    }

    #[test]
    fn wrong_secret_finds_nothing() {
        let registry = Arc::new(CancelRegistry::default());
        let registration = registry.register(target());
        let key = registration.key();
        let wrong = key.secret.wrapping_add(1).to_be_bytes();
        assert!(registry.lookup(key.pid, &wrong).is_none());
        assert!(registry.lookup(key.pid, &[1, 2]).is_none());
    }

    #[test]
    fn unlinked_session_cancels_nothing() {
        let registry = Arc::new(CancelRegistry::default());
        let registration = registry.register(target());
        let key = registration.key();
        registration.set_linked(false);
        assert!(
            registry
                .lookup(key.pid, &key.secret.to_be_bytes())
                .is_none()
        );
        registration.set_linked(true);
        assert!(
            registry
                .lookup(key.pid, &key.secret.to_be_bytes())
                .is_some()
        );
    }

    #[test]
    fn live_sessions_get_distinct_pids() {
        let registry = Arc::new(CancelRegistry::default());
        let a = registry.register(target());
        let b = registry.register(target());
        assert_ne!(a.key().pid, b.key().pid);
    }
}
