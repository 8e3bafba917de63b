//! The parser against hand-written server output, split at every byte boundary and in
//! random chunks (proptest), with an owned copy of each op as the oracle.

use super::*;
use proptest::prelude::*;

/// An owned copy of a [`ServerOp`], to compare results across chunkings.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Info(Vec<u8>),
    Msg {
        subject: Vec<u8>,
        sid: u64,
        reply: Option<Vec<u8>>,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Ping,
    Pong,
    Ok,
    Err(Vec<u8>),
}

fn own(op: ServerOp<'_>) -> Owned {
    match op {
        ServerOp::Info(json) => Owned::Info(json.to_vec()),
        ServerOp::Msg(m) => Owned::Msg {
            subject: m.subject.to_vec(),
            sid: m.sid,
            reply: m.reply.map(<[u8]>::to_vec),
            headers: m.headers.map(<[u8]>::to_vec),
            payload: m.payload.to_vec(),
        },
        ServerOp::Ping => Owned::Ping,
        ServerOp::Pong => Owned::Pong,
        ServerOp::Ok => Owned::Ok,
        ServerOp::Err(text) => Owned::Err(text.to_vec()),
    }
}

/// Feeds `stream` in chunks ending at `cuts`, as a reader would: append, parse all.
fn parse_in_chunks(stream: &[u8], cuts: &[usize]) -> Result<Vec<Owned>, WireError> {
    let mut pending = Vec::new();
    let mut ops = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let end = end.clamp(start, stream.len());
        pending.extend_from_slice(&stream[start..end]);
        start = end;
        let mut head = 0;
        while let Some((op, used)) = parse(&pending[head..], 1 << 20)? {
            assert!(used > 0);
            ops.push(own(op));
            head += used;
        }
        pending.drain(..head);
    }
    assert!(pending.is_empty(), "bytes left over: {:?}", pending);
    Ok(ops)
}

const SAMPLE: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n\
PING\r\n\
MSG market.ticks.NSE.256265 7 12\r\nhello\r\nworld\r\n\
MSG _INBOX.a.b 9 $JS.ACK.T.c.1.5.5.1764000000000000000.0 0\r\n\r\n\
HMSG _INBOX.x 3 28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\n\
HMSG s 3 r 22 25\r\nNATS/1.0\r\nA-B:  c \r\n\r\nxyz\r\n\
+OK\r\n\
pong\r\n\
-ERR 'Authorization Violation'\r\n";

fn sample_ops() -> Vec<Owned> {
    parse_in_chunks(SAMPLE, &[]).expect("sample parses")
}

#[test]
fn parses_every_operation() {
    let ops = sample_ops();
    assert_eq!(ops.len(), 9);
    assert_eq!(
        ops[0],
        Owned::Info(b"{\"server_id\":\"x\",\"max_payload\":1048576}".to_vec())
    );
    assert_eq!(ops[1], Owned::Ping);
    assert_eq!(
        ops[2],
        Owned::Msg {
            subject: b"market.ticks.NSE.256265".to_vec(),
            sid: 7,
            reply: None,
            headers: None,
            payload: b"hello\r\nworld".to_vec(),
        }
    );
    let Owned::Msg { reply, payload, .. } = &ops[3] else {
        panic!("not a msg")
    };
    assert_eq!(
        reply.as_deref(),
        Some(&b"$JS.ACK.T.c.1.5.5.1764000000000000000.0"[..])
    );
    assert!(payload.is_empty());
    assert_eq!(ops[6], Owned::Ok);
    assert_eq!(ops[7], Owned::Pong);
    assert_eq!(ops[8], Owned::Err(b"Authorization Violation".to_vec()));
}

