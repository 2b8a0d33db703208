//! The Kubernetes manifests in config/ are objects the API server accepts.
//!
//! `kubectl apply --dry-run=client` needs an API server for discovery, and
//! none can run here. Instead every document is deserialized into its
//! kind's typed API object (k8s-openapi, Kubernetes 1.33) and serialized
//! back: a misspelt or misplaced field, which a lenient parse would drop,
//! makes the two differ, and a wrong type fails the parse. The objects'
//! cross-references (selectors, named ports, the service account, RBAC for
//! the watcher) are checked too.
#![cfg(feature = "kubernetes")]

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn manifest_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("k8s"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .chain([root.join("rbac.yaml")])
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The YAML documents of `path`, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---")
        .map(serde_saphyr::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Parses `doc` as a `T` and checks that nothing was lost on the way back.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value, origin: &str) -> T {
    let object: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", doc["kind"]));
    let back = serde_json::to_value(&object).unwrap();
    assert_eq!(
        &back, doc,
        "{origin}: fields the {} schema does not have (or misplaced)",
        doc["kind"]
    );
    object
}

/// Every manifest, by kind; panics on a kind nobody checks.
#[derive(Default)]
struct Manifests {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    budgets: Vec<PodDisruptionBudget>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    pod_monitors: Vec<Value>,
}

fn load() -> Manifests {
    let mut all = Manifests::default();
    for path in manifest_files() {
        for (i, doc) in documents(&path).iter().enumerate() {
            let origin = format!("{} document {}", path.display(), i + 1);
            let kind = (doc["apiVersion"].as_str(), doc["kind"].as_str());
            match kind {
                (Some("apps/v1"), Some("Deployment")) => all.deployments.push(typed(doc, &origin)),
                (Some("v1"), Some("Service")) => all.services.push(typed(doc, &origin)),
                (Some("policy/v1"), Some("PodDisruptionBudget")) => {
                    all.budgets.push(typed(doc, &origin))
                }
                (Some("v1"), Some("ServiceAccount")) => all.accounts.push(typed(doc, &origin)),
                (Some("rbac.authorization.k8s.io/v1"), Some("Role")) => {
                    all.roles.push(typed(doc, &origin))
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => {
                    all.bindings.push(typed(doc, &origin))
                }
                (Some("v1"), Some("ConfigMap")) => all.config_maps.push(typed(doc, &origin)),
                // A CRD of the Prometheus operator: no typed schema here.
                (Some("monitoring.coreos.com/v1"), Some("PodMonitor")) => {
                    all.pod_monitors.push(doc.clone())
                }
                other => panic!("{origin}: unchecked kind {other:?}"),
            }
        }
    }
    all
}

#[test]
fn every_manifest_matches_its_kubernetes_schema() {
    let all = load();
    assert_eq!(all.deployments.len(), 1);
    assert!(!all.services.is_empty());
    assert_eq!(all.budgets.len(), 1);
    assert_eq!(all.config_maps.len(), 1);
    assert!(!all.roles.is_empty() && !all.bindings.is_empty() && !all.accounts.is_empty());
    assert_eq!(all.pod_monitors.len(), 1);
}

#[test]
fn services_budget_and_monitor_select_the_deployments_pods_and_ports() {
    let all = load();
    let deployment = &all.deployments[0];
    let spec = deployment.spec.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selected = |selector: &std::collections::BTreeMap<String, String>| {
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    assert!(selected(spec.selector.match_labels.as_ref().unwrap()));
    let pod = spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let port_names: Vec<&str> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.as_deref())
        .collect();

    for service in &all.services {
        let spec = service.spec.as_ref().unwrap();
        assert!(
            selected(spec.selector.as_ref().unwrap()),
            "{:?}",
            service.metadata.name
        );
        for port in spec.ports.iter().flatten() {
            if let Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name)) =
                &port.target_port
            {
                assert!(
                    port_names.contains(&name.as_str()),
                    "no container port {name}"
                );
            }
        }
    }
    let budget = all.budgets[0].spec.as_ref().unwrap();
    assert!(selected(
        budget
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()
    ));
    let monitor = &all.pod_monitors[0]["spec"];
    for (k, v) in monitor["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(pod_labels.get(k).map(String::as_str), v.as_str());
    }
    for endpoint in monitor["podMetricsEndpoints"].as_array().unwrap() {
        let port = endpoint["port"].as_str().unwrap();
        assert!(
            port_names.contains(&port),
            "PodMonitor scrapes unknown port {port}"
        );
    }
    // The probes use the admin port, where /healthz and /readyz live.
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert!(matches!(
            &get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(p) if p == "admin"
        ));
    }
}

#[test]
fn the_watcher_may_read_clusters_and_pods_as_the_deployments_account() {
    let all = load();
    let pod = all.deployments[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let account = pod.service_account_name.as_deref().unwrap();
    assert!(
        all.accounts
            .iter()
            .any(|a| a.metadata.name.as_deref() == Some(account))
    );
    for role in &all.roles {
        let allows = |group: &str, resource: &str| {
            role.rules.iter().flatten().any(|rule| {
                rule.api_groups.iter().flatten().any(|g| g == group)
                    && rule.resources.iter().flatten().any(|r| r == resource)
                    && ["get", "list", "watch"]
                        .iter()
                        .all(|verb| rule.verbs.iter().any(|v| v == verb))
            })
        };
        assert!(
            allows("postgresql.cnpg.io", "clusters"),
            "{:?}",
            role.metadata.name
        );
        assert!(allows("", "pods"), "{:?}", role.metadata.name);
        let bound = all.bindings.iter().any(|b| {
            b.role_ref.kind == "Role"
                && Some(&b.role_ref.name) == role.metadata.name.as_ref()
                && b.subjects
                    .iter()
                    .flatten()
                    .any(|s| s.kind == "ServiceAccount" && s.name == account)
        });
        assert!(
            bound,
            "role {:?} is not bound to {account}",
            role.metadata.name
        );
    }
}
