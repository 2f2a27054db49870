//! Partition maintenance while orders flow, against the built binary on two PostgreSQL
//! servers: a pg_partman-style monthly rotation — a month created ahead, a month loaded into
//! a plain table and attached, old months detached and dropped, a partition dropped while
//! attached — on a table with a default partition and two levels of partitioning (a year
//! partitioned by month, a year attached with its months), under
//! `publish_via_partition_root = true` (rows under the root's name) and `false` (each leaf a
//! table of its own), with `--partition-detach keep` (the default) and `mirror`, with the DDL
//! event trigger and without it (the worker's check), `kill -9` of the replicator in the
//! middle of an attached month's copy, and the NATS stream loaded into another OLAP.
//!
//! Each ends with the replica compared with the source row for row — plus, under `keep`, the
//! rows the detached months held when they went, read from the source as they went — `status`
//! saying what was done, every other table equal to OLTP, and `replay` of the journal giving
//! the same replica and star.

mod harness;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::nats::NatsCluster;
use harness::sql::{exec, rows};
use harness::{free_addr, wait_streaming, workload_paced, Clusters, LoadCounts, Proc};
use sqlx::{Connection, PgConnection};

/// A table partitioned by day: a year partitioned by month, two months, a default partition.
const TREE: &str = "
create table ev (id bigint, day date, v text, primary key (id, day)) partition by range (day);
create table ev_2025 partition of ev for values from ('2025-01-01') to ('2026-01-01')
    partition by range (day);
create table ev_2025_11 partition of ev_2025 for values from ('2025-11-01') to ('2025-12-01');
create table ev_2025_12 partition of ev_2025 for values from ('2025-12-01') to ('2026-01-01');
create table ev_2026_01 partition of ev for values from ('2026-01-01') to ('2026-02-01');
create table ev_2026_02 partition of ev for values from ('2026-02-01') to ('2026-03-01');
create table ev_default partition of ev default;
insert into ev select g, date '2025-11-01' + (g % 120), 'seed ' || g from generate_series(1, 3000) g;
insert into ev select g, date '2030-01-01' + (g % 50), 'far ' || g from generate_series(3001, 3100) g;
";

/// The month created ahead (empty).
const CREATE_AHEAD: &str = "
create table ev_2026_03 partition of ev for values from ('2026-03-01') to ('2026-04-01');
";

/// A month loaded into a plain table, then attached.
fn load_and_attach(rows: u32) -> String {
    format!(
        "create table ev_2026_04 (like ev including all);
         insert into ev_2026_04 select 500000 + g, date '2026-04-01' + (g % 30), 'april ' || g
         from generate_series(1, {rows}) g;
         alter table ev attach partition ev_2026_04 for values from ('2026-04-01') to ('2026-05-01');"
    )
}

/// A month attached under the year, and a year attached with its months (two levels).
const NESTED: &str = "
create table ev_2025_10 (like ev including all);
insert into ev_2025_10 select 600000 + g, date '2025-10-01' + (g % 31), 'october ' || g
from generate_series(1, 400) g;
alter table ev_2025 attach partition ev_2025_10 for values from ('2025-10-01') to ('2025-11-01');
create table ev_2027 (like ev including all) partition by range (day);
create table ev_2027_01 partition of ev_2027 for values from ('2027-01-01') to ('2027-02-01');
create table ev_2027_02 partition of ev_2027 for values from ('2027-02-01') to ('2027-03-01');
insert into ev_2027 select 700000 + g, date '2027-01-01' + (g % 59), 'y2027 ' || g
from generate_series(1, 300) g;
alter table ev attach partition ev_2027 for values from ('2027-01-01') to ('2028-01-01');
";

/// The oldest month detached (its rows read as it went), then dropped; a month dropped
/// while attached; a row of the detached month's days now in the default partition.
async fn rotate_out(oltp: &mut PgConnection) -> Vec<String> {
    exec(oltp, "alter table ev detach partition ev_2026_01").await;
    let mut gone = rows(oltp, "select id, day, v from ev_2026_01")
        .await
        .unwrap();
    exec(oltp, "drop table ev_2026_01").await;
    gone.extend(
        rows(oltp, "select id, day, v from ev_2025_11")
            .await
            .unwrap(),
    );
    exec(
        oltp,
        "drop table ev_2025_11;
         insert into ev values (900001, '2026-01-15', 'january, in the default partition');",
    )
    .await;
    gone.sort();
    gone
}

