-- title: Click-through and conversion by product and day
-- description: Per product and UTC day: impressions, clicks, click-through rate (clicks per impression), orders attributed to that day's clicks (last click in the session within the attribution window), conversion rate (attributed orders per click) and the revenue of the attributed lines. The product is shown under its current name.
-- param: from date
-- param: to date
-- param: limit integer 200
select c.date as day, c.product_id, coalesce(cur.name, 'product ' || c.product_id) as product,
       c.impressions, c.clicks, c.ctr, c.orders, c.conversion_rate, c.revenue
from clickstream_daily c
left join lateral (
    select v.name from dim_product v
    where v.product_id = c.product_id
    order by v.is_current desc, v.valid_from desc
    limit 1
) cur on true
where true
  [[and c.date >= {{from}}]]
  [[and c.date <= {{to}}]]
order by c.date desc, c.clicks desc, c.impressions desc, c.product_id
limit {{limit}}
