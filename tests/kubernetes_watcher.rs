//! End-to-end tests of the CloudNativePG watcher: a real kube client against
//! a fake Kubernetes API server on 127.0.0.1 that speaks the list/watch
//! protocol (lists with resourceVersion, `?watch=true` streams of JSON
//! lines, the `410 Expired` ERROR event) and replays CloudNativePG 1.30
//! objects recorded in tests/fixtures/cnpg/ (see its README).
#![cfg(feature = "kubernetes")]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use support::drill::{self, Load, SERVER_ADDRESS_LAST_OCTET};
use support::{APP_DB, APP_PASSWORD, APP_USER, ProxyProcess};
use switchyard::config::KubernetesConfig;
use switchyard::testcluster::{ClusterSpec, LocalCluster};
use switchyard::topology::{ClaimedRole, Claims, kubernetes};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CLUSTERS_PATH: &str = "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters";
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/cnpg/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What a watch stream sends next.
#[derive(Clone, Debug)]
enum Line {
    /// One watch event (a JSON line).
    Event(String),
    /// The server ends the stream.
    End,
}

/// One resource collection of the fake API server.
struct Collection {
    /// The list answer (JSON).
    list: Mutex<String>,
    lists: AtomicUsize,
    watches: AtomicUsize,
    /// Every request's path and query.
    requests: Mutex<Vec<String>>,
    events: broadcast::Sender<Line>,
}

impl Collection {
    fn new(list: String) -> Arc<Self> {
        Arc::new(Collection {
            list: Mutex::new(list),
            lists: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            events: broadcast::channel(64).0,
        })
    }

    fn respond(&self, query: &str) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
        let watching = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        if !watching {
            self.lists.fetch_add(1, Ordering::SeqCst);
            let body = self.list.lock().unwrap().clone();
            return json_response(StatusCode::OK, Full::new(Bytes::from(body)).boxed_unsync());
        }
        // Subscribe before counting, so a test that saw the count cannot
        // send an event this stream misses.
        let rx = self.events.subscribe();
        self.watches.fetch_add(1, Ordering::SeqCst);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(Line::Event(line)) => {
                    Some((Ok(Frame::data(Bytes::from(format!("{line}\n")))), rx))
                }
                Ok(Line::End) | Err(_) => None,
            }
        });
        json_response(StatusCode::OK, StreamBody::new(stream).boxed_unsync())
    }

    fn send(&self, line: Line) {
        self.events.send(line).expect("a watch stream is connected");
    }
}

fn json_response(
    status: StatusCode,
    body: UnsyncBoxBody<Bytes, Infallible>,
) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The fake API server: Cluster objects and Pods of namespace `default`.
struct FakeApi {
    clusters: Arc<Collection>,
    pods: Arc<Collection>,
    url: String,
    server: JoinHandle<()>,
}

impl FakeApi {
    async fn start(clusters_list: String, pods_list: String) -> Self {
        let clusters = Collection::new(clusters_list);
        let pods = Collection::new(pods_list);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes = (Arc::clone(&clusters), Arc::clone(&pods));
        let server = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let routes = routes.clone();
                        async move { Ok::<_, Infallible>(route(&routes, &req)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        FakeApi {
            clusters,
            pods,
            url,
            server,
        }
    }

    /// Waits until both collections have had `n` watch requests.
    async fn wait_watches(&self, clusters: usize, pods: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.clusters.watches.load(Ordering::SeqCst) < clusters
            || self.pods.watches.load(Ordering::SeqCst) < pods
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "watches not connected: clusters {}, pods {}",
                self.clusters.watches.load(Ordering::SeqCst),
                self.pods.watches.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends recorded watch events (lines of a .jsonl fixture) to the watch
    /// they belong to: Pod events to the Pod watch, the rest (Cluster
    /// events, BOOKMARKs of Clusters) to the Cluster watch.
    fn replay(&self, lines: &[&str]) {
        for line in lines {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let target = if event["object"]["kind"] == "Pod" {
                &self.pods
            } else {
                &self.clusters
            };
            target.send(Line::Event((*line).to_owned()));
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn route(
    (clusters, pods): &(Arc<Collection>, Arc<Collection>),
    req: &Request<Incoming>,
) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let collection = match path {
        CLUSTERS_PATH => clusters,
        PODS_PATH => pods,
        _ => {
            let status = format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"the server could not find the requested resource ({path})","reason":"NotFound","code":404}}"#
            );
            return json_response(
                StatusCode::NOT_FOUND,
                Full::new(Bytes::from(status)).boxed_unsync(),
            );
        }
    };
    collection
        .requests
        .lock()
        .unwrap()
        .push(format!("{path}?{query}"));
    collection.respond(query)
}

/// The watcher, running against `api` with a kube client built for it.
struct Watcher {
    rx: watch::Receiver<Option<Claims>>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), kubernetes::KubernetesError>>,
}

impl Watcher {
    fn start(api: &FakeApi) -> Self {
        let mut kube_config = kube::Config::new(api.url.parse().unwrap());
        kube_config.default_namespace = "default".into();
        let client = kube::Client::try_from(kube_config).unwrap();
        let config = KubernetesConfig {
            namespace: "default".into(),
            cluster: "pg".into(),
            port: 5432,
        };
        let (tx, rx) = watch::channel(None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(kubernetes::run_with_client(
            client,
            config,
            tx,
            shutdown.clone(),
        ));
        Watcher { rx, shutdown, task }
    }

    /// Waits (at most 10 s) for published claims satisfying `want`.
    async fn wait_for(&mut self, what: &str, want: impl Fn(&Claims) -> bool) -> Claims {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(claims) = self.rx.borrow_and_update().clone()
                && want(&claims)
            {
                return claims;
            }
            match tokio::time::timeout_at(deadline, self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("the watcher stopped while waiting for {what}"),
                Err(_) => panic!(
                    "no claims with {what} within 10 s; last: {:?}",
                    self.rx.borrow()
                ),
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("watcher did not stop within 5 s")
            .expect("watcher panicked")
            .expect("watcher failed");
    }
}

fn primary_addr(claims: &Claims) -> Option<&str> {
    claims.claimed_primary().map(|m| m.addr.as_str())
}

fn member<'a>(claims: &'a Claims, name: &str) -> &'a switchyard::topology::MemberClaim {
    claims
        .members
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no member {name} in {claims:?}"))
}

/// Watcher logs, shown for failing tests (or with --nocapture).
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("switchyard=debug")
        .with_test_writer()
        .try_init();
}

