//! Large transactions received while they are in progress (`--streaming on`, pgoutput
//! protocol 2), against two real PostgreSQL servers whose source streams anything over 64 kB
//! of decoded changes (`logical_decoding_work_mem`): interleaved streamed transactions that
//! commit out of their start order, a savepoint rolled back inside one, a column dropped inside
//! one, a streamed transaction rolled back, small transactions committing in between, TRUNCATEs
//! inside streamed transactions (one rolled back with its savepoint, one of a table the star
//! reads) beside a keyless table's duplicate rows deleted by value — and
//! `kill -9` while a streamed transaction is open and while it is applied, the source crashing
//! while one is open and just after one commits, prepared ones committed and rolled back
//! across a restart of the replicator. Each ends with OLAP equal to OLTP, nothing journaled
//! twice, the star equal to a rebuild from the journal, and the source's own statistics proving
//! the transactions were streamed (or, with `off`, not).

mod harness;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harness::sql::exec;
use harness::{
    assert_exactly_once, free_addr, http_get, metric, metric_total, scratch_dir, wait_streaming,
    Background, Clusters, Proc, SmallDisk,
};
use sqlx::PgConnection;

/// The source streams a transaction once its decoded changes pass 64 kB.
const SMALL_DECODING_MEMORY: &[(&str, &str)] = &[("logical_decoding_work_mem", "64kB")];

/// A published table no workload touches, with `rows` committed rows.
async fn ledger(c: &Clusters, rows: i64) {
    let mut oltp = c.oltp_conn().await;
    exec(
        &mut oltp,
        &format!(
            "create table ledger (id bigint primary key, v int not null, pad text);
             alter publication brewlytics add table ledger;
             insert into ledger select g, 0, repeat('x', 40) from generate_series(1, {rows}) g;"
        ),
    )
    .await;
}

/// Transactions the source streamed (sent in progress) through the slot so far.
async fn streamed_transactions(c: &Clusters) -> i64 {
    let mut oltp = c.oltp_conn().await;
    sqlx::query_scalar(
        "select coalesce(sum(stream_txns), 0)::bigint from pg_stat_replication_slots
         where slot_name = 'brewlytics'",
    )
    .fetch_one(&mut oltp)
    .await
    .unwrap()
}

