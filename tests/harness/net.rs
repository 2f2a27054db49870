//! Addresses for the servers a test starts, and plain HTTP to them.
//!
//! Every server needs an API key for what is not `/health` or `/ready`: the harness
//! remembers which key opens which address ([`remember_key`]; `Clusters::replicator` and
//! `up::wait` do it) and [`http`] and [`http_get`] send it, as a client configured with a key
//! would. [`exchange`] sends exactly the headers it is given, for tests of the refusals.
//!
//! A server that binds port 0 and reports what it got needs no address from here (the tests'
//! in-process listeners, `brewlytics up --api-listen 127.0.0.1:0`, which prints its URLs).
//! For the others, [`free_addr`] leases a port outside the kernel's ephemeral range, held
//! until the test binary exits (`brewlytics_support::ports`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use brewlytics_support::testing::{free_addr, free_port};

fn keys() -> &'static Mutex<HashMap<String, String>> {
    static KEYS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// From now on, [`http`] and [`http_get`] to `addr` carry `key` (`Authorization: Bearer`).
pub fn remember_key(addr: &str, key: &str) {
    keys()
        .lock()
        .unwrap()
        .insert(addr.to_owned(), key.to_owned());
}

/// The key remembered for `addr`.
pub fn key_for(addr: &str) -> Option<String> {
    keys().lock().unwrap().get(addr).cloned()
}

/// An answer with its headers (names lowercased).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 exchange with exactly `headers` (no remembered key): None when nothing
/// answers within 10 s.
pub fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Option<Answer> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    let to: SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(10)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut text = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        text.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    text.push_str("\r\n");
    text.push_str(body.unwrap_or(""));
    stream.write_all(text.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// One HTTP/1.0 exchange (the server closes the connection, so the body needs no framing):
/// (status, body), or None when nothing answers within 10 s.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    let to: SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(10)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(request(addr, method, path, body).as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    response(&raw)
}

/// [`http`] GET, without blocking the runtime: (status, body), or None within 10 s.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(request(addr, "GET", path, None).as_bytes())
            .await
            .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> String {
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(key) = key_for(addr) {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    request
}

fn response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
