//! Several switchyard processes as peers behind one address: cancel
//! requests forwarded to the pod that owns the session, peers found from a
//! static list or DNS, and a server-connection budget shared by the live
//! peers. Real PostgreSQL, the real binary, loopback only.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use support::raw::{raw_login, read_message};
use support::{
    APP_DB, APP_PASSWORD, APP_USER, ProxyProcess, connect, free_port, http_get, metric_sample,
    metric_sum, parse_metrics, proxy_config, spec,
};
use switchyard::testcluster::LocalCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

/// One switchyard process of a peer group and its admin HTTP port.
struct PeerProxy {
    proxy: ProxyProcess,
    http: u16,
}

impl PeerProxy {
    fn dsn(&self) -> String {
        format!(
            "host={} port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
            self.proxy.addr.ip(),
            self.proxy.addr.port()
        )
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, body) = http_get(self.http, "/metrics");
        assert_eq!(status, 200);
        metric_sample(&parse_metrics(&body), name, labels)
    }

    /// Server connections open to every node, as the budget counts them.
    fn server_connections(&self) -> f64 {
        let (_, body) = http_get(self.http, "/metrics");
        metric_sum(
            &parse_metrics(&body),
            "switchyard_node_server_connections",
            &[],
        )
    }

    fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.metric(name, labels);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {got:?}, wanted {want}\n{}",
                self.proxy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts a proxy on `addr` for `cluster` with `server` keys added to
/// `[server]` and `sections` (e.g. `[peers]`) appended.
fn start_peer(cluster: &LocalCluster, addr: SocketAddr, server: &str, sections: &str) -> PeerProxy {
    let http = free_port();
    let config = proxy_config(cluster, server).replace(
        "admin_listen = \"127.0.0.1:0\"",
        &format!("admin_listen = \"127.0.0.1:{http}\""),
    ) + sections;
    let proxy = ProxyProcess::start_on(&config, addr);
    PeerProxy { proxy, http }
}

/// `[peers]` for peer `id` of a static group (`ids[i]` listens on `ports[i]`).
fn static_peers(id: u16, ids: &[u16], ports: &[u16]) -> String {
    let list: Vec<String> = ids
        .iter()
        .zip(ports)
        .map(|(id, port)| format!("\"{id}=127.0.0.1:{port}\""))
        .collect();
    format!(
        "\n[peers]\nid = {id}\nstatic = [{}]\ncheck_interval = \"300ms\"\ncheck_timeout = \"200ms\"\n",
        list.join(", ")
    )
}

