//! One blocking NATS connection over `std::net::TcpStream`: handshake, a fixed read
//! buffer parsed in place, a buffered writer, and request/reply for the JetStream API.
//!
//! ```text
//!   socket ──read()──► read_buf [head..tail) ──wire::parse──► ServerOp ──► f(op)  (no copy)
//!                       fixed 4 MiB, compacted,                 PING is answered here
//!                       never reallocated
//!   publish/subscribe ──► write_buf (pre-sized) ──flush()/64 KiB──► socket
//! ```
//!
//! Back-pressure: the socket is the edge. `poll` reads only when the caller asks, so a
//! busy consumer leaves bytes in the kernel and then in the server, which for JetStream
//! pull consumers is bounded by the pull size and `max_ack_pending`. Writes block for at
//! most the I/O timeout, then fail: a dead server is an error, never a hang.
//!
//! What this must never do: allocate per message, wait without a deadline.
#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::error::NatsError;
use super::wire::{self, ConnectOptions, ServerOp, CONTROL_LINE_BYTES_MAX};
use crate::tls::Socket;

/// Read buffer size. It must hold one whole operation, so it bounds the largest message
/// we accept: the server default `max_payload` is 1 MiB, its ceiling 64 MiB; 4 MiB holds
/// the default four times over and ~12,000 400-byte ticks per read.
pub const READ_BUFFER_BYTES: usize = 4 << 20;

/// Buffered writes go out once this many bytes are queued: ~160 400-byte ticks, large
/// enough to amortise the syscall, small enough to stay in L2.
pub const WRITE_FLUSH_BYTES: usize = 64 << 10;

/// Most operations `request` passes over while waiting for its answer before it gives up;
/// API requests happen before consuming starts, so anything else is a stray.
const STRAY_OPS_MAX: usize = 100_000;

/// What the server said about itself in `INFO`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    /// Unique id of the server.
    pub server_id: String,
    /// Server version, e.g. `2.9.10`.
    pub version: String,
    /// Largest payload the server accepts and delivers, in bytes.
    pub max_payload: usize,
    /// Whether the server supports headers (needed for JetStream status messages).
    pub headers: bool,
    /// Whether JetStream is enabled.
    pub jetstream: bool,
    /// Protocol version.
    pub proto: u32,
    /// The server takes TLS connections only.
    pub tls_required: bool,
}

/// A blocking NATS client connection.
pub struct NatsConn {
    /// The socket (TLS after the INFO when asked for), with read and write timeouts set.
    stream: Socket,
    /// Bytes read from the socket; `[head..tail)` is not yet parsed. Allocated once.
    read_buf: Box<[u8]>,
    /// Start of the unparsed bytes; advanced by `drain`, reset by compaction.
    read_head: usize,
    /// End of the bytes read; advanced by `fill`.
    read_tail: usize,
    /// Encoded operations not yet written; capacity fixed at connect.
    write_buf: Vec<u8>,
    /// The server's INFO at connect.
    info: ServerInfo,
    /// Largest message we accept or send: the server's `max_payload`.
    payload_bytes_max: usize,
    /// Next subscription id; ids are never reused on a connection.
    next_sid: u64,
    /// Unique prefix of this connection's inboxes, `_INBOX.<random>`.
    inbox_prefix: String,
    /// Subscription id of the request inbox wildcard, once `request` first runs.
    request_sid: Option<u64>,
    /// Counter making each request's reply subject unique.
    next_request: u64,
    /// The read timeout currently set on the socket, to skip the syscall when unchanged.
    read_timeout: Duration,
    /// Timeout of every write and of the handshake.
    io_timeout: Duration,
}

