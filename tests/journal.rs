//! The journal over the years, on real PostgreSQL: an existing (unpartitioned) journal
//! migrated to partitions; a journal across many partitions whose LSNs cross digit
//! boundaries, compacted at a partition bound and inside a partition, its images checked
//! against a fold of its history; and, end to end, retention compacting and dropping
//! partitions while orders flow and the replicator (and a `journal compact`) is killed -9,
//! after which replay from the cut rebuilds exactly the streamed replica and star, and replay
//! from before it stops in one line naming the earliest LSN.

mod harness;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use brewlytics_replicator::journal::compact::{self, Before, Outcome, Trigger};
use brewlytics_replicator::journal::partitions;
use brewlytics_replicator::journal::policy;
use brewlytics_replicator::lsn::Lsn;
use brewlytics_support::testing::TestDb;
use harness::sql::exec;
use harness::{free_addr, http_get, metric, wait_streaming, workload, Clusters, LoadCounts};
use serde_json::Value;
use sqlx::PgConnection;

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap()
}

/// One synthetic journal event: (lsn, seq, table, op, key id, after).
type Event = (
    &'static str,
    i32,
    &'static str,
    char,
    Option<i64>,
    Option<Value>,
);

async fn journal_events(c: &mut PgConnection, events: &[Event]) {
    for (l, seq, table, op, id, after) in events {
        sqlx::query(
            "insert into cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op,
                                     key, after)
             values ($1::pg_lsn, $2, case when $2 < 0 then 0 else 7 end, now(), 'public', $3,
                     $4::\"char\", $5::json, $6::json)",
        )
        .bind(l)
        .bind(seq)
        .bind(table)
        .bind(op.to_string())
        .bind(id.map(|i| serde_json::json!({ "id": i }).to_string()))
        .bind(after.as_ref().map(|a| a.to_string()))
        .execute(&mut *c)
        .await
        .unwrap();
    }
}

/// What the journal's history before `cut` leaves alive, key by key: the fold the
/// compaction must agree with (a copy or insert sets the image, an update merges its columns
/// into it, a delete removes the key, a truncate the table's keys).
async fn fold(c: &mut PgConnection, cut: Lsn) -> BTreeMap<(String, String), Value> {
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "select source_table, op::text, key::text, after::text from cdc_events e
         where e.lsn < $1::pg_lsn and e.op in ('r', 'i', 'u', 'd', 't') order by e.lsn, e.seq",
    )
    .bind(cut.to_string())
    .fetch_all(&mut *c)
    .await
    .unwrap();
    let mut alive: BTreeMap<(String, String), Value> = BTreeMap::new();
    for (table, op, key, after) in rows {
        let after: Option<Value> = after.map(|a| serde_json::from_str(&a).unwrap());
        let key = key.map(|k| serde_json::from_str::<Value>(&k).unwrap().to_string());
        match (op.as_str(), key) {
            ("t", _) => alive.retain(|(t, _), _| *t != table),
            ("d", Some(k)) => {
                alive.remove(&(table, k));
            }
            ("u", Some(k)) => {
                let image = alive
                    .entry((table, k))
                    .or_insert(Value::Object(Default::default()));
                for (name, v) in after.unwrap().as_object().unwrap() {
                    image[name] = v.clone();
                }
            }
            (_, Some(k)) => {
                alive.insert((table, k), after.unwrap());
            }
            _ => {}
        }
    }
    alive
}

/// The images a compaction wrote at `cut`.
async fn images(c: &mut PgConnection, cut: Lsn) -> BTreeMap<(String, String), Value> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "select source_table, key::text, after::text from cdc_events
         where lsn = $1::pg_lsn and seq < 0 and op = 'r'",
    )
    .bind(cut.to_string())
    .fetch_all(&mut *c)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, k, a)| {
            let k = serde_json::from_str::<Value>(&k).unwrap().to_string();
            ((t, k), serde_json::from_str(&a).unwrap())
        })
        .collect()
}

