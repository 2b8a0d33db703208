//! CloudNativePG objects (Cluster status, instance Pods) and their mapping
//! to [`Claims`]. Pure functions: the watcher feeds them what the API
//! server sends.
//!
//! Field names follow CloudNativePG 1.27–1.30 (`api/v1/cluster_types.go`,
//! `pkg/utils/labels_annotations.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use super::error::KubernetesError;
use crate::topology::{ClaimedRole, Claims, MemberClaim};

/// [`Claims::source`] of every claim this watcher makes.
pub const SOURCE: &str = "kubernetes";

/// The `targetPrimary` value CNPG writes while it picks a failover target.
pub const PENDING_FAILOVER: &str = "pending";

/// Pod label naming the instance's role (`primary`, `replica`, `unhealthy`).
pub const ROLE_LABEL: &str = "cnpg.io/instanceRole";
/// The role label of CNPG before 1.21 (still written alongside).
pub const LEGACY_ROLE_LABEL: &str = "role";
/// Pod label naming the Cluster an instance belongs to.
pub const CLUSTER_LABEL: &str = "cnpg.io/cluster";
/// Pod label telling instances (`instance`) from poolers and jobs.
pub const POD_ROLE_LABEL: &str = "cnpg.io/podRole";
/// Pod label holding the instance name (absent on job pods).
pub const INSTANCE_NAME_LABEL: &str = "cnpg.io/instanceName";

/// The parts of a CNPG `Cluster`'s `status` the proxy uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The instance that is primary now (written by that instance's
    /// manager after promotion and checkpoint).
    #[serde(default)]
    pub current_primary: Option<String>,
    /// The instance the operator wants as primary; [`PENDING_FAILOVER`]
    /// while a failover target is being chosen.
    #[serde(default)]
    pub target_primary: Option<String>,
    /// Human-readable phase (`Cluster in healthy state`, `Failing over`, ...).
    /// Informational only: it stays "Failing over" until every instance is
    /// Ready again.
    #[serde(default)]
    pub phase: Option<String>,
    /// The primary's timeline.
    #[serde(default, rename = "timelineID")]
    pub timeline_id: Option<u32>,
    /// Instance names by health (`healthy`, `replicating`, `failed`).
    #[serde(default)]
    pub instances_status: BTreeMap<String, Vec<String>>,
    /// What each instance manager last reported.
    #[serde(default)]
    pub instances_reported_state: BTreeMap<String, ReportedState>,
}

impl ClusterStatus {
    /// CNPG says a failover or switchover is under way: `currentPrimary`
    /// and `targetPrimary` differ (or either is unknown).
    pub fn primary_changing(&self) -> bool {
        match (&self.current_primary, &self.target_primary) {
            (Some(current), Some(target)) => current != target,
            _ => true,
        }
    }
}

/// `status.instancesReportedState.<instance>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedState {
    /// Pod IP the instance reported from.
    #[serde(default)]
    pub ip: Option<String>,
    /// Whether the instance said it is the primary.
    #[serde(default)]
    pub is_primary: bool,
    /// Its timeline (from `pg_control_checkpoint()`).
    #[serde(default, rename = "timeLineID")]
    pub timeline_id: Option<u32>,
}

/// Reads `status` of a Cluster object given as JSON (the whole object, or
/// the non-metadata part of a dynamic object). A Cluster without status
/// (just created) has an empty one.
pub fn cluster_status(object: &serde_json::Value) -> Result<ClusterStatus, KubernetesError> {
    match object.get("status") {
        None | Some(serde_json::Value::Null) => Ok(ClusterStatus::default()),
        Some(status) => ClusterStatus::deserialize(status).map_err(KubernetesError::ClusterStatus),
    }
}

/// One CNPG instance Pod, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePod {
    /// Pod name = instance name (`pg-1`).
    pub name: String,
    /// `status.podIP`, once assigned.
    pub ip: Option<String>,
    /// `cnpg.io/instanceRole` (or the legacy `role`) label.
    pub role_label: Option<String>,
    /// Ready condition is True and the Pod is not being deleted.
    pub ready: bool,
}

