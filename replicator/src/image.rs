//! Row images as JSON (pure): how the journal and the change stream show a row.
//!
//! An image is a JSON object of column name → value: numbers as JSON numbers (NaN and the
//! infinities as strings), booleans as `true`/`false`, json and jsonb values embedded as
//! JSON, SQL NULL as `null`, every other type as the string of its PostgreSQL text output.
//! A column left out is an unchanged TOAST value (the previous value stands). A json or
//! jsonb column holding the JSON value `null` is written `null` as well; such columns are
//! listed apart (`json_nulls`) so that the image can be read back exactly ([`parse`]).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::decode::{TupleData, TupleValue};
use crate::table::{SourceTable, ValueKind};

/// Where JSON text goes: plainly, or escaped for a COPY text field on the way.
pub trait JsonOut {
    fn put(&mut self, bytes: &[u8]);
}

impl JsonOut for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes into a COPY text field: backslash, tab, newline and carriage return escaped.
pub struct CopyField<'a>(pub &'a mut Vec<u8>);

impl JsonOut for CopyField<'_> {
    fn put(&mut self, bytes: &[u8]) {
        copy_escape(self.0, bytes);
    }
}

/// Appends `bytes` escaped for a COPY text field.
pub fn copy_escape(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Writes `s` as a JSON string literal.
pub fn json_string<O: JsonOut + ?Sized>(out: &mut O, s: &[u8]) {
    out.put(b"\"");
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.put(&s[start..i]);
                let hex = format!("\\u{b:04x}");
                out.put(hex.as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.put(&s[start..i]);
        out.put(esc);
        start = i + 1;
    }
    out.put(&s[start..]);
    out.put(b"\"");
}

/// Whether `s` is a JSON number as it stands (PostgreSQL's numeric and float output always is,
/// except NaN and the infinities).
pub fn is_json_number(s: &[u8]) -> bool {
    let mut i = 0;
    let n = s.len();
    if i < n && s[i] == b'-' {
        i += 1;
    }
    let int_start = i;
    while i < n && s[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && s[int_start] == b'0') {
        return false;
    }
    if i < n && s[i] == b'.' {
        i += 1;
        let f = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == f {
            return false;
        }
    }
    if i < n && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < n && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let e = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == e {
            return false;
        }
    }
    i == n
}

fn is_json_null(s: &[u8]) -> bool {
    s.trim_ascii() == b"null"
}

