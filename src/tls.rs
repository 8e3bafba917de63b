//! TLS for the blocking clients the appliance writes itself (ClickHouse's native
//! protocol): rustls with the ring provider, trust from a CA file or the system's
//! roots, an optional client certificate, and a socket the connection's buffered
//! reader and writer can share.
//!
//! ```text
//!   [clickhouse] tls, tls_ca_file, tls_cert_file, tls_key_file, tls_server_name
//!        │ Settings::client (once, at start: files read and checked here)
//!        ▼
//!   Client ── connect(tcp) ── handshake (to completion, errors named) ──► Socket::Tls
//!                                                     BufReader ◄──┴──► BufWriter
//! ```
//!
//! A certificate that does not verify, a server that does not speak TLS, or a TLS
//! client on a plaintext port each end the connect with one line naming the server
//! and the reason; there is never a fallback to plaintext. The two halves of a TLS
//! socket share one rustls stream behind a mutex: one thread uses a connection, so
//! the lock is never contended, and it is taken once per buffered read or write, not
//! per message.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// How one server is reached over TLS, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// TLS on.
    pub enabled: bool,
    /// PEM file of the CA(s) to trust; empty: the system's roots.
    pub ca_file: String,
    /// PEM client certificate chain, for servers that ask for one; empty: none.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// The name the server's certificate must carry; empty: the host connected to.
    pub server_name: String,
}

/// Why TLS could not be set up or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file could not be used.
    #[error("{key} {path}: {reason}")]
    File {
        /// The config key naming the file.
        key: String,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The name to verify is not a DNS name or IP address.
    #[error("{key} {name:?} is not a host name or IP address")]
    Name {
        /// The config key (or the host key).
        key: String,
        /// The name.
        name: String,
    },
    /// rustls refused the configuration (a key that does not match its certificate).
    #[error("{0}")]
    Config(String),
}

/// A ready client side: the rustls config and the name to verify.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Client")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Client {
    /// The rustls configuration, for connectors that build their own streams.
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// Connects a PostgreSQL client: plaintext when `tls` is off; with it on, TLS is
/// required (`sslmode=require`, never a plaintext fallback) and the certificate is
/// verified against `tls.ca_file` for the URL's host (verify-full). Errors are the
/// driver's, or a TLS setup error as text.
pub fn connect_postgres(
    pg: &mut postgres::Config,
    tls: &Settings,
) -> Result<postgres::Client, ConnectError> {
    if !tls.enabled {
        return pg.connect(postgres::NoTls).map_err(ConnectError::Postgres);
    }
    let host = pg
        .get_hosts()
        .iter()
        .find_map(|h| match h {
            postgres::config::Host::Tcp(name) => Some(name.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let client = tls
        .client("postgres", &host)
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .ok_or_else(|| ConnectError::Tls("TLS is off".to_owned()))?;
    pg.ssl_mode(postgres::config::SslMode::Require);
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*client.config).clone());
    // A TLS failure (an untrusted CA, a refused client certificate) is named by what
    // it means; anything else stays the driver's own error.
    pg.connect(connector)
        .map_err(|e| explain(&e).map_or(ConnectError::Postgres(e), ConnectError::Tls))
}

/// Why [`connect_postgres`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TLS could not be set up (a file), or the handshake failed (what it means).
    #[error("TLS: {0}")]
    Tls(String),
    /// The driver's error (connect, handshake, certificate, authentication), shown
    /// with the server's message and causes: the driver's own text is often only
    /// "db error".
    #[error("{}", crate::refdata::with_causes(.0))]
    Postgres(postgres::Error),
}

