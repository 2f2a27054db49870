//! The stream's side: a partitions message met in the stream becomes schema steps of the
//! mirrored tables — and, for a leaf no longer mirrored under `--partition-detach mirror`,
//! a TRUNCATE of its replica — in the stream's order.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgConnection;

use super::{
    catalog, Action, DetachPolicy, Event, LeafMirror, Member, Message, MirroredAs, PartitionStep,
    Partitions, Rel, Tree,
};
use crate::schema::plan::{Plan, Step};
use crate::schema::{publication, Resolved, SchemaError, Tracker};
use crate::table::SourceTable;

/// What a partitions message asks of the stream.
#[derive(Debug)]
pub enum Outcome {
    /// A change of a mirrored table: a partition step, with a new table's copy maybe.
    Follow(Resolved),
    /// The replica of a leaf no longer mirrored is emptied (before its step).
    Truncate(Arc<SourceTable>),
}

/// `table`'s schema change that only records `step`.
fn recorded(table: Arc<SourceTable>, step: PartitionStep) -> Resolved {
    Resolved {
        table: table.clone(),
        change: Some((
            Some(table),
            Plan {
                steps: vec![Step::Partitions(step)],
                backfill: None,
            },
        )),
    }
}

fn catalog_error(what: String) -> impl FnOnce(sqlx::Error) -> SchemaError {
    move |source| SchemaError::Catalog {
        table: what,
        source,
    }
}

impl Tracker {
    /// The partitions seen so far (`cdc_partitions`), as the session starts.
    pub fn following(mut self, partitions: Partitions) -> Self {
        self.partitions = partitions;
        self
    }

    /// A `brewlytics_partitions` message in a transaction being applied (see the module
    /// docs of [`super`]): what it changes, in the stream's order.
    pub async fn follow_partitions(
        &mut self,
        oltp: &mut PgConnection,
        content: &[u8],
        policy: DetachPolicy,
    ) -> Result<Vec<Outcome>, SchemaError> {
        let Ok(msg) = serde_json::from_slice::<Message>(content) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if let Some(tree) = &msg.tree {
            self.follow_tree(oltp, tree, &msg.created, policy, &mut out)
                .await?;
        }
        for rel in &msg.check {
            let tree = catalog::tree(oltp, rel.oid)
                .await
                .map_err(catalog_error(rel.qualified()))?;
            if let Some(tree) = tree {
                self.follow_tree(oltp, &tree, &[], policy, &mut out).await?;
            }
        }
        if !msg.dropped.is_empty() {
            self.follow_drop(&msg.dropped, policy, &mut out);
        }
        Ok(out)
    }

    /// A partitioned table new to the replica (its copy is requested with it): its
    /// partitions now are what it starts from.
    pub(in crate::schema) async fn partition_baseline(
        &mut self,
        oltp: &mut PgConnection,
        t: &SourceTable,
    ) -> Result<Option<Step>, sqlx::Error> {
        let Some(tree) = catalog::tree(oltp, t.oid).await? else {
            return Ok(None);
        };
        let root = tree.rel();
        let below = tree.below(tree.oid);
        self.partitions
            .get_mut(&root, MirroredAs::Root)
            .record(&below, true, &[]);
        Ok(Some(Step::Partitions(PartitionStep {
            root,
            mirrored_as: MirroredAs::Root,
            partitions: below,
            whole: true,
            events: Vec::new(),
        })))
    }

    fn mirrored_table(&self, oid: u32, schema: &str, table: &str) -> Option<Arc<SourceTable>> {
        self.applied
            .values()
            .find(|a| a.oid == oid && oid != 0)
            .or_else(|| self.applied_table(schema, table))
            .cloned()
    }

