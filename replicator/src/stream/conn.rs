//! A replication-mode connection to PostgreSQL over the frontend/backend protocol.
//!
//! Framing and authentication come from `postgres-protocol` (the rust-postgres project's
//! I/O-free protocol crate); this module is the thin async glue: startup, authentication
//! (trust, cleartext, MD5, SCRAM-SHA-256), simple queries, and the CopyBoth sub-protocol that
//! START_REPLICATION switches to.

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use super::config::ReplicationConfig;
use super::tls::{self, SslMode};

/// The byte stream under the protocol: TCP, or TLS over TCP.
trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// An error of the replication connection. Its text never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connecting to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("replication connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("authentication: {0}")]
    Auth(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the server closed the replication connection")]
    Closed,
    #[error("TLS: {0}")]
    Tls(String),
}

impl ConnError {
    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A row of a simple-query result, as text.
pub type TextRow = Vec<Option<String>>;

pub struct ReplicationConnection {
    reader: BufReader<ReadHalf<Box<dyn Transport>>>,
    writer: WriteHalf<Box<dyn Transport>>,
    buf: BytesMut,
    out: BytesMut,
}

/// Asks the server for TLS (SSLRequest) unless `sslmode=disable`, and shakes hands if it
/// agrees; refuses to go on in the clear when the mode requires TLS.
async fn secure(
    mut tcp: TcpStream,
    cfg: &ReplicationConfig,
) -> Result<Box<dyn Transport>, ConnError> {
    let Some(tls_config) = tls::client_config(cfg.ssl_mode, cfg.ssl_root_cert.as_ref())
        .map_err(|e| ConnError::Tls(e.to_string()))?
    else {
        return Ok(Box::new(tcp));
    };
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let name = ServerName::try_from(cfg.host.clone())
                .map_err(|e| ConnError::Tls(format!("server name {:?}: {e}", cfg.host)))?;
            let stream = tokio_rustls::TlsConnector::from(tls_config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    // A certificate the mode rejects is final; a cut connection is not.
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        ConnError::Tls(format!("handshake with {}: {e}", cfg.host))
                    } else {
                        ConnError::Io(e)
                    }
                })?;
            Ok(Box::new(stream))
        }
        b'N' if !cfg.ssl_mode.required() => Ok(Box::new(tcp)),
        b'N' => Err(ConnError::Tls(format!(
            "the server at {}:{} does not accept TLS, and sslmode={} requires it",
            cfg.host,
            cfg.port,
            match cfg.ssl_mode {
                SslMode::VerifyCa => "verify-ca",
                SslMode::VerifyFull => "verify-full",
                _ => "require",
            }
        ))),
        other => Err(ConnError::Protocol(format!(
            "unexpected answer {other:#x} to the TLS request"
        ))),
    }
}

impl ReplicationConnection {
    /// Connects with `replication=database` and authenticates.
    pub async fn connect(cfg: &ReplicationConfig) -> Result<Self, ConnError> {
        let stream = TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|source| ConnError::Connect {
                host: cfg.host.clone(),
                port: cfg.port,
                source,
            })?;
        stream.set_nodelay(true)?;
        let stream = secure(stream, cfg).await?;
        let (r, w) = tokio::io::split(stream);
        let mut conn = Self {
            reader: BufReader::with_capacity(256 * 1024, r),
            writer: w,
            buf: BytesMut::with_capacity(256 * 1024),
            out: BytesMut::with_capacity(1024),
        };
        let params = [
            ("user", cfg.user.as_str()),
            ("database", cfg.database.as_str()),
            ("replication", "database"),
            ("application_name", cfg.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.out)?;
        conn.flush().await?;
        conn.authenticate(cfg).await?;
        // Parameter statuses and key data until the server is ready.
        loop {
            match conn.read_message().await? {
                Message::ReadyForQuery(_) => return Ok(conn),
                Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                _ => {}
            }
        }
    }

