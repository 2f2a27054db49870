-- fact_inventory equals the movements it is built from: for every UTC day, store, product
-- and reason of replica.inventory_movements, one row with their summed delta and their
-- count, and no other row; its store_key and product_key name that store and (a version of)
-- that product. Returns the groups that differ.
with expected as (
    select
        to_char((m.occurred_at at time zone 'UTC')::date, 'YYYYMMDD')::integer as date_key,
        m.store_id,
        m.product_id,
        m.reason,
        sum(m.delta) as quantity_delta,
        count(*) as movements
    from {{ source('replica', 'inventory_movements') }} m
    group by 1, 2, 3, 4
),

actual as (
    select
        f.date_key,
        f.store_id,
        f.product_id,
        f.reason,
        f.quantity_delta,
        f.movements,
        s.store_id as store_key_names,
        p.product_id as product_key_names
    from {{ source('star', 'fact_inventory') }} f
    left join {{ source('star', 'dim_store') }} s on s.store_key = f.store_key
    left join {{ source('star', 'dim_product') }} p on p.product_key = f.product_key
)

select
    coalesce(x.date_key, a.date_key) as date_key,
    coalesce(x.store_id, a.store_id) as store_id,
    coalesce(x.product_id, a.product_id) as product_id,
    coalesce(x.reason, a.reason) as reason,
    x.quantity_delta as movements_delta,
    a.quantity_delta as fact_delta,
    x.movements as movements_count,
    a.movements as fact_count
from expected x
full join actual a
  on a.date_key = x.date_key and a.store_id = x.store_id
 and a.product_id = x.product_id and a.reason = x.reason
where x.quantity_delta is distinct from a.quantity_delta
   or x.movements is distinct from a.movements
   or a.store_key_names is distinct from a.store_id
   or a.product_key_names is distinct from a.product_id
