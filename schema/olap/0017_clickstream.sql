-- Clickstream (issue 23): impressions, clicks and their attribution to order lines (tables
-- only; the functions and views are in schema/olap/logic/60_clickstream.sql).
--
--   fact_impressions / fact_clicks  one row per event, by its id: a re-delivered event is the
--                                   same row. Loaded from the replicator (replica click_events)
--                                   or from the JetStream events stream (`brewlytics load`).
--   fact_attribution                one row per order line the last click explains
--   clickstream_orders              the session and time of each order placed in a session
--   clickstream_settings            the attribution window and the session inactivity gap
--   clickstream_dead_letters        events that could not be loaded (malformed, or refused)

create table clickstream_settings (
    only_row           boolean  primary key default true check (only_row),
    -- an order line is attributed to the last click on its product in its session no
    -- earlier than this before the order
    attribution_window interval not null default '30 minutes'
                       check (attribution_window > interval '0'),
    -- a session's visits: a gap without events longer than this starts a new one
    session_gap        interval not null default '30 minutes' check (session_gap > interval '0')
);
insert into clickstream_settings default values;

create table fact_impressions (
    event_id     uuid        primary key,
    session_id   text        not null,
    date_key     integer     not null,
    product_id   bigint      not null,
    product_key  bigint      not null,
    customer_id  bigint,
    customer_key bigint      not null,
    occurred_at  timestamptz not null,
    received_at  timestamptz not null,
    loaded_at    timestamptz not null default now(),
    context      jsonb       not null default '{}'
);
create index fact_impressions_date_idx on fact_impressions (date_key, product_id);
create index fact_impressions_session_idx on fact_impressions (session_id, occurred_at);

-- the same columns as fact_impressions
create table fact_clicks (like fact_impressions including defaults including constraints,
                          primary key (event_id));
create index fact_clicks_date_idx on fact_clicks (date_key, product_id);
create index fact_clicks_session_idx on fact_clicks (session_id, product_id, occurred_at);

create table clickstream_orders (
    order_id    uuid        primary key,
    session_id  text        not null,
    ordered_at  timestamptz not null
);
create index clickstream_orders_session_idx on clickstream_orders (session_id, ordered_at);

create table fact_attribution (
    order_item_id      bigint        primary key,
    order_id           uuid          not null,
    session_id         text          not null,
    date_key           integer       not null,  -- the order's day (UTC)
    product_id         bigint        not null,
    product_key        bigint        not null,
    customer_key       bigint        not null,
    click_event_id     uuid          not null,
    clicked_at         timestamptz   not null,
    ordered_at         timestamptz   not null,
    minutes_to_convert numeric(10, 2) not null,
    quantity           bigint,
    revenue            numeric(12, 2)
);
create index fact_attribution_order_idx on fact_attribution (order_id);
create index fact_attribution_date_idx on fact_attribution (date_key, product_id);

create table clickstream_dead_letters (
    id          bigint      generated always as identity primary key,
    -- where it came from: 'nats' (the events stream) or 'replica' (the replicated table)
    source      text        not null,
    stream_seq  bigint,
    subject     text,
    event_id    text,
    reason      text        not null,
    failed_at   timestamptz not null default now()
);
