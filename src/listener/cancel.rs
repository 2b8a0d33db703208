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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::startup::cancel_request;

/// Where a cancel for one client session must go: one server
/// connection's address and BackendKeyData, built once per connection.
#[derive(Debug)]
pub struct CancelTarget {
    /// Server address.
    pub addr: String,
    /// Server BackendKeyData process id.
    pub pid: i32,
    /// Server BackendKeyData secret.
    pub secret: Bytes,
    /// Unique in the process and never reused: what a session's key
    /// records of the connection serving it.
    id: u64,
    /// In its registry's directory (listed by the first session linked to it).
    listed: AtomicBool,
}

/// The next [`CancelTarget::id`]; 0 means "no connection".
static NEXT_TARGET_ID: AtomicU64 = AtomicU64::new(1);

impl CancelTarget {
    /// The target for a server connection at `addr` with this BackendKeyData.
    pub fn new(addr: String, pid: i32, secret: Bytes) -> Self {
        Self {
            addr,
            pid,
            secret,
            id: NEXT_TARGET_ID.fetch_add(1, Ordering::Relaxed),
            listed: AtomicBool::new(false),
        }
    }
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

/// Where a key's cancels go now.
#[derive(Debug)]
struct KeyState {
    /// The [`CancelTarget::id`] of the connection the session holds, 0
    /// when it holds none: under transaction pooling a connection the
    /// client gave back serves someone else, and a cancel must go nowhere.
    serving: AtomicU64,
}

/// Server connections' targets by id, for looking up what a key's
/// `serving` names. Entries of closed connections are dropped in batches
/// (see [`CancelRegistry::list`]).
#[derive(Debug, Default)]
struct Directory {
    by_id: HashMap<u64, Weak<CancelTarget>>,
    /// Size at which closed connections' entries are dropped next.
    prune_at: usize,
}

/// The least `Directory::prune_at`.
const MIN_PRUNE_AT: usize = 64;

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
/// Mutexes, because they are touched only when a session starts or ends,
/// when a server connection is first linked to a session, and when a
/// CancelRequest arrives; never per message or per transaction.
#[derive(Debug)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<i32, LiveKey>>,
    targets: Mutex<Directory>,
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

    /// Points the key at the server connection the session holds now
    /// (transaction pooling moves a client between connections).
    ///
    /// One atomic store: no lock, no allocation, no reference count.
    /// Only a connection's first link in the process lists it in the
    /// registry's directory, under its lock.
    pub fn link(&self, target: &Arc<CancelTarget>) {
        if !target.listed.load(Ordering::Acquire) {
            self.registry.list(target);
        }
        // Release: a lookup that sees the id finds it listed.
        self.state.serving.store(target.id, Ordering::Release);
    }

