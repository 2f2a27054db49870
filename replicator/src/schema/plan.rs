//! Following a source table's schema change in its replica (pure): the steps that take the
//! replica from the table as it was to the table as it is, and whether the table must be
//! copied again because the stream cannot carry the change's values.
//!
//! With source attnums on both sides (the DDL event trigger's message, or the source catalog
//! when it still matches the Relation message) the change is known exactly: a column with the
//! same attnum and another name was renamed (its values kept), an attnum that is gone was
//! dropped, a new attnum was added. Without them, columns are matched by name, so a rename
//! looks like a drop and an add: the table is then copied again (a backfill), which makes the
//! replica exact whatever happened. A backfill also follows every type change (the source may
//! have rewritten the values with `USING`) and every added column with a default (existing
//! rows have a value the stream never sends).

use std::collections::{HashMap, HashSet};

use crate::table::SourceTable;

/// Serialized (tagged by `step`) in the schema events of the NATS stream, so that a loader
/// follows the change exactly as the replica did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Create the replica table (its columns and key from the new table).
    CreateTable,
    /// The source table was renamed: rename the replica table from this name.
    RenameTable {
        from: String,
    },
    DropColumn {
        name: String,
    },
    RenameColumn {
        from: String,
        to: String,
    },
    AddColumn {
        name: String,
        olap_type: String,
    },
    /// A new OLAP type for the column; existing values are cast (or emptied, when the cast
    /// fails, until the backfill brings them).
    Retype {
        name: String,
        olap_type: String,
    },
    /// The replica's primary key becomes the new table's key (none: a multiset).
    SetKey,
    /// The table's partitions on the source, and what changed of them (recorded in
    /// `cdc_partitions`; a copy or removal is a backfill): see [`super::partitions`].
    Partitions(super::partitions::PartitionStep),
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Why the table must be copied again, if it must.
    pub backfill: Option<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.backfill.is_none()
    }
}

/// What is known of the new table's columns besides the Relation message.
#[derive(Clone, Debug, Default)]
pub struct Knowledge {
    /// Every column of `after` carries its source attnum, and so do those of `before`.
    pub exact: bool,
    /// Columns with a default or a stored missing value: rows that existed before the column
    /// was added have a value the stream never sends.
    pub defaulted: HashSet<String>,
}

/// The steps from `before` (None: the table is new to the replica) to `after`.
pub fn plan(before: Option<&SourceTable>, after: &SourceTable, know: &Knowledge) -> Plan {
    let Some(before) = before else {
        return Plan {
            steps: vec![Step::CreateTable],
            backfill: None,
        };
    };
    let mut steps = Vec::new();
    let mut backfill: Option<String> = None;
    let mut copy_again = |why: String| {
        backfill.get_or_insert(why);
    };
    if before.replica != after.replica {
        steps.push(Step::RenameTable {
            from: before.replica.to_string(),
        });
    }
    let exact = know.exact
        && before.columns.iter().all(|c| c.attnum.is_some())
        && after.columns.iter().all(|c| c.attnum.is_some());
    // Pairs (before, after) of the same column, and the new columns.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut added: Vec<usize> = Vec::new();
    if exact {
        let by_attnum: HashMap<i16, usize> = before
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.attnum.unwrap_or_default(), i))
            .collect();
        for (j, c) in after.columns.iter().enumerate() {
            match by_attnum.get(&c.attnum.unwrap_or_default()) {
                Some(&i) => pairs.push((i, j)),
                None => added.push(j),
            }
        }
    } else {
        for (j, c) in after.columns.iter().enumerate() {
            match before.columns.iter().position(|b| b.name == c.name) {
                Some(i) => pairs.push((i, j)),
                None => added.push(j),
            }
        }
    }
    let kept: HashSet<usize> = pairs.iter().map(|p| p.0).collect();
    for (i, c) in before.columns.iter().enumerate() {
        if !kept.contains(&i) {
            steps.push(Step::DropColumn {
                name: c.name.clone(),
            });
            if !exact {
                copy_again(format!(
                    "column {} is gone and the change could not be read exactly",
                    c.name
                ));
            }
        }
    }
    // Renames go through temporary names, so that swapped names or a name taken over from a
    // dropped column never collide.
    let renames: Vec<(usize, usize)> = pairs
        .iter()
        .copied()
        .filter(|&(i, j)| before.columns[i].name != after.columns[j].name)
        .collect();
    for &(i, j) in &renames {
        steps.push(Step::RenameColumn {
            from: before.columns[i].name.clone(),
            to: temp_name(after.columns[j].attnum.unwrap_or(j as i16)),
        });
    }
    for &(_, j) in &renames {
        steps.push(Step::RenameColumn {
            from: temp_name(after.columns[j].attnum.unwrap_or(j as i16)),
            to: after.columns[j].name.clone(),
        });
    }
    for &(i, j) in &pairs {
        let (b, a) = (&before.columns[i], &after.columns[j]);
        if b.olap_type != a.olap_type {
            steps.push(Step::Retype {
                name: a.name.clone(),
                olap_type: a.olap_type.clone(),
            });
        }
        if b.type_oid != a.type_oid || b.typmod != a.typmod {
            copy_again(format!("the type of column {} changed", a.name));
        }
    }
    for &j in &added {
        let c = &after.columns[j];
        steps.push(Step::AddColumn {
            name: c.name.clone(),
            olap_type: c.olap_type.clone(),
        });
        if !exact {
            copy_again(format!(
                "column {} is new and the change could not be read exactly",
                c.name
            ));
        } else if know.defaulted.contains(&c.name) {
            copy_again(format!("column {} was added with a default", c.name));
        }
    }
    if before.key_names() != after.key_names() {
        steps.push(Step::SetKey);
    }
    Plan { steps, backfill }
}

