//! The sink contract (replicator/src/sink/mod.rs), checked through the pipeline's own
//! applier (`pipeline::apply::Sinks`, the type `replicate` runs), once with OLAP alone
//! (`--sink olap`) and once with the NATS publisher beside it on a real 3-node JetStream
//! cluster (`--sink nats`), OLAP on a real PostgreSQL server: changes stored in order, also
//! when a transaction comes in parts; a position stored once however often it is written
//! (abandoned and written again, or stored by the secondary, never committed with the
//! checkpoint, and written again by a new process after JetStream's dedup window has
//! passed); and everything written is stored once the commit returns.

mod harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use brewlytics_replicator::batch::CommitMark;
use brewlytics_replicator::change::{Body, Change, Pos, RowChange, SchemaChange, TxContext};
use brewlytics_replicator::decode::{ReplicaIdentity, TupleData, TupleValue};
use brewlytics_replicator::lsn::Lsn;
use brewlytics_replicator::pipeline::apply::Sinks;
use brewlytics_replicator::pipeline::read::{Commit, Work};
use brewlytics_replicator::schema::plan::Step;
use brewlytics_replicator::sink::nats::envelope::Origin;
use brewlytics_replicator::sink::nats::{NatsConfig, NatsError, NatsSink};
use brewlytics_replicator::sink::olap::{OlapSink, OlapWriter, OnError};
use brewlytics_replicator::sink::{Encode, PartEnd, PrimarySink, Sink};
use brewlytics_replicator::table::{replica_name, Column, SourceTable};
use brewlytics_support::{ClusterOptions, DbUrl, EmbeddedCluster};
use harness::nats::NatsCluster;

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
        published: Default::default(),
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

/// The reader's work for `changes`, encoded by the sinks' own encoders (`enc`, one per
/// process, as the reader keeps it): a batch committed at `commit`, or (None) a part of a
/// transaction whose end is yet to come.
fn work<E: Encode>(enc: &mut E, changes: &[Change], commit: Option<CommitMark>) -> Work<E::Part> {
    Work {
        parts: enc.encode(changes),
        commit: commit.map(|mark| Commit {
            mark,
            transactions: 1,
            heartbeat: None,
        }),
        changes: changes.len(),
        first: changes.first().map(|c| c.pos),
    }
}

/// The sink beside OLAP under the contract: how a new process makes it, and what it stored.
#[allow(async_fn_in_trait)]
trait Secondary {
    type S: Sink<Error = NatsError>;
    /// A fresh instance, as a new process makes it (not yet resumed).
    async fn open(&mut self) -> Self::S;
    /// The positions durably stored, in the order stored (None: no secondary sink).
    async fn stored(&mut self) -> Option<Vec<Pos>>;
    /// Whether a secondary stores apart from OLAP (a crash between its commit and OLAP's
    /// leaves it ahead of the checkpoint).
    fn stores_apart(&self) -> bool;
}

struct Olap {
    url: DbUrl,
}

impl Olap {
    /// The OLAP sink of a new process.
    async fn open(&self) -> OlapSink {
        OlapSink::connect(&self.url, SLOT, OnError::Stop)
            .await
            .unwrap()
    }