/// Writes to `ev` through its root until `stop`: inserts into the months attached (and the
/// default partition), updates and deletes of its own rows and, once attached, of the
/// attached month's. `phase`: 1 once March exists, 2 once April is attached.
async fn ticker(
    c: Arc<Clusters>,
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    pause: Arc<AtomicBool>,
) -> u64 {
    let mut conn: Option<PgConnection> = None;
    let mut next_id: i64 = 1_000_000;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut writes = 0;
    let mut last_error = None;
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if pause.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if conn.is_none() {
            conn = PgConnection::connect_with(&c.oltp_url().connect_options().unwrap())
                .await
                .ok();
        }
        let Some(db) = conn.as_mut() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let p = phase.load(Ordering::Relaxed);
        let months = [
            "2025-12-01",
            "2026-02-01",
            "2030-01-01",
            "2026-03-01",
            "2026-04-01",
        ];
        let month = months[(rng % (3 + u64::from(p)).min(5)) as usize];
        let some_id = if p >= 2 && rng.is_multiple_of(2) {
            500_000 + (rng >> 8) as i64 % 20_000
        } else {
            1_000_000 + (rng >> 8) as i64 % (next_id - 999_999)
        };
        let r = match rng % 4 {
            0 | 1 => {
                next_id += 1;
                sqlx::query("insert into ev values ($1, $2::date + ($3 % 28)::int, 'tick')")
                    .bind(next_id)
                    .bind(month)
                    .bind((rng >> 16) as i64 % 1000)
                    .execute(&mut *db)
                    .await
            }
            2 => {
                sqlx::query("update ev set v = 'tock ' || $2 where id = $1")
                    .bind(some_id)
                    .bind(writes as i64)
                    .execute(&mut *db)
                    .await
            }
            _ => {
                sqlx::query("delete from ev where id = $1")
                    .bind(some_id)
                    .execute(&mut *db)
                    .await
            }
        };
        match r {
            Ok(_) => writes += 1,
            Err(e) => {
                if last_error.is_none() {
                    eprintln!("ticker: {e}");
                }
                last_error = Some(e.to_string());
                conn = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    writes
}

/// Waits (≤ 120 s) until `replica` (OLAP) holds exactly the rows of `source` (OLTP) and
/// `extra`.
async fn replica_is(c: &Clusters, source: &str, replica: &str, extra: &[String], label: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut oltp = c.oltp_conn().await;
    let mut olap = c.olap_conn().await;
    loop {
        let mut want = rows(&mut oltp, source).await.unwrap();
        want.extend(extra.iter().cloned());
        want.sort();
        let have = rows(&mut olap, replica).await;
        let differ = match have {
            Ok(have) if have == want => return,
            Ok(have) => format!(
                "{replica}: {} rows, expected {}; only in the replica: {:?}; missing: {:?}",
                have.len(),
                want.len(),
                have.iter()
                    .filter(|r| want.binary_search(r).is_err())
                    .take(5)
                    .collect::<Vec<_>>(),
                want.iter()
                    .filter(|r| have.binary_search(r).is_err())
                    .take(5)
                    .collect::<Vec<_>>()
            ),
            Err(e) => format!("{replica}: {e}"),
        };
        assert!(Instant::now() < deadline, "{label}: {differ}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `status --json`'s partitions: (partition, state, action, backfill state).
fn status_partitions(c: &Clusters) -> Vec<(String, String, String, Option<String>)> {
    let out = c.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    v["partitions"]
        .as_array()
        .expect("partitions in status")
        .iter()
        .map(|p| {
            (
                p["partition"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
                p["action"].as_str().unwrap().to_owned(),
                p["backfill_state"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn partition<'a>(
    list: &'a [(String, String, String, Option<String>)],
    name: &str,
) -> (&'a str, &'a str, Option<&'a str>) {
    let p = list
        .iter()
        .find(|p| p.0 == format!("public.{name}"))
        .unwrap_or_else(|| panic!("{name} not in status: {list:#?}"));
    (&p.1, &p.2, p.3.as_deref())
}

/// The drill's moving parts: orders and writes to `ev` until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    /// The writes to `ev` held while a check compares it.
    pause: Arc<AtomicBool>,
    orders: tokio::task::JoinHandle<()>,
    ticks: tokio::task::JoinHandle<u64>,
}

impl Traffic {
    fn start(c: &Arc<Clusters>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU8::new(0));
        let pause = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(LoadCounts::default());
        let orders = tokio::spawn(workload_paced(
            c.oltp_url(),
            stop.clone(),
            counts,
            7,
            Some(Duration::from_millis(20)),
        ));
        let ticks = tokio::spawn(ticker(
            c.clone(),
            stop.clone(),
            phase.clone(),
            pause.clone(),
        ));
        Self {
            stop,
            phase,
            pause,
            orders,
            ticks,
        }
    }

    /// The first steps of a rotation, the writes flowing around them: next month created
    /// ahead, then a month of `rows` loaded into a plain table and attached.
    async fn create_and_attach(&self, oltp: &mut PgConnection, rows: u32) {
        exec(oltp, CREATE_AHEAD).await;
        self.phase.store(1, Ordering::Relaxed);
        self.flow().await;
        exec(oltp, &load_and_attach(rows)).await;
        self.phase.store(2, Ordering::Relaxed);
    }

    /// Lets the writes go on a while (between two steps of a rotation).
    async fn flow(&self) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    /// Runs `check` with the writes to `ev` held (orders go on).
    async fn held<Fut: std::future::Future<Output = ()>>(&self, check: Fut) {
        self.pause.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        check.await;
        self.pause.store(false, Ordering::Relaxed);
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.orders.await.unwrap();
        let ticks = self.ticks.await.unwrap();
        assert!(ticks > 50, "the ticker wrote to ev: {ticks}");
    }
}

/// Waits until the copy of `ev`'s attached month has merged a chunk and is not done; its
/// rows copied so far.
async fn copy_under_way(c: &Clusters, r: &Proc) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut olap = c.olap_conn().await;
    loop {
        let row: Option<(String, i64)> = sqlx::query_as(
            "select state, rows_copied from cdc_backfills
             where source_table = 'ev' and scope is not null and reason like '%ev_2026_04%'",
        )
        .fetch_optional(&mut olap)
        .await
        .unwrap();
        match row {
            Some((state, n)) if state == "running" && n > 0 => return n,
            Some((state, _)) => assert!(
                state == "running" || state == "pending",
                "the attached month's copy is {state} before it could be interrupted"
            ),
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "the attached month is never copied: {}",
            r.log_text()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A drill's end: traffic stopped, the replica as expected (`check`), every other table
/// equal to OLTP, no journal position written twice.
async fn settle<F, Fut>(c: &Clusters, traffic: Traffic, check: &F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    traffic.stop().await;
    check().await;
    let report = c.converged(Duration::from_secs(120)).await;
    assert!(report.all_equal(), "OLAP differs from OLTP: {report:#?}");
    let (dup_positions, _) = c.journal_duplicates().await;
    assert_eq!(dup_positions, 0, "journal positions written twice");
}

/// The replicator stopped, `replay` of the whole journal gives the same replica (`check`)
/// and star.
async fn replay_gives_the_same<F, Fut>(c: &Clusters, mut r: Proc, check: &F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let star = c.star_fingerprint().await;
    r.terminate(Duration::from_secs(60));
    let out = c.run(&["replay", "--from-lsn", "0/0"]);
    assert!(out.contains("full rebuild"), "{out}");
    check().await;
    assert_eq!(star, c.star_fingerprint().await, "the star after replay");
}

/// What `status` shows of a partition: (state, action, its backfill's state).
type Shown<'a> = (&'a str, &'a str, Option<&'a str>);

/// Waits (≤ 30 s) until `status` shows each partition of `want` so.
async fn status_shows(c: &Clusters, want: &[(&str, Shown<'_>)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = status_partitions(c);
        let differ: Vec<String> = want
            .iter()
            .filter(|(name, shown)| partition(&list, name) != *shown)
            .map(|(name, shown)| format!("{name}: {:?}, not {shown:?}", partition(&list, name)))
            .collect();
        if differ.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{differ:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Small chunks; detached partitions' rows removed.
const MIRROR: [(&str, &str); 2] = [
    ("BACKFILL_CHUNK_ROWS", "300"),
    ("PARTITION_DETACH", "mirror"),
];

/// `ev` published through its root.
const THROUGH_ROOT: &str = "alter publication brewlytics add table ev;
    alter publication brewlytics set (publish_via_partition_root = true);";

/// A drill's start: two servers with orders, `ev` with its partitions, `publish` (and more)
/// run on the source, and the replicator (`args`, `env`) streaming on `listen`.
async fn start(
    name: &str,
    publish: &str,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Arc<Clusters>, PgConnection, Proc) {
    let c = Arc::new(Clusters::start());
    c.prepare(50);
    let mut oltp = c.oltp_conn().await;
    exec(&mut oltp, TREE).await;
    exec(&mut oltp, publish).await;
    let r = c.replicator_with(name, listen, args, env);
    wait_streaming(listen, &r).await;
    (c, oltp, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_published_through_the_root_keeps_detached_months_across_kill_9() {
    let listen = free_addr();
    let env = [("BACKFILL_CHUNK_ROWS", "500")];
    let (c, mut oltp, mut r) = start("root-keep", THROUGH_ROOT, &listen, &[], &env).await;
    let all = "select id, day, v from ev";
    replica_is(
        &c,
        all,
        "select id, day, v from replica.ev",
        &[],
        "first copy",
    )
    .await;
    let traffic = Traffic::start(&c);
    traffic.create_and_attach(&mut oltp, 20_000).await;
    // kill -9 in the middle of the attached month's copy; a new process resumes it.
    let copied = copy_under_way(&c, &r).await;
    r.kill9();
    assert!(copied < 20_000, "{copied}");
    let r = c.replicator("root-keep-2", &listen, &env);
    wait_streaming(&listen, &r).await;
    exec(&mut oltp, NESTED).await;
    let kept = rotate_out(&mut oltp).await;
    assert!(
        kept.len() > 1000,
        "the months dropped held rows: {}",
        kept.len()
    );
    // PostgreSQL sends nothing for a TRUNCATE of one partition published through its root:
    // the partition copied again (`snapshot --table`) brings its rows back in line; a copy of
    // the whole table leaves the rows kept from the dropped months alone.
    exec(&mut oltp, "truncate ev_2025_12").await;
    let out = c.run(&["snapshot", "--table", "ev_2025_12"]);
    assert!(out.contains("rows copied"), "{out}");
    let out = c.run(&["snapshot", "--table", "ev"]);
    assert!(out.contains("rows copied"), "{out}");

    let check = || replica_is(&c, all, "select id, day, v from replica.ev", &kept, "keep");
    settle(&c, traffic, &check).await;
    // The attached month arrived exactly once, with the stream's later changes to it.
    let n: i64 =
        sqlx::query_scalar("select count(*) from replica.ev where id between 500001 and 520000")
            .fetch_one(&mut c.olap_conn().await)
            .await
            .unwrap();
    let m: i64 = sqlx::query_scalar("select count(*) from ev where id between 500001 and 520000")
        .fetch_one(&mut oltp)
        .await
        .unwrap();
    assert!(
        n == m && m > 19_000,
        "{n} attached rows in the replica, {m} on the source"
    );

    let copied = ("attached", "copy", Some("done"));
    status_shows(
        &c,
        &[
            ("ev_2026_04", copied),
            ("ev_2026_03", ("attached", "created", None)),
            ("ev_2025_10", copied),
            ("ev_2027", copied),
            ("ev_2027_01", ("attached", "with_parent", None)),
            ("ev_2026_01", ("dropped", "keep", None)),
            ("ev_2025_11", ("dropped", "keep", None)),
            ("ev_default", ("attached", "baseline", None)),
        ],
    )
    .await;
    // The journal records what was done, as schema events of the table.
    let journaled: i64 = sqlx::query_scalar(
        "select count(*) from cdc_events where op = 's' and source_table = 'ev'
         and after::jsonb @> '{\"partitions\": [{\"events\": [{\"action\": \"keep\",
             \"partition\": {\"table\": \"ev_2026_01\"}}]}]}'",
    )
    .fetch_one(&mut c.olap_conn().await)
    .await
    .unwrap();
    assert_eq!(journaled, 1, "the detach of ev_2026_01 in the journal");
    let text = c.run(&["status"]);
    assert!(text.contains("public.ev: "), "{text}");
    assert!(
        text.contains("public.ev_2026_01 (FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')): dropped, rows kept in the replica"),
        "{text}"
    );
    replay_gives_the_same(&c, r, &check).await;
}

/// A second OLAP database loaded from the NATS stream by `brewlytics load` holds the same
/// rows of `ev` as the replicator's (waits ≤ 90 s).
async fn loaded_from_the_stream_alike(c: &Clusters, nats_url: &str) {
    c.olap.ensure_database("coffee_olap_loaded").unwrap();
    let loaded = c.olap.url("coffee_olap_loaded");
    let mut cmd = c.command(&[
        "load",
        "--from",
        "nats",
        "--nats-url",
        nats_url,
        "--olap-url",
        loaded.expose(),
        "--listen",
        &free_addr(),
    ]);
    cmd.env("RUST_LOG", "info");
    let log = harness::scratch_dir("logs").join("partitions-loader.log");
    let l = Proc::spawn(cmd, log);
    let want = rows(
        &mut c.olap_conn().await,
        "select id, day, v from replica.ev",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut conn = harness::connect(&loaded).await;
        let have = rows(&mut conn, "select id, day, v from replica.ev").await;
        if have.as_ref().is_ok_and(|h| *h == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the OLAP loaded from the stream differs: {} rows, {} expected; {}",
            have.map_or(-1, |h| h.len() as i64),
            want.len(),
            l.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_published_through_the_root_mirrors_detached_months_without_the_trigger() {
    let listen = free_addr();
    let nats = NatsCluster::start(1);
    let url = nats.url();
    let args = ["--sink", "nats", "--nats-url", &url];
    let untriggered = format!(
        "{THROUGH_ROOT} drop event trigger brewlytics_ddl; drop event trigger brewlytics_drop;"
    );
    let (c, mut oltp, r) = start("root-mirror", &untriggered, &listen, &args, &MIRROR).await;
    let all = "select id, day, v from ev";
    let check = || replica_is(&c, all, "select id, day, v from replica.ev", &[], "mirror");
    check().await;
    let traffic = Traffic::start(&c);
    traffic.create_and_attach(&mut oltp, 2_000).await;
    traffic.flow().await;
    exec(&mut oltp, NESTED).await;
    // Found by the worker's look at the trees (no trigger): the copies done.
    traffic.held(check()).await;
    traffic.flow().await;
    let gone = rotate_out(&mut oltp).await;
    assert!(!gone.is_empty());
    traffic.flow().await;
    settle(&c, traffic, &check).await;
    // Without the trigger a drop is a partition gone (its rows removed), then found dropped.
    let copied = ("attached", "copy", Some("done"));
    let removed = ("dropped", "remove", Some("done"));
    status_shows(
        &c,
        &[
            ("ev_2026_04", copied),
            ("ev_2027", copied),
            ("ev_2026_01", removed),
            ("ev_2025_11", removed),
        ],
    )
    .await;
    // The copies and removals travel through the stream: a loader merges them alike.
    loaded_from_the_stream_alike(&c, &url).await;
    replay_gives_the_same(&c, r, &check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_of_leaves_published_as_tables_copies_new_leaves_and_empties_gone_ones() {
    let listen = free_addr();
    let leaf_by_leaf = "alter publication brewlytics add table ev";
    let (c, mut oltp, r) = start("leaf-mirror", leaf_by_leaf, &listen, &[], &MIRROR).await;
    let traffic = Traffic::start(&c);
    traffic.create_and_attach(&mut oltp, 2_000).await;
    traffic.flow().await;
    // The attached month is a new table of the publication, copied while written to.
    let april = "select id, day, v from ev_2026_04";
    let replica = "select id, day, v from replica.ev_2026_04";
    traffic
        .held(replica_is(&c, april, replica, &[], "april"))
        .await;
    exec(&mut oltp, NESTED).await;
    let y2027 = "select id, day, v from ev_2027_01";
    let replica = "select id, day, v from replica.ev_2027_01";
    traffic
        .held(replica_is(&c, y2027, replica, &[], "2027"))
        .await;
    traffic.flow().await;
    let gone = rotate_out(&mut oltp).await;
    assert!(!gone.is_empty());
    traffic.flow().await;
    let leaves = [
        "ev_2025_10",
        "ev_2025_12",
        "ev_2026_02",
        "ev_2026_03",
        "ev_2026_04",
        "ev_2027_01",
        "ev_2027_02",
        "ev_default",
    ];
    let check = || async {
        for leaf in leaves {
            let source = format!("select id, day, v from {leaf}");
            let replica = format!("select id, day, v from replica.{leaf}");
            replica_is(&c, &source, &replica, &[], leaf).await;
        }
        // The months gone: no longer mirrored, their replicas emptied (mirror).
        for leaf in ["ev_2026_01", "ev_2025_11"] {
            let replica = format!("select id, day, v from replica.{leaf}");
            replica_is(&c, "select 1 where false", &replica, &[], leaf).await;
        }
    };
    settle(&c, traffic, &check).await;
    let copied = ("attached", "copy", Some("done"));
    let removed = ("dropped", "remove", None);
    status_shows(
        &c,
        &[
            ("ev_2026_04", copied),
            ("ev_2027_01", copied),
            ("ev_2026_03", ("attached", "created", None)),
            ("ev_2026_01", removed),
            ("ev_2025_11", removed),
        ],
    )
    .await;
    replay_gives_the_same(&c, r, &check).await;
}
