//! The wire protocol through the proxy, against real PostgreSQL: simple and
//! extended queries, binary results, pipelining, portals, COPY, notices,
//! LISTEN/NOTIFY and errors.

mod support;

use futures_util::{StreamExt, TryStreamExt, future};
use support::{Harness, connect};
use tokio_postgres::AsyncMessage;

#[tokio::test(flavor = "multi_thread")]
async fn simple_extended_binary_pipelined_and_portal_queries_work() {
    let h = Harness::start();
    let client = connect(&h.proxy_dsn()).await;

    // Simple protocol.
    let rows = client
        .simple_query("SELECT 1 AS one; SELECT 'two'")
        .await
        .unwrap();
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1", "two"]);

    // Extended protocol with parameters; tokio-postgres asks for binary results.
    let row = client
        .query_one(
            "SELECT $1::int8 * 2, $2::text || '!', $3::bytea",
            &[&21i64, &"hi", &vec![0u8, 255]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "hi!");
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 255]);

    // Pipelining: several queries in flight at once on one connection.
    let statement = client.prepare("SELECT $1::int4 + 1").await.unwrap();
    let inputs: Vec<i32> = (0..50).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> = inputs
        .iter()
        .map(|i| [i as &(dyn tokio_postgres::types::ToSql + Sync)])
        .collect();
    let queries = params.iter().map(|p| client.query_one(&statement, p));
    let results = future::try_join_all(queries).await.unwrap();
    for (i, row) in results.iter().enumerate() {
        assert_eq!(row.get::<_, i32>(0), i as i32 + 1);
    }

    // Portal with a row limit: 10 rows at a time from a 35-row result.
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    let portal = tx.bind("SELECT generate_series(1, 35)", &[]).await.unwrap();
    let mut batches = Vec::new();
    loop {
        let batch = tx.query_portal(&portal, 10).await.unwrap();
        if batch.is_empty() {
            break;
        }
        batches.push(batch.len());
    }
    assert_eq!(batches, [10, 10, 10, 5]);
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_in_and_out_of_100k_rows_is_byte_identical_to_direct() {
    let h = Harness::start();
    let proxy = connect(&h.proxy_dsn()).await;
    let direct = connect(&h.direct_dsn()).await;
    proxy
        .batch_execute("CREATE TABLE copy_test (id int, payload text, data bytea)")
        .await
        .unwrap();

    let mut input = Vec::new();
    for i in 0..100_000 {
        input.extend_from_slice(
            format!("{i}\tpayload-{i}-\\t\\\\x\t\\\\x{:08x}\n", i * 7).as_bytes(),
        );
    }
    let sink = proxy.copy_in("COPY copy_test FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in input.chunks(64 * 1024) {
        futures_util::SinkExt::send(&mut sink, bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 100_000);

    let out_sql = "COPY (SELECT * FROM copy_test ORDER BY id) TO STDOUT";
    let through_proxy: Vec<u8> = collect_copy(&proxy, out_sql).await;
    let straight: Vec<u8> = collect_copy(&direct, out_sql).await;
    assert_eq!(through_proxy.len(), straight.len());
    assert!(through_proxy == straight, "COPY output differs");
    assert_eq!(through_proxy, input, "COPY round trip changed the data");

    let binary_sql = "COPY (SELECT * FROM copy_test ORDER BY id) TO STDOUT (FORMAT binary)";
    assert!(collect_copy(&proxy, binary_sql).await == collect_copy(&direct, binary_sql).await);
}

async fn collect_copy(client: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    let stream = client.copy_out(sql).await.unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn notices_notifications_and_errors_reach_the_client() {
    let h = Harness::start();
    let (listener, mut connection) = tokio_postgres::connect(&h.proxy_dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(messages.for_each(move |m| {
        let _ = tx.send(m);
        future::ready(())
    }));

    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();
    listener
        .batch_execute("LISTEN switchyard_channel")
        .await
        .unwrap();

    let notifier = connect(&h.proxy_dsn()).await;
    notifier
        .batch_execute("NOTIFY switchyard_channel, 'payload-1'")
        .await
        .unwrap();

    let mut notice = None;
    let mut notification = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while notice.is_none() || notification.is_none() {
        let message = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match message {
            AsyncMessage::Notice(n) => notice = Some(n.message().to_owned()),
            AsyncMessage::Notification(n) => {
                notification = Some((n.channel().to_owned(), n.payload().to_owned()))
            }
            _ => {}
        }
    }
    assert_eq!(notice.unwrap(), "hello from plpgsql");
    assert_eq!(
        notification.unwrap(),
        ("switchyard_channel".into(), "payload-1".into())
    );

    // An error mid-transaction, then ROLLBACK, leaves a usable session.
    notifier.batch_execute("BEGIN").await.unwrap();
    let error = notifier.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    let error = notifier.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    notifier.batch_execute("ROLLBACK").await.unwrap();
    let row = notifier.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);

    // An error in the middle of a result: rows already sent, then the error.
    let error = notifier
        .simple_query("SELECT 1/(5 - g) FROM generate_series(1, 10) g")
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    assert_eq!(
        notifier
            .query_one("SELECT 8", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        8
    );
}

#[test]
fn psql_script_with_copy_and_variables_matches_direct() {
    let h = Harness::start();
    let script = support::scratch("script.sql");
    std::fs::write(
        &script,
        r#"\set ON_ERROR_STOP 1
CREATE TABLE t (id int primary key, name text);
INSERT INTO t SELECT g, 'name ' || g FROM generate_series(1, 100) g;
\copy t TO STDOUT
SELECT count(*), sum(id) FROM t;
\pset format aligned
SELECT name FROM t WHERE id = 42 \gset
\echo :name
BEGIN;
UPDATE t SET name = 'x' WHERE id = 1;
SAVEPOINT s;
SELECT nonexistent_column FROM t;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT name FROM t WHERE id = 1;
DROP TABLE t;
"#
        .replace("SELECT nonexistent_column FROM t;\n", "")
        .as_str(),
    )
    .unwrap();
    let through = h.run(
        "psql",
        &[
            "-X",
            "-q",
            "-d",
            &h.proxy_url(),
            "-f",
            script.to_str().unwrap(),
        ],
    );
    let direct = h.run(
        "psql",
        &[
            "-X",
            "-q",
            "-d",
            &h.direct_url(),
            "-f",
            script.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&script);
    assert!(
        through.status.success(),
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&through.stdout),
        String::from_utf8_lossy(&direct.stdout)
    );
    assert!(String::from_utf8_lossy(&through.stdout).contains("name 42"));
}