    async fn follow_tree(
        &mut self,
        oltp: &mut PgConnection,
        tree: &Tree,
        created: &[u32],
        policy: DetachPolicy,
        out: &mut Vec<Outcome>,
    ) -> Result<(), SchemaError> {
        // Partitioned tables of the tree mirrored through their root (the outermost one
        // follows what is inside it).
        let mut nodes = vec![tree.rel()];
        nodes.extend(tree.partitions.iter().filter(|m| !m.leaf).map(|m| Rel {
            oid: m.oid,
            schema: m.schema.clone(),
            table: m.table.clone(),
        }));
        let mut covered: HashSet<u32> = HashSet::new();
        for node in nodes {
            if covered.contains(&node.oid) {
                continue;
            }
            let Some(table) = self.mirrored_table(node.oid, &node.schema, &node.table) else {
                continue;
            };
            let below = tree.below(node.oid);
            covered.extend(below.iter().map(|m| m.oid));
            let unit = self.partitions.get_mut(&node, MirroredAs::Root);
            let events = unit.rooted_changes(&below, created, policy);
            if events.is_empty() && !unit.differs(&below) {
                continue;
            }
            unit.record(&below, true, &events);
            let step = PartitionStep {
                root: node,
                mirrored_as: MirroredAs::Root,
                partitions: below,
                whole: true,
                events,
            };
            out.push(Outcome::Follow(recorded(table, step)));
        }
        // Leaves published as tables of their own (none when the root is mirrored).
        let root = tree.rel();
        let key = (root.schema.clone(), root.table.clone());
        if self
            .partitions
            .tables
            .get(&key)
            .is_some_and(|f| f.mirrored_as == MirroredAs::Root)
        {
            return Ok(());
        }
        let followed = self.partitions.tables.contains_key(&key);
        let leaves: Vec<&Member> = tree
            .partitions
            .iter()
            .filter(|m| m.leaf && !covered.contains(&m.oid))
            .collect();
        if leaves.is_empty() && !followed {
            return Ok(());
        }
        // A tree made apart and attached under another in the same transaction: that later
        // command's message describes where its leaves are published from.
        let is_root = catalog::is_root(oltp, tree.oid)
            .await
            .map_err(catalog_error(root.qualified()))?;
        if !is_root {
            return Ok(());
        }
        let defs = publication::definitions(oltp, &self.publications, None)
            .await
            .map_err(catalog_error(root.qualified()))?;
        let published: HashSet<u32> = defs
            .iter()
            .filter(|(_, d)| d.is_ok())
            .map(|(o, _)| *o)
            .collect();
        self.definitions = Some(defs);
        let now: Vec<Member> = leaves
            .into_iter()
            .filter(|m| published.contains(&m.oid))
            .cloned()
            .collect();
        if now.is_empty() && !followed {
            return Ok(());
        }
        let mirror = LeafMirror {
            mirrored: now
                .iter()
                .filter(|m| self.is_mirrored(m.oid, &m.schema, &m.table))
                .map(|m| m.oid)
                .collect(),
            published,
        };
        let unit = self.partitions.get_mut(&root, MirroredAs::Leaf);
        let events = unit.leaf_changes(&now, created, &mirror, policy);
        unit.record(&now, true, &events);
        for e in events {
            match e.action {
                Action::Copy | Action::Created | Action::Baseline => {
                    self.leaf_new(oltp, &root, e, out).await?
                }
                _ => self.leaf_gone(&root, e, out),
            }
        }
        Ok(())
    }

    /// A leaf new to the publication through its root: copied as a new table (not when it
    /// was created empty, or mirrored already).
    async fn leaf_new(
        &mut self,
        oltp: &mut PgConnection,
        root: &Rel,
        e: Event,
        out: &mut Vec<Outcome>,
    ) -> Result<(), SchemaError> {
        let p = &e.partition;
        let Some(mut r) = self.resolve_named(oltp, &p.schema, &p.table).await? else {
            return Ok(());
        };
        let (before, mut plan) = r
            .change
            .take()
            .unwrap_or_else(|| (Some(r.table.clone()), Plan::default()));
        if plan.backfill.is_some() {
            plan.backfill = match e.action {
                Action::Created => None,
                _ => Some(format!("partition of {} attached", root.qualified())),
            };
        }
        plan.steps.push(Step::Partitions(PartitionStep {
            root: root.clone(),
            mirrored_as: MirroredAs::Leaf,
            partitions: Vec::new(),
            whole: false,
            events: vec![e],
        }));
        r.change = Some((before, plan));
        out.push(Outcome::Follow(r));
        Ok(())
    }

    /// A leaf detached or dropped: no longer mirrored (unless still published as itself),
    /// its replica emptied first under `mirror`.
    fn leaf_gone(&mut self, root: &Rel, e: Event, out: &mut Vec<Outcome>) {
        let p = &e.partition;
        let Some(table) = self.applied_table(&p.schema, &p.table).cloned() else {
            return;
        };
        if e.action == Action::Remove {
            out.push(Outcome::Truncate(table.clone()));
        }
        if matches!(e.action, Action::Keep | Action::Remove) {
            self.applied
                .remove(&(table.schema.to_string(), table.name.to_string()));
            self.current.retain(|_, t| t.oid != table.oid);
        }
        let step = PartitionStep {
            root: root.clone(),
            mirrored_as: MirroredAs::Leaf,
            partitions: Vec::new(),
            whole: false,
            events: vec![e],
        };
        out.push(Outcome::Follow(recorded(table, step)));
    }

    /// Tables dropped: partitions among them that were attached are detached by their drop.
    fn follow_drop(&mut self, dropped: &[Rel], policy: DetachPolicy, out: &mut Vec<Outcome>) {
        let oids: HashSet<u32> = dropped.iter().map(|r| r.oid).collect();
        let mut keys: Vec<(String, String)> = self.partitions.tables.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let Some(unit) = self.partitions.tables.get_mut(&key) else {
                continue;
            };
            let root_dropped = dropped.iter().any(|r| {
                r.oid == unit.root.oid
                    || (r.schema == unit.root.schema && r.table == unit.root.table)
            });
            if root_dropped && unit.mirrored_as == MirroredAs::Root {
                // The mirrored table itself is gone: no longer published, its replica kept
                // as any such table's.
                self.partitions.tables.remove(&key);
                continue;
            }
            let events = unit.dropped_changes(&oids, policy);
            if events.is_empty() {
                continue;
            }
            unit.record(&[], false, &events);
            let (root, mirrored_as) = (unit.root.clone(), unit.mirrored_as);
            match mirrored_as {
                MirroredAs::Root => {
                    let Some(table) = self.mirrored_table(root.oid, &root.schema, &root.table)
                    else {
                        continue;
                    };
                    let step = PartitionStep {
                        root,
                        mirrored_as,
                        partitions: Vec::new(),
                        whole: false,
                        events,
                    };
                    out.push(Outcome::Follow(recorded(table, step)));
                }
                MirroredAs::Leaf => {
                    for e in events {
                        self.leaf_gone(&root, e, out);
                    }
                }
            }
        }
    }
}
