-- Brewlytics: least-privilege database roles. Idempotent: run it after every
-- `brewlytics migrate` (it grants on the tables that exist then and on the tables the
-- publication holds then, and hands the OLAP objects to the writer role).
--
-- Run it with psql (15 or newer) as a superuser, against each server:
--
--   # the OLTP server (coffee_oltp): the API role and the replication role
--   psql "host=oltp-host user=postgres dbname=coffee_oltp" \
--        -v api_password=... -v replication_password=... -f deploy/roles.sql
--   # the OLAP server (coffee_olap): the replicator's writer role, and optionally a
--   # read-only role for Metabase and other BI tools
--   psql "host=olap-host user=postgres dbname=coffee_olap" \
--        -v olap_password=... -v reader_password=... -f deploy/roles.sql
--
-- When one server holds both databases, one run with all the passwords does both parts.
-- Each password may come from the environment instead of -v: BREWLYTICS_API_PASSWORD,
-- BREWLYTICS_REPLICATION_PASSWORD, BREWLYTICS_OLAP_PASSWORD, BREWLYTICS_READER_PASSWORD
-- (that keeps them off the command line). Optional: -v oltp_db=..., -v olap_db=...,
-- -v publication=... (defaults coffee_oltp, coffee_olap, brewlytics).
--
-- Roles (fixed names; the connection URLs of the services use them):
--   brewlytics_api          LOGIN; CONNECT on coffee_oltp; SELECT/INSERT/UPDATE/DELETE on the
--                           application's tables and USAGE on their sequences. No CREATE, no
--                           TEMP, owns nothing (so no DDL), cannot connect to coffee_olap.
--   brewlytics_replication  LOGIN REPLICATION; CONNECT on coffee_oltp; SELECT on the tables of
--                           the publication only (the initial copy). Creating the slot,
--                           streaming it and reading pg_replication_slots / pg_publication_tables
--                           need nothing more; pg_logical_emit_message is executable by PUBLIC.
--   Both check API keys: SELECT on auth.api_keys and UPDATE of its last_used_at only. Keys
--   are created and revoked by the table's owner (`brewlytics api-key`, run with the
--   superuser's OLTP_DATABASE_URL like `migrate`), never by a server.
--   brewlytics_olap         LOGIN; CONNECT and TEMP on coffee_olap (batches are staged in
--                           temporary tables); owns the objects of the migrations (journal,
--                           replica.*, cdc_staging, star schema, functions), so the replicator
--                           can follow the source's tables and columns as they change.
--   brewlytics_reader       (only with reader_password) LOGIN; SELECT on coffee_olap.
-- PUBLIC loses CONNECT and TEMP on both databases and CREATE on their `public` schema.
--
-- The statements carry the passwords: this script turns statement logging off for its own
-- sessions (it runs as a superuser), and psql does not echo them unless asked (-a, -e).

\set ON_ERROR_STOP on
\set QUIET on

\if :{?oltp_db}
\else
  \set oltp_db coffee_oltp
\endif
\if :{?olap_db}
\else
  \set olap_db coffee_olap
\endif
\if :{?publication}
\else
  \set publication brewlytics
\endif

\if :{?api_password}
\else
  \getenv api_password BREWLYTICS_API_PASSWORD
\endif
\if :{?replication_password}
\else
  \getenv replication_password BREWLYTICS_REPLICATION_PASSWORD
\endif
\if :{?olap_password}
\else
  \getenv olap_password BREWLYTICS_OLAP_PASSWORD
\endif
\if :{?reader_password}
\else
  \getenv reader_password BREWLYTICS_READER_PASSWORD
\endif
-- The reader role is optional; an empty value means "not wanted".
\if :{?reader_password}
\else
  \set reader_password ''
\endif
\if :{?api_password}
\else
  \set api_password ''
\endif
\if :{?replication_password}
\else
  \set replication_password ''
\endif
\if :{?olap_password}
\else
  \set olap_password ''
\endif

select (select rolsuper from pg_roles where rolname = current_user) as is_superuser
\gset
\if :is_superuser
\else
  \echo 'roles.sql: run this script as a superuser (it creates a REPLICATION role and hands objects over)'
  do $$ begin raise exception 'roles.sql stopped: not a superuser'; end $$;
\endif

set log_statement = 'none';
set log_min_error_statement = 'panic';

