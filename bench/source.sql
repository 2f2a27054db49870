-- Benchmark helpers on OLTP (coffee_oltp). Not part of the product.

-- n orders of one line each (4 row changes per order), set-based, in the caller's transaction.
create or replace function bench_bulk_orders(n integer) returns bigint
language plpgsql as $$
declare
    custs bigint[] := array(select id from customers);
    emps bigint[] := array(select id from employees);
    prods bigint[] := array(select id from products);
begin
    create temp table bench_new on commit drop as
    select gen_random_uuid() as id,
           custs[1 + floor(random() * cardinality(custs))::int] as customer_id,
           emps[1 + floor(random() * cardinality(emps))::int] as employee_id,
           prods[1 + floor(random() * cardinality(prods))::int] as product_id,
           now() - random() * interval '28 days' as ordered_at
    from generate_series(1, n);
    insert into orders (id, customer_id, employee_id, store_id, status, payment_method,
                        ordered_at, updated_at, total)
    select b.id, b.customer_id, b.employee_id, coalesce(e.store_id, 1), 'completed', 'card',
           b.ordered_at, b.ordered_at, p.price
    from bench_new b join employees e on e.id = b.employee_id join products p on p.id = b.product_id;
    insert into order_items (order_id, product_id, quantity, unit_price)
    select b.id, b.product_id, 1, p.price from bench_new b join products p on p.id = b.product_id;
    insert into payments (order_id, amount, method, paid_at)
    select b.id, p.price, 'card', b.ordered_at from bench_new b join products p on p.id = b.product_id;
    insert into inventory_movements (store_id, product_id, order_id, delta, reason, occurred_at)
    select coalesce(e.store_id, 1), b.product_id, b.id, -1, 'sale', b.ordered_at
    from bench_new b join employees e on e.id = b.employee_id;
    drop table bench_new;
    return n;
end $$;

-- The seed's design: a trigger logging every new order as a JSONB payload into a journal
-- table, which a poller reads by id > last seen id.
create table if not exists cdc_orders_seed (
    id          bigserial primary key,
    order_id    uuid not null,
    operation   text not null,
    payload     jsonb not null,
    captured_at timestamptz not null default now()
);

create or replace function cdc_orders_seed_capture() returns trigger
language plpgsql as $$
begin
    insert into cdc_orders_seed (order_id, operation, payload)
    values (new.id, tg_op, to_jsonb(new));
    return new;
end $$;
