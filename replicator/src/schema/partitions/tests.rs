use super::*;

const ROOT: u32 = 100;

fn member(oid: u32, parent: u32, leaf: bool, month: u32) -> Member {
    Member {
        oid,
        schema: "public".into(),
        table: format!("ev_{oid}"),
        parent,
        level: if parent == ROOT { 1 } else { 2 },
        leaf,
        bound: Some(format!(
            "FOR VALUES FROM ('2026-{month:02}-01') TO ('2026-{:02}-01')",
            month + 1
        )),
        scope: Some(format!("(day >= '2026-{month:02}-01'::date)")),
    }
}

fn root() -> Rel {
    Rel {
        oid: ROOT,
        schema: "public".into(),
        table: "ev".into(),
    }
}

fn followed(members: &[Member]) -> Followed {
    let mut f = Followed::new(root(), MirroredAs::Root);
    f.record(members, true, &[]);
    f
}

fn actions(events: &[Event]) -> Vec<(u32, State, Action)> {
    events
        .iter()
        .map(|e| (e.partition.oid, e.state, e.action))
        .collect()
}

#[test]
fn an_attached_partition_is_copied_and_a_created_one_is_not() {
    let jan = member(1, ROOT, true, 1);
    let f = followed(std::slice::from_ref(&jan));
    let feb = member(2, ROOT, true, 2);
    let mar = member(3, ROOT, true, 3);
    let now = [jan.clone(), feb, mar];
    let events = f.rooted_changes(&now, &[3], DetachPolicy::Keep);
    assert_eq!(
        actions(&events),
        [
            (2, State::Attached, Action::Copy),
            (3, State::Attached, Action::Created)
        ]
    );
    // Nothing changed: nothing to do.
    assert!(f.rooted_changes(&[jan], &[], DetachPolicy::Keep).is_empty());
}

#[test]
fn a_detached_partition_is_kept_or_removed_by_the_policy() {
    let jan = member(1, ROOT, true, 1);
    let feb = member(2, ROOT, true, 2);
    let f = followed(&[jan, feb.clone()]);
    let kept = f.rooted_changes(std::slice::from_ref(&feb), &[], DetachPolicy::Keep);
    assert_eq!(actions(&kept), [(1, State::Detached, Action::Keep)]);
    // The partition as it was seen: its scope is what its rows are.
    assert_eq!(
        kept[0].partition.scope.as_deref(),
        Some("(day >= '2026-01-01'::date)")
    );
    let removed = f.rooted_changes(&[feb], &[], DetachPolicy::Mirror);
    assert_eq!(actions(&removed), [(1, State::Detached, Action::Remove)]);
}

#[test]
fn partitions_inside_one_go_with_it() {
    let year = member(10, ROOT, false, 1);
    let jan = member(11, 10, true, 1);
    let feb = member(12, 10, true, 2);
    let f = followed(&[]);
    // Attached with its own partitions: copied once, by its own scope.
    let events = f.rooted_changes(
        &[year.clone(), jan.clone(), feb.clone()],
        &[],
        DetachPolicy::Keep,
    );
    assert_eq!(
        actions(&events),
        [
            (10, State::Attached, Action::Copy),
            (11, State::Attached, Action::WithParent),
            (12, State::Attached, Action::WithParent)
        ]
    );
    let f = followed(&[year.clone(), jan.clone(), feb.clone()]);
    // A month attached to the year: copied alone.
    let mar = member(13, 10, true, 3);
    let events = f.rooted_changes(
        &[year.clone(), jan.clone(), feb.clone(), mar],
        &[],
        DetachPolicy::Keep,
    );
    assert_eq!(actions(&events), [(13, State::Attached, Action::Copy)]);
    // The year detached: kept as one.
    let events = f.rooted_changes(&[], &[], DetachPolicy::Mirror);
    assert_eq!(
        actions(&events),
        [
            (10, State::Detached, Action::Remove),
            (11, State::Detached, Action::WithParent),
            (12, State::Detached, Action::WithParent)
        ]
    );
}

#[test]
fn a_partition_moved_to_another_bound_is_detached_and_attached() {
    let jan = member(1, ROOT, true, 1);
    let f = followed(std::slice::from_ref(&jan));
    let mut moved = jan;
    moved.bound = Some("FOR VALUES FROM ('2027-01-01') TO ('2027-02-01')".into());
    let events = f.rooted_changes(&[moved], &[], DetachPolicy::Keep);
    assert_eq!(
        actions(&events),
        [
            (1, State::Detached, Action::Keep),
            (1, State::Attached, Action::Copy)
        ]
    );
}

#[test]
fn drops_detach_attached_partitions_and_note_detached_ones() {
    let jan = member(1, ROOT, true, 1);
    let feb = member(2, ROOT, true, 2);
    let mut f = followed(&[jan.clone(), feb.clone()]);
    let events = f.rooted_changes(std::slice::from_ref(&feb), &[], DetachPolicy::Keep);
    f.record(std::slice::from_ref(&feb), false, &events);
    let dropped = f.dropped_changes(&HashSet::from([1, 2, 99]), DetachPolicy::Keep);
    assert_eq!(
        actions(&dropped),
        [
            (1, State::Dropped, Action::Noted),
            (2, State::Dropped, Action::Keep)
        ]
    );
    f.record(&[], false, &dropped);
    // Noted keeps what was done before.
    assert_eq!(f.partitions[&1].action, Action::Keep);
    assert_eq!(f.partitions[&1].state, State::Dropped);
    assert!(f
        .dropped_changes(&HashSet::from([1, 2]), DetachPolicy::Keep)
        .is_empty());
}

