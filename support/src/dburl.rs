//! A PostgreSQL connection URL whose password never reaches a log line, `/status` or an error.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// A `postgres://` URL. `Display` and `Debug` print it with the password replaced by `***`;
/// only [`DbUrl::expose`] gives the real text, for the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl(String);

/// Why a URL was refused. Its text never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum DbUrlError {
    #[error("database URL must start with postgres:// or postgresql:// (got {0})")]
    Scheme(String),
    #[error("database URL {0} names no database")]
    NoDatabase(String),
}

/// Why a database could not be connected to, said at once and without the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens there, no route, an unknown host: the OS's reason.
    #[error("cannot reach PostgreSQL at {host}:{port} ({url}): {source}")]
    Unreachable {
        url: String,
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from PostgreSQL at {host}:{port} ({url}) within {} s", .waited.as_secs())]
    NoAnswer {
        url: String,
        host: String,
        port: u16,
        waited: Duration,
    },
    /// The server answered and refused: authentication, an unknown database, TLS.
    #[error("connecting to {url}: {message}")]
    Refused { url: String, message: String },
}

impl DbUrl {
    pub fn parse(text: &str) -> Result<Self, DbUrlError> {
        let text = text.trim();
        let redacted = redact(text);
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
            .ok_or_else(|| DbUrlError::Scheme(redacted.clone()))?;
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        let db = path.split('?').next().unwrap_or("");
        if db.is_empty() {
            return Err(DbUrlError::NoDatabase(redacted));
        }
        Ok(Self(text.to_owned()))
    }

    /// The URL with its password, for the database driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The database name in the path.
    pub fn database(&self) -> &str {
        let rest = self.0.split_once("://").map(|(_, r)| r).unwrap_or("");
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        path.split('?').next().unwrap_or("")
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, name: &str) -> Self {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("postgres", &self.0));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let query = path.split_once('?').map(|(_, q)| q);
        let mut out = format!("{scheme}://{authority}/{name}");
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Self(out)
    }

    /// Options for sqlx. Statements are logged at debug level, and slow ones (over 10 s)
    /// at info: the replicator's bulk statements (an initial copy, a large batch) are long
    /// by nature and would otherwise warn with their whole SQL text.
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        use sqlx::ConnectOptions;
        Ok(PgConnectOptions::from_str(&self.0)?
            .log_statements(log::LevelFilter::Debug)
            .log_slow_statements(log::LevelFilter::Info, std::time::Duration::from_secs(10)))
    }
}

impl DbUrl {
    /// Opens one connection and closes it: a database that cannot be reached is reported at
    /// once with its host, port and the OS's reason, where a pool would retry a refused
    /// connection until its acquire timeout and then say only that it timed out.
    pub async fn check_reachable(&self, within: Duration) -> Result<(), ConnectError> {
        let url = self.to_string();
        let options = self.connect_options().map_err(|e| ConnectError::Refused {
            url: url.clone(),
            message: self.scrub(&e.to_string()),
        })?;
        let (host, port) = (options.get_host().to_owned(), options.get_port());
        match tokio::time::timeout(within, PgConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(sqlx::Error::Io(source))) => Err(ConnectError::Unreachable {
                url,
                host,
                port,
                source,
            }),
            Ok(Err(e)) => Err(ConnectError::Refused {
                url,
                message: self.scrub(&e.to_string()),
            }),
            Err(_) => Err(ConnectError::NoAnswer {
                url,
                host,
                port,
                waited: within,
            }),
        }
    }

    /// `text` with this URL's password replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let rest = self.0.split_once("://").map(|(_, r)| r).unwrap_or("");
        let authority = rest.split('/').next().unwrap_or("");
        let password = authority
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, p)| p)
            .unwrap_or("");
        scrub(text, password)
    }
}

impl FromStr for DbUrl {
    type Err = DbUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", redact(&self.0))
    }
}

/// Replaces the password of a URL (`user:password@`) and any `password=` query parameter.
pub fn redact(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{tail}")
        }
        None => url.to_owned(),
    };
    if let Some(i) = out.find("password=") {
        let end = out[i..].find('&').map(|e| i + e).unwrap_or(out.len());
        out.replace_range(i + "password=".len()..end, "***");
    }
    out
}

/// Replaces every occurrence of `secret` in `text`; for error chains that may quote a URL.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_hides_password() {
        let u = DbUrl::parse("postgres://brew:s3cret@127.0.0.1:5432/coffee_oltp?sslmode=disable")
            .unwrap();
        assert_eq!(
            u.to_string(),
            "postgres://brew:***@127.0.0.1:5432/coffee_oltp?sslmode=disable"
        );
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(u.database(), "coffee_oltp");
        assert!(u.expose().contains("s3cret"));
    }

    #[test]
    fn query_password_is_hidden() {
        assert_eq!(
            redact("postgres://h/db?user=a&password=xyz&sslmode=require"),
            "postgres://h/db?user=a&password=***&sslmode=require"
        );
    }

    #[test]
    fn with_database_keeps_credentials_and_query() {
        let u = DbUrl::parse("postgresql://a:b@h:1/x?sslmode=disable").unwrap();
        assert_eq!(
            u.with_database("y").expose(),
            "postgresql://a:b@h:1/y?sslmode=disable"
        );
    }

    #[tokio::test]
    async fn an_unreachable_database_is_named_at_once() {
        // A port nobody listens on (leased: no other test's server is given it).
        let lease = crate::ports::lease().unwrap();
        let port = lease.port();
        let url = DbUrl::parse(&format!("postgres://u:s3cret@127.0.0.1:{port}/db")).unwrap();
        let started = std::time::Instant::now();
        let e = url
            .check_reachable(Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot reach PostgreSQL at 127.0.0.1:{port} (postgres://u:***@127.0.0.1:{port}/db): Connection refused")),
            "{text}"
        );
        assert!(!text.contains("s3cret"));
    }

    #[test]
    fn rejects_bad_urls_without_echoing_password() {
        let e = DbUrl::parse("mysql://u:pw@h/db").unwrap_err().to_string();
        assert!(e.contains("postgres://") && !e.contains("pw@"));
        assert!(DbUrl::parse("postgres://u:pw@h:5432").is_err());
        assert!(DbUrl::parse("postgres://u:pw@h:5432/").is_err());
    }
}
