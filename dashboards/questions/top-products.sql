-- title: Top products
-- description: The best-selling products by revenue. Every price version of a product (SCD type 2) counts for the one product, shown under its current name. Cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
-- param: limit integer 10
with sold as (
    select p.product_id,
           count(distinct f.order_id) as orders,
           sum(f.quantity)::bigint as items,
           sum(f.revenue) as revenue
    from fact_sales f
    join dim_product p on p.product_key = f.product_key
    join dim_date d on d.date_key = f.date_key
    join dim_store s on s.store_key = f.store_key
    where f.status <> 'cancelled'
      [[and d.date >= {{from}}]]
      [[and d.date <= {{to}}]]
      [[and s.store_id = {{store}}]]
    group by p.product_id
)
select sold.product_id, cur.name as product, cur.category, sold.orders, sold.items, sold.revenue
from sold
cross join lateral (
    select v.name, v.category from dim_product v
    where v.product_id = sold.product_id
    order by v.is_current desc, v.valid_from desc
    limit 1
) cur
order by sold.revenue desc, sold.items desc, sold.product_id
limit {{limit}}
