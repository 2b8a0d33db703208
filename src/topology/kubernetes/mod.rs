//! The CloudNativePG watcher: follows one CNPG `Cluster`
//! (`postgresql.cnpg.io/v1`) and its instance Pods through the Kubernetes
//! API and publishes them as [`Claims`].
//!
//! Two list+watch streams (kube's `watcher`, with its exponential backoff):
//! the Cluster object, selected by `metadata.name`, and the Pods labelled
//! `cnpg.io/cluster=<name>` (Job and Pooler pods are filtered out). A watch
//! whose resourceVersion expired (`410 Gone`) is relisted by kube; a watch
//! the server ends is resumed from the last resourceVersion. Claims are
//! published once both initial lists are in, then on every change.
//! [`cnpg::to_claims`] documents the mapping.
//!
//! Credentials: `kube::Config::infer` — the in-cluster service account when
//! running in a Pod, else `$KUBECONFIG` / `~/.kube/config`. RBAC needed:
//! `get`, `list`, `watch` on `clusters.postgresql.cnpg.io` and `pods` in the
//! namespace (`config/rbac.yaml`).

pub mod cnpg;
mod error;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use cnpg::{ClusterStatus, InstancePod, SOURCE, cluster_status, instance_pod, to_claims};
pub use error::KubernetesError;

use super::claims::Claims;
use super::publish::publish_if_changed;
use crate::config::KubernetesConfig;

/// Longest wait for the credentials (an exec plugin in a kubeconfig can hang).
const CONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the CNPG watcher with credentials from the environment (in-cluster
/// or kubeconfig) until `shutdown` is cancelled or every receiver of `tx`
/// is gone.
pub async fn run(
    config: KubernetesConfig,
    tx: watch::Sender<Option<Claims>>,
    shutdown: CancellationToken,
) -> Result<(), KubernetesError> {
    if config.cluster.is_empty() {
        return Err(KubernetesError::NoCluster);
    }
    let inferred = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        inferred = tokio::time::timeout(CONFIG_TIMEOUT, kube::Config::infer()) => inferred,
    };
    let kube_config = inferred
        .map_err(|_| KubernetesError::ConfigTimeout(CONFIG_TIMEOUT))?
        .map_err(KubernetesError::Config)?;
    let client = Client::try_from(kube_config).map_err(KubernetesError::Client)?;
    run_with_client(client, config, tx, shutdown).await
}

/// Like [`run`], with a ready client (tests point one at a fake API server).
pub async fn run_with_client(
    client: Client,
    config: KubernetesConfig,
    tx: watch::Sender<Option<Claims>>,
    shutdown: CancellationToken,
) -> Result<(), KubernetesError> {
    if config.cluster.is_empty() {
        return Err(KubernetesError::NoCluster);
    }
    let gvk = GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster");
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &config.namespace,
        &ApiResource::from_gvk(&gvk),
    );
    let pods: Api<Pod> = Api::namespaced(client, &config.namespace);
    let mut cluster_events = watcher::watcher(
        clusters,
        watcher::Config::default().fields(&format!("metadata.name={}", config.cluster)),
    )
    .default_backoff()
    .boxed();
    let mut pod_events = watcher::watcher(
        pods,
        watcher::Config::default().labels(&format!("{}={}", cnpg::CLUSTER_LABEL, config.cluster)),
    )
    .default_backoff()
    .boxed();

    tracing::info!(namespace = %config.namespace, cluster = %config.cluster, "CloudNativePG watcher started");
    let mut view = View::default();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            event = cluster_events.next() => match event {
                Some(Ok(event)) => view.on_cluster(event),
                Some(Err(error)) => view.on_error("cluster", &error),
                None => break,
            },
            event = pod_events.next() => match event {
                Some(Ok(event)) => view.on_pod(event),
                Some(Err(error)) => view.on_error("pods", &error),
                None => break,
            },
        }
        if let Some(claims) = view.claims(config.port) {
            publish_if_changed(&tx, claims);
        }
        if tx.is_closed() {
            break;
        }
    }
    tracing::info!("CloudNativePG watcher stopped");
    Ok(())
}

