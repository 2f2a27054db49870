-- Apply engine v2: typed staging instead of jsonb, any published table, DDL followed, backfills.
--
-- Tables only: functions and views are defined in schema/olap/logic/, which `migrate`
-- re-applies whenever a file there changes (see support/src/migrate.rs).

-- The functions of 0002/0003 read the journal's jsonb images; the star now reads each batch's
-- typed staging tables (schema/olap/logic/star_*.sql).
drop view if exists cdc_orders;
drop function if exists star_refresh(pg_lsn, integer, pg_lsn, integer);
drop function if exists star_apply_product_events(pg_lsn, integer, pg_lsn, integer);
drop function if exists star_add_inventory(pg_lsn, integer, pg_lsn, integer, date[], bigint[], bigint[]);
drop function if exists inventory_event_is_increment("char", jsonb, pg_lsn, integer);
drop aggregate if exists jsonb_concat_agg(jsonb);

-- The journal's images become `json`: typed values (numbers, booleans, json columns as JSON),
-- kept exactly as written — a `json` column's text, whitespace and duplicate keys included —
-- and cheaper to write than jsonb. `cdc_orders` still shows them as jsonb.
alter table cdc_events
    alter column key type json using key::json,
    alter column before type json using before::json,
    alter column after type json using after::json;
-- A json/jsonb column holding the JSON value `null` (not SQL NULL) is written as null in the
-- image, like SQL NULL; its name is listed here so that replay can tell them apart.
alter table cdc_events add column json_nulls text[];
-- 's': a schema change of a source table followed by the replica (after = its new columns);
-- 'b': a backfill chunk merged into the replica (after = its range; its rows follow as 'r').
alter table cdc_events drop constraint cdc_events_op_check;
alter table cdc_events add constraint cdc_events_op_check
    check (op in ('r', 'i', 'u', 'd', 't', 's', 'b'));
comment on column cdc_events.op is
    'r = row of a copy (initial or backfill), i = insert, u = update, d = delete, t = truncate, s = schema change, b = backfill chunk';
-- The journal is read by position (replay, a backfill's changes since its chunk, dbt's
-- incremental models): its primary key serves them all. An index by table cost 40% of the
-- journal's COPY (measured: 1.76 s vs 1.00 s for 200k changes); add one if you query by table.
drop index if exists cdc_events_table_idx;

alter table cdc_dead_letters add column source_schema text not null default 'public';
alter table cdc_dead_letters add column sqlstate text;

-- The source tables the replicator mirrors: what it knows of each one's columns (with their
-- source attnums, which tell a renamed column from a dropped and re-added one) and key.
create table cdc_tables (
    source_schema text        not null,
    source_table  text        not null,
    source_oid    bigint,
    replica_table text        not null unique,
    -- [{"name", "attnum", "type_oid", "typmod", "olap_type"}] in source column order
    columns       jsonb       not null,
    -- empty: no key, the replica is a multiset (duplicates kept)
    key_columns   text[]      not null default '{}',
    identity      "char"      not null default 'd',
    published     boolean     not null default true,
    updated_at    timestamptz not null default now(),
    primary key (source_schema, source_table)
);

-- Copies of one source table made while the stream runs (a table added to the publication,
-- `brewlytics snapshot --table`, a column whose values the stream cannot carry over), chunk
-- by chunk, each chunk merged into the replica at its place in the stream (watermarks).
create table cdc_backfills (
    id             bigint generated always as identity primary key,
    source_schema  text        not null,
    source_table   text        not null,
    reason         text        not null,
    state          text        not null default 'pending'
                   check (state in ('pending', 'running', 'done', 'cancelled', 'failed')),
    requested_at   timestamptz not null default now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    updated_at     timestamptz not null default now(),
    chunks_merged  integer     not null default 0,
    rows_copied    bigint      not null default 0,
    rows_estimate  bigint,
    -- the key of the last row merged (text of each key column); null before the first chunk
    last_key       text[],
    error          text
);
create unique index cdc_backfills_active_idx on cdc_backfills (source_schema, source_table)
    where state in ('pending', 'running');

-- One copied chunk waiting for its high watermark in the stream. `snapshot` is the source
-- snapshot the rows were read under (pg_snapshot text), `from_lsn` a position before any
-- transaction that snapshot does not see: changes of those transactions between from_lsn and
-- the watermark are applied again over the copied rows.
create table cdc_backfill_chunks (
    backfill_id   bigint      not null references cdc_backfills on delete cascade,
    attempt       text        not null,
    chunk         integer     not null,
    lo            text[],
    hi            text[],
    snapshot      text        not null,
    from_lsn      pg_lsn      not null,
    rows          bigint      not null,
    copied_at     timestamptz not null default now(),
    -- kept once merged: replay merges the chunk's journaled rows the same way
    merged_at     timestamptz,
    merged_lsn    pg_lsn,
    primary key (backfill_id, attempt)
);

create schema if not exists cdc_staging;

-- Facts follow the source's types as they widen (a quantity retyped to bigint, a price to
-- numeric(12,4)): the star keeps working instead of refusing the values.
alter table fact_sales alter column quantity type bigint,
                       alter column unit_price type numeric,
                       alter column revenue type numeric;
alter table fact_payments alter column amount type numeric;
alter table dim_product alter column price type numeric;
