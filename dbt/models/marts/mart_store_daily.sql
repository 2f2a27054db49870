-- One row per store and UTC day with any activity: orders and items sold, revenue (cancelled
-- orders left out), cancellations, payments by method, stock restocked and the day's net
-- stock change.
with sales as (
    select
        s.store_id,
        f.date_key,
        count(distinct f.order_id) filter (where f.status <> 'cancelled') as orders,
        count(distinct f.order_id) filter (where f.status = 'cancelled') as cancelled_orders,
        coalesce(sum(f.quantity) filter (where f.status <> 'cancelled'), 0) as items,
        coalesce(sum(f.revenue) filter (where f.status <> 'cancelled'), 0) as revenue,
        count(distinct f.customer_key) filter (where f.status <> 'cancelled' and f.customer_key <> 0)
            as registered_customers
    from {{ source('star', 'fact_sales') }} f
    join {{ source('star', 'dim_store') }} s on s.store_key = f.store_key
    group by 1, 2
),

payments as (
    select
        s.store_id,
        p.date_key,
        sum(p.amount) as paid,
        coalesce(sum(p.amount) filter (where p.method = 'card'), 0) as paid_card,
        coalesce(sum(p.amount) filter (where p.method = 'cash'), 0) as paid_cash,
        coalesce(sum(p.amount) filter (where p.method = 'mobile'), 0) as paid_mobile
    from {{ source('star', 'fact_payments') }} p
    join {{ source('star', 'dim_store') }} s on s.store_key = p.store_key
    where p.order_status <> 'cancelled'
    group by 1, 2
),

stock as (
    select
        store_id,
        date_key,
        coalesce(sum(quantity_delta) filter (where reason = 'restock'), 0) as units_restocked,
        sum(quantity_delta) as net_stock_change
    from {{ source('star', 'fact_inventory') }}
    group by 1, 2
),

store_days as (
    select store_id, date_key from sales
    union
    select store_id, date_key from payments
    union
    select store_id, date_key from stock
)

select
    k.store_id,
    st.name as store_name,
    d.date,
    d.day_name,
    d.is_weekend,
    coalesce(sa.orders, 0) as orders,
    coalesce(sa.cancelled_orders, 0) as cancelled_orders,
    coalesce(sa.items, 0) as items,
    coalesce(sa.revenue, 0) as revenue,
    round(sa.revenue / nullif(sa.orders, 0), 2) as average_order_value,
    coalesce(sa.registered_customers, 0) as registered_customers,
    coalesce(pa.paid, 0) as paid,
    coalesce(pa.paid_card, 0) as paid_card,
    coalesce(pa.paid_cash, 0) as paid_cash,
    coalesce(pa.paid_mobile, 0) as paid_mobile,
    coalesce(sk.units_restocked, 0) as units_restocked,
    coalesce(sk.net_stock_change, 0) as net_stock_change,
    (select current_as_of from {{ ref('warehouse_as_of') }}) as data_as_of
from store_days k
join {{ source('star', 'dim_date') }} d on d.date_key = k.date_key
join {{ source('star', 'dim_store') }} st on st.store_id = k.store_id
left join sales sa on sa.store_id = k.store_id and sa.date_key = k.date_key
left join payments pa on pa.store_id = k.store_id and pa.date_key = k.date_key
left join stock sk on sk.store_id = k.store_id and sk.date_key = k.date_key