/// What the two watches have told so far.
#[derive(Debug, Default)]
struct View {
    /// The Cluster's status; `None` until listed, or when it does not exist.
    cluster: Option<ClusterStatus>,
    /// Whether the Cluster list finished at least once.
    cluster_listed: bool,
    /// The status seen during a (re)list, taken over at `InitDone`.
    cluster_relist: Option<Option<ClusterStatus>>,
    /// Instance Pods by name.
    pods: BTreeMap<String, InstancePod>,
    /// Whether the Pod list finished at least once.
    pods_listed: bool,
    /// Pods seen during a (re)list, taken over at `InitDone`.
    pods_relist: Option<BTreeMap<String, InstancePod>>,
    /// Which watch is currently failing (logged once per failure streak).
    failing: BTreeMap<&'static str, bool>,
}

impl View {
    fn on_cluster(&mut self, event: Event<DynamicObject>) {
        self.recovered("cluster");
        match event {
            Event::Init => self.cluster_relist = Some(None),
            Event::InitApply(obj) => {
                let status = parse_status(&obj);
                if let Some(relist) = self.cluster_relist.as_mut() {
                    *relist = status.or(relist.take());
                }
            }
            Event::InitDone => {
                self.cluster = self.cluster_relist.take().flatten();
                self.cluster_listed = true;
                if self.cluster.is_none() {
                    tracing::warn!(
                        "the CloudNativePG Cluster does not exist (or has no readable status); no claims"
                    );
                }
            }
            Event::Apply(obj) => {
                if let Some(status) = parse_status(&obj) {
                    self.cluster = Some(status);
                }
            }
            Event::Delete(obj) => {
                tracing::warn!(cluster = %obj.name_any(), "the CloudNativePG Cluster was deleted");
                self.cluster = None;
            }
        }
    }

