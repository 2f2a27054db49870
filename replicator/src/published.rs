//! What a publication publishes of a table beyond the columns of its Relation message (pure):
//! its row filter, its column list, and the stored generated columns the replica computes.
//!
//! PostgreSQL 15's rules, as pgoutput applies them while streaming and as the native table
//! sync reads them (`pg_get_publication_tables`, under `pg_publication_tables`):
//! - **Row filters.** One publication's filter is its `WHERE` for the table; a `FOR ALL
//!   TABLES` publication, or one that takes the table through `FOR TABLES IN SCHEMA`, has
//!   none. Several publications' filters for one table are ORed, per published operation
//!   (`publish = 'insert, update, delete'`), and one publication without a filter for an
//!   operation means every row for it. The copy takes the rows an INSERT would publish: the
//!   filter of the publications that publish inserts (of all of them when none does, as the
//!   native table sync copies).
//! - **Column lists.** A list naming every column is no list. Every publication must publish
//!   the same list for a table (`FOR ALL TABLES` counts as none): PostgreSQL refuses to stream
//!   the table otherwise.
//! - **Generated columns.** PostgreSQL 15 never sends stored generated columns, and a column
//!   list cannot name one. Without a column list, the replica computes them with the source's
//!   expression (a generated column in OLAP) — unless the expression uses an object of the
//!   source's own (a function, an operator, a type) or a column whose type OLAP holds as
//!   text, which OLAP cannot be trusted to compute the same: then the column is left out and
//!   said so ([`Generated::not_carried`]). With a column list they stay out, as the list says.
//!
//! Under a row filter, pgoutput sends an UPDATE that takes a row out of the filter as a DELETE
//! and one that brings a row in as an INSERT: the replica follows by itself. A change of the
//! filter, or of the list bringing in a column that already had values, is followed by
//! copying the table again ([`backfill_reason`]).

use std::collections::BTreeSet;

/// The publication's side of a table, as the replica mirrors it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    /// The row filter as the source prints it (`pg_get_expr`); None: every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
    /// The column list's attnums, ascending; None: every column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_list: Option<Vec<i16>>,
    /// Stored generated columns (none under a column list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated: Vec<Generated>,
    /// The table's highest attnum when this was read: a column that appears in the stream
    /// with an attnum up to it already had values (a column list took it in), while a column
    /// added by `ALTER TABLE` gets a higher one. 0: not known.
    #[serde(default)]
    pub last_attnum: i16,
}

/// A stored generated column of the source table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Generated {
    pub name: String,
    pub attnum: i16,
    pub type_oid: u32,
    pub typmod: i32,
    pub olap_type: String,
    /// The generation expression as the source prints it (`pg_get_expr` of `pg_attrdef`).
    pub expression: String,
    /// Why OLAP does not compute the column (it is then absent from the replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_carried: Option<String>,
}

impl Generated {
    pub fn carried(&self) -> bool {
        self.not_carried.is_none()
    }
}

/// Why OLAP is not trusted with a generation expression: the source objects it uses (`uses`,
/// as the source describes them), or None when it uses only built-in ones.
pub fn not_carried(uses: &[String]) -> Option<String> {
    (!uses.is_empty()).then(|| {
        format!(
            "its expression uses {} of the source, which OLAP may lack or define differently",
            uses.join(", ")
        )
    })
}

/// One publication's membership of a table (a row of `pg_get_publication_tables` with its
/// publication's operations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub publication: String,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    /// The column list's attnums (None: every column).
    pub columns: Option<Vec<i16>>,
    /// The row filter (None: every row — also for `FOR ALL TABLES` and `FOR TABLES IN SCHEMA`).
    pub filter: Option<String>,
}

/// What the publications publish of one table, combined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Definition {
    /// The filter of the rows a copy takes (see the module docs).
    pub row_filter: Option<String>,
    pub column_list: Option<Vec<i16>>,
}

/// Combines the memberships of one table (`live`: the attnums of its columns that are not
/// generated). Err: the publications publish different column lists (PostgreSQL refuses to
/// stream the table), with the names to say so.
pub fn combine(members: &[Member], live: &[i16]) -> Result<Definition, String> {
    let live: BTreeSet<i16> = live.iter().copied().collect();
    let list_of = |m: &Member| -> Option<Vec<i16>> {
        let set: BTreeSet<i16> = m.columns.as_ref()?.iter().copied().collect();
        (!live.is_subset(&set)).then(|| set.into_iter().collect())
    };
    let mut lists = members.iter().map(|m| (m, list_of(m)));
    let column_list = match lists.next() {
        Some((first, list)) => {
            if let Some((other, _)) = lists.find(|(_, l)| *l != list) {
                return Err(format!(
                    "publications {:?} and {:?} publish different column lists",
                    first.publication, other.publication
                ));
            }
            list
        }
        None => None,
    };
    let inserting: Vec<&Member> = members.iter().filter(|m| m.insert).collect();
    let copied = if inserting.is_empty() {
        members.iter().collect()
    } else {
        inserting
    };
    Ok(Definition {
        row_filter: or_filters(&copied),
        column_list,
    })
}

