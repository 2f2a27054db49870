-- title: Daily revenue
-- description: Orders, items and revenue per day (UTC). Cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
select d.date as day,
       count(distinct f.order_id) as orders,
       sum(f.quantity)::bigint as items,
       sum(f.revenue) as revenue
from fact_sales f
join dim_date d on d.date_key = f.date_key
join dim_store s on s.store_key = f.store_key
where f.status <> 'cancelled'
  [[and d.date >= {{from}}]]
  [[and d.date <= {{to}}]]
  [[and s.store_id = {{store}}]]
group by d.date
order by d.date
