//! Transaction pooling holds thousands of idle clients in little memory.

mod support;

use std::time::{Duration, Instant};

use support::raw::{read_message, startup_packet};
use switchyard::testcluster::LocalCluster;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CLIENTS: usize = 5000;

async fn idle_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&startup_packet(&[("user", "bulk"), ("database", "appdb")]))
        .await
        .unwrap();
    loop {
        let (tag, body) = read_message(&mut stream).await;
        match tag {
            b'Z' => return stream,
            b'E' => panic!("login failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
}

/// A cluster with the trust user `bulk`, and a transaction-pooling proxy
/// in front of it whose `[pool]` table holds `pool`.
fn bulk_proxy(pool: &str) -> (LocalCluster, support::ProxyProcess) {
    let mut spec = support::spec();
    spec.users.push(("bulk".into(), "bulk-secret".into()));
    let cluster = LocalCluster::start(&spec).unwrap();
    let server = format!("pool_mode = \"transaction\"\nworker_threads = 2\n\n[pool]\n{pool}");
    let config = format!(
        "{}\n[[users]]\nname = \"bulk\"\npassword = \"bulk-secret\"\nauth = \"trust\"\n",
        support::proxy_config(&cluster, &server)
    );
    let proxy = support::ProxyProcess::start(&config);
    (cluster, proxy)
}

fn current_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_idle_clients_fit_in_64_mib() {
    let (cluster, proxy) = bulk_proxy("max_size = 4");
    let started = Instant::now();
    // One client first: the baseline is the proxy with its pools warmed.
    let first = idle_client(proxy.addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = current_rss_kib(proxy.pid());
    let mut clients = vec![first];
    while clients.len() < CLIENTS {
        let batch = (0..250.min(CLIENTS - clients.len())).map(|_| idle_client(proxy.addr));
        clients.extend(futures_util::future::join_all(batch).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = current_rss_kib(proxy.pid());
    let per_client = (rss - baseline) * 1024 / (clients.len() as u64 - 1);
    eprintln!(
        "{} idle clients logged in in {:?}; proxy RSS {rss} KiB, {baseline} KiB with one client \
         ({per_client} bytes per further client)",
        clients.len(),
        started.elapsed(),
    );
    assert_eq!(clients.len(), CLIENTS);
    // Measured at 6.3 KB: a session's task that grows by kilobytes shows
    // here long before it breaks the 64 MiB bound.
    assert!(per_client <= 8 * 1024, "{per_client} bytes per idle client");
    assert!(
        rss < 64 * 1024,
        "proxy RSS {rss} KiB with {CLIENTS} idle clients"
    );
    // The server saw only the pool's connections.
    let backends = cluster
        .primary()
        .psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'bulk'")
        .unwrap();
    assert!(
        backends.parse::<usize>().unwrap() <= 4,
        "{backends} server connections"
    );
}

/// Sends one simple Query and reads its answer up to ReadyForQuery.
async fn simple_query(stream: &mut TcpStream, sql: &str) {
    let mut frame = vec![b'Q'];
    frame.extend_from_slice(&(sql.len() as u32 + 5).to_be_bytes());
    frame.extend_from_slice(sql.as_bytes());
    frame.push(0);
    stream.write_all(&frame).await.unwrap();
    loop {
        let (tag, body) = read_message(stream).await;
        match tag {
            b'Z' => return,
            b'E' => panic!("query failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_pooled_connections_let_go_of_what_a_large_request_grew() {
    let (_cluster, proxy) = bulk_proxy("max_size = 4\nmin_size = 4");
    let mut warm = idle_client(proxy.addr).await;
    simple_query(&mut warm, "SELECT 1").await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = current_rss_kib(proxy.pid());
    // Four clients at once, so all four pooled connections carry a request
    // of 40 MB (above glibc's largest mmap threshold, so freed memory
    // leaves the process and RSS shows it).
    let big = format!("SELECT length('{}')", "x".repeat(40 << 20));
    let clients = (0..4).map(|_| {
        let big = big.clone();
        let addr = proxy.addr;
        async move {
            let mut stream = idle_client(addr).await;
            simple_query(&mut stream, &big).await;
            stream
        }
    });
    let streams = futures_util::future::join_all(clients).await;
    // The clients stay, idle between transactions, and so do their pooled
    // connections: neither keeps what the requests grew.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = proxy.peak_rss_kib();
    let rss = current_rss_kib(proxy.pid());
    eprintln!("proxy RSS {baseline} KiB before, peak {peak} KiB, {rss} KiB after");
    assert!(
        peak > baseline + 100 * 1024,
        "the requests went through the proxy's buffers"
    );
    assert!(
        rss < baseline + 40 * 1024,
        "idle clients and pooled connections hold {} KiB after the requests",
        rss - baseline
    );
    drop(streams);
}
