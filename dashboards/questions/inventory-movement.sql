-- title: Inventory movement by product
-- description: Units restocked, sold, returned by cancellations and adjusted per product (all price versions together), with the net change and the number of movements.
-- param: from date
-- param: to date
-- param: store integer
with moved as (
    select i.product_id,
           coalesce(sum(i.quantity_delta) filter (where i.reason = 'restock'), 0)::bigint as restocked,
           (-coalesce(sum(i.quantity_delta) filter (where i.reason = 'sale'), 0))::bigint as sold,
           coalesce(sum(i.quantity_delta) filter (where i.reason = 'cancel'), 0)::bigint as returned,
           coalesce(sum(i.quantity_delta) filter (where i.reason = 'adjustment'), 0)::bigint as adjusted,
           sum(i.quantity_delta)::bigint as net,
           sum(i.movements)::bigint as movements
    from fact_inventory i
    join dim_date d on d.date_key = i.date_key
    where true
      [[and d.date >= {{from}}]]
      [[and d.date <= {{to}}]]
      [[and i.store_id = {{store}}]]
    group by i.product_id
)
select moved.product_id, cur.name as product, moved.restocked, moved.sold, moved.returned,
       moved.adjusted, moved.net, moved.movements
from moved
cross join lateral (
    select v.name from dim_product v
    where v.product_id = moved.product_id
    order by v.is_current desc, v.valid_from desc
    limit 1
) cur
order by moved.sold desc, moved.net desc, moved.product_id
