-- Star schema: what it reads of the source, and how it keeps reading it when the source's
-- schema changes. Re-applied by `brewlytics migrate` whenever this file changes.
--
-- The star's SQL (20_ to 50_) never names a replica table or a stage table. It reads one view
-- per source table, `star_input.<input>` over replica.*, and in the replicator's session
-- `pg_temp.input_<input>` over the batch's stage table: the star's names and types for every
-- attribute star_inputs() lists, whatever the source did since. The views are generated from
-- star_input_tables and star_bindings, which the replicator keeps as it follows the source's
-- schema changes (replicator/src/star/): the source table and columns are known by identity
-- (relation oid, attnum), so
--   a renamed column is read under its new name;
--   a label the source leaves NULL reads 'unknown' (the star's column requires one);
--   a retyped one as it is, cast, or — when the star's type cannot hold every value of the
--     new type — value by value: a row whose value does not read is left out of the star
--     (`_held` is false) and listed in star_dead_letters;
--   a dropped one from star_kept.<input> (the value each row had when it was dropped), and
--     for rows written later its fallback by role: NULL, 'unknown' for a label, the commit
--     time of the row's insert for a time, -1 (the unknown member) for a dimension's id; a
--     row whose reference to its order was dropped cannot be attached: a dead letter;
--   a dropped key column freezes the input: the view reads what it had (star_kept.<input>__frozen).

create or replace function star_inputs()
returns table (ord integer, input text, attribute text, star_type text, role text, feeds text[])
language sql immutable as $$
    select (row_number() over ())::integer, x.* from (values
        ('stores', 'id', 'bigint', 'key', '{dim_store.store_id}'::text[]),
        ('stores', 'name', 'text', 'label', '{dim_store.name}'),
        ('stores', 'city', 'text', 'attribute', '{dim_store.city}'),
        ('stores', 'opened_on', 'date', 'attribute', '{dim_store.opened_on}'),
        ('employees', 'id', 'bigint', 'key', '{dim_employee.employee_id}'),
        ('employees', 'name', 'text', 'label', '{dim_employee.name}'),
        ('employees', 'role', 'text', 'attribute', '{dim_employee.role}'),
        ('employees', 'store_id', 'bigint', 'attribute', '{dim_employee.store_id}'),
        ('employees', 'active', 'boolean', 'attribute', '{dim_employee.active}'),
        ('employees', 'hired_on', 'date', 'attribute', '{dim_employee.hired_on}'),
        ('customers', 'id', 'bigint', 'key', '{dim_customer.customer_id}'),
        ('customers', 'name', 'text', 'label', '{dim_customer.name}'),
        ('customers', 'email', 'text', 'attribute', '{dim_customer.email}'),
        ('customers', 'created_at', 'timestamp with time zone', 'attribute',
         '{dim_customer.created_at}'),
        ('products', 'id', 'bigint', 'key', '{dim_product.product_id}'),
        ('products', 'name', 'text', 'label', '{dim_product.name}'),
        ('products', 'category', 'text', 'label', '{dim_product.category}'),
        ('products', 'price', 'numeric', 'measure', '{dim_product.price}'),
        ('products', 'is_available', 'boolean', 'attribute', '{dim_product.is_available}'),
        ('orders', 'id', 'uuid', 'key', '{fact_sales.order_id,fact_payments.order_id}'),
        ('orders', 'customer_id', 'bigint', 'member',
         '{fact_sales.customer_key,fact_payments.customer_key}'),
        ('orders', 'employee_id', 'bigint', 'member',
         '{fact_sales.employee_key,fact_payments.employee_key}'),
        ('orders', 'store_id', 'bigint', 'member', '{fact_sales.store_key,fact_payments.store_key}'),
        ('orders', 'status', 'text', 'label', '{fact_sales.status,fact_payments.order_status}'),
        ('orders', 'payment_method', 'text', 'attribute', '{fact_sales.payment_method}'),
        ('orders', 'ordered_at', 'timestamp with time zone', 'time',
         '{fact_sales.ordered_at,fact_sales.date_key,fact_sales.hour_of_day}'),
        ('order_items', 'id', 'bigint', 'key', '{fact_sales.order_item_id}'),
        ('order_items', 'order_id', 'uuid', 'reference', '{fact_sales.order_id}'),
        ('order_items', 'product_id', 'bigint', 'member', '{fact_sales.product_key}'),
        ('order_items', 'quantity', 'bigint', 'measure', '{fact_sales.quantity,fact_sales.revenue}'),
        ('order_items', 'unit_price', 'numeric', 'measure',
         '{fact_sales.unit_price,fact_sales.revenue}'),
        ('payments', 'id', 'bigint', 'key', '{fact_payments.payment_id}'),
        ('payments', 'order_id', 'uuid', 'reference', '{fact_payments.order_id}'),
        ('payments', 'amount', 'numeric', 'measure', '{fact_payments.amount}'),
        ('payments', 'method', 'text', 'label', '{fact_payments.method}'),
        ('payments', 'paid_at', 'timestamp with time zone', 'time',
         '{fact_payments.paid_at,fact_payments.date_key}'),
        ('inventory_movements', 'id', 'bigint', 'key', '{fact_inventory.movements}'),
        ('inventory_movements', 'store_id', 'bigint', 'member',
         '{fact_inventory.store_id,fact_inventory.store_key}'),
        ('inventory_movements', 'product_id', 'bigint', 'member',
         '{fact_inventory.product_id,fact_inventory.product_key}'),
        ('inventory_movements', 'delta', 'bigint', 'measure', '{fact_inventory.quantity_delta}'),
        ('inventory_movements', 'reason', 'text', 'label', '{fact_inventory.reason}'),
        ('inventory_movements', 'occurred_at', 'timestamp with time zone', 'time',
         '{fact_inventory.date_key,fact_inventory.last_movement_at}'),
        ('orders', 'session_id', 'text', 'attribute', '{fact_attribution.session_id}'),
        ('click_events', 'id', 'uuid', 'key', '{fact_impressions.event_id,fact_clicks.event_id}'),
        ('click_events', 'kind', 'text', 'label', '{fact_impressions,fact_clicks}'),
        ('click_events', 'session_id', 'text', 'attribute',
         '{fact_impressions.session_id,fact_clicks.session_id}'),
        ('click_events', 'customer_id', 'bigint', 'attribute',
         '{fact_impressions.customer_key,fact_clicks.customer_key}'),
        ('click_events', 'product_id', 'bigint', 'member',
         '{fact_impressions.product_key,fact_clicks.product_key}'),
        ('click_events', 'occurred_at', 'timestamp with time zone', 'time',
         '{fact_impressions.occurred_at,fact_clicks.occurred_at}'),
        ('click_events', 'received_at', 'timestamp with time zone', 'time',
         '{fact_impressions.received_at,fact_clicks.received_at}'),
        ('click_events', 'context', 'jsonb', 'attribute',
         '{fact_impressions.context,fact_clicks.context}')
    ) x
$$;

-- The star's source tables (stage tables of all of them are present around star_before()
-- and star_after()).
create or replace function star_sources() returns text[]
language sql immutable as $$
    select array(select distinct input from star_inputs() order by 1)
