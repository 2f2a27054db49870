//! Addresses for the servers a test starts, and plain HTTP to them.
//!
//! A server that binds port 0 and reports what it got needs no address from here (the tests'
//! in-process listeners, `brewlytics up --api-listen 127.0.0.1:0`, which prints its URLs).
//! For the others, [`free_addr`] leases a port outside the kernel's ephemeral range, held
//! until the test binary exits (`brewlytics_support::ports`).

use std::time::Duration;

pub use brewlytics_support::testing::{free_addr, free_port};

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
