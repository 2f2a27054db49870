//! The Brewlytics CDC streamer: a `pgoutput` logical replication slot on the transactional
//! database, applied to the analytical database exactly once.
//!
//! ```text
//! stream (stream/) → decode (decode/) → batch (batch.rs) → encode → apply (sink/) → feedback
//!        └──────────── pipeline/read.rs ──────────────────────┘  pipeline/apply.rs
//! ```
//!
//! # Layout, by role
//! - leaves everything imports: `config` (what a replicator is told, its defaults),
//!   `error` (why it stopped, and whether to try again), `telemetry/` (metrics and live
//!   state), `backoff` (waiting out an outage), `lsn`, `redact`;
//! - the source side: `stream/` (the replication connection), `decode/` (pgoutput), `slot`,
//!   `source/` (the first start's copy, backfills, the source checks), `schema/` (following
//!   the source's DDL, what its publications publish and its partition trees), `published`
//!   (PostgreSQL's rules for row filters, column lists and generated columns);
//! - what travels: `change` (a change at its journal position), `image` (rows as JSON),
//!   `batch`;
//! - the sinks: `sink/` — the contract every sink keeps (`sink/mod.rs`), and one folder per
//!   sink (`sink/olap/`: journal, replica, star — the primary, whose transaction holds the
//!   checkpoint; `sink/nats/`: JetStream, beside OLAP); a new sink is a new folder there;
//! - `star/`: the star schema's inputs bound to source columns by identity, so that schema
//!   changes of the source are followed by the star or degrade it visibly, never stop it;
//! - the pipeline that joins them: `pipeline/` (a session: where it starts, the first
//!   start's copy, the read stage and the apply stage), `flush` (when an asynchronous OLAP
//!   commit may be reported to the source), `checkpoint`, `replay`, `verify`;
//!   `load/` (the NATS change stream applied to another OLAP database);
//! - the daemon around it: `daemon/` (leader lock, slot monitor and heartbeats, status, the
//!   HTTP endpoints and status page).
//!
//! `ARCHITECTURE.md` at the repository's root walks through the same with the reasons.
//!
//! Each batch is one OLAP transaction: the journal (`cdc_events`), the `replica.*` mirror,
//! the star-schema refresh for the touched keys, then the checkpoint. Only once its commit is
//! on OLAP's disk (at once with `--olap-commit sync`; once OLAP's WAL flush passed it with
//! `async`, the default: `flush`) is its end LSN reported to the source as flushed, so a crash
//! of the replicator or of OLAP at any instant replays from the checkpoint and transactions
//! at or below it are skipped.
//!
//! # Transport
//! No crates.io release of a tokio-postgres replication fork exists. We speak the streaming
//! replication protocol ourselves on top of `postgres-protocol` (the I/O-free protocol crate
//! of rust-postgres: framing, SCRAM, MD5) in about 300 lines (`stream/conn.rs`). We chose
//! this over `pgwire-replication` because the exported snapshot of the first start has to
//! stay alive on the creating connection while another connection copies under it, and the
//! flush position we report must be exactly what OLAP has committed: owning the connection
//! makes both explicit, adds no dependency beyond the hashing crates sqlx already brings,
//! and keeps the whole path testable here. TLS (libpq's `sslmode` and `sslrootcert`) is
//! rustls with ring, the stack sqlx already uses (`stream/tls.rs`).

pub mod backoff;
pub mod batch;
pub mod change;
pub mod checkpoint;
pub mod clickstream;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod error;
pub mod flush;
pub mod image;
pub mod journal;
pub mod load;
pub mod lsn;
pub mod pipeline;
pub mod published;
pub mod redact;
pub mod replay;
pub mod schema;
pub mod sink;
pub mod slot;
pub mod source;
pub mod spool;
pub mod star;
pub mod stream;
pub mod table;
pub mod telemetry;
pub mod verify;

// The status report lived at the crate root before it was grouped under `daemon/`; the
// binary and the tests name it by its old path.
pub use daemon::status;
