//! Binding a service's listening address, before anything is announced or started: an
//! address that is taken is one line naming it, the service that wanted it and the flag (and
//! environment variable) that moves it — not a panic, not a half-started pipeline.

use std::fmt;
use std::net::SocketAddr;

/// A listening service as the command line knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// What listens, as users call it: "API", "replicator", "dashboard", "loader".
    pub name: &'static str,
    /// The flag that sets its address in this command (`--api-listen`, `--listen`, …).
    pub flag: &'static str,
    /// The environment variable the flag mirrors.
    pub env: &'static str,
}

/// Why a service could not listen. Its one line already says the operating system's reason
/// when that is not "in use", so it has no `source`.
#[derive(Debug)]
pub struct ListenError {
    pub addr: SocketAddr,
    pub service: Service,
    pub source: std::io::Error,
}

impl std::error::Error for ListenError {}

impl ListenError {
    pub fn in_use(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::AddrInUse
    }
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Service { name, flag, env } = self.service;
        if self.in_use() {
            write!(
                f,
                "{addr} is already in use, so the {name} cannot listen there: stop what holds it, \
                 or move the {name} with {flag} ADDR (or {env}=ADDR)",
                addr = self.addr
            )
        } else {
            write!(
                f,
                "the {name} cannot listen on {addr} ({err}): move it with {flag} ADDR (or {env}=ADDR)",
                addr = self.addr,
                err = self.source
            )
        }
    }
}

/// Binds `addr` for `service`. Port 0 takes a free port: read it back with `local_addr`.
pub async fn bind(
    addr: SocketAddr,
    service: Service,
) -> Result<tokio::net::TcpListener, ListenError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError {
            addr,
            service,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: Service = Service {
        name: "API",
        flag: "--api-listen",
        env: "API_LISTEN",
    };

    #[tokio::test]
    async fn a_taken_address_is_named_with_its_service_and_flag() {
        let first = bind(([127, 0, 0, 1], 0).into(), API).await.unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr, API).await.unwrap_err();
        assert!(err.in_use());
        let line = err.to_string();
        assert_eq!(
            line,
            format!(
                "{addr} is already in use, so the API cannot listen there: stop what holds it, \
                 or move the API with --api-listen ADDR (or API_LISTEN=ADDR)"
            )
        );
        assert!(!line.contains('\n'));
    }

    #[tokio::test]
    async fn another_failure_says_why_and_how_to_move() {
        // TEST-NET-1 is on no interface of this machine.
        let addr: SocketAddr = "192.0.2.1:8000".parse().unwrap();
        let err = bind(addr, API).await.unwrap_err();
        assert!(!err.in_use());
        let line = err.to_string();
        assert!(
            line.starts_with("the API cannot listen on 192.0.2.1:8000 ("),
            "{line}"
        );
        assert!(
            line.ends_with("move it with --api-listen ADDR (or API_LISTEN=ADDR)"),
            "{line}"
        );
    }
}
