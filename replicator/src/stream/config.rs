//! Connection settings of the replication connection, read from the OLTP URL.

use std::path::PathBuf;

use brewlytics_support::DbUrl;

use super::tls::SslMode;

/// Where and as whom the replication connection logs in. `Debug` hides the password.
#[derive(Clone)]
pub struct ReplicationConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub application_name: String,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the OLTP URL {0} is not a postgres:// URL with a host")]
    Malformed(String),
    #[error("the OLTP URL {url} has sslmode={mode}: use disable, prefer, require, verify-ca or verify-full")]
    BadSslMode { url: String, mode: String },
}

impl ReplicationConfig {
    pub fn from_url(url: &DbUrl) -> Result<Self, ConfigError> {
        let text = url.expose();
        let malformed = || ConfigError::Malformed(url.to_string());
        let rest = text
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(malformed)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (db, query) = path.split_once('?').unwrap_or((path, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (percent_decode(user), Some(percent_decode(pw))),
                None => (percent_decode(u), None),
            },
            None => (String::new(), None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_owned(), p.parse().map_err(|_| malformed())?)
            }
            _ => (hostport.to_owned(), 5432),
        };
        let mut cfg = Self {
            host: host.trim_matches(|c| c == '[' || c == ']').to_owned(),
            port,
            user,
            password,
            database: percent_decode(db),
            application_name: "brewlytics-replicator".into(),
            ssl_mode: SslMode::default(),
            ssl_root_cert: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "user" => cfg.user = v,
                "password" => cfg.password = Some(v),
                "host" => cfg.host = v,
                "port" => cfg.port = v.parse().map_err(|_| malformed())?,
                "dbname" => cfg.database = v,
                "application_name" => cfg.application_name = v,
                "sslmode" => {
                    cfg.ssl_mode = SslMode::parse(&v).ok_or_else(|| ConfigError::BadSslMode {
                        url: url.to_string(),
                        mode: v.clone(),
                    })?
                }
                "sslrootcert" => cfg.ssl_root_cert = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        if cfg.host.is_empty() || cfg.database.is_empty() {
            return Err(malformed());
        }
        if cfg.user.is_empty() {
            cfg.user = std::env::var("USER").unwrap_or_else(|_| "postgres".into());
        }
        Ok(cfg)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
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

    #[test]
    fn parses_url_with_encoded_password() {
        let url =
            DbUrl::parse("postgres://rep:p%40ss%3Aw@db.local:6543/coffee_oltp?sslmode=disable")
                .unwrap();
        let c = ReplicationConfig::from_url(&url).unwrap();
        assert_eq!(c.host, "db.local");
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "rep");
        assert_eq!(c.password.as_deref(), Some("p@ss:w"));
        assert_eq!(c.database, "coffee_oltp");
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn default_port_ssl_modes_and_a_bad_mode() {
        let c = ReplicationConfig::from_url(&DbUrl::parse("postgres://u@h/d").unwrap()).unwrap();
        assert_eq!(c.port, 5432);
        assert_eq!(c.ssl_mode, SslMode::Prefer);
        let c = ReplicationConfig::from_url(
            &DbUrl::parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap(),
        )
        .unwrap();
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.ssl_root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let e = ReplicationConfig::from_url(
            &DbUrl::parse("postgres://u:pw@h/d?sslmode=sometimes").unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sslmode=sometimes") && !e.contains("pw@"), "{e}");
    }
}
