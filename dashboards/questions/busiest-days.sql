-- title: Busiest days
-- description: The days (UTC) with the most orders, then revenue: the ACME top_delivery_dates export. Cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
-- param: limit integer 5
select d.date as day,
       d.day_name,
       count(distinct f.order_id) as orders,
       sum(f.revenue) as revenue
from fact_sales f
join dim_date d on d.date_key = f.date_key
join dim_store s on s.store_key = f.store_key
where f.status <> 'cancelled'
  [[and d.date >= {{from}}]]
  [[and d.date <= {{to}}]]
  [[and s.store_id = {{store}}]]
group by d.date, d.day_name
order by orders desc, revenue desc, d.date desc
limit {{limit}}