/// The instance Pod view of `pod`, or `None` when it is no instance (a
/// Job or Pooler pod that shares the `cnpg.io/cluster` label).
pub fn instance_pod(pod: &Pod) -> Option<InstancePod> {
    let labels = pod.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
    let is_instance = match label(POD_ROLE_LABEL) {
        Some(role) => role == "instance",
        // CNPG before podRole: instances carry instanceName, jobs do not.
        None => label(INSTANCE_NAME_LABEL).is_some(),
    };
    if !is_instance {
        return None;
    }
    let status = pod.status.as_ref();
    let ready_condition = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    Some(InstancePod {
        name: pod.metadata.name.clone()?,
        ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        role_label: label(ROLE_LABEL).or_else(|| label(LEGACY_ROLE_LABEL)),
        ready: ready_condition && pod.metadata.deletion_timestamp.is_none(),
    })
}

/// Maps the Cluster status and its instance Pods to claims; members are
/// `podIP:port`, Pods without an IP are left out.
///
/// - The primary is `status.currentPrimary`, claimed only while it equals
///   `status.targetPrimary` (CNPG writes `currentPrimary` after the new
///   primary is promoted and checkpointed, which is before its Pod is
///   relabelled).
/// - Writes are held while the two differ (failover with `pending`, or a
///   switchover), and while the primary's Pod is missing or not Ready (what
///   empties CNPG's own `-rw` Service).
/// - Other Pods are replicas when labelled `replica` (or unlabelled);
///   `unhealthy` or a stale `primary` label gives an unknown role.
pub fn to_claims(status: &ClusterStatus, pods: &[InstancePod], port: u16) -> Claims {
    let changing = status.primary_changing();
    let current = status.current_primary.as_deref();
    let mut members: Vec<MemberClaim> = pods
        .iter()
        .filter_map(|pod| {
            let ip = pod.ip.as_deref()?;
            let is_current = current == Some(pod.name.as_str());
            let role = match (is_current && !changing, pod.role_label.as_deref()) {
                (true, _) => ClaimedRole::Primary,
                (false, Some("replica") | None) if !is_current => ClaimedRole::Replica,
                _ => ClaimedRole::Unknown,
            };
            let reported = status.instances_reported_state.get(&pod.name);
            let timeline =
                reported
                    .and_then(|r| r.timeline_id)
                    .or(if role == ClaimedRole::Primary {
                        status.timeline_id
                    } else {
                        None
                    });
            Some(MemberClaim {
                name: pod.name.clone(),
                addr: socket_addr(ip, port),
                role,
                timeline,
                ready: pod.ready,
            })
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut claims = Claims {
        source: SOURCE,
        members,
        hold_writes: false,
    };
    claims.hold_writes = changing || !claims.claimed_primary().is_some_and(|p| p.ready);
    claims
}

/// `ip:port`, bracketing IPv6 addresses.
fn socket_addr(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/tests/fixtures/cnpg/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn pods(name: &str) -> Vec<InstancePod> {
        let list = fixture(name);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| serde_json::from_value::<Pod>(item.clone()).unwrap())
            .filter_map(|pod| instance_pod(&pod))
            .collect()
    }

    fn claims(cluster: &str, pod_list: &str) -> Claims {
        to_claims(
            &cluster_status(&fixture(cluster)).unwrap(),
            &pods(pod_list),
            5432,
        )
    }

    fn role_of<'a>(claims: &'a Claims, name: &str) -> &'a MemberClaim {
        claims.members.iter().find(|m| m.name == name).unwrap()
    }

    #[test]
    fn healthy_cluster_claims_its_current_primary() {
        let status = cluster_status(&fixture("cluster-healthy.json")).unwrap();
        assert_eq!(status.current_primary.as_deref(), Some("pg-1"));
        assert_eq!(status.timeline_id, Some(1));
        assert_eq!(status.instances_status["healthy"].len(), 3);
        let c = claims("cluster-healthy.json", "pods-healthy.json");
        assert_eq!(c.source, "kubernetes");
        assert!(!c.hold_writes);
        let p = c.claimed_primary().unwrap();
        assert_eq!(
            (p.name.as_str(), p.addr.as_str()),
            ("pg-1", "127.0.1.1:5432")
        );
        assert_eq!(p.timeline, Some(1));
        assert_eq!(role_of(&c, "pg-2").role, ClaimedRole::Replica);
        assert!(c.members.iter().all(|m| m.ready));
    }

    #[test]
    fn pending_failover_holds_writes() {
        let c = claims(
            "cluster-failover-pending.json",
            "pods-failover-pending.json",
        );
        assert!(c.hold_writes);
        assert!(c.claimed_primary().is_none());
        let old = role_of(&c, "pg-1");
        assert_eq!((old.role, old.ready), (ClaimedRole::Unknown, false));
    }

    #[test]
    fn switchover_in_progress_holds_writes() {
        let c = claims("cluster-switchover.json", "pods-healthy.json");
        assert!(c.hold_writes);
        assert!(c.claimed_primary().is_none());
    }

    #[test]
    fn finished_failover_claims_the_new_primary_on_its_new_timeline() {
        let c = claims("cluster-failover-done.json", "pods-after-failover.json");
        assert!(!c.hold_writes);
        let p = c.claimed_primary().unwrap();
        assert_eq!(
            (p.name.as_str(), p.addr.as_str()),
            ("pg-2", "127.0.1.2:5432")
        );
        assert_eq!(p.timeline, Some(2));
        let old = role_of(&c, "pg-1");
        assert_eq!((old.role, old.ready), (ClaimedRole::Replica, false));
    }

    #[test]
    fn current_primary_is_claimed_before_its_pod_is_relabelled() {
        // Step 11 of the failover: currentPrimary = targetPrimary = pg-2,
        // Pods still labelled as during the failover.
        let c = claims("cluster-failover-done.json", "pods-failover-pending.json");
        assert_eq!(c.claimed_primary().unwrap().name, "pg-2");
    }

    #[test]
    fn a_not_ready_primary_pod_holds_writes() {
        let mut list = pods("pods-healthy.json");
        list[0].ready = false;
        let status = cluster_status(&fixture("cluster-healthy.json")).unwrap();
        let c = to_claims(&status, &list, 5432);
        assert_eq!(c.claimed_primary().unwrap().name, "pg-1");
        assert!(c.hold_writes);
    }

    #[test]
    fn job_and_pooler_pods_are_no_instances() {
        let mut pod: Pod =
            serde_json::from_value(fixture("pods-healthy.json")["items"][0].clone()).unwrap();
        assert!(instance_pod(&pod).is_some());
        let labels = pod.metadata.labels.as_mut().unwrap();
        labels.insert(POD_ROLE_LABEL.into(), "pooler".into());
        assert!(instance_pod(&pod).is_none());
        let labels = pod.metadata.labels.as_mut().unwrap();
        labels.remove(POD_ROLE_LABEL);
        labels.remove(INSTANCE_NAME_LABEL);
        assert!(instance_pod(&pod).is_none(), "a job pod");
    }

    #[test]
    fn pods_without_ip_are_left_out_and_ports_follow_config() {
        let mut list = pods("pods-healthy.json");
        list[2].ip = None;
        let status = cluster_status(&fixture("cluster-healthy.json")).unwrap();
        let c = to_claims(&status, &list, 6000);
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.claimed_primary().unwrap().addr, "127.0.1.1:6000");
        assert_eq!(socket_addr("fd00::1", 5432), "[fd00::1]:5432");
    }

    #[test]
    fn missing_status_is_empty_and_holds_writes() {
        let status = cluster_status(&serde_json::json!({"spec": {}})).unwrap();
        assert!(status.primary_changing());
        assert!(to_claims(&status, &pods("pods-healthy.json"), 5432).hold_writes);
        assert!(cluster_status(&serde_json::json!({"status": {"currentPrimary": 3}})).is_err());
    }
}
