//! Feeds arbitrary bytes to every decoder that sees untrusted input: the
//! startup packet parser, the whole-frame reader, and the streaming scanner
//! (with the input split at a fuzzer-chosen point, as reads split it); each
//! message body the proxy decodes (Parse, Bind, Describe/Close, an
//! ErrorResponse's code and statement names, the SQL text the router
//! lexes, a whole request as the router inspects it); and the names read
//! from a client certificate.
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::protocol::messages::error_code;
use switchyard::protocol::{FrameScanner, read_frame, read_startup_packet};
use switchyard::router::access::{self, WriteFunctions};
use switchyard::router::effects::session_effects_bytes;
use switchyard::session::transaction::request::{Classifier, inspect};
use switchyard::session::transaction::statements::{
    self, ClientStatement, ClientStatements, read_bind, read_parse, read_target,
};
use switchyard::tls::CertificateNames;
use switchyard::topology::LearnedWrites;

/// Statement names the client "prepared", so renaming and Bind lookups find some.
fn known() -> &'static (ClientStatements, WriteFunctions, LearnedWrites) {
    static KNOWN: OnceLock<(ClientStatements, WriteFunctions, LearnedWrites)> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let functions = WriteFunctions::default();
        let mut known = ClientStatements::default();
        for name in ["s1", "P_0", ""] {
            let body = format!("{name}\0SELECT 1\0\0\0");
            let parse = read_parse(body.as_bytes()).expect("a well-formed Parse");
            known.define(name.as_bytes(), ClientStatement::from_parse(&parse, &functions));
        }
        (known, functions, LearnedWrites::default())
    })
}

fuzz_target!(|data: &[u8]| {
    let (known, functions, learned) = known();
    let _ = read_parse(data);
    let _ = read_bind(data);
    let _ = read_target(data, "Describe");
    let _ = error_code(data);
    let _ = statements::rename_in_error(data, known);
    let _ = access::classify(data, functions);
    let _ = access::hint(data);
    let _ = access::route_setting(data);
    let _ = session_effects_bytes(data);
    for opened in [false, true] {
        let classifier = Classifier {
            functions,
            learned,
            opened,
        };
        let request = inspect(data, 1 << 16, known, Some(classifier));
        assert!(request.len <= data.len());
    }
    let _ = CertificateNames::from_der(data);

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
