//! `brewlytics dbt-env`: coffee_olap's connection settings as shell exports for the dbt
//! project in `dbt/`, whose `profiles.yml` reads nothing else. From `OLAP_DATABASE_URL`, or
//! the embedded cluster of `brewlytics up` when no URL is given:
//!
//! ```text
//! eval "$(brewlytics dbt-env)" && dbt build
//! ```
//!
//! The URL is read as every other command reads it (sqlx: query parameters, `PG*`
//! environment defaults, `~/.pgpass`), so dbt connects where the replicator writes. The
//! password goes to `DBT_ENV_SECRET_BREWLYTICS_OLAP_PASSWORD`: dbt keeps variables with that
//! prefix out of its logs and artifacts.

use anyhow::Context;
use brewlytics_support::DbUrl;
use sqlx::postgres::PgSslMode;
use sqlx::ConnectOptions;

use crate::cli::{DbArgs, DbtEnvArgs};
use crate::databases;

/// The variable that carries the password (dbt scrubs `DBT_ENV_SECRET_*` from its output).
pub const PASSWORD_VAR: &str = "DBT_ENV_SECRET_BREWLYTICS_OLAP_PASSWORD";

pub fn env(args: DbtEnvArgs) -> anyhow::Result<()> {
    let url = match args.olap_url {
        Some(url) => url,
        None => {
            databases::resolve(&DbArgs {
                oltp_url: None,
                olap_url: None,
                data_dir: args.data_dir,
            })?
            .olap
        }
    };
    let mut text = exports(&url)?;
    if args.project_dir.join("dbt_project.yml").is_file() {
        let dir = std::fs::canonicalize(&args.project_dir)?
            .display()
            .to_string();
        for name in ["DBT_PROJECT_DIR", "DBT_PROFILES_DIR"] {
            text.push_str(&format!("export {name}={}\n", shell_quote(&dir)));
        }
    }
    print!("{text}");
    Ok(())
}

/// `export NAME='value'` lines for the profile's variables, values quoted for a POSIX shell.
pub fn exports(url: &DbUrl) -> anyhow::Result<String> {
    let mut out = format!(
        "# {url} for the dbt project in dbt/ (profiles.yml): eval \"$(brewlytics dbt-env)\"\n"
    );
    for (name, value) in variables(url)? {
        out.push_str(&format!("export {name}={}\n", shell_quote(&value)));
    }
    Ok(out)
}

/// The profile's variables and their values for `url`.
pub fn variables(url: &DbUrl) -> anyhow::Result<Vec<(&'static str, String)>> {
    let opts = url
        .connect_options()
        .with_context(|| format!("reading {url}"))?;
    let host = match opts.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => opts.get_host().to_owned(),
    };
    let database = opts
        .get_database()
        .with_context(|| format!("{url} names no database"))?
        .to_owned();
    let sslmode = match opts.get_ssl_mode() {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    };
    // sqlx keeps the password to itself; its URL form is the one place it is given back.
    let full = opts.to_url_lossy();
    let password = full.password().map(percent_decode).unwrap_or_default();
    // Certificates come back as `file: PATH` (or inline PEM, which libpq cannot take).
    let param = |key: &str| {
        full.query_pairs()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.strip_prefix("file: ").map(str::to_owned))
    };
    let mut vars = vec![
        ("BREWLYTICS_OLAP_HOST", host),
        ("BREWLYTICS_OLAP_PORT", opts.get_port().to_string()),
        ("BREWLYTICS_OLAP_USER", opts.get_username().to_owned()),
        ("BREWLYTICS_OLAP_DBNAME", database),
        ("BREWLYTICS_OLAP_SSLMODE", sslmode.to_owned()),
    ];
    for (name, key) in [
        ("BREWLYTICS_OLAP_SSLROOTCERT", "sslrootcert"),
        ("BREWLYTICS_OLAP_SSLCERT", "sslcert"),
        ("BREWLYTICS_OLAP_SSLKEY", "sslkey"),
    ] {
        if let Some(value) = param(key) {
            vars.push((name, value));
        }
    }
    vars.push((PASSWORD_VAR, password));
    Ok(vars)
}

/// `'text'` for a POSIX shell: a single quote becomes `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Decodes `%XX` escapes (URL userinfo); anything malformed is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(url: &str) -> Vec<(&'static str, String)> {
        variables(&DbUrl::parse(url).unwrap()).unwrap()
    }

    fn get(v: &[(&'static str, String)], name: &str) -> Option<String> {
        v.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn splits_a_url_into_the_profile_variables() {
        let v = vars("postgres://brew:p%40ss%3Aw%27rd@db.example:6543/coffee_olap?sslmode=require&sslrootcert=/etc/ca.pem");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_HOST").unwrap(), "db.example");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_PORT").unwrap(), "6543");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_USER").unwrap(), "brew");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_DBNAME").unwrap(), "coffee_olap");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_SSLMODE").unwrap(), "require");
        assert_eq!(
            get(&v, "BREWLYTICS_OLAP_SSLROOTCERT").unwrap(),
            "/etc/ca.pem"
        );
        assert_eq!(get(&v, PASSWORD_VAR).unwrap(), "p@ss:w'rd");
    }

    #[test]
    fn query_parameters_override_the_authority() {
        let v = vars("postgresql://u@h/x?dbname=coffee_olap&user=reader&password=s3&port=7000");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_DBNAME").unwrap(), "coffee_olap");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_USER").unwrap(), "reader");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_PORT").unwrap(), "7000");
        assert_eq!(get(&v, PASSWORD_VAR).unwrap(), "s3");
        assert_eq!(get(&v, "BREWLYTICS_OLAP_SSLROOTCERT"), None);
    }

    #[test]
    fn exports_are_shell_quoted() {
        let text = exports(&DbUrl::parse("postgres://u:it%27s%20me@h:1/db").unwrap()).unwrap();
        assert!(
            text.contains(&format!("export {PASSWORD_VAR}='it'\\''s me'\n")),
            "{text}"
        );
        assert!(text.contains("export BREWLYTICS_OLAP_HOST='h'\n"), "{text}");
        // The comment line names the database without its password.
        assert!(text.lines().next().unwrap().contains("u:***@h:1/db"));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
