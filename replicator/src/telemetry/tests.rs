//! The exposition and the live state, as operators read them.

use super::*;

#[test]
fn exposition_has_the_documented_names() {
    let t = Telemetry::new();
    t.batch_applied(
        &ApplyStats {
            events: 3,
            dead_letters: 1,
            by_table: vec![
                (Arc::from("orders"), Op::Insert, 2),
                (Arc::from("order_items"), Op::Delete, 1),
            ],
            elapsed: Duration::from_millis(12),
            ..Default::default()
        },
        2,
        Lsn(0x1_0000_0010),
    );
    t.error("stream", "connection reset".into());
    t.slot_reading(
        SlotReading {
            exists: true,
            wal_status: Some("reserved".into()),
            lag_bytes: Some(120),
            retained_wal_bytes: Some(4096),
            ..Default::default()
        },
        false,
    );
    let text = t.encode();
    for needle in [
        "brewlytics_replication_lag_bytes 120",
        "brewlytics_replication_lag_seconds",
        "brewlytics_slot_retained_wal_bytes 4096",
        "brewlytics_slot_wal_status{status=\"reserved\"} 1",
        "brewlytics_changes_applied_total{table=\"orders\",op=\"insert\"} 2",
        "brewlytics_changes_applied_total{table=\"order_items\",op=\"delete\"} 1",
        "brewlytics_transactions_applied_total 2",
        "brewlytics_apply_batch_seconds_bucket",
        "brewlytics_checkpoint_lsn 4294967312",
        "brewlytics_replicator_errors_total{kind=\"stream\"} 1",
        "brewlytics_dead_letters_total 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    let live = t.live();
    assert_eq!(live.changes_applied, 3);
    assert_eq!(live.history.len(), 1);
    assert_eq!(live.last_error.unwrap().kind, "stream");
}

/// The value of the series `series` (name and labels, as encoded) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))?
        .parse()
        .ok()
}

#[test]
fn a_fresh_replicator_exports_every_known_series_at_zero() {
    let t = Telemetry::new();
    let text = t.encode();
    for kind in ERROR_KINDS {
        let series = format!("brewlytics_replicator_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
    }
    for status in WAL_STATUSES {
        let series = format!("brewlytics_slot_wal_status{{status=\"{status}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
    }
    for name in [
        "brewlytics_dead_letters_total",
        "brewlytics_transactions_applied_total",
        "brewlytics_heartbeat_last_emitted_timestamp_seconds",
        "brewlytics_heartbeat_last_applied_timestamp_seconds",
        "brewlytics_heartbeat_interval_seconds",
        "brewlytics_slot_max_wal_keep_size_bytes",
        "brewlytics_slot_retained_wal_threshold_bytes",
    ] {
        assert_eq!(sample(&text, name), Some(0.0), "{name} in\n{text}");
    }
    assert!(!text.contains("brewlytics_changes_applied_total{"));

    // The publication's tables: every operation at 0; counts survive a second call.
    t.publication_tables(&["orders", "payments"]);
    t.batch_applied(
        &ApplyStats {
            events: 2,
            dead_letters: 0,
            by_table: vec![(Arc::from("orders"), Op::Insert, 2)],
            elapsed: Duration::from_millis(3),
            ..Default::default()
        },
        1,
        Lsn(16),
    );
    t.publication_tables(&["orders".to_owned(), "payments".to_owned()]);
    let text = t.encode();
    for table in ["orders", "payments"] {
        for op in ["snapshot", "insert", "update", "delete", "truncate"] {
            let series =
                format!("brewlytics_changes_applied_total{{table=\"{table}\",op=\"{op}\"}}");
            let want = if (table, op) == ("orders", "insert") {
                2.0
            } else {
                0.0
            };
            assert_eq!(sample(&text, &series), Some(want), "{series} in\n{text}");
        }
    }
    assert_eq!(
        text.matches("brewlytics_changes_applied_total{").count(),
        10
    );
}

#[test]
fn ops_lists_every_operation() {
    for op in OPS {
        // A new Op fails to compile here until it is added to OPS.
        match op {
            Op::Snapshot | Op::Insert | Op::Update | Op::Delete | Op::Truncate => {}
            // Not row changes: never counted in brewlytics_changes_applied_total.
            Op::Schema | Op::Backfill => panic!("{op:?} is not a row operation"),
        }
    }
    let labels: std::collections::HashSet<_> = OPS.iter().map(|o| o.label()).collect();
    assert_eq!(labels.len(), 5);
}

#[test]
fn wal_status_keeps_every_state_with_one_current() {
    let t = Telemetry::new();
    let read = |status: Option<&str>, exists: bool| {
        t.slot_reading(
            SlotReading {
                exists,
                wal_status: status.map(str::to_owned),
                max_slot_wal_keep_size_bytes: Some(1 << 30),
                ..Default::default()
            },
            false,
        );
        t.encode()
    };
    let current = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("brewlytics_slot_wal_status{status=\""))
            .filter(|l| l.ends_with(" 1"))
            .map(|l| l.split('"').next().unwrap().to_owned())
            .collect()
    };
    let text = read(Some("reserved"), true);
    assert_eq!(current(&text), ["reserved"]);
    assert_eq!(
        sample(&text, "brewlytics_slot_max_wal_keep_size_bytes"),
        Some((1u64 << 30) as f64)
    );
    let text = read(Some("lost"), true);
    assert_eq!(current(&text), ["lost"]);
    assert_eq!(
        sample(&text, "brewlytics_slot_wal_status{status=\"reserved\"}"),
        Some(0.0)
    );
    // A state this version does not know is shown, and set back to 0 when it goes.
    let text = read(Some("someday"), true);
    assert_eq!(current(&text), ["someday"]);
    let text = read(None, false);
    assert_eq!(current(&text), ["missing"]);
    assert_eq!(
        sample(&text, "brewlytics_slot_wal_status{status=\"someday\"}"),
        Some(0.0)
    );
}

