-- Schema changes of the source, told to the replicator through the slot. Re-applied by
-- `brewlytics migrate` whenever this file changes.
--
-- pgoutput's Relation message names a table's columns but not their attnums, so a renamed
-- column looks like a dropped one plus a new one. This event trigger sends, in the same
-- transaction as every ALTER TABLE, a logical decoding message (prefix `brewlytics_ddl`) with
-- the table's columns as the catalog has them afterwards — attnum, name, type, whether it has
-- a default — so the replicator renames, drops, adds and retypes replica columns exactly.
-- Event triggers need a superuser: without one, this file only says so (NOTICE) and the
-- replicator falls back to re-copying a table whose change it cannot read exactly.

create or replace function public.brewlytics_ddl_columns(p_table oid) returns json
language sql stable as $$
    select json_build_object(
        'oid', c.oid::bigint,
        'schema', n.nspname,
        'table', c.relname,
        'identity', c.relreplident,
        -- the key the replica is kept by: the replica identity index, else the primary key
        'key', (select array_agg(k.attnum order by k.n)
                from pg_index i, unnest(i.indkey) with ordinality k(attnum, n)
                where i.indrelid = c.oid
                  and (case when c.relreplident = 'i' then i.indisreplident else i.indisprimary end)),
        'columns', (select json_agg(json_build_object(
                               'attnum', a.attnum, 'name', a.attname, 'type_oid', a.atttypid::bigint,
                               'typmod', a.atttypmod, 'hasdef', a.atthasdef,
                               'hasmissing', a.atthasmissing,
                               'generated', a.attgenerated <> '')
                           order by a.attnum)
                    from pg_attribute a
                    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped))
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.oid = p_table
$$;

do $do$
begin
    if not (select rolsuper from pg_roles where rolname = current_user) then
        raise notice 'brewlytics: not a superuser, so the DDL event trigger is not installed; '
                     'renamed columns will be re-copied instead of renamed';
        return;
    end if;

    create or replace function brewlytics_capture_ddl() returns event_trigger
    language plpgsql security definer set search_path = pg_catalog as $fn$
    declare
        t oid;
    begin
        for t in select distinct d.objid from pg_event_trigger_ddl_commands() d
                 join pg_class c on c.oid = d.objid
                 where d.classid = 'pg_class'::regclass and c.relkind in ('r', 'p')
        loop
            -- Without logical decoding there is no slot to tell (and the call would fail).
            continue when current_setting('wal_level') <> 'logical';
            perform pg_logical_emit_message(true, 'brewlytics_ddl',
                                            public.brewlytics_ddl_columns(t)::text);
        end loop;
    end $fn$;

    if not exists (select 1 from pg_event_trigger where evtname = 'brewlytics_ddl') then
        create event trigger brewlytics_ddl on ddl_command_end when tag in ('ALTER TABLE')
            execute function brewlytics_capture_ddl();
    end if;
end $do$;
