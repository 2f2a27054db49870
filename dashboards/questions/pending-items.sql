-- title: Pending items by product
-- description: Items of open orders (placed, preparing, ready) still to be made, per product (all price versions together), with the latest order time: the ACME pending_items export.
-- param: from date
-- param: to date
-- param: store integer
with pending as (
    select p.product_id,
           sum(f.quantity)::bigint as quantity,
           count(distinct f.order_id) as orders,
           max(f.ordered_at) as last_updated
    from fact_sales f
    join dim_product p on p.product_key = f.product_key
    join dim_date d on d.date_key = f.date_key
    join dim_store s on s.store_key = f.store_key
    where f.status in ('placed', 'preparing', 'ready')
      [[and d.date >= {{from}}]]
      [[and d.date <= {{to}}]]
      [[and s.store_id = {{store}}]]
    group by p.product_id
)
select pending.product_id, cur.name as product, pending.quantity, pending.orders,
       pending.last_updated
from pending
cross join lateral (
    select v.name from dim_product v
    where v.product_id = pending.product_id
    order by v.is_current desc, v.valid_from desc
    limit 1
) cur
order by pending.quantity desc, pending.product_id
