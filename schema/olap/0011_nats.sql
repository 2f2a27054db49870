-- The NATS JetStream sink (issue 11): what the publisher and the loader keep in OLAP, each in
-- the transaction of the batch it belongs to.

-- The replicator's publisher: the stream sequence of the last message JetStream acknowledged
-- for a batch, stored with that batch's checkpoint. Messages after it were published by a
-- batch OLAP has not committed: after a crash they are read back and not published again.
create table cdc_nats_published (
    slot_name   text        primary key,
    stream      text        not null,
    stream_seq  bigint      not null,
    updated_at  timestamptz not null default now()
);

-- `brewlytics load --from nats`: the stream position applied to this OLAP database, stored in
-- the transaction that applied it (exactly once), then acknowledged to JetStream.
create table cdc_nats_loader (
    stream      text        not null,
    consumer    text        not null,
    stream_seq  bigint      not null,
    lsn         pg_lsn,
    seq         integer,
    commit_ts   timestamptz,
    messages    bigint      not null default 0,
    updated_at  timestamptz not null default now(),
    primary key (stream, consumer)
);
