//! Errors, against the built binary on two PostgreSQL servers: a change OLAP refuses is
//! dead-lettered (never reaching the star) or, with `--on-error stop`, stops the replicator
//! with its position and table; no row value appears in any output; a source that cannot
//! replicate is refused at once with the fix; a long apply (a 300k-change transaction, a
//! TRUNCATE's full star refresh) under `wal_sender_timeout = 2s` neither ends the connection
//! nor repeats work.

mod harness;

use std::time::{Duration, Instant};

use harness::{free_addr, http_get, wait_streaming, Clusters};

/// A value that must never be printed: it is in rows OLAP refuses.
const MARKER: &str = "MARKER-5f1c9e07";

async fn exec(c: &mut sqlx::PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(c)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

async fn dead_letters(c: &Clusters) -> i64 {
    let mut olap = c.olap_conn().await;
    sqlx::query_scalar("select count(*) from cdc_dead_letters")
        .fetch_one(&mut olap)
        .await
        .unwrap()
}

async fn wait_dead_letters(c: &Clusters, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while dead_letters(c).await < n {
        assert!(Instant::now() < deadline, "no dead letter arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_are_dead_lettered_or_stop_and_their_values_are_never_printed() {
    let c = Clusters::start();
    c.prepare(10);
    let addr = free_addr();
    let mut r = c.replicator("errors", &addr, &[]);
    wait_streaming(&addr, &r).await;
    let mut olap = c.olap_conn().await;
    let mut oltp = c.oltp_conn().await;
    // Constraints OLAP has and the source does not.
    exec(
        &mut olap,
        "alter table replica.customers add constraint no_marker check (name not like 'MARKER%');
         alter table replica.products add constraint cheap check (price < 1000)",
    )
    .await;
    exec(
        &mut oltp,
        &format!(
            "insert into customers (name, email) values ('{MARKER}', 'm@example.com');
             insert into customers (name, email) values ('Fine', 'fine@example.com');
             update products set price = 5000 where id = 1;"
        ),
    )
    .await;
    wait_dead_letters(&c, 2).await;
    // The stream went on: the good row arrived.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 =
            sqlx::query_scalar("select count(*) from replica.customers where name = 'Fine'")
                .fetch_one(&mut olap)
                .await
                .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream stopped at a dead letter"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The full error stays in OLAP.
    let errors: Vec<String> = sqlx::query_scalar("select error from cdc_dead_letters")
        .fetch_all(&mut olap)
        .await
        .unwrap();
    assert!(errors.iter().any(|e| e.contains(MARKER)), "{errors:?}");
    // A dead-lettered product change does not reach the star.
    let max_price: String =
        sqlx::query_scalar("select max(price)::text from dim_product where product_id = 1")
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert!(
        !max_price.starts_with("5000"),
        "the refused price reached dim_product: {max_price}"
    );

    // No value of the refused rows in any output.
    let status = http_get(&addr, "/status").await.unwrap().1;
    let metrics = http_get(&addr, "/metrics").await.unwrap().1;
    let page = http_get(&addr, "/").await.unwrap().1;
    let cli = c.run(&["status", "--json"]);
    for (what, text) in [
        ("log", r.log_text()),
        ("/status", status),
        ("/metrics", metrics),
        ("/", page),
        ("status --json", cli),
    ] {
        assert!(!text.contains(MARKER), "{what} shows a row value:\n{text}");
    }
    let log = r.log_text();
    assert!(
        log.contains("cdc_dead_letters") && log.contains("public.customers"),
        "{log}"
    );
    r.terminate(Duration::from_secs(30));

    // --on-error stop: the replicator stops, naming the change's position and table.
    let mut r = c.replicator_with("stop", &free_addr(), &["--on-error", "stop"], &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    exec(
        &mut oltp,
        &format!("insert into customers (name, email) values ('{MARKER}-2', 'n@example.com')"),
    )
    .await;
    let status = tokio::task::block_in_place(|| r.wait_exit(Duration::from_secs(60)))
        .expect("the replicator stops on a refused change");
    assert!(!status.success());
    let log = r.log_text();
    assert!(
        log.contains("--on-error stop") && log.contains("public.customers"),
        "{log}"
    );
    assert!(!log.contains(MARKER), "the stop shows a row value:\n{log}");
    // Nothing of the refused transaction was committed: restarting with dead letters goes on.
    let mut r = c.replicator("after-stop", &free_addr(), &[]);
    wait_dead_letters(&c, 3).await;
    r.terminate(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_replicate_is_refused_with_the_fix() {
    let mut c = Clusters::start_with(&[("wal_level", "replica")]);
    let out = c.command(&["migrate"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("wal_level") && err.contains("ALTER SYSTEM SET wal_level = logical"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    c.run(&["migrate", "--no-source-check"]);

    let mut r = c.replicator("no-logical", &free_addr(), &[]);
    let status = tokio::task::block_in_place(|| r.wait_exit(Duration::from_secs(30)))
        .expect("replicate stops at once instead of retrying");
    assert!(!status.success());
    let log = r.log_text();
    assert!(
        log.contains("ALTER SYSTEM SET wal_level = logical"),
        "{log}"
    );
    assert!(!log.contains("reconnecting"), "{log}");

    // The fix it names works.
    let mut oltp = c.oltp_conn().await;
    exec(&mut oltp, "alter system set wal_level = logical").await;
    drop(oltp);
    tokio::task::block_in_place(|| c.oltp.restart()).unwrap();
    let mut oltp = c.oltp_conn().await;
    exec(&mut oltp, "drop publication brewlytics").await;
    let mut r = c.replicator("no-publication", &free_addr(), &[]);
    let status = tokio::task::block_in_place(|| r.wait_exit(Duration::from_secs(30)))
        .expect("replicate stops without its publication");
    assert!(!status.success());
    assert!(
        r.log_text()
            .contains("publication \"brewlytics\" does not exist"),
        "{}",
        r.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_applies_keep_the_connection_and_are_applied_once() {
    // The apply of the transaction below takes far longer than the timeout; 5 s rather than
    // less leaves room for a machine so loaded that the keepalive task waits for a core.
    let c = Clusters::start_with(&[("wal_sender_timeout", "5s")]);
    c.prepare(5);
    let addr = free_addr();
    let r = c.replicator("long", &addr, &[]);
    wait_streaming(&addr, &r).await;
    let mut oltp = c.oltp_conn().await;
    // One transaction of 300k changes: 150k inserts, then an update of each.
    exec(
        &mut oltp,
        "begin;
         insert into inventory_movements (store_id, product_id, delta, reason)
           select 1, 1, 1, 'restock' from generate_series(1, 150000);
         update inventory_movements set delta = 2 where delta = 1 and reason = 'restock';
         commit;",
    )
    .await;
    let report = c.converged(Duration::from_secs(600)).await;
    assert!(report.all_equal(), "{report:#?}");
    // A TRUNCATE of the large table: the star is refreshed in full, in the same transaction.
    exec(&mut oltp, "truncate inventory_movements").await;
    let report = c.converged(Duration::from_secs(300)).await;
    assert!(report.all_equal(), "{report:#?}");

    let mut olap = c.olap_conn().await;
    // A full refresh by a role that cannot skip the facts' foreign keys (no SET privilege on
    // `session_replication_role`) loads the facts with those keys set aside: all twelve are
    // back afterwards, checked when added, and the star is as before.
    exec(&mut olap, "begin; select star_refresh_all(); commit;").await;
    let fks: Vec<String> = sqlx::query_scalar(
        "select format('%s -> %s', conrelid::regclass, confrelid::regclass) from pg_constraint
         where contype = 'f' and convalidated
           and conrelid in ('fact_sales'::regclass, 'fact_payments'::regclass,
                            'fact_inventory'::regclass)
         order by 1",
    )
    .fetch_all(&mut olap)
    .await
    .unwrap();
    assert_eq!(fks.len(), 12, "the facts' foreign keys: {fks:?}");
    let report = c.converged(Duration::from_secs(60)).await;
    assert!(report.all_equal(), "{report:#?}");
    let (updates, positions): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where op = 'u'), count(*) - count(distinct (lsn, seq))
         from cdc_events where source_table = 'inventory_movements'",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!((updates, positions), (150_000, 0), "applied once");
    let log = r.log_text();
    assert!(
        !log.contains("reconnecting"),
        "the stream was interrupted:\n{log}"
    );
    let source = c.oltp_server_log();
    assert!(
        !source.contains("replication timeout"),
        "the source ended the walsender:\n{source}"
    );
}
