//! What an input becomes when its source table's shape changes (pure): each attribute found
//! again by identity (attnum, when the table is the same relation) or by name, its type
//! fitted, or dropped — and what has to be done about it around the replica's DDL.

use super::fit::{fit, Fit, Read};
use super::{At, Attribute, Input, Note, Role, State, TableState};
use crate::table::{Column, SourceTable};

/// The outcome of following one schema change.
#[derive(Clone, Debug, PartialEq)]
pub struct Followed {
    /// The input as it is bound now.
    pub input: Input,
    /// Attributes dropped by this change whose values rows keep (read before the DDL).
    pub keep: Vec<String>,
    /// The key was dropped by this change: what the input reads now is frozen.
    pub freeze: bool,
    /// Attributes whose star columns widen to their new `star_type`.
    pub widen: Vec<String>,
    /// Rows already in the star may read differently now (a column retyped — its values
    /// cast, or rewritten by `USING` —, read row by row, found again; a key found again): the
    /// star is computed again from its inputs, as a rebuild would.
    pub recompute: bool,
    /// One line per change, said once it is committed.
    pub notes: Vec<Note>,
}

impl Followed {
    /// Nothing to carry out and nothing to say.
    pub fn is_noop(&self, before: &Input) -> bool {
        self.input == *before
            && self.keep.is_empty()
            && !self.freeze
            && self.widen.is_empty()
            && !self.recompute
    }
}

/// Follows `input` onto `table` (its source table as the replica has it after a change).
pub fn follow(input: &Input, table: &SourceTable, at: At) -> Followed {
    let same_relation = table.oid != 0 && input.source_oid == Some(table.oid);
    let by_attnum = same_relation && table.columns.iter().all(|c| c.attnum.is_some());
    let mut out = Followed {
        input: input.clone(),
        keep: Vec::new(),
        freeze: false,
        widen: Vec::new(),
        recompute: false,
        notes: Vec::new(),
    };
    let source = table.qualified_source();
    let new = &mut out.input;
    if table.oid != 0 {
        new.source_oid = Some(table.oid);
    }
    if new.source_table != *table.name || new.source_schema != *table.schema {
        if same_relation {
            out.notes.push(Note::followed(format!(
                "source table {} renamed to {source}: the star follows it",
                input.qualified_source()
            )));
            new.state = TableState::Renamed;
            new.changed = at;
        }
        new.source_schema = table.schema.to_string();
        new.source_table = table.name.to_string();
    }
    new.replica_table = table.replica.to_string();
    if matches!(new.state, TableState::Dropped | TableState::Unpublished) {
        new.state = TableState::Bound;
        new.changed = at;
        out.notes.push(Note::followed(format!(
            "source table {source} is mirrored again: the star reads it"
        )));
    }
    // Columns another attribute is bound to are not taken by name.
    let taken: Vec<i16> = input
        .attributes
        .iter()
        .filter(|a| a.state != State::Dropped)
        .filter_map(|a| a.attnum)
        .collect();
    for (i, old) in input.attributes.iter().enumerate() {
        let found = find(old, table, by_attnum, &taken);
        let a = &mut new.attributes[i];
        match found {
            Some(col) => {
                let retyped = bind(a, old, col, &source, at, &mut out.widen, &mut out.notes);
                out.recompute |= retyped;
            }
            None if old.state == State::Dropped => {}
            None => {
                a.state = State::Dropped;
                a.read = Read::AsIs;
                a.changed = at;
                a.detail = None;
                if old.role == Role::Key {
                    out.freeze = true;
                } else {
                    out.keep.push(old.name.clone());
                }
                out.notes.push(Note::degraded(format!(
                    "{}: source column {source}.{} dropped{}",
                    old.feeds.join(", "),
                    old.source_column.as_deref().unwrap_or(&old.name),
                    dropped_effect(old.role)
                )));
            }
        }
        if old.state.is_degraded() && !a.state.is_degraded() {
            out.recompute = true;
        }
        // Rows left out come in, or the other way round.
        if (a.state == State::Incompatible) != (old.state == State::Incompatible) {
            out.recompute = true;
        }
    }
    let key_dropped = new
        .attributes
        .iter()
        .any(|a| a.role == Role::Key && a.state == State::Dropped);
    if key_dropped && new.state != TableState::Frozen {
        new.state = TableState::Frozen;
        new.changed = at;
        out.freeze = true;
    } else if !key_dropped && new.state == TableState::Frozen {
        new.state = TableState::Bound;
        new.changed = at;
        out.recompute = true;
        out.notes.push(Note::followed(format!(
            "source table {source} has its key again: the star reads it again"
        )));
    }
    out
}

