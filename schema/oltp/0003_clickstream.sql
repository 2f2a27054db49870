-- Clickstream (issue 23): menu impressions and clicks, and the browsing session of an order.
--
-- `click_events` is the embedded path of `POST /events` (no NATS): the API inserts each event
-- here, the publication carries it like any change, and the replicator loads it into OLAP's
-- fact_impressions / fact_clicks. With `--nats-url` the API publishes events to JetStream
-- instead and never writes this table. It is a transit table: OLAP keeps every event it has
-- loaded, so rows here may be deleted (`delete from click_events where received_at < ...`)
-- without touching the facts.

create table click_events (
    id           uuid        primary key,             -- UUIDv7, made by the API
    kind         text        not null check (kind in ('impression', 'click')),
    session_id   text        not null,
    customer_id  bigint,
    product_id   bigint      not null,
    occurred_at  timestamptz not null,                -- the client's clock (bounded skew)
    received_at  timestamptz not null,                -- the API's clock
    context      jsonb       not null default '{}'
);

-- The browsing session an order was placed in (attribution); null when none was given.
alter table orders add column session_id text;

do $$
begin
    if exists (select 1 from pg_publication where pubname = 'brewlytics' and not puballtables)
    then
        alter publication brewlytics add table click_events;
    end if;
end $$;
