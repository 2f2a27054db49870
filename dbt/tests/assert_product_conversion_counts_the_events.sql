-- mart_product_conversion's impressions and clicks per day add up to the events in the facts.
with mart as (
    select day, sum(impressions) as impressions, sum(clicks) as clicks
    from {{ ref('mart_product_conversion') }}
    group by day
),

events as (
    select day, sum(impressions) as impressions, sum(clicks) as clicks
    from (
        select (occurred_at at time zone 'UTC')::date as day, 1 as impressions, 0 as clicks
        from {{ source('star', 'fact_impressions') }}
        union all
        select (occurred_at at time zone 'UTC')::date, 0, 1
        from {{ source('star', 'fact_clicks') }}
    ) e
    group by day
)

select coalesce(m.day, e.day) as day, m.impressions, e.impressions as expected_impressions,
       m.clicks, e.clicks as expected_clicks
from mart m
full join events e on e.day = m.day
where m.impressions is distinct from e.impressions or m.clicks is distinct from e.clicks
