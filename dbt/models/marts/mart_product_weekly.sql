-- Product performance by ISO week (Monday, UTC): orders, units, revenue and average price
-- paid, the product's rank and share within its category that week, and the change against
-- the product's previous week. A product's price versions (SCD type 2) count as one product,
-- shown under its current name and category. Cancelled orders are left out.
with weekly as (
    select
        date_trunc('week', f.ordered_at at time zone 'UTC')::date as week_start,
        v.product_id,
        count(distinct f.order_id) as orders,
        sum(f.quantity) as units,
        sum(f.revenue) as revenue
    from {{ source('star', 'fact_sales') }} f
    join {{ source('star', 'dim_product') }} v on v.product_key = f.product_key
    where f.status <> 'cancelled'
    group by 1, 2
)

select
    w.week_start,
    w.product_id,
    p.name as product_name,
    p.category,
    w.orders,
    w.units,
    w.revenue,
    round(w.revenue / nullif(w.units, 0), 2) as average_unit_price,
    rank() over (partition by w.week_start, p.category order by w.revenue desc) as rank_in_category,
    round(w.revenue / nullif(sum(w.revenue) over (partition by w.week_start, p.category), 0), 4)
        as share_of_category_revenue,
    w.revenue - lag(w.revenue) over (partition by w.product_id order by w.week_start)
        as revenue_change_vs_previous_week,
    (select current_as_of from {{ ref('warehouse_as_of') }}) as data_as_of
from weekly w
join {{ source('star', 'dim_product') }} p on p.product_id = w.product_id and p.is_current
