-- fact_inventory maintained by increments. Recomputing a touched (day, store, product) group
-- reads every movement of that day: on a busy day each batch re-read the whole day, and the
-- inventory refresh took most of the apply time (measured: 154 of 214 ms per batch of ~1,800
-- changes after 100k movements in one day). New movements — nearly all of them — are now
-- added to their group; groups touched by an update, a delete, an incomplete row image or a
-- dead-lettered change are still recomputed from the replica, which is always right.

alter table fact_inventory add column last_movement_at timestamptz;

create or replace function star_refresh_inventory(p_days date[], p_stores bigint[], p_products bigint[])
returns void language plpgsql as $$
begin
    if cardinality(p_days) = 0 then
        return;
    end if;
    perform ensure_dim_dates(p_days);
    perform star_infer_inventory_members(p_stores, p_products);

    delete from fact_inventory f
    using unnest(p_days, p_stores, p_products) g(d, s, p)
    where f.date_key = dim_date_key(g.d) and f.store_id = g.s and f.product_id = g.p;

    insert into fact_inventory (date_key, store_id, product_id, reason, store_key, product_key,
                                quantity_delta, movements, last_movement_at)
    select dim_date_key(a.d), a.s, a.p, a.reason, ds.store_key, p.product_key, a.qty, a.n, a.last_at
    from (
        select g.d, g.s, g.p, m.reason, sum(m.delta) as qty, count(*)::integer as n,
               max(m.occurred_at) as last_at
        from (select distinct * from unnest(p_days, p_stores, p_products)) g(d, s, p)
        join replica.inventory_movements m
          on m.store_id = g.s and m.product_id = g.p
         and m.occurred_at >= (g.d::timestamp at time zone 'UTC')
         and m.occurred_at < ((g.d + 1)::timestamp at time zone 'UTC')
        group by g.d, g.s, g.p, m.reason
    ) a
    join dim_store ds on ds.store_id = a.s
    join lateral (
        select dp.product_key from dim_product dp
        where dp.product_id = a.p and dp.valid_from <= a.last_at and a.last_at < dp.valid_to
        order by dp.valid_from desc limit 1) p on true;
end $$;

-- Stores and products that movements name before their own rows arrived.
create function star_infer_inventory_members(p_stores bigint[], p_products bigint[])
returns void language sql as $$
    insert into dim_store (store_id, name, is_inferred)
    select distinct g.s, 'unknown store ' || g.s, true from unnest(p_stores) g(s)
    where not exists (select 1 from dim_store d where d.store_id = g.s)
    on conflict (store_id) do nothing;
    insert into dim_product (product_id, name, category, valid_from, is_inferred)
    select distinct g.p, 'unknown product ' || g.p, 'unknown', '-infinity'::timestamptz, true
    from unnest(p_products) g(p)
    where not exists (select 1 from dim_product d where d.product_id = g.p)
    on conflict do nothing;
$$;

-- Whether an inventory_movements journal event can be added as an increment: a new row with a
-- complete image that the replica took (not dead-lettered).
create function inventory_event_is_increment(p_op "char", p_after jsonb, p_lsn pg_lsn, p_seq integer)
returns boolean language sql stable as $$
    select p_op = 'i'
       and p_after ?& array['occurred_at', 'store_id', 'product_id', 'reason', 'delta']
       and not exists (select 1 from cdc_dead_letters x where x.lsn = p_lsn and x.seq = p_seq)
$$;

-- Adds the new movements of a journal range to their groups, except the groups listed (they
-- are recomputed instead).
create function star_add_inventory(p_from_lsn pg_lsn, p_from_seq integer,
                                   p_to_lsn pg_lsn, p_to_seq integer,
                                   p_skip_days date[], p_skip_stores bigint[], p_skip_products bigint[])
returns void language plpgsql as $$
declare
    v_days date[]; v_stores bigint[]; v_products bigint[]; v_reasons text[];
    v_qty bigint[]; v_n integer[]; v_last timestamptz[];
