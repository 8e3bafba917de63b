//! `receive::nats::wire::parse`: the NATS protocol reader, fed arbitrary bytes as the
//! server's stream and driven like `NatsConn::drain` (parse, consume `used`, repeat
//! until `Ok(None)` or an error); then what the receiver does with each message's
//! fields: `Msg::status`/`status_description`/`header`, `jetstream::parse_ack_subject`
//! on the reply, `receiver::subject_token` and `shard::parse::parse_tick_subject` on
//! the subject, `jetstream::pub_ack_seq` on the payload, and `INFO` into `ServerInfo`.
//!
//! Input: 2 bytes choose `payload_bytes_max` (0 = the client's ceiling, else the
//! value), 1 flag byte (bit 0: repeat the stream past the 64 KiB control-line limit;
//! the rest seeds the cut point of the split-read check), then the stream.
//!
//! Asserts, from the module docs:
//! - no panic; every `Ok(Some((op, used)))` has `0 < used <= buf.len()` and every slice
//!   of `op` lies inside `buf[..used]`;
//! - `Ok(None)` means "an op is cut short, read more": for an op parsed from the full
//!   buffer, every shorter prefix gives `Ok(None)` and the exact `buf[..used]` gives
//!   the same op (what the connection relies on when a read ends mid-op);
//! - bounded consumption: the bytes left unparsed at `Ok(None)` never exceed one
//!   control line plus one largest message (what the 4 MiB read buffer must hold);
//!   `LineTooLong` only past `CONTROL_LINE_BYTES_MAX`; `PayloadTooLarge` only past
//!   `payload_bytes_max`;
//! - the subject readers agree: a subject `parse_tick_subject` accepts routes by the
//!   same token in `subject_token`.
#![no_main]

use alphapt_storage::receive::nats::conn::READ_BUFFER_BYTES;
use alphapt_storage::receive::nats::jetstream::{parse_ack_subject, pub_ack_seq};
use alphapt_storage::receive::nats::wire::{parse, ServerOp, WireError, CONTROL_LINE_BYTES_MAX};
use alphapt_storage::receive::nats::ServerInfo;
use alphapt_storage::receive::receiver::subject_token;
use alphapt_storage::shard::parse::parse_tick_subject;
use libfuzzer_sys::fuzz_target;

/// The largest `max_payload` the client accepts from a server (`conn.rs`).
const PAYLOAD_CEILING: usize = READ_BUFFER_BYTES - CONTROL_LINE_BYTES_MAX - 4;

fn inside(part: &[u8], whole: &[u8]) -> bool {
    let (start, end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
    let (lo, hi) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    part.is_empty() || (lo <= start && end <= hi)
}

fn check_op(op: &ServerOp<'_>, consumed: &[u8]) {
    match op {
        ServerOp::Info(json) => {
            assert!(inside(json, consumed));
            let _ = serde_json::from_slice::<ServerInfo>(json);
        }
        ServerOp::Err(text) => assert!(inside(text, consumed)),
        ServerOp::Ping | ServerOp::Pong | ServerOp::Ok => {}
        ServerOp::Msg(msg) => {
            assert!(inside(msg.subject, consumed) && inside(msg.payload, consumed));
            assert!(!msg.subject.is_empty(), "a MSG without a subject");
            if let Some(reply) = msg.reply {
                assert!(inside(reply, consumed));
                if let Some(ack) = parse_ack_subject(reply) {
                    assert!(ack.timestamp_ns >= 0);
                }
            }
            if let Some(headers) = msg.headers {
                assert!(inside(headers, consumed));
                assert_eq!(
                    headers.as_ptr() as usize + headers.len(),
                    msg.payload.as_ptr() as usize,
                    "the payload follows the header block"
                );
            }
            if let Some(code) = msg.status() {
                assert!(code <= 999);
                assert!(msg.headers.is_some());
            }
            let description = msg.status_description();
            assert!(description.is_empty() || inside(description, msg.headers.unwrap_or_default()));
            for name in [&b"Nats-Msg-Id"[..], b"Status", b"", msg.subject] {
                if let Some(value) = msg.header(name) {
                    assert!(inside(value, msg.headers.unwrap_or_default()));
                }
            }
            let _ = pub_ack_seq(msg.payload);
            let routed = subject_token(msg.subject);
            if let Ok(tick) = parse_tick_subject(msg.subject) {
                assert_eq!(
                    routed,
                    Some(tick.instrument_token),
                    "receiver routes {} by another token than the shard reads",
                    msg.subject.escape_ascii()
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, flags, stream @ ..] = data else {
        return;
    };
    let payload_bytes_max = match u16::from_le_bytes([*a, *b]) {
        0 => PAYLOAD_CEILING,
        n => usize::from(n),
    };
    let repeated;
    let buf: &[u8] = if flags & 1 == 1 && !stream.is_empty() {
        let copies = (CONTROL_LINE_BYTES_MAX + 64) / stream.len() + 1;
        repeated = stream.repeat(copies);
        &repeated
    } else {
        stream
    };
    let mut head = 0;
    let mut ops = 0usize;
    loop {
        let rest = &buf[head..];
        match parse(rest, payload_bytes_max) {
            Ok(Some((op, used))) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                let consumed = &rest[..used];
                check_op(&op, consumed);
                // The same op from exactly its bytes; nothing from any shorter read.
                match parse(consumed, payload_bytes_max) {
                    Ok(Some((again, again_used))) => {
                        assert_eq!(
                            (again, again_used),
                            (op, used),
                            "op changed when cut at its end"
                        );
                    }
                    other => {
                        panic!("op {op:?} not parsed from exactly its {used} bytes: {other:?}")
                    }
                }
                let cut = usize::from(*flags >> 1) * used / 128;
                for k in [cut, used - 1, used / 2] {
                    let partial = parse(&consumed[..k], payload_bytes_max);
                    assert!(
                        matches!(partial, Ok(None)),
                        "a read cut at {k} of {used} bytes gave {partial:?}, not Ok(None)"
                    );
                }
                head += used;
                ops += 1;
                assert!(ops <= buf.len());
            }
            Ok(None) => {
                assert!(
                    rest.len() <= CONTROL_LINE_BYTES_MAX + 2 + payload_bytes_max + 2,
                    "{} bytes waiting for more: more than one op can take",
                    rest.len()
                );
                break;
            }
            Err(WireError::LineTooLong { .. }) => {
                assert!(rest.len() > CONTROL_LINE_BYTES_MAX);
                break;
            }
            Err(WireError::PayloadTooLarge { bytes, max, .. }) => {
                assert_eq!(max, payload_bytes_max);
                assert!(bytes > max as u64);
                break;
            }
            Err(_) => break,
        }
    }
});
