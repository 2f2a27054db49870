-- Clickstream: impressions and clicks loaded once, and order lines attributed to the last
-- click. Re-applied by `brewlytics migrate` whenever this file changes (tables: 0016).
--
-- Two ways in, one function: the replicator's star batch (star_after() calls
-- clickstream_after() with the batch's rows of the replicated `click_events` and orders),
-- and `brewlytics load`'s events stream (clickstream_ingest() with a batch of events, in the
-- transaction that stores the stream position). Both call clickstream_ingest() and
-- clickstream_attribute(), so the facts are the same whichever way an event came.
--
-- Attribution (last click): an order line of an order placed in session S at time T, for
-- product P, is attributed to the click on P in S with the latest occurred_at in
-- [T - attribution_window, T] (ties: the greater event id); minutes_to_convert = T - that
-- time. It is maintained in any arrival order: a new click recomputes the orders of its
-- session it may explain, a new or changed order recomputes its lines. Every event is kept,
-- however late it arrives (the API refuses events older than its allowed lateness), and
-- a re-delivered event (same id) is not loaded again, so nothing changes.
--
-- Both ways may run at once (the replicator's batch of an order, the loader's batch of its
-- click): clickstream_lock() serialises the attribution work of concurrent transactions, and
-- every statement after it sees what the other committed.

set local check_function_bodies = off;

create or replace function clickstream_lock() returns void language sql as $$
    select pg_advisory_xact_lock(hashtext('brewlytics.clickstream'))
$$;

create or replace function clickstream_window() returns interval language sql stable as $$
    select coalesce((select attribution_window from clickstream_settings), interval '30 minutes')
$$;

-- The lines of `p_orders` recomputed: deleted and attributed again from clickstream_orders,
-- the order lines (star_input.order_items) and fact_clicks.
create or replace function clickstream_attribute(p_orders uuid[]) returns void
language plpgsql as $$
begin
    if coalesce(cardinality(p_orders), 0) = 0 then
        return;
    end if;
    delete from fact_attribution where order_id = any (p_orders);
    insert into fact_attribution (order_item_id, order_id, session_id, date_key, product_id,
                                  product_key, customer_key, click_event_id, clicked_at,
                                  ordered_at, minutes_to_convert, quantity, revenue)
    select i.id, o.order_id, o.session_id, dim_date_key((o.ordered_at at time zone 'UTC')::date),
           i.product_id, c.product_key, c.customer_key, c.event_id, c.occurred_at, o.ordered_at,
           round((extract(epoch from o.ordered_at - c.occurred_at) / 60)::numeric, 2),
           i.quantity, i.quantity * i.unit_price
    from clickstream_orders o
    join star_input.order_items i on i.order_id = o.order_id and i._held
    cross join lateral (
        select k.event_id, k.occurred_at, k.product_key, k.customer_key
        from fact_clicks k
        where k.session_id = o.session_id and k.product_id = i.product_id
          and k.occurred_at <= o.ordered_at
          and k.occurred_at >= o.ordered_at - clickstream_window()
        order by k.occurred_at desc, k.event_id desc
        limit 1
    ) c
    where o.order_id = any (p_orders) and i.product_id is not null;
end $$;

-- The session and time of `p_orders` read again from the replica (an order without a session,
-- deleted or without a finite time has none), then their lines attributed again.
--
-- Only the orders placed in a session, now or before, have lines to attribute (every row of
-- fact_attribution comes from a row of clickstream_orders): the others, most orders of a
-- shop without a clickstream, cost the two statements that find them and nothing more.
create or replace function clickstream_note_orders(p_orders uuid[]) returns void
language plpgsql as $$
declare
    v_in_sessions uuid[];
begin
    if coalesce(cardinality(p_orders), 0) = 0 then
        return;
    end if;
    perform clickstream_lock();
    with gone as (
        delete from clickstream_orders where order_id = any (p_orders) returning order_id
    )
    select coalesce(array_agg(order_id), '{}') into v_in_sessions from gone;
    with placed as (
        insert into clickstream_orders (order_id, session_id, ordered_at)
        select o.id, o.session_id, o.ordered_at
        from star_input.orders o
        where o.id = any (p_orders) and o.session_id is not null and isfinite(o.ordered_at)
          and o._held
        returning order_id
    )
    select v_in_sessions || coalesce(array_agg(order_id), '{}') into v_in_sessions from placed;
    perform clickstream_attribute(v_in_sessions);
