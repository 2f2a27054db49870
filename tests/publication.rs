//! Exactly what the publications publish, against the built binary on two PostgreSQL servers
//! (and a NATS server): row filters, column lists and several publications for one table at
//! the first start, for tables added while streaming and with their definitions changed
//! while streaming (with and without the DDL event trigger); UPDATEs moving rows in and out
//! of a filter; stored generated columns through the copy, the stream, DDL and replay; and an
//! OLAP holding unpublished rows and columns found by `status` and cleaned by `snapshot`.
//!
//! After every phase each replica equals `select <published columns> from <table> where
//! <filter>` on the source — written out by hand here, not read from the publication — and a
//! marker kept in unpublished columns appears in no OLAP table (every row of every table
//! cast to text) and in no message of the NATS stream.

mod harness;

use std::time::{Duration, Instant};

use harness::nats::NatsCluster;
use harness::sql::{exec, rows};
use harness::{free_addr, wait_streaming, Clusters};
use sqlx::PgConnection;

/// Kept only in columns no publication publishes.
const MARKER: &str = "SSN-MARKER";

/// The publications of the first test's replicator.
const BOTH: &str = "brewlytics,extra";

/// Waits (≤ 90 s) until each replica query returns the rows of its source query.
async fn replica_equals(c: &Clusters, expected: &[(&str, &str)], label: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut oltp = c.oltp_conn().await;
    let mut olap = c.olap_conn().await;
    loop {
        let mut differ = Vec::new();
        for (source, replica) in expected {
            let want = rows(&mut oltp, source).await.unwrap();
            let have = rows(&mut olap, replica).await;
            match have {
                Ok(have) if have == want => {}
                Ok(have) => differ.push(format!(
                    "{replica}: {} rows, {source}: {} rows; only in the replica: {:?}; missing: {:?}",
                    have.len(),
                    want.len(),
                    have.iter().filter(|r| !want.contains(r)).take(5).collect::<Vec<_>>(),
                    want.iter().filter(|r| !have.contains(r)).take(5).collect::<Vec<_>>()
                )),
                Err(e) => differ.push(format!("{replica}: {e}")),
            }
        }
        if differ.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{label}: {differ:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The OLAP tables (of every schema) with a row whose text holds `marker`.
async fn marker_in_olap(olap: &mut PgConnection, marker: &str) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "select format('%I.%I', schemaname, tablename) from pg_tables
         where schemaname not in ('pg_catalog', 'information_schema') order by 1",
    )
    .fetch_all(&mut *olap)
    .await
    .unwrap();
    let mut found = Vec::new();
    for t in tables {
        let n: i64 = sqlx::query_scalar(&format!(
            "select count(*) from {t} r where strpos(r::text, $1) > 0"
        ))
        .bind(marker)
        .fetch_one(&mut *olap)
        .await
        .unwrap_or_else(|e| panic!("{t}: {e}"));
        if n > 0 {
            found.push(format!("{t}: {n} rows"));
        }
    }
    found
}

/// The messages of a JetStream stream holding `marker` (in a header or the payload), and
/// how many messages it has.
async fn marker_in_stream(url: &str, stream: &str, marker: &str) -> (Vec<u64>, u64) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let info = s.info().await.unwrap().clone();
    let mut found = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        let headers = format!("{:?}", m.headers);
        if headers.contains(marker) || String::from_utf8_lossy(&m.payload).contains(marker) {
            found.push(seq);
        }
    }
    (found, info.state.messages)
}

async fn assert_no_marker(c: &Clusters, label: &str) {
    let found = marker_in_olap(&mut c.olap_conn().await, MARKER).await;
    assert!(
        found.is_empty(),
        "{label}: the unpublished marker is in OLAP: {found:?}"
    );
}

