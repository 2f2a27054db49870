//! The star schema's inputs, bound to the source by identity: schema changes of the source
//! never stop the star; it follows them, or degrades visibly.
//!
//! The star's SQL (schema/olap/logic) reads one view per source table, `star_input.<input>`
//! (and `pg_temp.input_<input>` over a batch's stage table), generated from `star_bindings`:
//! every attribute the star reads (`star_inputs()` in 12_star_inputs.sql lists them, with
//! their role) is bound to its source column by the table's relation oid and the column's
//! attnum. When a schema change of a source table reaches the replica, [`follow`] decides
//! what each attribute becomes — the pure part — and [`store`] carries it out in the batch's
//! transaction, around the replica's DDL (a view over a replica column blocks dropping or
//! retyping it):
//!
//! - renamed: read under its new name, nothing changes in the star;
//! - retyped: read as it is or cast where the star's type holds every value; a measure's star
//!   columns widen to `numeric` where they do not; otherwise read value by value, a row whose
//!   value does not read being left out of the star and listed in `star_dead_letters`;
//! - dropped: rows keep the value they had (`star_kept.<input>`); rows written later get the
//!   role's fallback (NULL, 'unknown', the insert's commit time, the unknown member -1), or are
//!   dead-lettered when they cannot be attached (an order line's order);
//! - a dropped key freezes the input: the star keeps what it read then;
//! - the source table renamed is followed; dropped or unpublished, the star keeps what it has.
//!
//! Each change is logged once, after its batch commits; `status` lists what is degraded and
//! `brewlytics_star_degraded_inputs` exports it.

pub mod fit;
pub mod follow;
pub mod metrics;
pub mod store;

use chrono::{DateTime, Utc};

use crate::lsn::Lsn;
pub use fit::Read;

/// What an attribute is to the star (`star_inputs().role`), which decides its fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Identifies the source row; dropped, the input is frozen.
    Key,
    /// The row it belongs to (an order line's order); dropped, later rows are dead letters.
    Reference,
    /// A dimension's source id; dropped, later rows point at the unknown member (-1).
    Member,
    /// A fact's measure: NULL when dropped; its star columns may widen.
    Measure,
    /// When the fact happened: the commit time of the row's insert when dropped.
    Time,
    /// A text the star requires: 'unknown' when dropped.
    Label,
    /// Anything else: NULL when dropped.
    Attribute,
}

impl Role {
    pub fn parse(s: &str) -> Self {
        match s {
            "key" => Role::Key,
            "reference" => Role::Reference,
            "member" => Role::Member,
            "measure" => Role::Measure,
            "time" => Role::Time,
            "label" => Role::Label,
            _ => Role::Attribute,
        }
    }
}

/// The state of an attribute's binding (`star_bindings.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Bound,
    Renamed,
    Retyped,
    Widened,
    /// Read value by value: some values may not be held.
    Incompatible,
    Dropped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Bound => "bound",
            State::Renamed => "renamed",
            State::Retyped => "retyped",
            State::Widened => "widened",
            State::Incompatible => "incompatible",
            State::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "renamed" => State::Renamed,
            "retyped" => State::Retyped,
            "widened" => State::Widened,
            "incompatible" => State::Incompatible,
            "dropped" => State::Dropped,
            _ => State::Bound,
        }
    }

    /// The star no longer reads every row's value of it.
    pub fn is_degraded(self) -> bool {
        matches!(self, State::Incompatible | State::Dropped)
    }
}

/// The state of an input's source table (`star_input_tables.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableState {
    Bound,
    Renamed,
    /// Its key was dropped: the star reads what it had then.
    Frozen,
    /// Dropped on the source: its replica is kept as it was.
    Dropped,
    /// Removed from the publication: its replica is kept as it was.
    Unpublished,
}

impl TableState {
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::Bound => "bound",
            TableState::Renamed => "renamed",
            TableState::Frozen => "frozen",
            TableState::Dropped => "dropped",
            TableState::Unpublished => "unpublished",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "renamed" => TableState::Renamed,
            "frozen" => TableState::Frozen,
            "dropped" => TableState::Dropped,
            "unpublished" => TableState::Unpublished,
            _ => TableState::Bound,
        }
    }

    pub fn is_degraded(self) -> bool {
        matches!(
            self,
            TableState::Frozen | TableState::Dropped | TableState::Unpublished
        )
    }
}

