-- Retention by monthly cohort: for the customers whose first (not cancelled) order fell in
-- `cohort_month`, how many ordered again `months_since_first_order` months later, and what
-- they spent. Month 0 is the cohort month itself (retention 1 by construction).
with activity as (
    select
        c.customer_id,
        date_trunc('month', f.ordered_at at time zone 'UTC')::date as activity_month,
        count(distinct f.order_id) as orders,
        sum(f.revenue) as revenue
    from {{ source('star', 'fact_sales') }} f
    join {{ source('star', 'dim_customer') }} c on c.customer_key = f.customer_key
    where c.customer_id is not null and f.status <> 'cancelled'
    group by 1, 2
),

customers as (
    select customer_id, cohort_month from {{ ref('mart_customer_lifetime_value') }}
),

cohort_sizes as (
    select cohort_month, count(*) as cohort_size from customers group by cohort_month
)

select
    k.cohort_month,
    a.activity_month,
    ((extract(year from a.activity_month) - extract(year from k.cohort_month)) * 12
      + extract(month from a.activity_month) - extract(month from k.cohort_month))::integer
        as months_since_first_order,
    s.cohort_size,
    count(*) as active_customers,
    round(count(*)::numeric / s.cohort_size, 4) as retention_rate,
    sum(a.orders) as orders,
    sum(a.revenue) as revenue,
    (select current_as_of from {{ ref('warehouse_as_of') }}) as data_as_of
from activity a
join customers k on k.customer_id = a.customer_id
join cohort_sizes s on s.cohort_month = k.cohort_month
group by k.cohort_month, a.activity_month, s.cohort_size
