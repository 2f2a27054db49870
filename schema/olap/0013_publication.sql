-- What the publication publishes of each mirrored table beyond its columns: its row filter,
-- its column list (attnums) and the stored generated columns the replica computes
-- (replicator/src/published.rs). Empty: every row, every column, no generated column.
alter table cdc_tables add column publication jsonb not null default '{}';

-- Unpublished data found in OLAP by the replicator's audit (replica rows outside a row
-- filter, journal images holding values of columns no publication publishes), shown by
-- `brewlytics status` until `brewlytics snapshot --table NAME` cleans the table.
create table cdc_publication_findings (
    source_schema text        not null,
    source_table  text        not null,
    finding       text        not null,
    found_at      timestamptz not null default now()
);