#[test]
fn exposes_status_and_headers() {
    let status = b"HMSG _INBOX.x 3 28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\n";
    let Some((ServerOp::Msg(msg), used)) = parse(status, 1024).unwrap() else {
        panic!("no msg")
    };
    assert_eq!(used, status.len());
    assert_eq!(msg.status(), Some(404));
    assert_eq!(msg.status_description(), b"No Messages");
    assert!(msg.payload.is_empty());

    let plain = b"HMSG s 3 r 22 25\r\nNATS/1.0\r\nA-B:  c \r\n\r\nxyz\r\n";
    let Some((ServerOp::Msg(msg), _)) = parse(plain, 1024).unwrap() else {
        panic!("no msg")
    };
    assert_eq!(msg.status(), None);
    assert_eq!(msg.header(b"a-b"), Some(&b"c"[..]));
    assert_eq!(msg.header(b"missing"), None);
    assert_eq!(msg.reply, Some(&b"r"[..]));
    assert_eq!(msg.payload, b"xyz");
}

#[test]
fn split_at_every_byte_boundary_gives_the_same_ops() {
    let whole = sample_ops();
    for cut in 0..=SAMPLE.len() {
        assert_eq!(
            parse_in_chunks(SAMPLE, &[cut]).unwrap(),
            whole,
            "cut at {cut}"
        );
    }
    let every: Vec<usize> = (1..SAMPLE.len()).collect();
    assert_eq!(parse_in_chunks(SAMPLE, &every).unwrap(), whole);
}

#[test]
fn incomplete_input_asks_for_more() {
    for end in 0..SAMPLE.len() {
        let prefix = &SAMPLE[..end];
        // Only a complete first op (the INFO line, 49 bytes) may come back.
        if let Some((_, used)) = parse(prefix, 1 << 20).unwrap() {
            assert!(used <= end);
        }
    }
    assert_eq!(parse(b"MSG a 1 5\r\nhel", 1024).unwrap(), None);
}

#[test]
fn refuses_malformed_lines_naming_them() {
    let cases: &[&[u8]] = &[
        b"HELLO world\r\n",
        b"MSG a\r\n",
        b"MSG a x 3\r\nabc\r\n",
        b"MSG a 1 2 3 4 5 6\r\n",
        b"MSG a 1 3\r\nabcXY",
        b"HMSG a 1 9 3\r\n",
        b"PING\n",
        b"PONG extra\r\n",
    ];
    for case in cases {
        let error = parse(case, 1024).expect_err(&String::from_utf8_lossy(case));
        let text = error.to_string();
        assert!(text.contains("NATS"), "{text}");
    }
    let error = parse(b"HELLO world\r\n", 1024).unwrap_err();
    assert!(error.to_string().contains("HELLO world"));
}

#[test]
fn refuses_oversized_payload_before_reading_it() {
    let error = parse(b"MSG a 1 2000000\r\n", 1 << 20).unwrap_err();
    assert!(matches!(
        error,
        WireError::PayloadTooLarge {
            bytes: 2_000_000,
            ..
        }
    ));
    let error = parse(b"MSG a 1 99999999999999999999999\r\n", 1 << 20).unwrap_err();
    assert!(matches!(error, WireError::Malformed { .. }));
}

#[test]
fn refuses_endless_control_line() {
    let junk = vec![b'x'; CONTROL_LINE_BYTES_MAX + 2];
    assert!(matches!(
        parse(&junk, 1024),
        Err(WireError::LineTooLong { .. })
    ));
    assert_eq!(parse(&junk[..100], 1024).unwrap(), None);
}

