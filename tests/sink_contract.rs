//! The sink contract (replicator/src/sink/mod.rs), checked against both implementations — the
//! OLAP writer on a real PostgreSQL server and the NATS publisher on a real 3-node JetStream
//! cluster: changes stored in order; a position stored once however often it is written
//! (abandoned and written again, or — for the publisher — stored, never acknowledged to the
//! pipeline, and written again by a new process after JetStream's dedup window has passed);
//! and everything written is stored once `commit` returns.

mod harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use brewlytics_replicator::batch::CommitMark;
use brewlytics_replicator::change::{Body, Change, Pos, RowChange, SchemaChange, TxContext};
use brewlytics_replicator::decode::{ReplicaIdentity, TupleData, TupleValue};
use brewlytics_replicator::lsn::Lsn;
use brewlytics_replicator::schema::plan::Step;
use brewlytics_replicator::sink::nats::envelope::{Encoder, Item, Message, Origin};
use brewlytics_replicator::sink::nats::{publish, NatsConfig, NatsSink};
use brewlytics_replicator::sink::olap::encode::{encode, Encoded};
use brewlytics_replicator::sink::olap::journal::JournalEncoder;
use brewlytics_replicator::sink::olap::{OlapWriter, OnError};
use brewlytics_replicator::sink::{OlapSink, Sink};
use brewlytics_replicator::table::{replica_name, Column, SourceTable};
use brewlytics_support::{ClusterOptions, DbUrl, EmbeddedCluster};
use harness::nats::NatsCluster;
use sqlx::PgConnection;

const SLOT: &str = "contract";

fn table() -> Arc<SourceTable> {
    let col = |name: &str, attnum: i16, type_oid: u32, olap_type: &str| Column {
        name: name.into(),
        attnum: Some(attnum),
        type_oid,
        typmod: -1,
        olap_type: olap_type.into(),
    };
    Arc::new(SourceTable {
        oid: 1,
        schema: "public".into(),
        name: "contract_t".into(),
        replica: replica_name("public", "contract_t").into(),
        columns: vec![col("id", 1, 23, "integer"), col("v", 2, 25, "text")],
        key: vec![0],
        identity: ReplicaIdentity::Default,
    })
}

fn text(s: &str) -> TupleValue {
    TupleValue::Text(bytes::Bytes::copy_from_slice(s.as_bytes()))
}

/// A source transaction at commit LSN `lsn`: upserts of `(id, v)` (the first time a schema
/// event creates the table).
fn tx(lsn: u64, rows: &[(i32, &str)], create: bool) -> Vec<Change> {
    let ctx = TxContext {
        lsn: Lsn(lsn),
        xid: lsn as u32,
        commit_ts: 700_000_000_000_000 + lsn as i64,
    };
    let t = table();
    let mut out = Vec::new();
    let mut seq = 0;
    if create {
        seq += 1;
        out.push(Change::new(
            ctx,
            seq,
            Body::Schema(Arc::new(SchemaChange {
                before: None,
                after: t.clone(),
                steps: vec![Step::CreateTable],
                backfill: None,
            })),
        ));
    }
    for (id, v) in rows {
        seq += 1;
        out.push(Change::new(
            ctx,
            seq,
            Body::Row(RowChange {
                table: t.clone(),
                op: brewlytics_replicator::change::Op::Insert,
                old: None,
                new: Some(TupleData {
                    columns: vec![text(&id.to_string()), text(v)],
                }),
            }),
        ));
    }
    out
}

fn mark(lsn: u64) -> CommitMark {
    CommitMark {
        end_lsn: Lsn(lsn + 1),
        commit_ts: None,
    }
}

fn positions(changes: &[Change]) -> Vec<Pos> {
    changes.iter().map(|c| c.pos).collect()
}

/// One implementation under the contract: how to make it, feed it and read what it stored.
#[allow(async_fn_in_trait)]
trait Subject {
    type S: Sink;
    /// A fresh instance (as a new process would make), resumed after the last commit.
    async fn open(&mut self) -> Self::S;
    fn part(&mut self, changes: &[Change]) -> <Self::S as Sink>::Part;
    /// What the pipeline does once the sink's commit returned (recorded with the checkpoint).
    async fn committed(&mut self, sink: &mut Self::S, receipt: <Self::S as Sink>::Receipt);
    /// The positions durably stored, in the order stored.
    async fn stored(&mut self) -> Vec<Pos>;
    /// The value of row `id` as the sink holds it last (order of application).
    async fn value_of(&mut self, id: i32) -> Option<String>;
    /// Whether a position written and acknowledged but never recorded (a crash between the
    /// sink's commit and the pipeline's) can be left behind: the publisher's case.
    fn acknowledges_apart(&self) -> bool;
}

