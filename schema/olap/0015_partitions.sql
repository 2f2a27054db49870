-- Partitions of the source's partitioned tables, as the replicator followed them: one row
-- per partition of each partitioned table it mirrors (replicator/src/schema/partitions),
-- with what it did when the partition came or went. A detached or dropped partition's rows
-- stay in the replica by default (`--partition-detach keep`): its row here, with its bound
-- and partition constraint, says which replica rows are such kept history.
create table cdc_partitions (
    -- The partitioned table followed: the mirrored table whose replica holds the
    -- partitions' rows (publish_via_partition_root), or the root of partitions each mirrored
    -- as a table of its own.
    root_schema      text        not null,
    root_table       text        not null,
    mirrored_as      text        not null check (mirrored_as in ('root', 'leaf')),
    partition_oid    bigint      not null,
    partition_schema text        not null,
    partition_table  text        not null,
    parent_oid       bigint,
    level            integer     not null default 1,
    is_leaf          boolean     not null default true,
    -- `FOR VALUES …` or `DEFAULT`, as the source prints it
    bound            text,
    -- its partition constraint as the source prints it (the rows that belong to it)
    scope            text,
    state            text        not null check (state in ('attached', 'detached', 'dropped')),
    -- what the replicator did the last time it changed (schema/partitions: Action)
    action           text        not null,
    -- the copy (an attached partition's rows) or removal (mirror) this needed
    backfill_id      bigint,
    changed_lsn      pg_lsn,
    changed_at       timestamptz not null default now(),
    primary key (root_schema, root_table, partition_oid)
);

-- A backfill of the part of a table one partition holds: its rows are read `where <scope>`
-- (the partition constraint) and replace the replica's rows of that scope. Several such
-- copies of one table wait in turn, so the one-at-a-time rule holds for whole-table copies.
alter table cdc_backfills add column scope text,
                          add column partition_oid bigint,
                          -- whether the partition must still be attached (a copy) or no
                          -- longer be (a removal) when a chunk is read
                          add column partition_attached boolean;
drop index cdc_backfills_active_idx;
create unique index cdc_backfills_active_idx on cdc_backfills (source_schema, source_table)
    where state in ('pending', 'running') and scope is null;

-- What a chunk's merge replaces in OLAP: the replica rows of its key range that satisfy
-- `scope` (null: all of them), except those that satisfy `kept` (detached partitions' rows
-- kept as history). Recorded with the chunk, so replay and a stream loader merge it the same.
alter table cdc_backfill_chunks add column scope text, add column kept text;
