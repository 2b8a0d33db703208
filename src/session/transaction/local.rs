//! Requests the proxy answers without a server connection: a batch of
//! Parse (of statements known to parse), Close of statements, and Flush,
//! ended by Sync, from an idle client. Drivers re-prepare the same
//! statements on every new connection; answering them here keeps a client
//! that prepares synchronously (pgbench -M prepared) from waiting for a
//! pooled connection it does not need.

use super::catalog::PoolCatalog;
use super::relay::{ClientState, complete_frame};
use super::statements::{self, ClientStatement};
use super::tracker::Synthetic;
use crate::protocol::frame::HEADER_LEN;
use crate::router::access::WriteFunctions;

/// Answers the buffered batch if it qualifies, its ReadyForQuery saying
/// `status` (the proxy may hold a client's BEGIN); true when it did.
pub fn answer(
    state: &mut ClientState,
    catalog: &PoolCatalog,
    functions: &WriteFunctions,
    status: u8,
) -> bool {
    let Some(batch_len) = qualifying_batch(&state.client_in, catalog) else {
        return false;
    };
    let batch = state.client_in.split_to(batch_len);
    let mut pos = 0;
    while pos < batch.len() {
        let len = frame_len(&batch[pos..]).unwrap_or(batch.len() - pos);
        let frame = &batch[pos..pos + len];
        let body = &frame[HEADER_LEN..];
        match frame[0] {
            b'P' => {
                if let Ok(parse) = statements::read_parse(body) {
                    let statement = ClientStatement::from_parse(&parse, functions);
                    state.statements.define(parse.name, statement);
                }
                state
                    .to_client
                    .extend_from_slice(Synthetic::ParseComplete.bytes());
            }
            b'C' => {
                if let Ok((_, name)) = statements::read_target(body, "Close") {
                    state.statements.remove(name);
                }
                state
                    .to_client
                    .extend_from_slice(Synthetic::CloseComplete.bytes());
            }
            b'S' => crate::protocol::messages::ready_for_query(&mut state.to_client, status),
            _ => {}
        }
        pos += len;
    }
    true
}

fn frame_len(buf: &[u8]) -> Option<usize> {
    // Any length is acceptable here: the frame is already buffered whole.
    complete_frame(buf, usize::MAX)
        .ok()
        .flatten()
        .map(|(_, len)| len)
}

/// Length of the batch up to and including its Sync, when every message in
/// it can be answered locally.
fn qualifying_batch(buf: &[u8], catalog: &PoolCatalog) -> Option<usize> {
    let mut pos = 0;
    loop {
        let len = frame_len(&buf[pos..])?;
        let frame = &buf[pos..pos + len];
        let body = &frame[HEADER_LEN..];
        let local = match frame[0] {
            b'S' => return Some(pos + len),
            b'H' => true,
            b'P' => statements::read_parse(body).is_ok_and(|p| {
                !p.name.is_empty() && catalog.is_valid(statements::definition_hash(p.definition))
            }),
            b'C' => statements::read_target(body, "Close")
                .is_ok_and(|(kind, name)| kind == b'S' && !name.is_empty()),
            _ => false,
        };
        if !local {
            return None;
        }
        pos += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    use crate::protocol::frame::encode_frame as frame;

    #[test]
    fn known_parse_and_sync_are_answered_locally() {
        let catalog = PoolCatalog::default();
        let definition = b"SELECT 1\0\0\0";
        catalog.mark_valid(statements::definition_hash(definition));
        let mut state = ClientState::default();
        let mut input = frame(b'P', b"P_0\0SELECT 1\0\0\0");
        input.extend(frame(b'S', b""));
        state.client_in = BytesMut::from(&input[..]);
        assert!(answer(
            &mut state,
            &catalog,
            &WriteFunctions::default(),
            b'I'
        ));
        assert_eq!(&state.to_client[..], b"1\0\0\0\x04Z\0\0\0\x05I");
        assert!(state.client_in.is_empty());
        assert!(state.statements.get(b"P_0").is_some());
    }

    #[test]
    fn unknown_statements_and_other_messages_need_a_server() {
        let catalog = PoolCatalog::default();
        let mut state = ClientState::default();
        let mut input = frame(b'P', b"P_0\0SELECT 1\0\0\0");
        input.extend(frame(b'S', b""));
        state.client_in = BytesMut::from(&input[..]);
        assert!(!answer(
            &mut state,
            &catalog,
            &WriteFunctions::default(),
            b'I'
        ));
        let mut input = frame(b'Q', b"SELECT 1\0");
        input.extend(frame(b'S', b""));
        state.client_in = BytesMut::from(&input[..]);
        assert!(!answer(
            &mut state,
            &catalog,
            &WriteFunctions::default(),
            b'I'
        ));
        // Incomplete batch: wait.
        state.client_in = BytesMut::from(&frame(b'C', b"SP_0\0")[..]);
        assert!(!answer(
            &mut state,
            &catalog,
            &WriteFunctions::default(),
            b'I'
        ));
    }
}