select exists (select from pg_database where datname = :'oltp_db') as has_oltp,
       exists (select from pg_database where datname = :'olap_db') as has_olap,
       length(:'api_password') >= 8 as api_password_ok,
       length(:'replication_password') >= 8 as replication_password_ok,
       length(:'olap_password') >= 8 as olap_password_ok,
       length(:'reader_password') > 0 as has_reader,
       length(:'reader_password') >= 8 as reader_password_ok
\gset

\if :has_oltp
\elif :has_olap
\else
  \echo 'roles.sql: neither' :oltp_db 'nor' :olap_db 'exists on this server (create them, run brewlytics migrate, then this script)'
  do $$ begin raise exception 'roles.sql stopped: no Brewlytics database on this server'; end $$;
\endif

-------------------------------------------------------------------------------------------
-- OLTP: the API role and the replication role
-------------------------------------------------------------------------------------------
\if :has_oltp
\if :api_password_ok
\else
  \echo 'roles.sql: set api_password (psql -v api_password=... or BREWLYTICS_API_PASSWORD), at least 8 characters'
  do $$ begin raise exception 'roles.sql stopped: api_password missing or too short'; end $$;
\endif
\if :replication_password_ok
\else
  \echo 'roles.sql: set replication_password (psql -v replication_password=... or BREWLYTICS_REPLICATION_PASSWORD), at least 8 characters'
  do $$ begin raise exception 'roles.sql stopped: replication_password missing or too short'; end $$;
\endif

\connect :oltp_db
set log_statement = 'none';
set log_min_error_statement = 'panic';

begin;

select format('create role %I', r)
from unnest(array['brewlytics_api', 'brewlytics_replication']) as r
where not exists (select from pg_roles where rolname = r)
\gexec

alter role brewlytics_api with login nosuperuser nocreatedb nocreaterole noreplication
    nobypassrls password :'api_password';
alter role brewlytics_replication with login replication nosuperuser nocreatedb nocreaterole
    nobypassrls password :'replication_password';

-- Only our roles (and superusers) connect; nobody creates temporary tables or objects in public.
revoke all on database :"oltp_db" from public;
grant connect on database :"oltp_db" to brewlytics_api, brewlytics_replication;
revoke create on schema public from public;
grant usage on schema public to brewlytics_api, brewlytics_replication;

-- Start from nothing on the tables, so every run leaves exactly what follows.
revoke all on all tables in schema public from brewlytics_api, brewlytics_replication;
revoke all on all sequences in schema public from brewlytics_api, brewlytics_replication;

-- API: rows of the application's tables (not the migration history), and their sequences.
select format('grant select, insert, update, delete on table %I.%I to brewlytics_api',
              schemaname, tablename)
from pg_tables
where schemaname = 'public' and tablename <> '_sqlx_migrations'
order by tablename
\gexec
grant usage on all sequences in schema public to brewlytics_api;

-- API keys: the servers read them and record when each was last used; nothing else.
select exists (select from pg_namespace where nspname = 'auth') as has_auth
\gset
\if :has_auth
revoke all on all tables in schema auth from brewlytics_api, brewlytics_replication;
grant usage on schema auth to brewlytics_api, brewlytics_replication;
grant select, update (last_used_at) on auth.api_keys to brewlytics_api, brewlytics_replication;
\else
  \echo 'roles.sql: warning: the API keys table does not exist yet; run brewlytics migrate, then this script again'
\endif

-- Replication: read the published tables (the initial copy), nothing else.
select exists (select from pg_publication where pubname = :'publication') as has_publication
\gset
\if :has_publication
\else
  \echo 'roles.sql: warning: publication' :publication 'does not exist yet; run brewlytics migrate, then this script again'
\endif
select distinct format('grant usage on schema %I to brewlytics_replication', schemaname)
from pg_publication_tables
where pubname = :'publication'
\gexec
select format('grant select on table %I.%I to brewlytics_replication', schemaname, tablename)
from pg_publication_tables
where pubname = :'publication'
order by schemaname, tablename
\gexec

commit;
\echo 'roles.sql:' :oltp_db 'ready (brewlytics_api, brewlytics_replication)'
\endif