async fn healthy() -> (FakeApi, Watcher) {
    init_tracing();
    let api = FakeApi::start(
        fixture("clusters-list-healthy.json"),
        fixture("pods-healthy.json"),
    )
    .await;
    let mut watcher = Watcher::start(&api);
    watcher
        .wait_for("pg-1 primary", |c| {
            primary_addr(c) == Some("127.0.1.1:5432")
        })
        .await;
    api.wait_watches(1, 1).await;
    (api, watcher)
}

#[tokio::test]
async fn healthy_cluster_claims_the_primary_pod_ip() {
    let (api, mut watcher) = healthy().await;
    let claims = watcher.wait_for("the healthy view", |_| true).await;
    assert_eq!(claims.source, "kubernetes");
    assert!(!claims.hold_writes, "{claims:?}");
    assert_eq!(claims.members.len(), 3);
    assert!(
        claims
            .members
            .iter()
            .all(|m| m.ready && m.timeline == Some(1))
    );
    assert_eq!(member(&claims, "pg-2").role, ClaimedRole::Replica);
    assert_eq!(member(&claims, "pg-3").addr, "127.0.1.3:5432");

    // The requests a watcher must make (fixtures README).
    let cluster_requests = api.clusters.requests.lock().unwrap().clone();
    assert!(
        cluster_requests
            .iter()
            .all(|r| r.contains("fieldSelector=metadata.name%3Dpg")),
        "{cluster_requests:?}"
    );
    assert!(
        cluster_requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("resourceVersion=4117305")),
        "{cluster_requests:?}"
    );
    let pod_requests = api.pods.requests.lock().unwrap().clone();
    assert!(
        pod_requests
            .iter()
            .all(|r| r.contains("labelSelector=cnpg.io%2Fcluster%3Dpg")),
        "{pod_requests:?}"
    );
    watcher.stop().await;
}

#[tokio::test]
async fn scripted_failover_moves_the_claimed_primary_to_the_new_pod_ip() {
    let (api, mut watcher) = healthy().await;
    let script = fixture("watch-failover.jsonl");
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines.len(), 18);

    // 1: pg-1 not Ready. 2-5: Failing over, targetPrimary "pending".
    api.replay(&lines[..5]);
    let claims = watcher
        .wait_for("writes held, no primary", |c| {
            c.hold_writes && c.claimed_primary().is_none()
        })
        .await;
    assert!(!member(&claims, "pg-1").ready);

    // 6: pg-1 labelled unhealthy. 7-8: targetPrimary pg-2. 9: pg-1
    // restarts. 10: BOOKMARK. 11: currentPrimary pg-2.
    api.replay(&lines[5..11]);
    let claims = watcher
        .wait_for("pg-2 primary, writes allowed", |c| {
            !c.hold_writes && primary_addr(c) == Some("127.0.1.2:5432")
        })
        .await;
    assert_eq!(
        member(&claims, "pg-1").role,
        ClaimedRole::Unknown,
        "labelled unhealthy"
    );

    // 12: timelineID 2. 13-14: pg-1 relabelled replica, pg-2 primary.
    api.replay(&lines[11..14]);
    let claims = watcher
        .wait_for("pg-1 relabelled replica, pg-2 on timeline 2", |c| {
            member(c, "pg-1").role == ClaimedRole::Replica && member(c, "pg-2").timeline == Some(2)
        })
        .await;
    assert_eq!(primary_addr(&claims), Some("127.0.1.2:5432"));
    assert!(!claims.hold_writes);

    // 15-18: pg-1 Ready again, phase healthy.
    api.replay(&lines[14..]);
    let claims = watcher
        .wait_for("every member ready", |c| c.members.iter().all(|m| m.ready))
        .await;
    assert_eq!(primary_addr(&claims), Some("127.0.1.2:5432"));
    assert!(!claims.hold_writes);
    // Nothing was relisted: the whole failover came through the watches.
    assert_eq!(api.clusters.lists.load(Ordering::SeqCst), 1);
    assert_eq!(api.pods.lists.load(Ordering::SeqCst), 1);
    watcher.stop().await;
}

