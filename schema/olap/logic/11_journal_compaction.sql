-- Compaction of the journal (replicator/src/journal/compact.rs runs it, in the transaction
-- that records it in cdc_journal_compactions). Re-applied by `brewlytics migrate` whenever
-- this file changes.
--
-- `cdc_journal_compact(p_from, p_cut)` writes, at position (p_cut, negative seq), what the
-- journal's history in [p_from, p_cut) leaves behind — p_from being the previous cut, whose
-- images that history starts with:
--   * each table's latest schema event (op 's', its shape at the cut), then
--   * one image (op 'r', xid 0) per key alive at the cut: the key's last change, unless it
--     is a delete or a truncate of its table came after it. The rows of a backfill chunk
--     count as of the chunk's snapshot (its `from_lsn`): changes after it are newer. An
--     update that left unchanged TOAST columns out of its image is completed from the key's
--     earlier images.
-- Keyless tables (no key in their images) keep no image: their history is a multiset that
-- only a replay can rebuild. Nothing is written when a copy is already at the cut (its rows
-- are the whole state there). Returns the number of rows written.
create or replace function cdc_journal_compact(p_from pg_lsn, p_cut pg_lsn) returns bigint
language plpgsql as $$
declare
    written bigint;
begin
    if exists (select from cdc_events where lsn = p_cut and seq < 0) then
        return 0;
    end if;
    insert into cdc_events (lsn, seq, xid, commit_ts, source_schema, source_table, op, key,
                            before, after, json_nulls)
    with span as (
        select e.lsn, e.seq, e.commit_ts, e.source_schema, e.source_table, e.op, e.key,
               e.after, e.json_nulls,
               case when e.op = 'r' and coalesce(e.xid, 0) <> 0
                    then coalesce((select min(c.from_lsn) from cdc_backfill_chunks c
                                   where c.merged_lsn = e.lsn), e.lsn)
                    else e.lsn end as at_lsn,
               case when e.op = 'r' and coalesce(e.xid, 0) <> 0 then -2147483648
                    else e.seq end as at_seq
        from cdc_events e
        where e.lsn >= p_from and e.lsn < p_cut and e.op in ('r', 'i', 'u', 'd', 't')
    ),
    last_change as (
        select distinct on (source_schema, source_table, key::text) *
        from span
        where op <> 't' and key is not null
        order by source_schema, source_table, key::text, at_lsn desc, at_seq desc
    ),
    truncated as (
        select distinct on (source_schema, source_table) source_schema, source_table,
               at_lsn as t_lsn, at_seq as t_seq
        from span where op = 't'
        order by source_schema, source_table, at_lsn desc, at_seq desc
    ),
    live as (
        select l.*,
               -- fewer columns than the table has: an update without its unchanged TOAST
               -- values (or an image from before columns were added: completed the same way)
               l.op = 'u' and (select count(*) from json_object_keys(l.after))
                   < coalesce((select jsonb_array_length(t.columns) from cdc_tables t
                               where t.source_schema = l.source_schema
                                 and t.source_table = l.source_table), 0) as partial
        from last_change l
        left join truncated t using (source_schema, source_table)
        where l.op <> 'd' and (t.t_lsn is null or (l.at_lsn, l.at_seq) > (t.t_lsn, t.t_seq))
    ),
    completed as (
        select x.source_schema, x.source_table, x.k,
               json_object_agg(x.name, x.value order by x.name) as after
        from (select distinct on (s.source_schema, s.source_table, s.key::text, j.key)
                     s.source_schema, s.source_table, s.key::text as k, j.key as name, j.value
              from span s
              join live p on p.partial and p.source_schema = s.source_schema
                         and p.source_table = s.source_table and p.key::text = s.key::text
              cross join lateral json_each(s.after) j
              where s.op in ('r', 'i', 'u')
              order by s.source_schema, s.source_table, s.key::text, j.key,
                       s.at_lsn desc, s.at_seq desc) x
        group by 1, 2, 3
    ),
    shapes as (
        select distinct on (source_schema, source_table) commit_ts, source_schema,
               source_table, json_build_object('table', after -> 'table') as after
        from cdc_events
        where lsn >= p_from and lsn < p_cut and op = 's'
        order by source_schema, source_table, lsn desc, seq desc
    ),
    images as (
        select 0 as kind, s.commit_ts, s.source_schema, s.source_table, null::json as key,
               s.after, null::text[] as json_nulls, '' as k
        from shapes s
        union all
        select 1, l.commit_ts, l.source_schema, l.source_table, l.key,
               coalesce(c.after, l.after), l.json_nulls, l.key::text
        from live l
        left join completed c on l.partial and c.source_schema = l.source_schema
                             and c.source_table = l.source_table and c.k = l.key::text
    )
    select p_cut,
           (-2147483647 + row_number() over (order by source_schema, source_table, kind, k)
                        - 1)::integer,
           0, commit_ts, source_schema, source_table, case kind when 0 then 's' else 'r' end,
           key, null, after, json_nulls
    from images;
    get diagnostics written = row_count;
    return written;
end
$$;

-- The oldest position `brewlytics replay` can start from: the latest compaction's cut (null
-- when the journal was never compacted: replay can start anywhere).
create or replace function cdc_journal_replayable_from() returns pg_lsn
language sql stable as $$
    select max(cut) from cdc_journal_compactions
$$;
