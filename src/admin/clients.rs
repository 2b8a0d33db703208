//! The logged-in clients, for `SHOW CLIENTS` and the client gauges.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

/// What is known about one logged-in client.
#[derive(Debug, Clone)]
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
        self.lock().insert(id, Arc::new(info));
        ClientGuard {
            clients: Arc::clone(self),
            id,
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
        };
        let guard = clients.register(info);
        assert_eq!(clients.len(), 1);
        assert_eq!(clients.session_mode_by_node()["n:1"], 1);
        drop(guard);
        assert!(clients.is_empty());
    }
}
