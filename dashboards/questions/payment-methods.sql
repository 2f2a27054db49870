-- title: Payment methods
-- description: Payments and amount per method (by payment day, UTC), with each method's share of the amount in percent. Payments of cancelled orders are excluded.
-- param: from date
-- param: to date
-- param: store integer
select pm.method,
       count(*) as payments,
       sum(pm.amount) as amount,
       round(100 * sum(pm.amount) / nullif(sum(sum(pm.amount)) over (), 0), 1) as share_pct
from fact_payments pm
join dim_date d on d.date_key = pm.date_key
join dim_store s on s.store_key = pm.store_key
where pm.order_status <> 'cancelled'
  [[and d.date >= {{from}}]]
  [[and d.date <= {{to}}]]
  [[and s.store_id = {{store}}]]
group by pm.method
order by amount desc, pm.method
