//! Partitioned tables on the source (pure: no I/O): what the replica does when a partition
//! is attached, created, detached or dropped.
//!
//! PostgreSQL streams no row for `ALTER TABLE … ATTACH PARTITION` (the attached table's rows
//! were never inserted into the published table) and nothing for `DETACH PARTITION` or the
//! `DROP TABLE` of a partition. The DDL event trigger (schema/oltp/logic/10_ddl_capture.sql)
//! sends a logical message ([`PREFIX`]) in the transaction of each such command: the
//! partition tree of the table's root as that transaction leaves it, or the tables dropped.
//! Without the trigger, the backfill worker compares the trees with what the replica has
//! recorded every few seconds and asks the stream to look (a `check`). Either way the stream
//! meets the change in its order, and [`Followed`] says what changed since the partitions it
//! has seen (`cdc_partitions` in OLAP):
//!
//! - **published through the root** (`publish_via_partition_root = true`): the partitions'
//!   rows are the root's replica rows. A partition attached is copied — a backfill of the
//!   root limited to the partition's constraint (its *scope*) — and a partition detached or
//!   dropped keeps its rows (the default, [`DetachPolicy::Keep`]: dropping old partitions is
//!   retention, not a business delete) or has them removed ([`DetachPolicy::Mirror`]: a
//!   backfill of its scope, which now holds none of its rows). A partition created empty
//!   needs nothing.
//! - **each leaf published as itself** (`false`): a leaf attached or created is a new table
//!   of the publication, copied as such; one detached or dropped is no longer mirrored — its
//!   replica kept (`keep`) or emptied (`mirror`: a TRUNCATE, journaled).
//!
//! Several levels of partitioning are one tree: a partition attached with partitions of its
//! own is copied once, by its own scope. What was done is carried as a schema step
//! ([`PartitionStep`]) — journaled as a schema event, published to NATS, recorded in OLAP —
//! and the copies and removals are backfills, so their rows are journaled and `replay` does
//! the same.

pub mod catalog;
pub mod follow;

use std::collections::{BTreeMap, HashMap, HashSet};

/// The prefix of the logical messages about partitions (trigger and worker).
pub const PREFIX: &str = "brewlytics_partitions";

/// What becomes of the rows of a partition detached (or dropped) on the source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DetachPolicy {
    /// They stay in the replica (and the star keeps its facts): analytics keeps its history.
    #[default]
    Keep,
    /// They are removed from the replica, as they are from the published table.
    Mirror,
}

impl std::str::FromStr for DetachPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep" => Ok(Self::Keep),
            "mirror" => Ok(Self::Mirror),
            other => Err(format!(
                "unknown --partition-detach {other:?} (keep or mirror)"
            )),
        }
    }
}

/// A table by OID and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Rel {
    pub oid: u32,
    pub schema: String,
    pub table: String,
}

impl Rel {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// A partition, as the source's catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    /// Its parent: the root, or a partition partitioned in turn.
    pub parent: u32,
    #[serde(default)]
    pub level: i32,
    /// Holds rows itself (not partitioned in turn).
    pub leaf: bool,
    /// `FOR VALUES …` or `DEFAULT`, as the source prints it.
    #[serde(default)]
    pub bound: Option<String>,
    /// Its partition constraint as the source prints it: the rows that belong to it, its
    /// ancestors' constraints included (none: every row, a default partition alone).
    #[serde(default)]
    pub scope: Option<String>,
}

impl Member {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Its constraint as a predicate that holds for every row it may hold.
    pub fn predicate(&self) -> String {
        self.scope.clone().unwrap_or_else(|| "true".into())
    }
}

/// A partitioned table and its partitions at every level.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tree {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    #[serde(default)]
    pub partitions: Vec<Member>,
}

impl Tree {
    pub fn rel(&self) -> Rel {
        Rel {
            oid: self.oid,
            schema: self.schema.clone(),
            table: self.table.clone(),
        }
    }

    /// The partitions below `oid` (the root or one of its partitions), at every level.
    pub fn below(&self, oid: u32) -> Vec<Member> {
        let mut inside: HashSet<u32> = HashSet::from([oid]);
        let mut out = Vec::new();
        // Listed by level: a parent comes before its partitions.
        let mut sorted: Vec<&Member> = self.partitions.iter().collect();
        sorted.sort_by_key(|m| (m.level, m.oid));
        for m in sorted {
            if inside.contains(&m.parent) {
                inside.insert(m.oid);
                out.push(m.clone());
            }
        }
        out
    }
}

/// A `brewlytics_partitions` message: a tree as a command left it (and the partitions it
/// created, empty), tables dropped, or trees to read from the catalog (the worker's check).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Tree>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Rel>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub check: Vec<Rel>,
}

/// How a partitioned table's rows are mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirroredAs {
    /// Under the root's name, in its replica (`publish_via_partition_root = true`).
    Root,
    /// Each leaf as a table of its own.
    Leaf,
}

