{#
  Every change of every order, from the journal: one row per orders event, with the status the
  order had after it. Incremental and append-only: each run adds the journal's events past the
  highest LSN already here. The replicator commits whole source transactions in LSN order and
  never rewrites the journal, so nothing is missed or added twice, even while it streams.
  (`dbt build --full-refresh` rebuilds it from the whole journal.)
#}
-- depends_on: {{ ref('warehouse_as_of') }}  (runs after the data tests; see that model)
{{
  config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail'
  )
}}

select
    e.lsn,
    e.seq,
    e.commit_ts as changed_at,
    (coalesce(e.key, e.after, e.before) ->> 'id')::uuid as order_id,
    case e.op
        when 'r' then 'snapshot'
        when 'i' then 'insert'
        when 'u' then 'update'
        else 'delete'
    end as change,
    e.after ->> 'status' as status,
    (e.after ->> 'store_id')::bigint as store_id
from {{ source('pipeline', 'cdc_events') }} e
where e.source_schema = 'public'
  and e.source_table = 'orders'
  and e.op in ('r', 'i', 'u', 'd')
{% if is_incremental() %}
  and e.lsn > (select coalesce(max(lsn), '0/0'::pg_lsn) from {{ this }})
{% endif %}
