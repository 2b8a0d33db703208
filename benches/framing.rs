//! The per-message cost of the relay's framing path: scanning a stream of
//! typical server messages (RowDescription, DataRows, CommandComplete,
//! ReadyForQuery) and client messages, as the relay does for every read.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard::protocol::FrameScanner;
use switchyard::protocol::read_frame;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// What a server sends for `pgbench -S`: one row, one column.
fn select_response() -> Vec<u8> {
    let mut out = frame(b'1', b"");
    out.extend(frame(b'2', b""));
    out.extend(frame(
        b'T',
        b"\0\x01abalance\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    ));
    out.extend(frame(b'D', b"\0\x01\0\0\0\x041234"));
    out.extend(frame(b'C', b"SELECT 1\0"));
    out.extend(frame(b'Z', b"I"));
    out
}

fn bench_scanner(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_scanner");
    let one = select_response();
    let messages_per_response = 6u64;
    group.throughput(Throughput::Elements(messages_per_response));
    group.bench_function("pgbench_select_response", |b| {
        let mut scanner = FrameScanner::new(1 << 30);
        b.iter(|| {
            let mut readies = 0u32;
            scanner
                .scan(std::hint::black_box(&one), |tag, _| {
                    readies += u32::from(tag == b'Z')
                })
                .unwrap();
            readies
        })
    });
    // Many rows in one 16 KiB read, the bulk-result case.
    let mut rows = Vec::new();
    while rows.len() < 16 * 1024 - 64 {
        rows.extend(frame(b'D', b"\0\x02\0\0\0\x0512345\0\0\0\x0bhello world"));
    }
    let frames = (rows.len() / 29) as u64;
    group.throughput(Throughput::Elements(frames));
    group.bench_with_input(
        BenchmarkId::new("data_rows_16k_read", frames),
        &rows,
        |b, rows| {
            let mut scanner = FrameScanner::new(1 << 30);
            b.iter(|| scanner.scan(std::hint::black_box(rows), |_, _| {}).unwrap())
        },
    );
    // The same stream split into 7-byte pieces: headers straddle reads.
    group.bench_function("pgbench_select_response_split_7", |b| {
        let mut scanner = FrameScanner::new(1 << 30);
        b.iter(|| {
            for piece in one.chunks(7) {
                scanner
                    .scan(std::hint::black_box(piece), |_, _| {})
                    .unwrap();
            }
        })
    });
    group.finish();

    c.bench_function("read_frame_whole/query", |b| {
        let query = frame(
            b'Q',
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 42;\0",
        );
        b.iter(|| {
            let mut buf = bytes::BytesMut::from(&query[..]);
            read_frame(&mut buf, 1 << 20).unwrap()
        })
    });
}

criterion_group!(benches, bench_scanner);
criterion_main!(benches);
