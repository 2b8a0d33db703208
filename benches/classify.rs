//! The read/write classifier on typical statements: the router runs it for
//! every simple Query and every Parse, so it must cost nearly nothing
//! (target: ≤ 200 ns per typical statement). `classify` is a first
//! sight of a text (a lexer pass); `classify_remembered` is what the router
//! pays for a text it has seen before on this thread.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use switchyard::router::access::{WriteFunctions, classify, hint};
use switchyard::router::memo;

const STATEMENTS: &[(&str, &str)] = &[
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    ),
    (
        "pgbench_update",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
    ),
    (
        "orm_join",
        "SELECT \"users\".\"id\", \"users\".\"email\", \"orders\".\"total\" FROM \"users\" \
         INNER JOIN \"orders\" ON \"orders\".\"user_id\" = \"users\".\"id\" \
         WHERE \"users\".\"id\" = $1 AND \"orders\".\"status\" IN ($2, $3) \
         ORDER BY \"orders\".\"created_at\" DESC LIMIT 20",
    ),
    (
        "cte_read",
        "WITH recent AS (SELECT id, total FROM orders WHERE created_at > now() - interval '1 day') \
         SELECT count(*), sum(total) FROM recent",
    ),
    (
        "for_update",
        "SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    ),
    (
        "insert",
        "INSERT INTO events (kind, payload) VALUES ($1, $2) RETURNING id",
    ),
];

fn classifier(c: &mut Criterion) {
    let functions = WriteFunctions::default();
    let mut group = c.benchmark_group("classify");
    for (name, sql) in STATEMENTS {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let sql = black_box(sql.as_bytes());
                (hint(sql), classify(sql, &functions))
            })
        });
    }
    group.finish();
    // What the router runs: the same texts again, remembered per thread.
    let mut group = c.benchmark_group("classify_remembered");
    for (name, sql) in STATEMENTS {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let sql = black_box(sql.as_bytes());
                (hint(sql), memo::classify(sql, &functions, false))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, classifier);
criterion_main!(benches);
