-- Star schema: facts recomputed from the star's inputs (star_input.*, see 12_star_inputs.sql).
-- Re-applied by `brewlytics migrate` whenever this file changes. Every function is idempotent.
--
-- A fact needs a finite time: an order placed at 'infinity' has no day to be counted on. A
-- row the star cannot read (`_held` false) has no fact: it is listed in star_dead_letters. An
-- employee, store or product the source does not name (NULL, or -1: its column was dropped)
-- is the unknown member, key -1; an order without a customer is the walk-in, key 0.

-- fact_sales and fact_payments of the given orders, recomputed from the inputs.
create or replace function star_refresh_orders(p_orders uuid[]) returns void
language plpgsql as $$
begin
    if cardinality(p_orders) = 0 then
        return;
    end if;
    perform star_infer(
        array(select o.customer_id from star_input.orders o where o.id = any (p_orders)),
        array(select o.employee_id from star_input.orders o where o.id = any (p_orders)),
        array(select o.store_id from star_input.orders o where o.id = any (p_orders)),
        array(select i.product_id from star_input.order_items i where i.order_id = any (p_orders)),
        array(select (o.ordered_at at time zone 'UTC')::date from star_input.orders o
              where o.id = any (p_orders)
              union
              select (pm.paid_at at time zone 'UTC')::date from star_input.payments pm
              where pm.order_id = any (p_orders)));

    delete from fact_sales f
    where f.order_id = any (p_orders)
      and not exists (select 1 from star_input.order_items i
                      join star_input.orders o on o.id = i.order_id
                      where i.id = f.order_item_id and o.id = f.order_id
                        and isfinite(o.ordered_at) and o._held and i._held);

    insert into fact_sales as f (order_item_id, order_id, date_key, customer_key, product_key,
                                 employee_key, store_key, quantity, unit_price, revenue, status,
                                 payment_method, ordered_at, hour_of_day)
    select i.id, o.id, dim_date_key((o.ordered_at at time zone 'UTC')::date),
           coalesce(c.customer_key, 0), coalesce(p.product_key, -1),
           coalesce(e.employee_key, -1), coalesce(s.store_key, -1),
           i.quantity, i.unit_price, i.quantity * i.unit_price, o.status, o.payment_method,
           o.ordered_at, extract(hour from o.ordered_at at time zone 'UTC')
    from star_input.orders o
    join star_input.order_items i on i.order_id = o.id
    left join dim_customer c on c.customer_id = o.customer_id
    left join dim_employee e on e.employee_id = o.employee_id
    left join dim_store s on s.store_id = o.store_id
    left join dim_product p on p.product_id = i.product_id
         and p.valid_from <= o.ordered_at and o.ordered_at < p.valid_to
    where o.id = any (p_orders) and isfinite(o.ordered_at) and o._held and i._held
    on conflict (order_item_id) do update
        set order_id = excluded.order_id, date_key = excluded.date_key,
            customer_key = excluded.customer_key, product_key = excluded.product_key,
            employee_key = excluded.employee_key, store_key = excluded.store_key,
            quantity = excluded.quantity, unit_price = excluded.unit_price,
            revenue = excluded.revenue, status = excluded.status,
            payment_method = excluded.payment_method, ordered_at = excluded.ordered_at,
            hour_of_day = excluded.hour_of_day
        where (f.order_id, f.date_key, f.customer_key, f.product_key, f.employee_key, f.store_key,
               f.quantity, f.unit_price, f.revenue, f.status, f.payment_method, f.ordered_at)
              is distinct from
              (excluded.order_id, excluded.date_key, excluded.customer_key, excluded.product_key,
               excluded.employee_key, excluded.store_key, excluded.quantity, excluded.unit_price,
               excluded.revenue, excluded.status, excluded.payment_method, excluded.ordered_at);

    delete from fact_payments f
    where f.order_id = any (p_orders)
      and not exists (select 1 from star_input.payments pm
                      join star_input.orders o on o.id = pm.order_id
                      where pm.id = f.payment_id and o.id = f.order_id
                        and isfinite(pm.paid_at) and o._held and pm._held);

    insert into fact_payments as f (payment_id, order_id, date_key, customer_key, employee_key,
                                    store_key, amount, method, order_status, paid_at)
    select pm.id, o.id, dim_date_key((pm.paid_at at time zone 'UTC')::date),
           coalesce(c.customer_key, 0), coalesce(e.employee_key, -1),
           coalesce(s.store_key, -1), pm.amount, pm.method, o.status, pm.paid_at
    from star_input.orders o
    join star_input.payments pm on pm.order_id = o.id
    left join dim_customer c on c.customer_id = o.customer_id
    left join dim_employee e on e.employee_id = o.employee_id
    left join dim_store s on s.store_id = o.store_id
    where o.id = any (p_orders) and isfinite(pm.paid_at) and o._held and pm._held
    on conflict (payment_id) do update
        set order_id = excluded.order_id, date_key = excluded.date_key,
            customer_key = excluded.customer_key, employee_key = excluded.employee_key,
            store_key = excluded.store_key, amount = excluded.amount, method = excluded.method,
            order_status = excluded.order_status, paid_at = excluded.paid_at
        where (f.order_id, f.date_key, f.customer_key, f.employee_key, f.store_key, f.amount,
               f.method, f.order_status, f.paid_at)
              is distinct from
              (excluded.order_id, excluded.date_key, excluded.customer_key, excluded.employee_key,
               excluded.store_key, excluded.amount, excluded.method, excluded.order_status,
               excluded.paid_at);
end $$;

-- fact_inventory for the given (day, store, product) groups, recomputed from the inputs.
create or replace function star_refresh_inventory(p_days date[], p_stores bigint[],
                                                  p_products bigint[])
returns void language plpgsql as $$
begin
    if cardinality(p_days) = 0 then
        return;
    end if;
    perform star_infer('{}', '{}', p_stores, p_products, p_days);

    delete from fact_inventory f
    using unnest(p_days, p_stores, p_products) g(d, s, p)
    where f.date_key = dim_date_key(g.d) and f.store_id = g.s and f.product_id = g.p;

    insert into fact_inventory (date_key, store_id, product_id, reason, store_key, product_key,
                                quantity_delta, movements, last_movement_at)
    select dim_date_key(a.d), a.s, a.p, a.reason, coalesce(ds.store_key, -1),
           coalesce(p.product_key, -1), a.qty, a.n, a.last_at
    from (
        select g.d, g.s, g.p, m.reason, sum(m.delta) as qty, count(*)::integer as n,
               max(m.occurred_at) as last_at
        from (select distinct * from unnest(p_days, p_stores, p_products)) g(d, s, p)
        join star_input.inventory_movements m
          on m.store_id = g.s and m.product_id = g.p
         and m.occurred_at >= (g.d::timestamp at time zone 'UTC')
         and m.occurred_at < ((g.d + 1)::timestamp at time zone 'UTC')
        where isfinite(g.d) and m.reason is not null and m._held
        group by g.d, g.s, g.p, m.reason
    ) a
    left join dim_store ds on ds.store_id = a.s
    left join dim_product p on p.product_id = a.p
         and p.valid_from <= a.last_at and a.last_at < p.valid_to;
end $$;