    /// The journal's positions, in order (read on another connection: durable).
    async fn stored(&self) -> Vec<Pos> {
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

    async fn value_of(&self, id: i32) -> Option<String> {
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

    async fn checkpoint(&self) -> Option<Lsn> {
        let mut conn = harness::connect(&self.url).await;
        brewlytics_replicator::checkpoint::load(&mut conn, SLOT)
            .await
            .unwrap()
            .map(|c| c.lsn)
    }
}

/// Checks both stores hold exactly `want`, in order.
async fn assert_stored<T: Secondary>(olap: &Olap, s: &mut T, want: &[Pos], what: &str) {
    assert_eq!(olap.stored().await, want, "OLAP: {what}");
    if let Some(stored) = s.stored().await {
        assert_eq!(stored, want, "beside OLAP: {what}");
    }
}

/// A new process's sinks, resumed as a session resumes them after `checkpoint`.
async fn resumed<T: Secondary>(olap: &Olap, s: &mut T, checkpoint: Lsn) -> Sinks<OlapSink, T::S> {
    let mut sinks = Sinks::new(olap.open().await, s.open().await);
    sinks.resume_secondary(Some(checkpoint)).await.unwrap();
    sinks.primary.resume(checkpoint).await.unwrap();
    sinks
}

async fn contract<T: Secondary>(olap: &Olap, s: &mut T) {
    // A first start over an empty source: nothing copied, the checkpoint at its point.
    let mut sinks = Sinks::new(olap.open().await, s.open().await);
    sinks.resume_secondary(None).await.unwrap();
    sinks.primary.writer().begin().await.unwrap();
    let tx0 = sinks.primary.tx();
    let copied = sinks.secondary.write_copy(tx0, Lsn(0x100)).await.unwrap();
    assert_eq!(copied, 0);
    let copy_end = CommitMark {
        end_lsn: Lsn(0x100),
        commit_ts: None,
    };
    sinks.commit(&copy_end).await.unwrap();
    assert_eq!(olap.checkpoint().await, Some(Lsn(0x100)));
    sinks.primary.resume(Lsn(0x100)).await.unwrap();
    let mut enc = sinks.encoder();

    // Ordered: a batch of two transactions (the second updates the first's row).
    let t1 = tx(0x1000, &[(1, "a"), (2, "b")], true);
    let t2 = tx(0x2000, &[(1, "a2"), (3, "c")], false);
    let both: Vec<Change> = t1.iter().chain(&t2).cloned().collect();
    let w = work(&mut enc, &both, Some(mark(0x2000)));
    let (stats, _) = sinks.apply(&w).await.unwrap().expect("a batch commits");
    assert_eq!(stats.events, 5);
    let mut want = positions(&both);
    assert_stored(olap, s, &want, "stored in order, once").await;
    assert_eq!(
        olap.value_of(1).await.as_deref(),
        Some("a2"),
        "applied in order"
    );
    assert_eq!(olap.checkpoint().await, Some(Lsn(0x2001)));

    // A transaction larger than a batch: parts, nothing durable before its end.
    let t3 = tx(0x3000, &[(4, "d"), (5, "e"), (4, "d2")], false);
    let first = work(&mut enc, &t3[..2], None);
    assert!(
        sinks.apply(&first).await.unwrap().is_none(),
        "a part commits nothing"
    );
    // OLAP holds nothing of it yet (a stream may hold some: not recorded, found again).
    assert_eq!(
        olap.stored().await,
        want,
        "nothing of a transaction before its end"
    );
    let rest = work(&mut enc, &t3[2..], Some(mark(0x3000)));
    sinks.apply(&rest).await.unwrap().expect("its end commits");
    want.extend(positions(&t3));
    assert_stored(olap, s, &want, "a transaction in parts, in order").await;
    assert_eq!(olap.value_of(4).await.as_deref(), Some("d2"));

    // Abandoned after a part, then written again whole: stored once.
    let t4 = tx(0x4000, &[(6, "f"), (7, "g")], false);
    let part = work(&mut enc, &t4[..1], None);
    sinks.apply(&part).await.unwrap();
    sinks.abandon().await.unwrap();
    let whole = work(&mut enc, &t4, Some(mark(0x4000)));
    sinks.apply(&whole).await.unwrap();
    want.extend(positions(&t4));
    assert_stored(olap, s, &want, "durable once the commit returned").await;

    // Stored beside OLAP, never committed with the checkpoint (a crash between the two
    // commits); a new process writes it again after the checkpoint.
    let t5 = tx(0x5000, &[(8, "h"), (9, "i")], false);
    let w5 = work(&mut enc, &t5, Some(mark(0x5000)));
    sinks
        .write(&w5.parts, PartEnd::TransactionEnd)
        .await
        .unwrap();
    let tx5 = sinks.primary.tx();
    sinks.secondary.commit(tx5, &mark(0x5000)).await.unwrap();
    drop(sinks);
    if s.stores_apart() {
        // Past JetStream's dedup window: only the sink itself can tell the resend.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    assert_eq!(
        olap.checkpoint().await,
        Some(Lsn(0x4001)),
        "OLAP did not commit"
    );
    let mut sinks = resumed(olap, s, Lsn(0x4001)).await;
    let mut enc = sinks.encoder();
    let w5 = work(&mut enc, &t5, Some(mark(0x5000)));
    sinks.apply(&w5).await.unwrap();
    want.extend(positions(&t5));
    assert_stored(olap, s, &want, "a resend after a restart is stored once").await;
    assert_eq!(olap.value_of(9).await.as_deref(), Some("i"));
    assert_eq!(olap.checkpoint().await, Some(Lsn(0x5001)));
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

/// `--sink olap`: no sink beside OLAP.
struct OlapAlone;

impl Secondary for OlapAlone {
    type S = Option<NatsSink>;
    async fn open(&mut self) -> Option<NatsSink> {
        None
    }
    async fn stored(&mut self) -> Option<Vec<Pos>> {
        None
    }
    fn stores_apart(&self) -> bool {
        false
    }
}

/// `--sink nats`: the publisher beside OLAP.
struct Nats {
    cfg: NatsConfig,
    origin: Origin,
}

impl Nats {
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

    async fn sink(&self) -> NatsSink {
        let metrics = brewlytics_replicator::telemetry::Telemetry::new()
            .nats
            .clone();
        NatsSink::connect(&self.cfg, self.origin.clone(), metrics)
            .await
            .unwrap()
    }
}

impl Secondary for Nats {
    type S = Option<NatsSink>;
    async fn open(&mut self) -> Option<NatsSink> {
        Some(self.sink().await)
    }
    async fn stored(&mut self) -> Option<Vec<Pos>> {
        Some(self.messages().await.into_iter().map(|m| m.0).collect())
    }
    fn stores_apart(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn olap_alone_keeps_the_sink_contract() {
    let (_cluster, url) = olap_db().await;
    contract(&Olap { url }, &mut OlapAlone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn olap_and_the_nats_publisher_keep_the_sink_contract() {
    let (_cluster, url) = olap_db().await;
    let olap = Olap { url };
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
    let mut subject = Nats { cfg, origin };
    contract(&olap, &mut subject).await;
    // The transaction boundaries: each transaction's last message says so, with its count;
    // the one that came in parts too.
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
            (at(0x3000, 3), 3),
            (at(0x4000, 2), 2),
            (at(0x5000, 2), 2)
        ]
    );
    let value_of = |id: i32| {
        msgs.iter()
            .rfind(|m| m.2["after"]["id"] == id)
            .and_then(|m| m.2["after"]["v"].as_str().map(str::to_owned))
    };
    assert_eq!(value_of(1).as_deref(), Some("a2"));
    assert_eq!(value_of(9).as_deref(), Some("i"));

    // Another writer on the stream: a change that would no longer follow the stream's last
    // message is refused, not stored after it; the next start stops and says what to do.
    let mut sinks = resumed(&olap, &mut subject, Lsn(0x5001)).await;
    let mut enc = sinks.encoder();
    let servers: Vec<&str> = subject.cfg.url.split(',').collect();
    let js = async_nats::jetstream::new(async_nats::connect(servers.as_slice()).await.unwrap());
    let foreign = js
        .publish("contract.someone.else", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let t6 = tx(0x6000, &[(10, "j")], false);
    let w6 = work(&mut enc, &t6, Some(mark(0x6000)));
    let err = sinks.apply(&w6).await.unwrap_err();
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
    drop(sinks);
    assert_eq!(
        olap.checkpoint().await,
        Some(Lsn(0x5001)),
        "OLAP did not commit"
    );
    let mut sinks = Sinks::new(olap.open().await, subject.open().await);
    let err = sinks.resume_secondary(Some(Lsn(0x5001))).await.unwrap_err();
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
