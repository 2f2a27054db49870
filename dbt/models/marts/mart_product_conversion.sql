-- Menu performance by UTC day and product: impressions, clicks, click-through rate (clicks per
-- impression), orders attributed to that day's clicks (last click in the order's session
-- within the attribution window), conversion rate (attributed orders per click), the revenue
-- of the attributed lines and the median minutes from click to order. A product's price
-- versions count as one product, under its current name.
with impressions as (
    select (occurred_at at time zone 'UTC')::date as day, product_id, count(*) as impressions
    from {{ source('star', 'fact_impressions') }}
    group by 1, 2
),

clicks as (
    select (occurred_at at time zone 'UTC')::date as day, product_id, count(*) as clicks
    from {{ source('star', 'fact_clicks') }}
    group by 1, 2
),

attributed as (
    select (clicked_at at time zone 'UTC')::date as day, product_id,
           count(distinct order_id) as orders, sum(revenue) as revenue,
           percentile_cont(0.5) within group (order by minutes_to_convert) as median_minutes
    from {{ source('star', 'fact_attribution') }}
    group by 1, 2
),

keys as (
    select day, product_id from impressions
    union select day, product_id from clicks
    union select day, product_id from attributed
)

select
    k.day,
    k.product_id,
    p.name as product_name,
    p.category,
    coalesce(i.impressions, 0) as impressions,
    coalesce(c.clicks, 0) as clicks,
    round(coalesce(c.clicks, 0)::numeric / nullif(i.impressions, 0), 4) as click_through_rate,
    coalesce(a.orders, 0) as orders,
    round(coalesce(a.orders, 0)::numeric / nullif(c.clicks, 0), 4) as conversion_rate,
    coalesce(a.revenue, 0) as attributed_revenue,
    round(a.median_minutes::numeric, 2) as median_minutes_to_convert,
    (select current_as_of from {{ ref('warehouse_as_of') }}) as data_as_of
from keys k
left join impressions i on i.day = k.day and i.product_id = k.product_id
left join clicks c on c.day = k.day and c.product_id = k.product_id
left join attributed a on a.day = k.day and a.product_id = k.product_id
left join {{ source('star', 'dim_product') }} p on p.product_id = k.product_id and p.is_current
