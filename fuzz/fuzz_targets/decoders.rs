//! Feeds arbitrary bytes to every decoder that sees untrusted input: the
//! startup packet parser, the whole-frame reader, and the streaming scanner
//! (with the input split at a fuzzer-chosen point, as reads split it).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::protocol::{FrameScanner, read_frame, read_startup_packet};

fuzz_target!(|data: &[u8]| {
    let mut startup = BytesMut::from(data);
    while let Ok(Some(_)) = read_startup_packet(&mut startup) {}

    let mut frames = BytesMut::from(data);
    while let Ok(Some(frame)) = read_frame(&mut frames, 1 << 16) {
        assert!(frame.body.len() < 1 << 16);
    }

    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (a, b) = data.split_at(split);
    let mut scanner = FrameScanner::new(1 << 16);
    let mut whole = FrameScanner::new(1 << 16);
    let mut pieces = Vec::new();
    let mut at_once = Vec::new();
    let split_result = scanner
        .scan(a, |tag, head| pieces.push((tag, head.to_vec())))
        .and_then(|()| scanner.scan(b, |tag, head| pieces.push((tag, head.to_vec()))));
    let whole_result = whole.scan(data, |tag, head| at_once.push((tag, head.to_vec())));
    // However the bytes are split, the scanner sees the same frames.
    if split_result.is_ok() && whole_result.is_ok() {
        assert_eq!(pieces, at_once);
    }
    assert_eq!(split_result.is_ok(), whole_result.is_ok());
});
