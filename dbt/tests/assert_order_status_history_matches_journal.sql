-- The incremental model order_status_history holds exactly the journal's order events up
-- to the highest LSN it has loaded (later events wait for the next run): nothing missed,
-- nothing extra, each with the journal's status (its unique_combination test rules out an
-- event loaded twice). Returns the events that differ.
with loaded as (
    select lsn, seq, status from {{ ref('order_status_history') }}
),

journal as (
    select e.lsn, e.seq, e.after ->> 'status' as status
    from {{ source('pipeline', 'cdc_events') }} e
    where e.source_schema = 'public'
      and e.source_table = 'orders'
      and e.op in ('r', 'i', 'u', 'd')
      and e.lsn <= (select max(lsn) from loaded)
)

select coalesce(j.lsn, l.lsn) as lsn, coalesce(j.seq, l.seq) as seq,
       j.status as journal_status, l.status as loaded_status
from journal j
full join loaded l on l.lsn = j.lsn and l.seq = j.seq
where j.lsn is null or l.lsn is null or j.status is distinct from l.status
