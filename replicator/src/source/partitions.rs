//! Partitions, the source side (see [`crate::schema::partitions`]): a backfill limited to
//! one partition's rows (its scope) as the worker reads and hands it over; the worker's watch
//! over the partition trees for a source without the DDL event trigger; and the partitions a
//! first start's copy starts from.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use crate::change::Pos;
use crate::redact::{classify, Class};
use crate::schema::partitions::{catalog, Message, MirroredAs, PartitionStep, Rel, PREFIX};
use crate::sink::olap::backfill::Within;
use crate::sink::olap::partitions::kept_scopes;
use crate::table::SourceTable;

/// A backfill limited to one partition's rows (`cdc_backfills.scope`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scoped {
    /// The partition's constraint: which rows of the table are read and replaced.
    pub scope: String,
    pub partition: Option<u32>,
    /// Whether the partition must still be attached (a copy) or no longer be (a removal).
    pub attached: bool,
}

impl Scoped {
    pub fn from_row(
        scope: Option<String>,
        partition: Option<i64>,
        attached: Option<bool>,
    ) -> Option<Self> {
        Some(Self {
            scope: scope?,
            partition: partition.map(|p| p as u32),
            attached: attached.unwrap_or(true),
        })
    }
}

/// Whether OLAP can evaluate `predicate` over the replica of `t` (the source printed it with
/// its own types and functions; a hash partition's, or one over an enum, OLAP may lack).
async fn holds_in_olap(
    olap: &mut PgConnection,
    t: &SourceTable,
    predicate: &str,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "select 1 from {} where ({predicate}) limit 0",
        t.replica_ident()
    );
    match sqlx::query(&sql).execute(&mut *olap).await {
        Ok(_) => Ok(true),
        Err(e) if classify(&e) == Class::Transient => Err(e),
        Err(_) => Ok(false),
    }
}

/// What a chunk of `t`'s backfill replaces in OLAP (see [`Within`]): the rows of its scope
/// — when OLAP cannot tell them apart, a copy only adds and updates rows, and a removal
/// cannot be done (`Err`: why) — less the rows kept from detached partitions.
pub async fn within(
    olap: &mut PgConnection,
    t: &SourceTable,
    scoped: Option<&Scoped>,
) -> Result<Result<Within, String>, sqlx::Error> {
    let scope = match scoped {
        None => None,
        Some(s) if holds_in_olap(olap, t, &s.scope).await? => Some(s.scope.clone()),
        Some(s) if s.attached => {
            tracing::warn!(table = %t.qualified_source(),
                "a partition's bound cannot be evaluated in OLAP: its rows are copied without \
                 removing replica rows of its range that the source no longer has");
            Some("false".to_owned())
        }
        Some(s) => {
            return Ok(Err(format!(
                "OLAP cannot evaluate the partition's bound ({}): its rows cannot be told \
                 apart, so they stay in the replica",
                s.scope
            )))
        }
    };
    let mut kept = Vec::new();
    for k in kept_scopes(olap, &t.schema, &t.name).await? {
        if holds_in_olap(olap, t, &k).await? {
            kept.push(format!("({k})"));
        } else {
            tracing::warn!(table = %t.qualified_source(),
                "the bound of a detached partition whose rows are kept cannot be evaluated in \
                 OLAP: a copy of the whole table replaces those rows too");
        }
    }
    Ok(Ok(Within {
        scope,
        kept: (!kept.is_empty()).then(|| kept.join(" or ")),
    }))
}

/// In a chunk's transaction, before its snapshot: whether the partition is (a copy) or is
/// not (a removal) a partition of `t` — a copy of a partition detached again since, or the
/// removal of one attached again, is moot (the stream's later change of it decides). The
/// table is locked against a DETACH until the chunk is read.
pub async fn as_expected(
    tx: &mut PgConnection,
    t: &SourceTable,
    scoped: &Scoped,
) -> Result<bool, sqlx::Error> {
    let Some(partition) = scoped.partition else {
        return Ok(true);
    };
    sqlx::query(&format!(
        "lock table {}.{} in access share mode",
        crate::table::ident(&t.schema),
        crate::table::ident(&t.name)
    ))
    .execute(&mut *tx)
    .await?;
    let attached: bool = sqlx::query_scalar(
        "select exists (select 1 from pg_partition_tree($1::oid) where relid = $2::oid and level > 0)",
    )
    .bind(i64::from(t.oid))
    .bind(i64::from(partition))
    .fetch_one(&mut *tx)
    .await?;
    Ok(attached == scoped.attached)
}

