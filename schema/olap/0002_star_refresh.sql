-- Star-schema refresh, run by the replicator inside each batch's transaction after the
-- replica tables are applied. Every function is idempotent: running it again for the same
-- keys (or the same journal range) leaves the star schema as it is.

-- Type 1 dimensions: upsert the touched ids from the replica; a source delete marks the
-- member deleted (facts may still point at it).
create function star_refresh_dims(p_stores bigint[], p_employees bigint[], p_customers bigint[])
returns void language plpgsql as $$
begin
    if cardinality(p_stores) > 0 then
        insert into dim_store as d (store_id, name, city, opened_on)
        select s.id, coalesce(s.name, ''), s.city, s.opened_on
        from replica.stores s where s.id = any (p_stores)
        on conflict (store_id) do update
            set name = excluded.name, city = excluded.city, opened_on = excluded.opened_on,
                is_inferred = false, is_deleted = false
            where (d.name, d.city, d.opened_on, d.is_inferred, d.is_deleted)
                  is distinct from (excluded.name, excluded.city, excluded.opened_on, false, false);
        update dim_store d set is_deleted = true
        where d.store_id = any (p_stores) and not d.is_deleted
          and not exists (select 1 from replica.stores s where s.id = d.store_id);
    end if;

    if cardinality(p_employees) > 0 then
        insert into dim_employee as d (employee_id, name, role, store_id, active, hired_on)
        select e.id, coalesce(e.name, ''), e.role, e.store_id, e.active, e.hired_on
        from replica.employees e where e.id = any (p_employees)
        on conflict (employee_id) do update
            set name = excluded.name, role = excluded.role, store_id = excluded.store_id,
                active = excluded.active, hired_on = excluded.hired_on,
                is_inferred = false, is_deleted = false
            where (d.name, d.role, d.store_id, d.active, d.hired_on, d.is_inferred, d.is_deleted)
                  is distinct from (excluded.name, excluded.role, excluded.store_id,
                                    excluded.active, excluded.hired_on, false, false);
        update dim_employee d set is_deleted = true
        where d.employee_id = any (p_employees) and not d.is_deleted
          and not exists (select 1 from replica.employees e where e.id = d.employee_id);
    end if;

    if cardinality(p_customers) > 0 then
        insert into dim_customer as d (customer_id, name, email, created_at)
        select c.id, coalesce(c.name, ''), c.email, c.created_at
        from replica.customers c where c.id = any (p_customers)
        on conflict (customer_id) do update
            set name = excluded.name, email = excluded.email, created_at = excluded.created_at,
                is_inferred = false, is_deleted = false
            where (d.name, d.email, d.created_at, d.is_inferred, d.is_deleted)
                  is distinct from (excluded.name, excluded.email, excluded.created_at, false, false);
        update dim_customer d set is_deleted = true
        where d.customer_id = any (p_customers) and not d.is_deleted
          and not exists (select 1 from replica.customers c where c.id = d.customer_id);
    end if;
end $$;

-- dim_product, type 2, from the journal's product events in commit order. A product's first
-- version is valid from -infinity (so every order finds one); a change of name, category or
-- price at commit time T closes the current version at T and opens a new one from T; a change
-- of availability updates the current version in place. Events older than the current
-- version (a replay over a newer state) change nothing.
create function star_apply_product_events(p_from_lsn pg_lsn, p_from_seq integer,
                                          p_to_lsn pg_lsn, p_to_seq integer)
returns void language plpgsql as $$
declare
    ev record;
    cur dim_product%rowtype;
    v_id bigint;
    v_name text;
    v_category text;
    v_price numeric(10, 2);
    v_available boolean;
