-- The journal partitioned by LSN range (replicator/src/journal): retention drops whole
-- partitions, and each partition's primary key index stays the size of its own range.
--
-- An existing journal becomes the first partition as it is (no row is rewritten): its rows
-- are checked once against the range it is given (one read of the table), then attached.
-- The replicator creates the partitions after it ahead of the stream; the default partition
-- only catches rows no partition covers yet (it stays empty while a replicator runs).

-- Partitions live in a schema of their own, which the replicator's role owns (it creates
-- and drops them); the journal is read through `cdc_events` as before.
create schema if not exists cdc_journal;

drop view if exists cdc_orders;
alter table cdc_events rename to cdc_events_unpartitioned;
alter index cdc_events_pkey rename to cdc_events_unpartitioned_pkey;

create table cdc_events (
    lsn           pg_lsn      not null,
    seq           integer     not null,
    xid           bigint,
    commit_ts     timestamptz not null,
    source_schema text        not null default 'public',
    source_table  text        not null,
    op            "char"      not null
        constraint cdc_events_op_check check (op in ('r', 'i', 'u', 'd', 't', 's', 'b')),
    key           json,
    before        json,
    after         json,
    json_nulls    text[],
    primary key (lsn, seq)
) partition by range (lsn);
comment on column cdc_events.op is
    'r = row of a copy (initial or backfill) or of a compaction, i = insert, u = update, d = delete, t = truncate, s = schema change, b = backfill chunk';

do $$
declare
    last pg_lsn;
begin
    select lsn into last from cdc_events_unpartitioned order by lsn desc, seq desc limit 1;
    if last is null then
        drop table cdc_events_unpartitioned;
    else
        -- The constraint proves the range, so the attach does not read the table again.
        execute format('alter table cdc_events_unpartitioned add constraint cdc_events_range
                        check (lsn >= %L::pg_lsn and lsn < %L::pg_lsn)', '0/0', last + 1);
        alter table cdc_events_unpartitioned set schema cdc_journal;
        alter table cdc_journal.cdc_events_unpartitioned rename to cdc_events_p0000000000000000;
        execute format('alter table cdc_events attach partition
                        cdc_journal.cdc_events_p0000000000000000 for values from (%L) to (%L)',
                       '0/0', last + 1);
        alter table cdc_journal.cdc_events_p0000000000000000 drop constraint cdc_events_range;
    end if;
end $$;
create table cdc_journal.cdc_events_default partition of cdc_events default;

-- Compactions of the journal (`brewlytics journal compact`, `replicate --journal-retention`):
-- the history before `cut` was replaced by one image per live key as of the cut (op 'r' at
-- `cut` with negative seq), written in the same transaction as this row. Replay starts at
-- the latest cut or after it.
create table cdc_journal_compactions (
    id            bigint      generated always as identity primary key,
    cut           pg_lsn      not null,
    -- the commit time of the last change before the cut
    cut_commit_ts timestamptz,
    -- schema events and row images written at the cut (0: a copy was already there)
    images        bigint      not null,
    -- rows before the cut deleted from the partition the cut is in (none at a partition bound)
    deleted_rows  bigint      not null,
    -- partitions wholly before the cut dropped, and their size
    dropped_partitions integer not null,
    dropped_bytes bigint      not null,
    trigger       text        not null check (trigger in ('command', 'retention')),
    started_at    timestamptz not null,
    finished_at   timestamptz not null default now()
);
create index cdc_journal_compactions_cut_idx on cdc_journal_compactions (cut);
