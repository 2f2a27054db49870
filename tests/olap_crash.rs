//! Asynchronous OLAP commits (`--olap-commit async`, the default) against a crash of the OLAP
//! server alone: `pg_ctl stop -m immediate` while orders flow, three times. OLAP's WAL writer
//! is slowed down (`wal_writer_delay = 10s`) so that each crash loses commits the replicator
//! already made: they must not have been confirmed to the source, and the stream sends them
//! again. Ends with the checks of every drill (OLAP equals OLTP, no change journaled twice,
//! the star equal to a rebuild from the journal).

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brewlytics_replicator::lsn::Lsn;
use harness::{assert_exactly_once, free_addr, wait_streaming, workload, Clusters, LoadCounts};

/// The LSN `sql` reads (one row, one text column).
async fn lsn(mut conn: sqlx::PgConnection, sql: &str) -> Lsn {
    let text: String = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    text.parse().unwrap()
}

/// OLAP's checkpoint of the default slot (visible, not necessarily flushed).
async fn checkpoint(c: &Clusters) -> Lsn {
    let sql = "select lsn::text from replication_checkpoint where slot_name = 'brewlytics'";
    lsn(c.olap_conn().await, sql).await
}

/// What the source was told is flushed.
async fn confirmed(c: &Clusters) -> Lsn {
    let sql =
        "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = 'brewlytics'";
    lsn(c.oltp_conn().await, sql).await
}

/// `text` without its terminal colours.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            // An escape sequence runs to its final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The positions the replicator's sessions started streaming from, in its log.
fn streamed_from(log: &str) -> Vec<Lsn> {
    plain(log)
        .lines()
        .filter(|l| l.contains("streaming") && l.contains(" from="))
        .filter_map(|l| {
            l.split(" from=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn olap_crashes_with_asynchronous_commits_lose_and_duplicate_nothing() {
    let mut c = Clusters::start_configured(
        &[],
        &[
            // Commits stay in OLAP's WAL buffers for seconds (no background writer flushing
            // them either): an immediate stop loses them.
            ("wal_writer_delay", "10s"),
            ("wal_writer_flush_after", "1GB"),
            ("bgwriter_lru_maxpages", "0"),
        ],
    );
    c.prepare(100);
    let addr = free_addr();
    let mut r = c.replicator("olap-crash", &addr, &[("OLAP_COMMIT", "async")]);
    wait_streaming(&addr, &r).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = tokio::spawn(workload(c.oltp_url(), stop.clone(), counts.clone(), 7));

    let mut lost = 0;
    for (round, pause_ms) in [1500u64, 2300, 1800].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let sessions = streamed_from(&r.log_text()).len();
        let told = confirmed(&c).await;
        let visible = checkpoint(&c).await;
        tokio::task::block_in_place(|| c.olap.crash_restart()).expect("OLAP crash and restart");
        // The replicator reconnects and streams again from OLAP's checkpoint as recovered.
        let deadline = Instant::now() + Duration::from_secs(60);
        let from = loop {
            if let Some(&from) = streamed_from(&r.log_text()).get(sessions) {
                break from;
            }
            assert!(r.is_running(), "the replicator exited: {}", r.log_text());
            assert!(
                Instant::now() < deadline,
                "no new session after the crash: {}",
                r.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!("crash {round}: source told {told}, OLAP showed {visible}, recovered to {from}");
        // Never was the source told of a commit the crash could take away.
        assert!(
            told <= from,
            "crash {round}: the slot was confirmed to {told} but OLAP recovered to {from}"
        );
        if from < visible {
            lost += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    println!(
        "{lost} of 3 crashes lost committed batches; workload: {} orders",
        counts.orders.load(Ordering::Relaxed)
    );
    assert!(
        lost > 0,
        "no crash lost an asynchronous commit: the drill proved nothing"
    );
    assert_exactly_once(&c, "OLAP crash with asynchronous commits").await;
    assert!(r.terminate(Duration::from_secs(30)).success());
}
