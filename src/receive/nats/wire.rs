//! The NATS client protocol as bytes: a zero-copy parser of what the server sends and
//! encoders of what the client sends. Pure: no sockets, no clock, no allocation.
//!
//! ```text
//!   socket bytes ──► read buffer ──► parse(buf) ──► Some((ServerOp borrowing buf, used))
//!                                        │            None: an op is cut short, read more
//!                                        └──────────► Err(WireError): stream out of sync
//!   publish/subscribe ──► encode_*(&mut Vec<u8>) ──► write buffer ──► socket
//! ```
//!
//! Server → client operations (every control line ends in CRLF; fields are separated by
//! one or more spaces or tabs; operation names are case-insensitive):
//!
//! | operation | layout |
//! | --- | --- |
//! | `INFO` | `INFO {json}\r\n` |
//! | `MSG` | `MSG <subject> <sid> [reply-to] <#payload>\r\n<payload>\r\n` |
//! | `HMSG` | `HMSG <subject> <sid> [reply-to] <#header> <#total>\r\n<header><payload>\r\n`, `#total` = `#header` + `#payload` |
//! | header block | `NATS/1.0[ <status> <description>]\r\n(<name>: <value>\r\n)*\r\n` |
//! | `PING` / `PONG` / `+OK` | the word, then `\r\n` |
//! | `-ERR` | `-ERR '<message>'\r\n` |
//!
//! Client → server (what the encoders write):
//!
//! | operation | layout |
//! | --- | --- |
//! | `CONNECT` | `CONNECT {json}\r\n` |
//! | `PUB` | `PUB <subject> [reply-to] <#payload>\r\n<payload>\r\n` |
//! | `SUB` | `SUB <subject> [queue] <sid>\r\n` |
//! | `UNSUB` | `UNSUB <sid> [max-msgs]\r\n` |
//! | `PING` / `PONG` | the word, then `\r\n` |
//!
//! JetStream answers with status-only messages: an `HMSG` whose header block is
//! `NATS/1.0 404 No Messages`, `408 Request Timeout`, `409 Exceeded MaxAckPending`,
//! `100 Idle Heartbeat` or `503` (no responders) and whose payload is empty;
//! [`Msg::status`] exposes the code.
//!
//! Sources: the NATS client protocol reference
//! (docs.nats.io/reference/reference-protocols/nats-protocol), ADR-4 (headers and
//! status lines), and nats-server 2.9 `server/parser.go` (case-insensitive operation
//! names, tabs as separators, `MAX_CONTROL_LINE_SIZE`).
#![forbid(unsafe_code)]

/// Longest control line accepted before its CRLF, in bytes. The server's own limit for
/// client lines is 4 KiB; its `INFO` grows with `connect_urls` in a large cluster, so
/// server lines get 64 KiB. Past that, the peer is not a NATS server or the stream lost
/// sync, and waiting for more bytes would only fill the read buffer.
pub const CONTROL_LINE_BYTES_MAX: usize = 64 * 1024;

/// Most bytes of an offending line an error message quotes.
const QUOTE_BYTES_MAX: usize = 120;

/// Most whitespace-separated arguments of any server operation (`HMSG` with reply-to).
const ARGS_MAX: usize = 5;

