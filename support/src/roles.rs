//! The least-privilege roles of `deploy/roles.sql` on an embedded cluster: `brewlytics up`
//! creates them (so a BI tool can connect as the read-only `brewlytics_reader`), and so do
//! the tests that need them. The script is the one operators run with psql, compiled into
//! the binary; the passwords are made once and kept in `<data dir>/roles.env` (mode 0600), in
//! the variables the script reads, so `set -a; . .brewlytics/roles.env` and psql can run it
//! again by hand.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use crate::cluster::{self, ClusterError, EmbeddedCluster};
use crate::dburl::DbUrl;

/// `deploy/roles.sql`.
pub const ROLES_SQL: &str = include_str!("../../deploy/roles.sql");

/// The read-only role for BI tools.
pub const READER: &str = "brewlytics_reader";

/// The file holding the passwords, in a data directory.
pub const FILE: &str = "roles.env";

/// The script's variables, in the order they are written.
const VARIABLES: [&str; 4] = [
    "BREWLYTICS_API_PASSWORD",
    "BREWLYTICS_REPLICATION_PASSWORD",
    "BREWLYTICS_OLAP_PASSWORD",
    "BREWLYTICS_READER_PASSWORD",
];

/// The passwords of the four roles. `Debug` prints none of them.
#[derive(Clone)]
pub struct RolePasswords {
    values: [String; 4],
}

impl std::fmt::Debug for RolePasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RolePasswords(***)")
    }
}

impl RolePasswords {
    /// The passwords kept in `dir`, made (and kept) when the file is missing or incomplete.
    pub fn load_or_make(dir: &Path) -> Result<Self, ClusterError> {
        let path = dir.join(FILE);
        if let Some(found) = Self::load(&path) {
            return Ok(found);
        }
        let mut values: [String; 4] = Default::default();
        for v in &mut values {
            *v = cluster::random_token(24)?;
        }
        let made = Self { values };
        let mut text = String::from(
            "# Passwords of the roles of deploy/roles.sql on this embedded cluster (made by brewlytics up).\n",
        );
        for (name, value) in VARIABLES.iter().zip(&made.values) {
            text.push_str(&format!("{name}={value}\n"));
        }
        cluster::write_private(&path, &text, false)?;
        Ok(made)
    }

    /// The passwords of an existing file; `None` when it is missing or lacks one.
    pub fn load(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut values: [String; 4] = Default::default();
        for (name, value) in VARIABLES.iter().zip(&mut values) {
            *value = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))?
                .trim()
                .to_owned();
            if value.is_empty() {
                return None;
            }
        }
        Some(Self { values })
    }

    pub fn reader(&self) -> &str {
        &self.values[3]
    }
}

/// Runs `deploy/roles.sql` on the cluster as its superuser (idempotent: run it after every
/// migration). Its output, which holds no password, is returned.
pub fn apply(cluster: &EmbeddedCluster, passwords: &RolePasswords) -> Result<String, ClusterError> {
    let mut cmd = cluster.psql_command("postgres");
    cmd.args(["-q", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in VARIABLES.iter().zip(&passwords.values) {
        cmd.env(name, value);
    }
    let mut child = cmd.spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(ROLES_SQL.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let redacted = passwords
            .values
            .iter()
            .fold(text, |t, p| t.replace(p.as_str(), "***"));
        return Err(ClusterError::Command {
            what: "deploy/roles.sql".into(),
            detail: redacted
                .trim()
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | "),
        });
    }
    Ok(text.trim().to_owned())
}

/// The URL of `database` as the read-only role, over TCP.
pub fn reader_url(port: u16, passwords: &RolePasswords, database: &str) -> DbUrl {
    DbUrl::parse(&format!(
        "postgres://{READER}:{}@127.0.0.1:{port}/{database}",
        passwords.reader()
    ))
    .expect("a well-formed URL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterOptions;

    #[test]
    fn passwords_are_kept_and_the_reader_only_reads() {
        let cluster = EmbeddedCluster::start(ClusterOptions::throwaway()).unwrap();
        cluster.ensure_database("coffee_oltp").unwrap();
        cluster.ensure_database("coffee_olap").unwrap();
        cluster
            .psql(
                "coffee_olap",
                "create table fact_sales (id int); insert into fact_sales values (1)",
            )
            .unwrap();
        let dir = cluster.data_dir().join("keep");
        std::fs::create_dir_all(&dir).unwrap();
        let made = RolePasswords::load_or_make(&dir).unwrap();
        let again = RolePasswords::load_or_make(&dir).unwrap();
        assert_eq!(made.values, again.values);
        assert!(!format!("{made:?}").contains(made.reader()));
        let out = apply(&cluster, &made).unwrap();
        assert!(out.contains("brewlytics_reader"), "{out}");
        // Twice: idempotent.
        apply(&cluster, &made).unwrap();

        let url = reader_url(cluster.port(), &made, "coffee_olap");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect_with(&url.connect_options().unwrap())
                .await
                .unwrap();
            let n: i64 = sqlx::query_scalar("select count(*) from fact_sales")
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!(n, 1);
            let refused = sqlx::query("insert into fact_sales values (2)")
                .execute(&mut c)
                .await
                .unwrap_err();
            let code = refused.as_database_error().and_then(|e| e.code());
            assert_eq!(code.as_deref(), Some("42501"), "{refused}");
        });
    }
}