-------------------------------------------------------------------------------------------
-- OLAP: the replicator's writer role, and the optional reader
-------------------------------------------------------------------------------------------
\if :has_olap
\if :olap_password_ok
\else
  \echo 'roles.sql: set olap_password (psql -v olap_password=... or BREWLYTICS_OLAP_PASSWORD), at least 8 characters'
  do $$ begin raise exception 'roles.sql stopped: olap_password missing or too short'; end $$;
\endif
\if :has_reader
\if :reader_password_ok
\else
  \echo 'roles.sql: reader_password needs at least 8 characters'
  do $$ begin raise exception 'roles.sql stopped: reader_password too short'; end $$;
\endif
\endif

\connect :olap_db
set log_statement = 'none';
set log_min_error_statement = 'panic';

begin;

select format('create role %I', 'brewlytics_olap')
where not exists (select from pg_roles where rolname = 'brewlytics_olap')
\gexec
alter role brewlytics_olap with login nosuperuser nocreatedb nocreaterole noreplication
    nobypassrls password :'olap_password';

revoke all on database :"olap_db" from public;
grant connect on database :"olap_db" to brewlytics_olap;
-- Each batch is staged in temporary tables of the writer's session (typed COPY targets).
grant temporary on database :"olap_db" to brewlytics_olap;
revoke create on schema public from public;
grant usage on schema public to brewlytics_olap;
-- The replicator applies batches as PostgreSQL's own apply workers do (foreign keys of the
-- star schema are kept by construction, not re-checked per row).
grant set on parameter session_replication_role to brewlytics_olap;

-- The writer owns what the migrations created (they run as a superuser).
select format('alter schema %I owner to brewlytics_olap', nspname)
from pg_namespace
where nspname in ('replica', 'cdc_staging', 'star_input', 'star_kept')
  and nspowner <> 'brewlytics_olap'::regrole
\gexec
select format('alter %s %I.%I owner to brewlytics_olap',
              case c.relkind when 'v' then 'view' when 'm' then 'materialized view'
                             when 'S' then 'sequence' else 'table' end,
              n.nspname, c.relname)
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where n.nspname in ('public', 'replica', 'star_input', 'star_kept')
  and c.relkind in ('r', 'p', 'v', 'm', 'S')
  and c.relowner <> 'brewlytics_olap'::regrole
  -- identity/serial sequences follow their table; extension members stay the extension's
  and not exists (select from pg_depend d
                  where d.classid = 'pg_class'::regclass and d.objid = c.oid
                    and d.deptype in ('a', 'i', 'e'))
order by n.nspname, c.relname
\gexec
select format('alter %s %s owner to brewlytics_olap',
              case p.prokind when 'a' then 'aggregate' else 'routine' end, p.oid::regprocedure)
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
where n.nspname in ('public', 'replica')
  and p.prokind in ('f', 'p', 'a')
  and p.proowner <> 'brewlytics_olap'::regrole
  and not exists (select from pg_depend d
                  where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
\gexec
select format('alter %s %s owner to brewlytics_olap',
              case t.typtype when 'd' then 'domain' else 'type' end, t.oid::regtype)
from pg_type t
join pg_namespace n on n.oid = t.typnamespace
where n.nspname in ('public', 'replica')
  and t.typtype in ('e', 'd')
  and t.typowner <> 'brewlytics_olap'::regrole
  and not exists (select from pg_depend d
                  where d.classid = 'pg_type'::regclass and d.objid = t.oid and d.deptype = 'e')
\gexec

\if :has_reader
select format('create role %I', 'brewlytics_reader')
where not exists (select from pg_roles where rolname = 'brewlytics_reader')
\gexec
alter role brewlytics_reader with login nosuperuser nocreatedb nocreaterole noreplication
    nobypassrls password :'reader_password';
grant connect on database :"olap_db" to brewlytics_reader;
select format('grant usage on schema %1$I to brewlytics_reader;
               grant select on all tables in schema %1$I to brewlytics_reader;
               alter default privileges for role brewlytics_olap in schema %1$I
                   grant select on tables to brewlytics_reader', nspname)
from pg_namespace
where nspname in ('public', 'replica', 'star_input', 'star_kept')
order by nspname
\gexec
\endif

commit;
\if :has_reader
\echo 'roles.sql:' :olap_db 'ready (brewlytics_olap, brewlytics_reader)'
\else
\echo 'roles.sql:' :olap_db 'ready (brewlytics_olap)'
\endif
\endif
