-- title: Menu funnel
-- description: Impressions, clicks and attributed orders of the menu's products in the range (UTC days of the events; an order counts on the day of the click it is attributed to, the last click on the product in the order's session within the attribution window). Clicks per impression and orders per click as rates.
-- param: from date
-- param: to date
with d as (
    select coalesce(sum(impressions), 0)::bigint as impressions,
           coalesce(sum(clicks), 0)::bigint as clicks,
           coalesce(sum(orders), 0)::bigint as orders
    from clickstream_daily
    where true
      [[and date >= {{from}}]]
      [[and date <= {{to}}]]
)
select s.step, s.stage, s.count,
       round(s.count::numeric / nullif(s.before, 0), 4) as rate
from d
cross join lateral (values
    (1, 'impressions', d.impressions, null::bigint),
    (2, 'clicks', d.clicks, d.impressions),
    (3, 'orders', d.orders, d.clicks)
) as s(step, stage, count, before)
order by s.step
