-- fact_payments holds exactly the replica's payments, each with the UTC day of paid_at, its
-- order's customer, employee, store and status. Returns the payments that differ.
with expected as (
    select
        pm.id as payment_id,
        o.id as order_id,
        to_char((pm.paid_at at time zone 'UTC')::date, 'YYYYMMDD')::integer as date_key,
        o.customer_id,
        o.employee_id,
        o.store_id,
        pm.amount,
        pm.method,
        o.status as order_status,
        pm.paid_at
    from {{ source('replica', 'payments') }} pm
    join {{ source('replica', 'orders') }} o on o.id = pm.order_id
),

actual as (
    select
        f.payment_id,
        f.order_id,
        f.date_key,
        c.customer_id,
        e.employee_id,
        s.store_id,
        f.amount,
        f.method,
        f.order_status,
        f.paid_at
    from {{ source('star', 'fact_payments') }} f
    left join {{ source('star', 'dim_customer') }} c on c.customer_key = f.customer_key
    left join {{ source('star', 'dim_employee') }} e on e.employee_key = f.employee_key
    left join {{ source('star', 'dim_store') }} s on s.store_key = f.store_key
)

select coalesce(x.payment_id, a.payment_id) as payment_id,
       x.amount as replica_amount,
       a.amount as fact_amount
from expected x
full join actual a on a.payment_id = x.payment_id
where (x.payment_id, x.order_id, x.date_key, x.customer_id, x.employee_id, x.store_id,
       x.amount, x.method, x.order_status, x.paid_at)
      is distinct from
      (a.payment_id, a.order_id, a.date_key, a.customer_id, a.employee_id, a.store_id,
       a.amount, a.method, a.order_status, a.paid_at)
