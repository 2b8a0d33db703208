//! Property tests over the decoders that see untrusted bytes: no input makes
//! them panic, read out of bounds or allocate past the limit, and the
//! streaming scanner agrees with the whole-frame reader however the stream
//! is split.

use bytes::BytesMut;
use proptest::prelude::*;
use switchyard::protocol::{FrameScanner, read_frame, read_startup_packet};

const LIMIT: usize = 4096;

fn frame_strategy() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300))
}

fn encode(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, body) in frames {
        out.push(*tag);
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = read_startup_packet(&mut buf) {}
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(frame)) = read_frame(&mut buf, LIMIT) {
            prop_assert!(frame.body.len() + 5 <= LIMIT);
        }
        prop_assert!(buf.capacity() <= data.len().max(LIMIT) + 64);
        let mut scanner = FrameScanner::new(LIMIT);
        let _ = scanner.scan(&data, |_, head| assert!(head.len() <= 8));
    }

    #[test]
    fn scanner_agrees_with_whole_frames_however_split(
        frames in proptest::collection::vec(frame_strategy(), 1..20),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let stream = encode(&frames);
        let mut positions: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        positions.push(0);
        positions.push(stream.len());
        positions.sort_unstable();
        let mut scanner = FrameScanner::new(LIMIT);
        let mut seen = Vec::new();
        for pair in positions.windows(2) {
            scanner.scan(&stream[pair[0]..pair[1]], |tag, head| seen.push((tag, head.to_vec()))).unwrap();
        }
        prop_assert!(scanner.at_boundary());
        let mut buf = BytesMut::from(&stream[..]);
        let mut whole = Vec::new();
        while let Some(frame) = read_frame(&mut buf, LIMIT).unwrap() {
            whole.push((frame.tag, frame.body[..frame.body.len().min(8)].to_vec()));
        }
        prop_assert_eq!(seen, whole);
    }

    #[test]
    fn startup_packets_round_trip(params in proptest::collection::vec(("[a-z_]{1,12}", "[ -~]{0,20}"), 0..6)) {
        let mut body = 196_608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0u\0");
        for (k, v) in &params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = (body.len() as u32 + 4).to_be_bytes().to_vec();
        packet.extend(body);
        let parsed = read_startup_packet(&mut BytesMut::from(&packet[..]));
        if packet.len() <= 10_000 {
            let parsed = parsed.unwrap().unwrap();
            match parsed {
                switchyard::protocol::StartupPacket::Startup { params: got, .. } => {
                    let expected: Vec<(String, String)> = std::iter::once(("user".to_owned(), "u".to_owned()))
                        .chain(params.iter().filter(|(k, _)| !k.starts_with("_pq_.")).cloned())
                        .collect();
                    prop_assert_eq!(got, expected);
                }
                other => prop_assert!(false, "parsed as {:?}", other),
            }
        }
    }
}
