-- Brewlytics analytical schema (coffee_olap).
--   replica.*               a mirror of each published OLTP table, kept by the replicator
--   cdc_events              the journal: one row per change, the audit mirror and replay source
--   cdc_orders              the seed's name: a view of the journal for orders and order lines
--   replication_checkpoint  the last source commit applied, written in the same transaction
--   cdc_dead_letters        changes that could not be applied, with the error
--   dim_* / fact_*          the star schema, refreshed for the keys each batch touched

create schema if not exists replica;

create table replica.stores (
    id bigint primary key, name text, city text, opened_on date
);
create table replica.employees (
    id bigint primary key, name text, role text, store_id bigint, active boolean, hired_on date
);
create table replica.customers (
    id bigint primary key, name text, email text, created_at timestamptz
);
create table replica.products (
    id bigint primary key, name text, category text, price numeric(10, 2), is_available boolean,
    description text, updated_at timestamptz
);
create table replica.orders (
    id uuid primary key, customer_id bigint, employee_id bigint, store_id bigint, status text,
    payment_method text, ordered_at timestamptz, updated_at timestamptz, total numeric(12, 2)
);
create table replica.order_items (
    id bigint primary key, order_id uuid, product_id bigint, quantity integer,
    unit_price numeric(10, 2)
);
create index on replica.order_items (order_id);
create table replica.payments (
    id bigint primary key, order_id uuid, amount numeric(12, 2), method text, paid_at timestamptz
);
create index on replica.payments (order_id);
create table replica.inventory_movements (
    id bigint primary key, store_id bigint, product_id bigint, order_id uuid, delta integer,
    reason text, occurred_at timestamptz
);
create index on replica.inventory_movements (store_id, product_id, occurred_at);

-- The journal. `lsn` is the source transaction's commit LSN and `seq` the change's place in
-- it, so a transaction the server sends again lands on the same (lsn, seq): never twice.
-- Values are PostgreSQL's text output of each column; a column absent from `after` was an
-- unchanged TOASTed value (keep the previous one).
create table cdc_events (
    lsn           pg_lsn      not null,
    seq           integer     not null,
    xid           bigint,
    commit_ts     timestamptz not null,
    source_schema text        not null default 'public',
    source_table  text        not null,
    op            "char"      not null check (op in ('r', 'i', 'u', 'd', 't')),
    key           jsonb,
    before        jsonb,
    after         jsonb,
    primary key (lsn, seq)
);
create index cdc_events_table_idx on cdc_events (source_table, lsn);

comment on column cdc_events.op is
    'r = row of the initial copy, i = insert, u = update, d = delete, t = truncate';

create view cdc_orders as
select lsn, seq, xid, commit_ts, source_table,
       case op when 'r' then 'SNAPSHOT' when 'i' then 'INSERT' when 'u' then 'UPDATE'
               when 'd' then 'DELETE' else 'TRUNCATE' end as event_type,
       key, before, after,
       coalesce(after, before) as payload
from cdc_events
where source_schema = 'public' and source_table in ('orders', 'order_items');

create table replication_checkpoint (
    slot_name   text primary key,
    lsn         pg_lsn      not null,
    commit_ts   timestamptz,
    updated_at  timestamptz not null default now()
);

create table cdc_dead_letters (
    id            bigint generated always as identity primary key,
    lsn           pg_lsn      not null,
    seq           integer     not null,
    source_table  text        not null,
    op            "char"      not null,
    error         text        not null,
    failed_at     timestamptz not null default now(),
    unique (lsn, seq)
);

-- Dimensions -------------------------------------------------------------------------------

create table dim_date (
    date_key     integer primary key,          -- yyyymmdd
    date         date     not null unique,
    year         smallint not null,
    quarter      smallint not null,
    month        smallint not null,
    month_name   text     not null,
    day          smallint not null,
    day_of_week  smallint not null,            -- 1 = Monday … 7 = Sunday
    day_name     text     not null,
    iso_week     smallint not null,
    is_weekend   boolean  not null
);

create function dim_date_key(d date) returns integer
language sql immutable parallel safe
as $$ select (extract(year from d) * 10000 + extract(month from d) * 100 + extract(day from d))::integer $$;

