//! The OLAP side of the star's bindings: reading and writing `star_input_tables` and
//! `star_bindings`, and carrying out a [`Followed`] in the batch's transaction — the values of
//! dropped columns kept and the input's view dropped before the replica's DDL, the star's
//! columns widened, the bindings saved and the view made again after it.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use super::follow::{follow, Followed};
use super::{At, Attribute, Degraded, Input, Note, Read, Role, State, TableState};
use crate::lsn::Lsn;
use crate::table::{ident, SourceTable};

/// Whether OLAP has the star's bindings (migrated).
pub async fn exists(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select to_regclass('star_bindings') is not null")
        .fetch_one(conn)
        .await
}

fn at(lsn: Option<String>, time: Option<DateTime<Utc>>) -> At {
    At {
        lsn: lsn.and_then(|l| l.parse().ok()),
        time,
    }
}

/// Every input with its attributes, in `star_inputs()` order (empty before the migration).
pub async fn load(conn: &mut PgConnection) -> Result<Vec<Input>, sqlx::Error> {
    if !exists(conn).await? {
        return Ok(Vec::new());
    }
    let tables = sqlx::query(
        "select input, source_oid, source_schema, source_table, replica_table, state,
                changed_lsn::text, changed_at, detail
         from star_input_tables order by input",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut inputs: Vec<Input> = tables
        .iter()
        .map(|r| Input {
            name: r.get(0),
            source_oid: r.get::<Option<i64>, _>(1).map(|o| o as u32),
            source_schema: r.get(2),
            source_table: r.get(3),
            replica_table: r.get(4),
            state: TableState::parse(r.get(5)),
            changed: at(r.get(6), r.get(7)),
            detail: r.get(8),
            attributes: Vec::new(),
        })
        .collect();
    let attrs = sqlx::query(
        "select b.input, b.attribute, s.role, s.feeds, b.star_type, b.attnum, b.source_column,
                b.replica_type, b.read, b.state, b.changed_lsn::text, b.changed_at, b.detail
         from star_bindings b
         join star_inputs() s on s.input = b.input and s.attribute = b.attribute
         order by s.ord",
    )
    .fetch_all(&mut *conn)
    .await?;
    for r in attrs {
        let input: String = r.get(0);
        let Some(i) = inputs.iter_mut().find(|i| i.name == input) else {
            continue;
        };
        i.attributes.push(Attribute {
            name: r.get(1),
            role: Role::parse(r.get(2)),
            feeds: r.get(3),
            star_type: r.get(4),
            attnum: r.get(5),
            source_column: r.get(6),
            replica_type: r.get(7),
            read: Read::parse(r.get(8)),
            state: State::parse(r.get(9)),
            changed: at(r.get(10), r.get(11)),
            detail: r.get(12),
        });
    }
    Ok(inputs)
}

/// Writes an input's table row and bindings.
pub async fn save(conn: &mut PgConnection, i: &Input) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update star_input_tables
         set source_oid = $2, source_schema = $3, source_table = $4, replica_table = $5,
             state = $6, changed_lsn = $7::pg_lsn, changed_at = $8, detail = $9
         where input = $1",
    )
    .bind(&i.name)
    .bind(i.source_oid.map(|o| o as i64))
    .bind(&i.source_schema)
    .bind(&i.source_table)
    .bind(&i.replica_table)
    .bind(i.state.as_str())
    .bind(i.changed.lsn.map(|l| l.to_string()))
    .bind(i.changed.time)
    .bind(&i.detail)
    .execute(&mut *conn)
    .await?;
    for a in &i.attributes {
        sqlx::query(
            "update star_bindings
             set star_type = $3, attnum = $4, source_column = $5, replica_type = $6, read = $7,
                 state = $8, changed_lsn = $9::pg_lsn, changed_at = $10, detail = $11
             where input = $1 and attribute = $2",
        )
        .bind(&i.name)
        .bind(&a.name)
        .bind(&a.star_type)
        .bind(a.attnum)
        .bind(&a.source_column)
        .bind(&a.replica_type)
        .bind(a.read.as_str())
        .bind(a.state.as_str())
        .bind(a.changed.lsn.map(|l| l.to_string()))
        .bind(a.changed.time)
        .bind(&a.detail)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The input reading `table` (or, renamed, `before`): by relation oid, else by the name of
/// its replica (a table not known by identity yet, or created again under its name).
pub fn input_for<'a>(
    inputs: &'a [Input],
    table: &SourceTable,
    before: Option<&SourceTable>,
) -> Option<&'a Input> {
    if table.oid != 0 {
        if let Some(i) = inputs.iter().find(|i| i.source_oid == Some(table.oid)) {
            return Some(i);
        }
    }
    inputs.iter().find(|i| {
        i.replica_table == *table.replica || before.is_some_and(|b| i.replica_table == *b.replica)
    })
}

