-- Star schema: the incremental refresh of one batch. Re-applied by `brewlytics migrate`
-- whenever this file changes.
--
-- The replicator stages each batch's changes of a source table in a temporary table typed as
-- its replica, and makes over it the view `pg_temp.input_<input>` (see 12_star_inputs.sql):
-- the input's attributes as the star names and types them, `_held`, and
--   _cdc_pos  the change's place in the batch        _cdc_op   r, i, u or d
--   _cdc_last the last change of its key in the batch _cdc_new  its key's first change in the
--   _cdc_ts   the source commit time                            batch inserts it
--   _cdc_keep attributes the change did not carry (unchanged TOAST), taken from the replica
-- A delete carries the key columns only. A change that was dead-lettered is not staged.
-- Around the merge of a batch into star_input.*, the replicator calls star_note_batch() and
-- star_before() (the replica still holds the rows as they were) and star_after(), with the
-- input views of every input star_sources() names present (empty when the batch did not touch
-- them).

-- Functions here read the stage views, which exist only in the replicator's session.
set local check_function_bodies = off;

-- What the batch touches, read before the merge: orders whose facts must be recomputed (an
-- order line or payment moved away from an order only says so in the replica's old row) and
-- inventory groups that cannot simply be added to.
create or replace function star_before() returns void language plpgsql as $$
begin
    -- What is touched is gathered until the transaction ends (its chunks each call this).
    if to_regclass('pg_temp.star_touched_orders') is null then
        create temp table star_touched_orders (order_id uuid primary key) on commit delete rows;
        create temp table star_touched_groups (d date, s bigint, p bigint, primary key (d, s, p))
            on commit delete rows;
    end if;

    -- Orders new in this batch are built from the stage tables (star_add_new_orders); every
    -- other order a change touches is recomputed from the replica after the merge. Here, the
    -- orders only the replica's old rows name (a line or payment moved to another order or
    -- deleted); those the stage names are added by star_after(), once per transaction when
    -- it is applied in parts.
    insert into pg_temp.star_touched_orders
    select x.order_id from (
        select r.order_id from pg_temp.input_order_items s
        cross join lateral (select r.order_id from star_input.order_items r
                            where r.id = s.id offset 0) r
        where not s._cdc_new
        union
        select r.order_id from pg_temp.input_payments s
        cross join lateral (select r.order_id from star_input.payments r
                            where r.id = s.id offset 0) r
        where not s._cdc_new
    ) x
    where x.order_id is not null
      and not exists (select 1 from pg_temp.input_orders n where n.id = x.order_id and n._cdc_new)
    on conflict do nothing;

    -- Movements that are not new rows with a whole image: their groups, before and after.
    -- In a replay (`brewlytics.replaying`), a movement the star already holds counts as not
    -- new whatever the batch says (a replay over a newer state): its group is recomputed,
    -- never added to twice. Streaming, new rows are new: no lookup per row (a transaction in
    -- parts would look up every earlier part's rows again).
    insert into pg_temp.star_touched_groups
    select distinct (g.at at time zone 'UTC')::date, g.s, g.p from (
        select r.occurred_at as at, r.store_id as s, r.product_id as p
        from pg_temp.input_inventory_movements s
        cross join lateral (select r.occurred_at, r.store_id, r.product_id
                            from star_input.inventory_movements r
                            where r.id = s.id offset 0) r
        where not s._cdc_new or current_setting('brewlytics.replaying', true) = 'on'
        union all
        select s.occurred_at, s.store_id, s.product_id
        from pg_temp.input_inventory_movements s
        where s._cdc_op <> 'd'
          and (not s._cdc_new or s._cdc_keep is not null
               or (current_setting('brewlytics.replaying', true) = 'on'
                   and exists (select 1 from star_input.inventory_movements r
                               where r.id = s.id offset 0)))
    ) g
    where g.at is not null and isfinite(g.at) and g.s is not null and g.p is not null
    on conflict do nothing;
end $$;

-- The fact lines and payments of orders the batch inserts, straight from the stage tables:
-- the last image of the order, of each of its lines and payments.
create or replace function star_new_sales() returns setof fact_sales
language sql stable as $$
    select i.id, o.id, dim_date_key((o.ordered_at at time zone 'UTC')::date),
           coalesce(c.customer_key, 0), coalesce(p.product_key, -1), coalesce(e.employee_key, -1),
           coalesce(s.store_key, -1), i.quantity, i.unit_price, i.quantity * i.unit_price,
           o.status, o.payment_method, o.ordered_at,
           extract(hour from o.ordered_at at time zone 'UTC')::smallint
    from pg_temp.input_orders o
    join pg_temp.input_order_items i on i.order_id = o.id and i._cdc_last and i._cdc_op <> 'd'
         and i._held
    left join dim_customer c on c.customer_id = o.customer_id
    left join dim_employee e on e.employee_id = o.employee_id
    left join dim_store s on s.store_id = o.store_id
    left join dim_product p on p.product_id = i.product_id
         and p.valid_from <= o.ordered_at and o.ordered_at < p.valid_to
    where o._cdc_new and o._cdc_last and o._cdc_op <> 'd' and isfinite(o.ordered_at) and o._held
$$;

create or replace function star_new_payments() returns setof fact_payments
language sql stable as $$
    select pm.id, o.id, dim_date_key((pm.paid_at at time zone 'UTC')::date),
           coalesce(c.customer_key, 0), coalesce(e.employee_key, -1), coalesce(s.store_key, -1),
           pm.amount, pm.method, o.status, pm.paid_at
    from pg_temp.input_orders o
    join pg_temp.input_payments pm on pm.order_id = o.id and pm._cdc_last and pm._cdc_op <> 'd'
         and pm._held
    left join dim_customer c on c.customer_id = o.customer_id
    left join dim_employee e on e.employee_id = o.employee_id
    left join dim_store s on s.store_id = o.store_id
    where o._cdc_new and o._cdc_last and o._cdc_op <> 'd' and isfinite(pm.paid_at) and o._held
$$;

-- Facts of orders the batch inserts. They have none yet, so a plain insert (half the cost of
-- an upsert, measured); should some exist (a replay over a newer state), they are upserted.
create or replace function star_add_new_orders() returns void language plpgsql as $$
begin
    perform star_infer(
        array(select o.customer_id from pg_temp.input_orders o
              where o._cdc_new and o._cdc_last and o._cdc_op <> 'd'),
        array(select o.employee_id from pg_temp.input_orders o
              where o._cdc_new and o._cdc_last and o._cdc_op <> 'd'),
        array(select o.store_id from pg_temp.input_orders o
              where o._cdc_new and o._cdc_last and o._cdc_op <> 'd'),
        array(select i.product_id from pg_temp.input_order_items i
              where i._cdc_last and i._cdc_op <> 'd'),
        array(select (o.ordered_at at time zone 'UTC')::date from pg_temp.input_orders o
              where o._cdc_new and o._cdc_last and o._cdc_op <> 'd'
              union
              select (pm.paid_at at time zone 'UTC')::date from pg_temp.input_payments pm
              where pm._cdc_last and pm._cdc_op <> 'd'));
    begin
        insert into fact_sales select * from star_new_sales();
    exception when unique_violation then
        insert into fact_sales as f select * from star_new_sales()
        on conflict (order_item_id) do update
            set order_id = excluded.order_id, date_key = excluded.date_key,
                customer_key = excluded.customer_key, product_key = excluded.product_key,
                employee_key = excluded.employee_key, store_key = excluded.store_key,
                quantity = excluded.quantity, unit_price = excluded.unit_price,
                revenue = excluded.revenue, status = excluded.status,
                payment_method = excluded.payment_method, ordered_at = excluded.ordered_at,
                hour_of_day = excluded.hour_of_day;
    end;
    begin
        insert into fact_payments select * from star_new_payments();
    exception when unique_violation then
        insert into fact_payments as f select * from star_new_payments()
        on conflict (payment_id) do update
            set order_id = excluded.order_id, date_key = excluded.date_key,
                customer_key = excluded.customer_key, employee_key = excluded.employee_key,
                store_key = excluded.store_key, amount = excluded.amount,
                method = excluded.method, order_status = excluded.order_status,
                paid_at = excluded.paid_at;
    end;
end $$;

-- New movements with a whole image, added to their groups.
create or replace function star_add_new_movements() returns void language plpgsql as $$
begin
    perform star_infer('{}', '{}',
        array(select m.store_id from pg_temp.input_inventory_movements m
              where m._cdc_new and m._cdc_last and m._cdc_op <> 'd' and m._cdc_keep is null),
        array(select m.product_id from pg_temp.input_inventory_movements m
              where m._cdc_new and m._cdc_last and m._cdc_op <> 'd' and m._cdc_keep is null),
        array(select (m.occurred_at at time zone 'UTC')::date
              from pg_temp.input_inventory_movements m
              where m._cdc_new and m._cdc_last and m._cdc_op <> 'd' and m._cdc_keep is null));

    insert into fact_inventory as f (date_key, store_id, product_id, reason, store_key,
                                     product_key, quantity_delta, movements, last_movement_at)
    select dim_date_key(g.d), g.s, g.p, g.r, coalesce(ds.store_key, -1),
           coalesce(pk.product_key, -1), g.qty, g.n, g.last_at
    from (
        select (m.occurred_at at time zone 'UTC')::date as d, m.store_id as s,
               m.product_id as p, m.reason as r, sum(m.delta) as qty,
               count(*)::integer as n, max(m.occurred_at) as last_at
        from pg_temp.input_inventory_movements m
        where m._cdc_new and m._cdc_last and m._cdc_op <> 'd' and m._cdc_keep is null
          and isfinite(m.occurred_at) and m.store_id is not null and m.product_id is not null
          and m.reason is not null and m._held
          and not exists (select 1 from pg_temp.star_touched_groups t
                          where t.d = (m.occurred_at at time zone 'UTC')::date
                            and t.s = m.store_id and t.p = m.product_id)
        group by 1, 2, 3, 4
    ) g
    left join dim_store ds on ds.store_id = g.s
    left join dim_product pk on pk.product_id = g.p
         and pk.valid_from <= g.last_at and g.last_at < pk.valid_to
    on conflict (date_key, store_id, product_id, reason) do update
        -- as sum() adds: an unknown delta (its column dropped) adds nothing
        set quantity_delta = case when f.quantity_delta is null then excluded.quantity_delta
                                  when excluded.quantity_delta is null then f.quantity_delta
                                  else f.quantity_delta + excluded.quantity_delta end,
            movements = f.movements + excluded.movements,
            store_key = excluded.store_key,
            product_key = case when f.last_movement_at is null
                                 or excluded.last_movement_at >= f.last_movement_at
                               then excluded.product_key else f.product_key end,
            last_movement_at = greatest(f.last_movement_at, excluded.last_movement_at);
end $$;

-- After the merge: dimensions, product versions, facts.
create or replace function star_after() returns void language plpgsql as $$
declare
    ch record;
begin
    perform star_refresh_dims(array(select s.id from pg_temp.input_stores s),
                              array(select e.id from pg_temp.input_employees e),
                              array(select c.id from pg_temp.input_customers c));

    for ch in select p._cdc_op, p._cdc_ts, p.id, p.name, p.category, p.price, p.is_available,
                     p._cdc_keep
              from pg_temp.input_products p where p._held order by p._cdc_pos
    loop
        perform star_product_change(ch._cdc_op, ch._cdc_ts, ch.id, ch.name, ch.category,
                                    ch.price, ch.is_available, ch._cdc_keep);
    end loop;

    -- The orders the stage names: changed orders, and those of changed lines and payments.
    -- (A transaction applied in parts does this once, over all its parts: per part, the
    -- lines of an order an earlier part inserted would name it again and again.)
    insert into pg_temp.star_touched_orders
    select x.order_id from (
        select s.id as order_id from pg_temp.input_orders s where not s._cdc_new
        union
        select s.order_id from pg_temp.input_order_items s where s._cdc_op <> 'd'
        union
        select s.order_id from pg_temp.input_payments s where s._cdc_op <> 'd'
    ) x
    where x.order_id is not null
      and not exists (select 1 from pg_temp.input_orders n where n.id = x.order_id and n._cdc_new)
    on conflict do nothing;
    -- An order new in the transaction is built from the stage tables, whichever chunk
    -- brought its lines.
    delete from pg_temp.star_touched_orders t
    using pg_temp.input_orders n where n._cdc_new and n.id = t.order_id;
    perform star_add_new_orders();
    perform star_refresh_orders(array(select t.order_id from pg_temp.star_touched_orders t));

    perform star_refresh_inventory(g.days, g.stores, g.products)
    from (select array_agg(t.d) as days, array_agg(t.s) as stores, array_agg(t.p) as products
          from pg_temp.star_touched_groups t) g
    where g.days is not null;
    perform star_add_new_movements();
    -- Clickstream: the batch's events loaded, the orders it touched attributed again.
    perform clickstream_after();
    -- Done: a later run of the same transaction starts from nothing touched.
    delete from pg_temp.star_touched_orders;
    delete from pg_temp.star_touched_groups;
end $$;
