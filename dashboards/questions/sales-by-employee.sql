-- title: Sales by employee
-- description: Orders taken, items and revenue per employee, with their average order value. Cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
select e.employee_id,
       e.name as employee,
       e.role,
       count(distinct f.order_id) as orders,
       sum(f.quantity)::bigint as items,
       sum(f.revenue) as revenue,
       round(sum(f.revenue) / count(distinct f.order_id), 2) as average_order_value
from fact_sales f
join dim_employee e on e.employee_key = f.employee_key
join dim_date d on d.date_key = f.date_key
join dim_store s on s.store_key = f.store_key
where f.status <> 'cancelled'
  [[and d.date >= {{from}}]]
  [[and d.date <= {{to}}]]
  [[and s.store_id = {{store}}]]
group by e.employee_key, e.employee_id, e.name, e.role
order by revenue desc, e.employee_id
