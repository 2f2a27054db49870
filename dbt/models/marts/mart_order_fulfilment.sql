-- One row per order seen in the journal: when it was placed and reached each status (source
-- commit times of the changes), and how long that took. Orders that came with the initial
-- copy show only the changes after it (`from_initial_copy`).
with history as (
    select * from {{ ref('order_status_history') }}
),

per_order as (
    select
        order_id,
        min(changed_at) filter (where change = 'insert') as placed_at,
        min(changed_at) filter (where change in ('insert', 'update') and status = 'preparing') as preparing_at,
        min(changed_at) filter (where change in ('insert', 'update') and status = 'ready') as ready_at,
        min(changed_at) filter (where change in ('insert', 'update') and status = 'completed') as completed_at,
        min(changed_at) filter (where change in ('insert', 'update') and status = 'cancelled') as cancelled_at,
        max(changed_at) filter (where change = 'delete') as deleted_at,
        bool_or(change = 'snapshot') as from_initial_copy,
        (array_agg(status order by lsn desc, seq desc) filter (where status is not null))[1] as last_status,
        (array_agg(store_id order by lsn desc, seq desc) filter (where store_id is not null))[1] as store_id,
        count(*) as changes
    from history
    group by order_id
)

select
    order_id,
    store_id,
    placed_at,
    preparing_at,
    ready_at,
    completed_at,
    cancelled_at,
    deleted_at,
    case when deleted_at is not null then 'deleted' else last_status end as current_status,
    from_initial_copy,
    changes,
    extract(epoch from ready_at - placed_at)::numeric(12, 3) as seconds_to_ready,
    extract(epoch from completed_at - placed_at)::numeric(12, 3) as seconds_to_complete,
    (select current_as_of from {{ ref('warehouse_as_of') }}) as data_as_of
from per_order
