-- title: Revenue by hour of day
-- description: Orders and revenue per hour of the day (UTC, 0-23), all 24 hours listed: the peak hours. Cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
select h.hour,
       coalesce(x.orders, 0) as orders,
       coalesce(x.revenue, 0.00) as revenue
from generate_series(0, 23) as h(hour)
left join (
    select f.hour_of_day as hour,
           count(distinct f.order_id) as orders,
           sum(f.revenue) as revenue
    from fact_sales f
    join dim_date d on d.date_key = f.date_key
    join dim_store s on s.store_key = f.store_key
    where f.status <> 'cancelled'
      [[and d.date >= {{from}}]]
      [[and d.date <= {{to}}]]
      [[and s.store_id = {{store}}]]
    group by f.hour_of_day
) x on x.hour = h.hour
order by h.hour
