//! The set-based statements that bring a replica table to the last state of every key its
//! stage table holds (pure: SQL text from the table's shape; identifiers quoted, no values).

use crate::table::{ident, SourceTable};

use super::stage::stage_name;

fn stage(t: &SourceTable) -> String {
    format!("pg_temp.{}", ident(&stage_name(t)))
}

fn key_eq(t: &SourceTable, left: &str, right: &str) -> String {
    t.key_names()
        .iter()
        .map(|k| format!("{left}.{0} = {right}.{0}", ident(k)))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Fills the columns a change did not carry (`_cdc_keep`) from the replica row of its key —
/// or of the key it moved from (`_cdc_from_*`) — before anything is merged.
pub fn keep_sql(t: &SourceTable) -> String {
    let key = t.key_names();
    let sets: Vec<String> = t
        .columns
        .iter()
        .filter(|c| !key.contains(&c.name.as_str()))
        .map(|c| {
            format!(
                "{0} = case when {1} = any (s._cdc_keep) then r.{0} else s.{0} end",
                ident(&c.name),
                crate::table::literal(&c.name)
            )
        })
        .collect();
    let from: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(n, k)| format!("r.{0} = coalesce(s._cdc_from_{1}, s.{0})", ident(k), n + 1))
        .collect();
    if sets.is_empty() {
        return "select".into();
    }
    format!(
        "update {} s set {} from {} r where s._cdc_keep is not null and {}",
        stage(t),
        sets.join(", "),
        t.replica_ident(),
        from.join(" and ")
    )
}

/// After some changes of the stage were dead-lettered: the last change per key is the last
/// one staged, and no key counts as new (its facts are recomputed from the replica).
pub fn renumber_sql(t: &SourceTable) -> String {
    if t.is_keyless() {
        return "select".into();
    }
    let cols: Vec<String> = t.key_names().iter().map(|k| ident(k)).collect();
    format!(
        "update {s} s set _cdc_last = (s._cdc_pos = m.pos), _cdc_new = false
         from (select {k}, max(_cdc_pos) as pos from {s} group by {k}) m where {eq}",
        s = stage(t),
        k = cols.join(", "),
        eq = key_eq(t, "s", "m"),
    )
}

/// A stage of first inserts only: a plain insert, half the cost of an upsert (measured). A
/// key already there (a replay over a newer state) fails it; the caller then merges.
pub fn insert_only_sql(t: &SourceTable) -> String {
    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    format!(
        "insert into {} ({c}) select {c} from {}",
        t.replica_ident(),
        stage(t),
        c = cols.join(", ")
    )
}

/// A stage's columns, in the order the gathered rows (`acc`, made `like` the stage) keep them.
fn gathered_columns(t: &SourceTable) -> Vec<String> {
    let mut cols = vec![
        "_cdc_pos".to_owned(),
        "_cdc_op".to_owned(),
        "_cdc_last".to_owned(),
        "_cdc_new".to_owned(),
        "_cdc_keep".to_owned(),
        "_cdc_n".to_owned(),
        "_cdc_ts".to_owned(),
    ];
    cols.extend((1..=t.key.len()).map(|n| format!("_cdc_from_{n}")));
    cols.extend(t.columns.iter().map(|c| ident(&c.name)));
    cols
}