/// The tests here start several proxies each and measure timings: one at a
/// time, so that a port one test frees is not taken by another's proxy
/// and the load of one does not skew another's figures.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs `pg_sleep(30)` through `owner` and cancels it with a CancelRequest
/// sent to `other`; returns how long the cancel took to end the query.
async fn cancel_via(owner: &PeerProxy, other: &PeerProxy) -> Duration {
    let client = connect(&owner.dsn()).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let socket = TcpStream::connect(other.proxy.addr).await.unwrap();
    token
        .cancel_query_raw(socket, tokio_postgres::NoTls)
        .await
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("the query ended")
        .unwrap()
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
    elapsed
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_sleep_started_through_peer_a_is_cancelled_via_peer_b_in_both_pool_modes() {
    let _serial = SERIAL.lock().await;
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    for mode in ["session", "transaction"] {
        let ports = [free_port(), free_port()];
        let server = format!("pool_mode = \"{mode}\"");
        let a = start_peer(
            &cluster,
            loopback(ports[0]),
            &server,
            &static_peers(1, &[1, 2], &ports),
        );
        let b = start_peer(
            &cluster,
            loopback(ports[1]),
            &server,
            &static_peers(2, &[1, 2], &ports),
        );
        for peer in [&a, &b] {
            peer.wait_metric("switchyard_peers_live", &[], 2.0, Duration::from_secs(5));
        }
        let elapsed = cancel_via(&a, &b).await;
        eprintln!("{mode}: cancel via the other peer took {elapsed:?}");
        assert!(
            elapsed < Duration::from_secs(1),
            "{mode}: cancel took {elapsed:?}"
        );
        // Counted once each pod is done with the request.
        let outcome = |o| [("outcome", o)];
        let counted = Duration::from_secs(2);
        b.wait_metric(
            "switchyard_cancel_requests_total",
            &outcome("forwarded"),
            1.0,
            counted,
        );
        a.wait_metric(
            "switchyard_cancel_requests_total",
            &outcome("cancelled"),
            1.0,
            counted,
        );
        // And the other way round, through the owner itself.
        let elapsed = cancel_via(&b, &b).await;
        assert!(
            elapsed < Duration::from_secs(1),
            "{mode}: local cancel took {elapsed:?}"
        );
    }
}

/// Sends a CancelRequest for (`pid`, `secret`) to `addr`; returns what came
/// back before the close and how long the close took.
async fn send_cancel(addr: SocketAddr, pid: i32, secret: i32) -> (Vec<u8>, Duration) {
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16u32.to_be_bytes());
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&packet).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut reply)).await;
    (reply, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_cancel_keys_cancel_nothing_and_get_no_reply() {
    let _serial = SERIAL.lock().await;
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    let ports = [free_port(), free_port()];
    let a = start_peer(
        &cluster,
        loopback(ports[0]),
        "",
        &static_peers(1, &[1, 2], &ports),
    );
    let b = start_peer(
        &cluster,
        loopback(ports[1]),
        "",
        &static_peers(2, &[1, 2], &ports),
    );
    for peer in [&a, &b] {
        peer.wait_metric("switchyard_peers_live", &[], 2.0, Duration::from_secs(5));
    }
    let (mut session, (pid, secret)) = raw_login(a.proxy.addr).await;
    assert_eq!((pid >> 15) & 0xffff, 1, "the key names peer 1");
    let mut query = vec![b'Q'];
    let sql = b"SELECT pg_sleep(2)\0";
    query.extend_from_slice(&(4 + sql.len() as u32).to_be_bytes());
    query.extend_from_slice(sql);
    session.write_all(&query).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut forged = vec![
        (pid, secret.wrapping_add(1)),
        (pid, !secret),
        (pid | i32::MIN, secret ^ 1),
    ];
    for n in 0..20 {
        forged.push((rand_i32(n), rand_i32(n + 100)));
        // Peer 2's id with random session numbers and secrets.
        forged.push(((2 << 15) | (rand_i32(n + 200) & 0x7fff), rand_i32(n + 300)));
        // An id no peer has.
        forged.push(((777 << 15) | n, rand_i32(n + 400)));
    }
    let mut slowest = Duration::ZERO;
    for (pid, secret) in &forged {
        for addr in [a.proxy.addr, b.proxy.addr] {
            let (reply, took) = send_cancel(addr, *pid, *secret).await;
            assert!(reply.is_empty(), "a CancelRequest got a reply: {reply:?}");
            slowest = slowest.max(took);
        }
    }
    eprintln!(
        "{} forged keys, slowest close {slowest:?}",
        forged.len() * 2
    );
    // Each pod passed on exactly the keys naming the other pod, and none
    // that carried the forwarded flag (bit 31): no second hop, no loop.
    let naming = |peer: i32| {
        forged
            .iter()
            .filter(|(pid, _)| *pid >= 0 && (pid >> 15) & 0xffff == peer)
            .count() as f64
    };
    let forwarded = [("outcome", "forwarded")];
    let counted = Duration::from_secs(2);
    a.wait_metric(
        "switchyard_cancel_requests_total",
        &forwarded,
        naming(2),
        counted,
    );
    b.wait_metric(
        "switchyard_cancel_requests_total",
        &forwarded,
        naming(1),
        counted,
    );
    // The query ran its full 2 s and succeeded.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (tag, body) = tokio::time::timeout_at(deadline.into(), read_message(&mut session))
            .await
            .expect("the query finished");
        assert_ne!(tag, b'E', "cancelled: {}", String::from_utf8_lossy(&body));
        if tag == b'Z' {
            break;
        }
    }
    // The real key, sent through the other peer, still cancels; its close
    // comes as fast as a forged key's (the connection closes before any
    // lookup), and it gets no reply either.
    session.write_all(&query).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (reply, took) = send_cancel(b.proxy.addr, pid, secret).await;
    assert!(reply.is_empty());
    eprintln!("real key via the other peer: close after {took:?}");
    let mut cancelled = false;
    loop {
        let (tag, body) = tokio::time::timeout(Duration::from_secs(1), read_message(&mut session))
            .await
            .expect("cancelled within a second");
        cancelled |= tag == b'E' && String::from_utf8_lossy(&body).contains("57014");
        if tag == b'Z' {
            break;
        }
    }
    assert!(cancelled, "the real key did not cancel");
    let unknown = a.metric(
        "switchyard_cancel_requests_total",
        &[("outcome", "unknown")],
    );
    assert!(unknown.unwrap_or(0.0) >= 40.0, "{unknown:?}");
}