async fn contract<T: Subject>(s: &mut T)
where
    <<T as Subject>::S as Sink>::Error: std::fmt::Debug,
{
    let mut sink = s.open().await;
    sink.resume(None).await.unwrap();

    // Ordered: two parts of one batch (the second updates the first's row), one commit.
    let t1 = tx(0x1000, &[(1, "a"), (2, "b")], true);
    let t2 = tx(0x2000, &[(1, "a2"), (3, "c")], false);
    let p1 = s.part(&t1);
    let p2 = s.part(&t2);
    sink.write(&p1).await.unwrap();
    sink.write(&p2).await.unwrap();
    let r = sink.commit(&mark(0x2000)).await.unwrap();
    s.committed(&mut sink, r).await;
    let mut want: Vec<Pos> = positions(&t1);
    want.extend(positions(&t2));
    assert_eq!(s.stored().await, want, "stored in order, once");
    assert_eq!(
        s.value_of(1).await.as_deref(),
        Some("a2"),
        "applied in order"
    );

    // Abandoned, then written again: stored once.
    let t3 = tx(0x3000, &[(4, "d")], false);
    let p3 = s.part(&t3);
    sink.write(&p3).await.unwrap();
    sink.abandon().await.unwrap();
    sink.write(&p3).await.unwrap();
    let r = sink.commit(&mark(0x3000)).await.unwrap();
    // Durable once commit returns: read by another connection.
    want.extend(positions(&t3));
    assert_eq!(s.stored().await, want, "durable once commit returned");
    s.committed(&mut sink, r).await;

    // Written, stored, never recorded (a crash); a new process resends after the checkpoint.
    let t4 = tx(0x4000, &[(5, "e"), (6, "f")], false);
    let p4 = s.part(&t4);
    sink.write(&p4).await.unwrap();
    if s.acknowledges_apart() {
        let _unrecorded = sink.commit(&mark(0x4000)).await.unwrap();
        // Past JetStream's dedup window: only the sink itself can tell the resend.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    } else {
        sink.abandon().await.unwrap();
    }
    drop(sink);
    let mut sink = s.open().await;
    sink.resume(Some(Lsn(0x3001))).await.unwrap();
    let p4 = s.part(&t4);
    sink.write(&p4).await.unwrap();
    let r = sink.commit(&mark(0x4000)).await.unwrap();
    s.committed(&mut sink, r).await;
    want.extend(positions(&t4));
    assert_eq!(
        s.stored().await,
        want,
        "a resend after a restart is stored once"
    );
    assert_eq!(s.value_of(6).await.as_deref(), Some("f"));
}

async fn olap_db() -> (EmbeddedCluster, DbUrl) {
    let cluster = EmbeddedCluster::start(ClusterOptions::throwaway()).expect("OLAP cluster");
    cluster.ensure_database("coffee_olap").unwrap();
    let url = cluster.url("coffee_olap");
    let pool = sqlx::PgPool::connect_with(url.connect_options().unwrap())
        .await
        .unwrap();
    brewlytics_support::migrate::olap(&pool).await.unwrap();
    pool.close().await;
    (cluster, url)
}

struct Olap {
    url: DbUrl,
    journal: JournalEncoder,
}

impl Subject for Olap {
    type S = OlapSink;
    async fn open(&mut self) -> OlapSink {
        OlapSink {
            writer: OlapWriter::connect(&self.url, OnError::Stop).await.unwrap(),
            slot: SLOT.into(),
        }
    }
    fn part(&mut self, changes: &[Change]) -> Encoded {
        encode(&mut self.journal, changes)
    }
    async fn committed(
        &mut self,
        _: &mut OlapSink,
        _: brewlytics_replicator::telemetry::ApplyStats,
    ) {
    }
    async fn stored(&mut self) -> Vec<Pos> {
        let mut conn = harness::connect(&self.url).await;
        let rows: Vec<(String, i32)> =
            sqlx::query_as("select lsn::text, seq from cdc_events e order by e.lsn, e.seq")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(l, seq)| Pos {
                lsn: l.parse().unwrap(),
                seq,
            })
            .collect()
    }
    async fn value_of(&mut self, id: i32) -> Option<String> {
        let mut conn = harness::connect(&self.url).await;
        sqlx::query_scalar(&format!(
            "select v from replica.{} where id = $1",
            replica_name("public", "contract_t")
        ))
        .bind(id)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
    }
    fn acknowledges_apart(&self) -> bool {
        false
    }
}

struct Nats {
    cfg: NatsConfig,
    olap: DbUrl,
    origin: Origin,
    encoder: Encoder,
}

impl Nats {
    async fn conn(&self) -> PgConnection {
        harness::connect(&self.olap).await
    }

