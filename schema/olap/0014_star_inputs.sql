-- The star schema's inputs follow the source's schema changes (tables only; the views and
-- functions are in schema/olap/logic/12_star_inputs.sql).
--
--   star_input.<input>   one view per source table the star reads (stores, orders, …), with
--                        the star's column names and types whatever the source did since
--   star_kept.<input>    values of dropped source columns, kept for the rows that had them
--   star_input_tables    the source table each input reads, by identity (relation oid)
--   star_bindings        each input attribute: the source column it reads, by identity (attnum)
--   star_dead_letters    rows the star leaves out: a value its type cannot hold, or a row it
--                        cannot attach (its reference to an order was dropped)

create schema if not exists star_input;
create schema if not exists star_kept;

create table star_input_tables (
    input         text        primary key,
    source_oid    bigint,
    source_schema text        not null default 'public',
    source_table  text        not null,
    replica_table text        not null,
    -- frozen: its key was dropped, the star reads what it had then; dropped / unpublished:
    -- gone from the source or the publication, the replica is kept as it was
    state         text        not null default 'bound'
                  check (state in ('bound', 'renamed', 'frozen', 'dropped', 'unpublished')),
    changed_lsn   pg_lsn,
    changed_at    timestamptz,
    detail        text
);

create table star_bindings (
    input         text        not null references star_input_tables on delete cascade,
    attribute     text        not null,
    -- the star's type for the attribute (widened when the source's new type needs it)
    star_type     text        not null,
    -- the source column by identity (attnum, once known) and its current name (null: gone)
    attnum        smallint,
    source_column text,
    replica_type  text,
    -- how the view reads the replica column: as it is, cast, through its text, a timestamp or
    -- date taken as UTC, or value by value (a row whose value does not read is a dead letter)
    read          text        not null default 'as_is'
                  check (read in ('as_is', 'cast', 'via_text', 'utc', 'per_row')),
    state         text        not null default 'bound'
                  check (state in ('bound', 'renamed', 'retyped', 'widened', 'incompatible',
                                   'dropped')),
    changed_lsn   pg_lsn,
    changed_at    timestamptz,
    detail        text,
    primary key (input, attribute)
);

create table star_dead_letters (
    input        text        not null,
    row_key      text        not null,
    source_table text        not null,
    reason       text        not null,
    failed_at    timestamptz not null default now(),
    primary key (input, row_key)
);

-- A measure whose source column was dropped is unknown (NULL) in rows written after it.
alter table fact_sales alter column quantity drop not null,
                       alter column unit_price drop not null,
                       alter column revenue drop not null;
alter table fact_payments alter column amount drop not null;
alter table fact_inventory alter column quantity_delta drop not null;
