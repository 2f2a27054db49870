-- Every attributed order line names the last click on its product in its order's session
-- within the attribution window before the order, and every line that has such a click is
-- attributed. Recomputed here by brute force from fact_clicks and the replica; returns the
-- lines where the two differ.
with window_setting as (
    select coalesce((select attribution_window from public.clickstream_settings),
                    interval '30 minutes') as w
),

expected as (
    select i.id as order_item_id,
           (select k.event_id from {{ source('star', 'fact_clicks') }} k, window_setting s
            where k.session_id = o.session_id and k.product_id = i.product_id
              and k.occurred_at <= o.ordered_at and k.occurred_at >= o.ordered_at - s.w
            order by k.occurred_at desc, k.event_id desc limit 1) as click_event_id
    from {{ source('replica', 'orders') }} o
    join {{ source('replica', 'order_items') }} i on i.order_id = o.id
    where o.session_id is not null
),

actual as (
    select order_item_id, click_event_id from {{ source('star', 'fact_attribution') }}
)

select coalesce(e.order_item_id, a.order_item_id) as order_item_id,
       e.click_event_id as expected_click, a.click_event_id as attributed_click
from (select * from expected where click_event_id is not null) e
full join actual a on a.order_item_id = e.order_item_id
where e.click_event_id is distinct from a.click_event_id