/// One operation sent by the server, borrowing the bytes it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// `INFO`: the server's JSON description of itself.
    Info(&'a [u8]),
    /// `MSG` or `HMSG`: a delivered message.
    Msg(Msg<'a>),
    /// `PING`: the server checks we are alive; answer `PONG`.
    Ping,
    /// `PONG`: the answer to our `PING`.
    Pong,
    /// `+OK`: acknowledgement in verbose mode (we connect with verbose off).
    Ok,
    /// `-ERR`: the server's error message without the quotes.
    Err(&'a [u8]),
}

/// A delivered message; every slice points into the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    /// Subject it was published on (for JetStream pulls: the inbox of the request).
    pub subject: &'a [u8],
    /// Subscription id the server matched it to.
    pub sid: u64,
    /// Reply subject; for JetStream deliveries the `$JS.ACK...` subject to ack on.
    pub reply: Option<&'a [u8]>,
    /// The raw header block of an `HMSG`, from `NATS/1.0` to the blank line; `None` for `MSG`.
    pub headers: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

/// The header block's version line prefix (ADR-4).
const HEADER_VERSION: &[u8] = b"NATS/1.0";

impl<'a> Msg<'a> {
    /// The status code of a status message (`NATS/1.0 408 Request Timeout` → 408), or
    /// `None` for a message without headers or with plain headers.
    pub fn status(&self) -> Option<u16> {
        let rest = self.headers?.strip_prefix(HEADER_VERSION)?;
        let rest = rest.strip_prefix(b" ")?;
        let digits = rest.get(..3)?;
        let mut code = 0u16;
        for &digit in digits {
            if !digit.is_ascii_digit() {
                return None;
            }
            code = code * 10 + u16::from(digit - b'0');
        }
        Some(code)
    }

    /// The text after a status code (`No Messages`), empty when there is none.
    pub fn status_description(&self) -> &'a [u8] {
        let Some(headers) = self.headers else {
            return b"";
        };
        let line = first_line(headers);
        match line.get(HEADER_VERSION.len() + 4..) {
            Some(text) if self.status().is_some() => trim(text),
            _ => b"",
        }
    }

    /// The value of header `name` (case-insensitive), trimmed; the first if repeated.
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        let headers = self.headers?;
        // Skip the version line; each later line is `Name: value`. Bounded by the block.
        let mut rest = headers.get(first_line(headers).len() + 2..)?;
        while !rest.is_empty() {
            let line = first_line(rest);
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                if trim(&line[..colon]).eq_ignore_ascii_case(name) {
                    return Some(trim(&line[colon + 1..]));
                }
            }
            rest = rest.get(line.len() + 2..).unwrap_or(b"");
        }
        None
    }
}

/// Everything before the first CRLF (or the whole slice).
fn first_line(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .unwrap_or(bytes.len());
    &bytes[..end]
}

/// The slice without leading and trailing spaces and tabs.
fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Why the server's byte stream cannot be parsed. Each is fatal for the connection:
/// after it, nothing says where the next operation starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// No CRLF within [`CONTROL_LINE_BYTES_MAX`] bytes.
    #[error(
        "NATS control line longer than {max} bytes without CRLF (starts {start:?}); the peer \
         is not a NATS server or the stream lost sync: check the URL names a NATS client \
         port, then reconnect"
    )]
    LineTooLong {
        /// The limit.
        max: usize,
        /// The first bytes of the line, lossily as text.
        start: String,
    },
    /// A line that starts with no operation we know.
    #[error(
        "unknown NATS operation in line {line:?}; the peer speaks another protocol or the \
         stream lost sync: check the URL names a NATS client port, then reconnect"
    )]
    UnknownOp {
        /// The line, lossily as text, cut at 120 bytes.
        line: String,
    },
    /// A known operation with arguments that do not fit its layout.
    #[error("malformed NATS line {line:?}: {reason}; reconnect, and report the server version if it repeats")]
    Malformed {
        /// The line, lossily as text, cut at 120 bytes.
        line: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A message larger than the limit; refused before any slice or allocation.
    #[error(
        "NATS message of {bytes} bytes ({line:?}) exceeds the {max}-byte limit; the client \
         sizes it from the server's max_payload, so the server is misconfigured or the \
         stream lost sync: reconnect"
    )]
    PayloadTooLarge {
        /// The line announcing it.
        line: String,
        /// Its announced size.
        bytes: u64,
        /// The limit.
        max: usize,
    },
}

/// A line shown in an error: lossy text, at most [`QUOTE_BYTES_MAX`] bytes.
fn quote(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(QUOTE_BYTES_MAX)]).into_owned()
}

fn malformed(line: &[u8], reason: &'static str) -> WireError {
    WireError::Malformed {
        line: quote(line),
        reason,
    }
}