$$;

-- `p_value` read as the type of `p_type`, or NULL when that type's input function refuses it
-- (a subtransaction per value: star_read() tries a pattern first).
create or replace function star_cast(p_value text, p_type anyelement) returns anyelement
language plpgsql stable as $$
declare
    result alias for $0;
begin
    execute format('select %L::%s', p_value, pg_typeof(p_type)) into result;
    return result;
exception when others then
    return null;
end $$;

-- What a dropped attribute reads in rows written since (and kept for them, see
-- star_note_batch): 'unknown' for a label, -1 (the unknown member) for a dimension's id, else
-- NULL (a time is the commit time of the row's insert, kept when it is inserted).
create or replace function star_fallback(p_role text, p_type text) returns text
language sql immutable as $$
    select case p_role when 'label' then format('%L::%s', 'unknown', p_type)
                       when 'member' then format('(-1)::%s', p_type)
                       else format('null::%s', p_type) end
$$;

-- The expression reading `p_expr` (text) as `p_type`, value by value: the canonical text of
-- the type is cast at once (a pattern it matches cannot fail), anything else through
-- star_cast().
create or replace function star_read(p_expr text, p_type text) returns text
language sql immutable as $$
    select case when pattern is null then format('star_cast(%s, null::%s)', p_expr, p_type)
                else format('case when %1$s ~* %3$L then %1$s::%2$s else star_cast(%1$s, null::%2$s) end',
                            p_expr, p_type, pattern) end
    from (select case p_type
                     when 'bigint' then '^\s*[-+]?[0-9]{1,18}\s*$'
                     when 'integer' then '^\s*[-+]?[0-9]{1,9}\s*$'
                     when 'numeric' then '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[-+]?[0-9]{1,3})?\s*$'
                     when 'uuid' then '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                     when 'boolean' then '^\s*(t|true|f|false|yes|no|on|off|y|n|1|0)\s*$'
                 end) x(pattern)
$$;

-- The query of an input's view: over its replica table, or (p_stage) over a stage table with
-- the stage's bookkeeping columns, `_cdc_keep` naming attributes.
create or replace function star_input_select(p_input text, p_stage text default null)
returns text language plpgsql stable as $$
declare
    t star_input_tables%rowtype;
    b record;
    key_attr text := (select s.attribute from star_inputs() s
                      where s.input = p_input and s.role = 'key');
    kept regclass := to_regclass(format('star_kept.%I', p_input));
    kept_cols text[];
    cols text[] := '{}';
    held text[] := '{}';
    names text[] := '{}';
    renamed boolean := false;
    join_kept boolean := false;
    key_expr text;
    v text;
    e text;
    src text;
    stage_cols text := '';
    tail text := '';
begin
    select * into t from star_input_tables where input = p_input;
    if p_stage is not null then
        stage_cols := 'r._cdc_pos, r._cdc_op, r._cdc_last, r._cdc_new, r._cdc_ts, ';
    end if;
    if t.state = 'frozen' and to_regclass(format('star_kept.%I', p_input || '__frozen')) is not null
    then
        if p_stage is null then
            return format('select * from star_kept.%I', p_input || '__frozen');
        end if;
        return format('select null::integer as _cdc_pos, null::"char" as _cdc_op,
                              false as _cdc_last, false as _cdc_new, null::timestamptz as _cdc_ts,
                              null::text[] as _cdc_keep, f.*
                       from star_kept.%I f where false', p_input || '__frozen');
    end if;
    src := coalesce(p_stage, format('replica.%I', t.replica_table));
    if p_stage is null and to_regclass(src) is null then
        -- Not mirrored (yet): an input without rows.
        return format('select %s, true as _held where false',
                      (select string_agg(format('null::%s as %I', x.star_type, x.attribute), ', '
                                         order by s.ord)
                       from star_bindings x
                       join star_inputs() s on s.input = x.input and s.attribute = x.attribute
                       where x.input = p_input));
    end if;
    kept_cols := array(select a.attname::text from pg_attribute a
                       where a.attrelid = kept and a.attnum > 0 and not a.attisdropped);
    for b in select x.attribute, x.star_type, x.source_column, x.read, x.state, s.role
             from star_bindings x
             join star_inputs() s on s.input = x.input and s.attribute = x.attribute
             where x.input = p_input order by s.ord
    loop
        if b.state = 'dropped' or b.source_column is null then
            -- A row kept (the key comes first: kept values are found by it) reads its value,
            -- NULL included; the others the fallback.
            if b.attribute = any (kept_cols) and key_expr is not null then
                join_kept := true;
                e := format('case when k.%I is null then %s else k.%I end', key_attr,
                            star_fallback(b.role, b.star_type), b.attribute);
            else
                e := star_fallback(b.role, b.star_type);
            end if;
            if b.role = 'reference' then
                held := held || format('(%s) is not null', e);
            end if;
        else
            v := format('r.%I', b.source_column);
            e := case b.read
                     when 'as_is' then v
                     when 'cast' then format('%s::%s', v, b.star_type)
                     when 'via_text' then format('%s::text::%s', v, b.star_type)
                     when 'utc' then format('(%s::timestamp at time zone %L)', v, 'UTC')
                     else star_read(v || '::text', b.star_type) end;
            if b.read = 'per_row' then
                held := held || format('(%s is null or %s is not null)', v, e);
            end if;
            -- A label the star requires reads 'unknown' where the source has none (a column
            -- the replica refills after a change it could not read exactly, say).
            if b.role = 'label' then
                e := format('coalesce(%s, %s)', e, star_fallback(b.role, b.star_type));
            end if;
            names := names || format('(%L, %L)', b.source_column, b.attribute);
            renamed := renamed or b.source_column <> b.attribute;
            if b.attribute = key_attr then
                key_expr := e;
            end if;
        end if;
        cols := cols || format('%s as %I', e, b.attribute);
    end loop;
    if p_stage is not null then
        -- `_cdc_keep` names replica columns: the star reads attributes.
        tail := ', ' || case when renamed
            then format('case when r._cdc_keep is null then null
                              else array(select m.attribute from unnest(r._cdc_keep) c
                                         join (values %s) m(col, attribute) on m.col = c) end',
                        array_to_string(names, ', '))
            else 'r._cdc_keep' end || ' as _cdc_keep';
    end if;
    -- Values read one by one are read once per row (`offset 0` keeps the view from being
    -- merged into the star's joins, where they would be read again for every pair of rows).
    return format('select %s%s, %s as _held%s from %s r%s%s',
        stage_cols, array_to_string(cols, ', '),
        case when cardinality(held) = 0 then 'true'
             else '(' || array_to_string(held, ' and ') || ')' end,
        tail, src,
        case when join_kept
             then format(' left join star_kept.%I k on k.%I = %s', p_input, key_attr, key_expr)
             else '' end,
        case when cardinality(held) > 0 then ' offset 0' else '' end);
end $$;

-- (Re)creates the view star_input.<input> from its bindings.
create or replace function star_input_define(p_input text) returns void
language plpgsql as $$
begin
    execute format('drop view if exists star_input.%I', p_input);
    execute format('create view star_input.%I as %s', p_input, star_input_select(p_input));
end $$;

-- (Re)creates this session's view pg_temp.input_<input> over the stage table `p_stage`.
create or replace function star_stage_define(p_input text, p_stage text) returns void
language plpgsql as $$
begin
    execute format('drop view if exists pg_temp.%I', 'input_' || p_input);
    execute format('create temp view %I as %s', 'input_' || p_input,
                   star_input_select(p_input, p_stage));
end $$;

-- The table of values kept for an input's dropped attributes, with columns for `p_attrs`
-- (altered only when one is missing: a batch reading it is not waited for).
create or replace function star_kept_table(p_input text, p_attrs text[]) returns void
language plpgsql as $$
declare
    key_attr text := (select s.attribute from star_inputs() s
                      where s.input = p_input and s.role = 'key');
    kept regclass := to_regclass(format('star_kept.%I', p_input));
    b record;
begin
    if kept is null then
        execute format('create table star_kept.%I (%I %s primary key)', p_input, key_attr,
                       (select star_type from star_bindings
                        where input = p_input and attribute = key_attr));
        kept := to_regclass(format('star_kept.%I', p_input));
    end if;
    for b in select x.attribute, x.star_type from star_bindings x
             where x.input = p_input and x.attribute = any (p_attrs)
               and not exists (select 1 from pg_attribute a
                               where a.attrelid = kept and a.attname = x.attribute
                                 and not a.attisdropped)
    loop
        execute format('alter table star_kept.%I add column %I %s', p_input,
                       b.attribute, b.star_type);
    end loop;
end $$;

-- Keeps the values the input's rows have now of `p_attrs`, about to be dropped. A row kept
-- for the first time keeps what it reads of the attributes dropped before, too.
create or replace function star_keep(p_input text, p_attrs text[]) returns void
language plpgsql as $$
declare
    key_attr text := (select s.attribute from star_inputs() s
                      where s.input = p_input and s.role = 'key');
    attrs text[] := p_attrs || array(select b.attribute from star_bindings b
                                     where b.input = p_input and b.state = 'dropped'
                                       and b.attribute <> key_attr
                                       and b.attribute <> all (p_attrs));
    cols text := (select string_agg(format('%I', a), ', ') from unnest(attrs) a);
    sets text := (select string_agg(format('%1$I = excluded.%1$I', a), ', ') from unnest(p_attrs) a);
begin
    perform star_kept_table(p_input, attrs);
    execute format('insert into star_kept.%1$I as k (%2$I, %3$s)
                    select %2$I, %3$s from star_input.%1$I where %2$I is not null
                    on conflict (%2$I) do update set %4$s', p_input, key_attr, cols, sets);
end $$;

-- The input's key was dropped: what it reads now is kept, and read from then on.
create or replace function star_freeze(p_input text) returns void
language plpgsql as $$
begin
    execute format('drop table if exists star_kept.%I cascade', p_input || '__frozen');
    execute format('create table star_kept.%I as select * from star_input.%I',
                   p_input || '__frozen', p_input);
end $$;

-- Why rows of an input are left out of the star (no row values).
create or replace function star_reject_reason(p_input text) returns text
language sql stable as $$
    select string_agg(case when b.state = 'dropped'
                           then format('%s.%s.%s was dropped at %s: the row cannot be attached',
                                       t.source_schema, t.source_table, b.attribute, b.changed_lsn)
                           else format('%s.%s.%s is %s since %s: the star reads it as %s',
                                       t.source_schema, t.source_table, b.source_column,
                                       b.replica_type, b.changed_lsn, b.star_type) end,
                      '; ' order by s.ord)
    from star_bindings b
    join star_input_tables t using (input)
    join star_inputs() s on s.input = b.input and s.attribute = b.attribute
    where b.input = p_input
      and (b.read = 'per_row' and b.state <> 'dropped' or b.state = 'dropped' and s.role = 'reference')
$$;

-- Rows of an input the star leaves out are listed in star_dead_letters, with the reason; those
-- it reads again, or that are gone, are taken off. All of the input's rows (its view), or
-- (p_stage) the last change of each key in this session's stage.
create or replace function star_note_rejects(p_input text, p_stage boolean default false)
returns void language plpgsql as $$
declare
    key_attr text := (select s.attribute from star_inputs() s
                      where s.input = p_input and s.role = 'key');
    reason text := star_reject_reason(p_input);
    tbl text := (select format('%s.%s', source_schema, source_table) from star_input_tables
                 where input = p_input);
    src text;
    last text := '';
begin
    if p_stage then
        src := format('pg_temp.%I', 'input_' || p_input);
        last := ' and r._cdc_last and r._cdc_op <> ''d''';
        execute format('delete from star_dead_letters d using %s r
                        where d.input = %L and d.row_key = r.%I::text and r._cdc_last
                          and (r._held or r._cdc_op = %L)', src, p_input, key_attr, 'd');
    else
        src := format('star_input.%I', p_input);
        delete from star_dead_letters where input = p_input;
    end if;
    if reason is null then
        return;
    end if;
    execute format('insert into star_dead_letters (input, row_key, source_table, reason)
                    select %L, r.%I::text, %L, %L from %s r
                    where not r._held and r.%I is not null%s
                    on conflict (input, row_key) do update
                        set reason = excluded.reason, failed_at = now()',
                   p_input, key_attr, tbl, reason, src, key_attr, last);
end $$;

-- What a batch's stage tables tell the inputs that degraded before it (`p_lsn`: where its
-- changes start; a replay of older changes leaves the kept values alone): the commit time of
-- rows inserted since a time attribute was dropped (their fallback), kept values forgotten
-- for a key inserted again, and the rows the star leaves out. Called before star_before().
create or replace function star_note_batch(p_lsn pg_lsn) returns void
language plpgsql as $$
declare
    i record;
    key_attr text;
    stage text;
    attrs text[];
begin
    for i in
        select b.input,
               coalesce(array_agg(b.attribute order by s.ord)
                   filter (where b.state = 'dropped' and s.role = 'time'), '{}') as times,
               coalesce(array_agg(b.attribute order by s.ord)
                   filter (where b.state = 'dropped' and s.role not in ('time', 'key')), '{}')
                   as others,
               bool_or(b.read = 'per_row' and b.state <> 'dropped'
                       or b.state = 'dropped' and s.role = 'reference') as checks,
               coalesce(bool_and(b.changed_lsn is null or b.changed_lsn < p_lsn)
                   filter (where b.state = 'dropped'), false) as dropped_before
        from star_bindings b
        join star_input_tables t on t.input = b.input
        join star_inputs() s on s.input = b.input and s.attribute = b.attribute
        where t.state not in ('frozen', 'dropped', 'unpublished')
        group by b.input
        having bool_or(b.state = 'dropped' or b.read = 'per_row')
    loop
        key_attr := (select s.attribute from star_inputs() s
                     where s.input = i.input and s.role = 'key');
        stage := format('pg_temp.%I', 'input_' || i.input);
        attrs := i.times || i.others;
        if i.dropped_before and cardinality(i.times) > 0 then
            perform star_kept_table(i.input, attrs);
            execute format(
                'insert into star_kept.%1$I as k (%2$I, %3$s)
                 select n.%2$I, %4$s
                 from (select r.%2$I, min(r._cdc_ts) as at from %5$s r
                       where r._cdc_new and r._cdc_op = %6$L and r.%2$I is not null
                       group by 1) n
                 on conflict (%2$I) do update set %7$s',
                i.input, key_attr,
                (select string_agg(format('%I', x.a), ', ' order by x.n)
                 from unnest(attrs) with ordinality x(a, n)),
                (select string_agg(case when x.a = any (i.times) then 'n.at'
                                        else star_fallback(s.role, b.star_type) end, ', '
                                   order by x.n)
                 from unnest(attrs) with ordinality x(a, n)
                 join star_bindings b on b.input = i.input and b.attribute = x.a
                 join star_inputs() s on s.input = i.input and s.attribute = x.a),
                stage, 'i',
                (select string_agg(format('%1$I = excluded.%1$I', a), ', ') from unnest(attrs) a));
        elsif i.dropped_before and cardinality(i.others) > 0
              and to_regclass(format('star_kept.%I', i.input)) is not null then
            execute format('delete from star_kept.%1$I k using %2$s r
                            where k.%3$I = r.%3$I and r._cdc_new and r._cdc_op = %4$L',
                           i.input, stage, key_attr, 'i');
        end if;
        if i.checks then
            perform star_note_rejects(i.input, true);
        end if;
    end loop;
end $$;

-- Back to the bindings' state before any row arrived (replay's rebuild, resync): nothing kept,
-- nothing frozen, no dead letters; the replicator then binds each input to its table's shape
-- at the copy. Kept values are deleted, not their tables (a replicator's session has views
-- over them).
create or replace function star_reset() returns void
language plpgsql as $$
declare
    i text;
begin
    for i in select input from star_input_tables loop
        if to_regclass(format('star_kept.%I', i)) is not null then
            execute format('delete from star_kept.%I', i);
        end if;
        execute format('drop table if exists star_kept.%I cascade', i || '__frozen');
    end loop;
    delete from star_dead_letters;
    update star_input_tables set state = 'bound' where state = 'frozen';
    perform star_input_define(input) from star_input_tables;
end $$;

-- Inputs and attributes new to star_bindings are bound by name to their replica table as it
-- is (the replicator learns their identity when it next reads the source); every view is made
-- again.
create or replace function star_bind_init() returns void
language plpgsql as $$
begin
    insert into star_input_tables (input, source_table, replica_table)
    select distinct s.input, s.input, s.input from star_inputs() s
    on conflict (input) do nothing;
    insert into star_bindings (input, attribute, star_type, source_column, replica_type, read,
                               state)
    select s.input, s.attribute, s.star_type, a.attname, format_type(a.atttypid, a.atttypmod),
           case when format_type(a.atttypid, a.atttypmod) = s.star_type then 'as_is'
                else 'cast' end,
           case when a.attname is null then 'dropped' else 'bound' end
    from star_inputs() s
    join star_input_tables t on t.input = s.input
    left join pg_attribute a on a.attrelid = to_regclass(format('replica.%I', t.replica_table))
                            and a.attname = s.attribute and a.attnum > 0 and not a.attisdropped
    on conflict (input, attribute) do nothing;
    perform star_input_define(input) from star_input_tables;
end $$;

select star_bind_init();