    fn on_pod(&mut self, event: Event<Pod>) {
        self.recovered("pods");
        match event {
            Event::Init => self.pods_relist = Some(BTreeMap::new()),
            Event::InitApply(pod) => {
                if let (Some(relist), Some(instance)) =
                    (self.pods_relist.as_mut(), instance_pod(&pod))
                {
                    relist.insert(instance.name.clone(), instance);
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.pods_relist.take() {
                    self.pods = relist;
                }
                self.pods_listed = true;
            }
            Event::Apply(pod) => match instance_pod(&pod) {
                Some(instance) => {
                    self.pods.insert(instance.name.clone(), instance);
                }
                None => {
                    self.pods.remove(&pod.name_any());
                }
            },
            Event::Delete(pod) => {
                self.pods.remove(&pod.name_any());
            }
        }
    }

    fn on_error(&mut self, watch: &'static str, error: &watcher::Error) {
        let gone = matches!(error, watcher::Error::WatchError(status) if status.code == 410);
        if gone {
            // Routine: the server no longer keeps our resourceVersion.
            tracing::info!(watch, %error, "Kubernetes watch expired; relisting");
            return;
        }
        let failing = self.failing.entry(watch).or_default();
        if !*failing {
            tracing::warn!(watch, %error, "Kubernetes watch failed; retrying with backoff, keeping the last claims");
            *failing = true;
        }
    }

    fn recovered(&mut self, watch: &'static str) {
        if let Some(failing) = self.failing.get_mut(watch)
            && *failing
        {
            tracing::info!(watch, "Kubernetes watch works again");
            *failing = false;
        }
    }

    /// Claims once both lists are in and the Cluster exists.
    fn claims(&self, port: u16) -> Option<Claims> {
        if !self.cluster_listed || !self.pods_listed {
            return None;
        }
        let status = self.cluster.as_ref()?;
        let pods: Vec<InstancePod> = self.pods.values().cloned().collect();
        Some(to_claims(status, &pods, port))
    }
}

/// The status of a Cluster object; `None` (logged) when unreadable.
fn parse_status(obj: &DynamicObject) -> Option<ClusterStatus> {
    match cluster_status(&obj.data) {
        Ok(status) => Some(status),
        Err(error) => {
            tracing::warn!(cluster = %obj.name_any(), %error, "ignoring a Cluster update");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(current: &str, target: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "pg", "resourceVersion": "1"},
            "status": {"currentPrimary": current, "targetPrimary": target},
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, role: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {
                "cnpg.io/cluster": "pg", "cnpg.io/podRole": "instance",
                "cnpg.io/instanceName": name, "cnpg.io/instanceRole": role}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    #[test]
    fn no_claims_until_both_lists_are_in() {
        let mut view = View::default();
        view.on_cluster(Event::Init);
        view.on_cluster(Event::InitApply(cluster("pg-1", "pg-1")));
        view.on_cluster(Event::InitDone);
        assert!(view.claims(5432).is_none());
        view.on_pod(Event::Init);
        view.on_pod(Event::InitApply(pod("pg-1", "10.0.0.1", "primary")));
        assert!(view.claims(5432).is_none(), "the pod list is not done");
        view.on_pod(Event::InitDone);
        let claims = view.claims(5432).unwrap();
        assert_eq!(claims.claimed_primary().unwrap().addr, "10.0.0.1:5432");
    }

    #[test]
    fn a_relist_replaces_pods_that_vanished_meanwhile() {
        let mut view = View::default();
        view.on_cluster(Event::Init);
        view.on_cluster(Event::InitApply(cluster("pg-2", "pg-2")));
        view.on_cluster(Event::InitDone);
        view.on_pod(Event::Init);
        view.on_pod(Event::InitApply(pod("pg-1", "10.0.0.1", "primary")));
        view.on_pod(Event::InitApply(pod("pg-2", "10.0.0.2", "replica")));
        view.on_pod(Event::InitDone);
        // Relist after 410: pg-1 is gone, pg-2 relabelled.
        view.on_pod(Event::Init);
        view.on_pod(Event::InitApply(pod("pg-2", "10.0.0.2", "primary")));
        assert_eq!(
            view.claims(5432).unwrap().members.len(),
            2,
            "old view until InitDone"
        );
        view.on_pod(Event::InitDone);
        let claims = view.claims(5432).unwrap();
        assert_eq!(claims.members.len(), 1);
        assert_eq!(claims.claimed_primary().unwrap().name, "pg-2");
    }

    #[test]
    fn a_missing_or_deleted_cluster_gives_no_claims() {
        let mut view = View::default();
        view.on_pod(Event::Init);
        view.on_pod(Event::InitDone);
        view.on_cluster(Event::Init);
        view.on_cluster(Event::InitDone);
        assert!(view.claims(5432).is_none());
        view.on_cluster(Event::Apply(cluster("pg-1", "pg-1")));
        assert!(view.claims(5432).is_some());
        view.on_cluster(Event::Delete(cluster("pg-1", "pg-1")));
        assert!(view.claims(5432).is_none());
    }

    #[tokio::test]
    async fn an_https_client_builds_with_ring_alone() {
        // rustls picks its process-wide provider from the one compiled in
        // (ring; aws-lc-rs is kept out of the tree), so building a TLS
        // client must neither fail nor panic.
        let config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert!(Client::try_from(config).is_ok());
    }

    #[test]
    fn failover_target_pending_holds_writes() {
        let mut view = View::default();
        view.on_cluster(Event::Init);
        view.on_cluster(Event::InitApply(cluster("pg-1", "pending")));
        view.on_cluster(Event::InitDone);
        view.on_pod(Event::Init);
        view.on_pod(Event::InitApply(pod("pg-1", "10.0.0.1", "primary")));
        view.on_pod(Event::InitDone);
        assert!(view.claims(5432).unwrap().hold_writes);
    }
}