/// Writes one value. Returns whether it was a json/jsonb `null` (see the module docs).
pub fn value<O: JsonOut + ?Sized>(out: &mut O, kind: ValueKind, v: &TupleValue) -> bool {
    let data = match v {
        TupleValue::Null | TupleValue::UnchangedToast => {
            out.put(b"null");
            return false;
        }
        TupleValue::Binary(b) => {
            let mut hex = Vec::with_capacity(2 + b.len() * 2);
            hex.extend_from_slice(b"\\x");
            for byte in b.iter() {
                hex.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
            json_string(out, &hex);
            return false;
        }
        TupleValue::Text(b) => b,
    };
    match kind {
        ValueKind::Bool if data.as_ref() == b"t" => out.put(b"true"),
        ValueKind::Bool if data.as_ref() == b"f" => out.put(b"false"),
        ValueKind::Number if is_json_number(data) => out.put(data),
        ValueKind::Json => {
            out.put(data);
            return is_json_null(data);
        }
        _ => json_string(out, data),
    }
    false
}

/// Writes the image of `tuple` (only the columns at `only`, when given: the key). Unchanged
/// TOAST columns are left out. Names of json columns holding JSON `null` go to `json_nulls`.
pub fn write<O: JsonOut + ?Sized>(
    out: &mut O,
    table: &SourceTable,
    tuple: &TupleData,
    only: Option<&[usize]>,
    json_nulls: &mut Vec<usize>,
) {
    out.put(b"{");
    let mut first = true;
    let mut one = |i: usize, out: &mut O| {
        let (Some(col), Some(v)) = (table.columns.get(i), tuple.columns.get(i)) else {
            return;
        };
        if matches!(v, TupleValue::UnchangedToast) {
            return;
        }
        if !first {
            out.put(b",");
        }
        first = false;
        json_string(out, col.name.as_bytes());
        out.put(b":");
        if value(out, col.kind(), v) && !json_nulls.contains(&i) {
            json_nulls.push(i);
        }
    };
    match only {
        Some(positions) => positions.iter().for_each(|&i| one(i, out)),
        None => (0..tuple.columns.len()).for_each(|i| one(i, out)),
    }
    out.put(b"}");
}

/// The image of `tuple` as a string.
pub fn to_string(table: &SourceTable, tuple: &TupleData, only: Option<&[usize]>) -> String {
    let mut out = Vec::new();
    write(&mut out, table, tuple, only, &mut Vec::new());
    String::from_utf8(out).unwrap_or_default()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageError {
    #[error("a journal image is not a JSON object: {0}")]
    NotAnObject(String),
}

/// Reads an image back into a tuple of `table`'s columns: a column the image does not name is
/// [`TupleValue::UnchangedToast`]. `renamed` maps an image's (older) column names to the
/// table's. Values come back as PostgreSQL text: strings unescaped, numbers as written,
/// booleans as `t`/`f`, json values as their text.
pub fn parse(
    table: &SourceTable,
    image: &str,
    json_nulls: &[String],
    renamed: &HashMap<String, String>,
) -> Result<TupleData, ImageError> {
    let map: HashMap<String, &RawValue> = serde_json::from_str(image)
        // The serde message can quote the image; say only where it failed.
        .map_err(|e| ImageError::NotAnObject(format!("line {} column {}", e.line(), e.column())))?;
    let mut columns = vec![TupleValue::UnchangedToast; table.columns.len()];
    for (name, raw) in map {
        let name = renamed.get(&name).cloned().unwrap_or(name);
        let Some(i) = table.columns.iter().position(|c| c.name == name) else {
            continue;
        };
        let text = raw.get();
        columns[i] = if text == "null" {
            if json_nulls.iter().any(|n| n == &name) {
                TupleValue::Text(Bytes::from_static(b"null"))
            } else {
                TupleValue::Null
            }
        } else if table.columns[i].kind() == ValueKind::Json {
            TupleValue::Text(Bytes::copy_from_slice(text.as_bytes()))
        } else if text.starts_with('"') {
            let s: String = serde_json::from_str(text)
                .map_err(|e| ImageError::NotAnObject(format!("column {i}: {}", e.column())))?;
            TupleValue::Text(Bytes::from(s))
        } else if text == "true" {
            TupleValue::Text(Bytes::from_static(b"t"))
        } else if text == "false" {
            TupleValue::Text(Bytes::from_static(b"f"))
        } else {
            TupleValue::Text(Bytes::copy_from_slice(text.as_bytes()))
        };
    }
    Ok(TupleData { columns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures;

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn typed_values_and_unchanged_toast() {
        let t = fixtures::products();
        let row = TupleData {
            columns: vec![
                text("3"),
                text("Mocha \"dark\"\n\u{1}"),
                text("NaN"),
                TupleValue::UnchangedToast,
                text("{\"a\": [1, 2]}"),
            ],
        };
        let mut nulls = Vec::new();
        let mut out = Vec::new();
        write(&mut out, &t, &row, None, &mut nulls);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            r#"{"id":3,"name":"Mocha \"dark\"\n\u0001","price":"NaN","tags":{"a": [1, 2]}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["tags"]["a"][1], 2);
        assert!(nulls.is_empty());
        assert_eq!(to_string(&t, &row, Some(&[0])), r#"{"id":3}"#);
    }

    #[test]
    fn json_null_is_told_from_sql_null_and_reads_back() {
        let t = fixtures::products();
        let row = TupleData {
            columns: vec![
                text("1"),
                TupleValue::Null,
                text("2.50"),
                text("x"),
                text("null"),
            ],
        };
        let mut nulls = Vec::new();
        let mut out = Vec::new();
        write(&mut out, &t, &row, None, &mut nulls);
        assert_eq!(nulls, vec![4]);
        let image = String::from_utf8(out).unwrap();
        let back = parse(&t, &image, &["tags".into()], &HashMap::new()).unwrap();
        assert_eq!(back, row);
        let back = parse(&t, &image, &[], &HashMap::new()).unwrap();
        assert_eq!(back.columns[4], TupleValue::Null);
    }

    #[test]
    fn parse_round_trips_every_kind_and_follows_renames() {
        let t = fixtures::products();
        let row = TupleData {
            columns: vec![
                text("-12"),
                text("tab\there \\ \"quoted\" é"),
                text("1e+300"),
                TupleValue::UnchangedToast,
                text("\"just a string\""),
            ],
        };
        let image = to_string(&t, &row, None);
        assert_eq!(parse(&t, &image, &[], &HashMap::new()).unwrap(), row);
        let renamed: HashMap<String, String> = [("title".to_string(), "name".to_string())].into();
        let old = r#"{"id":1,"title":"old name"}"#;
        let back = parse(&t, old, &[], &renamed).unwrap();
        assert_eq!(back.columns[1], text("old name"));
        assert!(parse(&t, "[1]", &[], &HashMap::new()).is_err());
    }

    #[test]
    fn copy_escaping_of_json() {
        let mut out = Vec::new();
        json_string(&mut CopyField(&mut out), b"a\\b\tc\n");
        assert_eq!(out, b"\"a\\\\\\\\b\\\\tc\\\\n\"");
        let mut raw = Vec::new();
        CopyField(&mut raw).put(b"{\"a\":\n1}");
        assert_eq!(raw, b"{\"a\":\\n1}");
    }

    #[test]
    fn json_numbers() {
        for ok in [
            "0",
            "-0",
            "12",
            "1.50",
            "1e+300",
            "-1.5E-7",
            "123456789012345678901234567890",
        ] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "-",
            "01",
            "1.",
            ".5",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e",
            "0x10",
            "1 ",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }
}