#[tokio::test]
async fn switchover_holds_writes_until_the_target_is_current() {
    let (api, mut watcher) = healthy().await;
    let script = fixture("watch-switchover.jsonl");
    let lines: Vec<&str> = script.lines().collect();

    // 1: targetPrimary pg-2 while currentPrimary is still pg-1.
    api.replay(&lines[..1]);
    watcher
        .wait_for("writes held during the switchover", |c| {
            c.hold_writes && c.claimed_primary().is_none()
        })
        .await;
    // 2-5: pg-1 fenced and restarted, then currentPrimary pg-2.
    api.replay(&lines[1..5]);
    watcher
        .wait_for("pg-2 primary", |c| {
            !c.hold_writes && primary_addr(c) == Some("127.0.1.2:5432")
        })
        .await;
    api.replay(&lines[5..]);
    watcher
        .wait_for("every member ready", |c| {
            c.members.iter().all(|m| m.ready) && primary_addr(c) == Some("127.0.1.2:5432")
        })
        .await;
    watcher.stop().await;
}

#[tokio::test]
async fn ended_watch_resumes_and_expired_watch_relists() {
    let (api, mut watcher) = healthy().await;

    // The server ends the Cluster watch (as at its timeoutSeconds): the
    // watcher resumes from its resourceVersion without listing again.
    api.clusters.send(Line::End);
    api.wait_watches(2, 1).await;
    assert_eq!(api.clusters.lists.load(Ordering::SeqCst), 1);
    let resumed = api
        .clusters
        .requests
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert!(resumed.contains("watch=true"), "{resumed}");

    // Meanwhile the cluster failed over, and the server no longer keeps the
    // watcher's resourceVersion: both watches get 410 Expired and end.
    let done: serde_json::Value =
        serde_json::from_str(&fixture("cluster-failover-done.json")).unwrap();
    let clusters_after = serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "ClusterList",
        "metadata": {"continue": "", "resourceVersion": "4117479"},
        "items": [done],
    });
    *api.clusters.list.lock().unwrap() = clusters_after.to_string();
    *api.pods.list.lock().unwrap() = fixture("pods-after-failover.json");
    let expired = fixture("watch-expired.jsonl");
    let expired = expired.trim();
    assert!(expired.contains("\"code\":410"));
    for collection in [&api.clusters, &api.pods] {
        collection.send(Line::Event(expired.to_owned()));
        collection.send(Line::End);
    }

    let claims = watcher
        .wait_for("pg-2 primary after the relist", |c| {
            primary_addr(c) == Some("127.0.1.2:5432")
                && member(c, "pg-1").role == ClaimedRole::Replica
        })
        .await;
    assert!(!claims.hold_writes);
    assert_eq!(api.clusters.lists.load(Ordering::SeqCst), 2);
    assert_eq!(api.pods.lists.load(Ordering::SeqCst), 2);
    // And it watches again from the new lists' resourceVersion.
    api.wait_watches(3, 2).await;
    let rewatch = api.pods.requests.lock().unwrap().last().cloned().unwrap();
    assert!(rewatch.contains("resourceVersion=4117479"), "{rewatch}");
    watcher.stop().await;
}

/// The fixtures' pod IPs, pg-1 to pg-3: the test cluster's primary and its
/// two replicas listen there, all on one port, as pods do.
const POD_IPS: [&str; 3] = ["127.0.1.1", "127.0.1.2", "127.0.1.3"];
/// How long the proxy may take to notice a dead primary on its own (one
/// probe interval of 100 ms plus the 500 ms probe timeout), before the
/// control plane says anything.
const DETECTION: Duration = Duration::from_millis(600);

/// A kubeconfig that points a kube client at the fake API server.
fn kubeconfig(api_url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {api_url}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    )
}

