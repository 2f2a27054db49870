-- title: Store comparison
-- description: Orders, distinct customers, revenue and average order value per store. Cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
select s.store_id,
       s.name as store,
       s.city,
       count(distinct f.order_id) as orders,
       count(distinct f.customer_key) filter (where f.customer_key <> 0) as customers,
       sum(f.revenue) as revenue,
       round(sum(f.revenue) / count(distinct f.order_id), 2) as average_order_value
from fact_sales f
join dim_store s on s.store_key = f.store_key
join dim_date d on d.date_key = f.date_key
where f.status <> 'cancelled'
  [[and d.date >= {{from}}]]
  [[and d.date <= {{to}}]]
  [[and s.store_id = {{store}}]]
group by s.store_key, s.store_id, s.name, s.city
order by revenue desc, s.store_id
