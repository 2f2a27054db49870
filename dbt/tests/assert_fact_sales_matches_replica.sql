-- fact_sales holds exactly the replica's order lines (cancelled orders included), each with
-- its order's values, the UTC day of ordered_at, dimension members of the same source ids,
-- revenue = quantity × unit_price, and the product version valid when the order was placed.
-- Returns the lines that differ.
with expected as (
    select
        i.id as order_item_id,
        o.id as order_id,
        to_char((o.ordered_at at time zone 'UTC')::date, 'YYYYMMDD')::integer as date_key,
        o.customer_id,
        i.product_id,
        o.employee_id,
        o.store_id,
        i.quantity,
        i.unit_price,
        o.status,
        o.payment_method,
        o.ordered_at
    from {{ source('replica', 'order_items') }} i
    join {{ source('replica', 'orders') }} o on o.id = i.order_id
),

actual as (
    select
        f.order_item_id,
        f.order_id,
        f.date_key,
        c.customer_id,
        p.product_id,
        e.employee_id,
        s.store_id,
        f.quantity,
        f.unit_price,
        f.status,
        f.payment_method,
        f.ordered_at,
        f.revenue,
        p.valid_from,
        p.valid_to
    from {{ source('star', 'fact_sales') }} f
    left join {{ source('star', 'dim_customer') }} c on c.customer_key = f.customer_key
    left join {{ source('star', 'dim_product') }} p on p.product_key = f.product_key
    left join {{ source('star', 'dim_employee') }} e on e.employee_key = f.employee_key
    left join {{ source('star', 'dim_store') }} s on s.store_key = f.store_key
)

select
    coalesce(x.order_item_id, a.order_item_id) as order_item_id,
    case
        when a.order_item_id is null then 'line missing from fact_sales'
        when x.order_item_id is null then 'fact row without a replica line'
        when a.revenue is distinct from a.quantity * a.unit_price then 'revenue is not quantity x unit_price'
        when not (a.valid_from <= a.ordered_at and a.ordered_at < a.valid_to)
            then 'product version not valid at ordered_at'
        else 'values differ'
    end as problem
from expected x
full join actual a on a.order_item_id = x.order_item_id
where x.order_item_id is null
   or a.order_item_id is null
   or (x.order_id, x.date_key, x.customer_id, x.product_id, x.employee_id, x.store_id,
       x.quantity, x.unit_price, x.status, x.payment_method, x.ordered_at)
      is distinct from
      (a.order_id, a.date_key, a.customer_id, a.product_id, a.employee_id, a.store_id,
       a.quantity, a.unit_price, a.status, a.payment_method, a.ordered_at)
   or a.revenue is distinct from a.quantity * a.unit_price
   or not coalesce(a.valid_from <= a.ordered_at and a.ordered_at < a.valid_to, false)