fn dsn(host: &str, port: u16) -> String {
    format!("host={host} port={port} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}")
}

/// Signed milliseconds from `origin` to `at`.
fn millis_since(origin: SystemTime, at: SystemTime) -> i128 {
    match at.duration_since(origin) {
        Ok(after) => after.as_millis() as i128,
        Err(before) => -(before.duration().as_millis() as i128),
    }
}

/// The whole path: the proxy binary, its kube client reading a kubeconfig,
/// the fake API server replaying CloudNativePG's failover, and real
/// PostgreSQL at the pods' IPs. Writes go to pg-1, wait while the operator
/// fails over, and land on pg-2 once it is `currentPrimary`.
#[tokio::test(flavor = "multi_thread")]
async fn writes_through_the_proxy_follow_a_cnpg_failover_to_the_new_pod() {
    init_tracing();
    let cluster = tokio::task::spawn_blocking(|| {
        LocalCluster::start(&ClusterSpec {
            replicas: 2,
            hosts: POD_IPS.iter().map(|ip| (*ip).to_owned()).collect(),
            ..support::spec()
        })
        .expect("start PostgreSQL at the pod IPs")
    })
    .await
    .unwrap();
    cluster
        .make_replication_synchronous()
        .expect("synchronous replication");
    let pg_port = cluster.primary().port;
    assert!(cluster.nodes().all(|n| n.port == pg_port));

    let api = FakeApi::start(
        fixture("clusters-list-healthy.json"),
        fixture("pods-healthy.json"),
    )
    .await;
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig_path = kube_dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig(&api.url)).unwrap();
    let config = support::replicated_config(
        &cluster,
        "topology = \"kubernetes\"\nprobe_timeout = \"500ms\"",
        "failover_timeout = \"20s\"",
        "",
    ) + &format!(
        "\n[kubernetes]\nnamespace = \"default\"\ncluster = \"pg\"\nport = {pg_port}\n"
    );
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let kubeconfig_env = kubeconfig_path.to_string_lossy().into_owned();
    let proxy =
        ProxyProcess::start_with_env(&config, listen, &[("KUBECONFIG", kubeconfig_env.as_str())]);
    api.wait_watches(1, 1).await;

    let through_proxy = dsn("127.0.0.1", proxy.addr.port());
    // Writes wait for a verified primary: the first one shows the proxy
    // took pg-1 from the Cluster's status.
    drill::create_table(&through_proxy).await;
    let load = Load::start_naming(&through_proxy, 16, 4, SERVER_ADDRESS_LAST_OCTET).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let script = fixture("watch-failover.jsonl");
    let lines: Vec<&str> = script.lines().collect();
    // pg-1's postgres dies; the operator notices (Pod not Ready, Cluster
    // failing over, targetPrimary "pending", pg-1 labelled unhealthy).
    let killed = SystemTime::now();
    tokio::task::block_in_place(|| cluster.primary().stop("immediate").unwrap());
    let stopped = SystemTime::now();
    api.replay(&lines[..6]);
    // The instance manager promotes pg-2; the operator then names it
    // targetPrimary and pg-2 writes itself as currentPrimary.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| cluster.replicas()[0].promote().unwrap());
    // From here on the operator names pg-2: before, only the probes could
    // have found it, and they must not make it the primary on their own.
    let claimed = SystemTime::now();
    api.replay(&lines[6..11]);
    let current_primary = SystemTime::now();
    // Timeline 2, pods relabelled.
    api.replay(&lines[11..14]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcome = load.stop().await;

    println!("cnpg drill: {}", outcome.summary());
    for f in outcome.write_errors().iter().chain(&outcome.read_errors()) {
        println!(
            "  error at {} ms, sent at {} ms after the kill: {}",
            millis_since(killed, f.at),
            millis_since(killed, f.sent),
            f.error
        );
    }
    let gap = outcome
        .first_write_after(current_primary)
        .expect("writes resumed on pg-2");
    println!(
        "currentPrimary pg-2 -> first write through the proxy: {} ms",
        gap.as_millis()
    );
    // pg-1 (.1) took writes until it stopped, pg-2 only once CloudNativePG
    // named it.
    outcome.assert_writes_only_where(|at, octet| {
        if at < stopped {
            octet == 1
        } else {
            octet == 2 && at >= claimed
        }
    });
    assert!(
        outcome.acknowledged().any(|(_, _, octet)| *octet == 2),
        "no write reached pg-2"
    );
    outcome.assert_errors_only_in_flight(stopped + DETECTION);
    assert!(outcome.read_errors().is_empty(), "reads failed");
    assert!(
        gap < Duration::from_secs(1),
        "writes resumed {gap:?} after currentPrimary"
    );
    outcome.assert_none_lost(&dsn(POD_IPS[1], pg_port)).await;
    drop(proxy);
}
