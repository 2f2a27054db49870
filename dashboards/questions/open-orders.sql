-- title: Open orders by age
-- description: Orders still placed, preparing or ready, oldest first, with their age in minutes and an age band.
-- param: from date
-- param: to date
-- param: store integer
-- param: limit integer 100
select o.order_id, o.status, o.store_id, o.store, o.customer_id, o.ordered_at,
       o.age_minutes,
       case when o.age_minutes < 5 then '0-5 min'
            when o.age_minutes < 15 then '5-15 min'
            when o.age_minutes < 60 then '15-60 min'
            else 'over 60 min' end as age_band,
       o.items, o.total
from (
    select f.order_id,
           f.status,
           s.store_id,
           s.name as store,
           c.customer_id,
           min(f.ordered_at) as ordered_at,
           floor(extract(epoch from now() - min(f.ordered_at)) / 60)::bigint as age_minutes,
           sum(f.quantity)::bigint as items,
           sum(f.revenue) as total
    from fact_sales f
    join dim_store s on s.store_key = f.store_key
    join dim_customer c on c.customer_key = f.customer_key
    join dim_date d on d.date_key = f.date_key
    where f.status in ('placed', 'preparing', 'ready')
      [[and d.date >= {{from}}]]
      [[and d.date <= {{to}}]]
      [[and s.store_id = {{store}}]]
    group by f.order_id, f.status, s.store_id, s.name, c.customer_id
) o
order by o.ordered_at, o.order_id
limit {{limit}}