begin
    select array_agg(a.d), array_agg(a.s), array_agg(a.p), array_agg(a.r),
           array_agg(a.qty), array_agg(a.n), array_agg(a.last_at)
    into v_days, v_stores, v_products, v_reasons, v_qty, v_n, v_last
    from (
        select m.d, m.s, m.p, m.r, sum(m.delta)::bigint as qty, count(*)::integer as n,
               max(m.at) as last_at
        from (
            select ((e.after ->> 'occurred_at')::timestamptz at time zone 'UTC')::date as d,
                   (e.after ->> 'store_id')::bigint as s, (e.after ->> 'product_id')::bigint as p,
                   e.after ->> 'reason' as r, (e.after ->> 'delta')::bigint as delta,
                   (e.after ->> 'occurred_at')::timestamptz as at
            from cdc_events e
            where (e.lsn, e.seq) > (p_from_lsn, p_from_seq) and (e.lsn, e.seq) <= (p_to_lsn, p_to_seq)
              and e.source_schema = 'public' and e.source_table = 'inventory_movements'
              and inventory_event_is_increment(e.op, e.after, e.lsn, e.seq)
        ) m
        where not exists (
            select 1 from unnest(p_skip_days, p_skip_stores, p_skip_products) k(d, s, p)
            where k.d = m.d and k.s = m.s and k.p = m.p)
        group by m.d, m.s, m.p, m.r
    ) a;
    if v_days is null then
        return;
    end if;
    perform ensure_dim_dates(v_days);
    perform star_infer_inventory_members(v_stores, v_products);

    insert into fact_inventory as f (date_key, store_id, product_id, reason, store_key, product_key,
                                     quantity_delta, movements, last_movement_at)
    select dim_date_key(g.d), g.s, g.p, g.r, ds.store_key, pk.product_key, g.qty, g.n, g.last_at
    from unnest(v_days, v_stores, v_products, v_reasons, v_qty, v_n, v_last)
         g(d, s, p, r, qty, n, last_at)
    join dim_store ds on ds.store_id = g.s
    join lateral (
        select dp.product_key from dim_product dp
        where dp.product_id = g.p and dp.valid_from <= g.last_at and g.last_at < dp.valid_to
        order by dp.valid_from desc limit 1) pk on true
    on conflict (date_key, store_id, product_id, reason) do update
        set quantity_delta = f.quantity_delta + excluded.quantity_delta,
            movements = f.movements + excluded.movements,
            store_key = excluded.store_key,
            product_key = case when f.last_movement_at is null
                                 or excluded.last_movement_at >= f.last_movement_at
                               then excluded.product_key else f.product_key end,
            last_movement_at = greatest(f.last_movement_at, excluded.last_movement_at);
end $$;

create or replace function star_refresh(p_from_lsn pg_lsn, p_from_seq integer,
                                        p_to_lsn pg_lsn, p_to_seq integer)
returns void language plpgsql as $$
declare
    v_stores bigint[];
    v_employees bigint[];
    v_customers bigint[];
    v_orders uuid[];
    v_days date[];
    v_mstores bigint[];
    v_mproducts bigint[];
    v_has_products boolean;
begin
    select coalesce(array_agg(distinct x.id) filter (where x.t = 'stores'), '{}'),
           coalesce(array_agg(distinct x.id) filter (where x.t = 'employees'), '{}'),
           coalesce(array_agg(distinct x.id) filter (where x.t = 'customers'), '{}'),
           coalesce(array_agg(distinct x.order_id) filter (where x.order_id is not null), '{}'),
           coalesce(bool_or(x.t = 'products'), false)
    into v_stores, v_employees, v_customers, v_orders, v_has_products
    from (
        select e.source_table as t,
               case when e.source_table in ('stores', 'employees', 'customers')
                    then (coalesce(e.key, e.after, e.before) ->> 'id')::bigint end as id,
               case when e.source_table = 'orders'
                    then (coalesce(e.key, e.after, e.before) ->> 'id')::uuid
                    when e.source_table in ('order_items', 'payments')
                    then (r.img ->> 'order_id')::uuid end as order_id
        from cdc_events e
        cross join lateral (values (e.after), (e.before)) r(img)
        where (e.lsn, e.seq) > (p_from_lsn, p_from_seq) and (e.lsn, e.seq) <= (p_to_lsn, p_to_seq)
          and e.source_schema = 'public' and e.source_table <> 'inventory_movements'
          and e.op <> 't'
    ) x;

    -- Inventory groups to recompute: those touched by anything but a clean new movement.
    select coalesce(array_agg(g.d), '{}'), coalesce(array_agg(g.s), '{}'),
           coalesce(array_agg(g.p), '{}')
    into v_days, v_mstores, v_mproducts
    from (
        select distinct ((r.img ->> 'occurred_at')::timestamptz at time zone 'UTC')::date as d,
               (r.img ->> 'store_id')::bigint as s, (r.img ->> 'product_id')::bigint as p
        from cdc_events e
        cross join lateral (values (e.after), (e.before)) r(img)
        where (e.lsn, e.seq) > (p_from_lsn, p_from_seq) and (e.lsn, e.seq) <= (p_to_lsn, p_to_seq)
          and e.source_schema = 'public' and e.source_table = 'inventory_movements'
          and e.op <> 't' and r.img ? 'occurred_at'
          and not inventory_event_is_increment(e.op, e.after, e.lsn, e.seq)
    ) g;

    perform star_refresh_dims(v_stores, v_employees, v_customers);
    if v_has_products then
        perform star_apply_product_events(p_from_lsn, p_from_seq, p_to_lsn, p_to_seq);
    end if;
    perform star_refresh_orders(v_orders);
    perform star_refresh_inventory(v_days, v_mstores, v_mproducts);
    perform star_add_inventory(p_from_lsn, p_from_seq, p_to_lsn, p_to_seq,
                               v_days, v_mstores, v_mproducts);
end $$;