/// A schema change of an input's table, decided and half carried out (before the DDL).
#[derive(Debug)]
pub struct Pending {
    before: Input,
    followed: Followed,
}

/// Before the replica's DDL for `after`: decides what the input reading it becomes, keeps
/// the values of columns about to be dropped (or freezes the input), and drops its view (a
/// view over a replica column blocks dropping or retyping it). None: no input reads it.
/// `replaying`: a table dropped or unpublished stays so (the journal does not say when).
pub async fn before_ddl(
    conn: &mut PgConnection,
    before: Option<&SourceTable>,
    after: &SourceTable,
    at: At,
    replaying: bool,
) -> Result<Option<Pending>, sqlx::Error> {
    let inputs = load(conn).await?;
    let Some(input) = input_for(&inputs, after, before) else {
        return Ok(None);
    };
    let mut followed = follow(input, after, at);
    if replaying && matches!(input.state, TableState::Dropped | TableState::Unpublished) {
        followed.input.state = input.state;
        followed.input.changed = input.changed;
        followed.input.detail = input.detail.clone();
    }
    if !followed.keep.is_empty() {
        sqlx::query("select star_keep($1, $2)")
            .bind(&input.name)
            .bind(&followed.keep)
            .execute(&mut *conn)
            .await?;
    }
    if followed.freeze {
        sqlx::query("select star_freeze($1)")
            .bind(&input.name)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(&format!(
        "drop view if exists star_input.{}",
        ident(&input.name)
    ))
    .execute(&mut *conn)
    .await?;
    Ok(Some(Pending {
        before: input.clone(),
        followed,
    }))
}

/// After the replica's DDL: the star's columns widened (read value by value instead where
/// OLAP refuses to: a view of yours over them, say), the bindings saved, the view made again,
/// rows the star leaves out listed, and the star computed again where rows read differently.
/// Returns the lines to log once committed.
pub async fn after_ddl(
    conn: &mut PgConnection,
    pending: Pending,
) -> Result<Vec<Note>, sqlx::Error> {
    let mut f = pending.followed;
    for name in std::mem::take(&mut f.widen) {
        let Some(a) = f.input.attributes.iter_mut().find(|a| a.name == name) else {
            continue;
        };
        if let Err(e) = widen(conn, a).await {
            if let Some(was) = pending.before.attributes.iter().find(|b| b.name == name) {
                a.star_type = was.star_type.clone();
            }
            f.notes.push(Note::degraded(format!(
                "{}: the star's column could not be widened to {} ({}): values it cannot \
                 hold are left out (star_dead_letters)",
                a.feeds.join(", "),
                a.star_type,
                crate::redact::db_error(&e)
            )));
            a.state = State::Incompatible;
            a.read = Read::PerRow;
            f.recompute = true;
        }
    }
    save(conn, &f.input).await?;
    sqlx::query("select star_input_define($1)")
        .bind(&f.input.name)
        .execute(&mut *conn)
        .await?;
    sqlx::query("select star_note_rejects($1)")
        .bind(&f.input.name)
        .execute(&mut *conn)
        .await?;
    if f.recompute {
        sqlx::query("select star_refresh_all()")
            .execute(&mut *conn)
            .await?;
    }
    Ok(f.notes)
}

/// Widens the star columns `a` feeds (those of another type) to its `star_type`, under a
/// savepoint: all or none.
async fn widen(conn: &mut PgConnection, a: &Attribute) -> Result<(), sqlx::Error> {
    sqlx::query("savepoint star_widen")
        .execute(&mut *conn)
        .await?;
    let mut result = Ok(());
    for feed in &a.feeds {
        let Some((table, column)) = feed.split_once('.') else {
            continue;
        };
        let current: Option<String> = sqlx::query_scalar(
            "select format_type(atttypid, atttypmod) from pg_attribute
             where attrelid = to_regclass($1) and attname = $2 and not attisdropped",
        )
        .bind(table)
        .bind(column)
        .fetch_optional(&mut *conn)
        .await?;
        if current.as_deref().is_none_or(|t| t == a.star_type) {
            continue;
        }
        let sql = format!(
            "alter table {} alter column {} type {}",
            ident(table),
            ident(column),
            a.star_type
        );
        if let Err(e) = sqlx::query(&sql).execute(&mut *conn).await {
            result = Err(e);
            break;
        }
    }
    let end = if result.is_ok() {
        "release savepoint star_widen"
    } else {
        "rollback to savepoint star_widen"
    };
    sqlx::query(end).execute(&mut *conn).await?;
    result
}

/// Inputs whose source table or columns are not known by identity yet (bound by name before
/// the replicator read the source) learn it from the tables the replica knows.
pub async fn learn(conn: &mut PgConnection, tables: &[SourceTable]) -> Result<bool, sqlx::Error> {
    let inputs = load(conn).await?;
    let mut learned = false;
    for i in inputs
        .iter()
        .filter(|i| i.source_oid.is_none() || i.attributes.iter().any(|a| a.attnum.is_none()))
    {
        let Some(t) = tables
            .iter()
            .find(|t| t.replica.as_ref() == i.replica_table && t.oid != 0)
        else {
            continue;
        };
        if t.columns.iter().any(|c| c.attnum.is_none()) {
            continue;
        }
        let f = follow(i, t, At::default());
        if f.is_noop(i) {
            continue;
        }
        if !f.notes.is_empty() || !f.keep.is_empty() || f.freeze || !f.widen.is_empty() {
            // A difference to carry out, not only identity to learn: the stream's next
            // change of the table does it in its place.
            continue;
        }
        save(conn, &f.input).await?;
        learned = true;
    }
    Ok(learned)
}

/// Back to no rows (replay's rebuild, resync): nothing kept, frozen or dead-lettered.
pub async fn reset(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    if exists(conn).await? {
        sqlx::query("select star_reset()").execute(conn).await?;
    }
    Ok(())
}

/// Marks the input reading `schema.table` gone from the source (`dropped`) or from the
/// publication, as of the furthest checkpoint; its replica is kept, and so is what the star
/// has. Says so once (the caller calls it once, when the table leaves the publication).
pub async fn table_gone(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    dropped: bool,
) -> Result<(), sqlx::Error> {
    let inputs = load(conn).await?;
    let Some(mut i) = inputs
        .into_iter()
        .find(|i| i.source_schema == schema && i.source_table == table)
    else {
        return Ok(());
    };
    let lsn: Option<String> =
        sqlx::query_scalar("select max(lsn)::text from replication_checkpoint")
            .fetch_one(&mut *conn)
            .await?;
    i.state = if dropped {
        TableState::Dropped
    } else {
        TableState::Unpublished
    };
    i.changed = At {
        lsn: lsn.and_then(|l| l.parse::<Lsn>().ok()),
        time: Some(Utc::now()),
    };
    let what = if dropped {
        "dropped on the source"
    } else {
        "removed from the publication"
    };
    let note = format!(
        "source table {schema}.{table} {what}: the star keeps what it has of it ({})",
        star_tables(&i).join(", ")
    );
    i.detail = Some(note.clone());
    save(conn, &i).await?;
    tracing::warn!(change = %note, "the star schema degrades: a source schema change");
    Ok(())
}

/// The star tables an input feeds.
fn star_tables(i: &Input) -> Vec<String> {
    let mut t: Vec<String> = i
        .attributes
        .iter()
        .flat_map(|a| a.feeds.iter())
        .filter_map(|f| f.split_once('.').map(|x| x.0.to_owned()))
        .collect();
    t.sort();
    t.dedup();
    t
}

/// Degraded star attributes and the number of rows the star leaves out, for `status`.
pub async fn status(conn: &mut PgConnection) -> Result<(Vec<Degraded>, i64), sqlx::Error> {
    if !exists(conn).await? {
        return Ok((Vec::new(), 0));
    }
    let inputs = load(conn).await?;
    let dead: i64 = sqlx::query_scalar("select count(*) from star_dead_letters")
        .fetch_one(conn)
        .await?;
    Ok((super::degraded(&inputs), dead))
}

/// Every (star table, attribute) an input feeds: the label sets of the metric.
pub fn feeds(inputs: &[Input]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = inputs
        .iter()
        .flat_map(|i| i.attributes.iter())
        .flat_map(|a| a.feeds.iter())
        .filter_map(|f| f.split_once('.').map(|(t, c)| (t.to_owned(), c.to_owned())))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, oid: Option<u32>, replica: &str) -> Input {
        Input {
            name: name.into(),
            source_oid: oid,
            source_schema: "public".into(),
            source_table: replica.into(),
            replica_table: replica.into(),
            state: TableState::Bound,
            changed: At::default(),
            detail: None,
            attributes: Vec::new(),
        }
    }

    #[test]
    fn inputs_are_found_by_oid_then_by_replica_name() {
        let inputs = vec![
            input("customers", Some(100), "customers"),
            input("orders", None, "orders"),
        ];
        let mut t = crate::table::fixtures::products();
        t.oid = 100;
        t.replica = "clients".into();
        assert_eq!(input_for(&inputs, &t, None).unwrap().name, "customers");
        t.oid = 200;
        t.replica = "orders".into();
        assert_eq!(input_for(&inputs, &t, None).unwrap().name, "orders");
        t.replica = "products".into();
        assert!(input_for(&inputs, &t, None).is_none());
    }
}
