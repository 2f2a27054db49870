//! The change stream on a real 3-node NATS JetStream cluster (Debian's `nats-server`, stream
//! replicas 3), against the built binary and two PostgreSQL servers: orders flowing while the
//! stream's leader node is killed with SIGKILL and restarted, and while the replicator is
//! killed with SIGKILL and restarted; a schema change, a truncate and a table backfilled on
//! the way. Then every journal position is in the stream exactly once (counted per message
//! id), each op's envelope is checked field by field against its journal row, and a second
//! OLAP database loaded from the stream by `brewlytics load` (itself killed and restarted)
//! ends equal to OLTP row for row, with the same journal and star as the direct path.

mod harness;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use brewlytics_replicator::verify;
use futures_util::StreamExt;
use harness::nats::NatsCluster;
use harness::{
    free_addr, http_get, metric, metric_total, star_fingerprint_of, wait_streaming, Background,
    Clusters, Proc,
};
use serde_json::Value;

const PROBES: &str = "
create table nats_probe (id integer primary key, note text, doc jsonb, flag boolean, amount numeric(10, 2));
insert into nats_probe select g, 'row ' || g, jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)),
       g % 2 = 0, g * 1.25 from generate_series(1, 300) g;
create table nats_trunc (id integer primary key, label text);
insert into nats_trunc select g, 'l' || g from generate_series(1, 20) g;
alter publication brewlytics add table nats_probe, nats_trunc;
";

/// One message of the stream, as a consumer sees it.
struct StreamMsg {
    seq: u64,
    subject: String,
    headers: HashMap<String, String>,
    payload: Value,
    raw: Vec<u8>,
}