impl MirroredAs {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Leaf => "leaf",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Attached,
    Detached,
    Dropped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attached => "attached",
            Self::Detached => "detached",
            Self::Dropped => "dropped",
        }
    }
}

/// What the replicator did about a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// There when the table was first mirrored: its rows came with the table's copy.
    Baseline,
    /// Created empty (`CREATE TABLE … PARTITION OF`): nothing to copy.
    Created,
    /// Attached: its rows copied.
    Copy,
    /// Detached or dropped: its rows kept in the replica.
    Keep,
    /// Detached or dropped: its rows removed from the replica.
    Remove,
    /// Inside a partition attached, detached or dropped: that partition's action covers it.
    WithParent,
    /// Detached, but still published as a table of its own: still mirrored.
    StillPublished,
    /// Its state changed and nothing more is to be done (a detached partition dropped).
    Noted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Created => "created",
            Self::Copy => "copy",
            Self::Keep => "keep",
            Self::Remove => "remove",
            Self::WithParent => "with_parent",
            Self::StillPublished => "still_published",
            Self::Noted => "noted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Baseline,
            Self::Created,
            Self::Copy,
            Self::Keep,
            Self::Remove,
            Self::WithParent,
            Self::StillPublished,
            Self::Noted,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// One partition's change at a point of the stream: its new state and what was done.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// As it is now (attached) or as it was last seen (detached, dropped).
    pub partition: Member,
    pub state: State,
    pub action: Action,
}

/// A partitioned table's partitions at a point of the stream: carried as a schema step of
/// the mirrored table, journaled, and recorded in OLAP (`cdc_partitions`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionStep {
    /// The partitioned table followed.
    pub root: Rel,
    pub mirrored_as: MirroredAs,
    /// Partitions attached now (all of them when `whole`; else the ones refreshed).
    #[serde(default)]
    pub partitions: Vec<Member>,
    /// `partitions` is the whole tree: a recorded partition missing from it is stale.
    #[serde(default)]
    pub whole: bool,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A partition as seen: as it was last described, its state and the last action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub member: Member,
    pub state: State,
    pub action: Action,
}

/// The partitions seen of one partitioned table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Followed {
    pub root: Rel,
    pub mirrored_as: MirroredAs,
    pub partitions: BTreeMap<u32, Seen>,
}

/// What the leaves of a table mirrored leaf by leaf are to the publications now.
#[derive(Clone, Debug, Default)]
pub struct LeafMirror {
    /// Tables published as themselves now (attached or not).
    pub published: HashSet<u32>,
    /// Leaves the replica mirrors already (as tables of their own).
    pub mirrored: HashSet<u32>,
}

impl Followed {
    pub fn new(root: Rel, mirrored_as: MirroredAs) -> Self {
        Self {
            root,
            mirrored_as,
            partitions: BTreeMap::new(),
        }
    }

    /// Whether anything was ever recorded of it.
    pub fn known(&self) -> bool {
        !self.partitions.is_empty()
    }

    fn attached(&self) -> HashMap<u32, &Seen> {
        self.partitions
            .iter()
            .filter(|(_, s)| s.state == State::Attached)
            .map(|(o, s)| (*o, s))
            .collect()
    }

