//! Error type of the CloudNativePG watcher.

use std::time::Duration;

/// What can go wrong while following a CNPG Cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// `kubernetes.cluster` is empty.
    #[error("kubernetes.cluster is empty: name the CloudNativePG Cluster to follow")]
    NoCluster,

    /// Neither in-cluster credentials nor a kubeconfig could be loaded.
    #[error(
        "no Kubernetes credentials: neither the in-cluster service account nor a kubeconfig \
         ($KUBECONFIG or ~/.kube/config) could be used: {0}"
    )]
    Config(#[source] kube::config::InferConfigError),

    /// Loading the credentials took too long (e.g. an exec plugin hung).
    #[error("loading Kubernetes credentials took longer than {0:?}")]
    ConfigTimeout(Duration),

    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),

    /// A Cluster's `status` does not have the CNPG shape.
    #[error("the CloudNativePG Cluster status has an unexpected shape: {0}")]
    ClusterStatus(#[source] serde_json::Error),
}
