//! What a BI tool needs to reach coffee_olap (host, port, database, role, password), taken
//! from a database URL; the tool's own login; and a password type that never prints.

use std::fmt;

use brewlytics_support::dburl::scrub;
use brewlytics_support::DbUrl;

/// A password: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A BI tool's address and the administrator's login to provision it with.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub user: String,
    pub password: Secret,
}

#[derive(Debug, thiserror::Error)]
#[error("OLAP database URL: {0}")]
pub struct UrlError(String);

/// How the BI tool reaches the OLAP database.
#[derive(Debug, Clone)]
pub struct OlapConnection {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Secret,
    pub ssl: bool,
}

impl OlapConnection {
    /// From a database URL; `host` replaces the URL's host (the address at which the BI
    /// tool, e.g. in a container, sees the server).
    pub fn from_url(url: &DbUrl, host: Option<&str>) -> Result<Self, UrlError> {
        let opts = url
            .connect_options()
            .map_err(|e| UrlError(scrub(&e.to_string(), url.expose())))?;
        let text = url.expose();
        let rest = text.split_once("://").map(|(_, r)| r).unwrap_or("");
        let authority = rest.split('/').next().unwrap_or("");
        let password = authority
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, p)| percent_decode(p))
            .unwrap_or_default();
        let ssl = matches!(
            opts.get_ssl_mode(),
            sqlx::postgres::PgSslMode::Require
                | sqlx::postgres::PgSslMode::VerifyCa
                | sqlx::postgres::PgSslMode::VerifyFull
        );
        Ok(Self {
            host: host.unwrap_or(opts.get_host()).to_owned(),
            port: opts.get_port(),
            dbname: opts.get_database().unwrap_or(url.database()).to_owned(),
            user: opts.get_username().to_owned(),
            password: Secret::new(password),
            ssl,
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` percent-encoded for the user or password part of a URL (RFC 3986 unreserved
/// characters kept).
pub use brewlytics_support::web::percent_encode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_comes_from_the_url_and_hides_the_password() {
        let url = DbUrl::parse("postgres://brew:p%40ss@10.0.0.5:5433/coffee_olap").unwrap();
        let c = OlapConnection::from_url(&url, None).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str(), c.user.as_str()),
            ("10.0.0.5", 5433, "coffee_olap", "brew")
        );
        assert_eq!(c.password.expose(), "p@ss");
        assert!(!format!("{c:?}").contains("p@ss"));
        let c = OlapConnection::from_url(&url, Some("host.docker.internal")).unwrap();
        assert_eq!(c.host, "host.docker.internal");
    }

    #[test]
    fn encoding_round_trips() {
        for text in ["plain", "p@ss:w/rd%", "ünï cödé"] {
            assert_eq!(percent_decode(&percent_encode(text)), text);
        }
        assert_eq!(percent_encode("a@b"), "a%40b");
    }
}