/// Parses one server operation from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of an operation (read more and call
/// again with the same start), or the operation and the number of bytes it used.
/// A message larger than `payload_bytes_max` is an error before anything else is looked at.
pub fn parse(
    buf: &[u8],
    payload_bytes_max: usize,
) -> Result<Option<(ServerOp<'_>, usize)>, WireError> {
    let window = &buf[..buf.len().min(CONTROL_LINE_BYTES_MAX + 2)];
    let Some(newline) = memchr::memchr(b'\n', window) else {
        if buf.len() > CONTROL_LINE_BYTES_MAX + 1 {
            return Err(WireError::LineTooLong {
                max: CONTROL_LINE_BYTES_MAX,
                start: quote(buf),
            });
        }
        return Ok(None);
    };
    if newline == 0 || buf[newline - 1] != b'\r' {
        return Err(malformed(&buf[..newline], "line ends in LF without CR"));
    }
    let line = &buf[..newline - 1];
    let body_start = newline + 1;
    let op_end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let (op, rest) = line.split_at(op_end);
    let rest = trim(rest);
    let simple = |value: ServerOp<'static>| {
        if rest.is_empty() {
            Ok(Some((value, body_start)))
        } else {
            Err(malformed(line, "unexpected arguments"))
        }
    };
    if op.eq_ignore_ascii_case(b"MSG") {
        parse_msg(buf, line, rest, body_start, payload_bytes_max, false)
    } else if op.eq_ignore_ascii_case(b"HMSG") {
        parse_msg(buf, line, rest, body_start, payload_bytes_max, true)
    } else if op.eq_ignore_ascii_case(b"PING") {
        simple(ServerOp::Ping)
    } else if op.eq_ignore_ascii_case(b"PONG") {
        simple(ServerOp::Pong)
    } else if op.eq_ignore_ascii_case(b"+OK") {
        simple(ServerOp::Ok)
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        let text = rest.strip_prefix(b"'").unwrap_or(rest);
        let text = text.strip_suffix(b"'").unwrap_or(text);
        Ok(Some((ServerOp::Err(text), body_start)))
    } else if op.eq_ignore_ascii_case(b"INFO") {
        Ok(Some((ServerOp::Info(rest), body_start)))
    } else {
        Err(WireError::UnknownOp { line: quote(line) })
    }
}

/// Parses the arguments of `MSG`/`HMSG` and, when all of it is buffered, the body.
fn parse_msg<'a>(
    buf: &'a [u8],
    line: &'a [u8],
    args_text: &'a [u8],
    body_start: usize,
    payload_bytes_max: usize,
    with_headers: bool,
) -> Result<Option<(ServerOp<'a>, usize)>, WireError> {
    let mut args: [&[u8]; ARGS_MAX] = [b""; ARGS_MAX];
    let count =
        split_args(args_text, &mut args).ok_or_else(|| malformed(line, "too many arguments"))?;
    let (reply, header_arg, total_arg) = match (with_headers, count) {
        (false, 3) => (None, None, args[2]),
        (false, 4) => (Some(args[2]), None, args[3]),
        (true, 4) => (None, Some(args[2]), args[3]),
        (true, 5) => (Some(args[2]), Some(args[3]), args[4]),
        _ => return Err(malformed(line, "wrong number of arguments")),
    };
    let sid =
        parse_u64(args[1]).ok_or_else(|| malformed(line, "subscription id is not a number"))?;
    let total = parse_u64(total_arg).ok_or_else(|| malformed(line, "size is not a number"))?;
    if total > payload_bytes_max as u64 {
        return Err(WireError::PayloadTooLarge {
            line: quote(line),
            bytes: total,
            max: payload_bytes_max,
        });
    }
    let total = total as usize;
    let header_bytes = match header_arg {
        None => 0,
        Some(text) => {
            let bytes =
                parse_u64(text).ok_or_else(|| malformed(line, "header size is not a number"))?;
            if bytes > total as u64 {
                return Err(malformed(line, "header size exceeds total size"));
            }
            bytes as usize
        }
    };
    let body_end = body_start + total;
    let Some(trailer) = buf.get(body_end..body_end + 2) else {
        return Ok(None);
    };
    if trailer != b"\r\n" {
        return Err(malformed(line, "payload not followed by CRLF"));
    }
    let body = &buf[body_start..body_end];
    let msg = Msg {
        subject: args[0],
        sid,
        reply,
        headers: header_arg.map(|_| &body[..header_bytes]),
        payload: &body[header_bytes..],
    };
    Ok(Some((ServerOp::Msg(msg), body_end + 2)))
}

