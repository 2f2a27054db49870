-- title: Headline figures
-- description: Today's revenue and orders (UTC day), then revenue, orders and average order value over the range, and the orders in the range still open (placed, preparing or ready). Cancelled orders are not revenue.
-- param: from date
-- param: to date
-- param: store integer
with sales as (
    select d.date, f.order_id, f.status, f.revenue
    from fact_sales f
    join dim_date d on d.date_key = f.date_key
    join dim_store s on s.store_key = f.store_key
    where true
      [[and s.store_id = {{store}}]]
),
in_range as (
    select * from sales
    where true
      [[and sales.date >= {{from}}]]
      [[and sales.date <= {{to}}]]
),
sold as (
    select * from in_range where status <> 'cancelled'
),
today as (
    select * from sales
    where sales.date = (now() at time zone 'UTC')::date and status <> 'cancelled'
)
select (select coalesce(sum(revenue), 0.00) from today) as today_revenue,
       (select count(distinct order_id) from today) as today_orders,
       (select coalesce(sum(revenue), 0.00) from sold) as revenue,
       (select count(distinct order_id) from sold) as orders,
       (select coalesce(round(sum(revenue) / nullif(count(distinct order_id), 0), 2), 0.00)
        from sold) as average_order_value,
       (select count(distinct order_id) from in_range
        where status in ('placed', 'preparing', 'ready')) as open_orders
