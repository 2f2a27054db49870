-- Revenue in fact_sales equals the replica's order lines of the orders that are not
-- cancelled, line by line: each such line has a fact row whose revenue is quantity ×
-- unit_price, and no fact row of an order that is not cancelled lacks its line. Returns the
-- lines that differ. One statement, so one snapshot: safe while the replicator applies.
with replica_lines as (
    select i.id as order_item_id, i.quantity * i.unit_price as revenue
    from {{ source('replica', 'order_items') }} i
    join {{ source('replica', 'orders') }} o on o.id = i.order_id
    where o.status <> 'cancelled'
),

fact_lines as (
    select order_item_id, revenue
    from {{ source('star', 'fact_sales') }}
    where status <> 'cancelled'
)

select
    coalesce(r.order_item_id, f.order_item_id) as order_item_id,
    r.revenue as replica_revenue,
    f.revenue as fact_revenue
from replica_lines r
full join fact_lines f on f.order_item_id = r.order_item_id
where r.revenue is distinct from f.revenue