fn temp_name(attnum: i16) -> String {
    format!("_cdc_renaming_{attnum}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fixtures::{self, column};

    fn exact() -> Knowledge {
        Knowledge {
            exact: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_new_table_is_created() {
        let t = fixtures::products();
        assert_eq!(plan(None, &t, &exact()).steps, vec![Step::CreateTable]);
    }

    #[test]
    fn unchanged_is_empty() {
        let t = fixtures::products();
        assert!(plan(Some(&t), &t, &exact()).is_empty());
        assert!(plan(Some(&t), &t, &Knowledge::default()).is_empty());
    }

    #[test]
    fn rename_by_attnum_keeps_values() {
        let before = fixtures::products();
        let mut after = before.clone();
        after.columns[1].name = "title".into();
        let p = plan(Some(&before), &after, &exact());
        assert_eq!(
            p.steps,
            vec![
                Step::RenameColumn {
                    from: "name".into(),
                    to: "_cdc_renaming_2".into()
                },
                Step::RenameColumn {
                    from: "_cdc_renaming_2".into(),
                    to: "title".into()
                },
            ]
        );
        assert_eq!(p.backfill, None);
    }

    #[test]
    fn rename_without_attnums_is_drop_add_and_a_copy() {
        let before = fixtures::products();
        let mut after = before.clone();
        after.columns[1].name = "title".into();
        let p = plan(Some(&before), &after, &Knowledge::default());
        assert!(p.steps.contains(&Step::DropColumn {
            name: "name".into()
        }));
        assert!(p.steps.contains(&Step::AddColumn {
            name: "title".into(),
            olap_type: "text".into()
        }));
        assert!(p.backfill.is_some());
    }

    #[test]
    fn dropped_and_readded_under_the_same_name_is_a_new_column() {
        let before = fixtures::products();
        let mut after = before.clone();
        let mut desc = after.columns.remove(3);
        desc.attnum = Some(6);
        after.columns.push(desc);
        let p = plan(Some(&before), &after, &exact());
        assert_eq!(
            p.steps,
            vec![
                Step::DropColumn {
                    name: "description".into()
                },
                Step::AddColumn {
                    name: "description".into(),
                    olap_type: "text".into()
                },
            ]
        );
        assert_eq!(
            p.backfill, None,
            "a new column without default is NULL on the source too"
        );
        let with_default = Knowledge {
            exact: true,
            defaulted: ["description".to_string()].into(),
        };
        assert!(plan(Some(&before), &after, &with_default)
            .backfill
            .is_some());
    }

    #[test]
    fn swapped_names_go_through_temporary_names() {
        let before = fixtures::products();
        let mut after = before.clone();
        after.columns[1].name = "description".into();
        after.columns[3].name = "name".into();
        let steps = plan(Some(&before), &after, &exact()).steps;
        assert_eq!(steps.len(), 4);
        assert!(matches!(&steps[0], Step::RenameColumn { to, .. } if to.starts_with("_cdc_")));
        assert!(matches!(&steps[3], Step::RenameColumn { to, .. } if to == "name"));
    }

    #[test]
    fn retype_changes_the_column_and_copies_again() {
        let before = fixtures::products();
        let mut after = before.clone();
        after.columns[2] = column("price", 701, "double precision", 3);
        let p = plan(Some(&before), &after, &exact());
        assert_eq!(
            p.steps,
            vec![Step::Retype {
                name: "price".into(),
                olap_type: "double precision".into()
            }]
        );
        assert!(p.backfill.unwrap().contains("type of column price"));
    }

    #[test]
    fn key_and_table_renames() {
        let before = fixtures::products();
        let mut after = before.clone();
        after.key = vec![0, 1];
        after.name = "items".into();
        after.replica = "items".into();
        let p = plan(Some(&before), &after, &exact());
        assert_eq!(
            p.steps,
            vec![
                Step::RenameTable {
                    from: "products".into()
                },
                Step::SetKey
            ]
        );
    }
}
