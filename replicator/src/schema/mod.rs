//! Following the source's tables: which ones the replica mirrors, with which columns, and how
//! a schema change on the source becomes a change of the replica.
//!
//! pgoutput sends a Relation message (names, types, key flags; no attnums) before the first
//! change of a table in a session and again after its schema changed. The [`Tracker`] compares
//! it with the table as the replica has it (`cdc_tables`), learning attnums from the DDL event
//! trigger's messages or the source catalog, and [`plan`] says what to do.

pub mod audit;
pub mod generated;
pub mod partitions;
pub mod plan;
pub mod publication;
pub mod source;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgConnection;

use crate::decode::{RelationBody, ReplicaIdentity};
use crate::published::Definition;
use crate::table::{replica_name, Column, SourceTable};
use plan::{Knowledge, Plan};
use source::CatalogTable;

/// The prefix of the DDL event trigger's logical messages.
pub const DDL_PREFIX: &str = "brewlytics_ddl";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("reading the source catalog for {table}: {source}")]
    Catalog {
        table: String,
        #[source]
        source: sqlx::Error,
    },
}

/// A decision about a table, to be carried out by the sinks in the stream's order.
#[derive(Debug)]
pub struct Resolved {
    pub table: Arc<SourceTable>,
    /// Present when the replica must change (or learn the table): its steps and backfill.
    pub change: Option<(Option<Arc<SourceTable>>, Plan)>,
}

/// The tables known to the replica, and what is being learned of the source.
#[derive(Default)]
pub struct Tracker {
    /// As the replica has them (loaded from `cdc_tables`, then as planned), by source name.
    applied: HashMap<(String, String), Arc<SourceTable>>,
    /// The table each relation id currently maps to (cleared when a Relation message comes).
    current: HashMap<u32, Arc<SourceTable>>,
    /// The DDL trigger's messages, by table OID (most recent last).
    ddl: HashMap<u32, Vec<CatalogTable>>,
    /// OLAP type of each (type oid, typmod).
    types: HashMap<(u32, i32), String>,
    /// The publications streamed (their definitions of a table: row filter, column list).
    publications: Vec<String>,
    /// What they publish of each table, by OID (Err: not streamable): read once, and again
    /// when the stream meets a change of the publications or of a table, or a table it lacks.
    definitions: Option<HashMap<u32, Result<Definition, String>>>,
    /// The partitions seen of the partitioned tables mirrored (see [`partitions`]).
    partitions: partitions::Partitions,
}

impl Tracker {
    pub fn new(applied: impl IntoIterator<Item = SourceTable>) -> Self {
        Self {
            applied: applied
                .into_iter()
                .map(|t| ((t.schema.to_string(), t.name.to_string()), Arc::new(t)))
                .collect(),
            ..Default::default()
        }
    }

    /// The publications the stream subscribes to (`PUBLICATION`).
    pub fn publishing(mut self, publications: Vec<String>) -> Self {
        self.publications = publications;
        self
    }

    pub fn applied(&self) -> impl Iterator<Item = &Arc<SourceTable>> {
        self.applied.values()
    }

    pub fn applied_table(&self, schema: &str, table: &str) -> Option<&Arc<SourceTable>> {
        self.applied.get(&(schema.to_owned(), table.to_owned()))
    }

    /// A Relation message arrived: the next change of the relation resolves it again.
    pub fn relation_changed(&mut self, relation_id: u32) {
        self.current.remove(&relation_id);
    }

    /// A DDL trigger message arrived (whatever transaction it is in: matching is by shape).
    pub fn ddl_message(&mut self, content: &[u8]) {
        if let Ok(t) = serde_json::from_slice::<CatalogTable>(content) {
            let list = self.ddl.entry(t.oid).or_default();
            list.push(t);
            if list.len() > 8 {
                list.remove(0);
            }
        }
    }

    /// The table a change of `relation_id` belongs to, if already resolved.
    pub fn current(&self, relation_id: u32) -> Option<&Arc<SourceTable>> {
        self.current.get(&relation_id)
    }

