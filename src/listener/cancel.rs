//! CancelRequest routing: clients get proxy-issued keys, mapped here to the
//! key of the server connection that serves them.
//!
//! Key layout (the BackendKeyData process id; the secret is 32 random bits
//! per session): without peers, a 30-bit session number. With `[peers]`,
//! bit 31 is 0, bits 30..15 are this pod's peer id and bits 14..0 the
//! session number, so any pod can tell whose session a key names
//! ([`crate::peers`] forwards it there). Bit 31 set marks a request one
//! pod forwarded to another, which is never forwarded again.

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

/// Bits of the session number in a key that carries a peer id.
pub const SESSION_BITS: u32 = 15;
/// Set in the process id of a CancelRequest one peer forwarded to another.
pub const FORWARDED: i32 = i32::MIN;

/// The peer id a key's process id names (0: a key without one).
pub fn peer_of(pid: i32) -> u16 {
    // Bits 30..15 after clearing the forwarded flag: at most 16 bits.
    ((pid & !FORWARDED) >> SESSION_BITS) as u16
}

/// Live sessions' cancel keys.
///
/// A mutex, because it is touched only when a session starts or ends and
/// when a CancelRequest arrives, never per message.
#[derive(Debug)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<i32, LiveKey>>,
    next_pid: AtomicU32,
    /// This pod's peer id, in every key it issues (0: none).
    peer: u16,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self::for_peer(0)
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
    /// moves a client between connections); lock-free, and allocates
    /// nothing: the connection built its target once.
    pub fn retarget(&self, target: &Arc<CancelTarget>) {
        if !Arc::ptr_eq(&self.state.target.load(), target) {
            self.state.target.store(Arc::clone(target));
        }
    }

    /// Marks whether the session holds its target connection right now;
    /// cancels for an unlinked session are dropped.
    pub fn set_linked(&self, linked: bool) {
        self.state.linked.store(linked, Ordering::Release);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.registry.lock();
        // An unregistered key (space full) must not remove another session.
        if sessions
            .get(&self.key.pid)
            .is_some_and(|(_, state)| Arc::ptr_eq(state, &self.state))
        {
            sessions.remove(&self.key.pid);
        }
    }
}

impl CancelRegistry {
    /// A registry whose keys name peer `peer` (0: keys without a peer id).
    pub fn for_peer(peer: u16) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            next_pid: AtomicU32::new(rand::rng().random_range(1..1 << 30)),
            peer,
        }
    }

    /// The peer id this registry's keys carry.
    pub fn peer(&self) -> u16 {
        self.peer
    }

    /// The process id for session number `n`.
    fn pid_for(&self, n: u32) -> i32 {
        if self.peer == 0 {
            return (n & 0x3fff_ffff) as i32;
        }
        ((u32::from(self.peer) << SESSION_BITS) | (n & ((1 << SESSION_BITS) - 1))) as i32
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, LiveKey>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues a fresh client key for a session served by `target`.
    pub fn register(self: &Arc<Self>, target: Arc<CancelTarget>) -> Registration {
        let secret: i32 = rand::rng().random();
        let mut sessions = self.lock();
        // Bounded: with peers the session space is 2^15 and the client
        // limit (validated below it) keeps it from filling; should it be
        // full anyway, the session gets a key that cancels nothing.
        let free = (0..1u32 << SESSION_BITS).find_map(|_| {
            let candidate = self.pid_for(self.next_pid.fetch_add(1, Ordering::Relaxed));
            (candidate & ((1 << SESSION_BITS) - 1) != 0 && !sessions.contains_key(&candidate))
                .then_some(candidate)
        });
        let state = Arc::new(KeyState {
            target: ArcSwap::new(target),
            linked: AtomicBool::new(true),
        });
        let pid = match free {
            Some(pid) => {
                sessions.insert(pid, (secret, Arc::clone(&state)));
                pid
            }
            None => {
                tracing::warn!("cancel key space full; this session cannot be cancelled");
                self.pid_for(0)
            }
        };
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
    send_cancel_request(&target.addr, target.pid, &target.secret).await;
}

/// Sends a CancelRequest for (`pid`, `secret`) to `addr` (a server, or a
/// peer's client port) and waits up to 5 s for it to close the connection.
pub async fn send_cancel_request(addr: &str, pid: i32, secret: &[u8]) {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(&cancel_request(pid, secret)).await?;
        let mut sink = [0u8; 1];
        let _ = stream.read(&mut sink).await?;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(addr, %error, "cancel request failed"),
        Err(_) => tracing::warn!(addr, "cancel request timed out"),
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
        let registration = registry.register(Arc::new(target()));
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
        let registration = registry.register(Arc::new(target()));
        let key = registration.key();
        let wrong = key.secret.wrapping_add(1).to_be_bytes();
        assert!(registry.lookup(key.pid, &wrong).is_none());
        assert!(registry.lookup(key.pid, &[1, 2]).is_none());
    }

    #[test]
    fn unlinked_session_cancels_nothing() {
        let registry = Arc::new(CancelRegistry::default());
        let registration = registry.register(Arc::new(target()));
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
    fn keys_name_their_peer_and_the_forwarded_flag_is_masked() {
        let registry = Arc::new(CancelRegistry::for_peer(513));
        let registration = registry.register(Arc::new(target()));
        let key = registration.key();
        assert!(key.pid > 0);
        assert_eq!(peer_of(key.pid), 513);
        assert_eq!(peer_of(key.pid | FORWARDED), 513);
    }

    #[test]
    fn live_sessions_get_distinct_pids() {
        let registry = Arc::new(CancelRegistry::default());
        let a = registry.register(Arc::new(target()));
        let b = registry.register(Arc::new(target()));
        assert_ne!(a.key().pid, b.key().pid);
    }
}
