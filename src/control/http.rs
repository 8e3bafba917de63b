//! A deliberately small HTTP/1.1 server for the control endpoint: one thread, one mio
//! poll, GET only, `Connection: close`, every limit fixed so no client can hold the
//! thread or its memory.
//!
//! ```text
//!   listener ──accept──► conn (≤ CONNECTIONS_MAX; past that: 503 and close)
//!   conn: read ≤ HEAD_BYTES_MAX until "\r\n\r\n" ──parse──► route(path) ──► write, close
//!         too long: 431 · not HTTP: 400 · not GET/HEAD: 405 · unknown path: 404 (route)
//!         head not complete within HEAD_DEADLINE: 408 · response not taken within
//!         CONN_DEADLINE: dropped
//! ```
//!
//! The request parser is a pure function ([`parse_head`]); the loop only moves bytes.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// Open connections at most; a 1,000-connection burst gets 503s past this.
pub const CONNECTIONS_MAX: usize = 64;

/// Longest request head (request line and headers).
pub const HEAD_BYTES_MAX: usize = 8 * 1024;

/// Time a client has to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);

/// Time a connection may live at all (a client that does not read its response).
pub const CONN_DEADLINE: Duration = Duration::from_secs(10);

/// Longest wait in poll before deadlines and the stop flag are looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

const LISTENER: Token = Token(usize::MAX);

/// The token of [`Server::waker`]'s wake-ups.
const WAKER: Token = Token(usize::MAX - 1);

/// A response: status, content type, body.
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }
}

/// What the server counted, for tests and metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests answered 2xx.
    pub ok_total: AtomicU64,
    /// Requests answered 4xx (bad, unknown, too large, too slow).
    pub refused_total: AtomicU64,
    /// Connections turned away with 503 (too many open).
    pub busy_total: AtomicU64,
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    /// `GET` or `HEAD`.
    pub method: &'a str,
    /// The path, query string cut off.
    pub path: &'a str,
}

/// Reads a request head; `Err(status)` says how to refuse it.
pub fn parse_head(head: &[u8]) -> Result<Head<'_>, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let line = text.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(400);
    }
    if method != "GET" && method != "HEAD" {
        return Err(
            if method.bytes().all(|b| b.is_ascii_uppercase()) && !method.is_empty() {
                405
            } else {
                400
            },
        );
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Head { method, path })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn encode(response: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    out
}

struct Conn {
    stream: TcpStream,
    head: Vec<u8>,
    opened: Instant,
    /// The response once decided, and how much of it went out.
    out: Option<(Vec<u8>, usize)>,
}

/// The server: a bound listener, until [`Server::run`] returns.
pub struct Server {
    listener: TcpListener,
    poll: Poll,
    /// Wakes the poll, so a stop is seen at once rather than at the next interval.
    waker: Arc<Waker>,
}

impl Server {
    /// Binds `addr` (port 0: any free port).
    pub fn bind(addr: SocketAddr) -> std::io::Result<Server> {
        let mut listener = TcpListener::bind(addr)?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            listener,
            poll,
            waker,
        })
    }

    /// What a stop wakes the serving thread with (after setting its flag).
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The address bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop`; `route` answers a path (on this thread).
    pub fn run(
        mut self,
        stop: &AtomicBool,
        stats: &ServerStats,
        mut route: impl FnMut(&str) -> Response,
    ) {
        let mut events = Events::with_capacity(256);
        let mut conns: Vec<Option<Conn>> = (0..CONNECTIONS_MAX).map(|_| None).collect();
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.poll.poll(&mut events, Some(POLL_INTERVAL)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "Control endpoint poll failed; it stops");
                    return;
                }
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                if event.token() == LISTENER {
                    self.accept_all(&mut conns, stats);
                    continue;
                }
                let i = event.token().0;
                if let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) {
                    if !step(conn, stats, &mut route) {
                        self.close(&mut conns[i]);
                    }
                }
            }
            let now = Instant::now();
            for slot in conns.iter_mut() {
                let Some(conn) = slot else { continue };
                let age = now.duration_since(conn.opened);
                if conn.out.is_none() && age >= HEAD_DEADLINE {
                    stats.refused_total.fetch_add(1, Ordering::Relaxed);
                    conn.out = Some((
                        encode(&Response::text(408, "request head too slow\n"), false),
                        0,
                    ));
                    if !flush(conn) {
                        self.close(slot);
                    }
                } else if age >= CONN_DEADLINE {
                    self.close(slot);
                }
            }
        }
    }

    fn accept_all(&mut self, conns: &mut [Option<Conn>], stats: &ServerStats) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the next poll tries again.
                    tracing::warn!(error = %e, "Control endpoint accept failed");
                    return;
                }
            };
            let Some(i) = conns.iter().position(Option::is_none) else {
                stats.busy_total.fetch_add(1, Ordering::Relaxed);
                // Best effort: a fresh socket's send buffer takes these bytes at once.
                let _ = stream.write(&encode(
                    &Response::text(503, "too many connections\n"),
                    false,
                ));
                continue;
            };
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            conns[i] = Some(Conn {
                stream,
                head: Vec::with_capacity(512),
                opened: Instant::now(),
                out: None,
            });
        }
    }

    fn close(&self, slot: &mut Option<Conn>) {
        if let Some(mut conn) = slot.take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

/// Reads what is there, answers once the head is complete, writes; false when the
/// connection is done (answered, or gone).
fn step(conn: &mut Conn, stats: &ServerStats, route: &mut impl FnMut(&str) -> Response) -> bool {
    if conn.out.is_none() {
        let mut buf = [0u8; 2048];
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    conn.head.extend_from_slice(&buf[..n]);
                    if conn.head.len() > HEAD_BYTES_MAX {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        let end = conn.head.windows(4).position(|w| w == b"\r\n\r\n");
        let response = match end {
            None if conn.head.len() > HEAD_BYTES_MAX => {
                Some((Response::text(431, "request head too large\n"), false))
            }
            None => None,
            Some(end) if end + 4 > HEAD_BYTES_MAX => {
                Some((Response::text(431, "request head too large\n"), false))
            }
            Some(end) => Some(match parse_head(&conn.head[..end + 4]) {
                Ok(head) => (route(head.path), head.method == "HEAD"),
                Err(status) => (Response::text(status, "bad request\n"), false),
            }),
        };
        let Some((response, head_only)) = response else {
            return true;
        };
        let counter = if response.status < 400 {
            &stats.ok_total
        } else {
            &stats.refused_total
        };
        counter.fetch_add(1, Ordering::Relaxed);
        conn.out = Some((encode(&response, head_only), 0));
    }
    flush(conn)
}

/// Writes what the socket takes; false once all is written (or it failed).
fn flush(conn: &mut Conn) -> bool {
    let Some((out, written)) = conn.out.as_mut() else {
        return true;
    };
    while *written < out.len() {
        match conn.stream.write(&out[*written..]) {
            Ok(0) => return false,
            Ok(n) => *written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    let _ = conn.stream.flush();
    false
}

/// Starts the server thread.
pub fn spawn(
    server: Server,
    stop: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    route: impl FnMut(&str) -> Response + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    crate::runtime::spawn("control", None, move || server.run(&stop, &stats, route))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_or_say_how_to_refuse() {
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Head {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(parse_head(b"\x16\x03\x01garbage\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"GET metrics HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"GET /a b HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"GET / SPDY/3\r\n\r\n"), Err(400));
    }
}