    async fn authenticate(&mut self, cfg: &ReplicationConfig) -> Result<(), ConnError> {
        let password = || {
            cfg.password.as_deref().ok_or_else(|| {
                ConnError::Auth("the server asks for a password and the URL has none".into())
            })
        };
        loop {
            match self.read_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?.as_bytes(), &mut self.out)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(cfg.user.as_bytes(), password()?.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(m) = mechanisms.next()? {
                        scram_offered |= m == sasl::SCRAM_SHA_256;
                    }
                    if !scram_offered {
                        return Err(ConnError::Auth("the server offers no SCRAM-SHA-256".into()));
                    }
                    let mut scram = sasl::ScramSha256::new(
                        password()?.as_bytes(),
                        sasl::ChannelBinding::unsupported(),
                    );
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        scram.message(),
                        &mut self.out,
                    )?;
                    self.flush().await?;
                    match self.read_message().await? {
                        Message::AuthenticationSaslContinue(body) => {
                            scram
                                .update(body.data())
                                .map_err(|e| ConnError::Auth(e.to_string()))?;
                        }
                        Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                        _ => return Err(ConnError::Protocol("expected SASL continue".into())),
                    }
                    frontend::sasl_response(scram.message(), &mut self.out)?;
                    self.flush().await?;
                    match self.read_message().await? {
                        Message::AuthenticationSaslFinal(body) => {
                            scram
                                .finish(body.data())
                                .map_err(|e| ConnError::Auth(e.to_string()))?;
                        }
                        Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                        _ => return Err(ConnError::Protocol("expected SASL final".into())),
                    }
                }
                Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                _ => return Err(ConnError::Auth("unsupported authentication method".into())),
            }
        }
    }

    /// Runs one statement of the replication grammar or SQL; returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<TextRow>, ConnError> {
        frontend::query(sql, &mut self.out)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message().await? {
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::new();
                    while let Some(range) = ranges.next()? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(server_error(body.fields())),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Sends START_REPLICATION (or any command answered with CopyBoth) and waits for the
    /// server to switch to streaming.
    pub async fn start_copy_both(&mut self, sql: &str) -> Result<(), ConnError> {
        frontend::query(sql, &mut self.out)?;
        self.flush().await?;
        loop {
            // CopyBothResponse ('W') is not among postgres-protocol's backend messages.
            if self.peek_tag().await? == b'W' {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let _ = self.buf.split_to(1 + len as usize);
                return Ok(());
            }
            match self.read_message().await? {
                Message::ErrorResponse(body) => {
                    let err = server_error(body.fields());
                    // Drain to ReadyForQuery so the connection stays usable.
                    while !matches!(self.read_message().await?, Message::ReadyForQuery(_)) {}
                    return Err(err);
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                _ => return Err(ConnError::Protocol("expected CopyBothResponse".into())),
            }
        }
    }

    /// The next CopyData payload of the stream; `None` when the server ends the copy.
    pub async fn recv_copy_data(&mut self) -> Result<Option<Bytes>, ConnError> {
        loop {
            match self.read_message().await? {
                Message::CopyData(body) => return Ok(Some(body.into_bytes())),
                Message::CopyDone => return Ok(None),
                Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                _ => {
                    return Err(ConnError::Protocol(
                        "unexpected message in the stream".into(),
                    ))
                }
            }
        }
    }

    /// Sends one CopyData message (a standby status update).
    pub async fn send_copy_data(&mut self, data: Bytes) -> Result<(), ConnError> {
        frontend::CopyData::new(data)?.write(&mut self.out);
        self.flush().await
    }

    /// Ends the copy from our side and the session (best effort).
    pub async fn close(mut self) {
        frontend::copy_done(&mut self.out);
        frontend::terminate(&mut self.out);
        let _ = self.flush().await;
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        self.writer.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// The tag of the next complete message, left in the buffer.
    async fn peek_tag(&mut self) -> Result<u8, ConnError> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                if len < 4 {
                    return Err(ConnError::Protocol("invalid message length".into()));
                }
                if self.buf.len() > len as usize {
                    return Ok(self.buf[0]);
                }
            }
            self.buf.reserve(64 * 1024);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }

    async fn read_message(&mut self) -> Result<Message, ConnError> {
        loop {
            if let Some(msg) = Message::parse(&mut self.buf)? {
                return Ok(msg);
            }
            self.buf.reserve(64 * 1024);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }
}

fn server_error(mut fields: postgres_protocol::message::backend::ErrorFields<'_>) -> ConnError {
    let mut code = String::new();
    let mut message = String::new();
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    ConnError::Server { code, message }
}
