//! Protocol-level named prepared statements under transaction pooling.
//!
//! A client's statement `P_0` becomes `sy_<hash of its text and types>` on
//! the server, so every client that prepares the same text shares one
//! server-side statement per connection, and a client can use its
//! statements on whichever connection serves its next transaction.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::ProtocolError;
use crate::protocol::frame::BodyReader;
use crate::router::access::{Access, WriteFunctions};
use crate::router::memo;

/// One statement the client prepared.
#[derive(Debug, Clone)]
pub struct ClientStatement {
    /// Hash naming the server-side statement.
    pub internal: u64,
    /// The Parse body after the name: query text, parameter types.
    pub definition: Bytes,
    /// The query text pins the session when executed (e.g. takes a session lock).
    pub pins: bool,
    /// Executing it changes session settings (e.g. calls set_config).
    pub sets_session_state: bool,
    /// It only reads: a replica may run it (classified once, at Parse).
    pub read: bool,
}

impl ClientStatement {
    /// The statement a client's Parse defines, classified once.
    pub fn from_parse(parse: &ParseMessage<'_>, functions: &WriteFunctions) -> Self {
        let effects = memo::session_effects(parse.query);
        Self {
            internal: definition_hash(parse.definition),
            definition: Bytes::copy_from_slice(parse.definition),
            pins: !effects.pins.is_empty(),
            sets_session_state: effects.sets_session_state,
            read: memo::classify(parse.query, functions, false) == Access::Read,
        }
    }
}

/// A client's named statements, by the client's name.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Bytes, ClientStatement>,
}

/// The server-side name for a statement hash.
pub fn internal_name(internal: u64) -> [u8; 19] {
    let mut name = *b"sy_0000000000000000";
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..16 {
        name[3 + i] = HEX[((internal >> (60 - 4 * i)) & 0xf) as usize];
    }
    name
}

/// Hash of a Parse definition (query text and parameter types).
pub fn definition_hash(definition: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    definition.hash(&mut hasher);
    // 0 is kept free so that "no statement" never collides.
    hasher.finish().max(1)
}

/// The fields of a Parse the proxy needs.
#[derive(Debug)]
pub struct ParseMessage<'a> {
    /// The client's statement name ("" for the unnamed statement).
    pub name: &'a [u8],
    /// Query text, NUL, parameter count and types.
    pub definition: &'a [u8],
    /// Just the query text.
    pub query: &'a [u8],
}

/// Reads a Parse body.
pub fn read_parse(body: &[u8]) -> Result<ParseMessage<'_>, ProtocolError> {
    let mut reader = BodyReader::new(body, "Parse");
    let name = reader.cstr()?;
    let definition = reader.rest();
    let query = BodyReader::new(definition, "Parse").cstr()?;
    Ok(ParseMessage {
        name,
        definition,
        query,
    })
}

/// The fields of a Bind the proxy needs.
#[derive(Debug)]
pub struct BindMessage<'a> {
    /// Portal name.
    pub portal: &'a [u8],
    /// The client's statement name.
    pub statement: &'a [u8],
    /// Parameters and result formats, untouched.
    pub rest: &'a [u8],
}

/// Reads a Bind body.
pub fn read_bind(body: &[u8]) -> Result<BindMessage<'_>, ProtocolError> {
    let mut reader = BodyReader::new(body, "Bind");
    let portal = reader.cstr()?;
    let statement = reader.cstr()?;
    Ok(BindMessage {
        portal,
        statement,
        rest: reader.rest(),
    })
}

/// Splits a Describe or Close body into its kind ('S' or 'P') and name.
pub fn read_target<'a>(
    body: &'a [u8],
    message: &'static str,
) -> Result<(u8, &'a [u8]), ProtocolError> {
    let mut reader = BodyReader::new(body, message);
    let kind = reader.bytes(1)?[0];
    let name = reader.cstr()?;
    Ok((kind, name))
}

fn put_frame(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 4;
    out.put_u8(tag);
    out.put_u32(len as u32);
    for part in parts {
        out.put_slice(part);
    }
}

/// Writes a Parse of the server-side statement.
pub fn write_parse(out: &mut BytesMut, internal: u64, definition: &[u8]) {
    put_frame(out, b'P', &[&internal_name(internal), b"\0", definition]);
}

/// Writes a Bind of `portal` to the server-side statement.
pub fn write_bind(out: &mut BytesMut, portal: &[u8], internal: u64, rest: &[u8]) {
    put_frame(
        out,
        b'B',
        &[portal, b"\0", &internal_name(internal), b"\0", rest],
    );
}