async fn status_warnings(c: &Clusters) -> Vec<String> {
    let out = c.run(&["status", "--json"]);
    let json = &out[out.find('{').expect("status json")..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

const FIRST_START: &str = "
create table rf (id int primary key, region text not null, amount int);
alter table rf replica identity full;
insert into rf select g, case when g % 2 = 0 then 'eu' else 'us' end, g from generate_series(1, 200) g;
create table cl (id int primary key, name text, ssn text);
insert into cl select g, 'name ' || g, 'SSN-MARKER-' || g from generate_series(1, 50) g;
create table mp (id int primary key, region text not null, amount int);
alter table mp replica identity full;
insert into mp select g, case when g % 3 = 0 then 'eu' else 'us' end, g from generate_series(1, 100) g;
-- mp in two streamed publications: their filters are ORed.
create publication extra for table mp where (amount > 80);
-- sales.st through a schema in extra: every row, whatever brewlytics' filter.
create schema sales;
create table sales.st (id int primary key, v int);
insert into sales.st select g, g from generate_series(1, 20) g;
alter publication extra add tables in schema sales;
-- Not streamed: that it publishes rf and cl whole changes nothing.
create publication unstreamed for table rf, cl;
-- A row filter over a replica identity index: an UPDATE bringing a row in is sent as an
-- INSERT without its unchanged TOASTed value.
create table tt (id int primary key, region text not null, big text);
create unique index tt_identity on tt (id, region);
alter table tt replica identity using index tt_identity;
alter table tt alter column big set storage external;
insert into tt select g, 'us', repeat(md5(g::text), 4000) from generate_series(1, 3) g;
alter publication brewlytics add table rf where (region = 'eu'), cl (id, name),
                                        mp where (region = 'eu'), tt where (region = 'eu'),
                                        sales.st where (id > 15);
";

const STREAMED: &str = "
insert into rf values (1001, 'eu', 1), (1002, 'us', 2);
update rf set region = 'eu', amount = amount + 1000 where id in (1, 3, 5);   -- into the filter
update rf set region = 'us' where id in (2, 4, 6);                           -- out of it
update rf set amount = -amount where id in (8, 9);                           -- in, and never in
delete from rf where id in (10, 11);
insert into cl values (51, 'new', 'SSN-MARKER-51');
update cl set ssn = 'SSN-MARKER-changed' where id = 1;                       -- only unpublished
update cl set name = 'renamed' where id = 2;
delete from cl where id = 3;
update mp set amount = 95 where id = 1;                                      -- in by extra's filter
update mp set region = 'us' where id = 3;                                    -- out of both
update mp set region = 'eu', amount = 0 where id = 90;                       -- out of extra's, in brewlytics'
update tt set region = 'eu' where id = 1;                                    -- in, its big value unsent
update sales.st set v = 1 where id = 20;
";

const ADDED: &str = "
create table rf2 (id int primary key, region text, amount int);
alter table rf2 replica identity full;
insert into rf2 select g, 'r' || (g % 4), g from generate_series(1, 120) g;
create table cl2 (id int primary key, name text, ssn text, note text);
insert into cl2 select g, 'n' || g, 'SSN-MARKER-2-' || g, 'note ' || g from generate_series(1, 40) g;
alter publication brewlytics add table rf2 where (amount % 2 = 0), cl2 (id, note);
";

const ADDED_STREAMED: &str = "
update rf2 set amount = amount + 1 where id between 1 and 10;
insert into rf2 values (500, 'x', 500), (501, 'x', 501);
update cl2 set ssn = 'SSN-MARKER-2-x', note = 'changed' where id < 5;
insert into cl2 values (100, 'n100', 'SSN-MARKER-2-100', 'note 100');
";

/// Every definition at once (SET TABLE replaces the publication's list).
fn set_tables(rf: &str, rf2: &str, cl2: &str) -> String {
    format!(
        "alter publication brewlytics set table rf where ({rf}), cl (id, name),
             mp where (region = 'eu'), tt where (region = 'eu'), sales.st where (id > 15),
             rf2 where ({rf2}), cl2 ({cl2});"
    )
}

fn expected<'a>(rf: &'a str, rf2: &'a str, cl2: &'a str) -> Vec<(String, String)> {
    vec![
        (
            format!("select id, region, amount from rf where {rf}"),
            "select id, region, amount from replica.rf".into(),
        ),
        (
            "select id, name from cl".into(),
            "select id, name from replica.cl".into(),
        ),
        (
            "select id, region, amount from mp where region = 'eu' or amount > 80".into(),
            "select id, region, amount from replica.mp".into(),
        ),
        (
            "select id, region, md5(big) from tt where region = 'eu'".into(),
            "select id, region, md5(big) from replica.tt".into(),
        ),
        (
            "select id, v from sales.st".into(),
            "select id, v from replica.sales__st".into(),
        ),
        (
            format!("select id, region, amount from rf2 where {rf2}"),
            "select id, region, amount from replica.rf2".into(),
        ),
        (
            format!("select {cl2} from cl2"),
            format!("select {cl2} from replica.cl2"),
        ),
    ]
}

/// After a phase: each replica equals its source query, OLAP equals what the publications
/// publish (`verify`), and the marker is nowhere in OLAP.
async fn check(c: &Clusters, publications: &str, phase: &str, want: &[(String, String)]) {
    replica_equals(c, &pairs(want), phase).await;
    let report = c.converged_for(publications, Duration::from_secs(60)).await;
    assert!(report.all_equal(), "{phase}: {report:#?}");
    assert_no_marker(c, phase).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_column_lists_are_followed_from_the_first_start_to_replay() {
    let c = Clusters::start();
    c.run(&["migrate"]);
    let mut oltp = c.oltp_conn().await;
    exec(&mut oltp, FIRST_START).await;
    let nats = NatsCluster::start(1);
    let url = nats.url();
    let listen = free_addr();
    let r = c.replicator_with(
        "publication",
        &listen,
        &["--sink", "nats", "--nats-url", &url],
        &[("PUBLICATION", BOTH), ("BACKFILL_CHUNK_ROWS", "25")],
    );
    wait_streaming(&listen, &r).await;
    // The replica's table has the published columns only.
    assert_eq!(replica_columns(&c, "cl").await, ["id integer", "name text"]);
    let mut want = expected("region = 'eu'", "amount % 2 = 0", "id, note");
    want.truncate(5);
    check(&c, BOTH, "first start", &want).await;

    exec(&mut oltp, STREAMED).await;
    check(
        &c,
        BOTH,
        "streamed, rows moving in and out of the filters",
        &want,
    )
    .await;

    exec(&mut oltp, ADDED).await;
    let want = expected("region = 'eu'", "amount % 2 = 0", "id, note");
    check(
        &c,
        BOTH,
        "tables added to the publication while streaming",
        &want,
    )
    .await;
    exec(&mut oltp, ADDED_STREAMED).await;
    check(&c, BOTH, "added tables, streamed", &want).await;

    // New definitions while streaming: another filter (rows it takes in were never sent),
    // a column list taking in a column that has values, a filter removed.
    exec(
        &mut oltp,
        &set_tables(
            "region = 'us' and amount > 10",
            "amount % 3 = 0",
            "id, name, note",
        ),
    )
    .await;
    exec(
        &mut oltp,
        "update rf set amount = amount + 1 where id between 20 and 40;
         update cl2 set name = 'after', ssn = 'SSN-MARKER-late' where id = 7;",
    )
    .await;
    let want = expected(
        "region = 'us' and amount > 10",
        "amount % 3 = 0",
        "id, name, note",
    );
    check(&c, BOTH, "definitions changed while streaming", &want).await;

    // Without the event trigger, a changed filter is found by comparing the publications
    // with the replica.
    exec(&mut oltp, "drop event trigger brewlytics_ddl").await;
    exec(&mut oltp, &set_tables("amount < 100", "true", "id, note")).await;
    let want = expected("amount < 100", "true", "id, note");
    check(
        &c,
        BOTH,
        "a filter changed without the event trigger",
        &want,
    )
    .await;
    assert_eq!(
        replica_columns(&c, "cl2").await,
        ["id integer", "note text"]
    );
    let log = r.log_text();
    assert!(log.contains("row filter changed"), "said: {log}");
    assert!(
        log.contains("left a large (TOASTed) value unchanged"),
        "said: {log}"
    );

    // cl2's name was published for a while: the journal holds its values, and `status` says
    // so until `snapshot --table` cleans the table.
    wait_warning(&c, &["journal", "values of name of public.cl2"], true).await;
    c.run(&["snapshot", "--table", "cl2"]);
    check(&c, BOTH, "cl2 cleaned", &want).await;
    let warnings = wait_warning(&c, &["does not publish"], false).await;
    assert!(
        !warnings.iter().any(|w| w.contains("publish")),
        "{warnings:?}"
    );
    let mut olap = c.olap_conn().await;
    let names: i64 = sqlx::query_scalar(
        "select count(*) from cdc_events where source_table = 'cl2'
         and (after::jsonb ? 'name' or before::jsonb ? 'name')",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap();
    assert_eq!(names, 0, "cl2's name is out of the journal");

    // The journal alone rebuilds the same replica.
    drop(r);
    let out = c.run(&["replay", "--from-lsn", "0/0"]);
    assert!(out.contains("full rebuild"), "{out}");
    check(&c, BOTH, "after replay", &want).await;
    let (found, messages) = marker_in_stream(&url, "BREWLYTICS", MARKER).await;
    assert!(messages > 600, "the stream holds the changes: {messages}");
    assert!(found.is_empty(), "the marker is in the stream: {found:?}");

    // Two streamed publications giving one table different column lists: PostgreSQL refuses
    // to stream it, and the replicator says so at once.
    exec(&mut oltp, "create publication third for table cl (id)").await;
    let out = c
        .command(&["replicate"])
        .env("PUBLICATION", "brewlytics,third")
        .env("REPLICATOR_LISTEN", free_addr())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("public.cl") && stderr.contains("different column lists"),
        "{stderr}"
    );
}

/// The columns of a replica table with their types (`name type`), in order.
async fn replica_columns(c: &Clusters, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select attname::text || ' ' || format_type(atttypid, atttypmod) from pg_attribute
         where attrelid = format('replica.%I', $1::text)::regclass
           and attnum > 0 and not attisdropped order by attnum",
    )
    .bind(table)
    .fetch_all(&mut c.olap_conn().await)
    .await
    .unwrap()
}

const GENERATED: &str = "
create table gc (id int primary key, a int, b int generated always as (a * 2) stored, note text);
insert into gc (id, a, note) select g, g, 'n' || g from generate_series(1, 30) g;
create function dbl(int) returns int language sql immutable as 'select $1 * 2';
create table gu (id int primary key, a int, d int generated always as (dbl(a)) stored);
insert into gu (id, a) select g, g from generate_series(1, 5) g;
create table gl (id int primary key, a int, secret text, g int generated always as (a + 1) stored);
insert into gl (id, a, secret) select g, g, 'SSN-MARKER-g' || g from generate_series(1, 5) g;
alter publication brewlytics add table gc, gu, gl (id, a);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_are_computed_through_copy_stream_ddl_and_replay() {
    let c = Clusters::start();
    c.run(&["migrate"]);
    let mut oltp = c.oltp_conn().await;
    exec(&mut oltp, GENERATED).await;
    let listen = free_addr();
    let r = c.replicator("generated", &listen, &[]);
    wait_streaming(&listen, &r).await;
    let gc = |b: &str| -> Vec<(String, String)> {
        vec![
            (
                format!("select id, a, {b}, note from gc"),
                format!("select id, a, {b}, note from replica.gc"),
            ),
            (
                "select id, a from gu".into(),
                "select * from replica.gu".into(),
            ),
            (
                "select id, a from gl".into(),
                "select * from replica.gl".into(),
            ),
        ]
    };
    check(&c, "brewlytics", "generated columns copied", &gc("b")).await;
    // A column computed by a function of the source's own: left out, and said.
    let warnings = status_warnings(&c).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("gu") && w.contains("column d") && w.contains("dbl(integer)")),
        "{warnings:?}"
    );

    exec(
        &mut oltp,
        "insert into gc (id, a, note) values (100, 21, 'new');
         update gc set a = a + 100 where id <= 10;
         update gc set note = 'only the note' where id = 11;
         delete from gc where id = 12;
         update gu set a = 50 where id = 1;",
    )
    .await;
    check(&c, "brewlytics", "generated columns streamed", &gc("b")).await;

    // PostgreSQL 15 changes an expression by dropping the column and adding it again.
    exec(
        &mut oltp,
        "alter table gc drop column b, add column b bigint generated always as (a * 3 + 1) stored;
         update gc set a = 7 where id = 13;
         alter table gc add column shout text generated always as (upper(note)) stored;",
    )
    .await;
    check(
        &c,
        "brewlytics",
        "generated columns after DDL",
        &gc("b, shout"),
    )
    .await;
    assert!(
        replica_columns(&c, "gc")
            .await
            .contains(&"b bigint".to_owned()),
        "b is retyped"
    );

    // Without the event trigger, the change is found by comparing the source with the replica.
    exec(
        &mut oltp,
        "drop event trigger brewlytics_ddl;
         alter table gc drop column shout;
         alter table gc add column shout text generated always as (lower(note) || '!') stored;",
    )
    .await;
    check(
        &c,
        "brewlytics",
        "generated columns after DDL without the trigger",
        &gc("b, shout"),
    )
    .await;

    drop(r);
    let out = c.run(&["replay", "--from-lsn", "0/0"]);
    assert!(out.contains("full rebuild"), "{out}");
    check(
        &c,
        "brewlytics",
        "generated columns after replay",
        &gc("b, shout"),
    )
    .await;
}

