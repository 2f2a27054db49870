//! Whether the source can replicate at all, checked before streaming: a configuration that
//! cannot work stops at once with the fix in one line, instead of being retried forever.

use sqlx::PgConnection;

/// Why the source cannot replicate.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// A setting, a privilege or a missing object: the fix, in one line.
    #[error("{0}")]
    Refused(String),
    /// The source could not be asked (retried).
    #[error("database: {}", crate::redact::db_error(.0))]
    Sql(#[from] sqlx::Error),
}

/// Checks `wal_level`, the publications (each one there, and one column list per table), the
/// role's privileges and (before creating the slot) a free replication slot. Connection errors are returned as such (retried).
pub async fn source_ready(
    conn: &mut PgConnection,
    publication: &str,
    creating_slot: bool,
) -> Result<(), NotReady> {
    let names = crate::slot::publication_names(publication);
    let (wal_level, can_replicate, user, missing): (String, bool, String, Vec<String>) =
        sqlx::query_as(
            "select current_setting('wal_level'),
                    (select rolreplication or rolsuper from pg_roles where rolname = current_user),
                    current_user::text,
                    array(select n from unnest($1::text[]) n
                          where not exists (select 1 from pg_publication where pubname = n))",
        )
        .bind(&names)
        .fetch_one(&mut *conn)
        .await?;
    if wal_level != "logical" {
        return Err(NotReady::Refused(format!(
            "the OLTP server has wal_level = {wal_level}; logical replication needs logical: run \
             `ALTER SYSTEM SET wal_level = logical` as a superuser and restart PostgreSQL"
        )));
    }
    if !can_replicate {
        return Err(NotReady::Refused(format!(
            "role {user:?} may not stream from a replication slot: run `ALTER ROLE \"{user}\" REPLICATION` \
             as a superuser (see deploy/roles.sql)"
        )));
    }
    if let Some(publication) = missing.first() {
        return Err(NotReady::Refused(format!(
            "publication {publication:?} does not exist in the OLTP database: run `brewlytics migrate`, \
             or `CREATE PUBLICATION \"{publication}\" FOR TABLE …` with the tables to mirror"
        )));
    }
    let unreadable: Vec<String> = sqlx::query_scalar(
        "select distinct format('%I.%I', schemaname, tablename) from pg_publication_tables
         where pubname = any($1)
           and not has_table_privilege(format('%I.%I', schemaname, tablename), 'select')",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    if !unreadable.is_empty() {
        return Err(NotReady::Refused(format!(
            "role {user:?} cannot read the published table(s) {}: run `GRANT SELECT ON {} TO \"{user}\"`",
            unreadable.join(", "),
            unreadable.join(", ")
        )));
    }
    // The API keys (auth.api_keys) never leave OLTP: a publication that takes them (FOR ALL
    // TABLES does) is not streamed. `brewlytics migrate` refuses one too.
    let keys_published: Vec<String> = sqlx::query_scalar(
        "select distinct pubname::text from pg_publication_tables
         where pubname = any($1) and schemaname = 'auth' order by 1",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    if !keys_published.is_empty() {
        return Err(NotReady::Refused(format!(
            "publication(s) {} publish the API keys (auth.api_keys), which must never leave the OLTP \
             database: publish the tables by name (`ALTER PUBLICATION … SET TABLE …`) or \
             `FOR TABLES IN SCHEMA public` instead of FOR ALL TABLES",
            keys_published.join(", ")
        )));
    }
    if let Some(e) = crate::schema::publication::unstreamable(conn, &names).await? {
        return Err(NotReady::Refused(e));
    }
    if creating_slot {
        let (used, max): (i64, i64) = sqlx::query_as(
            "select (select count(*) from pg_replication_slots),
                    current_setting('max_replication_slots')::bigint",
        )
        .fetch_one(&mut *conn)
        .await?;
        if used >= max {
            return Err(NotReady::Refused(format!(
                "all {max} replication slots of the OLTP server are in use (max_replication_slots = {max}): \
                 drop an unused one (`SELECT pg_drop_replication_slot(name)`) or raise max_replication_slots \
                 and restart PostgreSQL"
            )));
        }
    }
    Ok(())
}