/// Adds a chunk's stage to the rows gathered over its transaction (`acc`), its positions
/// going on from the `$1` rows gathered before.
pub fn gather_sql(t: &SourceTable, stage: &str, acc: &str) -> String {
    let cols = gathered_columns(t);
    let select: Vec<String> = cols
        .iter()
        .map(|c| match c.as_str() {
            "_cdc_pos" => "_cdc_pos + $1".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    format!(
        "insert into {acc} ({}) select {} from {stage}",
        cols.join(", "),
        select.join(", ")
    )
}

/// Refills a stage from the rows gathered over a transaction's chunks (`acc`), telling the
/// last change of each key and whether its first one inserted it over the whole transaction.
pub fn regather_sql(t: &SourceTable, stage: &str, acc: &str) -> String {
    let key: Vec<String> = t
        .key_names()
        .iter()
        .map(|k| format!("a.{}", ident(k)))
        .collect();
    let cols = gathered_columns(t);
    let select: Vec<String> = cols
        .iter()
        .map(|c| match c.as_str() {
            "_cdc_last" => "a._cdc_pos = max(a._cdc_pos) over k".to_owned(),
            "_cdc_new" => "first_value(a._cdc_op) over o in ('i', 'r')".to_owned(),
            other => format!("a.{other}"),
        })
        .collect();
    format!(
        "insert into {stage} ({}) select {} from {acc} a
         window k as (partition by {p}), o as (partition by {p} order by a._cdc_pos)",
        cols.join(", "),
        select.join(", "),
        p = key.join(", "),
    )
}

/// The statements that merge the stage into the replica, in order.
pub fn merge_sql(t: &SourceTable, has_delete: bool) -> Vec<String> {
    merge_sql_of(t, has_delete, false)
}

/// [`merge_sql`] for the stage rows whose `_cdc_pos` is in `$1` only (to find the rows the
/// replica refuses).
pub fn merge_sql_some(t: &SourceTable, has_delete: bool) -> Vec<String> {
    merge_sql_of(t, has_delete, true)
}

fn merge_sql_of(t: &SourceTable, has_delete: bool, some: bool) -> Vec<String> {
    let only = if some {
        " and s._cdc_pos = any ($1::integer[])"
    } else {
        ""
    };
    if t.is_keyless() {
        return multiset_sql(t, only);
    }
    let r = t.replica_ident();
    let s = stage(t);
    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    let key: Vec<String> = t.key_names().iter().map(|k| ident(k)).collect();
    let updates: Vec<String> = t
        .columns
        .iter()
        .filter(|c| !t.key_names().contains(&c.name.as_str()))
        .map(|c| format!("{0} = excluded.{0}", ident(&c.name)))
        .collect();
    let conflict = if updates.is_empty() {
        "do nothing".to_owned()
    } else {
        format!("do update set {}", updates.join(", "))
    };
    let mut out = Vec::new();
    if has_delete {
        out.push(format!(
            "delete from {r} r using {s} s where s._cdc_last and s._cdc_op = 'd' and {}{only}",
            key_eq(t, "r", "s")
        ));
    }
    out.push(format!(
        "insert into {r} ({c}) select {c} from {s} s where s._cdc_last and s._cdc_op <> 'd'{only}
         on conflict ({k}) {conflict}",
        c = cols.join(", "),
        k = key.join(", "),
    ));
    out
}

/// A table without a key: delete `_cdc_n` rows equal to each deleted image (compared by their
/// text, which every type has), insert `_cdc_n` copies of each inserted one.
fn multiset_sql(t: &SourceTable, only: &str) -> Vec<String> {
    let r = t.replica_ident();
    let s = stage(t);
    let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
    let row = |alias: &str| {
        format!(
            "row({})::text",
            cols.iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    vec![
        format!(
            "delete from {r} t where t.ctid = any (array(
                 select x.ctid from {s} s
                 cross join lateral (select r.ctid from {r} r where {} = {} limit s._cdc_n) x
                 where s._cdc_op = 'd'{only}))",
            row("r"),
            row("s"),
        ),
        format!(
            "insert into {r} ({c}) select {sc} from {s} s cross join generate_series(1, s._cdc_n)
             where s._cdc_op = 'i'{only}",
            c = cols.join(", "),
            sc = cols
                .iter()
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures;

    #[test]
    fn keyed_merge() {
        let t = fixtures::products();
        let sql = merge_sql(&t, true);
        assert_eq!(sql.len(), 2);
        assert!(sql[0].starts_with(
            "delete from \"replica\".\"products\" r using pg_temp.\"stage_products\" s"
        ));
        assert!(sql[1].contains("on conflict (\"id\") do update set \"name\" = excluded.\"name\""));
        assert!(!sql[1].contains("\"id\" = excluded"));
        assert_eq!(merge_sql(&t, false).len(), 1);
        let keep = keep_sql(&t);
        assert!(keep.contains("case when 'description' = any (s._cdc_keep) then r.\"description\""));
        assert!(keep.contains("r.\"id\" = coalesce(s._cdc_from_1, s.\"id\")"));
        assert!(renumber_sql(&t).contains("group by \"id\""));
    }

    #[test]
    fn multiset_merge() {
        let t = fixtures::keyless();
        let sql = merge_sql(&t, true);
        assert!(sql[0].contains(
            "row(r.\"at\", r.\"note\")::text = row(s.\"at\", s.\"note\")::text limit s._cdc_n"
        ));
        assert!(sql[1].contains("generate_series(1, s._cdc_n)"));
    }
}