/// Files in the spool directory (there are never any: each is unlinked once open).
fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The replicator's transactions in progress and their bytes on disk, from `/metrics`.
async fn spooled(addr: &str) -> (f64, f64) {
    let text = http_get(addr, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    (
        metric(&text, "brewlytics_streamed_transactions_open").unwrap_or(-1.0),
        metric(&text, "brewlytics_streamed_spool_bytes").unwrap_or(-1.0),
    )
}

/// Errors that interrupted the replicator's sessions so far.
async fn errors(addr: &str) -> f64 {
    let text = http_get(addr, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    metric_total(&text, "brewlytics_replicator_errors_total")
}

/// `brewlytics_streamed_transactions_total{outcome}`.
async fn ended(addr: &str, outcome: &str) -> f64 {
    let text = http_get(addr, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    metric_total(
        &text,
        &format!("brewlytics_streamed_transactions_total{{outcome=\"{outcome}\"}}"),
    )
}

/// `/status`: whether the session receives large transactions in progress.
async fn receiving_in_progress(addr: &str) -> Option<bool> {
    let (_, body) = http_get(addr, "/status").await?;
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    doc.pointer("/replicator/in_progress/receiving")?.as_bool()
}

async fn wait_until<F, Fut>(what: &str, r: &Proc, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: {}", r.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Interleaved large transactions, a savepoint rolled back and a schema change inside one,
/// one rolled back whole, small orders committing throughout.
async fn interleaved_large_transactions(c: &Clusters, r: &Proc, addr: &str, streaming: bool) {
    let load = Background::start(c.oltp_url(), 7, Some(Duration::from_millis(20)));
    let mut a: PgConnection = c.oltp_conn().await;
    let mut d: PgConnection = c.oltp_conn().await;
    let mut e: PgConnection = c.oltp_conn().await;
    // A starts first and commits last.
    exec(
        &mut a,
        "begin;
         insert into ledger select g, 1, repeat('a', 40) from generate_series(1001, 21000) g;",
    )
    .await;
    // D starts second and commits first.
    exec(
        &mut d,
        "begin;
         insert into inventory_movements (store_id, product_id, delta, reason)
         select 1 + g % (select count(*) from stores), 1 + g % (select count(*) from products),
                3, 'restock'
         from generate_series(1, 10000) g;",
    )
    .await;
    if streaming {
        wait_until(
            "A and D streamed before they commit",
            r,
            Duration::from_secs(60),
            || async { spooled(addr).await.0 >= 2.0 },
        )
        .await;
    }
    // A savepoint rolled back, one released.
    exec(
        &mut a,
        "savepoint s1;
         insert into ledger select g, 999, 'gone' from generate_series(30001, 35000) g;
         update ledger set v = 999 where id <= 500;
         savepoint s1_inner;
         delete from ledger where id between 501 and 600;
         rollback to savepoint s1;
         savepoint s2;
         update ledger set v = 2 where id <= 200;
         release savepoint s2;",
    )
    .await;
    // E: streamed, then rolled back whole.
    exec(
        &mut e,
        "begin;
         insert into ledger select g, 998, repeat('e', 40) from generate_series(50001, 60000) g;",
    )
    .await;
    if streaming {
        wait_until(
            "E streamed before it rolls back",
            r,
            Duration::from_secs(60),
            || async { spooled(addr).await.0 >= 3.0 },
        )
        .await;
    }
    exec(&mut e, "rollback").await;
    // A schema change and more changes inside A, after E is gone (A's ALTER would wait on
    // E's lock otherwise).
    exec(
        &mut a,
        "alter table ledger drop column pad;
         update ledger set v = 3 where id % 10 = 0 and id > 1000;
         alter table ledger add column note text;
         update ledger set note = 'late' where id % 100 = 0;
         delete from ledger where id between 901 and 1000;",
    )
    .await;
    exec(&mut d, "commit").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    exec(&mut a, "commit").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = load.stop().await;
    assert!(
        counts.orders.load(Ordering::Relaxed) > 5,
        "too few small transactions in between to prove anything"
    );
}

/// What every mode ends with: OLAP equal to OLTP and the journal in commit order.
async fn assert_applied_in_commit_order(c: &Clusters, label: &str) {
    assert_exactly_once(c, label).await;
    let mut olap = c.olap_conn().await;
    let (gone, a_positions, a_rows, d_before_a): (i64, i64, i64, bool) = sqlx::query_as(
        "select (select count(*) from cdc_events
                 where source_table = 'ledger' and (after->>'v')::int in (998, 999)),
                (select count(distinct lsn) from cdc_events
                 where source_table = 'ledger' and op = 'i' and (after->>'id')::bigint between 1001 and 21000),
                (select count(*) from cdc_events
                 where source_table = 'ledger' and op = 'i' and (after->>'id')::bigint between 1001 and 21000),
                (select max(lsn) from cdc_events where source_table = 'inventory_movements'
                   and op = 'i' and (after->>'delta')::int = 3)
                 < (select min(lsn) from cdc_events where source_table = 'ledger' and op = 'i'
                   and (after->>'id')::bigint between 1001 and 21000)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(gone, 0, "{label}: rolled back changes were journaled");
    assert_eq!(
        (a_positions, a_rows),
        (1, 20_000),
        "{label}: A journaled once, at its commit"
    );
    assert!(
        d_before_a,
        "{label}: D committed first and is journaled first"
    );
    let (notes, backfills): (i64, i64) = sqlx::query_as(
        "select (select count(*) from replica.ledger where note = 'late'),
                (select count(*) from cdc_events where source_table = 'ledger' and op = 'b')",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        (notes, backfills),
        (209, 0),
        "{label}: the column added inside A is followed, without copying the table again"
    );
    let threes: i64 = sqlx::query_scalar("select count(*) from replica.ledger where v = 3")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert!(
        threes == 2000,
        "{label}: changes after the column dropped inside A were followed ({threes})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_streamed_in_progress_apply_at_commit_in_commit_order() {
    let c = Clusters::start_with(SMALL_DECODING_MEMORY);
    c.prepare(50);
    ledger(&c, 1000).await;
    let spool = scratch_dir("spool-interleaved");
    let addr = free_addr();
    let spool_env = spool.display().to_string();
    let mut r = c.replicator(
        "streamed",
        &addr,
        &[("SPOOL_DIR", &spool_env), ("NO_COLOR", "1")],
    );
    wait_streaming(&addr, &r).await;
    let before = streamed_transactions(&c).await;
    interleaved_large_transactions(&c, &r, &addr, true).await;
    assert_applied_in_commit_order(&c, "streamed").await;
    let streamed = streamed_transactions(&c).await - before;
    assert!(streamed >= 3, "the source streamed {streamed} transactions");
    assert_eq!(spooled(&addr).await, (0.0, 0.0), "transactions left open");
    assert!(ended(&addr, "committed").await >= 2.0);
    assert!(ended(&addr, "rolled_back").await >= 1.0);
    assert_eq!(files_in(&spool), 0);
    assert!(
        r.log_text().contains("in_progress=true"),
        "{}",
        r.log_text()
    );
    assert!(r.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_streaming_off_the_same_transactions_arrive_after_their_commit() {
    let c = Clusters::start_with(SMALL_DECODING_MEMORY);
    c.prepare(50);
    ledger(&c, 1000).await;
    let addr = free_addr();
    let mut r = c.replicator_with(
        "not-streamed",
        &addr,
        &["--streaming", "off"],
        &[("NO_COLOR", "1")],
    );
    wait_streaming(&addr, &r).await;
    interleaved_large_transactions(&c, &r, &addr, false).await;
    assert_applied_in_commit_order(&c, "streaming off").await;
    assert_eq!(streamed_transactions(&c).await, 0);
    assert!(
        r.log_text().contains("in_progress=false"),
        "{}",
        r.log_text()
    );
    assert!(r.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_transaction_streams_and_while_it_applies_loses_and_duplicates_nothing() {
    let c = Clusters::start_with(SMALL_DECODING_MEMORY);
    c.prepare(50);
    ledger(&c, 100).await;
    let spool = scratch_dir("spool-kill");
    let spool_env = spool.display().to_string();
    let env = [("SPOOL_DIR", spool_env.as_str())];
    let load = Background::start(c.oltp_url(), 11, Some(Duration::from_millis(20)));

    let addr = free_addr();
    let mut r = c.replicator("kill-streamed-1", &addr, &env);
    wait_streaming(&addr, &r).await;
    let mut a = c.oltp_conn().await;
    exec(
        &mut a,
        "begin;
         insert into ledger select g, 1, repeat('k', 40) from generate_series(1001, 31000) g;",
    )
    .await;
    wait_until("A spooled", &r, Duration::from_secs(60), || async {
        spooled(&addr).await.1 > 100_000.0
    })
    .await;
    r.kill9();
    assert_eq!(
        files_in(&spool),
        0,
        "a killed replicator leaves no spool file"
    );

    // More of A while nothing reads the slot: a savepoint rolled back, changes to committed rows.
    exec(
        &mut a,
        "savepoint s;
         insert into ledger select g, 999, 'gone' from generate_series(90001, 95000) g;
         rollback to savepoint s;
         update ledger set v = 5 where id <= 50;
         delete from ledger where id between 51 and 60;",
    )
    .await;
    let addr = free_addr();
    let before = streamed_transactions(&c).await;
    let mut r = c.replicator("kill-streamed-2", &addr, &env);
    wait_streaming(&addr, &r).await;
    // The source streams A again from its start to the new session.
    wait_until("A streamed again", &r, Duration::from_secs(60), || async {
        spooled(&addr).await.1 > 100_000.0
    })
    .await;
    exec(&mut a, "commit").await;
    // Killed while A is applied (or just after): its batch rolls back with the process.
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.kill9();
    assert!(streamed_transactions(&c).await > before);

    load.stop().await;
    let mut last = c.replicator("kill-streamed-3", &free_addr(), &env);
    assert_exactly_once(&c, "kill -9 around a streamed transaction").await;
    let mut olap = c.olap_conn().await;
    let (rows, gone): (i64, i64) = sqlx::query_as(
        "select (select count(*) from replica.ledger),
                (select count(*) from cdc_events where source_table = 'ledger' and (after->>'v')::int = 999)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!((rows, gone), (100 + 30_000 - 10, 0));
    assert_eq!(files_in(&spool), 0);
    assert!(last.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn olap_crashing_while_a_transaction_streams_and_while_it_applies_loses_nothing() {
    let mut c = Clusters::start_with(SMALL_DECODING_MEMORY);
    c.prepare(50);
    ledger(&c, 100).await;
    let addr = free_addr();
    // Asynchronous OLAP commits (the default), so a crash can lose commits the source was
    // never told of.
    let mut r = c.replicator("olap-crash-streamed", &addr, &[("OLAP_COMMIT", "async")]);
    wait_streaming(&addr, &r).await;
    let mut a = c.oltp_conn().await;
    exec(
        &mut a,
        "begin;
         insert into ledger select g, 1, repeat('o', 40) from generate_series(1001, 31000) g;",
    )
    .await;
    wait_until("A spooled", &r, Duration::from_secs(60), || async {
        spooled(&addr).await.1 > 100_000.0
    })
    .await;
    let errors_before = errors(&addr).await;
    tokio::task::block_in_place(|| c.olap.crash_restart()).expect("OLAP crash and restart");
    // The session ends (its spool with it) and a new one starts.
    wait_until("the session ended", &r, Duration::from_secs(60), || async {
        errors(&addr).await > errors_before
    })
    .await;
    // Small transactions while the replicator reconnects, then more of A.
    let mut oltp = c.oltp_conn().await;
    exec(
        &mut oltp,
        "insert into ledger select g, 7, 'small' from generate_series(40001, 40010) g;",
    )
    .await;
    exec(
        &mut a,
        "savepoint s;
         delete from ledger where id <= 50;
         rollback to savepoint s;
         update ledger set v = 9 where id between 1001 and 1100;",
    )
    .await;
    wait_until("A streamed again", &r, Duration::from_secs(90), || async {
        spooled(&addr).await.1 > 100_000.0
    })
    .await;
    exec(&mut a, "commit").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::task::block_in_place(|| c.olap.crash_restart()).expect("OLAP crash and restart");
    assert_exactly_once(&c, "OLAP crashes around a streamed transaction").await;
    r.assert_running();
    let mut olap = c.olap_conn().await;
    let (rows, nines): (i64, i64) = sqlx::query_as(
        "select (select count(*) from replica.ledger),
                (select count(*) from replica.ledger where v = 9)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!((rows, nines), (100 + 30_000 + 10, 100));
    wait_until(
        "no transaction left open",
        &r,
        Duration::from_secs(30),
        || async { spooled(&addr).await == (0.0, 0.0) },
    )
    .await;
    assert!(r.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_directory_that_cannot_be_written_is_refused_at_the_start() {
    let c = Clusters::start();
    c.prepare(0);
    let not_a_dir = scratch_dir("spool-refused").join("a-file");
    std::fs::write(&not_a_dir, b"not a directory").unwrap();
    let out = c
        .command(&["replicate"])
        .env("REPLICATOR_LISTEN", "127.0.0.1:0")
        .env("SPOOL_DIR", &not_a_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "replicate went on: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("spool directory") && last.contains("--spool-dir"),
        "{last}"
    );
    // Nothing was started on the source: no slot, so no WAL is held for a replicator that
    // cannot run.
    let mut oltp = c.oltp_conn().await;
    let slots: i64 = sqlx::query_scalar("select count(*) from pg_replication_slots")
        .fetch_one(&mut oltp)
        .await
        .unwrap();
    assert_eq!(slots, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_crashing_while_a_transaction_streams_loses_it_there_and_nowhere_else() {
    let mut c = Clusters::start_with(SMALL_DECODING_MEMORY);
    c.prepare(50);
    ledger(&c, 100).await;
    let addr = free_addr();
    let mut r = c.replicator("source-crash-streamed", &addr, &[]);
    wait_streaming(&addr, &r).await;
    let load = Background::start(c.oltp_url(), 17, Some(Duration::from_millis(20)));

    // A is open and streamed when the source crashes: it never commits.
    let mut a = c.oltp_conn().await;
    exec(
        &mut a,
        "begin;
         insert into ledger select g, 1, repeat('c', 40) from generate_series(1001, 31000) g;
         update ledger set v = 1 where id <= 50;",
    )
    .await;
    wait_until("A spooled", &r, Duration::from_secs(60), || async {
        spooled(&addr).await.1 > 100_000.0
    })
    .await;
    let errors_before = errors(&addr).await;
    tokio::task::block_in_place(|| c.oltp.crash_restart()).expect("source crash and restart");
    drop(a);
    wait_until("the session ended", &r, Duration::from_secs(60), || async {
        errors(&addr).await > errors_before
    })
    .await;

    // B is streamed and committed after the recovery; the source crashes again just after.
    let mut b = c.oltp_conn().await;
    exec(
        &mut b,
        "begin;
         insert into ledger select g, 2, repeat('b', 40) from generate_series(40001, 60000) g;
         savepoint s;
         delete from ledger where id <= 100;
         rollback to savepoint s;
         update ledger set v = 3 where id <= 50;
         commit;",
    )
    .await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::task::block_in_place(|| c.oltp.crash_restart()).expect("source crash and restart");
    let mut oltp = c.oltp_conn().await;
    exec(&mut oltp, "insert into ledger values (70001, 4, 'after')").await;
    load.stop().await;

    assert_exactly_once(&c, "source crashes around streamed transactions").await;
    r.assert_running();
    let mut olap = c.olap_conn().await;
    let (rows, threes, lost): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from replica.ledger),
                (select count(*) from replica.ledger where v = 3),
                (select count(*) from cdc_events where source_table = 'ledger'
                   and (after->>'v')::int = 1)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        (rows, threes, lost),
        (100 + 20_000 + 1, 50, 0),
        "B and the row after it arrive once, nothing of A"
    );
    // The source tells of A's end (a streamed transaction its crash aborted) once it logs
    // what is running again.
    wait_until(
        "no transaction left open",
        &r,
        Duration::from_secs(90),
        || async { spooled(&addr).await == (0.0, 0.0) },
    )
    .await;
    assert!(r.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_large_transactions_arrive_at_commit_prepared_and_never_when_rolled_back() {
    let c = Clusters::start_with(&[
        ("logical_decoding_work_mem", "64kB"),
        ("max_prepared_transactions", "4"),
    ]);
    c.prepare(50);
    ledger(&c, 100).await;
    let addr = free_addr();
    let mut r = c.replicator("prepared-streamed-1", &addr, &[]);
    wait_streaming(&addr, &r).await;
    let load = Background::start(c.oltp_url(), 19, Some(Duration::from_millis(20)));

    let mut p = c.oltp_conn().await;
    exec(
        &mut p,
        "begin;
         insert into ledger select g, 1, repeat('p', 40) from generate_series(1001, 21000) g;
         savepoint s;
         update ledger set v = 999 where id <= 100;
         rollback to savepoint s;
         update ledger set v = 5 where id <= 50;
         prepare transaction 'brewlytics-drill-commit';",
    )
    .await;
    exec(
        &mut p,
        "begin;
         insert into ledger select g, 998, repeat('q', 40) from generate_series(30001, 40000) g;
         prepare transaction 'brewlytics-drill-rollback';",
    )
    .await;
    // Both stay open for the replicator (prepared is not committed) ...
    wait_until("both spooled", &r, Duration::from_secs(60), || async {
        spooled(&addr).await.0 >= 2.0
    })
    .await;
    // ... and for the next one, after a restart. The source sends them again, in blocks or
    // (when it decoded their start before this session's start position) whole at their end.
    assert!(r.terminate(Duration::from_secs(30)).success());
    let addr = free_addr();
    let mut r = c.replicator("prepared-streamed-2", &addr, &[]);
    wait_streaming(&addr, &r).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    exec(&mut p, "rollback prepared 'brewlytics-drill-rollback'").await;
    exec(&mut p, "commit prepared 'brewlytics-drill-commit'").await;
    load.stop().await;

    assert_exactly_once(&c, "prepared streamed transactions").await;
    let mut olap = c.olap_conn().await;
    let (rows, fives, gone): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from replica.ledger),
                (select count(*) from replica.ledger where v = 5),
                (select count(*) from cdc_events where source_table = 'ledger'
                   and (after->>'v')::int in (998, 999))",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        (rows, fives, gone),
        (100 + 20_000, 50, 0),
        "the committed one arrives once, the rolled back one and its savepoint never"
    );
    wait_until(
        "no transaction left open",
        &r,
        Duration::from_secs(30),
        || async { spooled(&addr).await == (0.0, 0.0) },
    )
    .await;
    assert!(r.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_falls_back_to_receiving_at_the_commit_instead_of_failing_again() {
    let Some(disk) = SmallDisk::mount("spool-full", 512 << 10) else {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    };
    let c = Clusters::start_with(SMALL_DECODING_MEMORY);
    c.prepare(50);
    ledger(&c, 100).await;
    let spool = disk.dir.display().to_string();
    let addr = free_addr();
    let mut r = c.replicator("spool-full", &addr, &[("SPOOL_DIR", spool.as_str())]);
    wait_streaming(&addr, &r).await;
    let text = http_get(&addr, "/metrics").await.unwrap().1;
    assert_eq!(metric(&text, "brewlytics_streaming_in_progress"), Some(1.0));
    assert_eq!(receiving_in_progress(&addr).await, Some(true));
    let load = Background::start(c.oltp_url(), 23, Some(Duration::from_millis(20)));

    // About 3 MB as pgoutput sends it: more than the spool's disk holds.
    let mut a = c.oltp_conn().await;
    exec(
        &mut a,
        "begin;
         insert into ledger select g, 1, repeat('f', 40) from generate_series(1001, 41000) g;",
    )
    .await;
    // The spool fills up, the session ends, and the next one leaves the transaction at the
    // source until its commit.
    wait_until(
        "streaming turned off",
        &r,
        Duration::from_secs(60),
        || async {
            let text = http_get(&addr, "/metrics")
                .await
                .map(|(_, b)| b)
                .unwrap_or_default();
            metric_total(&text, "brewlytics_replicator_errors_total{kind=\"spool\"}") >= 1.0
                && metric(&text, "brewlytics_streaming_in_progress") == Some(0.0)
                && text.contains("brewlytics_replicator_role 3")
        },
    )
    .await;
    exec(
        &mut a,
        "update ledger set v = 2 where id <= 50;
         commit;",
    )
    .await;
    load.stop().await;
    assert_exactly_once(&c, "a full spool disk").await;
    let mut olap = c.olap_conn().await;
    let (rows, twos): (i64, i64) = sqlx::query_as(
        "select (select count(*) from replica.ledger),
                (select count(*) from replica.ledger where v = 2)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!((rows, twos), (100 + 40_000, 50));
    let text = http_get(&addr, "/metrics").await.unwrap().1;
    assert_eq!(
        metric_total(&text, "brewlytics_replicator_errors_total{kind=\"spool\"}"),
        1.0,
        "the full disk failed one session, not every one after it"
    );
    assert!(r.log_text().contains("the spool could not be written"));
    assert_eq!(receiving_in_progress(&addr).await, Some(false));
    assert_eq!(files_in(&disk.dir), 0);
    assert!(r.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transactions_truncating_and_writing_keyless_tables_arrive_whole() {
    let c = Clusters::start_with(SMALL_DECODING_MEMORY);
    c.prepare(50);
    ledger(&c, 1000).await;
    let mut oltp = c.oltp_conn().await;
    // A keyless table whose deletes the source can publish (the whole row is its identity).
    exec(
        &mut oltp,
        "create table notes (body text, n int);
         alter table notes replica identity full;
         alter publication brewlytics add table notes;
         insert into notes select 'old', g % 50 from generate_series(1, 2000) g;",
    )
    .await;
    let spool = scratch_dir("spool-truncate");
    let spool_env = spool.display().to_string();
    let addr = free_addr();
    let mut r = c.replicator("streamed-truncate", &addr, &[("SPOOL_DIR", &spool_env)]);
    wait_streaming(&addr, &r).await;
    let load = Background::start(c.oltp_url(), 13, Some(Duration::from_millis(20)));
    let before = streamed_transactions(&c).await;

    // A: a TRUNCATE rolled back with its savepoint, one kept (of a table the star reads),
    // duplicate keyless rows deleted by value, all streamed before the commit.
    let mut a = c.oltp_conn().await;
    exec(
        &mut a,
        "begin;
         insert into ledger select g, 1, repeat('t', 40) from generate_series(1001, 16000) g;
         insert into notes select 'dup', 7 from generate_series(1, 3000);
         savepoint s;
         truncate ledger;
         insert into ledger values (1, 999, 'gone');
         rollback to savepoint s;
         delete from notes where body = 'old' and n < 10;
         update notes set n = -1 where body = 'old' and n = 42;
         truncate inventory_movements;
         insert into inventory_movements (store_id, product_id, delta, reason)
         select 1 + g % (select count(*) from stores), 1 + g % (select count(*) from products),
                2, 'restock'
         from generate_series(1, 4000) g;",
    )
    .await;
    wait_until(
        "A streamed before it commits",
        &r,
        Duration::from_secs(60),
        || async { spooled(&addr).await.0 >= 1.0 },
    )
    .await;
    exec(&mut a, "update ledger set v = 2 where id <= 100; commit;").await;

    // B: the keyless table emptied and refilled, the ledger truncated and refilled.
    exec(
        &mut a,
        "begin;
         truncate notes;
         insert into notes select 'new', g from generate_series(1, 6000) g;
         delete from notes where n between 1 and 100;
         truncate ledger;
         insert into ledger select g, 3, repeat('b', 40) from generate_series(20001, 32000) g;
         commit;",
    )
    .await;
    load.stop().await;
    assert_exactly_once(&c, "streamed truncates and keyless rows").await;
    assert!(streamed_transactions(&c).await - before >= 2);
    let mut olap = c.olap_conn().await;
    let (ledger_rows, gone, notes, movements): (i64, i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from replica.ledger),
                (select count(*) from cdc_events where source_table = 'ledger'
                   and (after->>'v')::int = 999),
                (select count(*) from replica.notes),
                (select count(*) from replica.inventory_movements where reason = 'restock'
                   and delta = 2)",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!((ledger_rows, gone, notes), (12_000, 0, 5_900));
    assert!(movements >= 4_000, "{movements}");
    assert_eq!(spooled(&addr).await, (0.0, 0.0), "transactions left open");
    assert_eq!(files_in(&spool), 0);
    assert!(r.terminate(Duration::from_secs(30)).success());
}