/// The column an attribute reads now: the same attnum of the same relation, else the name it
/// had — or, once dropped, a new column under that name that no other attribute reads.
fn find<'a>(
    a: &Attribute,
    table: &'a SourceTable,
    by_attnum: bool,
    taken: &[i16],
) -> Option<&'a Column> {
    if by_attnum && a.attnum.is_some() && a.state != State::Dropped {
        return table.columns.iter().find(|c| c.attnum == a.attnum);
    }
    let name = a.source_column.as_deref().unwrap_or(&a.name);
    table
        .columns
        .iter()
        .filter(|c| a.state != State::Dropped || c.attnum.is_none_or(|n| !taken.contains(&n)))
        .find(|c| c.name == name || (a.state == State::Dropped && c.name == a.name))
}

/// `a` (was `old`) reads `col` now. Whether its type changed.
fn bind(
    a: &mut Attribute,
    old: &Attribute,
    col: &Column,
    source: &str,
    at: At,
    widen: &mut Vec<String>,
    notes: &mut Vec<Note>,
) -> bool {
    let renamed = old.source_column.as_deref() != Some(col.name.as_str());
    let retyped = old.replica_type.as_deref() != Some(col.olap_type.as_str());
    let again = old.state == State::Dropped;
    // Declared before its table was ever mirrored (a star input of a table the source gained
    // later): its first binding, not a return.
    let first = old.source_column.is_none() && old.replica_type.is_none();
    a.attnum = col.attnum.or(old.attnum);
    a.source_column = Some(col.name.clone());
    a.replica_type = Some(col.olap_type.clone());
    let feeds = old.feeds.join(", ");
    let column = format!("{source}.{}", col.name);
    let (read, state, star_type) = match fit(&old.star_type, &col.olap_type, old.role) {
        Fit::Held(read) => (read, None, old.star_type.clone()),
        Fit::Widen(t) => (Read::AsIs, Some(State::Widened), t),
        Fit::PerRow => (
            Read::PerRow,
            Some(State::Incompatible),
            old.star_type.clone(),
        ),
    };
    a.read = read;
    if star_type != old.star_type {
        widen.push(old.name.clone());
        a.star_type = star_type;
    }
    a.state = match state {
        Some(s) => s,
        None if again => State::Bound,
        None if retyped && old.replica_type.is_some() => State::Retyped,
        None if renamed && old.source_column.is_some() => State::Renamed,
        None if old.state == State::Incompatible => State::Retyped,
        None => old.state,
    };
    let changed = again
        || a.state != old.state
        || (renamed && old.source_column.is_some())
        || (retyped && old.replica_type.is_some());
    let retyped = retyped && old.replica_type.is_some();
    if !changed {
        return retyped;
    }
    a.changed = at;
    if first && a.state == State::Bound {
        return retyped;
    }
    let note = if again {
        format!("{feeds}: reads source column {column} again")
    } else {
        match a.state {
            State::Widened => format!(
                "{feeds}: source column {column} retyped to {}: widened to {}",
                col.olap_type, a.star_type
            ),
            State::Incompatible => format!(
                "{feeds}: source column {column} retyped to {}: values the star cannot read \
                 as {} are left out (star_dead_letters)",
                col.olap_type, a.star_type
            ),
            _ if renamed && old.source_column.is_some() => format!(
                "{feeds}: source column {source}.{} renamed to {}: the star follows it",
                old.source_column.as_deref().unwrap_or_default(),
                col.name
            ),
            _ => format!(
                "{feeds}: source column {column} retyped to {}: the star reads it as {}",
                col.olap_type, a.star_type
            ),
        }
    };
    a.detail = Some(note.clone());
    notes.push(Note {
        degraded: a.state.is_degraded(),
        text: note,
    });
    retyped
}

