-- Schema and publication changes of the source, told to the replicator through the slot.
-- Re-applied by `brewlytics migrate` whenever this file changes.
--
-- pgoutput's Relation message names a table's columns but not their attnums, so a renamed
-- column looks like a dropped one plus a new one. This event trigger sends, in the same
-- transaction as every ALTER TABLE, a logical decoding message (prefix `brewlytics_ddl`) with
-- the table's columns as the catalog has them afterwards — attnum, name, type, whether it has
-- a default, a stored generated column's expression — so the replicator renames, drops, adds
-- and retypes replica columns exactly, and computes generated columns as the source does.
-- With every ALTER PUBLICATION it sends the names of the publications altered (prefix
-- `brewlytics_publication`): a changed row filter sends nothing through pgoutput, and the
-- replicator then copies the table again under the new filter at that point of the stream.
-- With every ALTER TABLE and CREATE TABLE that touches a partitioned table (ATTACH, DETACH,
-- CREATE TABLE … PARTITION OF) it sends the partition tree of the table's root as the
-- transaction leaves it (prefix `brewlytics_partitions`), and with every DROP of tables the
-- tables dropped: PostgreSQL streams no row for a partition attached with rows, and nothing
-- when one is detached or dropped, so the replicator copies or keeps them at that point.
-- Event triggers need a superuser: without one, this file only says so (NOTICE) and the
-- replicator falls back to re-copying a table whose change it cannot read exactly, and to
-- comparing the publications and the partition trees with the replica every few seconds.

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
                               'generated', a.attgenerated <> '',
                               'expression', case when a.attgenerated <> ''
                                                  then pg_get_expr(d.adbin, d.adrelid) end)
                           order by a.attnum)
                    from pg_attribute a
                    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped))
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.oid = p_table
$$;

-- The partitions of partitioned table `p_root` at every level (null when it is not one), as
-- the caller's snapshot sees them (pg_inherits read with SQL): each partition's parent,
-- level, bound (`FOR VALUES …`, `DEFAULT`) and partition constraint — the rows that belong
-- to it, its ancestors' constraints included. A partition being detached concurrently is
-- no longer one. The replicator reads it too (the first start's copy, its periodic check).
create or replace function public.brewlytics_partition_tree(p_root oid) returns json
language sql stable as $$
    with recursive tree (oid, parent, level) as (
        select p_root, null::oid, 0
        union all
        select i.inhrelid, i.inhparent, t.level + 1
        from pg_inherits i join tree t on i.inhparent = t.oid
        where not i.inhdetachpending
    )
    select json_build_object(
        'oid', r.oid::bigint,
        'schema', rn.nspname,
        'table', r.relname,
        'partitions', coalesce((
            select json_agg(json_build_object(
                       'oid', c.oid::bigint, 'schema', n.nspname, 'table', c.relname,
                       'parent', t.parent::bigint, 'level', t.level, 'leaf', c.relkind <> 'p',
                       'bound', pg_get_expr(c.relpartbound, c.oid),
                       'scope', pg_get_partition_constraintdef(c.oid))
                   order by t.level, c.oid)
            from tree t
            join pg_class c on c.oid = t.oid
            join pg_namespace n on n.oid = c.relnamespace
            where t.level > 0), '[]'))
    from pg_class r join pg_namespace rn on rn.oid = r.relnamespace
    where r.oid = p_root and r.relkind = 'p'
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
        altered json;
    begin
        -- Without logical decoding there is no slot to tell (and the call would fail).
        if current_setting('wal_level') <> 'logical' then
            return;
        end if;
        if tg_tag = 'ALTER PUBLICATION' then
            -- The publications altered ([] when the command names none: DROP TABLE).
            select coalesce(json_agg(distinct p.pubname), '[]') into altered
            from pg_event_trigger_ddl_commands() d
            join pg_publication p on p.oid = case d.classid
                when 'pg_publication'::regclass then d.objid
                when 'pg_publication_rel'::regclass
                    then (select r.prpubid from pg_publication_rel r where r.oid = d.objid)
                when 'pg_publication_namespace'::regclass
                    then (select s.pnpubid from pg_publication_namespace s where s.oid = d.objid)
            end;
            perform pg_logical_emit_message(true, 'brewlytics_publication', altered::text);
            return;
        end if;
        -- Partition trees changed (or possibly changed): each root's tree once.
        for t in select distinct pg_partition_root(c.oid)
                 from pg_event_trigger_ddl_commands() d
                 join pg_class c on c.oid = d.objid
                 where d.classid = 'pg_class'::regclass
                   and (c.relkind = 'p' or c.relispartition)
        loop
            perform pg_logical_emit_message(true, 'brewlytics_partitions',
                json_build_object(
                    'tree', public.brewlytics_partition_tree(t),
                    -- a partition created (CREATE TABLE … PARTITION OF) is empty
                    'created', (select coalesce(json_agg(distinct d.objid::bigint), '[]')
                                from pg_event_trigger_ddl_commands() d
                                join pg_class c on c.oid = d.objid
                                where tg_tag = 'CREATE TABLE'
                                  and d.classid = 'pg_class'::regclass
                                  and c.relkind in ('r', 'p')))::text);
        end loop;
        if tg_tag <> 'ALTER TABLE' then
            return;
        end if;
        for t in select distinct d.objid from pg_event_trigger_ddl_commands() d
                 join pg_class c on c.oid = d.objid
                 where d.classid = 'pg_class'::regclass and c.relkind in ('r', 'p')
        loop
            perform pg_logical_emit_message(true, 'brewlytics_ddl',
                                            public.brewlytics_ddl_columns(t)::text);
        end loop;
    end $fn$;

    -- Tables dropped (a partition among them, maybe: the catalog no longer says).
    create or replace function brewlytics_capture_drop() returns event_trigger
    language plpgsql security definer set search_path = pg_catalog as $fn$
    declare
        dropped json;
    begin
        if current_setting('wal_level') <> 'logical' then
            return;
        end if;
        select json_agg(json_build_object('oid', o.objid::bigint, 'schema', o.schema_name,
                                          'table', o.object_name))
        into dropped
        from pg_event_trigger_dropped_objects() o
        where o.object_type = 'table';
        if dropped is not null then
            perform pg_logical_emit_message(true, 'brewlytics_partitions',
                                            json_build_object('dropped', dropped)::text);
        end if;
    end $fn$;

    -- An older trigger that fired on fewer commands is made again.
    if exists (select 1 from pg_event_trigger
               where evtname = 'brewlytics_ddl'
                 and evttags is distinct from
                     array['ALTER TABLE', 'ALTER PUBLICATION', 'CREATE TABLE']) then
        drop event trigger brewlytics_ddl;
    end if;
    if not exists (select 1 from pg_event_trigger where evtname = 'brewlytics_ddl') then
        create event trigger brewlytics_ddl on ddl_command_end
            when tag in ('ALTER TABLE', 'ALTER PUBLICATION', 'CREATE TABLE')
            execute function brewlytics_capture_ddl();
    end if;
    if not exists (select 1 from pg_event_trigger where evtname = 'brewlytics_drop') then
        create event trigger brewlytics_drop on sql_drop
            when tag in ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
            execute function brewlytics_capture_drop();
    end if;
end $do$;