/// `brewlytics snapshot --table <partition>` for a partition of a table mirrored through its
/// root: its rows copied again (a backfill of the root limited to it) — what a TRUNCATE of
/// that partition alone, which PostgreSQL does not send, needs. None: no such partition.
pub async fn request_copy(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let root: Option<(String, String)> = sqlx::query_as(
        "select root_schema, root_table from cdc_partitions
         where partition_schema = $1 and partition_table = $2 and state = 'attached'
           and mirrored_as = 'root'
         order by changed_at desc limit 1",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(&mut *olap)
    .await?;
    let Some((root_schema, root_table)) = root else {
        return Ok(None);
    };
    let now: Option<(i64, Option<String>, Option<String>)> = sqlx::query_as(
        "select c.oid::bigint, pg_get_expr(c.relpartbound, c.oid),
                pg_get_partition_constraintdef(c.oid)
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = $1 and c.relname = $2 and c.relispartition",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(&mut *oltp)
    .await?;
    let Some((oid, bound, scope)) = now else {
        return Ok(None);
    };
    let root = Rel {
        oid: 0,
        schema: root_schema,
        table: root_table,
    };
    let partition = crate::schema::partitions::Member {
        oid: oid as u32,
        schema: schema.to_owned(),
        table: table.to_owned(),
        parent: 0,
        level: 0,
        leaf: true,
        bound,
        scope,
    };
    let reason = format!(
        "partition {} requested (brewlytics snapshot)",
        partition.qualified()
    );
    crate::sink::olap::partitions::request(olap, &root, &partition, true, &reason)
        .await
        .map(Some)
}

/// The partitions of the tables a first start copies, as its snapshot `tx` sees them: what
/// the stream starts from (each partitioned table whole; each leaf published as itself).
pub async fn baseline(
    tx: &mut PgConnection,
    tables: &[(String, String)],
) -> Result<Vec<PartitionStep>, sqlx::Error> {
    let mut steps = Vec::new();
    for ((schema, table), k) in catalog::kinds(tx, tables).await? {
        let root = if k.partitioned { Some(k.oid) } else { k.root };
        let Some(tree) = (match root {
            Some(oid) => catalog::tree(tx, oid).await?,
            None => None,
        }) else {
            continue;
        };
        if k.partitioned {
            steps.push(PartitionStep {
                root: tree.rel(),
                mirrored_as: MirroredAs::Root,
                partitions: tree.below(tree.oid),
                whole: true,
                events: Vec::new(),
            });
        } else {
            let leaf: Vec<_> = tree
                .partitions
                .iter()
                .filter(|m| m.schema == schema && m.table == table)
                .cloned()
                .collect();
            steps.push(PartitionStep {
                root: tree.rel(),
                mirrored_as: MirroredAs::Leaf,
                partitions: leaf,
                whole: false,
                events: Vec::new(),
            });
        }
    }
    Ok(steps)
}

/// Records a first start's [`baseline`] at its position, in place of what was recorded
/// before (a `resync` copies the replica again: rows kept from detached partitions go).
pub async fn record_baseline(
    olap: &mut PgConnection,
    steps: &[PartitionStep],
    pos: Pos,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from cdc_partitions")
        .execute(&mut *olap)
        .await?;
    for step in steps {
        crate::sink::olap::partitions::apply(olap, step, pos).await?;
    }
    Ok(())
}

/// The backfill worker's watch over the partition trees of the tables mirrored, against what
/// OLAP has recorded of them: a difference still there at the next look (the event trigger's
/// message had time to arrive) asks the stream to read the tree (a `check` message), in its
/// order. With the trigger this finds nothing; without it, it is how partitions are followed.
#[derive(Default)]
pub struct Watch {
    /// Trees found different at the last look: their partitions then.
    differing: HashMap<u32, Vec<u32>>,
}

/// A partitioned table watched: its tree now, how its rows are mirrored, and the partitions
/// recorded attached.
struct Watched {
    tree: crate::schema::partitions::Tree,
    mirrored_as: MirroredAs,
    recorded: HashSet<u32>,
}

impl Watch {
    /// One look; whether it asked the stream to check a tree.
    pub async fn look(
        &mut self,
        oltp: &mut PgConnection,
        olap: &mut PgConnection,
        publications: &[String],
    ) -> Result<bool, sqlx::Error> {
        note_dropped(oltp, olap).await?;
        let watched = watched(oltp, olap).await?;
        if watched.is_empty() {
            self.differing.clear();
            return Ok(false);
        }
        let published: HashSet<(String, String)> =
            crate::schema::source::published_tables(oltp, publications)
                .await?
                .into_iter()
                .collect();
        let mut differing = HashMap::new();
        let mut check = Vec::new();
        for w in watched {
            let tree = &w.tree;
            let mut now: Vec<u32> = match w.mirrored_as {
                MirroredAs::Root => tree.below(tree.oid).iter().map(|m| m.oid).collect(),
                MirroredAs::Leaf => tree
                    .partitions
                    .iter()
                    .filter(|m| m.leaf && published.contains(&(m.schema.clone(), m.table.clone())))
                    .map(|m| m.oid)
                    .collect(),
            };
            now.sort_unstable();
            if now.iter().copied().collect::<HashSet<u32>>() == w.recorded {
                continue;
            }
            if self.differing.get(&tree.oid) == Some(&now) {
                check.push(tree.rel());
            } else {
                differing.insert(tree.oid, now);
            }
        }
        self.differing = differing;
        if check.is_empty() {
            return Ok(false);
        }
        tracing::info!(tables = %check.iter().map(Rel::qualified).collect::<Vec<_>>().join(", "),
            "partitions changed on the source with no message of the DDL event trigger: the stream checks them");
        let msg = Message {
            check,
            ..Default::default()
        };
        sqlx::query("select pg_logical_emit_message(true, $1, $2)")
            .bind(PREFIX)
            .bind(serde_json::to_string(&msg).unwrap_or_default())
            .execute(&mut *oltp)
            .await?;
        Ok(true)
    }
}

/// Partitions recorded detached whose table is gone from the source: dropped since (a
/// record only — what a detach does to the replica is done already).
async fn note_dropped(oltp: &mut PgConnection, olap: &mut PgConnection) -> Result<(), sqlx::Error> {
    let detached: Vec<i64> = sqlx::query_scalar(
        "select distinct partition_oid from cdc_partitions where state = 'detached'",
    )
    .fetch_all(&mut *olap)
    .await?;
    if detached.is_empty() {
        return Ok(());
    }
    let existing: Vec<i64> =
        sqlx::query_scalar("select oid::bigint from pg_class where oid = any($1::bigint[]::oid[])")
            .bind(&detached)
            .fetch_all(&mut *oltp)
            .await?;
    let gone: Vec<i64> = detached
        .into_iter()
        .filter(|o| !existing.contains(o))
        .collect();
    if !gone.is_empty() {
        sqlx::query(
            "update cdc_partitions set state = 'dropped', changed_at = now()
             where state = 'detached' and partition_oid = any($1)",
        )
        .bind(&gone)
        .execute(&mut *olap)
        .await?;
    }
    Ok(())
}

/// The partitioned tables to watch: those mirrored through their root, the roots of
/// partitions mirrored as tables of their own, and roots whose leaves OLAP recorded (none
/// mirrored any more, maybe).
async fn watched(
    oltp: &mut PgConnection,
    olap: &mut PgConnection,
) -> Result<Vec<Watched>, sqlx::Error> {
    let recorded: Vec<(String, String, String, Vec<i64>)> = sqlx::query_as(
        "select root_schema, root_table, min(mirrored_as),
                coalesce(array_agg(partition_oid) filter (where state = 'attached'), '{}')
         from cdc_partitions group by 1, 2",
    )
    .fetch_all(&mut *olap)
    .await?;
    let mirrored: HashSet<(String, String)> =
        sqlx::query_as("select source_schema, source_table from cdc_tables where published")
            .fetch_all(&mut *olap)
            .await?
            .into_iter()
            .collect();
    let mut names: Vec<(String, String)> = mirrored.iter().cloned().collect();
    names.extend(recorded.iter().map(|r| (r.0.clone(), r.1.clone())));
    let mut out: HashMap<u32, Watched> = HashMap::new();
    for (name, k) in catalog::kinds(oltp, &names).await? {
        let is_mirrored = mirrored.contains(&name);
        let leaves_recorded = recorded
            .iter()
            .any(|r| r.0 == name.0 && r.1 == name.1 && r.2 == "leaf");
        let (oid, mirrored_as) = match k.root {
            _ if k.partitioned && is_mirrored => (k.oid, MirroredAs::Root),
            _ if k.partitioned && leaves_recorded => (k.oid, MirroredAs::Leaf),
            Some(root) if is_mirrored => (root, MirroredAs::Leaf),
            _ => continue,
        };
        if out.contains_key(&oid) {
            continue;
        }
        let Some(tree) = catalog::tree(oltp, oid).await? else {
            continue;
        };
        let recorded = recorded
            .iter()
            .find(|r| r.0 == tree.schema && r.1 == tree.table)
            .map(|r| r.3.iter().map(|o| *o as u32).collect())
            .unwrap_or_default();
        out.insert(
            oid,
            Watched {
                tree,
                mirrored_as,
                recorded,
            },
        );
    }
    Ok(out.into_values().collect())
}