/// The filters ORed; None when one of them is none.
fn or_filters(members: &[&Member]) -> Option<String> {
    let mut filters = BTreeSet::new();
    for m in members {
        filters.insert(m.filter.as_deref()?);
    }
    match filters.len() {
        0 => None,
        1 => filters.into_iter().next().map(str::to_owned),
        _ => Some(
            filters
                .iter()
                .map(|f| format!("({f})"))
                .collect::<Vec<_>>()
                .join(" or "),
        ),
    }
}

impl Published {
    /// `where <filter>` for a copy's query, or nothing.
    pub fn where_clause(&self) -> String {
        match &self.row_filter {
            Some(f) => format!(" where ({f})"),
            None => String::new(),
        }
    }

    /// `and <filter>` to add to a copy's own condition, or nothing.
    pub fn and_clause(&self) -> String {
        match &self.row_filter {
            Some(f) => format!(" and ({f})"),
            None => String::new(),
        }
    }

    pub fn generated_carried(&self) -> impl Iterator<Item = &Generated> {
        self.generated.iter().filter(|g| g.carried())
    }

    /// Whether a column with this attnum is sent (under the column list, if any).
    pub fn publishes(&self, attnum: i16) -> bool {
        self.column_list
            .as_ref()
            .is_none_or(|list| list.contains(&attnum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, filter: Option<&str>, columns: Option<Vec<i16>>) -> Member {
        Member {
            publication: name.into(),
            insert: true,
            update: true,
            delete: true,
            columns,
            filter: filter.map(str::to_owned),
        }
    }

    #[test]
    fn one_publication_is_its_own_definition() {
        let d = combine(
            &[member("p", Some("(a > 1)"), Some(vec![2, 1]))],
            &[1, 2, 3],
        )
        .unwrap();
        assert_eq!(d.row_filter.as_deref(), Some("(a > 1)"));
        assert_eq!(d.column_list, Some(vec![1, 2]));
        assert_eq!(combine(&[], &[1]).unwrap(), Definition::default());
    }

    #[test]
    fn filters_are_ored_and_one_without_a_filter_takes_every_row() {
        let both = combine(
            &[
                member("b", Some("(region = 'eu'::text)"), None),
                member("a", Some("(amount > 10)"), None),
            ],
            &[1, 2, 3],
        )
        .unwrap();
        assert_eq!(
            both.row_filter.as_deref(),
            Some("((amount > 10)) or ((region = 'eu'::text))")
        );
        // The same filter twice is one.
        let same = combine(
            &[member("a", Some("f"), None), member("b", Some("f"), None)],
            &[1],
        );
        assert_eq!(same.unwrap().row_filter.as_deref(), Some("f"));
        // FOR ALL TABLES, FOR TABLES IN SCHEMA and a plain FOR TABLE all come without one.
        let all = combine(
            &[member("a", Some("f"), None), member("all", None, None)],
            &[1],
        );
        assert_eq!(all.unwrap().row_filter, None);
    }

    #[test]
    fn the_copy_takes_the_filter_of_the_publications_that_publish_inserts() {
        let deletes_only = Member {
            insert: false,
            update: false,
            ..member("d", None, None)
        };
        let d = combine(&[member("i", Some("f"), None), deletes_only.clone()], &[1]).unwrap();
        assert_eq!(d.row_filter.as_deref(), Some("f"));
        // No publication publishes inserts: the native sync's rule, all of them.
        let d = combine(
            &[
                deletes_only,
                Member {
                    insert: false,
                    ..member("u", Some("g"), None)
                },
            ],
            &[1],
        )
        .unwrap();
        assert_eq!(d.row_filter, None);
    }

    #[test]
    fn column_lists_must_agree_and_a_whole_list_is_none() {
        let live = [1, 2, 3];
        let whole = combine(&[member("a", None, Some(vec![3, 1, 2]))], &live).unwrap();
        assert_eq!(whole.column_list, None);
        let same = combine(
            &[
                member("a", None, Some(vec![1, 2])),
                member("b", Some("f"), Some(vec![2, 1])),
            ],
            &live,
        )
        .unwrap();
        assert_eq!(same.column_list, Some(vec![1, 2]));
        let e = combine(
            &[
                member("a", None, Some(vec![1, 2])),
                member("all", None, None),
            ],
            &live,
        )
        .unwrap_err();
        assert!(e.contains("\"a\"") && e.contains("\"all\""), "{e}");
    }

    #[test]
    fn where_clauses() {
        let p = Published {
            row_filter: Some("(a = 1)".into()),
            ..Default::default()
        };
        assert_eq!(p.where_clause(), " where ((a = 1))");
        assert_eq!(p.and_clause(), " and ((a = 1))");
        assert_eq!(Published::default().where_clause(), "");
        assert!(Published::default().publishes(7));
        let listed = Published {
            column_list: Some(vec![1, 2]),
            ..Default::default()
        };
        assert!(listed.publishes(2) && !listed.publishes(3));
    }

    #[test]
    fn generated_columns_using_the_sources_own_objects_are_not_carried() {
        assert_eq!(not_carried(&[]), None);
        let why = not_carried(&["function double_it(integer)".into()]).unwrap();
        assert!(why.contains("function double_it(integer)"), "{why}");
    }
}
