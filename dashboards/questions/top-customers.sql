-- title: Top customers
-- description: The customers who spent the most (walk-in orders are not a customer). Cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
-- param: limit integer 10
select c.customer_id,
       c.name as customer,
       count(distinct f.order_id) as orders,
       sum(f.revenue) as revenue,
       max(f.ordered_at) as last_order_at
from fact_sales f
join dim_customer c on c.customer_key = f.customer_key
join dim_date d on d.date_key = f.date_key
join dim_store s on s.store_key = f.store_key
where f.status <> 'cancelled'
  and c.customer_id is not null
  [[and d.date >= {{from}}]]
  [[and d.date <= {{to}}]]
  [[and s.store_id = {{store}}]]
group by c.customer_key, c.customer_id, c.name
order by revenue desc, orders desc, c.customer_id
limit {{limit}}