    /// The session holds no server connection: its cancels go nowhere.
    pub fn unlink(&self) {
        self.state.serving.store(0, Ordering::Release);
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
            targets: Mutex::new(Directory::default()),
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

    /// Lists `target` in the directory, and drops the entries of closed
    /// connections once the directory has doubled since the last time
    /// (so that it stays within twice the open connections, plus a few).
    fn list(&self, target: &Arc<CancelTarget>) {
        let mut directory = self.directory();
        directory.by_id.insert(target.id, Arc::downgrade(target));
        target.listed.store(true, Ordering::Release);
        if directory.by_id.len() >= directory.prune_at {
            directory.by_id.retain(|_, entry| entry.strong_count() > 0);
            directory.prune_at = (directory.by_id.len() * 2).max(MIN_PRUNE_AT);
        }
    }

    fn directory(&self) -> MutexGuard<'_, Directory> {
        // As for `lock`: each critical section leaves the map whole.
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, LiveKey>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues a fresh client key for a session, linked to `target` (the
    /// connection serving it) when there is one.
    pub fn register(self: &Arc<Self>, target: Option<&Arc<CancelTarget>>) -> Registration {
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
            serving: AtomicU64::new(0),
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
        drop(sessions);
        let registration = Registration {
            registry: Arc::clone(self),
            key: ClientKey { pid, secret },
            state,
        };
        if let Some(target) = target {
            registration.link(target);
        }
        registration
    }

    /// The target for a client's CancelRequest, if `pid` and `secret`
    /// match a live session that holds a server connection.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<Arc<CancelTarget>> {
        let serving = {
            let sessions = self.lock();
            let (expected, state) = sessions.get(&pid)?;
            if secret != expected.to_be_bytes() {
                return None;
            }
            // Acquire: pairs with `link`'s store, after the listing.
            state.serving.load(Ordering::Acquire)
        };
        if serving == 0 {
            return None;
        }
        self.directory().by_id.get(&serving)?.upgrade()
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

    fn target() -> Arc<CancelTarget> {
        Arc::new(CancelTarget::new(
            "127.0.0.1:1".into(),
            42,
            Bytes::from_static(&[1, 2, 3, 4]),
        ))
    }

    #[test]
    fn key_maps_to_server_target_until_session_ends() {
        let registry = Arc::new(CancelRegistry::default());
        let served_by = target();
        let registration = registry.register(Some(&served_by));
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
        let served_by = target();
        let registration = registry.register(Some(&served_by));
        let key = registration.key();
        let wrong = key.secret.wrapping_add(1).to_be_bytes();
        assert!(registry.lookup(key.pid, &wrong).is_none());
        assert!(registry.lookup(key.pid, &[1, 2]).is_none());
    }

    #[test]
    fn unlinked_session_cancels_nothing() {
        let registry = Arc::new(CancelRegistry::default());
        let first = target();
        let registration = registry.register(Some(&first));
        let key = registration.key();
        registration.unlink();
        assert!(
            registry
                .lookup(key.pid, &key.secret.to_be_bytes())
                .is_none()
        );
        registration.link(&first);
        assert!(
            registry
                .lookup(key.pid, &key.secret.to_be_bytes())
                .is_some()
        );
    }

    #[test]
    fn a_key_follows_the_connection_it_is_linked_to() {
        let registry = Arc::new(CancelRegistry::default());
        let registration = registry.register(None);
        let key = registration.key();
        let secret = key.secret.to_be_bytes();
        assert!(
            registry.lookup(key.pid, &secret).is_none(),
            "linked to nothing yet"
        );
        let first = target();
        let second = Arc::new(CancelTarget::new("127.0.0.1:2".into(), 43, Bytes::new()));
        registration.link(&first);
        assert_eq!(registry.lookup(key.pid, &secret).unwrap().pid, 42);
        registration.link(&second);
        let found = registry.lookup(key.pid, &secret).unwrap();
        assert_eq!((found.addr.as_str(), found.pid), ("127.0.0.1:2", 43));
        registration.link(&first);
        assert_eq!(registry.lookup(key.pid, &secret).unwrap().pid, 42);
    }

    #[test]
    fn closed_connections_cancel_nothing_and_leave_the_directory() {
        let registry = Arc::new(CancelRegistry::default());
        let registration = registry.register(None);
        let key = registration.key();
        let closed = target();
        registration.link(&closed);
        drop(closed);
        assert!(
            registry
                .lookup(key.pid, &key.secret.to_be_bytes())
                .is_none()
        );
        // Many connections opened and closed: the directory keeps about
        // twice those still open.
        let open: Vec<_> = (0..10).map(|_| target()).collect();
        for _ in 0..1_000 {
            let short_lived = target();
            registration.link(&short_lived);
        }
        for kept in &open {
            registration.link(kept);
        }
        let listed = registry.directory().by_id.len();
        assert!(listed <= 2 * open.len() + MIN_PRUNE_AT, "{listed} entries");
        assert_eq!(
            registry
                .lookup(key.pid, &key.secret.to_be_bytes())
                .unwrap()
                .pid,
            42
        );
    }

    #[test]
    fn keys_name_their_peer_and_the_forwarded_flag_is_masked() {
        let registry = Arc::new(CancelRegistry::for_peer(513));
        let served_by = target();
        let registration = registry.register(Some(&served_by));
        let key = registration.key();
        assert!(key.pid > 0);
        assert_eq!(peer_of(key.pid), 513);
        assert_eq!(peer_of(key.pid | FORWARDED), 513);
    }

    #[test]
    fn live_sessions_get_distinct_pids() {
        let registry = Arc::new(CancelRegistry::default());
        let a = registry.register(None);
        let b = registry.register(None);
        assert_ne!(a.key().pid, b.key().pid);
    }
}
