//! Handing a watcher's [`Claims`] to the topology builder: only changes are
//! published, and each change is logged once.
//!
//! Every control-plane watcher (Patroni, Kubernetes) polls or streams far
//! more often than the cluster changes; publishing only differences keeps
//! the builder from re-verifying an unchanged view and keeps the log to one
//! line per event an operator would act on.

use tokio::sync::watch;

use super::claims::{ClaimedRole, Claims};

/// Publishes `claims` on `tx` if they differ from what it holds, and logs
/// the change once (info level, structured fields). Returns whether
/// anything was published.
pub fn publish_if_changed(tx: &watch::Sender<Option<Claims>>, claims: Claims) -> bool {
    let mut previous_primary = None;
    let changed = tx.send_if_modified(|current| {
        if current.as_ref() == Some(&claims) {
            return false;
        }
        previous_primary = current
            .as_ref()
            .and_then(|c| c.claimed_primary())
            .map(|m| m.name.clone());
        *current = Some(claims.clone());
        true
    });
    if changed {
        tracing::info!(
            source = claims.source,
            primary = claims.claimed_primary().map(|m| m.name.as_str()),
            primary_addr = claims.claimed_primary().map(|m| m.addr.as_str()),
            previous_primary = previous_primary.as_deref(),
            hold_writes = claims.hold_writes,
            members = %summary(&claims),
            "control-plane claims changed"
        );
    }
    changed
}

/// `name=addr/role/ready|not-ready[/tlN]` per member, comma separated: the
/// whole view on one log line.
pub fn summary(claims: &Claims) -> String {
    claims
        .members
        .iter()
        .map(|m| {
            let role = match m.role {
                ClaimedRole::Primary => "primary",
                ClaimedRole::Replica => "replica",
                ClaimedRole::Unknown => "unknown",
            };
            let ready = if m.ready { "ready" } else { "not-ready" };
            match m.timeline {
                Some(tl) => format!("{}={}/{role}/{ready}/tl{tl}", m.name, m.addr),
                None => format!("{}={}/{role}/{ready}", m.name, m.addr),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::MemberClaim;

    fn claims(primary: &str) -> Claims {
        Claims {
            source: "test",
            members: vec![MemberClaim {
                name: primary.into(),
                addr: format!("{primary}:5432"),
                role: ClaimedRole::Primary,
                timeline: Some(1),
                ready: true,
            }],
            hold_writes: false,
        }
    }

    #[test]
    fn only_changes_are_published() {
        let (tx, rx) = watch::channel(None);
        assert!(publish_if_changed(&tx, claims("a")));
        assert!(rx.has_changed().unwrap());
        let mut rx = rx;
        rx.borrow_and_update();
        assert!(!publish_if_changed(&tx, claims("a")));
        assert!(!rx.has_changed().unwrap());
        assert!(publish_if_changed(&tx, claims("b")));
        assert_eq!(
            rx.borrow()
                .as_ref()
                .unwrap()
                .claimed_primary()
                .unwrap()
                .name,
            "b"
        );
    }

    #[test]
    fn summary_names_every_member() {
        assert_eq!(summary(&claims("a")), "a=a:5432/primary/ready/tl1");
    }
}
