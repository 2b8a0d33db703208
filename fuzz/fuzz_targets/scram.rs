//! Feeds arbitrary bytes to the SCRAM parsers: the proxy's server side
//! (client-first and client-final, with and without channel binding), its
//! client side with recovered keys (server-first and server-final), and
//! pg_authid verifier text.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard::backend::{KeysExchange, ScramKeys};
use switchyard::session::{AwaitingClientFinal, Binding, MECHANISM, MECHANISM_PLUS, ScramVerifier};

fn verifier() -> &'static ScramVerifier {
    static VERIFIER: OnceLock<ScramVerifier> = OnceLock::new();
    // mock(): no PBKDF2, so each run stays fast.
    VERIFIER.get_or_init(|| ScramVerifier::mock("fuzz", b"secret"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (first, second) = rest.split_at(split);
    let second = second.get(1..).unwrap_or_default();

    let _ = ScramVerifier::parse(&String::from_utf8_lossy(first));

    let mechanism = if control & 1 == 1 { MECHANISM_PLUS } else { MECHANISM };
    let binding = if control & 2 == 2 {
        Binding::TlsServerEndPoint(vec![control; 32].into())
    } else {
        Binding::None
    };
    if let Ok(exchange) = AwaitingClientFinal::start(verifier().clone(), mechanism, first, binding) {
        // Splice the real nonce in, so the fuzzer reaches the proof check.
        let nonce = exchange
            .server_first()
            .split(',')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut client_final = b"c=biws,".to_vec();
        if control & 4 == 4 {
            client_final.extend_from_slice(nonce.as_bytes());
            client_final.push(b',');
        }
        client_final.extend_from_slice(second);
        assert!(exchange.finish(&client_final).is_err(), "a mock verifier never authenticates");
    }

    let mut client = KeysExchange::new(ScramKeys {
        client_key: [1; 32],
        server_key: [2; 32],
        salt: vec![3; 16],
        iterations: 4096,
    });
    if control & 8 == 8 {
        // A well-formed server-first, so server-final parsing is reached.
        let server_first = format!(
            "r={}srv,s=AwMDAwMDAwMDAwMDAwMDAw==,i=4096",
            &client.client_first()[8..]
        );
        let _ = client.respond(server_first.as_bytes());
    } else {
        let _ = client.respond(first);
    }
    let _ = client.finish(second);
});
