//! What the console writes: result sets of text columns, command tags,
//! notices and errors, as a simple-query reply.

use bytes::{BufMut, BytesMut};

use crate::protocol::messages::ClientError;

/// OID of `text`: every console column is text, as PgBouncer's console
/// values are read as strings by existing scripts anyway.
const TEXT_OID: u32 = 25;

/// A result set: column names and rows of optional text values (`None`
/// is SQL NULL).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names, in order.
    pub columns: Vec<&'static str>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// A table with these columns and no rows.
    pub fn new(columns: &[&'static str]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of values (anything displayable; use [`null`] for NULL).
    pub fn row(&mut self, values: Vec<Option<String>>) {
        self.rows.push(values);
    }
}

/// A present value.
pub fn val(value: impl ToString) -> Option<String> {
    Some(value.to_string())
}

/// SQL NULL.
pub fn null() -> Option<String> {
    None
}

/// Starts a message with `tag` and a length placeholder; returns where it starts.
fn begin(out: &mut BytesMut, tag: u8) -> usize {
    let start = out.len();
    out.put_u8(tag);
    out.put_u32(0);
    start
}

/// Fills in the length of the message that starts at `start`.
fn end(out: &mut BytesMut, start: usize) {
    let len = u32::try_from(out.len() - start - 1).unwrap_or(u32::MAX);
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// RowDescription, DataRows and `CommandComplete SHOW`.
pub fn table(out: &mut BytesMut, table: &Table) {
    let start = begin(out, b'T');
    out.put_u16(u16::try_from(table.columns.len()).unwrap_or(u16::MAX));
    for name in &table.columns {
        out.put_slice(name.as_bytes());
        out.put_u8(0);
        out.put_u32(0); // table OID
        out.put_u16(0); // column number
        out.put_u32(TEXT_OID);
        out.put_i16(-1); // variable length
        out.put_i32(-1); // no type modifier
        out.put_u16(0); // text format
    }
    end(out, start);
    for row in &table.rows {
        let start = begin(out, b'D');
        out.put_u16(u16::try_from(row.len()).unwrap_or(u16::MAX));
        for value in row {
            match value {
                Some(text) => {
                    out.put_i32(i32::try_from(text.len()).unwrap_or(i32::MAX));
                    out.put_slice(text.as_bytes());
                }
                None => out.put_i32(-1),
            }
        }
        end(out, start);
    }
    command_complete(out, "SHOW");
}

/// CommandComplete with `tag` (e.g. `PAUSE`).
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    let start = begin(out, b'C');
    out.put_slice(tag.as_bytes());
    out.put_u8(0);
    end(out, start);
}

/// EmptyQueryResponse, for an empty query string.
pub fn empty_query(out: &mut BytesMut) {
    let start = begin(out, b'I');
    end(out, start);
}

/// A NoticeResponse (severity NOTICE, SQLSTATE 00000).
pub fn notice(out: &mut BytesMut, message: &str) {
    let start = begin(out, b'N');
    for (field, value) in [
        (b'S', "NOTICE"),
        (b'V', "NOTICE"),
        (b'C', "00000"),
        (b'M', message),
    ] {
        out.put_u8(field);
        out.put_slice(value.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    end(out, start);
}

/// An ErrorResponse with severity ERROR.
pub fn error(out: &mut BytesMut, code: &'static str, message: String) {
    ClientError {
        severity: "ERROR",
        code,
        message,
    }
    .encode(out);
}

/// ParameterStatus `name` = `value`.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let start = begin(out, b'S');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(value.as_bytes());
    out.put_u8(0);
    end(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_row_description_data_rows_and_show_tag() {
        let mut t = Table::new(&["a", "b"]);
        t.row(vec![val(1), null()]);
        let mut out = BytesMut::new();
        table(&mut out, &t);
        assert_eq!(out[0], b'T');
        let t_len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        let data = &out[1 + t_len..];
        assert_eq!(data[0], b'D');
        // Two columns: "1" (length 1) and NULL (length -1).
        assert_eq!(&data[5..7], &[0, 2]);
        assert_eq!(&data[7..12], &[0, 0, 0, 1, b'1']);
        assert_eq!(&data[12..16], &(-1i32).to_be_bytes());
        assert!(out.ends_with(b"C\0\0\0\x09SHOW\0"));
    }
}
