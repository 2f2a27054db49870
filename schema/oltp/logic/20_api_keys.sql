-- API keys (auth.api_keys, migration 0002): servers told of changes, and the keys kept out
-- of every publication. Re-applied by `brewlytics migrate` whenever this file changes.

-- Every server holds the keys in memory and LISTENs on this channel: a key created, revoked
-- or changed is seen at once. Writing `last_used_at` (each server does, every few seconds)
-- does not notify.
create or replace function auth.api_keys_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('brewlytics_api_keys', '');
    return null;
end
$$;

create or replace trigger api_keys_changed
    after insert or delete or truncate or update of id, name, scopes, secret_hash, revoked_at
    on auth.api_keys
    for each statement execute function auth.api_keys_changed();

-- The keys never leave OLTP: this refuses, with the fix, while any publication publishes them
-- (`FOR ALL TABLES` does).
create or replace function auth.refuse_published_keys() returns void
language plpgsql stable set search_path = pg_catalog as $$
declare
    publishing text;
begin
    select string_agg(distinct pubname, ', ' order by pubname) into publishing
    from pg_publication_tables where schemaname = 'auth';
    if publishing is not null then
        raise exception 'publication(s) % publish the API keys (auth.api_keys), which must never leave the OLTP database', publishing
            using hint = 'publish the tables by name (ALTER PUBLICATION … SET TABLE …) or by schema (FOR TABLES IN SCHEMA public) instead of FOR ALL TABLES';
    end if;
end
$$;

-- A publication that publishes them already stops the migration here.
select auth.refuse_published_keys();

-- And none may start to: an event trigger refuses a CREATE or ALTER PUBLICATION that would
-- publish them (event triggers need a superuser; without one, the replicator's check before
-- streaming still refuses such a publication).
do $do$
begin
    if not (select rolsuper from pg_roles where rolname = current_user) then
        raise notice 'brewlytics: not a superuser, so the event trigger keeping the API keys out of publications is not installed';
        return;
    end if;

    create or replace function auth.keep_keys_unpublished() returns event_trigger
    language plpgsql security definer set search_path = pg_catalog as $fn$
    begin
        perform auth.refuse_published_keys();
    end
    $fn$;

    if not exists (select from pg_event_trigger where evtname = 'brewlytics_keys_unpublished') then
        create event trigger brewlytics_keys_unpublished on ddl_command_end
            when tag in ('CREATE PUBLICATION', 'ALTER PUBLICATION')
            execute function auth.keep_keys_unpublished();
    end if;
end
$do$;
