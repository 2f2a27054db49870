//! Reading a source table's COPY text output (pure): lines as they arrive, and a line's values.

use bytes::{Bytes, BytesMut};

use crate::decode::{TupleData, TupleValue};

/// Cuts a COPY text stream into lines, whatever the chunks it arrives in.
#[derive(Default)]
pub struct Lines {
    pending: BytesMut,
}

impl Lines {
    /// Adds a chunk; complete lines (without their newline) go to `each`.
    pub fn push(&mut self, chunk: &[u8], mut each: impl FnMut(Bytes)) {
        self.pending.extend_from_slice(chunk);
        while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
            let line = self.pending.split_to(nl + 1).freeze();
            each(line.slice(..line.len() - 1));
        }
    }

    /// Bytes of an unfinished line (none at the end of a well-formed stream).
    pub fn leftover(&self) -> usize {
        self.pending.len()
    }
}

/// One line of COPY text output into column values (`\N` null, backslash escapes decoded).
pub fn parse_copy_line(line: &[u8], columns: usize) -> Option<TupleData> {
    let mut values = Vec::with_capacity(columns);
    for field in line.split(|b| *b == b'\t') {
        if field == b"\\N" {
            values.push(TupleValue::Null);
            continue;
        }
        if !field.contains(&b'\\') {
            values.push(TupleValue::Text(Bytes::copy_from_slice(field)));
            continue;
        }
        let mut out = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let b = field[i];
            if b != b'\\' || i + 1 >= field.len() {
                out.push(b);
                i += 1;
                continue;
            }
            let n = field[i + 1];
            i += 2;
            match n {
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'0'..=b'7' => {
                    let mut v = u32::from(n - b'0');
                    let mut k = 0;
                    while k < 2 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                        v = v * 8 + u32::from(field[i] - b'0');
                        i += 1;
                        k += 1;
                    }
                    out.push(v as u8);
                }
                b'x' => {
                    let mut v = 0u32;
                    let mut k = 0;
                    while k < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                        v = v * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                        i += 1;
                        k += 1;
                    }
                    out.push(v as u8);
                }
                other => out.push(other),
            }
        }
        values.push(TupleValue::Text(Bytes::from(out)));
    }
    (values.len() == columns).then_some(TupleData { columns: values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_decode_nulls_and_escapes() {
        let t = parse_copy_line(b"1\t\\N\ta\\tb\\\\c\\nd", 3).unwrap();
        assert_eq!(t.columns[0], TupleValue::Text(Bytes::from_static(b"1")));
        assert_eq!(t.columns[1], TupleValue::Null);
        assert_eq!(
            t.columns[2],
            TupleValue::Text(Bytes::from_static(b"a\tb\\c\nd"))
        );
        assert!(parse_copy_line(b"1\t2", 3).is_none());
    }

    #[test]
    fn lines_across_chunks() {
        let mut l = Lines::default();
        let mut got = Vec::new();
        l.push(b"a\tb\nc", |x| got.push(x));
        l.push(b"d\n\n", |x| got.push(x));
        assert_eq!(
            got,
            vec![Bytes::from("a\tb"), Bytes::from("cd"), Bytes::from("")]
        );
        assert_eq!(l.leftover(), 0);
    }
}