#[test]
fn a_table_never_seen_has_every_partition_copied() {
    let f = Followed::new(root(), MirroredAs::Root);
    assert!(!f.known());
    let events = f.rooted_changes(
        &[member(1, ROOT, true, 1), member(2, ROOT, true, 2)],
        &[],
        DetachPolicy::Keep,
    );
    assert!(events.iter().all(|e| e.action == Action::Copy));
}

#[test]
fn leaves_mirrored_as_tables() {
    let jan = member(1, ROOT, true, 1);
    let feb = member(2, ROOT, true, 2);
    let leaves = LeafMirror {
        published: HashSet::from([1, 2]),
        mirrored: HashSet::from([1]),
    };
    // Not known yet: what is mirrored already is the baseline, the rest is copied.
    let mut f = Followed::new(root(), MirroredAs::Leaf);
    let events = f.leaf_changes(
        &[jan.clone(), feb.clone()],
        &[],
        &leaves,
        DetachPolicy::Keep,
    );
    assert_eq!(
        actions(&events),
        [
            (1, State::Attached, Action::Baseline),
            (2, State::Attached, Action::Copy)
        ]
    );
    f.record(&[jan.clone(), feb.clone()], false, &events);
    // Detached: no longer published — or still, as a table of its own.
    let gone = LeafMirror {
        published: HashSet::from([2]),
        mirrored: HashSet::from([1, 2]),
    };
    let events = f.leaf_changes(&[], &[], &gone, DetachPolicy::Mirror);
    assert_eq!(
        actions(&events),
        [
            (1, State::Detached, Action::Remove),
            (2, State::Detached, Action::StillPublished)
        ]
    );
}

#[test]
fn records_follow_what_is_described_now() {
    let jan = member(1, ROOT, true, 1);
    let mut dflt = member(9, ROOT, true, 0);
    dflt.bound = Some("DEFAULT".into());
    let mut f = followed(&[jan.clone(), dflt.clone()]);
    // A default partition's constraint changes as its siblings come and go.
    dflt.scope = Some("(NOT (day >= '2026-01-01'::date))".into());
    assert!(f.differs(&[jan.clone(), dflt.clone()]));
    assert!(f
        .rooted_changes(&[jan.clone(), dflt.clone()], &[], DetachPolicy::Keep)
        .is_empty());
    f.record(&[jan.clone(), dflt.clone()], false, &[]);
    assert!(!f.differs(&[jan.clone(), dflt]));
    // The whole tree: what is missing from it is no longer attached.
    f.record(std::slice::from_ref(&jan), true, &[]);
    assert_eq!(f.partitions[&9].state, State::Detached);
    assert_eq!(f.partitions[&1].state, State::Attached);
}

#[test]
fn the_tree_below_a_partition() {
    let tree = Tree {
        oid: ROOT,
        schema: "public".into(),
        table: "ev".into(),
        partitions: vec![
            member(11, 10, true, 1),
            member(10, ROOT, false, 1),
            member(2, ROOT, true, 2),
        ],
    };
    let below: Vec<u32> = tree.below(10).iter().map(|m| m.oid).collect();
    assert_eq!(below, [11]);
    let all: Vec<u32> = tree.below(ROOT).iter().map(|m| m.oid).collect();
    assert_eq!(all, [2, 10, 11]);
}

#[test]
fn messages_and_steps_read_back() {
    let msg = r#"{"tree" : {"oid" : 100, "schema" : "public", "table" : "ev", "partitions" :
        [{"oid" : 1, "schema" : "public", "table" : "ev_1", "parent" : 100, "level" : 1,
          "leaf" : true, "bound" : "DEFAULT", "scope" : null}]}, "created" : [1]}"#;
    let m: Message = serde_json::from_str(msg).unwrap();
    assert_eq!(m.tree.as_ref().unwrap().partitions[0].predicate(), "true");
    assert_eq!(m.created, [1]);
    let d: Message =
        serde_json::from_str(r#"{"dropped" : [{"oid" : 5, "schema" : "s", "table" : "t"}]}"#)
            .unwrap();
    assert_eq!(d.dropped[0].qualified(), "s.t");
    let step = crate::schema::plan::Step::Partitions(PartitionStep {
        root: root(),
        mirrored_as: MirroredAs::Root,
        partitions: vec![member(1, ROOT, true, 1)],
        whole: false,
        events: vec![Event {
            partition: member(2, ROOT, true, 2),
            state: State::Detached,
            action: Action::Keep,
        }],
    });
    let json = serde_json::to_value(&step).unwrap();
    assert_eq!(json["step"], "partitions");
    assert_eq!(json["events"][0]["action"], "keep");
    let back: crate::schema::plan::Step = serde_json::from_value(json).unwrap();
    assert_eq!(back, step);
    for a in ["baseline", "copy", "keep", "remove", "noted"] {
        assert_eq!(Action::parse(a).map(Action::as_str), Some(a));
    }
    assert_eq!("mirror".parse(), Ok(DetachPolicy::Mirror));
    assert!("delete".parse::<DetachPolicy>().is_err());
}