/// One line about a change the star followed, logged once its batch commits (a warning when
/// it degrades the star).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub degraded: bool,
    pub text: String,
}

impl Note {
    pub fn followed(text: String) -> Self {
        Self {
            degraded: false,
            text,
        }
    }

    pub fn degraded(text: String) -> Self {
        Self {
            degraded: true,
            text,
        }
    }
}

/// Where a change happened: the source position and commit time (unknown for a copy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct At {
    pub lsn: Option<Lsn>,
    pub time: Option<DateTime<Utc>>,
}

/// One attribute the star reads, and what it is bound to.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub role: Role,
    /// Star columns it feeds (`table.column`).
    pub feeds: Vec<String>,
    pub star_type: String,
    pub attnum: Option<i16>,
    /// The source column's current name; its last name once dropped.
    pub source_column: Option<String>,
    pub replica_type: Option<String>,
    pub read: Read,
    pub state: State,
    pub changed: At,
    pub detail: Option<String>,
}

/// One source table the star reads, and its attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub source_oid: Option<u32>,
    pub source_schema: String,
    pub source_table: String,
    pub replica_table: String,
    pub state: TableState,
    pub changed: At,
    pub detail: Option<String>,
    pub attributes: Vec<Attribute>,
}

impl Input {
    pub fn qualified_source(&self) -> String {
        format!("{}.{}", self.source_schema, self.source_table)
    }

    /// Whether the star reads this input whole (nothing degraded).
    pub fn is_degraded(&self) -> bool {
        self.state.is_degraded() || self.attributes.iter().any(|a| a.state.is_degraded())
    }
}

/// A star attribute that no longer reads its source (for `status` and the metric).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Degraded {
    /// `dim_customer`, `fact_sales`, …
    pub star_table: String,
    /// The star's column: `email`, `employee_key`, …
    pub attribute: String,
    /// `public.customers.email`
    pub source: String,
    /// dropped, incompatible, frozen, table dropped, unpublished
    pub state: String,
    pub lsn: Option<Lsn>,
    pub at: Option<DateTime<Utc>>,
    /// One line: what happened and what the star does about it.
    pub message: String,
}

/// Every star column an input feeds, with the state of what feeds it (pure).
pub fn degraded(inputs: &[Input]) -> Vec<Degraded> {
    let mut out = Vec::new();
    for i in inputs {
        for a in &i.attributes {
            let (state, changed, what) = if i.state.is_degraded() {
                let what = match i.state {
                    TableState::Frozen => "frozen: its key was dropped".to_owned(),
                    TableState::Dropped => "dropped".to_owned(),
                    _ => "removed from the publication".to_owned(),
                };
                (
                    i.state.as_str().to_owned(),
                    i.changed,
                    format!("source table {}", i.qualified_source()) + " " + &what,
                )
            } else if a.state.is_degraded() {
                let column = format!(
                    "source column {}.{}",
                    i.qualified_source(),
                    a.source_column.as_deref().unwrap_or(&a.name)
                );
                let what = match a.state {
                    State::Dropped => "dropped".to_owned(),
                    _ => format!(
                        "retyped to {} (values the star cannot read as {} are dead-lettered)",
                        a.replica_type.as_deref().unwrap_or("?"),
                        a.star_type
                    ),
                };
                (
                    a.state.as_str().to_owned(),
                    a.changed,
                    format!("{column} {what}"),
                )
            } else {
                continue;
            };
            for feed in &a.feeds {
                let (table, column) = feed.split_once('.').unwrap_or((feed, ""));
                let at = changed.lsn.map(|l| format!(" at {l}")).unwrap_or_default();
                out.push(Degraded {
                    star_table: table.to_owned(),
                    attribute: column.to_owned(),
                    source: format!("{}.{}", i.qualified_source(), a.name),
                    state: state.clone(),
                    lsn: changed.lsn,
                    at: changed.time,
                    message: format!("{feed}: {what}{at}"),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.star_table, &a.attribute).cmp(&(&b.star_table, &b.attribute)));
    out.dedup_by(|a, b| a.star_table == b.star_table && a.attribute == b.attribute);
    out
}