end $$;

-- Loads `p_events`, a JSON array of events ({id, kind, session_id, customer_id, product_id,
-- occurred_at, received_at, context}); an id already loaded is skipped. The orders the new
-- clicks may explain are attributed again. Returns how many events were new.
create or replace function clickstream_ingest(p_events jsonb) returns integer
language plpgsql as $$
declare
    added integer := 0;
    n integer;
    new_clicks uuid[];
begin
    if p_events is null or jsonb_array_length(p_events) = 0 then
        return 0;
    end if;
    create temp table if not exists clickstream_batch (
        id uuid, kind text, session_id text, customer_id bigint, product_id bigint,
        occurred_at timestamptz, received_at timestamptz, context jsonb
    ) on commit drop;
    truncate clickstream_batch;
    insert into clickstream_batch
    select distinct on (e.id) e.id, e.kind, e.session_id, e.customer_id, e.product_id,
           e.occurred_at, e.received_at, coalesce(e.context, '{}')
    from jsonb_to_recordset(p_events) as e(id uuid, kind text, session_id text,
                                           customer_id bigint, product_id bigint,
                                           occurred_at timestamptz, received_at timestamptz,
                                           context jsonb)
    where e.id is not null and e.kind in ('impression', 'click') and e.session_id is not null
      and e.product_id is not null and isfinite(e.occurred_at) and isfinite(e.received_at)
    order by e.id;

    perform star_infer(array(select distinct customer_id from clickstream_batch
                             where customer_id is not null),
                       '{}', '{}', array(select distinct product_id from clickstream_batch),
                       array(select distinct (occurred_at at time zone 'UTC')::date
                             from clickstream_batch));

    insert into fact_impressions (event_id, session_id, date_key, product_id, product_key,
                                  customer_id, customer_key, occurred_at, received_at, context)
    select b.id, b.session_id, dim_date_key((b.occurred_at at time zone 'UTC')::date),
           b.product_id, clickstream_product_key(b.product_id, b.occurred_at), b.customer_id,
           coalesce(c.customer_key, 0), b.occurred_at, b.received_at, b.context
    from clickstream_batch b
    left join dim_customer c on c.customer_id = b.customer_id
    where b.kind = 'impression'
    on conflict (event_id) do nothing;
    get diagnostics n = row_count;
    added := added + n;

    perform clickstream_lock();
    with ins as (
        insert into fact_clicks (event_id, session_id, date_key, product_id, product_key,
                                 customer_id, customer_key, occurred_at, received_at, context)
        select b.id, b.session_id, dim_date_key((b.occurred_at at time zone 'UTC')::date),
               b.product_id, clickstream_product_key(b.product_id, b.occurred_at),
               b.customer_id, coalesce(c.customer_key, 0), b.occurred_at, b.received_at,
               b.context
        from clickstream_batch b
        left join dim_customer c on c.customer_id = b.customer_id
        where b.kind = 'click'
        on conflict (event_id) do nothing
        returning event_id
    )
    select array_agg(event_id) into new_clicks from ins;
    added := added + coalesce(cardinality(new_clicks), 0);

    perform clickstream_attribute(array(
        select distinct o.order_id
        from fact_clicks k
        join clickstream_orders o on o.session_id = k.session_id
             and o.ordered_at >= k.occurred_at
             and o.ordered_at <= k.occurred_at + clickstream_window()
        where k.event_id = any (new_clicks)));
    truncate clickstream_batch;
    return added;
end $$;

-- The product's version at `p_at` (SCD type 2), else its current one, else the unknown (-1).
create or replace function clickstream_product_key(p_product bigint, p_at timestamptz)
returns bigint language sql stable as $$
    select coalesce(
        (select d.product_key from dim_product d
         where d.product_id = p_product and d.valid_from <= p_at and p_at < d.valid_to),
        (select d.product_key from dim_product d where d.product_id = p_product and d.is_current),
        -1)
$$;

-- The JSON array clickstream_ingest() takes, from rows shaped like the `click_events` table.
create or replace function clickstream_events_json(p_rows jsonb) returns jsonb
language sql immutable as $$
    select coalesce(jsonb_agg(jsonb_build_object(
               'id', r->'id', 'kind', r->'kind', 'session_id', r->'session_id',
               'customer_id', r->'customer_id', 'product_id', r->'product_id',
               'occurred_at', r->'occurred_at', 'received_at', r->'received_at',
               'context', r->'context')), '[]')
    from jsonb_array_elements(p_rows) r
