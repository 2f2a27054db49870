//! Faithful for any schema, against the built binary on two PostgreSQL servers: every type
//! value for value through the initial copy, the stream (insert, update with unchanged TOAST,
//! delete) and replay; DDL followed while orders flow (with and without the DDL event
//! trigger); tables added to the publication copied; keyless tables kept as multisets.
//! Each phase ends with the replica compared with the source value by value (verify::compare:
//! every published table, as multisets of their rows' text).

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{free_addr, wait_streaming, workload, Clusters, LoadCounts};

/// Every kind of value the issue names: json and jsonb (objects, arrays, scalars, null),
/// arrays with NULL elements and two dimensions, bytea, numeric NaN/huge/tiny, infinite
/// dates and timestamps, interval, uuid, an enum, a domain, ranges, inet, real/double
/// NaN/±Infinity, text with control characters, a TOASTed value over 1 MB, and more.
const KINDS: &str = r#"
create type mood as enum ('sad', 'ok', 'happy');
create domain posint as integer check (value > 0);
create table kinds (
    id bigint primary key,
    j json, jb jsonb, ai int[], at text[], b bytea, n numeric, n2 numeric(10, 2),
    d date, ts timestamp, tstz timestamptz, iv interval, u uuid, m mood, p posint,
    r int4range, tr tstzrange, ip inet, net cidr, mac macaddr, f4 real, f8 double precision,
    t text, vc varchar(20), bp char(5), bo boolean, ti time, ttz timetz, bits bit varying(8),
    pt point, x xml, mo money, tsv tsvector, big text
);
alter publication brewlytics add table kinds;
"#;

fn kinds_row(id: i64, big: bool) -> String {
    let big = if big {
        "(select string_agg(md5(g::text || random()::text), '') from generate_series(1, 40000) g)"
    } else {
        "null"
    };
    format!(
        r#"insert into kinds values ({id},
            '{{"changed": true, "dup": 1, "dup": 2,   "ws" : [1, 2]}}', '{{"a": [1, 2, {{"b": null}}], "s": "x\"y"}}',
            '{{1,NULL,3}}', '{{{{"a","b"}},{{"c",NULL}}}}', '\x00ff10', 'NaN', 12.34,
            'infinity', '-infinity', 'infinity', '1 year 2 mons 3 days 04:05:06.789',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 5, '[1,10)',
            '[2024-01-01 10:00:00+00,infinity)', '192.168.0.1/24', '10.0.0.0/8',
            '08:00:2b:01:02:03', 'NaN', '-Infinity',
            E'tab\there\nnew line\\back "quote" \x01 ctrl é ☕', 'varchar', 'ab', true,
            '04:05:06.789', '04:05:06+02', B'101', '(1,2)', '<a>x</a>', 12.34, 'a fat cat',
            {big});
        insert into kinds (id, j, jb, n, f4, f8, t) values ({id} + 1, 'null', 'null',
            '0.00000000000000000001', 'Infinity', 1e300, '');
        insert into kinds (id, j, jb, n, f8) values ({id} + 2, '"a string"', '42',
            '123456789012345678901234567890.123456789', '-0');
        insert into kinds (id) values ({id} + 3);"#
    )
}

