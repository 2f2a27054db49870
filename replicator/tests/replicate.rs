//! The replicator against real PostgreSQL: every operation of every published table reaches
//! OLAP; SCD2 versions; unchanged TOAST; ADD COLUMN mid-stream; replay; a restart of the
//! source server mid-stream. OLTP and OLAP are two databases of the test binary's cluster.

use std::time::{Duration, Instant};

use brewlytics_replicator::batch::BatchLimits;
use brewlytics_replicator::config::ReplicatorConfig;
use brewlytics_replicator::error::ReplicatorError;
use brewlytics_replicator::pipeline;
use brewlytics_replicator::verify;
use brewlytics_support::testing::TestDb;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

struct Pair {
    oltp: TestDb,
    olap: TestDb,
    slot: String,
}

impl Pair {
    async fn new(name: &str) -> Self {
        brewlytics_support::telemetry::init(brewlytics_support::telemetry::LogFormat::Text);
        let oltp = TestDb::new(&format!("{name}_oltp"));
        let olap = TestDb::new(&format!("{name}_olap"));
        let pool = sqlx::PgPool::connect_with(oltp.url().connect_options().unwrap())
            .await
            .unwrap();
        brewlytics_support::migrate::oltp(&pool).await.unwrap();
        let pool = sqlx::PgPool::connect_with(olap.url().connect_options().unwrap())
            .await
            .unwrap();
        brewlytics_support::migrate::olap(&pool).await.unwrap();
        let slot = format!("s_{}", oltp.name().trim_start_matches("t_"))
            .chars()
            .take(60)
            .collect();
        Self { oltp, olap, slot }
    }

    fn config(&self) -> ReplicatorConfig {
        ReplicatorConfig {
            slot: self.slot.clone(),
            limits: BatchLimits {
                max_changes: 500,
                max_bytes: 4 << 20,
                max_delay: Duration::from_millis(10),
            },
            status_interval: Duration::from_secs(1),
            backfill_chunk_rows: 1000,
            ..ReplicatorConfig::new(self.oltp.url(), self.olap.url())
        }
    }

    async fn oltp(&self) -> PgConnection {
        PgConnection::connect_with(&self.oltp.url().connect_options().unwrap())
            .await
            .unwrap()
    }

    async fn olap(&self) -> PgConnection {
        PgConnection::connect_with(&self.olap.url().connect_options().unwrap())
            .await
            .unwrap()
    }