    /// Partitions attached now that were not (or not there), and partitions attached before
    /// that are not now; a partition moved to another parent or bound is both.
    fn compare<'a>(&'a self, now: &'a [Member]) -> (Vec<&'a Member>, Vec<&'a Seen>) {
        let seen = self.attached();
        let moved = |m: &Member| {
            seen.get(&m.oid)
                .is_some_and(|s| s.member.parent != m.parent || s.member.bound != m.bound)
        };
        let mut new: Vec<&Member> = now
            .iter()
            .filter(|m| !seen.contains_key(&m.oid) || moved(m))
            .collect();
        new.sort_by_key(|m| (m.level, m.oid));
        let present: HashSet<u32> = now.iter().filter(|m| !moved(m)).map(|m| m.oid).collect();
        let mut gone: Vec<&Seen> = seen
            .values()
            .filter(|s| !present.contains(&s.member.oid))
            .copied()
            .collect();
        gone.sort_by_key(|s| (s.member.level, s.member.oid));
        (new, gone)
    }

    /// Events of the partitions gone (detached) and new (attached), each with the action
    /// `gone_action` or `new_action` says.
    fn events(
        &self,
        now: &[Member],
        gone_action: impl Fn(&Seen) -> Action,
        new_action: impl Fn(&Member) -> Action,
    ) -> Vec<Event> {
        let (new, gone) = self.compare(now);
        let gone = gone.into_iter().map(|s| Event {
            partition: s.member.clone(),
            state: State::Detached,
            action: gone_action(s),
        });
        let new = new.into_iter().map(|m| Event {
            partition: m.clone(),
            state: State::Attached,
            action: new_action(m),
        });
        gone.chain(new).collect()
    }

    /// What changed for a table mirrored through its root: `now` its partitions at every
    /// level, `created` those the command created (empty). Partitions inside one attached or
    /// detached with it go with it. A table never seen before has every partition new: each
    /// copied (how an OLAP of an earlier version catches up with partitions it missed).
    pub fn rooted_changes(
        &self,
        now: &[Member],
        created: &[u32],
        policy: DetachPolicy,
    ) -> Vec<Event> {
        let (new, gone) = self.compare(now);
        let new_oids: HashSet<u32> = new.iter().map(|m| m.oid).collect();
        let gone_oids: HashSet<u32> = gone.iter().map(|s| s.member.oid).collect();
        self.events(
            now,
            |s| {
                if gone_oids.contains(&s.member.parent) {
                    Action::WithParent
                } else {
                    detached(policy)
                }
            },
            |m| {
                if new_oids.contains(&m.parent) {
                    Action::WithParent
                } else if created.contains(&m.oid) {
                    Action::Created
                } else {
                    Action::Copy
                }
            },
        )
    }

    /// What changed for a table mirrored leaf by leaf: `now` the leaves published now. A new
    /// leaf is copied as a new table of the publication (or was there before we knew); a leaf
    /// gone is no longer mirrored, unless it is still published as a table of its own.
    pub fn leaf_changes(
        &self,
        now: &[Member],
        created: &[u32],
        leaves: &LeafMirror,
        policy: DetachPolicy,
    ) -> Vec<Event> {
        let known = self.known();
        self.events(
            now,
            |s| {
                if leaves.published.contains(&s.member.oid) {
                    Action::StillPublished
                } else {
                    detached(policy)
                }
            },
            |m| {
                if created.contains(&m.oid) {
                    Action::Created
                } else if !known && leaves.mirrored.contains(&m.oid) {
                    Action::Baseline
                } else {
                    Action::Copy
                }
            },
        )
    }

    /// What dropping `oids` changes: an attached partition is detached by its drop (its rows
    /// kept or removed as for a detach); a detached one is just gone.
    pub fn dropped_changes(&self, oids: &HashSet<u32>, policy: DetachPolicy) -> Vec<Event> {
        let attached_dropped: HashSet<u32> = self
            .partitions
            .values()
            .filter(|s| s.state == State::Attached && oids.contains(&s.member.oid))
            .map(|s| s.member.oid)
            .collect();
        self.partitions
            .values()
            .filter(|s| s.state != State::Dropped && oids.contains(&s.member.oid))
            .map(|s| {
                let action = if s.state != State::Attached {
                    Action::Noted
                } else if attached_dropped.contains(&s.member.parent) {
                    Action::WithParent
                } else if self.mirrored_as == MirroredAs::Leaf && !s.member.leaf {
                    Action::Noted
                } else {
                    detached(policy)
                };
                Event {
                    partition: s.member.clone(),
                    state: State::Dropped,
                    action,
                }
            })
            .collect()
    }

    /// Whether `now` describes a partition otherwise than what was seen (its name, bound or
    /// constraint: a default partition's changes as its siblings come and go).
    pub fn differs(&self, now: &[Member]) -> bool {
        now.iter().any(|m| {
            self.partitions
                .get(&m.oid)
                .is_none_or(|s| s.member != *m || s.state != State::Attached)
        })
    }

    /// Takes in what a step records: `now` attached (as described; `whole`: nothing else is),
    /// and each event's state and action.
    pub fn record(&mut self, now: &[Member], whole: bool, events: &[Event]) {
        if whole {
            let present: HashSet<u32> = now.iter().map(|m| m.oid).collect();
            for s in self.partitions.values_mut() {
                if s.state == State::Attached && !present.contains(&s.member.oid) {
                    s.state = State::Detached;
                    s.action = Action::Noted;
                }
            }
        }
        for m in now {
            let s = self.partitions.entry(m.oid).or_insert_with(|| Seen {
                member: m.clone(),
                state: State::Attached,
                action: Action::Baseline,
            });
            s.member = m.clone();
            s.state = State::Attached;
        }
        for e in events {
            let s = self
                .partitions
                .entry(e.partition.oid)
                .or_insert_with(|| Seen {
                    member: e.partition.clone(),
                    state: e.state,
                    action: e.action,
                });
            s.state = e.state;
            if e.action != Action::Noted {
                s.action = e.action;
            }
        }
    }
}

fn detached(policy: DetachPolicy) -> Action {
    match policy {
        DetachPolicy::Keep => Action::Keep,
        DetachPolicy::Mirror => Action::Remove,
    }
}

/// The partitions seen of every partitioned table followed, by the table's name.
#[derive(Clone, Debug, Default)]
pub struct Partitions {
    pub tables: HashMap<(String, String), Followed>,
}

impl Partitions {
    pub fn get_mut(&mut self, root: &Rel, mirrored_as: MirroredAs) -> &mut Followed {
        let f = self
            .tables
            .entry((root.schema.clone(), root.table.clone()))
            .or_insert_with(|| Followed::new(root.clone(), mirrored_as));
        f.root = root.clone();
        f.mirrored_as = mirrored_as;
        f
    }
}

#[cfg(test)]
mod tests;