impl Settings {
    /// The client for `host`, or `None` when TLS is off. `section` prefixes the keys in
    /// messages (`clickhouse` → `clickhouse.tls_ca_file`).
    pub fn client(&self, section: &str, host: &str) -> Result<Option<Client>, TlsError> {
        if !self.enabled {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots(section, &self.ca_file)?);
        let config = if self.cert_file.is_empty() {
            builder.with_no_client_auth()
        } else {
            let key = format!("{section}.tls_cert_file");
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&self.cert_file)
                    .and_then(|certs| certs.collect())
                    .map_err(|e| file_error(&key, &self.cert_file, e.to_string()))?;
            if chain.is_empty() {
                return Err(file_error(
                    &key,
                    &self.cert_file,
                    "holds no PEM certificate".into(),
                ));
            }
            let key_key = format!("{section}.tls_key_file");
            let private = PrivateKeyDer::from_pem_file(&self.key_file)
                .map_err(|e| file_error(&key_key, &self.key_file, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| TlsError::Config(format!("{key} and {key_key}: {e}")))?
        };
        let (name_key, name) = if self.server_name.is_empty() {
            (format!("{section}.host"), host)
        } else {
            (
                format!("{section}.tls_server_name"),
                self.server_name.as_str(),
            )
        };
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| TlsError::Name {
            key: name_key,
            name: name.to_owned(),
        })?;
        Ok(Some(Client {
            config: Arc::new(config),
            server_name,
        }))
    }
}

fn file_error(key: &str, path: &str, reason: String) -> TlsError {
    TlsError::File {
        key: key.to_owned(),
        path: path.to_owned(),
        reason,
    }
}

/// The CAs in `ca_file`, or the system's roots when it is empty.
fn roots(section: &str, ca_file: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if ca_file.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(TlsError::Config(format!(
                "{section}.tls is on with no {section}.tls_ca_file, and the system has no CA certificates; name the server's CA in {section}.tls_ca_file"
            )));
        }
        return Ok(roots);
    }
    let key = format!("{section}.tls_ca_file");
    if !Path::new(ca_file).is_file() {
        return Err(file_error(&key, ca_file, "is not a readable file".into()));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| file_error(&key, ca_file, e.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(file_error(
            &key,
            ca_file,
            "holds no usable PEM certificate".into(),
        ));
    }
    Ok(roots)
}

/// A connected socket, plain or TLS; `try_clone` gives the other half of the same
/// connection.
pub enum Socket {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, both halves sharing the stream.
    Tls(Arc<Mutex<StreamOwned<ClientConnection, TcpStream>>>),
}

impl Socket {
    /// `tcp` as is, or after a completed TLS handshake with `tls`. A failed handshake
    /// is an `InvalidData` or `ConnectionAborted` error whose text says why (see
    /// [`describe`]).
    pub fn open(tcp: TcpStream, tls: Option<&Client>) -> io::Result<Socket> {
        let Some(tls) = tls else {
            return Ok(Socket::Plain(tcp));
        };
        let connection = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, describe(&e)))?;
        let mut stream = StreamOwned::new(connection, tcp);
        // Bound: each pass moves handshake bytes or fails (socket timeouts apply).
        while stream.conn.is_handshaking() {
            if let Err(error) = stream.conn.complete_io(&mut stream.sock) {
                return Err(handshake_error(error));
            }
        }
        Ok(Socket::Tls(Arc::new(Mutex::new(stream))))
    }

    /// The other half of the same connection.
    pub fn try_clone(&self) -> io::Result<Socket> {
        match self {
            Socket::Plain(tcp) => tcp.try_clone().map(Socket::Plain),
            Socket::Tls(stream) => Ok(Socket::Tls(stream.clone())),
        }
    }

    /// Whether this is a TLS socket.
    pub fn is_tls(&self) -> bool {
        matches!(self, Socket::Tls(_))
    }

    /// Sets the read timeout of the TCP socket underneath.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Socket::Plain(tcp) => tcp.set_read_timeout(timeout),
            Socket::Tls(stream) => locked(stream, |s| s.sock.set_read_timeout(timeout)),
        }
    }

    /// Upgrades a plain socket to TLS in place (protocols that start in plaintext, as
    /// NATS does with its INFO). A TLS socket is left as it is.
    pub fn upgrade(&mut self, tls: &Client) -> io::Result<()> {
        if let Socket::Plain(tcp) = self {
            // The clone shares the connection; the original handle closes nothing.
            *self = Socket::open(tcp.try_clone()?, Some(tls))?;
        }
        Ok(())
    }
}

