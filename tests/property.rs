//! Property tests over the decoders that see untrusted bytes: no input makes
//! them panic, read out of bounds or allocate past the limit, and the
//! streaming scanner agrees with the whole-frame reader however the stream
//! is split.

use bytes::BytesMut;
use proptest::prelude::*;
use switchyard::protocol::messages::error_code;
use switchyard::protocol::scanner::HEAD_LEN;
use switchyard::protocol::{FrameScanner, read_frame, read_startup_packet};
use switchyard::router::access::{self, WriteFunctions};
use switchyard::router::effects::session_effects_bytes;
use switchyard::session::transaction::request::{Classifier, inspect};
use switchyard::session::transaction::statements::{
    self, ClientStatement, ClientStatements, read_bind, read_parse, read_target,
};
use switchyard::tls::CertificateNames;
use switchyard::topology::LearnedWrites;

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

    /// The message bodies the proxy decodes and the client certificate
    /// names, as the fuzz target `decoders` feeds them.
    #[test]
    fn message_decoders_and_certificate_names_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let functions = WriteFunctions::default();
        let mut known = ClientStatements::default();
        for name in ["s1", "P_0", ""] {
            let body = format!("{name}\0SELECT 1\0\0\0");
            let parse = read_parse(body.as_bytes()).unwrap();
            known.define(name.as_bytes(), ClientStatement::from_parse(&parse, &functions));
        }
        let _ = read_parse(&data);
        let _ = read_bind(&data);
        let _ = read_target(&data, "Describe");
        let _ = error_code(&data);
        let _ = statements::rename_in_error(&data, &known);
        let _ = access::classify(&data, &functions);
        let _ = access::hint(&data);
        let _ = access::route_setting(&data);
        let _ = session_effects_bytes(&data);
        let learned = LearnedWrites::default();
        for opened in [false, true] {
            let classifier = Classifier { functions: &functions, learned: &learned, opened };
            let request = inspect(&data, LIMIT, &known, Some(classifier));
            prop_assert!(request.len <= data.len());
        }
        prop_assert!(inspect(&data, LIMIT, &known, None).len <= data.len());
        let _ = CertificateNames::from_der(&data);
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
            whole.push((frame.tag, frame.body[..frame.body.len().min(HEAD_LEN)].to_vec()));
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

/// The same inputs as the `negotiation` and `scram` fuzz targets (fuzz/),
/// as property tests in the normal suite.
mod negotiation_and_scram {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::BytesMut;
    use proptest::prelude::*;
    use switchyard::backend::{KeysExchange, ScramKeys};
    use switchyard::session::{
        AwaitingClientFinal, Binding, MECHANISM, MECHANISM_PLUS, Opening, ScramVerifier,
        read_opening,
    };
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// A socket whose peer sent `input` in chunks of `chunk` bytes, then closed.
    struct Replay {
        input: Vec<u8>,
        chunk: usize,
        written: usize,
    }

    impl AsyncRead for Replay {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.input.len().min(self.chunk).min(buf.remaining());
            let taken: Vec<u8> = self.input.drain(..n).collect();
            buf.put_slice(&taken);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Replay {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written += buf.len();
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn ssl_request() -> Vec<u8> {
        let mut packet = 8u32.to_be_bytes().to_vec();
        packet.extend_from_slice(&80_877_103i32.to_be_bytes());
        packet
    }

    fn opening(
        input: Vec<u8>,
        chunk: usize,
        tls_offered: bool,
    ) -> (Result<Opening, String>, usize, usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut stream = Replay {
            input,
            chunk,
            written: 0,
        };
        let mut buf = BytesMut::new();
        let result = runtime.block_on(read_opening(&mut stream, &mut buf, tls_offered));
        (result.map_err(|e| e.to_string()), stream.written, buf.len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn opening_never_panics_and_only_accepts_tls_when_offered(
            prefix_ssl in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..512),
            chunk in 1usize..64,
            tls_offered in any::<bool>(),
        ) {
            let mut input = if prefix_ssl { ssl_request() } else { Vec::new() };
            let smuggled = !data.is_empty();
            input.extend(data);
            let (result, written, left) = opening(input, chunk, tls_offered);
            if let Ok(Opening::TlsRequest) = result {
                prop_assert!(tls_offered);
                prop_assert_eq!(left, 0);
            }
            if prefix_ssl && tls_offered && smuggled {
                // Bytes behind an SSLRequest are an injection attempt, never TLS.
                prop_assert!(!matches!(result, Ok(Opening::TlsRequest)) || chunk <= 8);
            }
            prop_assert!(written <= 3 + 10_016);
        }

        #[test]
        fn scram_parsers_never_panic_and_a_mock_never_authenticates(
            first in proptest::collection::vec(any::<u8>(), 0..200),
            second in proptest::collection::vec(any::<u8>(), 0..200),
            control in any::<u8>(),
        ) {
            let _ = ScramVerifier::parse(&String::from_utf8_lossy(&first));
            let verifier = ScramVerifier::mock("prop", b"secret");
            let mechanism = if control & 1 == 1 { MECHANISM_PLUS } else { MECHANISM };
            let binding = if control & 2 == 2 { Binding::TlsServerEndPoint(vec![control; 32].into()) } else { Binding::None };
            if let Ok(exchange) = AwaitingClientFinal::start(verifier, mechanism, &first, binding) {
                let nonce = exchange.server_first().split(',').next().unwrap_or_default().to_owned();
                let mut client_final = format!("c=biws,{nonce},").into_bytes();
                client_final.extend_from_slice(&second);
                prop_assert!(exchange.finish(&client_final).is_err());
            }
            let mut client = KeysExchange::new(ScramKeys {
                client_key: [1; 32],
                server_key: [2; 32],
                salt: vec![3; 16],
                iterations: 4096,
            });
            let _ = client.respond(&first);
            let _ = client.finish(&second);
        }

        #[test]
        fn well_formed_client_first_messages_start_an_exchange(
            nonce in "[!-+--~]{1,40}",
            plus in any::<bool>(),
        ) {
            let verifier = ScramVerifier::mock("prop", b"secret");
            let (mechanism, flag, binding) = if plus {
                (MECHANISM_PLUS, "p=tls-server-end-point", Binding::TlsServerEndPoint(vec![9; 32].into()))
            } else {
                (MECHANISM, "n", Binding::None)
            };
            let first = format!("{flag},,n=,r={nonce}");
            let exchange = AwaitingClientFinal::start(verifier, mechanism, first.as_bytes(), binding).unwrap();
            let server_first = exchange.server_first().to_owned();
            let prefix = format!("r={nonce}");
            prop_assert!(server_first.starts_with(&prefix));
        }
    }
}