fn product(id: i64, name: &str, price: f64) -> Option<Value> {
    Some(serde_json::json!({"id": id, "name": name, "price": price}))
}

async fn done(c: &mut PgConnection, before: &str) -> compact::Compaction {
    match compact::compact(c, before.parse().unwrap(), Trigger::Command)
        .await
        .unwrap()
    {
        Outcome::Done(d) => d,
        Outcome::Nothing(why) => panic!("nothing compacted before {before}: {why}"),
    }
}

#[tokio::test]
async fn an_existing_journal_is_migrated_then_compacted_across_many_partitions() {
    let db = TestDb::new("journal_migrate");
    let pool = sqlx::PgPool::connect_with(db.url().connect_options().unwrap())
        .await
        .unwrap();
    // The journal as the previous release kept it: one table, LSNs across 0/FFFFFFFF.
    brewlytics_support::migrate::olap_up_to(&pool, 15)
        .await
        .unwrap();
    let mut c = pool.acquire().await.unwrap().detach();
    exec(
        &mut c,
        "insert into cdc_tables (source_schema, source_table, replica_table, columns, key_columns)
         values ('public', 'products', 'products', '[{\"name\":\"id\"},{\"name\":\"name\"},{\"name\":\"price\"}]', '{id}'),
                ('public', 'stores', 'stores', '[{\"name\":\"id\"},{\"name\":\"name\"}]', '{id}')",
    )
    .await;
    let mut history: Vec<Event> = (1..=5)
        .map(|i| {
            (
                "0/FFFFFF00",
                -2147483647 + i as i32,
                "products",
                'r',
                Some(i),
                product(i, "beans", 1.0),
            )
        })
        .collect();
    history.extend([
        (
            "0/FFFFFF00",
            -2147483600,
            "stores",
            'r',
            Some(1),
            Some(serde_json::json!({"id": 1, "name": "north"})),
        ),
        (
            "0/FFFFFFF0",
            0,
            "products",
            's',
            None,
            Some(serde_json::json!({"table": {"name": "products", "v": 1}})),
        ),
        (
            "1/00000010",
            0,
            "products",
            'u',
            Some(1),
            product(1, "beans", 2.0),
        ),
        ("1/00000010", 1, "products", 'd', Some(2), None),
        // An update whose unchanged TOAST column (name) is left out of its image.
        (
            "1/00000020",
            0,
            "products",
            'u',
            Some(3),
            Some(serde_json::json!({"id": 3, "price": 3.5})),
        ),
    ]);
    journal_events(&mut c, &history).await;
    let before: Vec<String> = harness::sql::rows(&mut c, "select * from cdc_events")
        .await
        .unwrap();

    brewlytics_support::migrate::olap(&pool).await.unwrap();
    assert!(partitions::partitioned(&mut c).await.unwrap());
    let after: Vec<String> = harness::sql::rows(&mut c, "select * from cdc_events")
        .await
        .unwrap();
    assert_eq!(before, after, "the migration changed the journal's rows");
    let layout = partitions::layout(&mut c).await.unwrap();
    assert_eq!(layout.partitions.len(), 1);
    assert_eq!(layout.partitions[0].lo, Lsn::ZERO);
    assert_eq!(layout.partitions[0].hi, Lsn(lsn("1/00000020").0 + 1));
    assert_eq!(layout.default_rows, 0);
    // The audit view reads the partitioned journal.
    let audit: i64 = sqlx::query_scalar("select count(*) from cdc_orders")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(audit, 0);

    // Partitions of 1 GiB up to past 10/0: the names sort like the bounds.
    let width = 1 << 30;
    let wanted = policy::partitions_to_create(layout.tail(), layout.tail().unwrap(), width, 62);
    assert_eq!(
        partitions::create(&mut c, &wanted).await.unwrap(),
        wanted.len()
    );
    journal_events(
        &mut c,
        &[
            (
                "1/FFFFFFF0",
                0,
                "products",
                'i',
                Some(6),
                product(6, "cups", 0.5),
            ),
            ("2/00000010", 0, "stores", 't', None, None),
            (
                "2/00000010",
                1,
                "stores",
                'i',
                Some(2),
                Some(serde_json::json!({"id": 2, "name": "south"})),
            ),
            (
                "9/FFFFFF00",
                0,
                "products",
                'u',
                Some(3),
                Some(serde_json::json!({"id": 3, "price": 4.0})),
            ),
            (
                "A/00000010",
                0,
                "products",
                'u',
                Some(4),
                product(4, "beans", 9.0),
            ),
            (
                "A/00000010",
                1,
                "products",
                's',
                None,
                Some(serde_json::json!({"table": {"name": "products", "v": 2}})),
            ),
            ("F/FFFFFFF0", 0, "products", 'd', Some(6), None),
            (
                "10/00000010",
                0,
                "products",
                'u',
                Some(5),
                product(5, "beans", 5.0),
            ),
        ],
    )
    .await;
    let layout = partitions::layout(&mut c).await.unwrap();
    assert!(layout.partitions.len() > 60, "{}", layout.partitions.len());
    assert_eq!(layout.default_rows, 0, "rows outside every partition");
    let mut names: Vec<&str> = layout.partitions.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        layout
            .partitions
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
    );
    // Each row is in the partition its LSN belongs to.
    let placed: Vec<(String, String)> =
        sqlx::query_as("select lsn::text, tableoid::regclass::text from cdc_events")
            .fetch_all(&mut c)
            .await
            .unwrap();
    for (l, table) in placed {
        let p = layout
            .partitions
            .iter()
            .find(|p| table.ends_with(&p.name))
            .unwrap();
        assert!(p.lo <= lsn(&l) && lsn(&l) < p.hi, "{l} in {table}");
    }

    // Nothing replicated yet: no cut.
    assert!(matches!(
        compact::compact(&mut c, Before::Lsn(lsn("A/0")), Trigger::Command)
            .await
            .unwrap(),
        Outcome::Nothing(_)
    ));
    exec(
        &mut c,
        "insert into replication_checkpoint (slot_name, lsn) values ('brewlytics', '10/00000100')",
    )
    .await;

    // At a partition bound: partitions before it dropped, no row deleted.
    let expected = fold(&mut c, lsn("A/0")).await;
    let first = done(&mut c, "A/0").await;
    assert_eq!(first.cut, lsn("A/0"));
    assert_eq!(first.deleted_rows, 0);
    assert!(first.dropped_partitions >= 37, "{first:?}");
    assert_eq!(images(&mut c, first.cut).await, expected);
    assert_eq!(expected.len(), 6, "{expected:?}");
    assert_eq!(
        expected[&("products".into(), r#"{"id":3}"#.into())]["name"],
        "beans"
    );
    let before_cut: i64 = sqlx::query_scalar("select count(*) from cdc_events where lsn < 'A/0'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(before_cut, 0);
    let shapes: Vec<String> =
        sqlx::query_scalar("select after::text from cdc_events where lsn = 'A/0' and op = 's'")
            .fetch_all(&mut c)
            .await
            .unwrap();
    let shapes: Vec<Value> = shapes
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    assert_eq!(
        shapes,
        vec![serde_json::json!({"table": {"name": "products", "v": 1}})]
    );

    // Inside a partition, past the checkpoint asked: moved back to it; the earlier images
    // are history like the rest.
    let expected = fold(&mut c, lsn("10/00000100")).await;
    let second = done(&mut c, "20/0").await;
    assert_eq!(second.cut, lsn("10/00000100"));
    assert_eq!(second.requested, Some(lsn("20/0")));
    assert!(second.deleted_rows > 0, "{second:?}");
    assert_eq!(images(&mut c, second.cut).await, expected);
    assert!(!expected.contains_key(&("products".into(), r#"{"id":6}"#.into())));
    assert_eq!(
        compact::replayable_from(&mut c).await.unwrap(),
        Some(second.cut)
    );
    let left: i64 = sqlx::query_scalar("select count(*) from cdc_events where lsn < '10/00000100'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // Again at the same cut: nothing.
    assert!(matches!(
        compact::compact(&mut c, Before::Lsn(second.cut), Trigger::Command)
            .await
            .unwrap(),
        Outcome::Nothing(_)
    ));
}

/// The journal's first and last rows are found by their key as LSNs, never as text (where
/// 0/F000000 sorts after 0/20000000), and only up to the newest checkpoint: rows past it belong
/// to a batch in flight or orphaned by a crash — which a session's start deletes, whatever
/// digits the LSNs have.
#[tokio::test]
async fn journal_ends_are_read_as_lsns_up_to_the_checkpoint() {
    let db = TestDb::new("journal_ends");
    let pool = sqlx::PgPool::connect_with(db.url().connect_options().unwrap())
        .await
        .unwrap();
    brewlytics_support::migrate::olap(&pool).await.unwrap();
    let mut c = pool.acquire().await.unwrap().detach();
    assert_eq!(
        partitions::create(&mut c, &[(Lsn::ZERO, lsn("1/0"))])
            .await
            .unwrap(),
        1
    );
    let row = |l| {
        (
            l,
            0,
            "stores",
            'i',
            Some(1),
            Some(serde_json::json!({"id": 1})),
        )
    };
    journal_events(
        &mut c,
        &[row("0/F000000"), row("0/1E000000"), row("0/20000000")],
    )
    .await;
    exec(
        &mut c,
        "insert into replication_checkpoint (slot_name, lsn) values ('ends', '0/1F000000')",
    )
    .await;

    let layout = partitions::layout(&mut c).await.unwrap();
    let part = layout
        .partitions
        .iter()
        .find(|p| p.lo == Lsn::ZERO)
        .expect("the partition made above");
    assert_eq!(part.last_lsn, Some(lsn("0/1E000000")));
    let status = brewlytics_replicator::journal::report::read(&mut c)
        .await
        .unwrap();
    assert_eq!(status.replayable_from, Some(lsn("0/F000000")));

    let deleted = brewlytics_replicator::sink::olap::journal::delete_past_checkpoint(
        &mut c,
        "ends",
        lsn("0/1F000000"),
    )
    .await
    .unwrap();
    assert_eq!(deleted, Ok(1), "the row past the checkpoint stays");
    let left: Vec<String> = sqlx::query_scalar("select lsn::text from cdc_events order by 1")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(left, ["0/1E000000", "0/F000000"]);
}

/// Pushes the source's WAL to the next segment now and then: partitions fill in seconds.
fn switch_wal(c: &Clusters, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let url = c.oltp_url();
    tokio::spawn(async move {
        let mut conn = harness::connect(&url).await;
        while !stop.load(Ordering::Relaxed) {
            let _ = sqlx::query("select pg_switch_wal()")
                .execute(&mut conn)
                .await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    })
}

async fn latest_cut(c: &Clusters) -> Option<Lsn> {
    compact::replayable_from(&mut c.olap_conn().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_under_load_and_kill_9_keeps_replay_equal_to_the_stream() {
    let c = Clusters::start();
    c.prepare(200);
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = tokio::spawn(workload(c.oltp_url(), stop.clone(), counts.clone(), 21));
    let wal = switch_wal(&c, stop.clone());
    let retention = [
        "--journal-retention",
        "4s",
        "--journal-maintenance-interval-ms",
        "300",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut pick = |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(lo + seed % (hi - lo))
    };
    // Killed while it compacts (every pass may), and a `journal compact` killed too.
    for round in 0..5 {
        let mut r = c.replicator_with(&format!("retain-{round}"), &free_addr(), &retention, &[]);
        tokio::time::sleep(pick(2_000, 6_000)).await;
        let mut cli = harness::Proc::spawn(
            c.command(&["journal", "compact", "--before", "3s"]),
            harness::scratch_dir("logs").join(format!("compact-{round}.log")),
        );
        tokio::time::sleep(pick(0, 300)).await;
        assert!(r.is_running(), "replicator exited: {}", r.log_text());
        r.kill9();
        cli.kill9();
    }
    let addr = free_addr();
    let mut r = c.replicator_with("retain-final", &addr, &retention, &[]);
    wait_streaming(&addr, &r).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    wal.await.unwrap();
    assert!(counts.orders.load(Ordering::Relaxed) > 50);
    let report = c.converged(Duration::from_secs(90)).await;
    assert!(report.all_equal(), "{report:#?}");
    // Retention applied: compactions recorded, partitions dropped, nothing left before the
    // latest cut once a pass has run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = latest_cut(&c).await.expect("retention never compacted");
    let mut olap = c.olap_conn().await;
    let (compactions, dropped): (i64, i64) = sqlx::query_as(
        "select count(*), coalesce(sum(dropped_partitions), 0) from cdc_journal_compactions",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    println!("{compactions} compactions, {dropped} partitions dropped, latest cut {cut}");
    assert!(dropped >= 1, "no partition dropped");
    let before_cut: i64 =
        sqlx::query_scalar("select count(*) from cdc_events where lsn < $1::pg_lsn")
            .bind(cut.to_string())
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert_eq!(before_cut, 0, "rows before the cut {cut}");
    let layout = partitions::layout(&mut olap).await.unwrap();
    assert_eq!(layout.default_rows, 0);
    assert!(layout.partitions.iter().all(|p| p.hi > cut));
    assert_eq!(c.journal_duplicates().await, (0, 0));
    // Visible: /metrics and status.
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    assert!(metric(&metrics, "brewlytics_journal_bytes").unwrap() > 0.0);
    assert!(metric(&metrics, "brewlytics_journal_replayable_lsn").unwrap() > 0.0);
    assert_eq!(
        metric(&metrics, "brewlytics_journal_retention_seconds"),
        Some(4.0)
    );
    let status: Value = serde_json::from_str(&c.run(&["status", "--json"])).unwrap();
    assert_eq!(status["journal"]["compacted"], true);
    assert!(status["journal"]["partitions"].as_u64().unwrap() >= 1);
    assert!(r.terminate(Duration::from_secs(30)).success());

    // Replay from the cut, and from a later LSN, gives back the streamed state exactly.
    let streamed = c.star_fingerprint().await;
    let cut = latest_cut(&c).await.unwrap();
    let later: String = sqlx::query_scalar(
        "select e.lsn::text from cdc_events e where e.lsn > $1::pg_lsn and e.seq >= 0 order by e.lsn limit 1 offset 50",
    )
    .bind(cut.to_string())
    .fetch_one(&mut olap)
    .await
    .unwrap();
    for from in [cut.to_string(), later] {
        let out = c.run(&["replay", "--from-lsn", &from]);
        assert!(out.contains("replayed"), "{out}");
        assert_eq!(
            c.star_fingerprint().await,
            streamed,
            "star after replay from {from}"
        );
        let report = c.converged(Duration::from_secs(10)).await;
        assert!(
            report.all_equal(),
            "replica after replay from {from}: {report:#?}"
        );
    }
    // Before the cut: one line naming the earliest LSN.
    let out = c
        .command(&["replay", "--from-lsn", &Lsn(cut.0 - 1).to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("the earliest LSN it can start from is {cut}")),
        "{stderr}"
    );
    assert_eq!(c.star_fingerprint().await, streamed);
}