/// What a dropped attribute becomes, by role (for the log).
fn dropped_effect(role: Role) -> &'static str {
    match role {
        Role::Key => ": its rows cannot be told apart, the star keeps what it had (frozen)",
        Role::Reference => {
            ": rows keep their value; later rows cannot be attached and are dead-lettered"
        }
        Role::Member => ": rows keep their value; later rows point at the unknown member (-1)",
        Role::Time => ": rows keep their value; later rows take the commit time of their insert",
        Role::Label => ": rows keep their value; later rows read 'unknown'",
        Role::Measure | Role::Attribute => ": rows keep their value; later rows read NULL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::ReplicaIdentity;
    use crate::lsn::Lsn;
    use crate::table::fixtures::column;

    fn attribute(name: &str, role: Role, star_type: &str, attnum: i16, replica: &str) -> Attribute {
        Attribute {
            name: name.into(),
            role,
            feeds: vec![format!("fact_sales.{name}")],
            star_type: star_type.into(),
            attnum: Some(attnum),
            source_column: Some(name.into()),
            replica_type: Some(replica.into()),
            read: Read::AsIs,
            state: State::Bound,
            changed: At::default(),
            detail: None,
        }
    }

    /// order_items(id bigint, order_id uuid, quantity integer) as bound.
    fn items() -> (Input, SourceTable) {
        let input = Input {
            name: "order_items".into(),
            source_oid: Some(16500),
            source_schema: "public".into(),
            source_table: "order_items".into(),
            replica_table: "order_items".into(),
            state: TableState::Bound,
            changed: At::default(),
            detail: None,
            attributes: vec![
                attribute("id", Role::Key, "bigint", 1, "bigint"),
                attribute("order_id", Role::Reference, "uuid", 2, "uuid"),
                Attribute {
                    read: Read::Cast,
                    ..attribute("quantity", Role::Measure, "bigint", 4, "integer")
                },
            ],
        };
        let table = SourceTable {
            oid: 16500,
            schema: "public".into(),
            name: "order_items".into(),
            replica: "order_items".into(),
            columns: vec![
                column("id", 20, "bigint", 1),
                column("order_id", 2950, "uuid", 2),
                column("product_id", 20, "bigint", 3),
                column("quantity", 23, "integer", 4),
            ],
            key: vec![0],
            identity: ReplicaIdentity::Full,
            published: Default::default(),
        };
        (input, table)
    }

    fn at(n: u64) -> At {
        At {
            lsn: Some(Lsn(n)),
            time: None,
        }
    }

    #[test]
    fn unchanged_is_a_no_op() {
        let (input, table) = items();
        let f = follow(&input, &table, at(1));
        assert!(f.is_noop(&input), "{f:?}");
        assert!(f.notes.is_empty());
    }

    #[test]
    fn a_rename_is_followed_by_attnum() {
        let (input, mut table) = items();
        table.columns[3].name = "qty".into();
        let f = follow(&input, &table, at(7));
        let q = &f.input.attributes[2];
        assert_eq!(
            (q.state, q.source_column.as_deref(), q.read),
            (State::Renamed, Some("qty"), Read::Cast)
        );
        assert_eq!(q.changed, at(7));
        assert!(f.keep.is_empty() && !f.recompute && f.widen.is_empty());
        assert!(f.notes[0].text.contains("renamed to qty"), "{:?}", f.notes);
    }

    #[test]
    fn swapped_names_stay_with_their_attnums() {
        let (input, mut table) = items();
        table.columns[1].name = "quantity".into();
        table.columns[3].name = "order_id".into();
        let f = follow(&input, &table, at(2));
        assert_eq!(
            f.input.attributes[1].source_column.as_deref(),
            Some("quantity")
        );
        assert_eq!(
            f.input.attributes[2].source_column.as_deref(),
            Some("order_id")
        );
    }

    #[test]
    fn a_drop_keeps_values_and_degrades() {
        let (input, mut table) = items();
        table.columns.remove(3);
        let f = follow(&input, &table, at(9));
        let q = &f.input.attributes[2];
        assert_eq!((q.state, q.changed), (State::Dropped, at(9)));
        assert_eq!(
            q.source_column.as_deref(),
            Some("quantity"),
            "its last name"
        );
        assert_eq!(f.keep, vec!["quantity".to_string()]);
        assert!(f.input.is_degraded() && !f.freeze);
        assert!(
            f.notes[0].text.contains("later rows read NULL"),
            "{:?}",
            f.notes
        );
        // Followed again (another change of the table): still dropped, no new note.
        let g = follow(&f.input, &table, at(12));
        assert!(g.is_noop(&f.input), "{g:?}");
    }

    #[test]
    fn a_column_added_again_under_its_name_is_read_again() {
        let (input, mut table) = items();
        table.columns.remove(3);
        let dropped = follow(&input, &table, at(9)).input;
        table.columns.push(column("quantity", 20, "bigint", 5));
        let f = follow(&dropped, &table, at(11));
        let q = &f.input.attributes[2];
        assert_eq!((q.state, q.attnum), (State::Bound, Some(5)));
        assert!(f.recompute, "old rows now read the new column");
    }

    #[test]
    fn the_first_binding_of_an_input_declared_before_its_table_says_nothing() {
        let (mut input, table) = items();
        for a in &mut input.attributes {
            (a.attnum, a.source_column, a.replica_type) = (None, None, None);
            a.state = State::Dropped;
        }
        let f = follow(&input, &table, at(3));
        assert!(f.notes.is_empty(), "{:?}", f.notes);
        let states: Vec<_> = f.input.attributes.iter().map(|a| a.state).collect();
        assert_eq!(states, [State::Bound; 3]);
        assert_eq!(f.input.attributes[2].attnum, Some(4));
    }

    #[test]
    fn a_dropped_key_freezes_the_input() {
        let (input, mut table) = items();
        table.columns.remove(0);
        table.key = vec![];
        let f = follow(&input, &table, at(3));
        assert!(f.freeze);
        assert_eq!(f.input.state, TableState::Frozen);
        assert!(f.keep.is_empty());
    }

    #[test]
    fn retypes_are_held_widened_or_read_value_by_value() {
        let (input, mut table) = items();
        table.columns[3] = column("quantity", 20, "bigint", 4);
        let f = follow(&input, &table, at(4));
        assert_eq!(f.input.attributes[2].state, State::Retyped);
        assert!(f.widen.is_empty());
        assert!(
            f.recompute,
            "values may have been rewritten: the star reads them again"
        );

        table.columns[3] = column("quantity", 1700, "numeric(10,2)", 4);
        let f = follow(&input, &table, at(5));
        let q = &f.input.attributes[2];
        assert_eq!((q.state, q.star_type.as_str()), (State::Widened, "numeric"));
        assert_eq!(f.widen, vec!["quantity".to_string()]);

        table.columns[1] = column("order_id", 25, "text", 2);
        let f = follow(&input, &table, at(6));
        let o = &f.input.attributes[1];
        assert_eq!((o.state, o.read), (State::Incompatible, Read::PerRow));
        assert!(f.recompute, "rows whose value does not read leave the star");

        table.columns.remove(1);
        let g = follow(&f.input, &table, at(7));
        assert_eq!(g.input.attributes[1].state, State::Dropped);
        assert!(
            g.recompute,
            "rows left out for their value come back with the value kept"
        );
    }

    #[test]
    fn without_attnums_a_rename_looks_like_a_drop() {
        let (input, mut table) = items();
        for c in &mut table.columns {
            c.attnum = None;
        }
        table.columns[3].name = "qty".into();
        let f = follow(&input, &table, at(8));
        assert_eq!(f.input.attributes[2].state, State::Dropped);
    }

    #[test]
    fn a_table_rename_is_followed_and_identity_is_learned() {
        let (mut input, mut table) = items();
        input.source_oid = None;
        for a in &mut input.attributes {
            a.attnum = None;
        }
        let f = follow(&input, &table, at(1));
        assert_eq!(f.input.source_oid, Some(16500));
        assert_eq!(f.input.attributes[2].attnum, Some(4));
        assert!(
            f.notes.is_empty(),
            "learning is not a change: {:?}",
            f.notes
        );
        table.name = "lines".into();
        table.replica = "lines".into();
        let g = follow(&f.input, &table, at(2));
        assert_eq!(
            (g.input.state, g.input.replica_table.as_str()),
            (TableState::Renamed, "lines")
        );
        assert!(g.notes[0].text.contains("renamed to public.lines"));
    }
}
