-- API keys: who may use the HTTP servers (the API, the dashboard, the replicator's endpoints).
-- Schema `auth`, which no publication may publish: the keys never leave OLTP
-- (schema/oltp/logic/20_api_keys.sql refuses such a publication; the replicator refuses to
-- stream one).
--
-- Only a SHA-256 digest of each key is stored (support/src/auth/key.rs says why a fast hash is
-- right for random keys). `brewlytics api-key create|list|revoke` writes the rows; the
-- servers read them and write `last_used_at`.

create schema if not exists auth;
revoke all on schema auth from public;

create table auth.api_keys (
    id            text primary key check (id ~ '^[0-9a-f]{16}$'),
    name          text not null check (length(name) between 1 and 64),
    scopes        text[] not null check (cardinality(scopes) > 0),
    secret_hash   bytea not null check (length(secret_hash) = 32),
    created_at    timestamptz not null default now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

-- A name is unique among the keys in use (a revoked key's name may be given again).
create unique index api_keys_active_name on auth.api_keys (name) where revoked_at is null;
