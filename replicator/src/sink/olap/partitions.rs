//! Partitions on the OLAP side: `cdc_partitions` (what the replicator has seen of each
//! partitioned table it mirrors, and what it did), written in the transaction of the change
//! that carries a [`PartitionStep`]; the copies and removals that step needs, requested as
//! backfills limited to a partition's constraint (its scope); the kept rows' scopes whole-table
//! copies must leave alone; and what `status` shows.

use sqlx::PgConnection;

use crate::change::Pos;
use crate::schema::partitions::{
    Action, Event, Followed, Member, MirroredAs, PartitionStep, Partitions, Rel, Seen, State,
};

/// What `cdc_partitions` records, as the stream starts.
pub async fn load(conn: &mut PgConnection) -> Result<Partitions, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        i64,
        String,
        String,
        Option<i64>,
        i32,
        bool,
        Option<String>,
        Option<String>,
        String,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select root_schema, root_table, mirrored_as, partition_oid, partition_schema,
                partition_table, parent_oid, level, is_leaf, bound, scope, state, action
         from cdc_partitions order by root_schema, root_table, level, partition_oid",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Partitions::default();
    for r in rows {
        let mirrored_as = if r.2 == "leaf" {
            MirroredAs::Leaf
        } else {
            MirroredAs::Root
        };
        let root = Rel {
            oid: 0,
            schema: r.0.clone(),
            table: r.1.clone(),
        };
        let f = out
            .tables
            .entry((r.0, r.1))
            .or_insert_with(|| Followed::new(root, mirrored_as));
        let state = match r.11.as_str() {
            "attached" => State::Attached,
            "detached" => State::Detached,
            _ => State::Dropped,
        };
        f.partitions.insert(
            r.3 as u32,
            Seen {
                member: Member {
                    oid: r.3 as u32,
                    schema: r.4,
                    table: r.5,
                    parent: r.6.unwrap_or(0) as u32,
                    level: r.7,
                    leaf: r.8,
                    bound: r.9,
                    scope: r.10,
                },
                state,
                action: Action::parse(&r.12).unwrap_or(Action::Noted),
            },
        );
    }
    Ok(out)
}