/// A deterministic spread of 32-bit values (no extra crate for tests).
fn rand_i32(n: i32) -> i32 {
    (n as u32).wrapping_mul(2_654_435_761).rotate_left(13) as i32 ^ 0x5bd1_e995
}

/// A UDP DNS server on 127.0.0.1 answering A queries for one name from a
/// list the test can change.
struct TestDns {
    addr: SocketAddr,
    records: Arc<std::sync::Mutex<Vec<Ipv4Addr>>>,
    stop: Arc<AtomicBool>,
}

impl TestDns {
    async fn start(name: &str, records: Vec<Ipv4Addr>) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records = Arc::new(std::sync::Mutex::new(records));
        let stop = Arc::new(AtomicBool::new(false));
        let name: hickory_proto::rr::Name = name.parse().unwrap();
        let (served, stopped) = (Arc::clone(&records), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok(Ok((len, from))) =
                    tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf))
                        .await
                else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let ips = served.lock().unwrap().clone();
                let reply = answer(&request, &name, &ips);
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        Self {
            addr,
            records,
            stop,
        }
    }

    fn set(&self, records: Vec<Ipv4Addr>) {
        *self.records.lock().unwrap() = records;
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(request: &Message, name: &hickory_proto::rr::Name, ips: &[Ipv4Addr]) -> Message {
    let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.edns = request.edns.clone();
    reply.add_queries(request.queries.clone());
    let Some(query) = request.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    if query.name() != name {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return reply;
    }
    if query.query_type() == RecordType::A {
        for ip in ips {
            reply.add_answer(Record::from_rdata(name.clone(), 1, RData::A(A(*ip))));
        }
    }
    // AAAA: the name exists with no IPv6 records (NOERROR, no answers).
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_come_from_dns_records_and_follow_their_changes() {
    let _serial = SERIAL.lock().await;
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    let name = "switchyard-peers.test.";
    let ips = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
    let dns = TestDns::start(name, ips.to_vec()).await;
    // One port, two IPs, as pods behind a headless Service; ids derived
    // from the IPs (127.0.0.1 is peer 1, 127.0.0.2 is peer 2).
    let port = free_port();
    let peers = |ip: Ipv4Addr| {
        format!(
            "\n[peers]\nself_address = \"{ip}:{port}\"\ndns = \"{name}\"\ndns_port = {port}\n\
             dns_server = \"{}\"\ncheck_interval = \"300ms\"\ncheck_timeout = \"200ms\"\n",
            dns.addr
        )
    };
    let a = start_peer(
        &cluster,
        SocketAddr::from((ips[0], port)),
        "",
        &peers(ips[0]),
    );
    let b = start_peer(
        &cluster,
        SocketAddr::from((ips[1], port)),
        "",
        &peers(ips[1]),
    );
    for peer in [&a, &b] {
        peer.wait_metric("switchyard_peers_live", &[], 2.0, Duration::from_secs(5));
    }
    let elapsed = cancel_via(&b, &a).await;
    eprintln!("DNS peers: cancel via the other peer took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1));
    // The record for peer 2 goes away: peer 1 stops counting it.
    let changed = Instant::now();
    dns.set(vec![ips[0]]);
    a.wait_metric("switchyard_peers_live", &[], 1.0, Duration::from_secs(3));
    eprintln!("DNS record removal seen after {:?}", changed.elapsed());
    dns.set(ips.to_vec());
    a.wait_metric("switchyard_peers_live", &[], 2.0, Duration::from_secs(3));
}

/// Samples every proxy's open server connections every 25 ms while `busy`.
fn sample_connections(peers: &[&PeerProxy], busy: &AtomicBool, seen: &mut [Vec<(Instant, f64)>]) {
    while busy.load(Ordering::Relaxed) {
        for (i, peer) in peers.iter().enumerate() {
            if let Ok(open) = std::panic::catch_unwind(|| peer.server_connections()) {
                seen[i].push((Instant::now(), open));
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn budget_of_30_is_10_each_over_3_peers_15_when_one_stops_10_when_it_returns() {
    let _serial = SERIAL.blocking_lock();
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    let ports = [free_port(), free_port(), free_port()];
    let ids = [1, 2, 3];
    let budget = "\n[pool]\nmax_server_connections_per_node = 30\nmax_size = 40\n";
    let server = "pool_mode = \"transaction\"";
    let peers: Vec<PeerProxy> = ids
        .iter()
        .zip(ports)
        .map(|(id, port)| {
            let sections = static_peers(*id, &ids, &ports) + budget;
            start_peer(&cluster, loopback(port), server, &sections)
        })
        .collect();
    for peer in &peers {
        peer.wait_metric(
            "switchyard_server_connection_budget",
            &[],
            10.0,
            Duration::from_secs(5),
        );
    }
    let pgbench = cluster.binaries().program("pgbench");
    let url = |p: &PeerProxy| {
        format!(
            "postgres://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{APP_DB}",
            p.proxy.addr.port()
        )
    };
    let init = std::process::Command::new(&pgbench)
        .args(["-i", "-s", "1", "-q", &url(&peers[0])])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // Phase 1: pgbench -c 50 through each of the three peers at once.
    let run = |p: &PeerProxy, seconds: &str| {
        std::process::Command::new(&pgbench)
            .args(["-c", "50", "-j", "2", "-S", "-n", "-T", seconds, &url(p)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let busy = AtomicBool::new(true);
    let mut seen = vec![Vec::new(), Vec::new(), Vec::new()];
    let refs: Vec<&PeerProxy> = peers.iter().collect();
    let mut backends_peak = 0;
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_connections(&refs, &busy, &mut seen));
        // PostgreSQL's own count: every app backend, from all three peers.
        let server_side = scope.spawn(|| {
            let mut peak = 0u32;
            while busy.load(Ordering::Relaxed) {
                let count = cluster
                    .primary()
                    .psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
                    .map(|out| out.trim().parse::<u32>().unwrap_or(0))
                    .unwrap_or(0);
                peak = peak.max(count);
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        let runs: Vec<_> = peers.iter().map(|p| run(p, "4")).collect();
        for child in runs {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("number of failed transactions: 0"),
                "{stdout}"
            );
        }
        busy.store(false, Ordering::Relaxed);
        sampler.join().unwrap();
        backends_peak = server_side.join().unwrap();
    });
    eprintln!("PostgreSQL: peak {backends_peak} app backends");
    assert!(
        backends_peak <= 30,
        "{backends_peak} app backends > budget 30"
    );
    assert!(
        backends_peak >= 20,
        "the peers hardly used the budget: {backends_peak}"
    );
    for (i, samples) in seen.iter().enumerate() {
        let peak = samples.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        eprintln!(
            "peer {}: {} samples, peak {peak} server connections",
            i + 1,
            samples.len()
        );
        assert!(peak <= 10.0, "peer {} opened {peak} > 10", i + 1);
        assert!(peak >= 10.0, "peer {} never used its share ({peak})", i + 1);
    }

    // Phase 2: load on peers 1 and 2; peer 3 stops partway.
    let mut peers = peers;
    let third = peers.pop().unwrap();
    let busy = AtomicBool::new(true);
    let mut seen = vec![Vec::new(), Vec::new()];
    let refs: Vec<&PeerProxy> = peers.iter().collect();
    let mut stopped_at = Instant::now();
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_connections(&refs, &busy, &mut seen));
        let runs: Vec<_> = peers.iter().map(|p| run(p, "4")).collect();
        std::thread::sleep(Duration::from_secs(1));
        stopped_at = Instant::now();
        drop(third);
        for child in runs {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        busy.store(false, Ordering::Relaxed);
        sampler.join().unwrap();
    });
    for (i, samples) in seen.iter().enumerate() {
        let before = samples
            .iter()
            .filter(|(t, _)| *t < stopped_at)
            .map(|(_, v)| *v)
            .fold(0.0, f64::max);
        let reached = samples
            .iter()
            .find(|(t, v)| *t >= stopped_at && *v >= 15.0)
            .map(|(t, _)| t.duration_since(stopped_at));
        let peak = samples.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        eprintln!(
            "peer {}: before stop peak {before}, 15 reached after {reached:?}, peak {peak}",
            i + 1
        );
        assert!(before <= 10.0, "peer {} exceeded 10 before the stop", i + 1);
        assert!(peak <= 15.0, "peer {} exceeded 15: {peak}", i + 1);
        let reached = reached.unwrap_or_else(|| {
            let share = peers[i].metric("switchyard_server_connection_budget", &[]);
            panic!("peer {} never reached 15 (share now {share:?})", i + 1)
        });
        // Check interval 300 ms + check timeout 200 ms, plus scheduling.
        assert!(reached < Duration::from_millis(1500), "took {reached:?}");
        peers[i].wait_metric("switchyard_peers_live", &[], 2.0, Duration::from_secs(1));
    }

    // Phase 3: peer 3 comes back under load: 1 and 2 shrink to 10 again
    // (idle connections closed at once, busy ones as they come back).
    let busy = AtomicBool::new(true);
    let mut seen = vec![Vec::new(), Vec::new()];
    let mut joined_at = Instant::now();
    let mut rejoined = None;
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_connections(&refs, &busy, &mut seen));
        let runs: Vec<_> = peers.iter().map(|p| run(p, "4")).collect();
        std::thread::sleep(Duration::from_secs(1));
        let sections = static_peers(3, &ids, &ports) + budget;
        rejoined = Some(start_peer(&cluster, loopback(ports[2]), server, &sections));
        joined_at = Instant::now();
        for child in runs {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        busy.store(false, Ordering::Relaxed);
        sampler.join().unwrap();
    });
    for (i, samples) in seen.iter().enumerate() {
        let after: Vec<_> = samples.iter().filter(|(t, _)| *t >= joined_at).collect();
        // From this sample on, never above the new share.
        let settled = after
            .iter()
            .rposition(|(_, v)| *v > 10.0)
            .map_or(0, |last| last + 1);
        let settled_at = after
            .get(settled)
            .map(|(t, _)| t.duration_since(joined_at))
            .unwrap_or_else(|| panic!("peer {} stayed above 10", i + 1));
        eprintln!("peer {}: back to at most 10 after {settled_at:?}", i + 1);
        assert!(
            settled_at < Duration::from_millis(1500),
            "took {settled_at:?}"
        );
    }
    drop(rejoined);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_pooled_clients_wait_for_the_budget_then_get_53300() {
    let _serial = SERIAL.lock().await;
    let cluster = LocalCluster::start(&spec()).expect("start cluster");
    // No [peers]: the whole budget (1 connection per node) is this pod's.
    let pool = "\n[pool]\nmax_server_connections_per_node = 1\ncheckout_timeout = \"300ms\"\n";
    let proxy = start_peer(&cluster, loopback(free_port()), "", pool);
    proxy.wait_metric(
        "switchyard_server_connection_budget",
        &[],
        1.0,
        Duration::from_secs(5),
    );
    let first = connect(&proxy.dsn()).await;
    first.simple_query("SELECT 1").await.unwrap();
    let started = Instant::now();
    let refused = tokio_postgres::connect(&proxy.dsn(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a second session is refused while the budget is in use");
    let waited = started.elapsed();
    assert_eq!(
        refused.code(),
        Some(&SqlState::TOO_MANY_CONNECTIONS),
        "{refused}"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "refused after {waited:?}"
    );
    // The first session leaves: its unit comes back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match tokio_postgres::connect(&proxy.dsn(), tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await.unwrap();
                break;
            }
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
    }
}
