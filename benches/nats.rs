//! The NATS wire parser over a read buffer of 10,000 JetStream deliveries as the
//! server writes them: `MSG <inbox> <sid> $JS.ACK.… <#bytes>` plus a ~600-byte JSON
//! tick from the feed encoder (representative of the receiver's input; a real read
//! holds fewer ops, since the socket hands out at most the kernel buffer at once).
//!
//! - `wire_parse`: `wire::parse` over the whole buffer, op by op, touching each payload.
//! - `naive_split` (baseline): the same bytes split at every `\r\n` by a plain byte
//!   loop (no memchr), which is the least any line-oriented reader must do; it does not
//!   even honour payload lengths, so it is a floor, not a competitor.
//!
//! Both count what they found once outside the timed loop (10,000 messages; 20,000
//! lines), so a fast wrong answer cannot pass as a win. Throughput is messages.
//!
//! - `ack_subject`: `parse_ack_subject` over the 10,000 deliveries' reply subjects
//!   (the receiver reads stream and consumer sequence, delivery count and pending from
//!   each); baseline `split_then_parse`, the plain way: cut into tokens, then each
//!   number. Both sums of the stream sequences are checked once
//!   outside the timed loop.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use alphapt_storage::model::json::write_tick_json;
use alphapt_storage::model::synthetic::SyntheticTicks;
use alphapt_storage::receive::nats::parse_ack_subject;
use alphapt_storage::receive::nats::wire::{self, ServerOp};

const MESSAGES: usize = 10_000;

fn buffer() -> Vec<u8> {
    let mut feed = SyntheticTicks::new(500, 3);
    let mut out = Vec::new();
    let mut payload = Vec::new();
    for index in 0..MESSAGES {
        let tick = feed.next_tick(1_764_000_000_000 + index as i64, 0, 0);
        payload.clear();
        write_tick_json(&mut payload, &tick);
        let reply = format!(
            "$JS.ACK.MARKET_TICKS.alphapt-storage.1.{}.{}.1764000000000000000.{}",
            index + 1,
            index + 1,
            MESSAGES - index - 1
        );
        out.extend_from_slice(
            format!(
                "MSG _INBOX.0123456789abcdef.pull2 2 {reply} {}\r\n",
                payload.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&payload);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses every op; returns (messages, payload bytes).
fn parse_all(buf: &[u8]) -> (usize, usize) {
    let mut head = 0;
    let (mut messages, mut bytes) = (0, 0);
    while let Some((op, used)) = wire::parse(&buf[head..], 1 << 20).expect("valid") {
        if let ServerOp::Msg(msg) = op {
            messages += 1;
            bytes += msg.payload.len();
        }
        head += used;
    }
    (messages, bytes)
}

/// The reply subject of every delivery in `buf`.
fn reply_subjects(buf: &[u8]) -> Vec<Vec<u8>> {
    let mut head = 0;
    let mut out = Vec::with_capacity(MESSAGES);
    while let Some((op, used)) = wire::parse(&buf[head..], 1 << 20).expect("valid") {
        if let ServerOp::Msg(msg) = op {
            out.push(msg.reply.expect("a reply subject").to_vec());
        }
        head += used;
    }
    out
}

/// Parses every ack subject; returns the sum of their stream sequences.
fn parse_acks(subjects: &[Vec<u8>]) -> u64 {
    subjects
        .iter()
        .map(|s| parse_ack_subject(s).map_or(0, |info| info.stream_seq))
        .sum()
}

/// The plain way: cut every subject into its tokens, then parse the five numbers;
/// returns the sum of the stream sequences.
fn split_then_parse(subjects: &[Vec<u8>]) -> u64 {
    let mut sum = 0;
    for subject in subjects {
        let mut tokens: [&[u8]; 12] = [b""; 12];
        let mut count = 0;
        for token in subject.split(|&b| b == b'.') {
            tokens[count.min(11)] = token;
            count += 1;
        }
        let first = match count {
            9 => 4,
            11 | 12 => 6,
            _ => continue,
        };
        let mut numbers = [0u64; 5];
        for (i, number) in numbers.iter_mut().enumerate() {
            *number = wire::parse_u64(tokens[first + i]).unwrap_or(0);
        }
        sum += numbers[1];
    }
    sum
}

/// Splits at every CRLF with a byte loop; returns the number of lines.
fn naive_split(buf: &[u8]) -> usize {
    let mut lines = 0;
    let mut index = 0;
    while index + 1 < buf.len() {
        if buf[index] == b'\r' && buf[index + 1] == b'\n' {
            lines += 1;
            index += 2;
        } else {
            index += 1;
        }
    }
    lines
}

fn bench(c: &mut Criterion) {
    let buf = buffer();
    let (messages, bytes) = parse_all(&buf);
    assert_eq!(messages, MESSAGES);
    assert!(bytes > MESSAGES * 400);
    assert_eq!(naive_split(&buf), 2 * MESSAGES);

    let mut group = c.benchmark_group("nats_wire");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("wire_parse", |b| b.iter(|| parse_all(black_box(&buf))));
    group.bench_function("naive_split", |b| b.iter(|| naive_split(black_box(&buf))));
    group.finish();

    let subjects = reply_subjects(&buf);
    let n = MESSAGES as u64;
    assert_eq!(parse_acks(&subjects), n * (n + 1) / 2);
    assert_eq!(split_then_parse(&subjects), n * (n + 1) / 2);
    let mut group = c.benchmark_group("ack_subject");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("parse_ack_subject", |b| {
        b.iter(|| parse_acks(black_box(&subjects)))
    });
    group.bench_function("split_then_parse", |b| {
        b.iter(|| split_then_parse(black_box(&subjects)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