#[test]
fn a_standby_forgets_its_heartbeats_and_reports_no_lag() {
    let t = Telemetry::new();
    t.set_role(Role::Starting);
    let (seq, _) = t.prepare_heartbeat();
    t.heartbeat_emitted(seq, Instant::now() - Duration::from_secs(30));
    assert!(t.lag_seconds().unwrap() >= 30.0);
    t.set_role(Role::Standby);
    assert_eq!(t.lag_seconds(), None);
    assert_eq!(
        sample(&t.encode(), "brewlytics_replication_lag_seconds"),
        Some(0.0)
    );
    // One sent while it stood by is not waited for either.
    let (seq, _) = t.prepare_heartbeat();
    t.heartbeat_emitted(seq, Instant::now() - Duration::from_secs(5));
    assert_eq!(t.lag_seconds(), None);
    // Leading again, heartbeats count.
    t.set_role(Role::Streaming);
    let (seq, _) = t.prepare_heartbeat();
    t.heartbeat_emitted(seq, Instant::now());
    t.heartbeat_applied(seq);
    assert!(t.lag_seconds().unwrap() < 5.0);
}

#[test]
fn heartbeats_and_monitor_settings_are_exported() {
    let t = Telemetry::new();
    t.monitor_settings(Some(Duration::from_millis(250)), 64 << 20);
    let before = unix_now();
    let (seq, _) = t.prepare_heartbeat();
    t.heartbeat_emitted(seq, Instant::now());
    let text = t.encode();
    let emitted = sample(&text, "brewlytics_heartbeat_last_emitted_timestamp_seconds").unwrap();
    assert!(emitted >= before && emitted <= unix_now(), "{emitted}");
    assert_eq!(
        sample(&text, "brewlytics_heartbeat_last_applied_timestamp_seconds"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "brewlytics_heartbeat_interval_seconds"),
        Some(0.25)
    );
    assert_eq!(
        sample(&text, "brewlytics_slot_retained_wal_threshold_bytes"),
        Some((64u64 << 20) as f64)
    );
    t.heartbeat_applied(seq);
    let applied = sample(
        &t.encode(),
        "brewlytics_heartbeat_last_applied_timestamp_seconds",
    )
    .unwrap();
    assert!(applied >= emitted, "{applied} < {emitted}");
    t.monitor_settings(None, 0);
    assert_eq!(
        sample(&t.encode(), "brewlytics_heartbeat_interval_seconds"),
        Some(0.0)
    );
}