    async fn messages(&self) -> Vec<(Pos, HashMap<String, String>, serde_json::Value)> {
        let servers: Vec<&str> = self.cfg.url.split(',').collect();
        let client = async_nats::connect(servers.as_slice()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let s = js.get_stream(&self.cfg.stream).await.unwrap();
        let info = s.get_info().await.unwrap();
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let Ok(m) = s.get_raw_message(seq).await else {
                continue;
            };
            let headers: HashMap<String, String> = m
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        v.first().map(|v| v.to_string()).unwrap_or_default(),
                    )
                })
                .collect();
            let (_, pos) = brewlytics_replicator::sink::nats::envelope::parse_message_id(
                Some(SLOT),
                &headers["Nats-Msg-Id"],
            )
            .unwrap();
            out.push((pos, headers, serde_json::from_slice(&m.payload).unwrap()));
        }
        out
    }
}

impl Subject for Nats {
    type S = NatsSink;
    async fn open(&mut self) -> NatsSink {
        let metrics = brewlytics_replicator::telemetry::Telemetry::new()
            .nats
            .clone();
        let mut sink = NatsSink::connect(&self.cfg, self.origin.clone(), metrics)
            .await
            .unwrap();
        sink.load_committed(&mut self.conn().await).await.unwrap();
        sink
    }
    fn part(&mut self, changes: &[Change]) -> Vec<Message> {
        self.encoder
            .encode(changes)
            .items
            .into_iter()
            .map(|i| match i {
                Item::Ready(m) => m,
                Item::Backfill(_) => unreachable!("no backfill here"),
            })
            .collect()
    }
    async fn committed(&mut self, sink: &mut NatsSink, receipt: publish::Published) {
        publish::record(
            &mut self.conn().await,
            SLOT,
            sink.stream_name(),
            receipt.stream_seq,
        )
        .await
        .unwrap();
    }
    async fn stored(&mut self) -> Vec<Pos> {
        self.messages().await.into_iter().map(|m| m.0).collect()
    }
    async fn value_of(&mut self, id: i32) -> Option<String> {
        self.messages()
            .await
            .into_iter()
            .rfind(|m| m.2["after"]["id"] == id)
            .and_then(|m| m.2["after"]["v"].as_str().map(str::to_owned))
    }
    fn acknowledges_apart(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_olap_writer_keeps_the_sink_contract() {
    let (_cluster, url) = olap_db().await;
    contract(&mut Olap {
        url,
        journal: JournalEncoder::default(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_publisher_keeps_the_sink_contract() {
    let (_cluster, olap) = olap_db().await;
    let nats = NatsCluster::start(3);
    let mut cfg = NatsConfig::new(&nats.url());
    cfg.stream = "CONTRACT".into();
    cfg.prefix = "contract".into();
    cfg.replicas = 3;
    cfg.duplicate_window = Duration::from_secs(1);
    let origin = Origin {
        prefix: cfg.prefix.clone(),
        slot: SLOT.into(),
        db: "coffee_oltp".into(),
    };
    let mut subject = Nats {
        encoder: Encoder::new(origin.clone()),
        cfg,
        olap,
        origin,
    };
    contract(&mut subject).await;
    // The transaction boundaries: each transaction's last message says so, with its count.
    let msgs = subject.messages().await;
    let lasts: Vec<(Pos, i64)> = msgs
        .iter()
        .filter(|m| m.1.get("Brewlytics-Tx-Last").is_some_and(|v| v == "true"))
        .map(|m| (m.0, m.1["Brewlytics-Tx-Events"].parse().unwrap()))
        .collect();
    let at = |lsn: u64, seq: i32| Pos { lsn: Lsn(lsn), seq };
    assert_eq!(
        lasts,
        vec![
            (at(0x1000, 3), 3),
            (at(0x2000, 2), 2),
            (at(0x3000, 1), 1),
            (at(0x4000, 2), 2)
        ]
    );

    // Another writer on the stream: a change that would no longer follow the stream's last
    // message is refused, not stored after it; the next start stops and says what to do.
    let mut sink = subject.open().await;
    sink.resume(Some(Lsn(0x4001))).await.unwrap();
    let servers: Vec<&str> = subject.cfg.url.split(',').collect();
    let js = async_nats::jetstream::new(async_nats::connect(servers.as_slice()).await.unwrap());
    let foreign = js
        .publish("contract.someone.else", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let t5 = tx(0x5000, &[(7, "g")], false);
    let p5 = subject.part(&t5);
    sink.write(&p5).await.unwrap();
    let err = sink.commit(&mark(0x5000)).await.unwrap_err();
    assert!(
        err.is_retryable() && err.to_string().contains("not the one this change follows"),
        "{err}"
    );
    let info = js
        .get_stream("CONTRACT")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(
        info.state.last_sequence, foreign.sequence,
        "nothing stored after it"
    );
    drop(sink);
    let mut sink = subject.open().await;
    let err = sink.resume(Some(Lsn(0x4001))).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("--nats-stream"), "{err}");
}

/// The journal reads back in position order where the LSN's text does not sort as the LSN
/// (`0/10000000` before `0/F0000000` as text): replay, the publisher's copy and the backfill
/// read pieces by position, and a piece ordered by text would skip the changes between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_reads_back_in_position_order() {
    use brewlytics_replicator::sink::olap::journal;
    let (_cluster, url) = olap_db().await;
    let mut conn = harness::connect(&url).await;
    let lsns = [
        "0/FFFFFF0",
        "0/10000000",
        "0/F0000000",
        "1/0",
        "1/A",
        "10/0",
        "2/0",
    ];
    for lsn in lsns {
        for seq in [-5, 1, 2] {
            sqlx::query(
                "insert into cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op, key, after)
                 values ($1::pg_lsn, $2, 7, now(), 'public', 't', 'i', '{\"id\": 1}', '{\"id\": 1}')",
            )
            .bind(lsn)
            .bind(seq)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    let mut want: Vec<Pos> = lsns
        .iter()
        .flat_map(|l| {
            [-5, 1, 2].map(|seq| Pos {
                lsn: l.parse().unwrap(),
                seq,
            })
        })
        .collect();
    want.sort();

    let mut got = Vec::new();
    let mut after = Pos {
        lsn: Lsn(0),
        seq: i32::MIN,
    };
    loop {
        let rows = journal::read_after(&mut conn, after, 2).await.unwrap();
        let Some(last) = rows.last() else { break };
        after = last.pos;
        got.extend(rows.iter().map(|r| r.pos));
    }
    assert_eq!(got, want, "read_after in pieces of 2");

    let end = Pos {
        lsn: "FFFF/0".parse().unwrap(),
        seq: 0,
    };
    let range = journal::read_table_range(&mut conn, "public", "t", Lsn(0), end)
        .await
        .unwrap();
    let got: Vec<Pos> = range.iter().map(|r| r.pos).collect();
    assert_eq!(got, want, "read_table_range");
}

/// A backfill chunk copied with columns the replica no longer has at the chunk's watermark (a
/// DDL the stream followed in between) is not merged: the backfill starts again, the replica
/// is untouched, and the apply goes on (before, the merge failed and stopped replication).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_copied_with_other_columns_is_copied_again() {
    use brewlytics_replicator::change::ChunkMerge;
    use brewlytics_replicator::sink::olap::backfill;
    let (_cluster, url) = olap_db().await;
    let mut conn = harness::connect(&url).await;
    let t = table();
    sqlx::query(&format!(
        "create table {} (id integer primary key, v text)",
        t.replica_ident()
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let id: i64 = sqlx::query_scalar(
        "insert into cdc_backfills (source_schema, source_table, reason, state)
         values ('public', 'contract_t', 'test', 'running') returning id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "insert into cdc_backfill_chunks (backfill_id, attempt, chunk, snapshot, from_lsn, rows)
         values ($1, 'a1', 1, '10:10:', '0/10', 1)",
    )
    .bind(id)
    .execute(&mut conn)
    .await
    .unwrap();
    // The worker copied the chunk while the table had a column `w` instead of `v`.
    let mut then = (*t).clone();
    then.columns[1].name = "w".into();
    sqlx::query(&backfill::chunk_table_sql(id, &then))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "insert into {} values (1, null, null, null, 1, 'x')",
        backfill::chunk_table(id)
    ))
    .execute(&mut conn)
    .await
    .unwrap();

    let mut w = OlapWriter::connect(&url, OnError::Stop).await.unwrap();
    w.begin().await.unwrap();
    let m = ChunkMerge {
        table: t.clone(),
        backfill_id: id,
        attempt: "a1".into(),
    };
    backfill::merge(
        &mut w,
        &m,
        Pos {
            lsn: Lsn(0x20),
            seq: 1,
        },
    )
    .await
    .expect("the merge goes on");
    w.commit_without_checkpoint().await.unwrap();

    let states: Vec<(i64, String)> = sqlx::query_as(
        "select id, state from cdc_backfills where source_table = 'contract_t' order by id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(states.len(), 2, "{states:?}");
    assert_eq!(states[0], (id, "cancelled".to_owned()));
    assert_eq!(states[1].1, "pending", "a new copy is requested");
    let left: Option<String> = sqlx::query_scalar("select to_regclass($1)::text")
        .bind(backfill::chunk_table(id))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, None, "the stale chunk is dropped");
    let rows: i64 = sqlx::query_scalar(&format!("select count(*) from {}", t.replica_ident()))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing of the stale chunk reached the replica");
}