/// Splits on runs of spaces and tabs into `out`; the count, or `None` when more than fit.
fn split_args<'a>(text: &'a [u8], out: &mut [&'a [u8]; ARGS_MAX]) -> Option<usize> {
    let mut count = 0;
    for arg in text
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|a| !a.is_empty())
    {
        *out.get_mut(count)? = arg;
        count += 1;
    }
    Some(count)
}

/// A decimal `u64` of 1 to 20 digits, or `None` (empty, non-digit, overflow).
pub fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text.len() < 20 {
        // Up to 19 digits cannot overflow a u64, so no checked arithmetic: this runs
        // for every size in a `MSG` line and every number of an ack subject.
        let mut value = 0u64;
        for &digit in text {
            let digit = digit.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value * 10 + u64::from(digit);
        }
        return Some(value);
    }
    let mut value = 0u64;
    for &digit in text {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    Some(value)
}

/// Appends `value` in decimal (one implementation for JSON and protocol lines).
pub use crate::model::json::write_u64 as push_u64;

/// What the client says about itself in `CONNECT`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectOptions<'a> {
    /// Connection name shown by the server's monitoring (`/connz`).
    pub name: &'a str,
    /// User from the URL, if any.
    pub user: Option<&'a str>,
    /// Password from the URL, if any.
    pub pass: Option<&'a str>,
    /// The connection is TLS.
    pub tls_required: bool,
}

/// Appends `CONNECT {json}\r\n`: verbose off (no `+OK` per op), headers on (JetStream
/// status messages need them), no_responders on (a request nobody serves gets a 503
/// status at once instead of a timeout), protocol 1 (asynchronous INFO updates).
pub fn encode_connect(out: &mut Vec<u8>, options: &ConnectOptions<'_>) {
    let mut json = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "headers": true,
        "no_responders": true,
        "protocol": 1,
        "echo": true,
        "lang": "rust-alphapt",
        "version": env!("CARGO_PKG_VERSION"),
        "name": options.name,
    });
    if let Some(user) = options.user {
        json["user"] = user.into();
    }
    if let Some(pass) = options.pass {
        json["pass"] = pass.into();
    }
    if options.tls_required {
        json["tls_required"] = true.into();
    }
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(json.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `PUB <subject> [reply] <#bytes>\r\n<payload>\r\n`. The subject and reply must
/// hold no whitespace (checked in debug builds; [`is_valid_subject`] for callers).
#[inline]
pub fn encode_pub(out: &mut Vec<u8>, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    debug_assert!(is_valid_subject(subject));
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    if let Some(reply) = reply {
        debug_assert!(is_valid_subject(reply));
        out.extend_from_slice(reply);
        out.push(b' ');
    }
    push_u64(out, payload.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SUB <subject> [queue] <sid>\r\n`.
pub fn encode_sub(out: &mut Vec<u8>, subject: &[u8], queue: Option<&[u8]>, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    if let Some(queue) = queue {
        out.extend_from_slice(queue);
        out.push(b' ');
    }
    push_u64(out, sid);
    out.extend_from_slice(b"\r\n");
}

/// Appends `UNSUB <sid> [max]\r\n`.
pub fn encode_unsub(out: &mut Vec<u8>, sid: u64, max_msgs: Option<u64>) {
    out.extend_from_slice(b"UNSUB ");
    push_u64(out, sid);
    if let Some(max) = max_msgs {
        out.push(b' ');
        push_u64(out, max);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `PING\r\n`.
pub fn encode_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

/// Appends `PONG\r\n`.
pub fn encode_pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// A subject (or queue name) fit for a control line: non-empty, printable ASCII without
/// spaces, no empty tokens (`a..b`), and no leading or trailing dot.
pub fn is_valid_subject(subject: &[u8]) -> bool {
    !subject.is_empty()
        && subject.iter().all(|&b| b > b' ' && b < 0x7f)
        && subject.split(|&b| b == b'.').all(|token| !token.is_empty())
}

#[cfg(test)]
mod tests;