/// Records `step` at position `pos`, and requests the copies and removals its events need.
pub async fn apply(
    conn: &mut PgConnection,
    step: &PartitionStep,
    pos: Pos,
) -> Result<(), sqlx::Error> {
    if step.whole {
        let oids: Vec<i64> = step.partitions.iter().map(|m| i64::from(m.oid)).collect();
        sqlx::query(
            "update cdc_partitions set state = 'detached', action = 'noted',
                    changed_lsn = $3::pg_lsn, changed_at = now()
             where root_schema = $1 and root_table = $2 and state = 'attached'
               and partition_oid <> all ($4)",
        )
        .bind(&step.root.schema)
        .bind(&step.root.table)
        .bind(pos.lsn.to_string())
        .bind(&oids)
        .execute(&mut *conn)
        .await?;
    }
    for m in &step.partitions {
        upsert(conn, step, m, State::Attached, None, pos).await?;
    }
    for e in &step.events {
        let action = (e.action != Action::Noted).then_some(e.action);
        upsert(conn, step, &e.partition, e.state, action, pos).await?;
        let backfill = work(conn, step, e).await?;
        if let Some(id) = backfill {
            sqlx::query(
                "update cdc_partitions set backfill_id = $4
                 where root_schema = $1 and root_table = $2 and partition_oid = $3",
            )
            .bind(&step.root.schema)
            .bind(&step.root.table)
            .bind(i64::from(e.partition.oid))
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        say(step, e);
    }
    Ok(())
}

/// One partition's row: as described, in `state`, with `action` when one was taken.
async fn upsert(
    conn: &mut PgConnection,
    step: &PartitionStep,
    m: &Member,
    state: State,
    action: Option<Action>,
    pos: Pos,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into cdc_partitions (root_schema, root_table, mirrored_as, partition_oid,
                                     partition_schema, partition_table, parent_oid, level,
                                     is_leaf, bound, scope, state, action, changed_lsn)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                 coalesce($13, 'baseline'), $14::pg_lsn)
         on conflict (root_schema, root_table, partition_oid) do update
            set mirrored_as = excluded.mirrored_as,
                partition_schema = excluded.partition_schema,
                partition_table = excluded.partition_table, parent_oid = excluded.parent_oid,
                level = excluded.level, is_leaf = excluded.is_leaf, bound = excluded.bound,
                scope = excluded.scope, state = excluded.state,
                action = coalesce($13, cdc_partitions.action),
                backfill_id = case when $13 is null then cdc_partitions.backfill_id end,
                changed_lsn = case when $13 is null and cdc_partitions.state = excluded.state
                                   then cdc_partitions.changed_lsn else excluded.changed_lsn end,
                changed_at = case when $13 is null and cdc_partitions.state = excluded.state
                                  then cdc_partitions.changed_at else now() end",
    )
    .bind(&step.root.schema)
    .bind(&step.root.table)
    .bind(step.mirrored_as.as_str())
    .bind(i64::from(m.oid))
    .bind(&m.schema)
    .bind(&m.table)
    .bind(i64::from(m.parent))
    .bind(m.level)
    .bind(m.leaf)
    .bind(&m.bound)
    .bind(&m.scope)
    .bind(state.as_str())
    .bind(action.map(Action::as_str))
    .bind(pos.lsn.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The backfill an event needs, requested (or, for a leaf copied as a new table, found).
async fn work(
    conn: &mut PgConnection,
    step: &PartitionStep,
    e: &Event,
) -> Result<Option<i64>, sqlx::Error> {
    let p = &e.partition;
    match (step.mirrored_as, e.action) {
        (MirroredAs::Root, Action::Copy) => {
            // Rows kept from a detached partition of the same bound are this one's now.
            sqlx::query(
                "update cdc_partitions set action = 'replaced'
                 where root_schema = $1 and root_table = $2 and state <> 'attached'
                   and action = 'keep' and bound is not distinct from $3",
            )
            .bind(&step.root.schema)
            .bind(&step.root.table)
            .bind(&p.bound)
            .execute(&mut *conn)
            .await?;
            let reason = format!("partition {} attached: its rows copied", p.qualified());
            request(conn, &step.root, p, true, &reason).await.map(Some)
        }
        (MirroredAs::Root, Action::Remove) => {
            let reason = format!(
                "partition {} {}: its rows removed (--partition-detach mirror)",
                p.qualified(),
                e.state.as_str()
            );
            request(conn, &step.root, p, false, &reason).await.map(Some)
        }
        (MirroredAs::Leaf, Action::Copy) => {
            sqlx::query_scalar(
                "select max(id) from cdc_backfills
             where source_schema = $1 and source_table = $2 and state in ('pending', 'running')",
            )
            .bind(&p.schema)
            .bind(&p.table)
            .fetch_one(&mut *conn)
            .await
        }
        (MirroredAs::Leaf, Action::Keep | Action::Remove) => {
            crate::schema::store::unpublish(conn, &p.schema, &p.table).await?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// A backfill of `root` limited to partition `p`'s rows: a copy of them (`attached`), or
/// the removal of rows its scope no longer holds.
pub async fn request(
    conn: &mut PgConnection,
    root: &Rel,
    p: &Member,
    attached: bool,
    reason: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into cdc_backfills (source_schema, source_table, reason, scope, partition_oid,
                                    partition_attached)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(&root.schema)
    .bind(&root.table)
    .bind(reason)
    .bind(p.predicate())
    .bind(i64::from(p.oid))
    .bind(attached)
    .fetch_one(&mut *conn)
    .await
}

fn say(step: &PartitionStep, e: &Event) {
    let what = match e.action {
        Action::Copy => "its rows are copied (backfill)",
        Action::Created => "created empty: nothing to copy",
        Action::Keep => "its rows are kept in the replica (--partition-detach keep)",
        Action::Remove => "its rows are removed from the replica (--partition-detach mirror)",
        Action::StillPublished => "still published as a table of its own: still mirrored",
        Action::Baseline | Action::WithParent | Action::Noted => return,
    };
    tracing::info!(partition = %e.partition.qualified(), of = %step.root.qualified(),
        bound = e.partition.bound.as_deref().unwrap_or("-"), state = e.state.as_str(),
        "partition {}: {what}", e.state.as_str());
}

/// The scopes of `root`'s partitions detached or dropped whose rows the replica keeps: a
/// copy of the whole table must not remove those rows.
pub async fn kept_scopes(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce(scope, 'true') from cdc_partitions
         where root_schema = $1 and root_table = $2 and mirrored_as = 'root'
           and state <> 'attached' and action = 'keep'
         order by partition_oid",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(conn)
    .await
}

/// A partition as `status` shows it (no row values: names, bounds and states).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PartitionStatus {
    pub table: String,
    pub partition: String,
    pub mirrored_as: String,
    pub level: i32,
    pub bound: Option<String>,
    pub state: String,
    pub action: String,
    /// The copy or removal it needed, and how far it is.
    pub backfill_id: Option<i64>,
    pub backfill_state: Option<String>,
    pub changed_lsn: Option<String>,
    pub changed_at: chrono::DateTime<chrono::Utc>,
}

/// Every partition recorded, by table, most recently changed first.
pub async fn status(conn: &mut PgConnection) -> Result<Vec<PartitionStatus>, sqlx::Error> {
    let migrated: bool = sqlx::query_scalar("select to_regclass('cdc_partitions') is not null")
        .fetch_one(&mut *conn)
        .await?;
    if !migrated {
        return Ok(Vec::new());
    }
    type Row = (
        String,
        String,
        String,
        i32,
        Option<String>,
        String,
        String,
        Option<i64>,
        Option<String>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select p.root_schema || '.' || p.root_table,
                p.partition_schema || '.' || p.partition_table, p.mirrored_as, p.level, p.bound,
                p.state, p.action, p.backfill_id, b.state, p.changed_lsn::text, p.changed_at
         from cdc_partitions p left join cdc_backfills b on b.id = p.backfill_id
         order by 1, p.changed_at desc, p.level, 2",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PartitionStatus {
            table: r.0,
            partition: r.1,
            mirrored_as: r.2,
            level: r.3,
            bound: r.4,
            state: r.5,
            action: r.6,
            backfill_id: r.7,
            backfill_state: r.8,
            changed_lsn: r.9,
            changed_at: r.10,
        })
        .collect())
}

/// What was done about a partition, in words (with its copy's or removal's progress).
fn done(p: &PartitionStatus) -> String {
    let work = |what: &str| match (p.backfill_id, p.backfill_state.as_deref()) {
        (Some(id), Some("done")) => format!("rows {what} (backfill {id})"),
        (Some(id), Some(state)) => format!("rows being {what} (backfill {id} {state})"),
        _ => format!("rows {what}"),
    };
    match p.action.as_str() {
        "copy" => work("copied"),
        "remove" => work("removed"),
        "keep" => "rows kept in the replica".into(),
        "created" => "created empty".into(),
        "baseline" => "there when the table was first copied".into(),
        "replaced" => "kept rows replaced by a partition of the same bound".into(),
        "still_published" => "still published as a table of its own".into(),
        "with_parent" => "with its parent".into(),
        other => other.into(),
    }
}

/// The lines `brewlytics status` prints: per table, how many partitions are in each state,
/// then the partitions something was done about, most recent first (at most ten a table).
pub fn lines(partitions: &[PartitionStatus]) -> String {
    let mut out = String::new();
    let mut tables: Vec<&str> = partitions.iter().map(|p| p.table.as_str()).collect();
    tables.dedup();
    for table in tables {
        let of: Vec<&PartitionStatus> = partitions.iter().filter(|p| p.table == table).collect();
        let count = |state: &str| of.iter().filter(|p| p.state == state).count();
        out.push_str(&format!(
            "{:<20} {table}: {} attached, {} detached, {} dropped\n",
            "partitions",
            count("attached"),
            count("detached"),
            count("dropped")
        ));
        let notable: Vec<&&PartitionStatus> = of
            .iter()
            .filter(|p| !matches!(p.action.as_str(), "baseline" | "with_parent" | "noted"))
            .collect();
        for p in notable.iter().take(10) {
            out.push_str(&format!(
                "{:<20} {} ({}): {}, {}\n",
                "partition",
                p.partition,
                p.bound.as_deref().unwrap_or("-"),
                p.state,
                done(p)
            ));
        }
        if notable.len() > 10 {
            out.push_str(&format!(
                "{:<20} … {} more (status --json)\n",
                "partition",
                notable.len() - 10
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, state: &str, action: &str, backfill: Option<(i64, &str)>) -> PartitionStatus {
        PartitionStatus {
            table: "public.ev".into(),
            partition: format!("public.{name}"),
            mirrored_as: "root".into(),
            level: 1,
            bound: Some("FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')".into()),
            state: state.into(),
            action: action.into(),
            backfill_id: backfill.map(|b| b.0),
            backfill_state: backfill.map(|b| b.1.to_owned()),
            changed_lsn: None,
            changed_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn status_lines_count_states_and_say_what_was_done() {
        let text = lines(&[
            p("ev_3", "attached", "copy", Some((7, "running"))),
            p("ev_2", "attached", "copy", Some((6, "done"))),
            p("ev_1", "dropped", "keep", None),
            p("ev_0", "detached", "remove", Some((5, "pending"))),
            p("ev_x", "attached", "baseline", None),
        ]);
        assert!(
            text.contains("public.ev: 3 attached, 1 detached, 1 dropped"),
            "{text}"
        );
        assert!(text.contains("public.ev_3 (FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')): attached, rows being copied (backfill 7 running)"), "{text}");
        assert!(text.contains("public.ev_2 (") && text.contains("rows copied (backfill 6)"));
        assert!(
            text.contains("public.ev_1 (") && text.contains("dropped, rows kept in the replica")
        );
        assert!(text.contains("rows being removed (backfill 5 pending)"));
        assert!(!text.contains("ev_x"), "{text}");
    }
}
