//! Exactly once, against the built binary on two real PostgreSQL servers: `brewlytics
//! replicate` killed with SIGKILL at random instants under a write load and restarted; the
//! source server crashing mid-stream; the OLAP server going away for a while; a standby
//! taking over from a killed leader; a 500,000-change transaction with bounded memory.
//! Each ends with OLAP equal to OLTP row for row, the facts equal to a rebuild from the
//! journal, and no change journaled twice.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{
    assert_exactly_once, free_addr, http_get, metric, wait_streaming, workload, Clusters,
    LoadCounts,
};

/// A random duration in `[lo, hi)` ms from a seeded generator (the seed is printed, so a
/// failing run can be repeated with DRILL_SEED).
fn pick_ms(state: &mut u64, lo: u64, hi: u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_millis(lo + *state % (hi - lo))
}

fn drill_seed() -> u64 {
    std::env::var("DRILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_instants_under_load_loses_and_duplicates_nothing() {
    let c = Clusters::start();
    c.prepare(300);
    let seed = drill_seed();
    println!("DRILL_SEED={seed}");
    let mut rng = seed;

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = tokio::spawn(workload(c.oltp_url(), stop.clone(), counts.clone(), seed));

    // The first kill comes early, likely during the initial copy.
    let mut kills = 0;
    for round in 0..6 {
        let mut r = c.replicator(&format!("kill-{round}"), &free_addr(), &[]);
        let life = if round == 0 {
            pick_ms(&mut rng, 50, 400)
        } else {
            pick_ms(&mut rng, 300, 2500)
        };
        tokio::time::sleep(life).await;
        assert!(
            r.is_running(),
            "replicator exited on its own: {}",
            r.log_text()
        );
        r.kill9();
        kills += 1;
        println!("round {round}: killed after {life:?}");
    }
    // Keep writing for a moment with no replicator: a backlog for the last start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let orders = counts.orders.load(Ordering::Relaxed);
    println!(
        "{kills} kills; workload: {orders} orders, {} status changes, {} deletes, {} price changes",
        counts.updates.load(Ordering::Relaxed),
        counts.deletes.load(Ordering::Relaxed),
        counts.price_changes.load(Ordering::Relaxed)
    );
    assert!(orders > 50, "the load wrote too little to prove anything");

    let mut last = c.replicator("kill-final", &free_addr(), &[]);
    assert_exactly_once(&c, "kill -9 drill").await;
    let status = last.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exit: {status:?}");
    // Every order still in OLTP was journaled (copied or inserted), and no more orders were
    // journaled than were ever created (orders deleted before the first copy are not).
    let mut olap = c.olap_conn().await;
    let journaled: i64 = sqlx::query_scalar(
        "select count(*) from cdc_events where source_table = 'orders' and op in ('i', 'r')",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    let mut oltp = c.oltp_conn().await;
    let present: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&mut oltp)
        .await
        .unwrap();
    println!(
        "orders journaled {journaled}, created {}, present {present}",
        300 + orders
    );
    assert!(journaled >= present && journaled <= 300 + orders as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_crash_and_olap_outage_mid_stream_are_waited_out() {
    let mut c = Clusters::start();
    c.prepare(100);
    let addr = free_addr();
    let mut r = c.replicator("outages", &addr, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = tokio::spawn(workload(c.oltp_url(), stop.clone(), counts.clone(), 42));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The source crashes (immediate shutdown, recovery) while orders flow.
    tokio::task::block_in_place(|| c.oltp.crash_restart()).expect("source crash and restart");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // OLAP goes away for a while: the lag grows in the metrics, the daemon keeps running.
    let lag_before = read_metric(&addr, "brewlytics_replication_lag_seconds").await;
    tokio::task::block_in_place(|| c.olap.pause()).expect("stopping OLAP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let lag_during = read_metric(&addr, "brewlytics_replication_lag_seconds").await;
    let lag_bytes_during = read_metric(&addr, "brewlytics_replication_lag_bytes").await;
    assert!(
        r.is_running(),
        "the replicator exited while OLAP was down: {}",
        r.log_text()
    );
    tokio::task::block_in_place(|| c.olap.resume()).expect("starting OLAP again");
    println!("lag before {lag_before:?} s, while OLAP was down {lag_during:?} s / {lag_bytes_during:?} bytes");
    assert!(
        lag_during.unwrap_or(0.0) > 2.5,
        "lag in seconds did not grow while OLAP was down: {lag_during:?}"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_exactly_once(&c, "source crash / OLAP outage").await;
    // Caught up: the lag is small again, and the daemon reports ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lag = read_metric(&addr, "brewlytics_replication_lag_seconds").await;
        if lag.is_some_and(|l| l < 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "lag stayed at {lag:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = http_get(&addr, "/ready").await.expect("/ready");
    assert_eq!(code, 200, "{body}");
    let errors = http_get(&addr, "/metrics").await.unwrap().1;
    assert!(
        errors.contains("brewlytics_replicator_errors_total{kind="),
        "the outages were not counted as errors"
    );
    let status = r.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exit: {status:?}");
    assert!(
        counts.errors.load(Ordering::Relaxed) > 0,
        "the source crash was not felt by the writers"
    );
}

async fn read_metric(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics").await?;
    metric(&body, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_within_10_s_of_the_leader_being_killed() {
    let c = Clusters::start();
    c.prepare(50);
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let mut a = c.replicator("leader-a", &addr_a, &[]);
    let role = |addr: String| async move {
        http_get(&addr, "/health")
            .await
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["role"].as_str().map(str::to_owned))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while role(addr_a.clone()).await.as_deref() != Some("streaming") {
        assert!(
            Instant::now() < deadline,
            "A never streamed: {}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = c.replicator("standby-b", &addr_b, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while role(addr_b.clone()).await.as_deref() != Some("standby") {
        assert!(
            Instant::now() < deadline,
            "B never stood by: {}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = http_get(&addr_b, "/ready").await.unwrap();
    assert_eq!(code, 503, "a standby is not ready");

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = tokio::spawn(workload(c.oltp_url(), stop.clone(), counts.clone(), 7));
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.kill9();
    let killed = Instant::now();
    while role(addr_b.clone()).await.as_deref() != Some("streaming") {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the standby did not take over within 10 s: {}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over = killed.elapsed();
    println!("standby streaming {took_over:?} after the leader was killed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_exactly_once(&c, "failover").await;
    assert!(b.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500k_change_transaction_replicates_with_bounded_memory() {
    let c = Clusters::start();
    c.prepare(0);
    let addr = free_addr();
    let mut r = c.replicator("big-tx", &addr, &[]);
    // Streaming first, so the transaction comes through the slot rather than the copy.
    wait_streaming(&addr, &r).await;
    let baseline = r.peak_rss_kib().unwrap_or_default();
    let mut oltp = c.oltp_conn().await;
    let t0 = Instant::now();
    sqlx::query(
        "insert into inventory_movements (store_id, product_id, delta, reason, occurred_at)
         select 1 + g % (select count(*) from stores), 1 + g % (select count(*) from products),
                1 + g % 7, 'restock', now() - (g % 20) * interval '1 day'
         from generate_series(0, 499999) g",
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    let written = t0.elapsed();
    let mut olap = c.olap_conn().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut peak = 0;
    loop {
        peak = peak.max(r.peak_rss_kib().unwrap_or_default());
        let n: i64 = sqlx::query_scalar("select count(*) from replica.inventory_movements")
            .fetch_one(&mut olap)
            .await
            .unwrap();
        if n >= 500_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of 500000 arrived: {}",
            r.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let applied = t0.elapsed();
    peak = peak.max(r.peak_rss_kib().unwrap_or_default());
    println!(
        "500k-change transaction: written in {written:?}, in OLAP after {applied:?}; \
         replicator peak RSS {} MiB (baseline {} MiB)",
        peak / 1024,
        baseline / 1024
    );
    let (facts, rows): (i64, i64) = sqlx::query_as(
        "select (select coalesce(sum(movements), 0) from fact_inventory where reason = 'restock'),
                (select count(*) from replica.inventory_movements where reason = 'restock')",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(facts, rows);
    assert!(rows >= 500_000);
    // Chunked at 10,000 changes: memory does not follow the transaction's size. (A debug
    // build; release is smaller.)
    assert!(peak < 200 * 1024, "peak RSS {} MiB", peak / 1024);
    assert!(r.terminate(Duration::from_secs(30)).success());
    let report = c.converged(Duration::from_secs(30)).await;
    assert!(report.all_equal(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_with_how_to_recover_and_resync_recovers() {
    // The source may keep at most 1 MB of WAL for slots: a stopped replicator loses its slot.
    let c = Clusters::start_with(&[("max_slot_wal_keep_size", "1")]);
    c.prepare(20);
    let addr = free_addr();
    // A warning threshold of 0 MiB: any retained WAL is over it.
    let mut r = c.replicator("lost-1", &addr, &[("RETAINED_WAL_WARN_MB", "0")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_metric(&addr, "brewlytics_slot_retained_wal_over_threshold").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "no retained-WAL warning: {}",
            r.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(r.terminate(Duration::from_secs(30)).success());
    assert!(
        r.log_text().contains("retains more WAL than the threshold"),
        "{}",
        r.log_text()
    );

    // Orders while the replicator is down, then enough WAL to pass the limit.
    let mut oltp = c.oltp_conn().await;
    for _ in 0..3 {
        sqlx::query(
            "insert into inventory_movements (store_id, product_id, delta, reason)
             select 1, 1, 1, 'adjustment' from generate_series(1, 20000)",
        )
        .execute(&mut oltp)
        .await
        .unwrap();
        sqlx::query("select pg_switch_wal()")
            .execute(&mut oltp)
            .await
            .unwrap();
    }
    sqlx::query("checkpoint").execute(&mut oltp).await.unwrap();
    let status: Option<String> = sqlx::query_scalar(
        "select wal_status from pg_replication_slots where slot_name = 'brewlytics'",
    )
    .fetch_one(&mut oltp)
    .await
    .unwrap();
    assert_eq!(
        status.as_deref(),
        Some("lost"),
        "the slot was not invalidated"
    );

    let last = c.replicate_refusal();
    assert!(
        last.starts_with("error: ")
            && last.contains("wal_status = lost")
            && last.contains("brewlytics resync"),
        "{last}"
    );

    let out = c.run(&["resync"]);
    assert!(out.contains("resynced"), "{out}");
    let mut r = c.replicator("lost-2", &free_addr(), &[]);
    let report = c.converged(Duration::from_secs(60)).await;
    assert!(report.all_equal(), "{report:#?}");
    assert!(r.terminate(Duration::from_secs(30)).success());
    // Logs never carry a password.
    for secret in [c.oltp.password(), c.olap.password()] {
        assert!(!r.log_text().contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_status_or_errors() {
    let c = Clusters::start();
    c.prepare(10);
    let addr = free_addr();
    let mut r = c.replicator(
        "secrets",
        &addr,
        &[("RUST_LOG", "debug"), ("LOG_FORMAT", "json")],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = tokio::spawn(workload(c.oltp_url(), stop.clone(), counts.clone(), 3));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let report = c.converged(Duration::from_secs(30)).await;
    assert!(report.all_equal());
    let status = http_get(&addr, "/status").await.expect("/status").1;
    let metrics = http_get(&addr, "/metrics").await.expect("/metrics").1;
    let page = http_get(&addr, "/").await.expect("/").1;
    assert!(status.contains("\"checkpoint_lsn\""), "{status}");
    assert!(r.terminate(Duration::from_secs(30)).success());
    let log = r.log_text();
    assert!(log.lines().count() > 3, "{log}");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    // A wrong password: the error names the database, never the password tried.
    let wrong = c
        .oltp_url()
        .expose()
        .replace(c.oltp.password(), "Wr0ngSecretValue");
    let out = c
        .command(&["status"])
        .env("OLTP_DATABASE_URL", &wrong)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("password authentication failed") || err.contains("***"),
        "{err}"
    );
    for text in [&status, &metrics, &page, &log, &err] {
        for secret in [c.oltp.password(), c.olap.password(), "Wr0ngSecretValue"] {
            assert!(!text.contains(secret), "a password leaked: {text}");
        }
    }
}

/// A copy (here `resync`) that died after its journal workers committed and before the
/// transaction with the replica and the checkpoint did: the slot made for it must not be
/// streamed from, the orphaned journal rows go, and `resync` copies again exactly once —
/// with the tables copied in parallel (3 workers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_never_committed_is_not_streamed_from_and_its_journal_rows_go() {
    let c = Clusters::start();
    c.prepare(200);
    let addr = free_addr();
    let mut r = c.replicator("copy-1", &addr, &[("COPY_WORKERS", "3")]);
    let report = c.converged(Duration::from_secs(90)).await;
    assert!(report.all_equal(), "{report:#?}");
    assert!(r.terminate(Duration::from_secs(30)).success());
    let mut olap = c.olap_conn().await;
    let mut oltp = c.oltp_conn().await;
    // Every source row journaled once by the parallel copy, each table's schema event first.
    let (copied, misplaced): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where op = 'r'),
                count(*) filter (where op = 'r' and seq < (select max(seq) from cdc_events s
                                                           where s.op = 's' and s.lsn = e.lsn
                                                             and s.source_table = e.source_table))
         from cdc_events e where seq < 0",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    let source_rows: i64 = sqlx::query_scalar(
        "select (select count(*) from stores) + (select count(*) from employees)
              + (select count(*) from customers) + (select count(*) from products)
              + (select count(*) from orders) + (select count(*) from order_items)
              + (select count(*) from payments) + (select count(*) from inventory_movements)",
    )
    .fetch_one(&mut oltp)
    .await
    .unwrap();
    assert_eq!((copied, misplaced), (source_rows, 0));

    // What a `resync` killed between its journal's commit and its own leaves: a new slot, the
    // mark, and journal rows at the new slot's consistent point.
    sqlx::query("select pg_drop_replication_slot('brewlytics')")
        .execute(&mut oltp)
        .await
        .unwrap();
    let orphan_lsn: String = sqlx::query_scalar(
        "select lsn::text from pg_create_logical_replication_slot('brewlytics', 'pgoutput')",
    )
    .fetch_one(&mut oltp)
    .await
    .unwrap();
    sqlx::query("insert into cdc_copy_attempts (slot_name, lsn) values ('brewlytics', $1::pg_lsn)")
        .bind(&orphan_lsn)
        .execute(&mut olap)
        .await
        .unwrap();
    sqlx::query(
        "insert into cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op, key,
                                 before, after, json_nulls)
         select $1::pg_lsn, seq, xid, commit_ts, source_schema, source_table, op, key, before,
                after, json_nulls
         from cdc_events where seq < 0",
    )
    .bind(&orphan_lsn)
    .execute(&mut olap)
    .await
    .unwrap();
    // Orders the dead copy's slot would stream, but not what came before it.
    sqlx::query("update orders set status = 'completed' where status <> 'completed'")
        .execute(&mut oltp)
        .await
        .unwrap();

    let last = c.replicate_refusal();
    assert!(
        last.starts_with("error: ") && last.contains("never committed") && last.contains("resync"),
        "{last}"
    );

    let out = c.run(&["resync", "--copy-workers", "2"]);
    assert!(out.contains("resynced"), "{out}");
    let left: (i64, i64) = sqlx::query_as(
        "select (select count(*) from cdc_events where lsn = $1::pg_lsn),
                (select count(*) from cdc_copy_attempts)",
    )
    .bind(&orphan_lsn)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        left,
        (0, 0),
        "the dead copy's journal rows or mark are still there"
    );
    let copies: Vec<(String, i64)> = sqlx::query_as(
        "select lsn::text, count(*) from cdc_events where op = 'r' group by 1 order by 1",
    )
    .fetch_all(&mut olap)
    .await
    .unwrap();
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert!(copies.iter().all(|(_, n)| *n == source_rows), "{copies:?}");

    let mut r = c.replicator("copy-2", &free_addr(), &[]);
    let report = c.converged(Duration::from_secs(90)).await;
    assert!(report.all_equal(), "{report:#?}");
    assert!(r.terminate(Duration::from_secs(30)).success());
}

/// The journal is written on its own connection and committed just before the batch's
/// transaction: a replicator killed between the two leaves journal rows past the checkpoint.
/// They are deleted at the next start and journaled again from the stream, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_rows_past_the_checkpoint_are_replaced_by_the_stream() {
    let c = Clusters::start();
    c.prepare(20);
    let mut r = c.replicator("ahead-1", &free_addr(), &[]);
    assert!(c.converged(Duration::from_secs(60)).await.all_equal());
    assert!(r.terminate(Duration::from_secs(30)).success());

    // Transactions the slot has not sent yet, and what a killed replicator would have
    // journaled for them (with other content, to tell them apart).
    let mut oltp = c.oltp_conn().await;
    for i in 0..5 {
        sqlx::query("insert into stores (name) values ($1)")
            .bind(format!("ahead {i}"))
            .execute(&mut oltp)
            .await
            .unwrap();
    }
    // Their commit LSNs, read from the slot without consuming it (once the WAL is flushed:
    // the test cluster commits asynchronously).
    let deadline = Instant::now() + Duration::from_secs(20);
    let commits: Vec<String> = loop {
        let commits: Vec<String> = sqlx::query_scalar(
            "select format('%s/%s', to_hex((b >> 32)::integer),
                           to_hex((b & x'FFFFFFFF'::bigint)::integer))
             from (select ('x' || encode(substring(data from 3 for 8), 'hex'))::bit(64)::bigint as b
                   from pg_logical_slot_peek_binary_changes('brewlytics', null, null,
                        'proto_version', '1', 'publication_names', 'brewlytics')
                   where get_byte(data, 0) = 67) c",
        )
        .fetch_all(&mut oltp)
        .await
        .unwrap();
        if commits.len() >= 5 {
            break commits;
        }
        assert!(Instant::now() < deadline, "{commits:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut olap = c.olap_conn().await;
    for lsn in &commits {
        sqlx::query(
            "insert into cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op, after)
             values ($1::pg_lsn, 1, 0, now(), 'public', 'stores', 'i', '{\"orphan\": true}')",
        )
        .bind(lsn)
        .execute(&mut olap)
        .await
        .unwrap();
    }

    let mut r = c.replicator("ahead-2", &free_addr(), &[]);
    assert_exactly_once(&c, "journal ahead").await;
    let (orphans, journaled): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where after::text like '%orphan%'),
                count(*) filter (where after->>'name' like 'ahead %')
         from cdc_events where lsn = any($1::text[]::pg_lsn[])",
    )
    .bind(&commits)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!((orphans, journaled), (0, 5));
    assert!(r.terminate(Duration::from_secs(30)).success());
    assert!(
        r.log_text().contains("batch that never committed deleted"),
        "{}",
        r.log_text()
    );
}
