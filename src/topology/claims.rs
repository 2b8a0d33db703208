//! What a control plane says about the cluster, before the probe verifies it.
//!
//! Watchers (static config, Patroni, Kubernetes) publish [`Claims`]; the
//! topology builder checks every claim against the nodes themselves before
//! a node is given writes.

/// The role a control plane gives a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimedRole {
    /// Said to accept writes.
    Primary,
    /// Said to be a streaming replica.
    Replica,
    /// Known member whose role the control plane does not (yet) state.
    Unknown,
}

/// One member as a control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberClaim {
    /// Stable name (Patroni member name, CNPG pod name, or the address).
    pub name: String,
    /// `host:port` the proxy connects to.
    pub addr: String,
    /// The role the control plane gives it.
    pub role: ClaimedRole,
    /// Timeline the control plane reports, when it reports one.
    pub timeline: Option<u32>,
    /// False when the control plane says the member is not serving
    /// (Pod not Ready, Patroni state not running/streaming).
    pub ready: bool,
}

/// A control plane's whole view at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Which watcher produced it ("static", "patroni", "kubernetes").
    pub source: &'static str,
    /// Every member the control plane knows.
    pub members: Vec<MemberClaim>,
    /// The control plane says a failover or switchover is under way:
    /// writes are held even if a primary is claimed.
    pub hold_writes: bool,
}

impl Claims {
    /// The member claimed as primary, if exactly one is.
    pub fn claimed_primary(&self) -> Option<&MemberClaim> {
        let mut primaries = self
            .members
            .iter()
            .filter(|m| m.role == ClaimedRole::Primary);
        let first = primaries.next()?;
        primaries.next().is_none().then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(addr: &str, role: ClaimedRole) -> MemberClaim {
        MemberClaim {
            name: addr.into(),
            addr: addr.into(),
            role,
            timeline: None,
            ready: true,
        }
    }

    #[test]
    fn two_claimed_primaries_name_none() {
        let claims = Claims {
            source: "test",
            members: vec![
                member("a:1", ClaimedRole::Primary),
                member("b:1", ClaimedRole::Primary),
            ],
            hold_writes: false,
        };
        assert!(claims.claimed_primary().is_none());
        let one = Claims {
            members: vec![
                member("a:1", ClaimedRole::Primary),
                member("b:1", ClaimedRole::Replica),
            ],
            ..claims
        };
        assert_eq!(one.claimed_primary().map(|m| m.addr.as_str()), Some("a:1"));
    }
}
