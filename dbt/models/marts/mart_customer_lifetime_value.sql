-- One row per registered customer with at least one order that was not cancelled: cohort
-- (UTC month of the first such order), orders, items, lifetime revenue, average order value,
-- first and last order. Cancelled orders are counted apart and bring no revenue; walk-in
-- sales have no customer and are not here.
with orders as (
    select
        c.customer_id,
        f.order_id,
        min(f.ordered_at) as ordered_at,
        bool_or(f.status = 'cancelled') as cancelled,
        sum(f.quantity) as items,
        sum(f.revenue) as revenue
    from {{ source('star', 'fact_sales') }} f
    join {{ source('star', 'dim_customer') }} c on c.customer_key = f.customer_key
    where c.customer_id is not null
    group by c.customer_id, f.order_id
)

select
    c.customer_id,
    c.name,
    c.email,
    c.created_at as registered_at,
    date_trunc('month', (min(o.ordered_at) filter (where not o.cancelled)) at time zone 'UTC')::date as cohort_month,
    min(o.ordered_at) filter (where not o.cancelled) as first_order_at,
    max(o.ordered_at) filter (where not o.cancelled) as last_order_at,
    count(*) filter (where not o.cancelled) as orders,
    count(*) filter (where o.cancelled) as cancelled_orders,
    sum(o.items) filter (where not o.cancelled) as items,
    sum(o.revenue) filter (where not o.cancelled) as lifetime_revenue,
    round(sum(o.revenue) filter (where not o.cancelled) / count(*) filter (where not o.cancelled), 2)
        as average_order_value,
    (select current_as_of from {{ ref('warehouse_as_of') }}) as data_as_of
from orders o
join {{ source('star', 'dim_customer') }} c on c.customer_id = o.customer_id
group by c.customer_id, c.name, c.email, c.created_at
having count(*) filter (where not o.cancelled) > 0