/// Waits (≤ 60 s) until `status` warns (or, with `present` false, no longer warns) with a
/// line holding every one of `parts`.
async fn wait_warning(c: &Clusters, parts: &[&str], present: bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let warnings = status_warnings(c).await;
        let found = warnings.iter().any(|w| parts.iter().all(|p| w.contains(p)));
        if found == present {
            return warnings;
        }
        assert!(
            Instant::now() < deadline,
            "status {} warn of {parts:?}: {warnings:#?}",
            if present { "does not" } else { "still" }
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublished_data_in_olap_is_reported_and_cleaned_by_snapshot() {
    let c = Clusters::start();
    c.run(&["migrate"]);
    let mut oltp = c.oltp_conn().await;
    exec(
        &mut oltp,
        "create table cl (id int primary key, name text, ssn text);
         insert into cl select g, 'name ' || g, 'SSN-MARKER-' || g from generate_series(1, 30) g;
         create table rf (id int primary key, region text not null, amount int);
         alter table rf replica identity full;
         insert into rf select g, case when g % 2 = 0 then 'eu' else 'us' end, g
         from generate_series(1, 60) g;
         alter publication brewlytics add table cl, rf;",
    )
    .await;
    let listen = free_addr();
    let r = c.replicator("cleaning", &listen, &[]);
    wait_streaming(&listen, &r).await;
    // Published whole at first: the marker is in the replica and the journal, rightly.
    let want = |rf: &str, cl: &str| -> Vec<(String, String)> {
        vec![
            (
                format!("select id, region, amount from rf where {rf}"),
                "select id, region, amount from replica.rf".into(),
            ),
            (
                format!("select {cl} from cl"),
                "select * from replica.cl".into(),
            ),
        ]
    };
    replica_equals(
        &c,
        &pairs(&want("true", "id, name, ssn")),
        "published whole",
    )
    .await;

    // The publication narrowed: the replica follows, the journal keeps what it held.
    exec(
        &mut oltp,
        "alter publication brewlytics set table cl (id, name), rf where (region = 'eu');",
    )
    .await;
    replica_equals(&c, &pairs(&want("region = 'eu'", "id, name")), "narrowed").await;
    wait_warning(
        &c,
        &["journal", "ssn", "public.cl", "snapshot --table public.cl"],
        true,
    )
    .await;

    // An OLAP written before filters and lists were followed: rows and a column too many.
    drop(r);
    let mut olap = c.olap_conn().await;
    exec(
        &mut olap,
        "insert into replica.rf values (1001, 'us', 1), (1003, 'us', 3);
         alter table replica.cl add column ssn text;
         update replica.cl set ssn = 'SSN-MARKER-old';",
    )
    .await;
    let r = c.replicator("cleaning-2", &listen, &[]);
    wait_streaming(&listen, &r).await;
    wait_warning(
        &c,
        &["replica", "cl", "column ssn", "snapshot --table public.cl"],
        true,
    )
    .await;
    wait_warning(
        &c,
        &["2 rows outside", "public.rf", "snapshot --table public.rf"],
        true,
    )
    .await;
    assert!(!marker_in_olap(&mut olap, MARKER).await.is_empty());

    let out = c.run(&["snapshot", "--table", "cl"]);
    assert!(out.contains("rows copied"), "{out}");
    c.run(&["snapshot", "--table", "rf"]);
    replica_equals(&c, &pairs(&want("region = 'eu'", "id, name")), "cleaned").await;
    let found = marker_in_olap(&mut olap, MARKER).await;
    assert!(found.is_empty(), "the marker is still in OLAP: {found:?}");
    let warnings = wait_warning(&c, &["publication does not publish"], false).await;
    assert!(
        !warnings.iter().any(|w| w.contains("row filter")),
        "{warnings:#?}"
    );
    let report = c.converged(Duration::from_secs(60)).await;
    assert!(report.all_equal(), "{report:#?}");

    // `resync` copies what is published, too.
    drop(r);
    c.run(&["resync"]);
    replica_equals(&c, &pairs(&want("region = 'eu'", "id, name")), "resynced").await;
    let found = marker_in_olap(&mut olap, MARKER).await;
    assert!(
        found.is_empty(),
        "the marker is in OLAP after resync: {found:?}"
    );
}

fn pairs(want: &[(String, String)]) -> Vec<(&str, &str)> {
    want.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}
