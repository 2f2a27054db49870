//! Relation and Type messages, and the cache of relation schemas that row changes refer to.
//!
//! pgoutput sends a Relation message before the first change of a table in a session and
//! again whenever the table's schema changed; Insert/Update/Delete carry only the relation id.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::DecodeErrorKind;
use super::reader::{Reader, Result};

/// `REPLICA IDENTITY` of a relation: which old-row columns Update and Delete carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key, if any.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: every column.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// The wire byte (`d`, `n`, `f` or `i`).
    pub fn as_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }

    /// The identity for a wire byte, `None` for an unknown one.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'd' => Some(ReplicaIdentity::Default),
            b'n' => Some(ReplicaIdentity::Nothing),
            b'f' => Some(ReplicaIdentity::Full),
            b'i' => Some(ReplicaIdentity::Index),
            _ => None,
        }
    }
}

/// Column flag bit: the column is part of the replica-identity key.
pub const COLUMN_FLAG_KEY: u8 = 1;

/// One column of a relation, in table order (dropped and generated columns are not sent).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelationColumn {
    /// Whether the column is part of the replica-identity key (flag bit 1).
    pub is_key: bool,
    pub name: String,
    /// `pg_type` OID of the column's type.
    pub type_oid: u32,
    /// `atttypmod`: e.g. the length of `varchar(n)` plus 4, or -1 for none.
    pub type_modifier: i32,
}

/// `R`: the schema of a published table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationBody {
    /// The table's OID, which Insert/Update/Delete/Truncate refer to.
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn>,
}

impl RelationBody {
    /// The columns that form the replica-identity key.
    pub fn key_columns(&self) -> impl Iterator<Item = &RelationColumn> {
        self.columns.iter().filter(|column| column.is_key)
    }
}

/// `Y`: a non-built-in data type used by a published column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeBody {
    /// The type's OID.
    pub id: u32,
    pub namespace: String,
    pub name: String,
}

/// Smallest encoded column: flags, an empty name's NUL, type OID and modifier.
const MIN_COLUMN_LEN: usize = 1 + 1 + 4 + 4;

pub(crate) fn read_relation(reader: &mut Reader<'_>) -> Result<RelationBody> {
    let id = reader.u32()?;
    let namespace = reader.cstr()?;
    let name = reader.cstr()?;
    let identity_at = reader.position();
    let identity_byte = reader.u8()?;
    let replica_identity = ReplicaIdentity::from_byte(identity_byte).ok_or_else(|| {
        reader.error_at(
            identity_at,
            DecodeErrorKind::UnknownReplicaIdentity(identity_byte),
        )
    })?;
    let count = reader.count_i16()?;
    let mut columns = Vec::with_capacity(reader.capacity_for(count, MIN_COLUMN_LEN));
    for _ in 0..count {
        let flags = reader.u8()?;
        columns.push(RelationColumn {
            is_key: flags & COLUMN_FLAG_KEY != 0,
            name: reader.cstr()?,
            type_oid: reader.u32()?,
            type_modifier: reader.i32()?,
        });
    }
    Ok(RelationBody {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

pub(crate) fn read_type(reader: &mut Reader<'_>) -> Result<TypeBody> {
    Ok(TypeBody {
        id: reader.u32()?,
        namespace: reader.cstr()?,
        name: reader.cstr()?,
    })
}

/// The latest Relation message seen for each relation id.
///
/// Contract: an entry is only ever replaced, never refused — a schema change on the source
/// (ADD/DROP COLUMN, a new replica identity) must not stop the stream. [`RelationCache::update`]
/// tells the caller whether the column list changed so it can adapt downstream tables.
#[derive(Clone, Debug, Default)]
pub struct RelationCache {
    relations: HashMap<u32, Arc<RelationBody>>,
}

impl RelationCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `relation`, replacing any previous entry with the same id.
    ///
    /// Returns `true` when there was a previous entry and its columns (names, order, types,
    /// modifiers or key flags) differ from the new ones; `false` for a relation seen for the
    /// first time or re-sent unchanged (a rename alone also returns `false`).
    pub fn update(&mut self, relation: RelationBody) -> bool {
        let relation = Arc::new(relation);
        match self.relations.insert(relation.id, Arc::clone(&relation)) {
            Some(previous) => previous.columns != relation.columns,
            None => false,
        }
    }

    /// The latest schema of relation `id`, if a Relation message for it has been seen.
    pub fn get(&self, id: u32) -> Option<Arc<RelationBody>> {
        self.relations.get(&id).cloned()
    }

    /// Forgets every relation, as needed after a reconnect: the server re-sends them.
    pub fn clear(&mut self) {
        self.relations.clear();
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, type_oid: u32, is_key: bool) -> RelationColumn {
        RelationColumn {
            is_key,
            name: name.to_owned(),
            type_oid,
            type_modifier: -1,
        }
    }

    fn orders(columns: Vec<RelationColumn>) -> RelationBody {
        RelationBody {
            id: 16_384,
            namespace: "public".to_owned(),
            name: "orders".to_owned(),
            replica_identity: ReplicaIdentity::Default,
            columns,
        }
    }

    #[test]
    fn replica_identity_bytes_round_trip() {
        for byte in [b'd', b'n', b'f', b'i'] {
            assert_eq!(ReplicaIdentity::from_byte(byte).unwrap().as_byte(), byte);
        }
        assert_eq!(ReplicaIdentity::from_byte(b'x'), None);
    }

    #[test]
    fn cache_reports_column_changes_and_keeps_streaming() {
        let mut cache = RelationCache::new();
        assert!(cache.is_empty());
        let v1 = vec![column("id", 2950, true), column("status", 25, false)];
        assert!(
            !cache.update(orders(v1.clone())),
            "first sight is not a change"
        );
        assert!(!cache.update(orders(v1.clone())), "re-sent unchanged");

        let mut v2 = v1.clone();
        v2.push(column("total", 1700, false));
        assert!(cache.update(orders(v2.clone())), "ADD COLUMN");
        assert_eq!(cache.get(16_384).unwrap().columns, v2);

        assert!(cache.update(orders(v1.clone())), "DROP COLUMN");
        let mut retyped = v1.clone();
        retyped[1].type_oid = 1043;
        assert!(cache.update(orders(retyped)), "ALTER COLUMN TYPE");

        let mut renamed = orders(v1.clone());
        renamed.name = "orders_v2".to_owned();
        cache.update(orders(v1));
        assert!(!cache.update(renamed), "a rename keeps the columns");
        assert_eq!(cache.get(16_384).unwrap().name, "orders_v2");

        assert_eq!(cache.len(), 1);
        assert!(cache.get(1).is_none());
        cache.clear();
        assert!(cache.get(16_384).is_none());
    }

    #[test]
    fn key_columns_follow_the_flag() {
        let relation = orders(vec![column("id", 23, true), column("note", 25, false)]);
        let keys: Vec<_> = relation.key_columns().map(|c| c.name.as_str()).collect();
        assert_eq!(keys, ["id"]);
    }
}