async fn read_stream(url: &str, stream: &str) -> Vec<StreamMsg> {
    let servers: Vec<&str> = url.split(',').collect();
    let client = async_nats::connect(servers.as_slice()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let s = js.get_stream(stream).await.unwrap();
    let info = s.get_info().await.unwrap();
    // An ordered consumer: the whole stream in order, in large batches.
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    let mut seq = 0;
    // After a restart of every node the stream's leader is elected again before it serves
    // a consumer: a generous wait for each message, which a passing run never reaches.
    while seq < info.state.last_sequence {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("the stream's messages")
            .unwrap()
            .unwrap();
        seq = m.info().unwrap().stream_sequence;
        let headers = m
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            v.first().map(|v| v.as_str().to_owned()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(StreamMsg {
            seq,
            subject: m.subject.to_string(),
            headers,
            payload: serde_json::from_slice(&m.payload).unwrap(),
            raw: m.payload.to_vec(),
        });
    }
    out
}

async fn stream_leader(url: &str, stream: &str) -> Option<String> {
    let servers: Vec<&str> = url.split(',').collect();
    let client = async_nats::connect(servers.as_slice()).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let s = js.get_stream(stream).await.ok()?;
    s.get_info().await.ok()?.cluster?.leader
}

/// A journal row as the test compares it.
struct JournalRow {
    xid: i64,
    schema: String,
    table: String,
    op: String,
    before: Option<Value>,
    after: Option<Value>,
    before_text: Option<String>,
    after_text: Option<String>,
}

type RawJournalRow = (
    String,
    i32,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

async fn journal(olap: &mut sqlx::PgConnection) -> BTreeMap<(String, i32), JournalRow> {
    let rows: Vec<RawJournalRow> = sqlx::query_as(
        "select lsn::text, seq, coalesce(xid, 0), source_schema, source_table, op::text,
                    before::text, after::text from cdc_events e order by e.lsn, e.seq",
    )
    .fetch_all(olap)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| {
            (
                (r.0, r.1),
                JournalRow {
                    xid: r.2,
                    schema: r.3,
                    table: r.4,
                    op: r.5,
                    before: r.6.as_deref().map(|b| serde_json::from_str(b).unwrap()),
                    after: r.7.as_deref().map(|a| serde_json::from_str(a).unwrap()),
                    before_text: r.6,
                    after_text: r.7,
                },
            )
        })
        .collect()
}

async fn confirmed_flush(c: &Clusters) -> Option<String> {
    let mut oltp = c.oltp_conn().await;
    sqlx::query_scalar(
        "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = 'brewlytics'",
    )
    .fetch_one(&mut oltp)
    .await
    .unwrap()
}

async fn exec(c: &Clusters, sql: &str) {
    let mut oltp = c.oltp_conn().await;
    sqlx::raw_sql(sql).execute(&mut oltp).await.unwrap();
}

/// Checks one message against its journal row, field by field.
fn check_envelope(m: &StreamMsg, j: &JournalRow, lsn: &str, seq: i32) {
    let p = &m.payload;
    let src = &p["source"];
    let what = format!("message {} ({lsn}/{seq})", m.seq);
    assert_eq!(src["connector"], "brewlytics", "{what}");
    assert_eq!(src["name"], "brewlytics", "{what}");
    assert_eq!(src["db"], "coffee_oltp", "{what}");
    assert_eq!(src["schema"], j.schema.as_str(), "{what}");
    assert_eq!(src["table"], j.table.as_str(), "{what}");
    assert_eq!(src["txId"].as_i64(), Some(j.xid), "{what}");
    assert_eq!(src["commit_lsn"], lsn, "{what}");
    assert_eq!(src["seq"].as_i64(), Some(i64::from(seq)), "{what}");
    let lsn_num = {
        let (hi, lo) = lsn.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert_eq!(src["lsn"].as_u64(), Some(lsn_num), "{what}");
    assert!(src["ts_ms"].as_i64().unwrap() > 1_600_000_000_000, "{what}");
    assert!(
        p["ts_ms"].as_i64().unwrap() >= src["ts_ms"].as_i64().unwrap() - 1,
        "{what}"
    );
    let tx_id = format!("{}:{lsn_num}", j.xid);
    assert_eq!(p["transaction"]["id"], tx_id.as_str(), "{what}");
    assert_eq!(m.headers["Brewlytics-Tx-Id"], tx_id, "{what}");
    let order: i64 = m.headers["Brewlytics-Tx-Order"].parse().unwrap();
    assert_eq!(
        p["transaction"]["total_order"].as_i64(),
        Some(order),
        "{what}"
    );
    assert!(
        p["transaction"]["data_collection_order"].as_i64().unwrap() >= 1,
        "{what}"
    );
    let subject_table = format!("brewlytics.{}.{}", j.schema, j.table);
    let want_op = match j.op.as_str() {
        "i" => "c",
        other => other,
    };
    assert_eq!(p["op"], want_op, "{what}");
    match j.op.as_str() {
        "i" | "u" | "d" | "r" => {
            assert_eq!(m.subject, subject_table, "{what}");
            let snapshot = match (j.op.as_str(), j.xid) {
                ("r", 0) => "true",
                ("r", _) => "incremental",
                _ => "false",
            };
            assert_eq!(src["snapshot"], snapshot, "{what}");
            assert_eq!(
                p["before"],
                j.before.clone().unwrap_or(Value::Null),
                "{what}"
            );
            assert_eq!(p["after"], j.after.clone().unwrap_or(Value::Null), "{what}");
            // Exactly as journaled: digits and json text, not through a float.
            #[derive(serde::Deserialize)]
            struct Images<'a> {
                #[serde(borrow)]
                before: Option<&'a serde_json::value::RawValue>,
                #[serde(borrow)]
                after: Option<&'a serde_json::value::RawValue>,
            }
            let images: Images<'_> = serde_json::from_slice(&m.raw).unwrap();
            let text = |r: Option<&serde_json::value::RawValue>| {
                r.map(|r| r.get().to_owned()).filter(|t| t != "null")
            };
            assert_eq!(text(images.before), j.before_text, "{what}");
            assert_eq!(text(images.after), j.after_text, "{what}");
        }
        "t" => {
            assert_eq!(m.subject, subject_table, "{what}");
            assert!(p["before"].is_null() && p["after"].is_null(), "{what}");
            assert_eq!(src["truncate"], j.after.clone().unwrap(), "{what}");
        }
        "s" => {
            assert_eq!(m.subject, "brewlytics.schema", "{what}");
            let after = j.after.as_ref().unwrap();
            assert_eq!(p["table"], after["table"], "{what}");
            assert!(p["steps"].is_array(), "{what}");
        }
        "b" => {
            assert_eq!(m.subject, "brewlytics.backfill", "{what}");
            let after = j.after.as_ref().unwrap();
            assert_eq!(p["backfill"]["id"], after["backfill"], "{what}");
            assert_eq!(p["backfill"]["attempt"], after["attempt"], "{what}");
        }
        other => panic!("unexpected journal op {other}"),
    }
}

async fn wait_loaded(loaded: &brewlytics_support::DbUrl, last_seq: u64, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        let mut conn = harness::connect(loaded).await;
        let seq: Option<i64> = sqlx::query_scalar("select max(stream_seq) from cdc_nats_loader")
            .fetch_one(&mut conn)
            .await
            .ok()
            .flatten();
        if seq.is_some_and(|s| s as u64 >= last_seq) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn loader(
    c: &Clusters,
    name: &str,
    url: &str,
    olap: &brewlytics_support::DbUrl,
    listen: &str,
) -> Proc {
    let mut cmd = c.command(&[
        "load",
        "--from",
        "nats",
        "--nats-url",
        url,
        "--olap-url",
        olap.expose(),
        "--listen",
        listen,
        // Small batches: the copy (one transaction of ~1,700 rows) is applied in parts.
        "--batch-max-changes",
        "500",
    ]);
    cmd.env("RUST_LOG", "info");
    // Its /status and /metrics need a key: the harness's, from the OLTP URL it is given.
    harness::remember_key(listen, &harness::test_key().text);
    Proc::spawn(
        cmd,
        harness::scratch_dir("logs").join(format!("{name}.log")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_once_in_the_stream_through_node_and_replicator_kills_and_loaded_exactly_once()
{
    let t0 = Instant::now();
    let c = Clusters::start();
    c.prepare(100);
    exec(&c, PROBES).await;
    let mut nats = NatsCluster::start(3);
    let url = nats.url();
    let addr = free_addr();
    let args = [
        "--sink",
        "nats",
        "--nats-url",
        &url,
        "--nats-replicas",
        "3",
        "--nats-ack-timeout-ms",
        "3000",
    ];
    let mut r = c.replicator_with("nats-r1", &addr, &args, &[]);
    wait_streaming(&addr, &r).await;

    // About 250 steps a second: a volume that proves something in a bounded time.
    let load = Background::start(c.oltp_url(), 11, Some(Duration::from_millis(4)));

    exec(
        &c,
        "update nats_probe set note = note || '!', doc = doc || '{\"seen\": true}' where id <= 20;
         delete from nats_probe where id between 21 and 30;
         alter table nats_probe add column extra text;
         insert into nats_probe (id, note, extra, flag) values (1001, 'new', 'x', null);
         update nats_probe set id = 2001 where id = 40;",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The stream's leader node dies mid-load, and comes back.
    let leader = stream_leader(&url, "BREWLYTICS")
        .await
        .unwrap_or_else(|| nats.node_names()[0].clone());
    nats.kill9(&leader);
    println!(
        "killed NATS node {leader} (the stream leader) at {:?}",
        t0.elapsed()
    );
    exec(
        &c,
        "truncate nats_trunc; insert into nats_trunc values (1, 'after truncate');",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.restart(&leader);
    println!("restarted {leader} at {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The replicator dies mid-load; a table is backfilled while it restarts.
    assert!(r.is_running(), "replicator exited: {}", r.log_text());
    r.kill9();
    println!("killed the replicator at {:?}", t0.elapsed());
    let out = c.run(&["snapshot", "--table", "nats_probe", "--no-wait"]);
    assert!(out.contains("nats_probe"), "{out}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut r = c.replicator_with("nats-r2", &addr, &args, &[]);
    wait_streaming(&addr, &r).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The backfill's chunks merged before the outage: a chunk merged in a batch whose
    // acknowledgements then fail is merged again at another position, and its first merge's
    // messages stay in the stream (a known gap, in the README's change stream section).
    let mut olap = c.olap_conn().await;
    let start = Instant::now();
    while sqlx::query_scalar::<_, i64>(
        "select count(*) from cdc_backfills where state in ('pending', 'running')",
    )
    .fetch_one(&mut olap)
    .await
    .unwrap()
        > 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "backfill never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // All of NATS away while orders flow: waited out, and nothing is confirmed to the source
    // meanwhile (the slot keeps the WAL).
    for n in nats.node_names() {
        nats.kill9(&n);
    }
    println!("killed every NATS node at {:?}", t0.elapsed());
    // The last batch acknowledged before the outage may still be committed and reported:
    // the position is read once a batch has failed (its acknowledgements timed out).
    let errors = |m: &str| metric_total(m, "brewlytics_nats_errors_total");
    let before = errors(&http_get(&addr, "/metrics").await.unwrap().1);
    let waited = Instant::now();
    while errors(&http_get(&addr, "/metrics").await.unwrap().1) <= before {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no publish failed while every NATS node was down: {}",
            r.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = confirmed_flush(&c).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        confirmed_flush(&c).await,
        during,
        "the slot's position moved while JetStream could store nothing"
    );
    assert!(
        r.is_running(),
        "the replicator gave up during the outage: {}",
        r.log_text()
    );
    nats.restart_all();
    println!("restarted every NATS node at {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = load.stop().await;
    let orders = counts.orders.load(Ordering::Relaxed);
    println!(
        "workload: {orders} orders, {} status changes, {} deletes, {} price changes",
        counts.updates.load(Ordering::Relaxed),
        counts.deletes.load(Ordering::Relaxed),
        counts.price_changes.load(Ordering::Relaxed)
    );
    assert!(orders > 20, "the load wrote too little to prove anything");

    let report = c.converged(Duration::from_secs(90)).await;
    assert!(
        report.all_equal(),
        "OLAP differs from OLTP: {report:#?}\n{}",
        r.log_text()
    );
    // The backfill has merged its chunks.
    let start = Instant::now();
    loop {
        let pending: i64 = sqlx::query_scalar(
            "select count(*) from cdc_backfills where state in ('pending', 'running')",
        )
        .fetch_one(&mut olap)
        .await
        .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "backfill never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last batches commit, then stop the replicator cleanly.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = http_get(&addr, "/metrics").await.unwrap().1;
    let published = metric(&metrics, "brewlytics_nats_published_messages_total").unwrap();
    assert!(published > 0.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "brewlytics_nats_unacknowledged_bytes"),
        Some(0.0)
    );
    println!(
        "second replicator: {published} published, {} resends dropped by JetStream's dedup, {} not resent (already in the stream)",
        metric(&metrics, "brewlytics_nats_duplicates_total").unwrap_or(-1.0),
        metric(&metrics, "brewlytics_nats_skipped_messages_total").unwrap_or(-1.0)
    );
    let status = http_get(&addr, "/status").await.unwrap().1;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["replicator"]["nats"]["stream"], "BREWLYTICS",
        "{status}"
    );
    assert!(r.terminate(Duration::from_secs(30)).success());
    println!("pipeline done at {:?}", t0.elapsed());

    // Every journal position in the stream exactly once.
    let msgs = read_stream(&url, "BREWLYTICS").await;
    println!("stream read at {:?}", t0.elapsed());
    let journal = journal(&mut olap).await;
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for m in &msgs {
        *per_id.entry(m.headers["Nats-Msg-Id"].as_str()).or_default() += 1;
    }
    let dups: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "stream: {} messages, {} ids, {} duplicated; journal: {} events",
        msgs.len(),
        per_id.len(),
        dups.len(),
        journal.len()
    );
    assert!(dups.is_empty(), "ids published twice: {dups:?}");
    let journal_ids: std::collections::BTreeSet<String> = journal
        .keys()
        .map(|(lsn, seq)| format!("brewlytics:{lsn}:{seq}"))
        .collect();
    let stream_ids: std::collections::BTreeSet<String> =
        per_id.keys().map(|s| s.to_string()).collect();
    let missing: Vec<_> = journal_ids.difference(&stream_ids).take(5).collect();
    let extra: Vec<_> = stream_ids.difference(&journal_ids).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stream and journal differ: missing {missing:?}, extra {extra:?}"
    );

    // Each op's envelope, field by field, against its journal row; every op was seen.
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_of_tx: HashMap<String, (i64, bool)> = HashMap::new();
    for m in &msgs {
        let id = &m.headers["Nats-Msg-Id"];
        let mut parts = id.rsplitn(3, ':');
        let seq: i32 = parts.next().unwrap().parse().unwrap();
        let lsn = parts.next().unwrap().to_owned();
        let j = &journal[&(lsn.clone(), seq)];
        check_envelope(m, j, &lsn, seq);
        *ops.entry(m.payload["op"].as_str().unwrap().to_owned())
            .or_default() += 1;
        let tx = m.headers["Brewlytics-Tx-Id"].clone();
        let order: i64 = m.headers["Brewlytics-Tx-Order"].parse().unwrap();
        let last = m.headers.contains_key("Brewlytics-Tx-Last");
        if last {
            assert_eq!(
                m.headers["Brewlytics-Tx-Events"].parse::<i64>().unwrap(),
                order,
                "{id}"
            );
        }
        let e = last_of_tx.entry(tx).or_insert((0, false));
        assert!(!e.1, "{id}: a message after its transaction's last");
        assert_eq!(order, e.0 + 1, "{id}: transaction order");
        *e = (order, last);
    }
    println!("ops in the stream: {ops:?}");
    // One message of each op, for reading (the README's examples come from here).
    let mut samples = serde_json::Map::new();
    for m in &msgs {
        let op = m.payload["op"].as_str().unwrap().to_owned();
        samples.entry(op).or_insert_with(|| {
            serde_json::json!({"subject": m.subject, "headers": m.headers, "payload": m.payload})
        });
    }
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nats-envelopes.json"),
        serde_json::to_string_pretty(&samples).unwrap(),
    );
    for op in ["c", "u", "d", "r", "t", "s", "b"] {
        assert!(
            ops.contains_key(op),
            "no {op} message in the stream: {ops:?}"
        );
    }
    assert!(
        last_of_tx.values().all(|(_, last)| *last),
        "a transaction without its last message"
    );

    // A second OLAP database, loaded from the stream (the loader killed once on the way).
    c.olap.ensure_database("coffee_olap_loaded").unwrap();
    let loaded = c.olap.url("coffee_olap_loaded");
    let laddr = free_addr();
    let mut l = loader(&c, "loader-1", &url, &loaded, &laddr);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(l.is_running(), "loader exited: {}", l.log_text());
    l.kill9();
    let mut l = loader(&c, "loader-2", &url, &loaded, &laddr);
    let last_seq = msgs.last().map(|m| m.seq).unwrap();
    assert!(
        wait_loaded(&loaded, last_seq, Duration::from_secs(90)).await,
        "the loader did not reach stream sequence {last_seq}: {}",
        l.log_text()
    );
    println!("loaded from the stream at {:?}", t0.elapsed());
    let mut oltp = c.oltp_conn().await;
    let mut lconn = harness::connect(&loaded).await;
    let report = verify::compare(&mut oltp, &mut lconn, "brewlytics")
        .await
        .unwrap();
    assert!(
        report.all_equal(),
        "OLAP loaded from the stream differs from OLTP: {report:#?}\n{}",
        l.log_text()
    );
    assert_eq!(
        star_fingerprint_of(&mut lconn).await,
        c.star_fingerprint().await,
        "the loaded star differs from the direct path's"
    );
    // The loaded journal is the direct path's, event for event, every column.
    let sql = "select lsn::text, seq, concat_ws('|', xid, commit_ts, source_schema, source_table,
                    op, key::text, before::text, after::text, json_nulls::text)
               from cdc_events e order by e.lsn, e.seq";
    let loaded_rows: Vec<(String, i32, String)> =
        sqlx::query_as(sql).fetch_all(&mut lconn).await.unwrap();
    let direct_rows: Vec<(String, i32, String)> =
        sqlx::query_as(sql).fetch_all(&mut olap).await.unwrap();
    let diffs: Vec<_> = loaded_rows
        .iter()
        .zip(&direct_rows)
        .filter(|(x, y)| x != y)
        .take(3)
        .collect();
    assert!(
        diffs.is_empty() && loaded_rows.len() == direct_rows.len(),
        "the loaded journal ({} events) differs from the direct path's ({}): {diffs:#?}",
        loaded_rows.len(),
        direct_rows.len()
    );
    // The loader's /status and /metrics are refused without a key; /health stays open.
    for path in ["/status", "/metrics"] {
        let refused = harness::exchange(&laddr, "GET", path, &[], None).unwrap();
        assert_eq!(
            refused.status, 401,
            "loader {path} without a key: {}",
            refused.body
        );
    }
    let health = harness::exchange(&laddr, "GET", "/health", &[], None).unwrap();
    assert_eq!(health.status, 200, "loader /health: {}", health.body);
    // The consumer's lag is looked up about once a second: caught up, it reads 0 soon.
    let waited = Instant::now();
    loop {
        let lm = http_get(&laddr, "/metrics").await.unwrap().1;
        if metric(&lm, "brewlytics_nats_loader_pending_messages") == Some(0.0) {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "the loader's consumer lag never read 0: {lm}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `brewlytics status` shows the stream, the publisher's committed sequence and the
    // loader's consumer lag.
    let out = c
        .command(&["status", "--json", "--nats-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = &status["nats"]["stream"];
    assert_eq!(stream["last_seq"].as_u64(), Some(last_seq), "{status}");
    assert_eq!(stream["replicas"], 3, "{status}");
    let consumer = stream["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "brewlytics-loader")
        .unwrap_or_else(|| panic!("no loader consumer in {status}"));
    assert_eq!(consumer["pending_messages"], 0, "{status}");
    assert_eq!(
        status["nats"]["published"][0]["stream_seq"].as_u64(),
        Some(last_seq),
        "{status}"
    );
    assert!(l.terminate(Duration::from_secs(30)).success());
    println!("done in {:?}", t0.elapsed());
}
