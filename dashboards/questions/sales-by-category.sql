-- title: Sales by category
-- description: Items sold and revenue per product category (the category when the order was placed), with each category's share of revenue in percent. Cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
select p.category,
       count(distinct f.order_id) as orders,
       sum(f.quantity)::bigint as items,
       sum(f.revenue) as revenue,
       round(100 * sum(f.revenue) / nullif(sum(sum(f.revenue)) over (), 0), 1) as share_pct
from fact_sales f
join dim_product p on p.product_key = f.product_key
join dim_date d on d.date_key = f.date_key
join dim_store s on s.store_key = f.store_key
where f.status <> 'cancelled'
  [[and d.date >= {{from}}]]
  [[and d.date <= {{to}}]]
  [[and s.store_id = {{store}}]]
group by p.category
order by revenue desc, p.category
