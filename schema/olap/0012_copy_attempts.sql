-- A copy of the published tables (first start or `resync`) under way. The copy journals its
-- rows on several connections, each committed just before the transaction that holds the
-- replica, the star and the checkpoint; that transaction deletes this row. A row found here
-- at start is a copy that never committed: its journal rows (op `r` and `s` at `lsn`, negative
-- `seq`) are deleted, and a slot made for it is not streamed from.
create table cdc_copy_attempts (
    slot_name   text        primary key,
    lsn         pg_lsn      not null,
    started_at  timestamptz not null default now()
);