#[test]
fn encoders_write_the_protocol() {
    let mut out = Vec::new();
    encode_pub(&mut out, b"a.b", Some(b"_INBOX.1"), b"hi");
    encode_pub(&mut out, b"a.b", None, b"");
    encode_sub(&mut out, b"a.>", Some(b"q"), 12);
    encode_sub(&mut out, b"a.*", None, 13);
    encode_unsub(&mut out, 12, Some(5));
    encode_unsub(&mut out, 13, None);
    encode_ping(&mut out);
    encode_pong(&mut out);
    assert_eq!(
        out,
        b"PUB a.b _INBOX.1 2\r\nhi\r\nPUB a.b 0\r\n\r\nSUB a.> q 12\r\nSUB a.* 13\r\n\
UNSUB 12 5\r\nUNSUB 13\r\nPING\r\nPONG\r\n"
    );
    out.clear();
    let options = ConnectOptions {
        name: "t",
        user: Some("u"),
        pass: Some("p"),
        tls_required: false,
    };
    encode_connect(&mut out, &options);
    assert!(out.starts_with(b"CONNECT {"));
    assert!(out.ends_with(b"}\r\n"));
    let json: serde_json::Value = serde_json::from_slice(&out[8..out.len() - 2]).unwrap();
    assert_eq!(json["headers"], true);
    assert_eq!(json["no_responders"], true);
    assert_eq!(json["verbose"], false);
    assert_eq!(json["user"], "u");
    assert_eq!(json["pass"], "p");
}

#[test]
fn numbers_and_subjects() {
    // Both sides of the unchecked path (up to 19 digits) and the checked one (20).
    for value in [
        0,
        7,
        10,
        999,
        9_999_999_999_999_999_999,
        10_000_000_000_000_000_000,
        u64::MAX,
    ] {
        let mut out = Vec::new();
        push_u64(&mut out, value);
        assert_eq!(out, value.to_string().as_bytes());
        assert_eq!(parse_u64(&out), Some(value));
    }
    assert_eq!(parse_u64(b"18446744073709551616"), None);
    assert_eq!(parse_u64(b""), None);
    for bad in [
        &b"99999999999999999999"[..],
        b"123456789012345678901",
        b"12a",
        b"/",
        b":",
        b"-1",
        b"+1",
    ] {
        assert_eq!(parse_u64(bad), None, "{}", String::from_utf8_lossy(bad));
    }
    assert!(is_valid_subject(b"market.ticks.>"));
    assert!(!is_valid_subject(b"a b"));
    assert!(!is_valid_subject(b"a..b"));
    assert!(!is_valid_subject(b".a"));
}

/// One random server op, encoded as the server would.
fn arb_op() -> impl Strategy<Value = Vec<u8>> {
    let subject = "[a-z]{1,8}(\\.[a-z0-9]{1,8}){0,3}";
    let payload = proptest::collection::vec(any::<u8>(), 0..200);
    prop_oneof![
        Just(b"PING\r\n".to_vec()),
        Just(b"PONG\r\n".to_vec()),
        Just(b"+OK\r\n".to_vec()),
        (
            subject,
            0u64..1000,
            proptest::option::of("[A-Z_.0-9]{1,20}"),
            payload.clone()
        )
            .prop_map(|(s, sid, reply, p)| {
                let mut out = format!("MSG {s} {sid} ").into_bytes();
                if let Some(r) = reply {
                    out.extend_from_slice(format!("{r} ").as_bytes());
                }
                out.extend_from_slice(format!("{}\r\n", p.len()).as_bytes());
                out.extend_from_slice(&p);
                out.extend_from_slice(b"\r\n");
                out
            }),
        ("[a-z]{1,8}", 100u16..600, payload).prop_map(|(s, code, p)| {
            let headers = format!("NATS/1.0 {code} Text\r\nK: v\r\n\r\n");
            let mut out = format!(
                "HMSG {s} 1 {} {}\r\n",
                headers.len(),
                headers.len() + p.len()
            )
            .into_bytes();
            out.extend_from_slice(headers.as_bytes());
            out.extend_from_slice(&p);
            out.extend_from_slice(b"\r\n");
            out
        }),
    ]
}

proptest! {
    #[test]
    fn random_chunking_gives_the_same_ops(
        ops in proptest::collection::vec(arb_op(), 1..20),
        cuts in proptest::collection::vec(0usize..4000, 0..30),
    ) {
        let stream: Vec<u8> = ops.concat();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let whole = parse_in_chunks(&stream, &[]).unwrap();
        prop_assert_eq!(whole.len(), ops.len());
        prop_assert_eq!(parse_in_chunks(&stream, &cuts).unwrap(), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes, 1024);
    }
}
