//! Large results stream through the proxy with bounded memory.

mod support;

use std::time::Instant;

use futures_util::TryStreamExt;
use support::{Harness, connect};

#[tokio::test(flavor = "multi_thread")]
async fn one_gigabyte_result_streams_with_proxy_rss_under_64_mib() {
    let h = Harness::start();
    let client = connect(&h.proxy_dsn()).await;
    let rows: i64 = 1_100_000;
    let width: i32 = 1000;
    let started = Instant::now();
    let stream = client
        .query_raw(
            "SELECT repeat('x', $1) FROM generate_series(1, $2::int8)",
            [&width as &(dyn tokio_postgres::types::ToSql + Sync), &rows],
        )
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut bytes: u64 = 0;
    let mut count: i64 = 0;
    while let Some(row) = stream.try_next().await.unwrap() {
        bytes += row.get::<_, &str>(0).len() as u64;
        count += 1;
    }
    assert_eq!(count, rows);
    assert!(bytes >= 1_000_000_000, "only {bytes} bytes");
    let peak = h.proxy.peak_rss_kib();
    eprintln!(
        "streamed {bytes} bytes in {:?}; proxy peak RSS {peak} KiB",
        started.elapsed()
    );
    assert!(peak < 64 * 1024, "proxy peak RSS {peak} KiB");
}