$$;

-- The replicator's batch (called by star_after(), after the merge): its new click_events rows
-- loaded, the orders it touched attributed again. Deleting click_events rows in the source
-- leaves the facts as they are (the source table is a transit table).
create or replace function clickstream_after() returns void language plpgsql as $$
begin
    perform clickstream_ingest(clickstream_events_json(
        (select jsonb_agg(to_jsonb(e)) from pg_temp.input_click_events e
         where e._cdc_last and e._cdc_op <> 'd' and e._held)));
    perform clickstream_note_orders(array(
        select o.id from pg_temp.input_orders o
        union select i.order_id from pg_temp.input_order_items i where i.order_id is not null
        union select t.order_id from pg_temp.star_touched_orders t));
end $$;

-- Everything again from the replica (after the initial copy or a rebuild): the events of the
-- replicated click_events loaded (those already loaded, and those from the events stream,
-- are kept), every order's session read again and every line attributed again.
create or replace function clickstream_rebuild() returns void language plpgsql as $$
begin
    perform clickstream_ingest(clickstream_events_json(
        (select jsonb_agg(to_jsonb(e)) from star_input.click_events e where e._held)));
    perform clickstream_lock();
    truncate clickstream_orders, fact_attribution;
    insert into clickstream_orders (order_id, session_id, ordered_at)
    select o.id, o.session_id, o.ordered_at from star_input.orders o
    where o.session_id is not null and isfinite(o.ordered_at) and o._held;
    perform clickstream_attribute(array(select order_id from clickstream_orders));
end $$;

-- Visits: a session's events (impressions, clicks, and its orders) split where nothing
-- happened for longer than the session gap.
create or replace view clickstream_visits as
with events as (
    select session_id, occurred_at as at, 'impression' as kind from fact_impressions
    union all
    select session_id, occurred_at, 'click' from fact_clicks
    union all
    select session_id, ordered_at, 'order' from clickstream_orders
), marked as (
    select e.*, case when lag(e.at) over w is null
                       or e.at - lag(e.at) over w > (select session_gap from clickstream_settings)
                     then 1 else 0 end as starts
    from events e
    window w as (partition by e.session_id order by e.at)
), numbered as (
    select m.*, sum(m.starts) over (partition by m.session_id order by m.at
                                    rows unbounded preceding) as visit
    from marked m
)
select session_id, visit::integer as visit, min(at) as started_at, max(at) as ended_at,
       count(*) filter (where kind = 'impression') as impressions,
       count(*) filter (where kind = 'click') as clicks,
       count(*) filter (where kind = 'order') as orders
from numbered
group by session_id, visit;

-- By product and day (UTC; a click's attributed orders count on the click's day): the funnel
-- impressions -> clicks -> attributed orders, click-through and conversion rates.
create or replace view clickstream_daily as
with i as (
    select date_key, product_id, count(*) as impressions from fact_impressions group by 1, 2
), c as (
    select date_key, product_id, count(*) as clicks from fact_clicks group by 1, 2
), a as (
    select dim_date_key((clicked_at at time zone 'UTC')::date) as date_key, product_id,
           count(distinct order_id) as orders, sum(revenue) as revenue
    from fact_attribution group by 1, 2
)
select d.date, k.date_key, k.product_id,
       coalesce(i.impressions, 0) as impressions, coalesce(c.clicks, 0) as clicks,
       coalesce(a.orders, 0) as orders, coalesce(a.revenue, 0) as revenue,
       round(coalesce(c.clicks, 0)::numeric / nullif(i.impressions, 0), 4) as ctr,
       round(coalesce(a.orders, 0)::numeric / nullif(c.clicks, 0), 4) as conversion_rate
from (select date_key, product_id from i union select date_key, product_id from c
      union select date_key, product_id from a) k
join dim_date d on d.date_key = k.date_key
left join i on i.date_key = k.date_key and i.product_id = k.product_id
left join c on c.date_key = k.date_key and c.product_id = k.product_id
left join a on a.date_key = k.date_key and a.product_id = k.product_id;
