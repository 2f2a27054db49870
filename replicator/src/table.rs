//! A published source table as the pipeline knows it (pure): its columns with their source
//! attnums and the OLAP types that hold them, its key, and its replica's name.

use std::sync::Arc;

use crate::decode::ReplicaIdentity;
use crate::published::Published;

pub const REPLICA_SCHEMA: &str = "replica";

/// How a column's values are written in JSON images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `true` / `false`.
    Bool,
    /// A JSON number when the text is one (NaN and the infinities are strings).
    Number,
    /// json and jsonb: the value itself, embedded.
    Json,
    /// Everything else: PostgreSQL's text output as a JSON string.
    Text,
}

impl ValueKind {
    pub fn of(type_oid: u32) -> Self {
        match type_oid {
            16 => Self::Bool,
            20 | 21 | 23 | 700 | 701 | 1700 => Self::Number,
            114 | 3802 => Self::Json,
            _ => Self::Text,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    /// The column's attnum on the source, when known: what tells a renamed column from a
    /// dropped and re-added one.
    #[serde(default)]
    pub attnum: Option<i16>,
    pub type_oid: u32,
    pub typmod: i32,
    /// The type of the replica column, as OLAP spells it (`format_type`); source types OLAP
    /// does not have (enums, composites, extension types) are `text`, domains their base type.
    pub olap_type: String,
}

impl Column {
    pub fn kind(&self) -> ValueKind {
        ValueKind::of(self.type_oid)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTable {
    /// The source relation's OID (0 when unknown).
    pub oid: u32,
    pub schema: Arc<str>,
    pub name: Arc<str>,
    /// The mirror's name in schema `replica`.
    pub replica: Arc<str>,
    /// In source column order (as the Relation message lists them).
    pub columns: Vec<Column>,
    /// Positions of the key columns in `columns`: the primary key, or the replica identity
    /// index. Empty: no key — the replica is a multiset.
    pub key: Vec<usize>,
    pub identity: ReplicaIdentity,
    /// What the publication publishes of the table beyond these columns: its row filter,
    /// column list and the generated columns the replica computes.
    pub published: Arc<Published>,
}

impl SourceTable {
    pub fn qualified_source(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `"replica"."<table>"`.
    pub fn replica_ident(&self) -> String {
        format!("{}.{}", ident(REPLICA_SCHEMA), ident(&self.replica))
    }

    pub fn is_keyless(&self) -> bool {
        self.key.is_empty()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn key_names(&self) -> Vec<&str> {
        self.key
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect()
    }

    /// Whether UPDATE and DELETE of the table can be followed: with a key, or a whole old
    /// row (REPLICA IDENTITY FULL). Otherwise the source refuses them while the table is
    /// published, and the replica only ever sees inserts.
    pub fn updates_identified(&self) -> bool {
        !self.key.is_empty() || self.identity == ReplicaIdentity::Full
    }

    /// The same columns, names and OLAP types (what a stage table is made of).
    pub fn same_shape(&self, other: &SourceTable) -> bool {
        self.key == other.key
            && self.columns.len() == other.columns.len()
            && self
                .columns
                .iter()
                .zip(&other.columns)
                .all(|(a, b)| a.name == b.name && a.olap_type == b.olap_type)
    }
}

/// The replica table a source table is mirrored into: `<table>` for `public`,
/// `<schema>__<table>` otherwise.
pub fn replica_name(schema: &str, table: &str) -> String {
    if schema == "public" {
        table.to_owned()
    } else {
        format!("{schema}__{table}")
    }
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal (for names in DDL, never for row values).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn column(name: &str, type_oid: u32, olap_type: &str, attnum: i16) -> Column {
        Column {
            name: name.into(),
            attnum: Some(attnum),
            type_oid,
            typmod: -1,
            olap_type: olap_type.into(),
        }
    }

    /// products(id bigint key, name text, price numeric, description text, tags jsonb)
    pub fn products() -> SourceTable {
        SourceTable {
            oid: 16400,
            schema: "public".into(),
            name: "products".into(),
            replica: "products".into(),
            columns: vec![
                column("id", 20, "bigint", 1),
                column("name", 25, "text", 2),
                column("price", 1700, "numeric", 3),
                column("description", 25, "text", 4),
                column("tags", 3802, "jsonb", 5),
            ],
            key: vec![0],
            identity: ReplicaIdentity::Default,
            published: Default::default(),
        }
    }

    /// log(at text, note text): no key, REPLICA IDENTITY FULL.
    pub fn keyless() -> SourceTable {
        SourceTable {
            oid: 16500,
            schema: "public".into(),
            name: "log".into(),
            replica: "log".into(),
            columns: vec![column("at", 25, "text", 1), column("note", 25, "text", 2)],
            key: vec![],
            identity: ReplicaIdentity::Full,
            published: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quoting() {
        assert_eq!(replica_name("public", "orders"), "orders");
        assert_eq!(replica_name("sales", "orders"), "sales__orders");
        assert_eq!(ident("odd\"name"), "\"odd\"\"name\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn value_kinds() {
        assert_eq!(ValueKind::of(16), ValueKind::Bool);
        assert_eq!(ValueKind::of(1700), ValueKind::Number);
        assert_eq!(ValueKind::of(3802), ValueKind::Json);
        assert_eq!(ValueKind::of(114), ValueKind::Json);
        assert_eq!(ValueKind::of(1082), ValueKind::Text);
    }
}