    /// Resolves the relation of a change: the table to encode it with and, if the replica
    /// must follow a change (or learn a new table), what to do.
    pub async fn resolve(
        &mut self,
        oltp: &mut PgConnection,
        rel: &RelationBody,
    ) -> Result<Resolved, SchemaError> {
        if let Some(t) = self.current.get(&rel.id) {
            return Ok(Resolved {
                table: t.clone(),
                change: None,
            });
        }
        let err = |source| SchemaError::Catalog {
            table: format!("{}.{}", rel.namespace, rel.name),
            source,
        };
        let before = self
            .applied
            .values()
            .find(|t| t.oid == rel.id && t.oid != 0)
            .or_else(|| self.applied.get(&(rel.namespace.clone(), rel.name.clone())))
            .cloned();
        // What the publications publish of it (None: not published, or not streamable).
        let def = self.definition(oltp, rel.id).await.map_err(err)?;
        let list = match &def {
            Some(d) => d.column_list.clone(),
            None => before
                .as_ref()
                .and_then(|b| b.published.column_list.clone()),
        };
        let listed = |t: &CatalogTable| CatalogTable {
            column_list: list.clone(),
            ..t.clone()
        };
        // What the source says of the table at this point of the stream: the latest DDL
        // message that matches the Relation message, else the catalog if it still does.
        let mut info = self
            .ddl
            .get(&rel.id)
            .and_then(|l| l.iter().rev().map(listed).find(|t| matches(rel, t)));
        let mut catalog_now = None;
        if info.is_none() {
            let now = source::table_by_oid(oltp, rel.id)
                .await
                .map_err(err)?
                .map(|t| listed(&t));
            if now.as_ref().is_some_and(|t| matches(rel, t)) {
                info = now;
            } else {
                catalog_now = now;
            }
        }
        let mut after = describe(
            oltp,
            &mut self.types,
            rel,
            info.as_ref().or(catalog_now.as_ref()),
            info.is_some(),
        )
        .await
        .map_err(err)?;
        after.published = match (&def, info.as_ref().or(catalog_now.as_ref())) {
            (Some(d), Some(t)) => Arc::new(
                publication::published_of(oltp, &mut self.types, t, d)
                    .await
                    .map_err(err)?,
            ),
            _ => before
                .as_ref()
                .map(|b| b.published.clone())
                .unwrap_or_default(),
        };
        // The same name under another OID: the table was dropped and created again.
        let recreated = before
            .as_ref()
            .is_some_and(|b| b.oid != 0 && b.oid != rel.id);
        // The catalog has moved on (a change later in the stream) but the Relation message is
        // the table as the replica has it: its columns keep their attnums, so that the change
        // to come is read exactly.
        if let Some(b) = before.as_deref().filter(|_| info.is_none() && !recreated) {
            keep_attnums(&mut after, b);
        }
        if info.is_none() {
            // Nor does the catalog's highest attnum hold here: a column added later in the
            // stream would look like one that had values all along (and be copied again).
            if let Some(known) = after.columns.iter().filter_map(|c| c.attnum).max() {
                let p = Arc::make_mut(&mut after.published);
                p.last_attnum = p.last_attnum.min(known);
            }
        }
        let know = Knowledge {
            exact: info.is_some() && !recreated,
            defaulted: info
                .as_ref()
                .map(|t| {
                    t.published_columns()
                        .filter(|c| c.hasdef || c.hasmissing)
                        .map(|c| c.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut plan = plan::plan(before.as_deref(), &after, &know);
        if before.is_none() {
            plan.backfill = Some("added to the publication".into());
        } else if recreated {
            plan.backfill = Some("the table was created again on the source".into());
        }
        if let (None, Some(b)) = (&plan.backfill, before.as_deref()) {
            plan.backfill = publication::backfill_reason(b, &after);
        }
        if before.is_none() || recreated {
            let baseline = self.partition_baseline(oltp, &after).await.map_err(err)?;
            plan.steps.extend(baseline);
        }
        let after = Arc::new(after);
        self.current.insert(rel.id, after.clone());
        let learned = before.as_ref().is_some_and(|b| **b != *after);
        if let Some(b) = before.as_ref().filter(|b| b.replica != after.replica) {
            self.applied
                .remove(&(b.schema.to_string(), b.name.to_string()));
        }
        self.applied.insert(
            (after.schema.to_string(), after.name.to_string()),
            after.clone(),
        );
        let change = (!plan.is_empty() || learned).then_some((before, plan));
        Ok(Resolved {
            table: after,
            change,
        })
    }

    /// A DDL message in a transaction being applied: a table the replica mirrors follows it
    /// here, in the stream's order (whether or not a change of the table comes after it).
    pub async fn follow_ddl(
        &mut self,
        oltp: &mut PgConnection,
        content: &[u8],
    ) -> Result<Option<Resolved>, SchemaError> {
        let Ok(t) = serde_json::from_slice::<CatalogTable>(content) else {
            return Ok(None);
        };
        if !self.is_mirrored(t.oid, &t.schema, &t.table) {
            return Ok(None);
        }
        self.current.remove(&t.oid);
        // A column of a column list dropped takes the table out of the publication.
        self.definitions = None;
        let rel = self.published_relation(oltp, t).await?;
        self.resolve(oltp, &rel).await.map(Some)
    }

    /// An `ALTER PUBLICATION` reached the stream: each mirrored table whose row filter or
    /// column list is no longer the replica's follows here, in the stream's order (a row
    /// filter change sends nothing through pgoutput).
    pub async fn follow_publication(
        &mut self,
        oltp: &mut PgConnection,
        content: &[u8],
    ) -> Result<Vec<Resolved>, SchemaError> {
        if !publication::concerns(content, &self.publications) {
            return Ok(Vec::new());
        }
        let defs = publication::definitions(oltp, &self.publications, None)
            .await
            .map_err(|source| SchemaError::Catalog {
                table: "the publications' tables".into(),
                source,
            })?;
        let changed: Vec<Arc<SourceTable>> = self
            .applied
            .values()
            .filter(|t| {
                defs.get(&t.oid).is_some_and(|d| {
                    d.as_ref().is_ok_and(|d| {
                        d.row_filter != t.published.row_filter
                            || d.column_list != t.published.column_list
                    })
                })
            })
            .cloned()
            .collect();
        self.definitions = Some(defs);
        let mut out = Vec::new();
        for t in changed {
            if let Some(r) = self.follow_catalog(oltp, &t.schema, &t.name).await? {
                // The next change is resolved from its own Relation message (pgoutput sends
                // one after a publication changed): the catalog may be past this point.
                self.current.remove(&t.oid);
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The publications' definition of table `oid` (None: not published, or not streamable).
    async fn definition(
        &mut self,
        oltp: &mut PgConnection,
        oid: u32,
    ) -> Result<Option<Definition>, sqlx::Error> {
        if !self
            .definitions
            .as_ref()
            .is_some_and(|d| d.contains_key(&oid))
        {
            self.definitions =
                Some(publication::definitions(oltp, &self.publications, None).await?);
        }
        Ok(self
            .definitions
            .as_ref()
            .and_then(|d| d.get(&oid))
            .and_then(|d| d.as_ref().ok())
            .cloned())
    }

    /// The Relation message pgoutput sends for `t` under its publications' column list.
    async fn published_relation(
        &mut self,
        oltp: &mut PgConnection,
        mut t: CatalogTable,
    ) -> Result<RelationBody, SchemaError> {
        let def = self
            .definition(oltp, t.oid)
            .await
            .map_err(|source| SchemaError::Catalog {
                table: format!("{}.{}", t.schema, t.table),
                source,
            })?;
        t.column_list = match def {
            Some(d) => d.column_list,
            None => self
                .applied_table(&t.schema, &t.table)
                .and_then(|a| a.published.column_list.clone()),
        };
        Ok(relation_of(&t))
    }

    /// A table the replica mirrors, checked against the source's catalog as it is now (the
    /// backfill worker asks for it when the catalog differs and no DDL message said why).
    pub async fn follow_catalog(
        &mut self,
        oltp: &mut PgConnection,
        schema: &str,
        table: &str,
    ) -> Result<Option<Resolved>, SchemaError> {
        let info = source::table_by_name(oltp, schema, table)
            .await
            .map_err(|source| SchemaError::Catalog {
                table: format!("{schema}.{table}"),
                source,
            })?;
        let Some(t) = info.filter(|t| self.is_mirrored(t.oid, &t.schema, &t.table)) else {
            return Ok(None);
        };
        self.current.remove(&t.oid);
        // The catalog is what is asked for: DDL messages of before this point describe an
        // older table (a generated column changed since sends no Relation message), and the
        // publications may have changed.
        self.ddl.remove(&t.oid);
        self.definitions = None;
        let rel = self.published_relation(oltp, t).await?;
        self.resolve(oltp, &rel).await.map(Some)
    }

    fn is_mirrored(&self, oid: u32, schema: &str, table: &str) -> bool {
        self.applied.values().any(|a| a.oid == oid && oid != 0)
            || self.applied_table(schema, table).is_some()
    }

    /// Resolves a table by name, reading the source catalog when it is new to the replica (a
    /// backfill's watermark for a table the stream has sent no change of yet).
    pub async fn resolve_named(
        &mut self,
        oltp: &mut PgConnection,
        schema: &str,
        table: &str,
    ) -> Result<Option<Resolved>, SchemaError> {
        if let Some(t) = self.applied_table(schema, table) {
            return Ok(Some(Resolved {
                table: t.clone(),
                change: None,
            }));
        }
        let info = source::table_by_name(oltp, schema, table)
            .await
            .map_err(|source| SchemaError::Catalog {
                table: format!("{schema}.{table}"),
                source,
            })?;
        match info {
            Some(info) => {
                let rel = self.published_relation(oltp, info).await?;
                self.resolve(oltp, &rel).await.map(Some)
            }
            None => Ok(None),
        }
    }
}

/// A Relation message as pgoutput would send it for a table the catalog describes.
pub fn relation_of(t: &CatalogTable) -> RelationBody {
    let key: Vec<i16> = t.key.clone().unwrap_or_default();
    let identity = t
        .identity
        .bytes()
        .next()
        .and_then(ReplicaIdentity::from_byte)
        .unwrap_or(ReplicaIdentity::Default);
    RelationBody {
        id: t.oid,
        namespace: t.schema.clone(),
        name: t.table.clone(),
        replica_identity: identity,
        columns: t
            .published_columns()
            .map(|c| crate::decode::RelationColumn {
                is_key: identity == ReplicaIdentity::Full || key.contains(&c.attnum),
                name: c.name.clone(),
                type_oid: c.type_oid,
                type_modifier: c.typmod,
            })
            .collect(),
    }
}

/// The table of a Relation message: its columns (with attnums when `info` is exact), its key
/// and the OLAP types of its columns (`types` caches them).
pub async fn describe(
    oltp: &mut PgConnection,
    types: &mut HashMap<(u32, i32), String>,
    rel: &RelationBody,
    info: Option<&CatalogTable>,
    exact: bool,
) -> Result<SourceTable, sqlx::Error> {
    let wanted = rel.columns.iter().map(|c| (c.type_oid, c.type_modifier));
    source::cache_olap_types(oltp, types, wanted).await?;
    let attnum_of = |name: &str| -> Option<i16> {
        let t = info.filter(|_| exact)?;
        t.published_columns()
            .find(|c| c.name == name)
            .map(|c| c.attnum)
    };
    let columns: Vec<Column> = rel
        .columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            attnum: attnum_of(&c.name),
            type_oid: c.type_oid,
            typmod: c.type_modifier,
            olap_type: types
                .get(&(c.type_oid, c.type_modifier))
                .cloned()
                .unwrap_or_else(|| "text".into()),
        })
        .collect();
    let key = key_positions(rel, info, &columns);
    Ok(SourceTable {
        oid: rel.id,
        schema: rel.namespace.as_str().into(),
        name: rel.name.as_str().into(),
        replica: replica_name(&rel.namespace, &rel.name).into(),
        columns,
        key,
        identity: rel.replica_identity,
        published: Default::default(),
    })
}

/// `after` takes the attnums of `before` when its columns are `before`'s (names, types).
fn keep_attnums(after: &mut SourceTable, before: &SourceTable) {
    let same = after.columns.len() == before.columns.len()
        && after
            .columns
            .iter()
            .zip(&before.columns)
            .all(|(a, b)| a.name == b.name && a.type_oid == b.type_oid && a.typmod == b.typmod);
    if same {
        for (a, b) in after.columns.iter_mut().zip(&before.columns) {
            a.attnum = a.attnum.or(b.attnum);
        }
    }
}

/// Whether the catalog's published columns are the Relation message's (names, types).
pub fn matches(rel: &RelationBody, t: &CatalogTable) -> bool {
    let cols: Vec<_> = t.published_columns().collect();
    cols.len() == rel.columns.len()
        && cols.iter().zip(&rel.columns).all(|(a, b)| {
            a.name == b.name && a.type_oid == b.type_oid && a.typmod == b.type_modifier
        })
}

/// The key the replica is kept by: the catalog's (replica identity index, else primary key)
/// when known; else the Relation message's key flags — which under REPLICA IDENTITY FULL mark
/// every column, and then say nothing: no key.
fn key_positions(
    rel: &RelationBody,
    info: Option<&CatalogTable>,
    columns: &[Column],
) -> Vec<usize> {
    if let Some(t) = info {
        let names: Vec<&str> = t
            .key
            .iter()
            .flatten()
            .filter_map(|a| t.columns.iter().find(|c| c.attnum == *a))
            .map(|c| c.name.as_str())
            .collect();
        let positions: Vec<usize> = names
            .iter()
            .filter_map(|n| columns.iter().position(|c| c.name == *n))
            .collect();
        if positions.len() == names.len() {
            return positions;
        }
    }
    if rel.replica_identity == ReplicaIdentity::Full {
        return Vec::new();
    }
    rel.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RelationColumn;

    fn rel(identity: ReplicaIdentity, keys: &[bool]) -> RelationBody {
        RelationBody {
            id: 1,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: identity,
            columns: keys
                .iter()
                .enumerate()
                .map(|(i, &k)| RelationColumn {
                    is_key: k,
                    name: format!("c{i}"),
                    type_oid: 23,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    fn cols(n: usize) -> Vec<Column> {
        (0..n)
            .map(|i| Column {
                name: format!("c{i}"),
                attnum: None,
                type_oid: 23,
                typmod: -1,
                olap_type: "integer".into(),
            })
            .collect()
    }

    #[test]
    fn a_relation_as_the_replica_has_it_keeps_its_attnums() {
        let before = crate::table::fixtures::products();
        let mut after = before.clone();
        for c in &mut after.columns {
            c.attnum = None;
        }
        keep_attnums(&mut after, &before);
        assert_eq!(after, before);
        let mut renamed = before.clone();
        renamed.columns[1].name = "title".into();
        renamed.columns[1].attnum = None;
        keep_attnums(&mut renamed, &before);
        assert_eq!(
            renamed.columns[1].attnum, None,
            "another shape: nothing is assumed"
        );
    }

    #[test]
    fn full_identity_flags_are_not_a_key() {
        let r = rel(ReplicaIdentity::Full, &[true, true, true]);
        assert!(key_positions(&r, None, &cols(3)).is_empty());
        let r = rel(ReplicaIdentity::Default, &[false, true, false]);
        assert_eq!(key_positions(&r, None, &cols(3)), vec![1]);
    }

    #[test]
    fn catalog_key_wins() {
        let r = rel(ReplicaIdentity::Full, &[true, true]);
        let t = CatalogTable {
            oid: 1,
            schema: "public".into(),
            table: "t".into(),
            identity: "f".into(),
            key: Some(vec![2]),
            column_list: None,
            columns: vec![
                source::CatalogColumn {
                    attnum: 1,
                    name: "c0".into(),
                    type_oid: 23,
                    typmod: -1,
                    hasdef: false,
                    hasmissing: false,
                    generated: false,
                    expression: None,
                    uses: None,
                },
                source::CatalogColumn {
                    attnum: 2,
                    name: "c1".into(),
                    type_oid: 23,
                    typmod: -1,
                    hasdef: false,
                    hasmissing: false,
                    generated: false,
                    expression: None,
                    uses: None,
                },
            ],
        };
        assert!(matches(&r, &t));
        assert_eq!(key_positions(&r, Some(&t), &cols(2)), vec![1]);
        let msg = r#"{"oid":1,"schema":"public","table":"t","identity":"f","key":null,
                      "columns":[{"attnum":1,"name":"c0","type_oid":23,"typmod":-1,"hasdef":false,
                                  "hasmissing":false,"generated":false}]}"#;
        let parsed: CatalogTable = serde_json::from_str(msg).unwrap();
        assert_eq!(parsed.key, None);
        assert!(!matches(&r, &parsed));
    }
}