    /// Waits (≤ 30 s) until OLAP matches OLTP; returns the last report.
    async fn converged(&self) -> verify::Report {
        let start = Instant::now();
        let mut oltp = self.oltp().await;
        let mut olap = self.olap().await;
        loop {
            // The replica may briefly lack a column just added on the source.
            if let Ok(report) = verify::compare(&mut oltp, &mut olap, "brewlytics").await {
                if report.all_equal() || start.elapsed() > Duration::from_secs(30) {
                    return report;
                }
            } else if start.elapsed() > Duration::from_secs(30) {
                panic!("OLAP could not be compared with OLTP for 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn drop_slot(&self) {
        let mut c = self.oltp().await;
        for _ in 0..50 {
            let r = sqlx::query("select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1 and not active")
                .bind(&self.slot)
                .execute(&mut c)
                .await;
            let left: i64 = sqlx::query_scalar(
                "select count(*) from pg_replication_slots where slot_name = $1",
            )
            .bind(&self.slot)
            .fetch_one(&mut c)
            .await
            .unwrap();
            if r.is_ok() && left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ReplicatorError>>,
}

fn start(cfg: ReplicatorConfig) -> Running {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(pipeline::run(cfg, rx));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let r = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("replicator stops within 20 s")
            .unwrap();
        r.expect("replicator exits cleanly");
    }
}

const MASTER: &str = "
insert into stores (id, name, city) values (1, 'Harbour', 'Bristol'), (2, 'Station', 'Leeds');
insert into employees (id, name, store_id) values (1, 'Ana', 1), (2, 'Ben', 2);
insert into customers (id, name, email) values (1, 'Ada', 'ada@example.com'), (2, 'Bo', 'bo@example.com');
insert into products (id, name, category, price) values
  (1, 'Flat white', 'coffee', 3.80), (2, 'Croissant', 'pastries', 2.50);
";

fn order_sql(id: &str, customer: &str, status: &str) -> String {
    format!(
        "insert into orders (id, customer_id, employee_id, store_id, status, payment_method, total)
           values ('{id}', {customer}, 1, 1, '{status}', 'card', 10.10);
         insert into order_items (order_id, product_id, quantity, unit_price) values
           ('{id}', 1, 2, 3.80), ('{id}', 2, 1, 2.50);
         insert into payments (order_id, amount, method) values ('{id}', 10.10, 'card');
         insert into inventory_movements (store_id, product_id, order_id, delta, reason) values
           (1, 1, '{id}', -2, 'sale'), (1, 2, '{id}', -1, 'sale');"
    )
}

#[tokio::test]
async fn every_operation_of_every_table_reaches_olap() {
    let pair = Pair::new("ops").await;
    let mut oltp = pair.oltp().await;
    // Rows present before the first start arrive through the initial copy.
    sqlx::raw_sql(MASTER).execute(&mut oltp).await.unwrap();
    sqlx::raw_sql(&order_sql(
        "00000000-0000-7000-8000-000000000001",
        "1",
        "completed",
    ))
    .execute(&mut oltp)
    .await
    .unwrap();
    let run = start(pair.config());
    let r = pair.converged().await;
    assert!(r.all_equal(), "after initial copy: {r:?}");

    // Inserts, updates and deletes of every table while streaming.
    sqlx::raw_sql(&format!(
        "{}
         insert into stores (id, name) values (3, 'Market');
         update stores set city = 'Bath' where id = 2;
         insert into employees (id, name, store_id) values (3, 'Cy', 3);
         update employees set active = false where id = 2;
         insert into customers (id, name, email) values (3, 'Cleo', 'cleo@example.com');
         update customers set name = 'Ada L.' where id = 1;
         update orders set status = 'preparing' where id = '00000000-0000-7000-8000-000000000002';
         update order_items set quantity = 3 where order_id = '00000000-0000-7000-8000-000000000002' and product_id = 2;
         delete from payments where order_id = '00000000-0000-7000-8000-000000000001';
         delete from inventory_movements where order_id = '00000000-0000-7000-8000-000000000001' and product_id = 2;
         delete from customers where id = 2;",
        order_sql("00000000-0000-7000-8000-000000000002", "null", "placed")
    ))
    .execute(&mut oltp)
    .await
    .unwrap();
    let r = pair.converged().await;
    assert!(r.all_equal(), "after changes: {r:?}");

    // Updates that change a row's key: a customer (default identity) and an order line
    // (REPLICA IDENTITY FULL) move to new ids; the replica follows, nothing stays behind.
    sqlx::raw_sql(
        "update customers set id = 33 where id = 3;
         update order_items set id = id + 1000
         where order_id = '00000000-0000-7000-8000-000000000002' and product_id = 1;",
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    let r = pair.converged().await;
    assert!(r.all_equal(), "after key changes: {r:?}");

    let mut olap = pair.olap().await;
    let walkins: i64 = sqlx::query_scalar("select count(*) from fact_sales where customer_key = 0")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert_eq!(
        walkins, 2,
        "the walk-in order's lines point at the walk-in member"
    );
    let deleted: bool =
        sqlx::query_scalar("select is_deleted from dim_customer where customer_id = 2")
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert!(
        deleted,
        "a deleted customer stays in the dimension, marked deleted"
    );

    // A whole order deleted (lines, payment and movements cascade), then TRUNCATE.
    sqlx::raw_sql("delete from orders where id = '00000000-0000-7000-8000-000000000001'")
        .execute(&mut oltp)
        .await
        .unwrap();
    let r = pair.converged().await;
    assert!(r.all_equal(), "after delete: {r:?}");
    sqlx::raw_sql("truncate orders, order_items, payments, inventory_movements")
        .execute(&mut oltp)
        .await
        .unwrap();
    let r = pair.converged().await;
    assert!(r.all_equal(), "after truncate: {r:?}");
    let facts: i64 = sqlx::query_scalar("select (select count(*) from fact_sales) + (select count(*) from fact_payments) + (select count(*) from fact_inventory)")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert_eq!(facts, 0);

    // The journal has every change once; the view keeps the seed's name.
    let dup: i64 =
        sqlx::query_scalar("select count(*) - count(distinct (lsn, seq)) from cdc_events")
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert_eq!(dup, 0);
    let order_events: i64 =
        sqlx::query_scalar("select count(*) from cdc_orders where event_type = 'TRUNCATE'")
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert_eq!(
        order_events, 2,
        "orders and order_items truncates are in cdc_orders"
    );

    run.stop().await;
    pair.drop_slot().await;
}

#[tokio::test]
async fn price_change_opens_a_version_and_old_facts_keep_theirs() {
    let pair = Pair::new("scd2").await;
    let mut oltp = pair.oltp().await;
    sqlx::raw_sql(MASTER).execute(&mut oltp).await.unwrap();
    let run = start(pair.config());
    sqlx::raw_sql(&order_sql(
        "00000000-0000-7000-8000-00000000000a",
        "1",
        "completed",
    ))
    .execute(&mut oltp)
    .await
    .unwrap();
    assert!(pair.converged().await.all_equal());
    sqlx::raw_sql("update products set price = 4.10 where id = 1")
        .execute(&mut oltp)
        .await
        .unwrap();
    sqlx::raw_sql(
        &order_sql("00000000-0000-7000-8000-00000000000b", "2", "placed").replace("3.80", "4.10"),
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    assert!(pair.converged().await.all_equal());

    let mut olap = pair.olap().await;
    let versions: Vec<(String, i32, bool)> = sqlx::query_as(
        "select price::text, version, is_current from dim_product where product_id = 1 order by version",
    )
    .fetch_all(&mut olap)
    .await
    .unwrap();
    assert_eq!(
        versions,
        vec![
            ("3.80".to_string(), 1, false),
            ("4.10".to_string(), 2, true)
        ]
    );
    let keys: Vec<(String, i32)> = sqlx::query_as(
        "select f.order_id::text, p.version from fact_sales f join dim_product p using (product_key)
         where p.product_id = 1 order by f.ordered_at",
    )
    .fetch_all(&mut olap)
    .await
    .unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].1, 1, "the order before the change keeps version 1");
    assert_eq!(keys[1].1, 2, "the order after the change gets version 2");

    // Replaying the journal from the start rebuilds the same versions and facts.
    drop(olap);
    run.stop().await;
    let pool = sqlx::PgPool::connect_with(pair.olap.url().connect_options().unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        let stats = brewlytics_replicator::replay::replay(&pair.olap.url(), "0/0".parse().unwrap())
            .await
            .unwrap();
        assert!(stats.rebuilt && stats.events > 0);
        let r = pair.converged().await;
        assert!(r.all_equal(), "after replay: {r:?}");
        let n: i64 = sqlx::query_scalar("select count(*) from dim_product where product_id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 2);
    }
    pair.drop_slot().await;
}

/// The facts, value for value (dimensions by their source ids: a rebuild numbers them anew),
/// for comparing a replay with the stream.
async fn facts(olap: &mut PgConnection) -> (String, String) {
    sqlx::query_as(
        "select (select coalesce(string_agg(concat_ws('|', f.order_item_id, f.order_id,
                     c.customer_id, p.product_id, p.version, f.quantity, f.revenue, f.status),
                     ',' order by f.order_item_id), '')
                 from fact_sales f join dim_customer c using (customer_key)
                 join dim_product p using (product_key)),
                (select coalesce(string_agg(concat_ws('|', p.payment_id, p.order_id, p.amount,
                     p.order_status), ',' order by p.payment_id), '') from fact_payments p)",
    )
    .fetch_one(olap)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_transaction_replayed_in_parts_builds_the_star_the_stream_built() {
    // One source transaction writes order lines before their orders (the source has no
    // foreign key to stop it; an initial copy journals tables in any order too). Replay reads
    // the journal a few changes at a time, so the transaction arrives in parts, the lines
    // before their orders: the star must still hold every line.
    let pair = Pair::new("replay_parts").await;
    let mut oltp = pair.oltp().await;
    sqlx::raw_sql(MASTER).execute(&mut oltp).await.unwrap();
    sqlx::raw_sql(
        "alter table order_items drop constraint order_items_order_id_fkey;
         alter table payments drop constraint payments_order_id_fkey",
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    let run = start(pair.config());
    let mut tx = String::from("begin;");
    for i in 0..4 {
        let id = format!("00000000-0000-7000-8000-0000000001{i:02}");
        tx += &format!(
            "insert into order_items (order_id, product_id, quantity, unit_price) values
               ('{id}', 1, {q}, 3.80), ('{id}', 2, 1, 2.50);
             insert into payments (order_id, amount, method) values ('{id}', 10.10, 'card');",
            q = i + 1
        );
    }
    for i in 0..4 {
        let id = format!("00000000-0000-7000-8000-0000000001{i:02}");
        tx += &format!(
            "insert into orders (id, customer_id, employee_id, store_id, status, payment_method,
                                 total) values ('{id}', 1, 1, 1, 'completed', 'card', 10.10);"
        );
    }
    tx += "commit;";
    sqlx::raw_sql(&tx).execute(&mut oltp).await.unwrap();
    assert!(pair.converged().await.all_equal());
    run.stop().await;

    let mut olap = pair.olap().await;
    let streamed = facts(&mut olap).await;
    assert_eq!(
        streamed.0.split(',').count(),
        8,
        "the stream built a fact for every line: {streamed:?}"
    );
    for piece in [1, 3, 5, 20_000] {
        let stats = brewlytics_replicator::replay::replay_in_pieces(
            &pair.olap.url(),
            "0/0".parse().unwrap(),
            piece,
        )
        .await
        .unwrap();
        assert!(stats.rebuilt);
        assert_eq!(
            facts(&mut olap).await,
            streamed,
            "replayed {piece} changes at a time"
        );
    }
    pair.drop_slot().await;
}

#[tokio::test]
async fn unchanged_toast_survives_and_added_column_does_not_stop_the_stream() {
    let pair = Pair::new("toast").await;
    let mut oltp = pair.oltp().await;
    sqlx::raw_sql(MASTER).execute(&mut oltp).await.unwrap();
    let run = start(pair.config());
    // ~100 kB of incompressible text is stored out of line (TOAST).
    sqlx::raw_sql(
        "update products set description = (select string_agg(md5(g::text), '') from generate_series(1, 3000) g) where id = 2",
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    assert!(pair.converged().await.all_equal());
    // An update that leaves the description alone: pgoutput sends it as 'unchanged TOAST'.
    sqlx::raw_sql("update products set price = 2.60 where id = 2; update products set is_available = false where id = 2")
        .execute(&mut oltp)
        .await
        .unwrap();
    let r = pair.converged().await;
    assert!(r.all_equal(), "{r:?}");
    let mut olap = pair.olap().await;
    let len: i32 =
        sqlx::query_scalar("select length(description) from replica.products where id = 2")
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert_eq!(len, 96_000);

    // ADD COLUMN on the source mid-stream: the replica grows the column, nothing stops.
    sqlx::raw_sql("alter table customers add column loyalty_tier text; insert into customers (id, name, email, loyalty_tier) values (9, 'Gus', 'gus@example.com', 'gold')")
        .execute(&mut oltp)
        .await
        .unwrap();
    let r = pair.converged().await;
    assert!(r.all_equal(), "{r:?}");
    let tier: Option<String> =
        sqlx::query_scalar("select loyalty_tier from replica.customers where id = 9")
            .fetch_one(&mut olap)
            .await
            .unwrap();
    assert_eq!(tier.as_deref(), Some("gold"));
    assert!(!run.task.is_finished());
    run.stop().await;
    pair.drop_slot().await;
}

#[tokio::test]
async fn a_change_olap_rejects_goes_to_dead_letters_and_the_stream_goes_on() {
    let pair = Pair::new("dead").await;
    let mut oltp = pair.oltp().await;
    sqlx::raw_sql(MASTER).execute(&mut oltp).await.unwrap();
    // An OLAP-side rule the source does not have: names of at most 20 characters.
    let mut olap = pair.olap().await;
    sqlx::raw_sql(
        "alter table replica.customers add constraint short_name check (length(name) <= 20)",
    )
    .execute(&mut olap)
    .await
    .unwrap();
    // One refused row is already there: the initial copy falls back to copying the table
    // through the journal, so only that row is dead-lettered.
    sqlx::raw_sql(
        "insert into customers (id, name, email) values (9, 'Copied but far too long', 'c@example.com')",
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    let run = start(pair.config());
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>("select count(*) from cdc_dead_letters")
        .fetch_one(&mut olap)
        .await
        .unwrap()
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the copied row was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::raw_sql(
        "insert into customers (id, name, email) values
           (10, 'A name much longer than twenty', 'long@example.com'),
           (11, 'Short', 'short@example.com');",
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    sqlx::raw_sql(&order_sql(
        "00000000-0000-7000-8000-0000000000d1",
        "11",
        "placed",
    ))
    .execute(&mut oltp)
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let (dead, facts) = loop {
        let dead: Vec<(String, String)> =
            sqlx::query_as("select source_table, error from cdc_dead_letters where op <> 'r'")
                .fetch_all(&mut olap)
                .await
                .unwrap();
        let facts: i64 = sqlx::query_scalar("select count(*) from fact_sales")
            .fetch_one(&mut olap)
            .await
            .unwrap();
        if (!dead.is_empty() && facts == 2) || Instant::now() > deadline {
            break (dead, facts);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "exactly the rejected change: {dead:?}");
    assert_eq!(dead[0].0, "customers");
    assert!(dead[0].1.contains("short_name"), "{}", dead[0].1);
    assert_eq!(facts, 2, "changes after the rejected one still arrive");
    let ids: Vec<i64> =
        sqlx::query_scalar("select id from replica.customers where id >= 9 order by id")
            .fetch_all(&mut olap)
            .await
            .unwrap();
    assert_eq!(ids, vec![11], "the good row of the same batch is applied");
    assert!(!run.task.is_finished());
    run.stop().await;
    pair.drop_slot().await;
}

/// The initial copy is journaled at the slot's consistent point; a transaction that commits
/// exactly there is streamed at the same LSN. Its changes (seq 1, 2, …) must not collide with
/// the copy's rows, and must be applied: the copy numbers its rows below every streamed seq.
#[tokio::test]
async fn a_transaction_at_the_consistent_point_does_not_collide_with_the_copy() {
    use brewlytics_replicator::change::{Body, Change, Op, RowChange, TxContext};
    use brewlytics_replicator::decode::{TupleData, TupleValue};
    use brewlytics_replicator::sink::olap::encode::encode;
    use brewlytics_replicator::sink::olap::journal::JournalEncoder;
    use brewlytics_replicator::sink::olap::OlapWriter;

    let pair = Pair::new("cp").await;
    let mut oltp = pair.oltp().await;
    sqlx::raw_sql(MASTER).execute(&mut oltp).await.unwrap();
    let run = start(pair.config());
    assert!(pair.converged().await.all_equal());
    run.stop().await;
    let mut olap = pair.olap().await;
    let cp: String = sqlx::query_scalar("select lsn::text from replication_checkpoint")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    let copied: i64 = sqlx::query_scalar("select count(*) from cdc_events where lsn = $1::pg_lsn")
        .bind(&cp)
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert!(copied > 0, "the copy is journaled at the consistent point");

    // The stream's first transaction, committed exactly at the consistent point.
    let tables = brewlytics_replicator::schema::store::load(&mut olap)
        .await
        .unwrap();
    let stores = std::sync::Arc::new(tables.into_iter().find(|t| &*t.name == "stores").unwrap());
    let text = |s: &str| TupleValue::Text(bytes::Bytes::copy_from_slice(s.as_bytes()));
    let ctx = TxContext {
        lsn: cp.parse().unwrap(),
        xid: 4242,
        commit_ts: 0,
    };
    let change = Change::new(
        ctx,
        1,
        Body::Row(RowChange {
            table: stores,
            op: Op::Insert,
            old: None,
            new: Some(TupleData {
                columns: vec![
                    text("99"),
                    text("At the point"),
                    text("Leeds"),
                    text("2024-01-01"),
                ],
            }),
        }),
    );
    let encoded = encode(&mut JournalEncoder::default(), &[change]);
    let mut w = OlapWriter::connect(&pair.olap.url(), Default::default())
        .await
        .unwrap();
    w.apply(&encoded)
        .await
        .expect("no key collision with the copy");
    w.commit(&pair.slot, ctx.lsn, None).await.unwrap();
    let (streamed, name): (i64, String) = sqlx::query_as(
        "select (select count(*) from cdc_events where lsn = $1::pg_lsn and seq > 0),
                (select name from replica.stores where id = 99)",
    )
    .bind(&cp)
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!((streamed, name.as_str()), (1, "At the point"));
}

/// A table rewritten (here by VACUUM FULL) between the slot's snapshot and the copy's locks
/// would read empty under that snapshot: the copy refuses it and says it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_rewritten_as_the_copy_begins_is_not_copied_empty() {
    use brewlytics_replicator::slot;
    use brewlytics_replicator::source::snapshot::{self, CopySetup, SnapshotError};
    use brewlytics_replicator::stream::config::ReplicationConfig;
    use brewlytics_replicator::stream::conn::ReplicationConnection;

    let pair = Pair::new("rw").await;
    let mut oltp = pair.oltp().await;
    sqlx::raw_sql(MASTER).execute(&mut oltp).await.unwrap();
    let cfg = pair.config();
    let mut repl =
        ReplicationConnection::connect(&ReplicationConfig::from_url(&cfg.oltp_url).unwrap())
            .await
            .unwrap();
    let created = slot::create_exported(&mut repl, &cfg.slot).await.unwrap();
    sqlx::query("vacuum full stores")
        .execute(&mut oltp)
        .await
        .unwrap();

    let mut w =
        brewlytics_replicator::sink::olap::OlapWriter::connect(&cfg.olap_url, Default::default())
            .await
            .unwrap();
    w.begin().await.unwrap();
    let setup = CopySetup {
        oltp_url: cfg.oltp_url.clone(),
        olap_url: cfg.olap_url.clone(),
        slot: cfg.slot.clone(),
        workers: 2,
    };
    let mut source = pair.oltp().await;
    let out = snapshot::copy_published(
        &mut source,
        &mut w,
        &setup,
        &cfg.publication,
        &created.snapshot_name,
        created.consistent_point,
        &|_| {},
    )
    .await;
    match out {
        Err(e @ SnapshotError::Rewritten { .. }) => {
            assert!(e.to_string().contains("stores"), "{e}")
        }
        other => panic!("copied a rewritten table: {:?}", other.map(|s| s.rows)),
    }
    w.rollback().await.unwrap();
    repl.close().await;
}

/// An ALTER TABLE issued while the first copy holds its lock on the table, before the copy's
/// worker reached that table: the worker would queue behind the ALTER, and the ALTER behind
/// the copy. The worker does not wait (as pg_dump's do not): the copy gives way, the ALTER
/// goes through, and the copy starts again and converges, new column included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_waiting_on_the_first_copy_neither_deadlocks_nor_is_lost() {
    let pair = Pair::new("ddlcopy").await;
    let mut oltp = pair.oltp().await;
    sqlx::raw_sql(MASTER).execute(&mut oltp).await.unwrap();
    // A large table, copied first (largest first, one worker): `stores` comes last.
    sqlx::query(
        "insert into inventory_movements (store_id, product_id, delta, reason)
         select 1, 1, 1, 'adjustment' from generate_series(1, 200000)",
    )
    .execute(&mut oltp)
    .await
    .unwrap();
    sqlx::query("analyze").execute(&mut oltp).await.unwrap();
    let mut cfg = pair.config();
    cfg.copy_workers = 1;
    let run = start(cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: i64 = sqlx::query_scalar(
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation
             where c.relname = 'stores' and l.mode = 'AccessShareLock' and l.granted
               and l.pid <> pg_backend_pid()",
        )
        .fetch_one(&mut oltp)
        .await
        .unwrap();
        if held > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the copy never locked its tables"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ddl = pair.oltp().await;
    tokio::time::timeout(
        Duration::from_secs(90),
        sqlx::query("alter table stores add column ddl_probe date default '2024-05-01'")
            .execute(&mut ddl),
    )
    .await
    .expect("the ALTER waited behind the copy for 90 s")
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(120), pair.converged())
        .await
        .expect("converged within 120 s");
    assert!(report.all_equal(), "{report:#?}");
    run.stop().await;
}