async fn exec(c: &mut sqlx::PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(c)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

async fn assert_converged(c: &Clusters, label: &str) {
    let r = c.converged(Duration::from_secs(120)).await;
    assert!(r.all_equal(), "{label}: OLAP differs from OLTP: {r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_arrives_value_for_value_and_replays_the_same() {
    let c = Clusters::start();
    c.prepare(5);
    let mut oltp = c.oltp_conn().await;
    exec(&mut oltp, KINDS).await;
    exec(&mut oltp, &kinds_row(1, true)).await;
    let listen = free_addr();
    let r = c.replicator("kinds", &listen, &[]);
    wait_streaming(&listen, &r).await;
    assert_converged(&c, "after the initial copy").await;

    // Streamed: inserts, an update leaving the 1 MB value unchanged (unchanged TOAST), an
    // update of the big value itself, json edits, deletes.
    exec(&mut oltp, &kinds_row(11, true)).await;
    exec(
        &mut oltp,
        "update kinds set t = 'changed' where id = 1;
         update kinds set jb = '{\"x\": 1}', j = '[1,  2]' where id = 2;
         update kinds set jb = null, j = null where id = 12;
         update kinds set big = (select string_agg(md5(g::text), '') from generate_series(1, 40000) g)
           where id = 11;
         update kinds set ai = '{{1,2},{3,NULL}}', n = 'Infinity', d = '-infinity' where id = 13;
         delete from kinds where id in (3, 14);",
    )
    .await;
    assert_converged(&c, "after streaming").await;
    // A key change of the row holding the 1 MB value, which the UPDATE does not carry
    // (unchanged TOAST under the default identity: only the old key comes with it).
    exec(
        &mut oltp,
        "update kinds set id = 100, t = 'moved' where id = 1",
    )
    .await;
    assert_converged(&c, "after a key change with unchanged TOAST").await;
    // A table of another schema: mirrored as replica.<schema>__<table>.
    exec(
        &mut oltp,
        "create schema sales;
         create table sales.kinds (like public.kinds including all);
         insert into sales.kinds select * from public.kinds;
         alter publication brewlytics add table sales.kinds;
         update sales.kinds set t = 'other schema' where id = 2;",
    )
    .await;
    assert_converged(&c, "a table of another schema").await;

    // The journal shows json values as JSON, and JSON null apart from SQL NULL.
    let mut olap = c.olap_conn().await;
    let (kind, x): (String, Option<String>) = sqlx::query_as(
        "select json_typeof(after -> 'j'), after -> 'jb' ->> 'x' from cdc_events
         where source_table = 'kinds' and op = 'u' and (after ->> 'id')::int = 2",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), x.as_deref()), ("array", Some("1")));
    let nulls: Vec<String> = sqlx::query_scalar(
        "select unnest(json_nulls) from cdc_events where source_table = 'kinds'
         and (after ->> 'id')::int = 2 and op = 'r'",
    )
    .fetch_all(&mut olap)
    .await
    .unwrap();
    assert_eq!(nulls, vec!["j", "jb"], "JSON nulls of row 2 are listed");
    let typed: (String, String) = sqlx::query_as(
        "select json_typeof(after -> 'n2'), json_typeof(after -> 'bo') from cdc_events
         where source_table = 'kinds' and (after ->> 'id')::int = 11 and op = 'i'",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(typed, ("number".into(), "boolean".into()));

    // The journal alone rebuilds the same replica, value for value.
    let out = c.run(&["replay", "--from-lsn", "0/0"]);
    assert!(out.contains("full rebuild"), "{out}");
    assert_converged(&c, "after replay").await;
    let mut olap = c.olap_conn().await;
    let kept: Option<i32> =
        sqlx::query_scalar("select length(big) from replica.kinds where id = 100")
            .fetch_one(&mut olap)
            .await
            .unwrap();
    let source: Option<i32> = sqlx::query_scalar("select length(big) from kinds where id = 100")
        .fetch_one(&mut oltp)
        .await
        .unwrap();
    assert!(source.unwrap_or(0) > 1_000_000, "source: {source:?}");
    assert!(
        kept.unwrap_or(0) > 1_000_000,
        "the moved row keeps its 1 MB value: {kept:?}"
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_are_followed_while_orders_flow() {
    let c = Clusters::start();
    c.prepare(20);
    let listen = free_addr();
    let r = c.replicator("ddl", &listen, &[]);
    wait_streaming(&listen, &r).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let load = tokio::spawn(workload(c.oltp_url(), stop.clone(), counts.clone(), 11));
    let mut oltp = c.oltp_conn().await;
    let pause = || tokio::time::sleep(Duration::from_millis(400));
    for sql in [
        // ADD, then RENAME: the values are kept under the new name.
        "alter table products add column origin text",
        "update products set origin = 'Kenya' where id % 2 = 0",
        "alter table products rename column origin to country",
        // ALTER TYPE: the replica and the star take the new values.
        "alter table order_items alter column quantity type bigint",
        // A column added with a default: existing rows have it on the source.
        "alter table customers add column tier text not null default 'basic'",
        // Dropped and added again under the same name: a new, empty column.
        "alter table customers drop column tier",
        "alter table customers add column tier integer",
        "alter table products drop column description",
        // Retyped with USING: values the stream never sends.
        "alter table stores alter column city type varchar(40) using upper(city)",
    ] {
        exec(&mut oltp, sql).await;
        pause().await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(counts.orders.load(Ordering::Relaxed) > 0);
    // A value only the new type holds, once the load (which deletes random orders) is over.
    exec(
        &mut oltp,
        "update order_items set quantity = 3000000000 where id = (select min(id) from order_items)",
    )
    .await;
    assert_converged(&c, "after DDL with the event trigger").await;
    let mut olap = c.olap_conn().await;
    let q: i64 = sqlx::query_scalar("select max(quantity) from fact_sales")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert_eq!(q, 3_000_000_000, "the star follows the retyped quantity");
    let ty: String = sqlx::query_scalar(
        "select format_type(atttypid, atttypmod) from pg_attribute
         where attrelid = 'replica.order_items'::regclass and attname = 'quantity'",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(ty, "bigint");

    // Without the event trigger, a rename is not told from drop + add: the table is copied
    // again, and still ends exact.
    exec(&mut oltp, "drop event trigger brewlytics_ddl").await;
    exec(
        &mut oltp,
        "alter table products rename column country to region;
         update products set price = price + 1 where id = 1",
    )
    .await;
    assert_converged(&c, "after a rename without the event trigger").await;
    let log = r.log_text();
    assert!(log.contains("copied again"), "the fallback is said: {log}");
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_added_to_the_publication_are_copied_and_removed_ones_are_kept() {
    let c = Clusters::start();
    c.prepare(5);
    let listen = free_addr();
    let r = c.replicator("added", &listen, &[("BACKFILL_CHUNK_ROWS", "3000")]);
    wait_streaming(&listen, &r).await;
    let mut oltp = c.oltp_conn().await;
    exec(
        &mut oltp,
        "create table gift_cards (id int primary key, code text not null, balance numeric(8,2));
         insert into gift_cards select g, 'GC' || g, g * 1.5 from generate_series(1, 25) g;
         alter publication brewlytics add table gift_cards;
         insert into gift_cards select g, 'GC' || g, 0 from generate_series(26, 30) g;",
    )
    .await;
    assert_converged(&c, "gift_cards: 25 existing rows and 5 new ones").await;

    // A larger table, copied in chunks while it changes; then copied again on demand.
    exec(
        &mut oltp,
        "create table ledger (id bigint primary key, v int, pad text);
         insert into ledger select g, 0, md5(g::text) from generate_series(1, 20000) g;
         alter publication brewlytics add table ledger;",
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let url = c.oltp_url();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = harness::connect(&url).await;
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (a, b) = (1 + (n * 7919) % 20000, 1 + (n * 104729) % 20000);
                for (sql, id) in [
                    ("update ledger set v = v + 1 where id = $1", a),
                    ("delete from ledger where id = $1", b),
                    (
                        "insert into ledger values ($1, 1, 'new') on conflict (id) do update set v = 7",
                        20000 + n,
                    ),
                ] {
                    sqlx::query(sql).bind(id).execute(&mut c).await.unwrap();
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = c.run(&["snapshot", "--table", "ledger"]);
    assert!(out.contains("rows copied"), "{out}");
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert_converged(&c, "ledger: copied in chunks while it changed").await;
    // A table renamed on the source: its replica is renamed and keeps following.
    exec(
        &mut oltp,
        "alter table ledger rename to ledger_2024;
         update ledger_2024 set v = -1 where id < 100;",
    )
    .await;
    assert_converged(&c, "after a table rename").await;

    // A table removed from the publication stops being mirrored; its replica is kept.
    exec(
        &mut oltp,
        "alter publication brewlytics drop table gift_cards;
         insert into gift_cards values (99, 'late', 1);",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !r.log_text().contains("removed from the publication") {
        assert!(Instant::now() < deadline, "not said: {}", r.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut olap = c.olap_conn().await;
    let n: i64 = sqlx::query_scalar("select count(*) from replica.gift_cards")
        .fetch_one(&mut olap)
        .await
        .unwrap();
    assert_eq!(n, 30, "the replica is kept as it was");
    let status = c.run(&["status", "--json"]);
    assert!(status.contains("\"backfills\""), "{status}");
    // Copies show their progress: the first start in the log, backfills on /metrics.
    assert!(r.log_text().contains("initial copy"), "{}", r.log_text());
    let metrics = harness::http_get(&listen, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("brewlytics_copy_rows{table=\"public.ledger\",kind=\"backfill\"}"),
        "{metrics}"
    );
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_tables_are_multisets() {
    let c = Clusters::start();
    c.prepare(0);
    let mut oltp = c.oltp_conn().await;
    exec(
        &mut oltp,
        "create table visits (at text, who text, n int);
         alter table visits replica identity full;
         create table clicks (at text);
         alter publication brewlytics add table visits, clicks;
         insert into visits values ('mon', 'ann', 1), ('mon', 'ann', 1), ('mon', 'ann', 1),
                                   ('tue', null, null), ('tue', null, null), (null, null, null);
         insert into clicks values ('a'), ('a');",
    )
    .await;
    let listen = free_addr();
    let r = c.replicator("keyless", &listen, &[]);
    wait_streaming(&listen, &r).await;
    assert_converged(&c, "keyless: initial copy").await;
    exec(
        &mut oltp,
        "delete from visits where ctid = (select ctid from visits where at = 'mon' limit 1);
         update visits set n = 2 where ctid = (select ctid from visits where at = 'mon' limit 1);
         delete from visits where ctid = (select ctid from visits where at = 'tue' limit 1);
         insert into visits values (null, null, null), ('wed', 'bo', 3), ('wed', 'bo', 3);
         update visits set who = 'zed' where at is null;
         insert into clicks values ('a'), ('b');",
    )
    .await;
    assert_converged(&c, "keyless: duplicates, NULLs, delete of one of a pair").await;
    let log = r.log_text();
    assert!(
        log.contains("public.clicks") && log.contains("REPLICA IDENTITY FULL"),
        "a table whose updates cannot be identified is warned about: {log}"
    );
    drop(r);
}