/// Writes a Describe of the server-side statement.
pub fn write_describe_statement(out: &mut BytesMut, internal: u64) {
    put_frame(out, b'D', &[b"S", &internal_name(internal), b"\0"]);
}

impl ClientStatements {
    /// Records (or redefines) the client's statement `name`.
    pub fn define(&mut self, name: &[u8], statement: ClientStatement) {
        match self.by_name.get_mut(name) {
            Some(existing) => *existing = statement,
            None => {
                self.by_name.insert(Bytes::copy_from_slice(name), statement);
            }
        }
    }

    /// The client's statement `name`, if it prepared one.
    pub fn get(&self, name: &[u8]) -> Option<&ClientStatement> {
        self.by_name.get(name)
    }

    /// Forgets `name` (Close or DEALLOCATE); true if it existed.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.by_name.remove(name).is_some()
    }

    /// Forgets every statement (DEALLOCATE ALL, DISCARD ALL).
    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    /// Forgets the statements whose server-side Parse failed.
    pub fn forget_internal(&mut self, internal: u64) {
        self.by_name.retain(|_, s| s.internal != internal);
    }

    /// The client's name for a server-side statement hash (to keep internal
    /// names out of error messages).
    pub fn client_name(&self, internal: u64) -> Option<&[u8]> {
        self.by_name
            .iter()
            .find(|(_, s)| s.internal == internal)
            .map(|(name, _)| &name[..])
    }
}

/// Replaces internal statement names in an ErrorResponse body with the
/// client's names, returning the whole new frame; `None` when the body
/// mentions none.
pub fn rename_in_error(body: &[u8], statements: &ClientStatements) -> Option<BytesMut> {
    let position = body.windows(3).position(|w| w == b"sy_")?;
    let hex = body.get(position + 3..position + 19)?;
    let internal = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    let client = statements.client_name(internal)?;
    let mut renamed = Vec::with_capacity(body.len());
    renamed.extend_from_slice(&body[..position]);
    renamed.extend_from_slice(client);
    renamed.extend_from_slice(&body[position + 19..]);
    // Further occurrences are rare; handle them the same way.
    let body = match rename_in_error(&renamed, statements) {
        Some(again) => again.to_vec(),
        None => renamed,
    };
    let mut out = BytesMut::with_capacity(body.len() + 5);
    put_frame(&mut out, b'E', &[&body]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names_are_fixed_width_hex() {
        assert_eq!(&internal_name(0xabc), b"sy_0000000000000abc");
        assert_eq!(&internal_name(u64::MAX), b"sy_ffffffffffffffff");
    }

    #[test]
    fn same_text_and_types_share_a_hash() {
        let a = definition_hash(b"SELECT $1\0\0\x01\0\0\0\x17");
        let b = definition_hash(b"SELECT $1\0\0\x01\0\0\0\x17");
        let c = definition_hash(b"SELECT $1\0\0\x01\0\0\0\x19");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn parse_and_bind_bodies_are_read_and_rewritten() {
        let parse = read_parse(b"P_0\0SELECT 1\0\0\0").unwrap();
        assert_eq!(parse.name, b"P_0");
        assert_eq!(parse.query, b"SELECT 1");
        let mut out = BytesMut::new();
        write_parse(&mut out, 1, parse.definition);
        assert_eq!(&out[5..], b"sy_0000000000000001\0SELECT 1\0\0\0");
        let bind = read_bind(b"\0P_0\0\0\0\0\0\0\0").unwrap();
        assert_eq!((bind.portal, bind.statement), (&b""[..], &b"P_0"[..]));
        out.clear();
        write_bind(&mut out, bind.portal, 1, bind.rest);
        assert_eq!(&out[5..], b"\0sy_0000000000000001\0\0\0\0\0\0\0");
        assert_eq!(
            u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize,
            out.len() - 1
        );
        assert!(read_parse(b"no terminator").is_err());
        assert!(read_bind(b"\0").is_err());
    }

    #[test]
    fn errors_name_the_clients_statement() {
        let mut statements = ClientStatements::default();
        statements.define(
            b"P_7",
            ClientStatement {
                internal: 0x1234,
                definition: Bytes::new(),
                pins: false,
                sets_session_state: false,
                read: false,
            },
        );
        let body = b"SERROR\0Mprepared statement \"sy_0000000000001234\" requires 2\0\0";
        let renamed = rename_in_error(body, &statements).unwrap();
        assert_eq!(
            &renamed[5..],
            b"SERROR\0Mprepared statement \"P_7\" requires 2\0\0"
        );
        assert!(rename_in_error(b"SERROR\0Mplain\0\0", &statements).is_none());
    }
}
