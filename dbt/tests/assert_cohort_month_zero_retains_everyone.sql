-- mart_customer_cohorts: in its own cohort month every member ordered (that is what puts a
-- customer in the cohort), so month 0 has retention 1 and as many active customers as the
-- cohort has members; and cohorts add up to mart_customer_lifetime_value. Returns the
-- cohorts where that does not hold.
with month_zero as (
    select cohort_month, cohort_size, active_customers, retention_rate
    from {{ ref('mart_customer_cohorts') }}
    where months_since_first_order = 0
),

members as (
    select cohort_month, count(*) as customers
    from {{ ref('mart_customer_lifetime_value') }}
    group by cohort_month
)

select coalesce(m.cohort_month, z.cohort_month) as cohort_month,
       m.customers, z.cohort_size, z.active_customers, z.retention_rate
from members m
full join month_zero z on z.cohort_month = m.cohort_month
where z.cohort_month is null
   or m.cohort_month is null
   or z.active_customers <> m.customers
   or z.cohort_size <> m.customers
   or z.retention_rate <> 1