impl std::fmt::Debug for NatsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConn")
            .field("server", &self.info.server_id)
            .field("version", &self.info.version)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsConn {
    /// Connects to `url` (`nats://[user:pass@]host[:port]`), reads INFO, sends CONNECT and
    /// PING, and waits for PONG; `-ERR` (e.g. bad credentials) is an error. `timeout`
    /// bounds the TCP connect, the handshake, and every later write.
    pub fn connect(url: &str, timeout: Duration) -> Result<NatsConn, NatsError> {
        Self::connect_with(url, timeout, None)
    }

    /// [`NatsConn::connect`] with TLS settings: `tls` (from `nats.tls*`) upgrades the
    /// connection after the server's INFO, as NATS does. A `tls://` URL without them
    /// trusts the system's CAs; a server that requires TLS refuses a plaintext client
    /// with an error saying so.
    pub fn connect_with(
        url: &str,
        timeout: Duration,
        tls: Option<&crate::tls::Client>,
    ) -> Result<NatsConn, NatsError> {
        let parsed = url::Url::parse(url).map_err(|e| NatsError::BadUrl {
            url: crate::config::redact_url(url),
            reason: e.to_string(),
        })?;
        if parsed.scheme() != "nats" && parsed.scheme() != "tls" {
            return Err(NatsError::BadUrl {
                url: crate::config::redact_url(url),
                reason: format!(
                    "scheme {}:// is not one of nats:// and tls://",
                    parsed.scheme()
                ),
            });
        }
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
        let default_tls;
        let tls = match tls {
            Some(tls) => Some(tls),
            None if parsed.scheme() == "tls" => {
                default_tls = crate::tls::Settings {
                    enabled: true,
                    ..crate::tls::Settings::default()
                }
                .client("nats", &host)
                .map_err(|e| NatsError::Handshake {
                    reason: format!("TLS: {e}"),
                })?;
                default_tls.as_ref()
            }
            None => None,
        };
        let port = parsed.port().unwrap_or(4222);
        let address = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|source| NatsError::Resolve {
                host: host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| NatsError::Resolve {
                host: host.clone(),
                source: std::io::Error::new(ErrorKind::NotFound, "no address"),
            })?;
        let stream = TcpStream::connect_timeout(&address, timeout)
            .map_err(|source| NatsError::Connect { address, source })?;
        let io = |source| NatsError::Io {
            during: "setup",
            source,
        };
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut conn = NatsConn {
            stream: Socket::Plain(stream),
            read_buf: vec![0u8; READ_BUFFER_BYTES].into_boxed_slice(),
            read_head: 0,
            read_tail: 0,
            write_buf: Vec::new(),
            info: ServerInfo::default(),
            payload_bytes_max: READ_BUFFER_BYTES - CONTROL_LINE_BYTES_MAX - 4,
            next_sid: 1,
            inbox_prefix: format!("_INBOX.{:016x}", random_u64()),
            request_sid: None,
            next_request: 1,
            read_timeout: timeout,
            io_timeout: timeout,
        };
        conn.handshake(&parsed, timeout, tls)?;
        Ok(conn)
    }

    /// Reads INFO, checks its limits, sends CONNECT + PING, and waits for PONG.
    fn handshake(
        &mut self,
        url: &url::Url,
        timeout: Duration,
        tls: Option<&crate::tls::Client>,
    ) -> Result<(), NatsError> {
        let deadline = Instant::now() + timeout;
        let mut info: Option<Result<ServerInfo, String>> = None;
        while info.is_none() {
            let left = remaining(deadline, "the server's INFO", timeout)?;
            self.poll(left, |op| {
                info = Some(match op {
                    ServerOp::Info(json) => {
                        serde_json::from_slice(json).map_err(|e| format!("bad INFO JSON: {e}"))
                    }
                    other => Err(format!("expected INFO first, got {other:?}")),
                });
            })?;
        }
        let info = info
            .expect("loop ends with INFO")
            .map_err(|reason| NatsError::Handshake { reason })?;
        if info.max_payload == 0 || info.max_payload > self.payload_bytes_max {
            return Err(NatsError::Handshake {
                reason: format!(
                    "server max_payload {} is outside 1..={} bytes this client's read buffer holds; lower max_payload in nats-server.conf",
                    info.max_payload, self.payload_bytes_max
                ),
            });
        }
        match (tls, info.tls_required) {
            (None, true) => {
                return Err(NatsError::Handshake {
                    reason:
                        "the server requires TLS; use a tls:// URL (nats.tls_ca_file names its CA)"
                            .to_owned(),
                })
            }
            (Some(tls), _) => {
                // Nothing follows INFO until the client speaks: the buffer is empty.
                self.read_head = 0;
                self.read_tail = 0;
                self.stream.upgrade(tls).map_err(|e| NatsError::Handshake {
                    reason: format!("TLS: {e}"),
                })?;
            }
            (None, false) => {}
        }
        self.payload_bytes_max = info.max_payload;
        self.info = info;
        // Worst case queued at once: a flush's worth plus one largest message and its line.
        self.write_buf = Vec::with_capacity(WRITE_FLUSH_BYTES + self.payload_bytes_max + 1024);
        let user = percent_decode(url.username());
        let pass = url.password().map(percent_decode);
        let options = ConnectOptions {
            name: "alphapt-storage",
            user: (!user.is_empty()).then_some(user.as_str()),
            pass: pass.as_deref(),
            tls_required: self.stream.is_tls(),
        };
        wire::encode_connect(&mut self.write_buf, &options);
        self.round_trip(deadline.saturating_duration_since(Instant::now()))
    }

    /// The server's INFO at connect.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// Largest payload the server accepts, in bytes.
    pub fn payload_bytes_max(&self) -> usize {
        self.payload_bytes_max
    }

    /// A new unique inbox subject of this connection, `_INBOX.<random>.<name>`.
    pub fn new_inbox(&mut self, name: &str) -> String {
        self.next_request += 1;
        format!("{}.{}{}", self.inbox_prefix, name, self.next_request)
    }

    /// Hands every complete operation in the read buffer to `f`, reading from the socket
    /// once (waiting at most `timeout`) if none is buffered. Answers `PING` itself.
    /// Returns how many operations `f` saw; 0 means the timeout passed or only part of
    /// an operation arrived, so callers wait against a deadline, not a count of polls.
    ///
    /// Queued writes are flushed before waiting, so a caller never waits on its own
    /// unsent request.
    pub fn poll<F: FnMut(ServerOp<'_>)>(
        &mut self,
        timeout: Duration,
        mut f: F,
    ) -> Result<usize, NatsError> {
        self.poll_held(timeout, |op| {
            f(op);
            true
        })
    }

    /// [`NatsConn::poll`] where `f` may hold an operation (return `false`): it stays in
    /// the read buffer, nothing after it is parsed, and the next call offers it again
    /// first. A call that held one returns at once without reading the socket: the
    /// caller makes room for it (back-pressure stays at the socket) and may write
    /// meanwhile, acknowledgements say.
    pub fn poll_held<F: FnMut(ServerOp<'_>) -> bool>(
        &mut self,
        timeout: Duration,
        mut f: F,
    ) -> Result<usize, NatsError> {
        let (seen, held) = self.drain(&mut f)?;
        if seen > 0 || held {
            return Ok(seen);
        }
        if !self.write_buf.is_empty() {
            self.flush()?;
        }
        if !self.fill(timeout)? {
            return Ok(0);
        }
        Ok(self.drain(&mut f)?.0)
    }

    /// Parses what is buffered; loops at most once per buffered operation. Returns the
    /// operations `f` took and whether it held one.
    fn drain<F: FnMut(ServerOp<'_>) -> bool>(
        &mut self,
        f: &mut F,
    ) -> Result<(usize, bool), NatsError> {
        let buf = &self.read_buf[..self.read_tail];
        let mut head = self.read_head;
        let mut seen = 0;
        let mut held = false;
        let mut pings = 0;
        let mut outcome = Ok(());
        // Loop bound: each pass consumes at least one byte of the buffered `[head..tail)`,
        // or ends (an operation held).
        loop {
            match wire::parse(&buf[head..], self.payload_bytes_max) {
                Ok(Some((op, used))) => {
                    debug_assert!(used > 0);
                    match op {
                        ServerOp::Ping => pings += 1,
                        other => {
                            if !f(other) {
                                held = true;
                                break;
                            }
                            seen += 1;
                        }
                    }
                    head += used;
                }
                Ok(None) => break,
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        // Ops handed out are consumed even if a later one is broken: never twice to `f`.
        self.read_head = head;
        if self.read_head == self.read_tail {
            self.read_head = 0;
            self.read_tail = 0;
        }
        outcome?;
        if pings > 0 {
            wire::encode_pong(&mut self.write_buf);
            self.flush()?;
        }
        Ok((seen, held))
    }

    /// One `read` into the free end of the buffer; `false` when it timed out.
    fn fill(&mut self, timeout: Duration) -> Result<bool, NatsError> {
        let capacity = self.read_buf.len();
        // Compact when the free tail is under a quarter: keeps reads large without
        // moving bytes on every call.
        if self.read_head > 0 && capacity - self.read_tail < capacity / 4 {
            self.read_buf.copy_within(self.read_head..self.read_tail, 0);
            self.read_tail -= self.read_head;
            self.read_head = 0;
        }
        if self.read_tail == capacity {
            return Err(NatsError::ReadBufferFull { bytes: capacity });
        }
        let timeout = timeout.max(Duration::from_micros(1));
        if timeout != self.read_timeout {
            self.stream
                .set_read_timeout(Some(timeout))
                .map_err(|source| NatsError::Io {
                    during: "read",
                    source,
                })?;
            self.read_timeout = timeout;
        }
        match self.stream.read(&mut self.read_buf[self.read_tail..]) {
            Ok(0) => Err(NatsError::Closed),
            Ok(bytes) => {
                self.read_tail += bytes;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(source) => Err(NatsError::Io {
                during: "read",
                source,
            }),
        }
    }

    /// Queues `PUB`; writes out once [`WRITE_FLUSH_BYTES`] are queued.
    #[inline]
    pub fn publish(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), NatsError> {
        if payload.len() > self.payload_bytes_max {
            return Err(NatsError::PayloadTooLarge {
                subject: String::from_utf8_lossy(subject).into_owned(),
                bytes: payload.len(),
                max: self.payload_bytes_max,
            });
        }
        wire::encode_pub(&mut self.write_buf, subject, reply, payload);
        if self.write_buf.len() >= WRITE_FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes out everything queued, waiting at most the I/O timeout per write.
    pub fn flush(&mut self) -> Result<(), NatsError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.write_buf);
        self.write_buf.clear();
        result.map_err(|source| NatsError::Io {
            during: "write",
            source,
        })
    }

    /// Subscribes to `subject` (in queue group `queue`, if any); returns the subscription id.
    pub fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> Result<u64, NatsError> {
        for name in std::iter::once(subject).chain(queue) {
            if !wire::is_valid_subject(name.as_bytes()) {
                return Err(NatsError::BadSubject {
                    subject: name.to_owned(),
                });
            }
        }
        let sid = self.next_sid;
        self.next_sid += 1;
        wire::encode_sub(
            &mut self.write_buf,
            subject.as_bytes(),
            queue.map(str::as_bytes),
            sid,
        );
        Ok(sid)
    }

    /// Ends subscription `sid`.
    pub fn unsubscribe(&mut self, sid: u64) -> Result<(), NatsError> {
        wire::encode_unsub(&mut self.write_buf, sid, None);
        Ok(())
    }

    /// Sends PING and waits for PONG: afterwards the server has processed everything
    /// sent before. Other operations arriving meanwhile are dropped (call it only while
    /// no subscription delivers). `-ERR` is an error.
    pub fn round_trip(&mut self, timeout: Duration) -> Result<(), NatsError> {
        wire::encode_ping(&mut self.write_buf);
        self.flush()?;
        let deadline = Instant::now() + timeout;
        let mut outcome: Option<Result<(), NatsError>> = None;
        while outcome.is_none() {
            let left = remaining(deadline, "PING", timeout)?;
            self.poll(left, |op| match op {
                ServerOp::Pong => outcome = Some(Ok(())),
                ServerOp::Err(text) => {
                    outcome = Some(Err(NatsError::Server {
                        message: String::from_utf8_lossy(text).into_owned(),
                    }))
                }
                _ => {}
            })?;
        }
        outcome.expect("loop ends with an outcome")
    }

    /// Publishes `payload` to `subject` with a unique reply inbox and waits at most
    /// `timeout` for the answer. For the JetStream API before consuming starts: other
    /// messages arriving meanwhile are dropped and counted in a debug log.
    pub fn request(
        &mut self,
        subject: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, NatsError> {
        let sid = match self.request_sid {
            Some(sid) => sid,
            None => {
                let sid = self.subscribe(&format!("{}.r.*", self.inbox_prefix), None)?;
                self.request_sid = Some(sid);
                sid
            }
        };
        self.next_request += 1;
        let reply = format!("{}.r.{}", self.inbox_prefix, self.next_request);
        if !wire::is_valid_subject(subject.as_bytes()) {
            return Err(NatsError::BadSubject {
                subject: subject.to_owned(),
            });
        }
        self.publish(subject.as_bytes(), Some(reply.as_bytes()), payload)?;
        self.flush()?;
        let deadline = Instant::now() + timeout;
        let mut answer: Option<Result<Reply, NatsError>> = None;
        let mut strays = 0usize;
        while answer.is_none() {
            let left = remaining(deadline, subject, timeout)?;
            self.poll(left, |op| match op {
                ServerOp::Msg(msg) if msg.sid == sid && msg.subject == reply.as_bytes() => {
                    answer = Some(Ok(Reply {
                        status: msg.status(),
                        description: String::from_utf8_lossy(msg.status_description()).into_owned(),
                        payload: msg.payload.to_vec(),
                    }));
                }
                ServerOp::Err(text) => {
                    answer = Some(Err(NatsError::Server {
                        message: String::from_utf8_lossy(text).into_owned(),
                    }))
                }
                _ => strays += 1,
            })?;
            if strays > STRAY_OPS_MAX {
                return Err(NatsError::Handshake {
                    reason: format!("{strays} unrelated messages arrived while waiting for {subject}; make API requests before consuming"),
                });
            }
        }
        if strays > 0 {
            tracing::debug!(
                strays,
                subject,
                "Dropped unrelated messages during a request"
            );
        }
        let reply = answer.expect("loop ends with an answer")?;
        if reply.status == Some(503) {
            return Err(NatsError::NoResponders {
                subject: subject.to_owned(),
            });
        }
        Ok(reply)
    }

    /// Timeout applied to writes.
    pub fn io_timeout(&self) -> Duration {
        self.io_timeout
    }
}

/// An owned answer to [`NatsConn::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Status code when the answer was a status message (e.g. 503 no responders).
    pub status: Option<u16>,
    /// Status description, empty when none.
    pub description: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Time left before `deadline`, or a timeout error naming `what`.
fn remaining(deadline: Instant, what: &str, total: Duration) -> Result<Duration, NatsError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(NatsError::Timeout {
            what: what.to_owned(),
            waited_ms: total.as_millis() as u64,
        });
    }
    Ok(left)
}

/// 64 random bits from the standard library's per-process hasher keys and the clock:
/// enough to keep inboxes of concurrent connections apart.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    hasher.write_u64(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// `%XX` escapes of URL user info decoded (invalid escapes kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (
            bytes[index],
            hex.and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    //! Pure helpers; the connection itself is tested against nats-server in tests/.
    use super::*;

    #[test]
    fn decodes_user_info() {
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
        assert_eq!(percent_decode(""), "");
    }

    #[test]
    fn refuses_bad_urls_without_showing_the_password() {
        let error =
            NatsConn::connect("http://u:secret@h:4222", Duration::from_millis(10)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("nats:// and tls://"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(NatsConn::connect("not a url", Duration::from_millis(10)).is_err());
    }
}