begin
    for ev in
        select e.op, e.commit_ts, coalesce(e.key, e.after, e.before) as k, e.after
        from cdc_events e
        where (e.lsn, e.seq) > (p_from_lsn, p_from_seq) and (e.lsn, e.seq) <= (p_to_lsn, p_to_seq)
          and e.source_schema = 'public' and e.source_table = 'products' and e.op <> 't'
        order by e.lsn, e.seq
    loop
        v_id := (ev.k ->> 'id')::bigint;
        select * into cur from dim_product where product_id = v_id and is_current;
        if ev.op = 'd' then
            update dim_product set is_deleted = true
            where product_id = v_id and is_current and not is_deleted;
            continue;
        end if;
        v_name := coalesce(ev.after ->> 'name', cur.name, '');
        v_category := coalesce(ev.after ->> 'category', cur.category, '');
        v_price := coalesce((ev.after ->> 'price')::numeric, cur.price);
        v_available := coalesce((ev.after ->> 'is_available')::boolean, cur.is_available);
        if cur.product_key is null then
            insert into dim_product (product_id, name, category, price, is_available, valid_from)
            values (v_id, v_name, v_category, v_price, v_available, '-infinity');
        elsif cur.is_inferred or ev.commit_ts = cur.valid_from
              or (cur.name, cur.category, cur.price) is not distinct from (v_name, v_category, v_price) then
            update dim_product
            set name = v_name, category = v_category, price = v_price, is_available = v_available,
                is_inferred = false, is_deleted = false
            where product_key = cur.product_key
              and (name, category, price, is_available, is_inferred, is_deleted)
                  is distinct from (v_name, v_category, v_price, v_available, false, false);
        elsif ev.commit_ts > cur.valid_from then
            update dim_product set valid_to = ev.commit_ts, is_current = false
            where product_key = cur.product_key;
            insert into dim_product (product_id, name, category, price, is_available, version,
                                     valid_from)
            values (v_id, v_name, v_category, v_price, v_available, cur.version + 1, ev.commit_ts);
        end if;
    end loop;
end $$;

-- Members for keys that facts reference before their dimension row has arrived; completed
-- in place when it does.
create function star_infer_members(p_orders uuid[]) returns void language sql as $$
    insert into dim_customer (customer_id, name, is_inferred)
    select distinct o.customer_id, 'unknown customer ' || o.customer_id, true
    from replica.orders o
    where o.id = any (p_orders) and o.customer_id is not null
      and not exists (select 1 from dim_customer c where c.customer_id = o.customer_id)
    on conflict (customer_id) do nothing;

    insert into dim_employee (employee_id, name, is_inferred)
    select distinct o.employee_id, 'unknown employee ' || o.employee_id, true
    from replica.orders o
    where o.id = any (p_orders) and o.employee_id is not null
      and not exists (select 1 from dim_employee e where e.employee_id = o.employee_id)
    on conflict (employee_id) do nothing;

    insert into dim_store (store_id, name, is_inferred)
    select distinct o.store_id, 'unknown store ' || o.store_id, true
    from replica.orders o
    where o.id = any (p_orders) and o.store_id is not null
      and not exists (select 1 from dim_store s where s.store_id = o.store_id)
    on conflict (store_id) do nothing;

    insert into dim_product (product_id, name, category, valid_from, is_inferred)
    select distinct i.product_id, 'unknown product ' || i.product_id, 'unknown', '-infinity'::timestamptz, true
    from replica.order_items i
    where i.order_id = any (p_orders) and i.product_id is not null
      and not exists (select 1 from dim_product p where p.product_id = i.product_id)
    on conflict do nothing;

    select ensure_dim_dates(array(
        select distinct (o.ordered_at at time zone 'UTC')::date
        from replica.orders o where o.id = any (p_orders)));
$$;

-- fact_sales and fact_payments of the touched orders, recomputed from the replica.
create function star_refresh_orders(p_orders uuid[]) returns void language plpgsql as $$
begin
    if cardinality(p_orders) = 0 then
        return;
    end if;
    perform star_infer_members(p_orders);

    delete from fact_sales f
    where f.order_id = any (p_orders)
      and not exists (select 1 from replica.order_items i join replica.orders o on o.id = i.order_id
                      where i.id = f.order_item_id);

    insert into fact_sales as f (order_item_id, order_id, date_key, customer_key, product_key,
                                 employee_key, store_key, quantity, unit_price, revenue, status,
                                 payment_method, ordered_at, hour_of_day)
    select i.id, o.id, dim_date_key((o.ordered_at at time zone 'UTC')::date),
           coalesce(c.customer_key, 0), p.product_key, e.employee_key, s.store_key,
           i.quantity, i.unit_price, i.quantity * i.unit_price, o.status, o.payment_method,
           o.ordered_at, extract(hour from o.ordered_at at time zone 'UTC')
    from replica.orders o
    join replica.order_items i on i.order_id = o.id
    left join dim_customer c on c.customer_id = o.customer_id
    join dim_employee e on e.employee_id = o.employee_id
    join dim_store s on s.store_id = o.store_id
    join lateral (
        select dp.product_key from dim_product dp
        where dp.product_id = i.product_id and dp.valid_from <= o.ordered_at
          and o.ordered_at < dp.valid_to
        order by dp.valid_from desc limit 1) p on true
    where o.id = any (p_orders)
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

    perform ensure_dim_dates(array(
        select distinct (pm.paid_at at time zone 'UTC')::date
        from replica.payments pm where pm.order_id = any (p_orders)));

    delete from fact_payments f
    where f.order_id = any (p_orders)
      and not exists (select 1 from replica.payments pm join replica.orders o on o.id = pm.order_id
                      where pm.id = f.payment_id);

    insert into fact_payments as f (payment_id, order_id, date_key, customer_key, employee_key,
                                    store_key, amount, method, order_status, paid_at)
    select pm.id, o.id, dim_date_key((pm.paid_at at time zone 'UTC')::date),
           coalesce(c.customer_key, 0), e.employee_key, s.store_key, pm.amount, pm.method,
           o.status, pm.paid_at
    from replica.orders o
    join replica.payments pm on pm.order_id = o.id
    left join dim_customer c on c.customer_id = o.customer_id
    join dim_employee e on e.employee_id = o.employee_id
    join dim_store s on s.store_id = o.store_id
    where o.id = any (p_orders)
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

