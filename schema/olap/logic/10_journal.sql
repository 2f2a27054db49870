-- The journal as users read it. Re-applied by `brewlytics migrate` whenever this file changes.

-- The seed's name: the events of orders and their lines, images as jsonb.
drop view if exists cdc_orders;
create view cdc_orders as
select lsn, seq, xid, commit_ts, source_table,
       case op when 'r' then 'SNAPSHOT' when 'i' then 'INSERT' when 'u' then 'UPDATE'
               when 'd' then 'DELETE' else 'TRUNCATE' end as event_type,
       key::jsonb as key, before::jsonb as before, after::jsonb as after,
       coalesce(after, before)::jsonb as payload
from cdc_events
where source_schema = 'public' and source_table in ('orders', 'order_items')
  and op in ('r', 'i', 'u', 'd', 't');

comment on view cdc_orders is
    'The journal events of orders and order_items (the seed''s cdc_orders), images as jsonb';

-- A journal image without the columns `p_columns` (`brewlytics snapshot --table` takes the
-- values of columns no publication publishes out of the table's journal). The other values
-- are kept as they were written.
create or replace function cdc_image_without(p_image json, p_columns text[]) returns json
language sql immutable as $$
    select case when p_image is null or json_typeof(p_image) <> 'object' then p_image
                else coalesce((select json_object_agg(e.k, e.v order by e.n)
                               from json_each(p_image) with ordinality e(k, v, n)
                               where e.k <> all (p_columns)), '{}'::json) end
$$;