fn locked<T>(
    stream: &Mutex<StreamOwned<ClientConnection, TcpStream>>,
    work: impl FnOnce(&mut StreamOwned<ClientConnection, TcpStream>) -> io::Result<T>,
) -> io::Result<T> {
    // A poisoned lock means the other half panicked mid-call; the stream is unusable.
    let mut guard = stream
        .lock()
        .map_err(|_| io::Error::other("TLS stream poisoned"))?;
    work(&mut guard)
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.read(buf),
            // Under TLS 1.3 a server judges the client certificate after the client
            // has finished its side of the handshake: the refusal is an alert on the
            // first read, named here like a handshake failure.
            Socket::Tls(stream) => locked(stream, |s| s.read(buf)).map_err(named_tls_error),
        }
    }
}

/// What a TLS alert from the server means, by the alert's name as rustls spells it.
fn describe_alert(name: &str) -> String {
    match name {
        "CertificateRequired" => "the server requires a client certificate: set tls_cert_file and tls_key_file to one signed by a CA it trusts".to_owned(),
        "BadCertificate" | "UnknownCA" | "CertificateUnknown" | "UnsupportedCertificate"
        | "CertificateExpired" | "CertificateRevoked" | "AccessDenied" => format!(
            "the server refused the client certificate ({name}): tls_cert_file must be current and signed by a CA the server trusts"
        ),
        "HandshakeFailure" => "the server ended the TLS handshake (HandshakeFailure): no protocol or cipher in common, or it requires a client certificate (set tls_cert_file and tls_key_file)".to_owned(),
        other => format!("the server sent the TLS alert {other}"),
    }
}

/// [`explain`] for a client that keeps only the text of the TLS error (redis-rs turns
/// it into a string): a server's alert, as rustls prints it, named by what it means.
pub fn explain_text(text: &str) -> Option<String> {
    const ALERT: &str = "received fatal alert: ";
    let at = text.find(ALERT)? + ALERT.len();
    let name: String = text[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!name.is_empty()).then(|| describe_alert(&name))
}

/// What a TLS failure somewhere in `error`'s source chain means for an operator (the
/// text of [`describe`]), or `None` when no rustls error is in the chain.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // io::Error's source() skips the error it wraps; look inside it.
        if let Some(tls) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(describe(tls));
        }
        next = error.source();
    }
    None
}

/// An I/O error that carries a rustls error, with its text replaced by what it means
/// ([`describe`]); any other error as it is.
fn named_tls_error(error: io::Error) -> io::Error {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => io::Error::new(error.kind(), describe(tls)),
        None => error,
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.write(buf),
            Socket::Tls(stream) => locked(stream, |s| s.write(buf)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(tcp) => tcp.flush(),
            Socket::Tls(stream) => locked(stream, |s| s.flush()),
        }
    }
}

/// A handshake failure as an error whose text names the cause and the fix.
fn handshake_error(error: io::Error) -> io::Error {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .map(describe);
    match inner {
        Some(text) => io::Error::new(io::ErrorKind::InvalidData, text),
        None => match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the server closed the connection during the TLS handshake ({error}); is the port a TLS port?"),
            ),
            _ => error,
        },
    }
}

/// What a rustls error means for an operator.
fn describe(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(cause) => {
            let why = match cause {
                C::UnknownIssuer => "is not signed by a trusted CA (check tls_ca_file)".to_owned(),
                C::Expired | C::ExpiredContext { .. } => "has expired".to_owned(),
                C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet (check the clocks)".to_owned(),
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "does not name the host connected to (set tls_server_name to a name it carries)".to_owned()
                }
                C::Revoked => "is revoked".to_owned(),
                C::BadSignature => "has a bad signature".to_owned(),
                other => format!("does not verify ({other:?})"),
            };
            format!("the server's certificate {why}")
        }
        rustls::Error::AlertReceived(alert) => describe_alert(&format!("{alert:?}")),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer in TLS: the port looks like a plaintext one (use the TLS port, or tls = false)".to_owned()
        }
        other => format!("{other}"),
    }
}