-- fact_inventory for the touched (day, store, product) groups, recomputed from the replica.
create function star_refresh_inventory(p_days date[], p_stores bigint[], p_products bigint[])
returns void language plpgsql as $$
begin
    if cardinality(p_days) = 0 then
        return;
    end if;
    perform ensure_dim_dates(p_days);

    insert into dim_store (store_id, name, is_inferred)
    select distinct g.s, 'unknown store ' || g.s, true from unnest(p_stores) g(s)
    where not exists (select 1 from dim_store d where d.store_id = g.s)
    on conflict (store_id) do nothing;
    insert into dim_product (product_id, name, category, valid_from, is_inferred)
    select distinct g.p, 'unknown product ' || g.p, 'unknown', '-infinity'::timestamptz, true
    from unnest(p_products) g(p)
    where not exists (select 1 from dim_product d where d.product_id = g.p)
    on conflict do nothing;

    delete from fact_inventory f
    using unnest(p_days, p_stores, p_products) g(d, s, p)
    where f.date_key = dim_date_key(g.d) and f.store_id = g.s and f.product_id = g.p;

    insert into fact_inventory (date_key, store_id, product_id, reason, store_key, product_key,
                                quantity_delta, movements)
    select dim_date_key(a.d), a.s, a.p, a.reason, ds.store_key, p.product_key, a.qty, a.n
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

-- The whole refresh for one journal range (exclusive lower, inclusive upper bound).
create function star_refresh(p_from_lsn pg_lsn, p_from_seq integer,
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
          and e.source_schema = 'public' and e.op <> 't'
    ) x;

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
    ) g;

    perform star_refresh_dims(v_stores, v_employees, v_customers);
    if v_has_products then
        perform star_apply_product_events(p_from_lsn, p_from_seq, p_to_lsn, p_to_seq);
    end if;
    perform star_refresh_orders(v_orders);
    perform star_refresh_inventory(v_days, v_mstores, v_mproducts);
end $$;

-- After a TRUNCATE of a source table, or to check a star schema: every key, from the replica
-- and from what the star schema holds now. Products get a version if they have none.
create function star_refresh_all() returns void language plpgsql as $$
begin
    perform star_refresh_dims(
        array(select id from replica.stores union select store_id from dim_store),
        array(select id from replica.employees union select employee_id from dim_employee),
        array(select id from replica.customers
              union select customer_id from dim_customer where customer_id is not null));
    update dim_product d set is_deleted = true
    where d.is_current and not d.is_deleted
      and not exists (select 1 from replica.products p where p.id = d.product_id);
    insert into dim_product (product_id, name, category, price, is_available, valid_from)
    select p.id, coalesce(p.name, ''), coalesce(p.category, ''), p.price, p.is_available, '-infinity'
    from replica.products p
    where not exists (select 1 from dim_product d where d.product_id = p.id);
    perform star_refresh_orders(array(select id from replica.orders
                                      union select order_id from fact_sales
                                      union select order_id from fact_payments));
    delete from fact_inventory;
    perform star_refresh_inventory(g.days, g.stores, g.products)
    from (select array_agg(d) as days, array_agg(s) as stores, array_agg(p) as products
          from (select distinct (m.occurred_at at time zone 'UTC')::date d, m.store_id s, m.product_id p
                from replica.inventory_movements m) x) g;
end $$;

-- Merges the after-images of one key's changes in commit order: a later image's columns
-- win, and a column missing from it (an unchanged TOASTed value) keeps the earlier value.
create aggregate jsonb_concat_agg(jsonb) (sfunc = jsonb_concat, stype = jsonb);