create function ensure_dim_dates(days date[]) returns void
language sql
as $$
    insert into dim_date
    select dim_date_key(d), d, extract(year from d), extract(quarter from d), extract(month from d),
           trim(to_char(d, 'Month')), extract(day from d), extract(isodow from d),
           trim(to_char(d, 'Day')), extract(week from d), extract(isodow from d) >= 6
    from unnest(days) as d
    where d is not null
    on conflict (date_key) do nothing
$$;

select ensure_dim_dates(array(select generate_series('2020-01-01'::date, '2035-12-31'::date, '1 day')::date));

create table dim_store (
    store_key    bigint generated by default as identity primary key,
    store_id     bigint  not null unique,
    name         text    not null,
    city         text,
    opened_on    date,
    is_inferred  boolean not null default false,
    is_deleted   boolean not null default false
);

create table dim_employee (
    employee_key bigint generated by default as identity primary key,
    employee_id  bigint  not null unique,
    name         text    not null,
    role         text,
    store_id     bigint,
    active       boolean,
    hired_on     date,
    is_inferred  boolean not null default false,
    is_deleted   boolean not null default false
);

create table dim_customer (
    customer_key bigint generated by default as identity primary key,
    customer_id  bigint unique,                -- null only for the walk-in member
    name         text    not null,
    email        text,
    created_at   timestamptz,
    is_inferred  boolean not null default false,
    is_deleted   boolean not null default false
);
-- Orders without a customer point at this member.
insert into dim_customer (customer_key, customer_id, name) overriding system value
values (0, null, 'Walk-in');

-- Slowly changing, type 2: a change of name, category or price closes the current version
-- (valid_to = the change's source commit time) and opens a new one. Facts reference the
-- version that was current when the order was placed.
create table dim_product (
    product_key  bigint generated by default as identity primary key,
    product_id   bigint      not null,
    name         text        not null,
    category     text        not null,
    price        numeric(10, 2),
    is_available boolean,
    version      integer     not null default 1,
    valid_from   timestamptz not null,
    valid_to     timestamptz not null default 'infinity',
    is_current   boolean     not null default true,
    is_inferred  boolean     not null default false,
    is_deleted   boolean     not null default false,
    unique (product_id, valid_from),
    check (valid_from < valid_to)
);
create unique index dim_product_current_idx on dim_product (product_id) where is_current;

-- Facts ------------------------------------------------------------------------------------

create table fact_sales (
    order_item_id  bigint primary key,
    order_id       uuid           not null,
    date_key       integer        not null references dim_date,
    customer_key   bigint         not null references dim_customer,
    product_key    bigint         not null references dim_product,
    employee_key   bigint         not null references dim_employee,
    store_key      bigint         not null references dim_store,
    quantity       integer        not null,
    unit_price     numeric(10, 2) not null,
    revenue        numeric(12, 2) not null,
    status         text           not null,
    payment_method text,
    ordered_at     timestamptz    not null,
    hour_of_day    smallint       not null
);
create index fact_sales_order_idx on fact_sales (order_id);
create index fact_sales_date_idx on fact_sales (date_key);
create index fact_sales_product_idx on fact_sales (product_key);

create table fact_payments (
    payment_id    bigint primary key,
    order_id      uuid           not null,
    date_key      integer        not null references dim_date,
    customer_key  bigint         not null references dim_customer,
    employee_key  bigint         not null references dim_employee,
    store_key     bigint         not null references dim_store,
    amount        numeric(12, 2) not null,
    method        text           not null,
    order_status  text           not null,
    paid_at       timestamptz    not null
);
create index fact_payments_order_idx on fact_payments (order_id);
create index fact_payments_date_idx on fact_payments (date_key);

-- Daily inventory movement per store, product and reason.
create table fact_inventory (
    date_key       integer not null references dim_date,
    store_id       bigint  not null,
    product_id     bigint  not null,
    reason         text    not null,
    store_key      bigint  not null references dim_store,
    product_key    bigint  not null references dim_product,
    quantity_delta bigint  not null,
    movements      integer not null,
    primary key (date_key, store_id, product_id, reason)
);
