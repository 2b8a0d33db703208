//! The logged-in clients, for `SHOW CLIENTS` and the client gauges.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// What is known about one logged-in client.
#[derive(Debug)]
pub struct ClientInfo {
    /// The client's `user`.
    pub user: String,
    /// The client's `database`.
    pub database: String,
    /// The client's address.
    pub addr: SocketAddr,
    /// When the client logged in.
    pub connected_at: SystemTime,
    /// The client's `application_name`, if it sent one.
    pub application_name: String,
    /// The node a session-pooled client's server connection goes to; `None`
    /// in transaction pooling and for the admin console.
    pub session_node: Option<String>,
    /// True for an admin console session.
    pub admin: bool,
    /// Whether, and since when, the client waits for a server connection.
    pub wait: ClientWait,
}

/// Since when a client waits for a server connection, if it does: two
/// atomic stores and a clock read per checkout, no lock.
#[derive(Debug)]
pub struct ClientWait {
    /// The clock the start is measured on.
    origin: Instant,
    /// Microseconds from `origin` to the wait's start, plus one; 0 when
    /// not waiting.
    since: AtomicU64,
}

impl Default for ClientWait {
    fn default() -> Self {
        ClientWait {
            origin: Instant::now(),
            since: AtomicU64::new(0),
        }
    }
}

impl ClientWait {
    /// The client started waiting for a server connection at `since`
    /// (a clock read its caller made anyway).
    pub fn begin_at(&self, since: Instant) {
        let micros = u64::try_from(since.saturating_duration_since(self.origin).as_micros())
            .unwrap_or(u64::MAX - 1);
        self.since.store(micros + 1, Ordering::Relaxed);
    }

    /// The client has its connection (or gave up).
    pub fn end(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// How long the client has been waiting; `None` when it is not.
    pub fn waited(&self) -> Option<Duration> {
        let since = self.since.load(Ordering::Relaxed).checked_sub(1)?;
        Some(
            self.origin
                .elapsed()
                .saturating_sub(Duration::from_micros(since)),
        )
    }
}

/// Every logged-in client. Touched at login and logout only (a std mutex:
/// nothing awaits while it is held, and no message passes through it).
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
}

impl Clients {
    /// Records a client until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, info: ClientInfo) -> ClientGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(info);
        self.lock().insert(id, Arc::clone(&info));
        ClientGuard {
            clients: Arc::clone(self),
            id,
            info,
        }
    }

    /// Logged-in clients, the admin console's included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nobody is logged in.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every client with its id, ordered by id (login order).
    pub fn all(&self) -> Vec<(u64, Arc<ClientInfo>)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, info)| (*id, Arc::clone(info)))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// Session-pooled clients per node (each holds one server connection).
    pub fn session_mode_by_node(&self) -> HashMap<String, usize> {
        let mut by_node = HashMap::new();
        for info in self.lock().values() {
            if let Some(node) = &info.session_node {
                *by_node.entry(node.clone()).or_insert(0) += 1;
            }
        }
        by_node
    }

    // Inserting and removing cannot be left half done by a panic, so a
    // poisoned lock still guards a valid map.
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ClientInfo>>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A registered client; dropping it removes the client.
#[derive(Debug)]
pub struct ClientGuard {
    clients: Arc<Clients>,
    id: u64,
    info: Arc<ClientInfo>,
}

impl ClientGuard {
    /// The listed client's record (its session marks its waits there).
    pub fn info(&self) -> Arc<ClientInfo> {
        Arc::clone(&self.info)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_listed_until_its_guard_drops() {
        let clients = Arc::new(Clients::default());
        let info = ClientInfo {
            user: "app".into(),
            database: "appdb".into(),
            addr: "127.0.0.1:5000".parse().unwrap(),
            connected_at: SystemTime::now(),
            application_name: String::new(),
            session_node: Some("n:1".into()),
            admin: false,
            wait: ClientWait::default(),
        };
        let guard = clients.register(info);
        assert_eq!(clients.len(), 1);
        assert_eq!(clients.session_mode_by_node()["n:1"], 1);
        drop(guard);
        assert!(clients.is_empty());
    }

    #[test]
    fn a_wait_is_timed_until_it_ends() {
        let wait = ClientWait::default();
        assert_eq!(wait.waited(), None);
        wait.begin_at(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let waited = wait.waited().unwrap();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        wait.end();
        assert_eq!(wait.waited(), None);
    }
}
